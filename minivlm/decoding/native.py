"""The CPU fp32 decoder's own kernels (`native/decode_step.c`): products on weights in a layout for few rows,
and the whole decode step in one call. Why they exist and what they measured: the C file's header and
docs/benchmarks.md.

The C file is compiled on first use for this machine's CPU (`cc -O3 -march=native`, about two seconds) into
the user's cache (`minivlm.c_library`), keyed by the source, the compiler and the CPU's flags, and loaded with
ctypes. Where no compiler works, or MINIVLM_NATIVE_KERNELS=0, `library()` is None and the CPU's fp32 format
falls back to oneDNN's (`minivlm.decoding.device`); the fallback is logged once.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from minivlm import c_library

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native") / "decode_step.c"
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-lm"]
BLOCK = 16                          # outputs per block of the layout
ENV = "MINIVLM_NATIVE_KERNELS"      # "0": use oneDNN's kernels instead (a comparison, or no compiler)


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build() -> Path:
    """Compiled once per source, compiler and CPU (-march=native tunes it to this one)."""
    cc = c_library.compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout if cc else ""
    began = time.perf_counter()
    path = c_library.shared_library("decode_step", SOURCE.read_text(), FLAGS, key=version + _cpu_flags(),
                                    folder="native")
    if time.perf_counter() - began > 0.1:
        log.info("compiled the native decode kernels in %.1f s -> %s", time.perf_counter() - began, path)
    return path


class _Matrix(ctypes.Structure):
    """decode_step.c's `matrix`."""
    _fields_ = [("w", ctypes.c_void_p), ("scale", ctypes.c_void_p), ("sum128", ctypes.c_void_p),
                ("k", ctypes.c_int), ("kp", ctypes.c_int)]


class _Model(ctypes.Structure):
    """decode_step.c's `model`: the shapes and the weights' addresses."""
    _fields_ = [(name, ctypes.c_int) for name in
                ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden", "vocab")] + [
        ("eps_d", ctypes.c_float), ("embed", ctypes.c_void_p), ("lm_head", ctypes.POINTER(_Matrix)),
        ("layers", ctypes.POINTER(_Matrix)), ("rotations", ctypes.c_void_p)]


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.vlm_product.argtypes = [ctypes.POINTER(_Matrix), i, p, i64, i, p, i64, i]
    lib.vlm_product.restype = i
    lib.vlm_step.argtypes = [ctypes.POINTER(_Model), i, p, p, p, i64, i64, i, i, p, i64, p, i]
    lib.vlm_step.restype = i
    lib.vlm_has_int8.argtypes = []
    lib.vlm_has_int8.restype = i
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (logged once) where they cannot be built here or are switched off."""
    if os.environ.get(ENV, "1") == "0":
        log.info("%s=0: the CPU fp32 decoder uses oneDNN's kernels", ENV)
        return None
    if sys.byteorder != "little" or platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"):
        log.warning("native decode kernels: untested CPU %s; using oneDNN's", platform.machine())
        return None
    try:
        return _declare(ctypes.CDLL(str(_build())))
    except (OSError, c_library.CompileError) as error:
        log.warning("native decode kernels unavailable (%s); the CPU fp32 decoder uses oneDNN's, ~1.3x slower "
                    "per step", error)
        return None


def _threads() -> int:
    return torch.get_num_threads()          # the caller's setting, as torch's own kernels would use


def has_int8() -> bool:
    """The int8 kernels need AVX-512 VNNI (compiled in where -march=native has it)."""
    return library() is not None and bool(library().vlm_has_int8())


@dataclass(frozen=True)
class Blocked:
    """An (rows, K) matrix in a blocked layout, padded with zero rows to a multiple of 16: fp32 `data`
    (rows/16, K, 16); or int8 `data` (rows/16, K/4, 16, 4) with per-row `scale` and `sum128` (K padded to 4)."""
    data: torch.Tensor
    rows: int
    k: int
    scale: torch.Tensor | None = None
    sum128: torch.Tensor | None = None

    def data_ptr(self) -> int:
        return self.data.data_ptr()

    @property
    def padded_rows(self) -> int:
        return self.data.shape[0] * BLOCK

    def matrix(self) -> _Matrix:
        if self.scale is None:
            return _Matrix(self.data_ptr(), None, None, self.k, self.k)
        return _Matrix(self.data_ptr(), self.scale.data_ptr(), self.sum128.data_ptr(), self.k, self.data.shape[1] * 4)


def _padded_rows(w: torch.Tensor) -> torch.Tensor:
    return torch.cat([w.detach().float(), w.new_zeros((-w.shape[0] % BLOCK, w.shape[1]))])


def block(w: torch.Tensor) -> Blocked:
    """(N, K) fp32 -> the fp32 blocked layout."""
    n, k = w.shape
    return Blocked(_padded_rows(w).reshape(-1, BLOCK, k).transpose(1, 2).contiguous(), n, k)


def block_int8(w: torch.Tensor) -> Blocked:
    """(N, K) fp32 -> int8, one symmetric scale per row (max |w| / 127), in the int8 blocked layout."""
    n, k = w.shape
    w = _padded_rows(w)
    scale = w.abs().amax(dim=1) / 127
    q = torch.round(w / scale.clamp(min=1e-30)[:, None]).clamp(-127, 127).to(torch.int8)
    q = torch.cat([q, q.new_zeros((q.shape[0], -k % 4))], dim=1)                  # K padded to 4
    data = q.reshape(-1, BLOCK, q.shape[1] // 4, 4).transpose(1, 2).contiguous()   # (N/16, K/4, 16, 4)
    sum128 = (q.to(torch.int32).sum(dim=1) * 128).to(torch.int32).contiguous()
    return Blocked(data, n, k, scale.contiguous(), sum128)


def product(x: torch.Tensor, w: Blocked) -> torch.Tensor:
    """x (M, K) fp32 @ a blocked (N, K) weight -> (M, N) fp32, on torch's thread count."""
    if x.dim() != 2 or x.shape[1] != w.k or x.dtype != torch.float32:
        raise ValueError(f"product of {tuple(x.shape)} {x.dtype} with a blocked ({w.rows}, {w.k}) weight")
    x = x.contiguous()
    y = torch.empty((x.shape[0], w.padded_rows), dtype=torch.float32)
    matrix = w.matrix()
    if library().vlm_product(ctypes.byref(matrix), w.padded_rows, x.data_ptr(), w.k, x.shape[0], y.data_ptr(),
                             w.padded_rows, _threads()) != 0:
        raise MemoryError("the native product could not allocate its quantized input")
    return y if w.rows == w.padded_rows else y[:, :w.rows].contiguous()


