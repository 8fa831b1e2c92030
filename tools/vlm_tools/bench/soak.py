"""`vlm soak`: a served repository under steady load for N minutes: nothing lost, nothing leaking.

Closed-loop clients (16 by default) send greedy `ask` requests; about 10% are bad on purpose (a corrupt or
truncated image, an empty query, an out-of-range option). Every good answer is compared with the one the
healthy server gave first; every bad request must fail with INVALID_ARGUMENT naming the pipeline step. Every
`sample_every_s` the resident memory of tritonserver and of its python stubs, and the size of its python
shared-memory regions in /dev/shm, are read; after the warm-up their growth is reported (target < 5%).

`soak` measures a server that is already running (the integration test's); `run_soak` starts one with
`vlm serve`, soaks it, stops it with SIGTERM and checks that no process and no /dev/shm region is left.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minivlm.server.shm import SHM_PREFIX
from vlm_tools.bench.report import save_plot
from vlm_tools.bench.serve_process import (group_members, random_png, shm_regions, start_serve, stop_serve,
                                           tritonserver_pid)
from vlm_client import InvalidRequest, VLMClient, VLMError

GOOD_QUERIES = ("[CAPTION]", "what is in the picture?", "[OD]")
# name -> (image, query, options): each must come back as InvalidRequest.
BAD_REQUESTS = {
    "corrupt image": (lambda: b"\x89PNG not really a png", "[CAPTION]", {}),
    "truncated image": (lambda: random_png(7)[:300], "[CAPTION]", {}),
    "empty query": (lambda: random_png(0), "   ", {}),
    "negative max_new_tokens": (lambda: random_png(0), "[CAPTION]", {"max_new_tokens": -5}),
    "nan temperature": (lambda: random_png(0), "[CAPTION]", {"temperature": float("nan")}),
    "top_p zero": (lambda: random_png(0), "[CAPTION]", {"top_p": 0.0}),
}
GROWTH_WINDOW = 3          # samples averaged at the start (after warm-up) and at the end


@dataclass
class Sample:
    t_s: float                 # since the load started
    server_rss_mb: float       # tritonserver itself
    stubs_rss_mb: float        # its python-backend stubs together (they map the /dev/shm regions too)
    shm_mb: float              # the server's python-backend regions in /dev/shm, allocated bytes
    processes: int


@dataclass
class SoakReport:
    duration_s: float
    concurrency: int
    bad_fraction: float
    warmup_s: float
    good_sent: int = 0
    good_ok: int = 0
    good_wrong: int = 0                     # answered, but not the first answer
    good_failed: dict[str, int] = field(default_factory=dict)     # "<kind>: <message start>" -> count
    bad_sent: int = 0
    bad_clear: int = 0                      # InvalidRequest naming a step
    bad_unclear: dict[str, int] = field(default_factory=dict)
    good_latency_p50_s: float | None = None
    good_latency_p99_s: float | None = None
    samples: list[Sample] = field(default_factory=list)
    growth_pct: dict[str, float] = field(default_factory=dict)   # server_rss, stubs_rss, shm
    stop_exit_code: int | None = None       # run_soak only: after SIGTERM to `vlm serve`
    processes_left: list[int] = field(default_factory=list)
    shm_regions_left: list[str] = field(default_factory=list)
    orphan_warnings: int = 0                # "orphaned shared-memory regions" lines in vlm serve's log

    @property
    def lost(self) -> int:
        return self.good_wrong + sum(self.good_failed.values())

    def passed(self, max_growth_pct: float = 5.0) -> bool:
        clean = not self.processes_left and not self.shm_regions_left and not self.orphan_warnings
        return (self.good_ok > 0 and self.lost == 0 and not self.bad_unclear and clean
                and all(g < max_growth_pct for g in self.growth_pct.values()))


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _mapped_shm(pids: list[int]) -> set[str]:
    """The python-backend regions these processes map (not those of another server on the machine)."""
    names = set()
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
        except OSError:
            continue
        names.update(Path(line.split()[-1]).name for line in lines if SHM_PREFIX in line)
    return names


def _shm_mb(regions: set[str]) -> float:
    total = 0
    for name in regions:
        try:
            total += os.stat(f"/dev/shm/{name}").st_blocks * 512
        except OSError:
            continue
    return total / 2**20


def take_sample(server_pid: int, t_s: float) -> Sample:
    members = group_members(server_pid)       # the server leads its own process group; its stubs share it
    stubs = [pid for pid in members if pid != server_pid]
    return Sample(t_s=round(t_s, 1), server_rss_mb=round(_rss_mb(server_pid), 1),
                  stubs_rss_mb=round(sum(_rss_mb(pid) for pid in stubs), 1),
                  shm_mb=round(_shm_mb(_mapped_shm(members)), 1), processes=len(members))


def growth_pct(samples: list[Sample], warmup_s: float) -> dict[str, float]:
    """Growth of each measure from the first samples after the warm-up to the last ones, in percent."""
    after = [s for s in samples if s.t_s >= warmup_s]
    if len(after) < 2:
        return {}
    window = max(1, min(GROWTH_WINDOW, len(after) // 2))
    growth = {}
    for name in ("server_rss_mb", "stubs_rss_mb", "shm_mb"):
        start = statistics.fmean(getattr(s, name) for s in after[:window])
        end = statistics.fmean(getattr(s, name) for s in after[-window:])
        growth[name.removesuffix("_mb")] = round(100 * (end - start) / start, 2) if start else 0.0
    return growth


class SoakLoad:
    """Closed-loop clients, each with its own connection; every outcome is counted under one lock."""

    def __init__(self, grpc_url: str, *, concurrency: int, bad_fraction: float, max_new_tokens: int,
                 report: SoakReport, timeout_s: float = 120.0):
        self.grpc_url, self.bad_fraction, self.timeout_s = grpc_url, bad_fraction, timeout_s
        self.max_new_tokens, self.report = max_new_tokens, report
        self.images = [random_png(seed) for seed in range(3)]
        self.bad = {name: (make(), query, options) for name, (make, query, options) in BAD_REQUESTS.items()}
        self.keys = [(image, query) for image in range(len(self.images)) for query in GOOD_QUERIES]
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(concurrency)]
        with VLMClient(grpc_url, timeout_s=timeout_s, retries=0) as client:
            self.expected = {key: self._ask(client, key) for key in self.keys}

    def _ask(self, client: VLMClient, key: tuple[int, str]) -> tuple:
        image, query = key
        answer = client.ask(self.images[image], query, max_new_tokens=self.max_new_tokens, temperature=0)
        return answer.task, answer.text, answer.completion_tokens

    def _client(self, index: int) -> None:
        rng = random.Random(index)
        bad_names = sorted(self.bad)
        with VLMClient(self.grpc_url, timeout_s=self.timeout_s, retries=0) as client:   # count every failure
            while not self.stopped.is_set():
                if rng.random() < self.bad_fraction:
                    self._send_bad(client, rng.choice(bad_names))
                else:
                    self._send_good(client, rng.choice(self.keys))

    def _send_good(self, client: VLMClient, key: tuple[int, str]) -> None:
        sent = time.monotonic()
        try:
            right, failure = self._ask(client, key) == self.expected[key], None
        except VLMError as error:
            right, failure = False, f"{type(error).__name__} {error.status}: {' '.join(str(error).split())[:80]}"
        with self.lock:
            self.report.good_sent += 1
            if failure is not None:
                self.report.good_failed[failure] = self.report.good_failed.get(failure, 0) + 1
            elif right:
                self.report.good_ok += 1
                self.latencies.append(time.monotonic() - sent)
            else:
                self.report.good_wrong += 1
        if failure is not None:
            time.sleep(0.05)        # a refused connection fails at once: do not spin on 2 cores

    def _send_bad(self, client: VLMClient, name: str) -> None:
        image, query, options = self.bad[name]
        try:
            client.ask(image, query, max_new_tokens=options.get("max_new_tokens", self.max_new_tokens),
                       **{k: v for k, v in options.items() if k != "max_new_tokens"})
            unclear = f"{name}: answered"
        except InvalidRequest as error:
            unclear = None if error.step and error.message else f"{name}: no step named: {error}"
        except VLMError as error:
            unclear = f"{name}: {type(error).__name__} {error.status}: {' '.join(str(error).split())[:80]}"
        with self.lock:
            self.report.bad_sent += 1
            if unclear is None:
                self.report.bad_clear += 1
            else:
                self.report.bad_unclear[unclear] = self.report.bad_unclear.get(unclear, 0) + 1

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=self.timeout_s + 10)


def soak(grpc_url: str, server_pid: int, *, duration_s: float, concurrency: int = 16, bad_fraction: float = 0.1,
         max_new_tokens: int = 16, warmup_s: float | None = None, sample_every_s: float = 5.0,
         progress=None) -> SoakReport:
    """Load the running server at `grpc_url` (tritonserver pid `server_pid`) for `duration_s`."""
    warmup_s = max(10.0, 0.2 * duration_s) if warmup_s is None else warmup_s
    report = SoakReport(duration_s=duration_s, concurrency=concurrency, bad_fraction=bad_fraction,
                        warmup_s=warmup_s)
    load = SoakLoad(grpc_url, concurrency=concurrency, bad_fraction=bad_fraction,
                    max_new_tokens=max_new_tokens, report=report)
    started = time.monotonic()
    load.start()
    try:
        while (elapsed := time.monotonic() - started) < duration_s:
            report.samples.append(take_sample(server_pid, elapsed))
            if progress is not None:
                progress(report)
            time.sleep(min(sample_every_s, max(0.0, duration_s - elapsed)))
    finally:
        load.stop()
    report.samples.append(take_sample(server_pid, time.monotonic() - started))
    report.growth_pct = growth_pct(report.samples, warmup_s)
    if load.latencies:
        ordered = sorted(load.latencies)
        report.good_latency_p50_s = round(ordered[len(ordered) // 2], 3)
        report.good_latency_p99_s = round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)
    return report


def run_soak(repository: Path, *, duration_s: float, log_path: Path | None = None, startup_timeout_s: float = 600.0,
             **options) -> SoakReport:
    """Start `vlm serve` on `repository`, soak it, stop it with SIGTERM, and check what it left behind."""
    shm_before = shm_regions()
    log_path = log_path or Path(f"vlm-soak-serve-{os.getpid()}.log")
    serve = start_serve(repository, log_path, startup_timeout_s)
    triton_pid = tritonserver_pid(serve.process.pid)
    try:
        report = soak(serve.grpc_url, triton_pid, duration_s=duration_s, **options)
    finally:
        code = stop_serve(serve.process)
    time.sleep(0.5)
    report.stop_exit_code = code
    report.processes_left = group_members(triton_pid) if triton_pid else []
    report.shm_regions_left = sorted(shm_regions() - shm_before)
    report.orphan_warnings = log_path.read_text(errors="replace").count("orphaned shared-memory")
    return report


def format_report(report: SoakReport) -> str:
    lost = report.lost
    lines = [
        f"soak: {report.duration_s:.0f} s at concurrency {report.concurrency}, {report.bad_fraction:.0%} bad requests",
        f"good requests: {report.good_sent} sent, {report.good_ok} answered right, {lost} lost "
        f"({report.good_wrong} wrong, {sum(report.good_failed.values())} failed); "
        f"latency p50 {report.good_latency_p50_s} s, p99 {report.good_latency_p99_s} s",
    ]
    lines += [f"    {count:4d} x {failure}" for failure, count in sorted(report.good_failed.items())]
    lines.append(f"bad requests: {report.bad_sent} sent, {report.bad_clear} got INVALID_ARGUMENT naming the step, "
                 f"{sum(report.bad_unclear.values())} did not")
    lines += [f"    {count:4d} x {what}" for what, count in sorted(report.bad_unclear.items())]
    if report.samples:
        first, last = report.samples[0], report.samples[-1]
        lines.append(f"memory (first -> last sample): tritonserver RSS {first.server_rss_mb:.0f} -> "
                     f"{last.server_rss_mb:.0f} MB, stubs RSS {first.stubs_rss_mb:.0f} -> {last.stubs_rss_mb:.0f} MB, "
                     f"/dev/shm {first.shm_mb:.0f} -> {last.shm_mb:.0f} MB, {last.processes} processes")
    growth = ", ".join(f"{name} {value:+.2f}%" for name, value in report.growth_pct.items())
    lines.append(f"growth after the {report.warmup_s:.0f} s warm-up: {growth or 'too few samples'} (target < 5%)")
    if report.stop_exit_code is not None:
        lines.append(f"stop (SIGTERM to vlm serve): exit code {report.stop_exit_code}, "
                     f"{len(report.processes_left)} processes left, {len(report.shm_regions_left)} /dev/shm regions "
                     f"left, {report.orphan_warnings} orphaned-region warnings")
    lines.append("PASS" if report.passed() else "FAIL")
    return "\n".join(lines)


def report_json(report: SoakReport) -> str:
    return json.dumps({**asdict(report), "lost": report.lost, "passed": report.passed()}, indent=2)


def plot(report: SoakReport, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s / 60 for s in report.samples]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, label in (("server_rss_mb", "tritonserver RSS"), ("stubs_rss_mb", "stubs RSS"), ("shm_mb", "/dev/shm")):
        ax.plot(t, [getattr(s, name) for s in report.samples], label=label)
    ax.axvline(report.warmup_s / 60, color="grey", linestyle=":", label="end of warm-up")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MB")
    ax.set_title(f"vlm soak: concurrency {report.concurrency}, {report.bad_fraction:.0%} bad requests")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_plot(fig, path, dpi=100)
    plt.close(fig)

