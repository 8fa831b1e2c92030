"""The machine's rates as the best of several kernels: a roofline no decode engine should beat.

One kernel is not the machine: a torch matrix-vector product read weights slower than llama.cpp's decode step
needed, so a bound built on it was not a bound. Each kernel here streams a buffer as large as the weights
(reading it, summing it, copying it, multiplying it by a vector), or multiplies matrices, at one thread pinned
to one core and at one thread per core; every reading is kept and the best of each kind is the rate. Best of
several repeats, too: on a shared machine other load only ever makes a repeat slower.

Bytes count what the kernel moves: a copy reads and writes, so it counts twice its size.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

BANDWIDTH, MATMUL = "bandwidth", "matmul"
LIBRARY_THREADS = 0          # the library picks its own thread count (numpy's BLAS)


@dataclass(frozen=True)
class Reading:
    kernel: str
    kind: str                 # BANDWIDTH (GB/s) or MATMUL (GFLOP/s)
    threads: int              # LIBRARY_THREADS when the library decides
    pinned: bool              # every thread of the process confined to `threads` cores
    rate: float

    @property
    def label(self) -> str:
        threads = "library threads" if self.threads == LIBRARY_THREADS else f"{self.threads} thread" + \
            ("s" if self.threads > 1 else "")
        return f"{self.kernel} ({threads}{', pinned' if self.pinned else ''})"


@dataclass(frozen=True)
class Kernel:
    name: str
    kind: str
    threads: int
    pinned: bool
    work: float                            # bytes moved or FLOPs done by one call
    run: Callable[[], object]


def best(readings: Iterable[Reading], kind: str) -> Reading:
    """The fastest valid reading of `kind`; a zero, negative or non-finite rate is a failed reading."""
    valid = [r for r in readings if r.kind == kind and math.isfinite(r.rate) and r.rate > 0]
    if not valid:
        raise ValueError(f"no valid {kind} reading among the probe's kernels")
    return max(valid, key=lambda r: r.rate)


def merge(*groups: Iterable[Reading]) -> tuple[Reading, ...]:
    """Each kernel's best over several probes (say, before and after a run), in first-seen order."""
    merged: dict[tuple, Reading] = {}
    for reading in (r for group in groups for r in group):
        key = (reading.kernel, reading.kind, reading.threads, reading.pinned)
        if key not in merged or reading.rate > merged[key].rate:
            merged[key] = reading
    return tuple(merged.values())


