"""Measure the rates the roofline needs: weight-reading bandwidth and fp32 GEMM throughput.

Best of several repeats: the bound is what the hardware can do, and other work on a shared machine only
ever makes a repeat slower. Bandwidth uses a matrix as large as the language model's weights, so a large
last-level cache cannot hold it any more than it holds the real weights.
"""
from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from vlm_tools.bench.roofline import MachineRates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MachineReport:
    cpu: str
    cores: int
    torch_threads: int
    bandwidth_torch_gb_s: float
    bandwidth_numpy_gb_s: float
    gemm_torch_gflop_s: float
    gemm_onnxruntime_gflop_s: float

    @property
    def rates(self) -> MachineRates:
        return MachineRates(max(self.bandwidth_torch_gb_s, self.bandwidth_numpy_gb_s),
                            max(self.gemm_torch_gflop_s, self.gemm_onnxruntime_gflop_s))


def best_seconds(fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bandwidth_gb_s(weight_bytes: int, *, use_torch: bool = True, repeats: int = 5) -> tuple[float, float]:
    """(torch, numpy) GB/s of a matrix-vector product over a `weight_bytes` fp32 matrix."""
    cols = 4096
    rows = max(1, weight_bytes // (4 * cols))
    matrix = torch.randn(rows, cols)
    vector = torch.randn(cols)
    size = matrix.numel() * 4
    t_torch = best_seconds(lambda: torch.mv(matrix, vector), repeats=repeats)
    m, v = matrix.numpy(), vector.numpy()
    t_numpy = best_seconds(lambda: m @ v, repeats=repeats)
    return size / t_torch / 1e9, size / t_numpy / 1e9


def gemm_torch_gflop_s(m: int = 1024, k: int = 768, n: int = 3072, *, repeats: int = 5) -> float:
    """Shaped like a ViT MLP layer over a few images' positions."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    with torch.inference_mode():
        return 2 * m * k * n / best_seconds(lambda: a @ b, repeats=repeats) / 1e9


def gemm_onnxruntime_gflop_s(m: int = 1024, k: int = 768, n: int = 3072, *, threads: int = 2,
                             repeats: int = 5) -> float:
    """The same GEMM through ONNX Runtime, which runs the served vision encoder."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n), dtype=np.float32), "b")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)   # what current onnxruntime releases accept
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(onnx._serialize(model) if hasattr(onnx, "_serialize")
                                   else model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    return 2 * m * k * n / best_seconds(lambda: session.run(None, {"a": a}), repeats=repeats) / 1e9


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_machine(weight_bytes: int, *, repeats: int = 5) -> MachineReport:
    """With one thread per core whatever the benchmark's own setting: the bound is the machine's."""
    import os

    cores, threads = os.cpu_count() or 1, torch.get_num_threads()
    torch.set_num_threads(cores)
    try:
        bw_torch, bw_numpy = bandwidth_gb_s(weight_bytes, repeats=repeats)
        report = MachineReport(cpu=cpu_name(), cores=cores, torch_threads=cores, bandwidth_torch_gb_s=bw_torch,
                               bandwidth_numpy_gb_s=bw_numpy, gemm_torch_gflop_s=gemm_torch_gflop_s(repeats=repeats),
                               gemm_onnxruntime_gflop_s=gemm_onnxruntime_gflop_s(threads=cores, repeats=repeats))
    finally:
        torch.set_num_threads(threads)
    log.info("machine: %s", report)
    return report


def best_of(*reports: MachineReport) -> MachineReport:
    """Each rate's best over several measurements (say, before and after the run): on a shared machine a
    low reading is other load, never the hardware."""
    rates = {name: max(getattr(r, name) for r in reports) for name in
             ("bandwidth_torch_gb_s", "bandwidth_numpy_gb_s", "gemm_torch_gflop_s", "gemm_onnxruntime_gflop_s")}
    return MachineReport(cpu=reports[0].cpu, cores=reports[0].cores, torch_threads=reports[0].torch_threads,
                         **rates)
