"""The machine probe's selection: the best kernel of each kind, merging probes, what a kernel's work counts.

Only the logic: no timings are asserted (measure() runs on tiny buffers to check the arithmetic around it).
"""
import math
import os

import pytest
import torch

from vlm_tools.bench import probe
from vlm_tools.bench.machine import MachineReport, best_of
from vlm_tools.bench.probe import BANDWIDTH, MATMUL, Kernel, Reading


def reading(kernel: str, rate: float, *, kind: str = BANDWIDTH, threads: int = 2, pinned: bool = False) -> Reading:
    return Reading(kernel, kind, threads, pinned, rate)


def test_best_is_the_fastest_reading_of_its_kind():
    readings = [reading("torch.mv", 21.0), reading("torch.sum", 42.5), reading("gemm", 400.0, kind=MATMUL)]
    assert probe.best(readings, BANDWIDTH).kernel == "torch.sum"
    assert probe.best(readings, MATMUL).kernel == "gemm"


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_best_ignores_failed_readings(bad):
    assert probe.best([reading("broken", bad), reading("torch.mv", 20.0)], BANDWIDTH).rate == 20.0


def test_best_without_a_valid_reading_names_the_kind():
    with pytest.raises(ValueError, match="matmul"):
        probe.best([reading("torch.mv", 20.0), reading("gemm", math.nan, kind=MATMUL)], MATMUL)


def test_merge_keeps_each_kernels_best_and_tells_threads_and_pinning_apart():
    before = [reading("torch.sum", 30.0), reading("torch.sum", 25.0, threads=1, pinned=True)]
    after = [reading("torch.sum", 40.0), reading("torch.sum", 20.0, threads=1, pinned=True)]
    merged = probe.merge(before, after)
    assert [(r.threads, r.rate) for r in merged] == [(2, 40.0), (1, 25.0)]


def test_machine_report_rates_come_from_the_best_kernels_over_probes():
    first = MachineReport("cpu", 2, (reading("torch.mv", 21.0), reading("ort", 400.0, kind=MATMUL)))
    second = MachineReport("cpu", 2, (reading("torch.sum", 42.0), reading("ort", 380.0, kind=MATMUL)))
    best = best_of(first, second)
    assert (best.rates.bandwidth_gb_s, best.rates.matmul_gflop_s) == (42.0, 400.0)
    assert best.summary() == {"bandwidth_kernel": "torch.sum (2 threads)", "matmul_kernel": "ort (2 threads)"}


def test_labels_say_threads_and_pinning():
    assert reading("numpy sum", 1.0, threads=1, pinned=True).label == "numpy sum (1 thread, pinned)"
    assert reading("numpy matvec", 1.0, threads=probe.LIBRARY_THREADS).label == "numpy matvec (library threads)"


def test_copies_count_the_bytes_they_read_and_write():
    kernels = {(k.name, k.threads): k for k in probe.bandwidth_kernels(1 << 20, cores=2)}
    read_only = kernels[("torch.sum", 2)].work
    assert read_only == 1 << 20
    assert kernels[("torch copy", 1)].work == kernels[("numpy copy", 1)].work == 2 * read_only
    assert {t for _, t in kernels} == {1, 2, probe.LIBRARY_THREADS}


def test_measure_turns_work_and_time_into_a_rate_and_restores_threads():
    threads, cores = torch.get_num_threads(), os.sched_getaffinity(0)
    result = probe.measure(Kernel("noop", BANDWIDTH, 1, True, 1e9, lambda: None), repeats=2)
    assert result.rate > 0 and result.pinned and result.threads == 1
    assert torch.get_num_threads() == threads
    assert os.sched_getaffinity(0) == cores
