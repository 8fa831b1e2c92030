"""A compact Llama decoder for serving on the CPU or CUDA, built from the weights of a HF `LlamaForCausalLM`.

Why not HF's forward: at batch 1 a SmolLM-135M step must read 538 MB of fp32 weights, and HF runs ~57
kernels per layer on top. Each matmul streams megabytes through the caches and evicts the code of the small
kernels that follow it, so every distinct small kernel costs ~10-20 us, not ~2 us: kernel count is the
overhead. This decoder runs ~18 per layer: QKV and gate/up are fused matrices; RMSNorm's gain (and sqrt(D))
is folded into the matrix after it, leaving 1/rms per row; q/k columns are permuted at load so that RoPE is
one complex multiply (attention scores do not change when q and k share a permutation of head dims); k and
v go to the cache in one copy; residual adds fuse into addmm_. The KV cache is preallocated for the whole
generation, and logits are computed for the last position only.

Layout: a batch is left-padded, so every row writes its new key/value into the same cache column; padding
columns carry -inf in a per-row additive bias, and each row's RoPE positions count only its real tokens
(HF's `position_ids = cumsum(mask) - 1`). Finished rows leave the cache by swap-remove (a live row from the
tail moves into the hole), which copies only as many rows as finished: ~8 ms once for a row of 300 positions,
where keeping it masked would cost every later step a row of matmul work (~15 ms per row at batch 8 here).
Continuous batching (`prefill_rows` + `join`): new rows are prefilled into a cache of their own (on another
thread, while the live rows decode) and then copied into free rows of the live cache, placed so their last
prompt column is the live rows' last column; attention is a set over keys (positions live in the RoPE'd
keys and each row's bias), so where a column sits does not change the answer. Steps attend only to the live
window [start, length); when it reaches the allocation's end it slides back to column 0 (or the allocation
doubles), and a prompt longer than the window's history slides it right first.
For the single query of a step, F.scaled_dot_product_attention beat matmul + softmax + matmul (measured
0.09 vs 0.1 ms per layer at batch 1, 0.5 vs 0.85 ms at batch 8).

Precision: "fp32" (default) matches HF to ~1e-5 in the logits, so greedy tokens are HF's. On the CPU a
decode step is one call into our own C kernels (`minivlm.decoding.native`: weights blocked 16 outputs at a
time for few rows, the whole step in C, ~1.4x faster than oneDNN's kernels with PyTorch around them, faster
than llama.cpp at batch 1 and 8), and prefill multiplies by the same blocked weights; without a C compiler the
matrices are packed into oneDNN's layout instead (`minivlm.decoding.device`). On the CPU "bf16" and "int8" are
opt-in weight formats (oneDNN-packed bf16; int8 with per-row weight and input scales, our VNNI kernels where
the CPU has them, else fbgemm through torch's deprecated quantized-tensor ops); activations, norms and the KV
cache stay fp32. `python -m vlm_tools.bench.decode_step` measures their speed and their top-1 agreement with
fp32.

Devices: the same code runs on CUDA; every tensor is made on the weights' device, and what differs per device
(the weight formats, where CUDA's bf16 is bf16 throughout, the cache included; the default precision; prefill's
stream) is in `minivlm.decoding.device`. Norms and RoPE compute in fp32 whatever the format.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from minivlm.decoding.device import DEVICE_TYPES, Precision, WeightFormat, model_device, weight_format
from minivlm.decoding.native import NativeStep, supports_step


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_dim: int
    rope_theta: float
    norm_eps: float
    max_positions: int

    @classmethod
    def from_hf(cls, config: LlamaConfig) -> DecoderConfig:
        """Refuses the Llama variants this decoder does not implement rather than decoding them wrongly."""
        rope = getattr(config, "rope_parameters", None) or {"rope_theta": config.rope_theta}
        unsupported = {
            "rope_type": rope.get("rope_type", "default") != "default",
            "hidden_act": config.hidden_act != "silu",
            "attention_bias": bool(config.attention_bias),
            "mlp_bias": bool(getattr(config, "mlp_bias", False)),
            "tie_word_embeddings": not config.tie_word_embeddings,
            "pretraining_tp": getattr(config, "pretraining_tp", 1) != 1,
        }
        if any(unsupported.values()):
            raise ValueError(f"unsupported Llama config: {[k for k, bad in unsupported.items() if bad]}")
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(vocab_size=config.vocab_size, dim=config.hidden_size, n_layers=config.num_hidden_layers,
                   n_heads=config.num_attention_heads, n_kv_heads=config.num_key_value_heads, head_dim=head_dim,
                   hidden_dim=config.intermediate_size, rope_theta=float(rope["rope_theta"]),
                   norm_eps=config.rms_norm_eps, max_positions=config.max_position_embeddings)


@dataclass
class Layer:
    wqkv: torch.Tensor        # D -> (H + 2 KV) hd: q, k, v side by side; input norm gain folded in
    wo: torch.Tensor          # H hd -> D
    w_gate_up: torch.Tensor   # D -> 2 I: gate then up; post-attention norm gain folded in
    w_down: torch.Tensor      # I -> D


def _rope_pairs(w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(heads hd, D) rows reordered per head from HF's halves [x1 | x2] to pairs (x1_j, x2_j), so RoPE's
    rotate_half becomes a complex multiply on adjacent pairs."""
    half = torch.arange(head_dim // 2, device=w.device)
    pairs = torch.stack([half, half + head_dim // 2], dim=-1).flatten()                  # (hd,)
    return w.view(-1, head_dim, w.shape[1])[:, pairs].reshape(w.shape)


def _hf_layer(state: dict[str, torch.Tensor], i: int, c: DecoderConfig, pack) -> Layer:
    p = f"model.layers.{i}."
    w = lambda name: state[p + name].float()                                           # noqa: E731  (out, in)
    # HF: norm(x) = x * rsqrt(mean(x^2) + eps) * gain = x * rsqrt(sum(x^2) + eps D) * sqrt(D) * gain
    gain = lambda name: w(name) * math.sqrt(c.dim)                                     # noqa: E731
    qkv = torch.cat([_rope_pairs(w("self_attn.q_proj.weight"), c.head_dim),
                     _rope_pairs(w("self_attn.k_proj.weight"), c.head_dim), w("self_attn.v_proj.weight")])
    gate_up = torch.cat([w("mlp.gate_proj.weight"), w("mlp.up_proj.weight")])
    return Layer(wqkv=pack(qkv * gain("input_layernorm.weight")), wo=pack(w("self_attn.o_proj.weight")),
                 w_gate_up=pack(gate_up * gain("post_attention_layernorm.weight")),
                 w_down=pack(w("mlp.down_proj.weight")))


def _expected_shapes(c: DecoderConfig) -> dict[str, tuple[int, ...]]:
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    shapes = {"model.embed_tokens.weight": (c.vocab_size, c.dim), "model.norm.weight": (c.dim,)}
    for i in range(c.n_layers):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (c.dim,), p + "post_attention_layernorm.weight": (c.dim,),
                   p + "self_attn.q_proj.weight": (q, c.dim), p + "self_attn.k_proj.weight": (kv, c.dim),
                   p + "self_attn.v_proj.weight": (kv, c.dim), p + "self_attn.o_proj.weight": (c.dim, q),
                   p + "mlp.gate_proj.weight": (c.hidden_dim, c.dim), p + "mlp.up_proj.weight": (c.hidden_dim, c.dim),
                   p + "mlp.down_proj.weight": (c.dim, c.hidden_dim)}
    return shapes


def check_state_dict(state: dict[str, torch.Tensor], config: DecoderConfig) -> None:
    """Every weight the decoder needs is present with its shape, and nothing it would ignore is there."""
    lm_head = state.get("lm_head.weight")
    if lm_head is not None and lm_head.data_ptr() != state["model.embed_tokens.weight"].data_ptr():
        raise ValueError("lm_head.weight is not tied to model.embed_tokens.weight")
    state = {k: v for k, v in state.items() if k != "lm_head.weight"}
    expected = _expected_shapes(config)
    if set(state) != set(expected):
        raise ValueError(f"state dict keys differ: missing {sorted(set(expected) - set(state))[:5]}, "
                         f"unexpected {sorted(set(state) - set(expected))[:5]}")
    wrong = {k: tuple(v.shape) for k, v in state.items() if tuple(v.shape) != expected[k]}
    if wrong:
        raise ValueError(f"state dict shapes differ from the config: {dict(list(wrong.items())[:5])}")


class KVCache:
    """Keys and values of every layer for up to `max_rows` rows, preallocated up to `capacity` positions.

    Rows [0, rows) are live and write their next key/value at column `length`. Columns before `start` belong
    to no live row (a continuous batch's rows come and go); every live row's columns in [start, length) hold
    finite values, with -inf in `bias` where they are padding, and its bias is 0 from `length` on.
    """

    def __init__(self, config: DecoderConfig, rows: int, capacity: int, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        # k heads then v heads of a layer in one tensor, so a step writes both with one copy
        self.shape = (rows, 2 * config.n_kv_heads, capacity, config.head_dim)           # (B, 2 KV, T, hd)
        self.device, self.dtype = torch.device(device), dtype
        self.kv = [self._empty(self.shape) for _ in range(config.n_layers)]
        self.bias = self._zeros((rows, capacity))                   # (B, T): -inf on left padding
        self.positions = torch.zeros(rows, dtype=torch.long, device=self.device)   # (B,): next RoPE position
        self.rows, self.max_rows, self.start, self.length, self.capacity = rows, rows, 0, 0, capacity

    def _empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty(shape, device=self.device, dtype=self.dtype)

    def _zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, device=self.device, dtype=self.dtype)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the cache holds (to hand it from one CUDA stream to another)."""
        return [*self.kv, self.bias, self.positions]

    def keep(self, alive: list[bool]) -> list[int]:
        """Drop the rows not alive; returns, for each remaining row, the row it used to be."""
        if len(alive) != self.rows:
            raise ValueError(f"keep() got {len(alive)} flags for {self.rows} rows")
        n = sum(alive)
        holes = [i for i in range(n) if not alive[i]]
        movers = [j for j in range(n, self.rows) if alive[j]]          # as many as there are holes
        for hole, mover in zip(holes, movers):      # plain slice copies: 3x faster than index_put_ here
            for cache in self.kv:
                cache[hole, :, self.start:self.length].copy_(cache[mover, :, self.start:self.length])
            self.bias[hole].copy_(self.bias[mover])
            self.positions[hole] = self.positions[mover]
        self.rows = n
        order = list(range(n))
        for hole, mover in zip(holes, movers):
            order[hole] = mover
        return order

    # --- continuous batching: rows join a live cache, the live window moves ------------------------------
    def region(self, first_row: int, rows: int, first_column: int, columns: int) -> KVCache:
        """A cache viewing rows x columns of this one (writes go through): what `prefill` fills on admission."""
        view = KVCache.__new__(KVCache)
        r, c = slice(first_row, first_row + rows), slice(first_column, first_column + columns)
        view.shape = (rows,) + self.shape[1:2] + (columns,) + self.shape[3:]
        view.device, view.dtype = self.device, self.dtype
        view.kv = [kv[r, :, c] for kv in self.kv]
        view.bias, view.positions = self.bias[r, c], self.positions[r]
        view.rows, view.max_rows, view.start, view.length, view.capacity = rows, rows, 0, 0, columns
        return view

    def make_room(self, *, history: int, ahead: int) -> None:
        """Guarantee `history` columns before `length` and `ahead` from `length` on, moving the live window
        [start, length) when needed; the allocation doubles when the window would fill over half of it, so a
        slide back to column 0 happens at most once per capacity/2 steps."""
        width = self.length - self.start
        end = max(self.length, history)
        if end == self.length and end + ahead <= self.capacity:
            return
        end = max(width, history)
        capacity = self.capacity if 2 * (end + ahead) <= self.capacity else 2 * (end + ahead)
        self._move_window(end - width, capacity)

    def _move_window(self, start: int, capacity: int) -> None:
        rows, width = self.rows, self.length - self.start
        source, target = slice(self.start, self.length), slice(start, start + width)
        if capacity != self.capacity:
            self.shape = self.shape[:2] + (capacity,) + self.shape[3:]
            kv, bias = [self._empty(self.shape) for _ in self.kv], self._zeros((self.max_rows, capacity))
        else:
            kv, bias = self.kv, self.bias
        for new, old in zip(kv, self.kv):        # copy_ refuses overlapping source and target: clone then
            new[:rows, :, target] = old[:rows, :, source].clone() if new is old else old[:rows, :, source]
        bias[:rows, target] = self.bias[:rows, source].clone()
        bias[:rows, start + width:] = 0.0
        self.kv, self.bias, self.capacity = kv, bias, capacity
        self.start, self.length = start, start + width

    def trim(self) -> None:
        """Advance `start` past the columns that are padding for every live row (rows that left held them)."""
        if self.rows:
            real = self.bias[:self.rows, self.start:self.length] == 0                  # (B, width)
            self.start += int(real.int().argmax(dim=1).min())                         # each row's first real column

    def open_rows(self, rows: int, first_column: int) -> None:
        """Make `rows` rows just prefilled from `first_column` to `length` live: pad the window to a common
        start (finite zeros under a -inf bias) and clear their bias ahead of `length`."""
        old, new = slice(0, self.rows), slice(self.rows, self.rows + rows)
        start = min(self.start, first_column) if self.rows else first_column
        for live, pad in ((old, slice(start, self.start)), (new, slice(start, first_column))):
            for kv in self.kv:
                kv[live, :, pad] = 0.0
            self.bias[live, pad] = float("-inf")
        self.bias[new, self.length:] = 0.0
        self.rows, self.start = self.rows + rows, start


class LlamaDecoder:
    """`embed` (V, D) in the format's dtype decides the device every tensor of the decoder is made on."""

    def __init__(self, config: DecoderConfig, embed: torch.Tensor, lm_head: torch.Tensor, layers: list[Layer],
                 weight_format: WeightFormat):
        self.config, self.embed, self.lm_head, self.layers = config, embed, lm_head, layers
        self.format, self.precision, self._mm = weight_format, weight_format.precision, weight_format.matmul
        self.device, self.dtype = embed.device, weight_format.dtype
        # a tensor: a float operand costs 3 more kernels
        self._eps_d = torch.tensor(config.norm_eps * config.dim, device=self.device)
        exponents = torch.arange(0, config.head_dim, 2, dtype=torch.float, device=self.device) / config.head_dim
        inv_freq = 1.0 / (config.rope_theta ** exponents)                                               # HF's
        angles = torch.arange(config.max_positions, dtype=torch.float, device=self.device)[:, None] * inv_freq[None, :]
        self.rotations = torch.polar(torch.ones_like(angles), angles)          # (P, hd/2) complex: cos + i sin
        self._native = NativeStep(self) if weight_format.native_step and supports_step(config) else None

    @classmethod
    def from_hf(cls, model: LlamaForCausalLM, *, precision: Precision = "fp32",
                weight_format: WeightFormat | None = None) -> LlamaDecoder:
        """On the model's device, in `precision`'s format there (`weight_format` overrides it: tests check the
        CUDA formats' arithmetic on the CPU)."""
        weight_format = weight_format or weight_format_for(model, precision)
        config = DecoderConfig.from_hf(model.config)
        state = {k: v.detach() for k, v in model.state_dict().items()}
        check_state_dict(state, config)
        tied = state["model.embed_tokens.weight"].float()
        embed = tied.to(weight_format.dtype).contiguous()               # HF's own tensor when already fp32
        layers = [_hf_layer(state, i, config, weight_format.pack) for i in range(config.n_layers)]
        # the tied lm_head: its own copy in the matmul format (113 MB at full size in fp32), final norm folded in
        lm_head = weight_format.pack(tied * (state["model.norm.weight"].float() * math.sqrt(config.dim)))
        return cls(config, embed, lm_head, layers, weight_format)

    # --- shared pieces ------------------------------------------------------------------------------------
    def _normed(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, D) -> x * rsqrt(sum(x^2) + eps D): RMSNorm up to sqrt(D) * gain, which the next matrix holds."""
        if x.dtype != torch.float32:           # HF too: the sum of squares in fp32, the result in x's dtype
            return self._normed(x.float()).to(x.dtype)
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)                          # (N, 1)
        return x * torch.addcmul(self._eps_d, norm, norm).rsqrt_()

    def _rotate(self, qkv: torch.Tensor, rotations: torch.Tensor) -> None:
        """RoPE in place on the q and k heads of qkv (..., H + 2 KV, hd); rotations (..., 1, hd/2) complex."""
        c = self.config
        pairs = qkv[..., :c.n_heads + c.n_kv_heads, :].unflatten(-1, (c.head_dim // 2, 2))  # (..., H + KV, hd/2, 2)
        if pairs.dtype == torch.float32:
            torch.view_as_complex(pairs).mul_(rotations)
        else:                                  # no complex bf16: rotate in fp32, write back
            pairs.copy_(torch.view_as_real(torch.view_as_complex(pairs.float()) * rotations))

    def _mm_add_(self, x: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> None:
        """x += a @ w, one kernel where the format multiplies with torch.matmul."""
        if self.format.fused_add:
            x.addmm_(a, w)
        else:
            x.add_(self._mm(a, w))

    def _mlp(self, x: torch.Tensor, layer: Layer) -> None:
        """x (N, D), updated in place."""
        gate_up = self._mm(self._normed(x), layer.w_gate_up)                               # (N, 2 I)
        gate, up = gate_up.chunk(2, dim=-1)                                                # (N, I) each
        self._mm_add_(x, F.silu(gate).mul_(up), layer.w_down)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, D) at the last position -> (B, V) fp32 logits; the lm_head is the tied embedding."""
        return self._mm(self._normed(x), self.lm_head).float()

    def new_cache(self, rows: int, capacity: int, *, empty: bool = False) -> KVCache:
        """empty: no live rows yet; they join through `join` (a continuous batch)."""
        if capacity > self.config.max_positions:
            raise ValueError(f"cache capacity {capacity} exceeds the model's {self.config.max_positions} positions")
        cache = KVCache(self.config, rows, capacity, device=self.device, dtype=self.dtype)
        cache.rows = 0 if empty else rows
        return cache

    # --- prefill: the whole left-padded prefix at once -----------------------------------------------------
    @torch.inference_mode()
    def prefill(self, embeds: torch.Tensor, mask: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """embeds (B, L, D), mask (B, L) with 1 on real positions (left padding) -> last-position logits (B, V)."""
        B, L, _ = embeds.shape
        c = self.config
        if B != cache.rows or L > cache.capacity:
            raise ValueError(f"prefix batch {tuple(embeds.shape[:2])} does not fit a cache of {cache.rows} rows "
                             f"x {cache.capacity} positions")
        mask = mask.to(self.device).bool()
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)                           # (B, L)
        rotations = self.rotations[positions][:, :, None]                                 # (B, L, 1, hd/2)
        # causal over real keys; a padding query also sees itself, so no softmax row is empty (no NaN)
        square = dict(dtype=torch.bool, device=self.device)
        allowed = torch.ones((L, L), **square).tril() & (mask[:, None, :] | torch.eye(L, **square))
        allowed = allowed[:, None]                                                        # (B, 1, L, L)
        x = embeds.to(self.device, self.dtype).reshape(B * L, c.dim).clone()            # (B L, D), updated in place
        for layer, kv in zip(self.layers, cache.kv):
            qkv = self._mm(self._normed(x), layer.wqkv).view(B, L, c.n_heads + 2 * c.n_kv_heads, c.head_dim)
            self._rotate(qkv, rotations)
            kv[:, :, :L] = qkv[:, :, c.n_heads:].transpose(1, 2)                          # (B, 2 KV, L, hd)
            q = qkv[:, :, :c.n_heads].transpose(1, 2)                                     # (B, H, L, hd)
            y = F.scaled_dot_product_attention(q, kv[:, :c.n_kv_heads, :L], kv[:, c.n_kv_heads:, :L],
                                               attn_mask=allowed, enable_gqa=True)        # (B, H, L, hd)
            self._mm_add_(x, y.transpose(1, 2).reshape(B * L, -1), layer.wo)             # (B L, H hd) -> (B L, D)
            self._mlp(x, layer)
        cache.bias[:, :L] = torch.where(mask, 0.0, float("-inf"))
        cache.bias[:, L:] = 0.0
        cache.positions[:] = positions[:, -1] + 1
        cache.start, cache.length = 0, L
        return self._logits(x.view(B, L, c.dim)[:, -1])

    def prefill_rows(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[KVCache, torch.Tensor]:
        """Prefill new rows (embeds (n, L, D), mask (n, L), left-padded) into a cache of their own -> (that
        cache, last-position logits (n, V)). Reads only the weights, so it may run on another thread while a
        live cache decodes; `join` then moves the rows in between two steps."""
        cache = self.new_cache(embeds.shape[0], embeds.shape[1])
        return cache, self.prefill(embeds, mask, cache)

    @torch.inference_mode()
    def join(self, rows: KVCache, cache: KVCache, *, ahead: int = 1) -> None:
        """Move prefilled `rows` (from `prefill_rows`) into the free rows of a live cache, aligned so they write
        their next key/value at the live rows' column. `ahead`: positions they may still add (the cache makes
        room for them). Copies ~10 MB per full-size row of 200 positions: milliseconds, not a prefill."""
        n, L = rows.rows, rows.length
        if cache.rows + n > cache.max_rows:
            raise ValueError(f"cannot admit {n} rows into a cache holding {cache.rows} of {cache.max_rows}")
        if cache.rows == 0:
            cache.start = cache.length = 0                # nothing live: start over at column 0
        cache.make_room(history=L, ahead=ahead)
        first_column = cache.length - L
        region = cache.region(cache.rows, n, first_column, L)
        for target, source in zip(region.kv, rows.kv):
            target.copy_(source)
        region.bias.copy_(rows.bias)
        region.positions.copy_(rows.positions)
        cache.open_rows(n, first_column)

    # --- decode: one new token per row ---------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, token_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """token_ids (B,) for the cache's B rows -> next logits (B, V); appends one position to the cache."""
        c = self.config
        token_ids = token_ids.to(self.device, non_blocking=True)
        B, t = cache.rows, cache.length
        if t >= cache.capacity or token_ids.shape != (B,):
            raise ValueError(f"step() got {tuple(token_ids.shape)} tokens for {B} rows at {t}/{cache.capacity}")
        if self._native is not None:
            logits = self._native(token_ids, cache)
            cache.positions[:B] += 1
            cache.length = t + 1
            return logits
        G = c.n_heads // c.n_kv_heads
        # every layer's cache views up front: the view ops run back to back while their code is hot
        writes = [kv[:B, :, t] for kv in cache.kv]                                       # (B, 2 KV, hd)
        s = cache.start                                  # columns before it belong to no live row
        keys = [kv[:B, :c.n_kv_heads, s:t + 1] for kv in cache.kv]                       # (B, KV, t+1-s, hd)
        values = [kv[:B, c.n_kv_heads:, s:t + 1] for kv in cache.kv]
        rotations = self.rotations[cache.positions[:B]][:, None]                          # (B, 1, hd/2)
        bias = cache.bias[:B, None, None, s:t + 1]                                       # (B, 1, 1, t+1-s)
        x = self.embed[token_ids]                                                         # (B, D)
        for layer, write, k, v in zip(self.layers, writes, keys, values):
            qkv = self._mm(self._normed(x), layer.wqkv).view(B, c.n_heads + 2 * c.n_kv_heads, c.head_dim)
            self._rotate(qkv, rotations)
            write.copy_(qkv[:, c.n_heads:])
            # one query per head: the G query heads sharing a KV head act as G queries of that KV head
            q = qkv[:, :c.n_heads].view(B, c.n_kv_heads, G, c.head_dim)                  # (B, KV, G, hd)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)                  # (B, KV, G, hd)
            self._mm_add_(x, y.reshape(B, -1), layer.wo)                                   # (B, H hd) -> (B, D)
            self._mlp(x, layer)
        cache.positions[:B] += 1
        cache.length = t + 1
        return self._logits(x)


# --- one decoder per HF model object ------------------------------------------------------------------------
_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {precision: (fingerprint, decoder)}


def supports_fast_decoder(model: torch.nn.Module) -> bool:
    """A plain fp32 Llama on the CPU or CUDA: what `LlamaDecoder` implements exactly (anything else keeps HF's
    forward)."""
    if not isinstance(model, LlamaForCausalLM):
        return False
    if any(p.device.type not in DEVICE_TYPES or p.dtype != torch.float32 for p in model.parameters()):
        return False
    try:
        DecoderConfig.from_hf(model.config)
    except ValueError:
        return False
    return True


def weight_format_for(model: torch.nn.Module, precision: Precision) -> WeightFormat:
    """`precision`'s format on the model's device; ValueError when that device has no such format."""
    return weight_format(precision, model_device(model))


def _fingerprint(model: torch.nn.Module) -> tuple:
    """Changes when any weight is replaced or edited in place (training, load_state_dict), so a decoder
    built from stale weights is never reused."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def fast_decoder(model: LlamaForCausalLM, *, precision: Precision = "fp32") -> LlamaDecoder:
    """The decoder for this model object, built once (at full size, fusing copies ~0.5 GB in fp32) and
    reused while the model's weights are unchanged."""
    fingerprint = _fingerprint(model)
    built = _DECODERS.setdefault(model, {})
    if precision in built and built[precision][0] == fingerprint:
        return built[precision][1]
    with torch.inference_mode(False), torch.no_grad():     # plain tensors, even when called while decoding
        decoder = LlamaDecoder.from_hf(model, precision=precision)
    built[precision] = (fingerprint, decoder)
    return decoder
