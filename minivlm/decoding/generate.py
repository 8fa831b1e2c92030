"""Decoding for the VLM: a batched, KV-cached decoder and the notebook's cache-free reference.

Each request's prefix is [image embeds] + [prompt token embeds]. Requests of different lengths are
left-padded into one batch; position ids count only real positions, so a request decodes the same tokens
alone or inside a batch. Rows that finish (EOS or their own token limit) leave the batch and its cache.
`iter_decode` yields tokens step by step, so a streaming (decoupled) server can forward them as they come.

Two backends run the same loop: `minivlm.decoding.llama_decoder` (fused weights, preallocated cache; built once per model
object and used by default for plain fp32 Llamas on the CPU or CUDA) and HF's forward with a `DynamicCache` (any other
model, and `backend="hf"` for comparison). Their greedy tokens are the same; logits differ by ~1e-5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Literal, Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from minivlm.decoding.llama_decoder import LlamaDecoder, fast_decoder, supports_fast_decoder
from minivlm.decoding.sampling import Generation, Sampler, SamplingParams, finish_reason, next_tokens

if TYPE_CHECKING:
    from minivlm.decoding.json_constraint import DetectionGrammar


@dataclass(frozen=True)
class TokenEvent:
    row: int                       # index of the request in the caller's list
    token_id: int
    finish_reason: str | None      # "stop" (EOS), "length", or None while decoding goes on


def left_pad(prefixes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_i, D) tensors -> embeds (B, L, D) and attention mask (B, L), padding on the left."""
    length = max(p.shape[0] for p in prefixes)
    embeds = prefixes[0].new_zeros((len(prefixes), length, prefixes[0].shape[1]))
    mask = torch.zeros((len(prefixes), length), dtype=torch.long, device=embeds.device)
    for row, prefix in enumerate(prefixes):
        embeds[row, length - prefix.shape[0]:] = prefix
        mask[row, length - prefix.shape[0]:] = 1
    return embeds, mask


Backend = Literal["auto", "fast", "hf"]


class _HFSession:
    """HF's forward with a DynamicCache: the comparison path, and the fallback for models the fast decoder
    does not implement."""

    def __init__(self, lm: PreTrainedModel, embeds: torch.Tensor, mask: torch.Tensor):
        self.lm, self.mask, self.cache = lm, mask, DynamicCache()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)                          # (B, L)
        out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=self.cache,
                 use_cache=True, logits_to_keep=1)
        self.logits, self.next_position = out.logits[:, -1], positions[:, -1:] + 1

    def keep(self, alive: list[bool]) -> list[int]:
        order = [i for i, a in enumerate(alive) if a]
        index = torch.tensor(order, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.next_position = self.mask[index], self.next_position[index]
        return order

    def step(self, tokens: list[int]) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(tokens), 1))], dim=1)
        next_ids = torch.tensor(tokens, device=self.mask.device).unsqueeze(1)                # (B, 1)
        out = self.lm(input_ids=next_ids, attention_mask=self.mask, position_ids=self.next_position,
                      cache=self.cache, use_cache=True)
        self.next_position = self.next_position + 1
        return out.logits[:, -1]


class _FastSession:
    def __init__(self, decoder: LlamaDecoder, embeds: torch.Tensor, mask: torch.Tensor, max_new_tokens: int):
        # the last token is sampled, never fed back: the cache needs max_new_tokens - 1 new positions
        self.decoder = decoder
        self.cache = decoder.new_cache(embeds.shape[0], embeds.shape[1] + max(max_new_tokens - 1, 0))
        self.logits = decoder.prefill(embeds, mask, self.cache)

    def keep(self, alive: list[bool]) -> list[int]:
        return self.cache.keep(alive)

    def step(self, tokens: list[int]) -> torch.Tensor:
        return self.decoder.step(torch.tensor(tokens, device=self.decoder.device), self.cache)


def _session(lm: PreTrainedModel, embeds: torch.Tensor, mask: torch.Tensor, params: Sequence[SamplingParams],
             backend: Backend | LlamaDecoder):
    if isinstance(backend, LlamaDecoder):
        return _FastSession(backend, embeds, mask, max(p.max_new_tokens for p in params))
    if backend not in ("auto", "fast", "hf"):
        raise ValueError(f"backend must be 'auto', 'fast', 'hf' or a LlamaDecoder, got {backend!r}")
    if backend == "hf" or (backend == "auto" and not supports_fast_decoder(lm)):
        return _HFSession(lm, embeds, mask)
    return _FastSession(fast_decoder(lm), embeds, mask, max(p.max_new_tokens for p in params))


@torch.inference_mode()
def iter_decode(lm: PreTrainedModel, prefixes: Sequence[torch.Tensor], params: Sequence[SamplingParams],
                eos_token_id: int, *, backend: Backend | LlamaDecoder = "auto") -> Iterator[TokenEvent]:
    """backend: "auto" (the fast decoder for a plain fp32 Llama on the CPU or CUDA, else HF), "fast", "hf", or a prebuilt
    `LlamaDecoder` (e.g. an opt-in bf16 one)."""
    embeds, mask = left_pad(prefixes)
    session = _session(lm, embeds, mask, params, backend)
    samplers = [Sampler(p) for p in params]
    active = list(range(len(prefixes)))               # caller's row index of each batch row
    counts = [0] * len(prefixes)
    logits = session.logits
    while True:
        tokens = next_tokens(logits, [samplers[row] for row in active])
        alive = []
        for row, token in zip(active, tokens):
            counts[row] += 1
            finish = finish_reason(token, counts[row], params[row], eos_token_id)
            yield TokenEvent(row, token, finish)
            alive.append(finish is None)
        if not any(alive):
            return
        if not all(alive):
            order = session.keep(alive)
            active, tokens = [active[i] for i in order], [tokens[i] for i in order]
        logits = session.step(tokens)


def decode(lm: PreTrainedModel, prefixes: Sequence[torch.Tensor], params: Sequence[SamplingParams],
           eos_token_id: int, *, backend: Backend | LlamaDecoder = "auto") -> list[Generation]:
    """Decode every request to completion; results in the callers' order."""
    tokens: list[list[int]] = [[] for _ in prefixes]
    reasons: list[str] = [""] * len(prefixes)
    for event in iter_decode(lm, prefixes, params, eos_token_id, backend=backend):
        if event.finish_reason != "stop":
            tokens[event.row].append(event.token_id)
        if event.finish_reason:
            reasons[event.row] = event.finish_reason
    return [Generation(tuple(t), r) for t, r in zip(tokens, reasons)]


@torch.inference_mode()
def reference_greedy(lm: PreTrainedModel, prefix: torch.Tensor, max_new_tokens: int,
                     eos_token_id: int, *, grammar: DetectionGrammar | None = None) -> Generation:
    """The notebook's semantics: no cache, the whole sequence re-run for every token. The yardstick; with
    `grammar`, the yardstick of constrained detection answers."""
    sequence = prefix.unsqueeze(0)                                           # (1, L, D)
    embedding = lm.get_input_embeddings()
    sampler = Sampler(SamplingParams(max_new_tokens, grammar=grammar))
    tokens: list[int] = []
    for _ in range(max_new_tokens):
        token = sampler.pick(lm(inputs_embeds=sequence).logits[0, -1])
        if token == eos_token_id:
            return Generation(tuple(tokens), "stop")
        tokens.append(token)
        sequence = torch.cat([sequence, embedding(torch.tensor([[token]], device=sequence.device))], dim=1)
    return Generation(tuple(tokens), "length")
