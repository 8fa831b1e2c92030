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


class _Model(ctypes.Structure):
    """decode_step.c's `model`: the weights' addresses and the shapes."""
    _fields_ = [(name, ctypes.c_int) for name in
                ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "hidden", "vocab")] + [
        ("eps_d", ctypes.c_float), ("embed", ctypes.c_void_p), ("lm_head", ctypes.c_void_p),
        ("wqkv", ctypes.POINTER(ctypes.c_void_p)), ("wo", ctypes.POINTER(ctypes.c_void_p)),
        ("w_gate_up", ctypes.POINTER(ctypes.c_void_p)), ("w_down", ctypes.POINTER(ctypes.c_void_p)),
        ("rotations", ctypes.c_void_p)]


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.vlm_product.argtypes = [p, i, i, p, i64, i, p, i64, i]
    lib.vlm_product.restype = None
    lib.vlm_step.argtypes = [ctypes.POINTER(_Model), i, p, p, p, i64, i64, i, i, p, i64, p, i]
    lib.vlm_step.restype = i
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


@dataclass(frozen=True)
class Blocked:
    """An (rows, K) matrix in the blocked layout: `data` (ceil(rows / 16), K, 16), zeros past `rows`."""
    data: torch.Tensor
    rows: int

    def data_ptr(self) -> int:
        return self.data.data_ptr()


def block(w: torch.Tensor) -> Blocked:
    """(N, K) fp32 -> the blocked layout, N padded with zero rows to a multiple of 16."""
    n, k = w.shape
    w = torch.cat([w.detach().float(), w.new_zeros((-n % BLOCK, k))])
    return Blocked(w.reshape(-1, BLOCK, k).transpose(1, 2).contiguous(), n)


def product(x: torch.Tensor, w: Blocked) -> torch.Tensor:
    """x (M, K) fp32 @ a blocked (N, K) weight -> (M, N), on torch's thread count."""
    blocks, k, _ = w.data.shape
    if x.dim() != 2 or x.shape[1] != k or x.dtype != torch.float32:
        raise ValueError(f"product of {tuple(x.shape)} {x.dtype} with a blocked ({w.rows}, {k}) fp32 weight")
    x = x.contiguous()
    y = torch.empty((x.shape[0], blocks * BLOCK), dtype=torch.float32)
    library().vlm_product(w.data_ptr(), blocks * BLOCK, k, x.data_ptr(), k, x.shape[0], y.data_ptr(),
                          blocks * BLOCK, _threads())
    return y if w.rows == blocks * BLOCK else y[:, :w.rows].contiguous()


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
        addresses = lambda tensors: (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])  # noqa: E731
        self._arrays = [addresses([layer.wqkv for layer in layers]), addresses([layer.wo for layer in layers]),
                        addresses([layer.w_gate_up for layer in layers]),
                        addresses([layer.w_down for layer in layers])]
        self._rotations = torch.view_as_real(decoder.rotations).contiguous()        # (P, hd/2, 2) cos, sin
        self.model = _Model(c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.hidden_dim, c.vocab_size,
                            c.norm_eps * c.dim, decoder.embed.data_ptr(), decoder.lm_head.data_ptr(),
                            *self._arrays, self._rotations.data_ptr())
        self.vocab = c.vocab_size

    def __call__(self, token_ids: torch.Tensor, cache) -> torch.Tensor:
        """One step for the cache's live rows -> logits (B, V); writes their keys and values at `length`."""
        B, t = cache.rows, cache.length
        tokens = token_ids.to(torch.long).contiguous()
        positions = cache.positions[:B].contiguous()
        kv = cache.kv[0]
        if not (kv.is_contiguous() and cache.bias.is_contiguous()):
            raise ValueError("the native step needs a contiguous cache")
        pointers = (ctypes.c_void_p * len(cache.kv))(*[layer.data_ptr() for layer in cache.kv])
        logits = torch.empty((B, -(-self.vocab // BLOCK) * BLOCK), dtype=torch.float32)
        status = library().vlm_step(ctypes.byref(self.model), B, tokens.data_ptr(), positions.data_ptr(), pointers,
                                    kv.stride(0), kv.stride(1), cache.start, t, cache.bias.data_ptr(),
                                    cache.bias.stride(0), logits.data_ptr(), _threads())
        if status != 0:
            raise MemoryError("the native decode step could not allocate its scratch memory")
        return logits if logits.shape[1] == self.vocab else logits[:, :self.vocab]