def best_seconds(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _set_affinity(cpus: set[int]) -> None:
    """Every thread of this process (OpenMP workers included), not just the caller."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:                        # a thread that has just exited
            pass


@contextmanager
def threads_on_cores(threads: int, *, pinned: bool) -> Iterator[None]:
    """torch at `threads` threads; pinned: the process confined to the first `threads` allowed cores."""
    import torch

    allowed, before = sorted(os.sched_getaffinity(0)), torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    pin = pinned and hasattr(os, "sched_setaffinity") and 0 < threads < len(allowed)
    if pin:
        _set_affinity(set(allowed[:threads]))
    try:
        yield
    finally:
        if pin:
            _set_affinity(set(allowed))
        torch.set_num_threads(before)


def bandwidth_kernels(nbytes: int, cores: int) -> list[Kernel]:
    import numpy as np
    import torch

    from minivlm.decoding.device import weight_format

    cols = 4096
    matrix = torch.randn(max(16, nbytes // (4 * cols) // 16 * 16), cols)  # (N, 4096) fp32, N a multiple of 16
    vector, array = torch.randn(cols), matrix.numpy()
    size, target = matrix.numel() * 4, torch.empty_like(matrix)
    kernels = []
    for threads, pinned in sorted({(1, True), (cores, False)}):
        kernels += [Kernel("torch.mv fp32", BANDWIDTH, threads, pinned, size, lambda: torch.mv(matrix, vector)),
                    Kernel("torch.sum", BANDWIDTH, threads, pinned, size, lambda: matrix.sum()),
                    Kernel("torch.amax", BANDWIDTH, threads, pinned, size, lambda: matrix.amax()),
                    Kernel("torch copy", BANDWIDTH, threads, pinned, 2 * size, lambda: target.copy_(matrix))]
    decoder = weight_format("fp32", "cpu")        # the fp32 decoder's own kernel on its packed weights
    packed, row = decoder.pack(matrix), vector[None]
    kernels += [Kernel("decoder fp32 matvec", BANDWIDTH, threads, pinned, size, lambda: decoder.matmul(row, packed))
                for threads, pinned in sorted({(1, True), (cores, False)})]
    v = vector.numpy()
    kernels += [Kernel("numpy matvec", BANDWIDTH, LIBRARY_THREADS, False, size, lambda: array @ v),
                Kernel("numpy sum", BANDWIDTH, 1, True, size, lambda: array.sum()),       # numpy: one thread
                Kernel("numpy copy", BANDWIDTH, 1, True, 2 * size,
                       lambda: np.copyto(target.numpy(), array))]
    return kernels


def matmul_kernels(cores: int, m: int = 1024, k: int = 768, n: int = 3072) -> list[Kernel]:
    """Shaped like a ViT MLP layer over a few images' positions, and one larger square product."""
    import torch

    a, b, square = torch.randn(m, k), torch.randn(k, n), torch.randn(2048, 2048)
    kernels = []
    for threads, pinned in sorted({(1, True), (cores, False)}):
        kernels += [Kernel("torch GEMM 1024x768x3072", MATMUL, threads, pinned, 2 * m * k * n, lambda: a @ b),
                    Kernel("torch GEMM 2048^3", MATMUL, threads, pinned, 2 * 2048 ** 3, lambda: square @ square)]
    onnx_gemm = _onnxruntime_gemm(m, k, n, threads=cores)
    if onnx_gemm is not None:
        kernels.append(Kernel("onnxruntime GEMM 1024x768x3072", MATMUL, cores, False, 2 * m * k * n, onnx_gemm))
    return kernels


def _onnxruntime_gemm(m: int, k: int, n: int, *, threads: int) -> Callable[[], object] | None:
    """The GEMM through ONNX Runtime, which runs the served vision encoder (None where it is not installed)."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n), dtype=np.float32), "b")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)   # what current onnxruntime releases accept
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    return lambda: session.run(None, {"a": a})


def measure(kernel: Kernel, *, repeats: int = 5) -> Reading:
    with threads_on_cores(kernel.threads or os.cpu_count() or 1, pinned=kernel.pinned):
        seconds = best_seconds(kernel.run, repeats=repeats)
    return Reading(kernel.name, kernel.kind, kernel.threads, kernel.pinned, kernel.work / seconds / 1e9)


def probe(weight_bytes: int, *, repeats: int = 5, cores: int | None = None) -> tuple[Reading, ...]:
    """Every kernel once (best of `repeats`): bandwidth over a `weight_bytes` buffer, then matmul."""
    import torch

    cores = cores or len(os.sched_getaffinity(0))
    with torch.inference_mode():
        readings = [measure(k, repeats=repeats) for k in bandwidth_kernels(weight_bytes, cores)]
        readings += [measure(k, repeats=repeats) for k in matmul_kernels(cores)]
    return tuple(readings)


def format_readings(readings: Iterable[Reading]) -> str:
    readings = list(readings)
    lines = []
    for kind, unit in ((BANDWIDTH, "GB/s"), (MATMUL, "GFLOP/s")):
        top = best(readings, kind)
        for r in sorted((r for r in readings if r.kind == kind), key=lambda r: -r.rate):
            lines.append(f"  {kind:9} {r.rate:8.1f} {unit:7} {r.label}{'  <- best' if r is top else ''}")
    return "\n".join(lines)
