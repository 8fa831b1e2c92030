"""Everything in decoding that depends on the device, in one place; the decoder and the continuous batch are
one code path on the CPU and on CUDA.

- Weight formats: how a matrix is packed at load and multiplied every step, and the dtype of activations and
  the KV cache. The CPU's fp32 and int8 are our own C kernels (`minivlm.decoding.native`; oneDNN / fbgemm
  where they cannot build), its bf16 oneDNN's, all keeping activations fp32; on CUDA bf16 is bf16 throughout
  (weights, activations, cache), the format tensor cores are fast in; int8 is CPU-only.
- The default precision: "auto" is fp32 on the CPU (HF's greedy tokens exactly; bf16 pays there only at
  batch >= 4) and bf16 on CUDA (half the bytes per step, and a GPU's fp32 matmuls are its slow path).
- Prefill's own CUDA stream, so a prompt's kernels queue beside the live rows' decode steps, not behind them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

from minivlm.decoding import native

Precision = Literal["fp32", "bf16", "int8"]
AUTO = "auto"                     # the device's default precision (`default_precision`)
DEVICE_TYPES = ("cpu", "cuda")    # where the fast decoder runs


@dataclass(frozen=True)
class WeightFormat:
    precision: Precision
    pack: Callable[[torch.Tensor], torch.Tensor]                       # (out, in) fp32 -> what `matmul` takes
    matmul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]       # x (N, in) -> (N, out), in `dtype`
    dtype: torch.dtype            # activations, the residual stream and the KV cache
    fused_add: bool               # `matmul` is torch.matmul: x += a @ w is one addmm_ kernel
    native_step: bool = False     # a decode step is one call into `minivlm.decoding.native` (CPU)


def _pack_int8(w: torch.Tensor) -> torch.Tensor:
    """(out, in) fp32 -> fbgemm's packed int8, one symmetric scale per output channel."""
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
    zero = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():         # torch marks quantized tensors deprecated; the opt-in still runs
        warnings.simplefilter("ignore")
        return torch.ops.quantized.linear_prepack(torch.quantize_per_channel(w, scale, zero, 0, torch.qint8), None)


def _transposed(w: torch.Tensor) -> torch.Tensor:
    """(out, in) -> (in, out) contiguous: on MKL `x @ w` streams it faster than F.linear's (out, in)."""
    return w.t().contiguous()


def _onednn_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (N, in) @ a oneDNN-packed weight -> (N, out)."""
    return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [None], "")


def _onednn_packed(w: torch.Tensor) -> torch.Tensor:
    """(out, in) -> oneDNN's blocked layout for its own kernels, packed once at load."""
    return torch.ops.mkldnn._reorder_linear_weight(w)


_FP32 = WeightFormat("fp32", _transposed, torch.matmul, torch.float32, fused_add=True)
# On the CPU, oneDNN's kernels on weights it packed itself stream a step's 538 MB ~2.4x faster than
# torch.matmul on a plain (in, out) matrix (measured here, 2 threads: all of a full-size step's products
# 11 vs 26 ms at batch 1, 15 vs 50 ms at batch 8, and 2.4x on prefill's larger products); results differ
# from matmul's by float rounding only (~4e-6 on unit-scale outputs).
_ONEDNN_FP32 = (WeightFormat("fp32", _onednn_packed, _onednn_linear, torch.float32, fused_add=False)
                if torch.backends.mkldnn.is_available() else _FP32)
# Faster still: our own kernels (`minivlm.decoding.native`, compiled here on first use) on a layout for few
# rows, and the whole decode step in one C call: against oneDNN's format, one thread, a step 1.4x faster at
# batch 1 and 1.2x at batch 8, prefill equal (docs/benchmarks.md). The same arithmetic up to float rounding.
_NATIVE_FP32 = WeightFormat("fp32", native.block, native.product, torch.float32, fused_add=False, native_step=True)

_FBGEMM_INT8 = WeightFormat("int8", _pack_int8, torch.ops.quantized.linear_dynamic, torch.float32, fused_add=False)
# int8 on AVX-512 VNNI: our own kernels too (per-row weight and input scales, int32 sums), the step in C.
_NATIVE_INT8 = WeightFormat("int8", native.block_int8, native.product, torch.float32, fused_add=False,
                            native_step=True)


def _cpu_format(precision: str) -> WeightFormat:
    """The native format where its kernels build here (int8: and the CPU has VNNI), else oneDNN's or
    fbgemm's. Decided on first use, not at import."""
    if precision == "fp32":
        return _NATIVE_FP32 if native.library() is not None else _ONEDNN_FP32
    return _NATIVE_INT8 if native.has_int8() else _FBGEMM_INT8


FORMATS: dict[tuple[str, str], WeightFormat] = {
    ("cpu", "fp32"): _ONEDNN_FP32,      # `weight_format` gives the native one where it builds
    ("cpu", "bf16"): WeightFormat(
        "bf16", lambda w: torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), 1),
        lambda x, w: _onednn_linear(x.bfloat16(), w).float(), torch.float32, fused_add=False),
    ("cpu", "int8"): _FBGEMM_INT8,      # `weight_format` gives the native one where it builds
    ("cuda", "fp32"): _FP32,
    # Plain torch ops, so the unit tests check this format's arithmetic on the CPU too.
    ("cuda", "bf16"): WeightFormat("bf16", lambda w: _transposed(w).bfloat16(), torch.matmul, torch.bfloat16,
                                   fused_add=True),
}


PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")


def weight_format(precision: str, device: torch.device | str) -> WeightFormat:
    device_type = torch.device(device).type
    if precision not in PRECISIONS:
        raise ValueError(f"decoder precision must be one of {(AUTO, *PRECISIONS)}, got {precision!r}")
    if (device_type, precision) not in FORMATS:
        offered = sorted(p for d, p in FORMATS if d == device_type)
        raise ValueError(f"decoder precision {precision!r} does not run on {device_type}"
                         + (f"; {device_type} offers {offered}" if offered else
                            f"; the fast decoder runs on {DEVICE_TYPES}"))
    if device_type == "cpu" and precision in ("fp32", "int8"):
        return _cpu_format(precision)
    return FORMATS[device_type, precision]


def default_precision(device: torch.device | str) -> Precision:
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def resolve_precision(requested: str, device: torch.device | str) -> Precision:
    """"auto" -> the device's default; anything else must be a format the device has (ValueError if not)."""
    precision = default_precision(device) if requested == AUTO else requested
    return weight_format(precision, device).precision


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class PrefillStream:
    """Where `ContinuousBatch.prefill` runs its kernels. On CUDA a stream of its own: the prefill thread's
    kernels then run beside the decode steps the scheduler thread queues on the default stream, instead of
    waiting behind them. On the CPU a plain call: the prefill thread already runs on another core."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def run(self, prefill: Callable[[], object]):
        if self.stream is None:
            return prefill()
        # the prompts were embedded on the default stream by the scheduler thread: start after that (this
        # waits for at most the one decode step queued there, since every step ends in a sync on its tokens)
        self.stream.wait_stream(torch.cuda.default_stream(self.device))
        with torch.cuda.stream(self.stream):
            result = prefill()
        # complete before another thread touches the results; this thread has nothing else to do meanwhile
        self.stream.synchronize()
        return result

    def adopt(self, tensors: Sequence[torch.Tensor]) -> None:
        """Tensors `run` made, now read on the current stream: their memory must not go back to the prefill
        stream's pool (and be overwritten by the next prefill) before the current stream's reads are done."""
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            for tensor in tensors:
                tensor.record_stream(current)
