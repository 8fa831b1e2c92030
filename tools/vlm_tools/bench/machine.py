"""Measure the rates the roofline needs: weight-reading bandwidth and fp32 GEMM throughput.

Each rate is the best of several kernels (vlm_tools.bench.probe), each the best of several repeats: the bound
is what the hardware can do, and other work on a shared machine only ever makes a repeat slower. Bandwidth
streams a buffer as large as the language model's weights, so a large last-level cache cannot hold it any
more than it holds the real weights.
"""
from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass

from vlm_tools.bench import probe
from vlm_tools.bench.probe import BANDWIDTH, MATMUL, Reading
from vlm_tools.bench.roofline import MachineRates

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MachineReport:
    cpu: str
    cores: int
    readings: tuple[Reading, ...]          # every kernel the probe tried

    @property
    def best_bandwidth(self) -> Reading:
        return probe.best(self.readings, BANDWIDTH)

    @property
    def best_matmul(self) -> Reading:
        return probe.best(self.readings, MATMUL)

    @property
    def rates(self) -> MachineRates:
        return MachineRates(self.best_bandwidth.rate, self.best_matmul.rate)

    def summary(self) -> dict:
        """For a report's JSON: the best kernel of each kind, named."""
        return {"bandwidth_kernel": self.best_bandwidth.label, "matmul_kernel": self.best_matmul.label}


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
    """Every probe kernel, at one thread pinned and one thread per core, whatever the benchmark's own setting:
    the bound is the machine's."""
    report = MachineReport(cpu=cpu_name(), cores=len(os.sched_getaffinity(0)),
                           readings=probe.probe(weight_bytes, repeats=repeats))
    log.info("machine: %s; best %s", report.rates, report.summary())
    return report


def best_of(*reports: MachineReport) -> MachineReport:
    """Each kernel's best over several measurements (say, before and after the run): on a shared machine a
    low reading is other load, never the hardware."""
    return MachineReport(cpu=reports[0].cpu, cores=reports[0].cores,
                         readings=probe.merge(*(r.readings for r in reports)))