def supports_step(config) -> bool:
    """The C step writes the residual stream in whole blocks: the model's width must be a multiple of 16 (it
    is for every Llama we serve; other widths decode through `product` alone)."""
    return config.dim % BLOCK == 0


class NativeStep:
    """A decoder's weights as the C step reads them (addresses only: the decoder's tensors stay the owners)."""

    def __init__(self, decoder):
        c, layers = decoder.config, decoder.layers
        if not supports_step(c):
            raise ValueError(f"the native step needs a width that is a multiple of {BLOCK}, got {c.dim}")
        matrices = [w.matrix() for layer in layers for w in (layer.wqkv, layer.wo, layer.w_gate_up, layer.w_down)]
        self._layers = (_Matrix * len(matrices))(*matrices)
        self._lm_head = decoder.lm_head.matrix()
        self._rotations = torch.view_as_real(decoder.rotations).contiguous()        # (P, hd/2, 2) cos, sin
        self.model = _Model(c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim, c.vocab_size,
                            c.norm_eps * c.dim, decoder.embed.data_ptr(), ctypes.pointer(self._lm_head),
                            self._layers, self._rotations.data_ptr())
        self.vocab = c.vocab_size

    def __call__(self, token_ids: torch.Tensor, cache) -> torch.Tensor:
        """One step for the cache's live rows -> logits (B, V); writes their keys and values at `length`."""
        B, t = cache.rows, cache.length
        tokens = token_ids.to(torch.long).contiguous()
        positions = cache.positions[:B].contiguous()
        kv = cache.kv[0]
        if not (kv.is_contiguous() and cache.bias.is_contiguous()) or kv.dtype != torch.float32:
            raise ValueError("the native step needs a contiguous fp32 cache")
        if B and not 0 <= int(tokens.min()) <= int(tokens.max()) < self.vocab:      # C would read past the table
            raise ValueError(f"token ids must be in [0, {self.vocab}), got {tokens.tolist()}")
        pointers = (ctypes.c_void_p * len(cache.kv))(*[layer.data_ptr() for layer in cache.kv])
        logits = torch.empty((B, -(-self.vocab // BLOCK) * BLOCK), dtype=torch.float32)
        status = library().vlm_step(ctypes.byref(self.model), B, tokens.data_ptr(), positions.data_ptr(), pointers,
                                    kv.stride(0), kv.stride(1), cache.start, t, cache.bias.data_ptr(),
                                    cache.bias.stride(0), logits.data_ptr(), _threads())
        if status != 0:
            raise MemoryError("the native decode step could not allocate its scratch memory")
        return logits if logits.shape[1] == self.vocab else logits[:, :self.vocab]
