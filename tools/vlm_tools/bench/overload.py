"""`vlm overload`: what a served repository does with more requests than it can answer, measured from outside.

Starts tritonserver on REPO and measures three phases of greedy caption requests (same images, same length):

1. sustainable: closed-loop clients at CONCURRENCY (the engine's live rows): the rate it answers, X req/s;
2. 1x: open-loop arrivals at X req/s (evenly spaced, each request on its own thread);
3. 4x: open-loop arrivals at 4X req/s.

For each open-loop phase: accepted requests and their latency (p50, p99, max), refused ones (Overloaded:
UNAVAILABLE / HTTP 503) and how fast the refusal came, any other error by kind (a good request failing with
a wrong error), requests still unanswered at the end (hangs), how late the load generator sent (its own lag),
and the server's memory (tritonserver and its stubs' RSS, its /dev/shm regions) at the start and end of the
phase and at its peak.
"""
from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minivlm.server.discovery import free_ports
from minivlm.server.process import ServerOptions, TritonServer
from vlm_client import DeadlineExceeded, Overloaded, VLMClient, VLMError
from vlm_tools.bench.serve_process import random_png
from vlm_tools.bench.soak import Sample, take_sample

QUERY = "[CAPTION]"


@dataclass
class Phase:
    name: str
    offered_rate: float | None          # requests per second sent (None: closed loop)
    duration_s: float
    sent: int = 0
    accepted: int = 0
    refused: int = 0                    # Overloaded (UNAVAILABLE / 503)
    refused_by: dict[str, int] = field(default_factory=dict)       # "<step>: <message start>" -> count
    expired: int = 0                    # DeadlineExceeded: the client's timeout_s passed
    other_errors: dict[str, int] = field(default_factory=dict)     # "<kind>: <message start>" -> count
    unanswered: int = 0                 # no outcome when the phase ended (+ the client's timeout)
    answered_rate: float = 0.0          # accepted per second of the phase
    accepted_p50_s: float | None = None
    accepted_p99_s: float | None = None
    accepted_max_s: float | None = None
    refused_p50_s: float | None = None
    refused_p99_s: float | None = None
    send_lag_max_s: float = 0.0         # how late the load generator sent behind schedule
    memory: list[Sample] = field(default_factory=list)


@dataclass
class OverloadReport:
    repository: str
    concurrency: int
    max_new_tokens: int
    phases: list[Phase]

    def phase(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)


class _Requests:
    """Sends requests, one client per thread, and records each outcome with its latency."""

    def __init__(self, grpc_url: str, max_new_tokens: int, timeout_s: float):
        self.grpc_url, self.max_new_tokens, self.timeout_s = grpc_url, max_new_tokens, timeout_s
        self.images = [random_png(seed) for seed in range(4)]
        self.local = threading.local()
        self.lock = threading.Lock()
        self.outcomes: list[tuple[str, float]] = []
        self.refusals: list[str] = []

    def send(self, index: int) -> None:
        client = getattr(self.local, "client", None)
        if client is None:
            client = self.local.client = VLMClient(self.grpc_url, timeout_s=self.timeout_s, retries=0)
        start = time.monotonic()
        try:
            client.ask(self.images[index % len(self.images)], QUERY, temperature=0.0,
                       max_new_tokens=self.max_new_tokens)
            kind = "ok"
        except Overloaded as error:
            kind = "refused"
            with self.lock:
                self.refusals.append(f"{error.step}: {' '.join(error.message.split()[:4])}")
        except DeadlineExceeded:
            kind = "expired"
        except VLMError as error:
            kind = f"{type(error).__name__} {error.status}: {str(error)[:100]}"
        with self.lock:
            self.outcomes.append((kind, time.monotonic() - start))


def _summarize(phase: Phase, outcomes: list[tuple[str, float]], refusals: list[str]) -> Phase:
    accepted = [s for kind, s in outcomes if kind == "ok"]
    refused = [s for kind, s in outcomes if kind == "refused"]
    phase.accepted, phase.refused = len(accepted), len(refused)
    phase.expired = sum(kind == "expired" for kind, _ in outcomes)
    for kind, _ in outcomes:
        if kind not in ("ok", "refused", "expired"):
            phase.other_errors[kind] = phase.other_errors.get(kind, 0) + 1
    phase.unanswered = phase.sent - len(outcomes)
    phase.answered_rate = round(len(accepted) / phase.duration_s, 2)
    phase.accepted_p50_s, phase.accepted_p99_s = _quantile(accepted, 0.5), _quantile(accepted, 0.99)
    phase.accepted_max_s = round(max(accepted), 4) if accepted else None
    phase.refused_p50_s, phase.refused_p99_s = _quantile(refused, 0.5), _quantile(refused, 0.99)
    for why in refusals:
        phase.refused_by[why] = phase.refused_by.get(why, 0) + 1
    return phase


def closed_loop(requests: _Requests, *, concurrency: int, duration_s: float) -> Phase:
    phase, stop = Phase("sustainable", None, duration_s), threading.Event()
    counter = iter(range(10**9))

    def client() -> None:
        while not stop.is_set():
            requests.send(next(counter))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    requests.outcomes, requests.refusals = [], []
    for thread in threads:
        thread.start()
    time.sleep(duration_s)
    stop.set()
    for thread in threads:
        thread.join(requests.timeout_s + 5)
    phase.sent = len(requests.outcomes)
    return _summarize(phase, requests.outcomes, requests.refusals)


def open_loop(requests: _Requests, name: str, *, rate: float, duration_s: float, server_pid: int,
              workers: int = 256) -> Phase:
    """Evenly spaced arrivals at `rate`; each request runs on a pool thread (`workers` at most in flight)."""
    phase = Phase(name, round(rate, 2), duration_s)
    requests.outcomes, requests.refusals = [], []
    began = time.monotonic()
    phase.memory.append(take_sample(server_pid, 0.0))
    next_sample = began + 1.0
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = []
        while (due := began + len(futures) / rate) < began + duration_s:
            now = time.monotonic()
            if now < due:
                time.sleep(min(due - now, 0.05))
                continue
            phase.send_lag_max_s = max(phase.send_lag_max_s, round(now - due, 4))
            futures.append(pool.submit(requests.send, len(futures)))
            if now >= next_sample:
                phase.memory.append(take_sample(server_pid, now - began))
                next_sample += 1.0
        phase.sent = len(futures)
        concurrent.futures.wait(futures, timeout=requests.timeout_s + 5)
        phase.memory.append(take_sample(server_pid, time.monotonic() - began))
        return _summarize(phase, list(requests.outcomes), list(requests.refusals))


def run_overload(repository: Path, *, concurrency: int = 16, max_new_tokens: int = 24, duration_s: float = 30.0,
                 factor: float = 4.0, timeout_s: float = 30.0, log_dir: Path | None = None) -> OverloadReport:
    grpc_port, http_port, metrics_port = free_ports(3)
    log_file = (log_dir or Path(".")) / "vlm-overload-server.log"
    server = TritonServer(ServerOptions(model_repository=Path(repository).resolve(), grpc_port=grpc_port,
                                        http_port=http_port, metrics_port=metrics_port, log_file=log_file))
    server.start()
    try:
        server.wait_ready()
        requests = _Requests(server.grpc_url, max_new_tokens, timeout_s)
        for index in range(concurrency):                    # warm-up: every client thread's first call
            requests.send(index)
        sustainable = closed_loop(requests, concurrency=concurrency, duration_s=duration_s)
        rate = sustainable.answered_rate
        phases = [sustainable]
        for name, multiple in (("1x", 1.0), (f"{factor:g}x", factor)):
            print(f"{name}: {rate * multiple:.1f} requests/s for {duration_s:g} s", flush=True)
            phases.append(open_loop(requests, name, rate=rate * multiple, duration_s=duration_s,
                                    server_pid=server.process.pid))
    finally:
        server.stop()
    return OverloadReport(str(repository), concurrency, max_new_tokens, phases)


def format_report(report: OverloadReport) -> str:
    def s(value):
        return "     -" if value is None else f"{value:6.2f}"

    lines = [f"{'phase':<12} {'offered/s':>9} {'sent':>5} {'ok':>5} {'ok/s':>6} {'p50':>6} {'p99':>6} {'max':>6} "
             f"{'refused':>7} {'ref p99':>7} {'expired':>7} {'other':>5} {'hung':>4} {'rss MB start/end/peak':>22}"]
    for p in report.phases:
        rss = [m.server_rss_mb + m.stubs_rss_mb for m in p.memory]
        memory = f"{rss[0]:.0f}/{rss[-1]:.0f}/{max(rss):.0f}" if rss else "-"
        offered = "closed" if p.offered_rate is None else f"{p.offered_rate:.1f}"
        lines.append(f"{p.name:<12} {offered:>9} {p.sent:>5} {p.accepted:>5} {p.answered_rate:>6.2f} "
                     f"{s(p.accepted_p50_s)} {s(p.accepted_p99_s)} {s(p.accepted_max_s)} {p.refused:>7} "
                     f"{s(p.refused_p99_s):>7} {p.expired:>7} {sum(p.other_errors.values()):>5} "
                     f"{p.unanswered:>4} {memory:>22}")
        for kind, count in p.other_errors.items():
            lines.append(f"    {count:4d} x {kind}")
        for why, count in p.refused_by.items():
            lines.append(f"    {count:4d} refused by {why}")
    lines.append("(latencies in seconds; clients: closed loop at concurrency "
                 f"{report.concurrency}, then open loop; {report.max_new_tokens}-token greedy captions)")
    return "\n".join(lines)


def report_json(report: OverloadReport) -> str:
    return json.dumps(asdict(report), indent=2)


def passed(report: OverloadReport, *, max_p99_growth: float = 3.0, max_refusal_s: float = 1.0) -> bool:
    """4x: accepted p99 within `max_p99_growth` times the 1x p99, refusals within `max_refusal_s` (p99), no
    other errors and nothing unanswered in any phase."""
    one, over = report.phases[1], report.phases[2]
    clean = all(not p.other_errors and not p.unanswered and not p.expired for p in report.phases)
    bounded = over.accepted_p99_s is not None and one.accepted_p99_s is not None and \
        over.accepted_p99_s <= max_p99_growth * one.accepted_p99_s
    fast = over.refused_p99_s is None or over.refused_p99_s <= max_refusal_s
    return clean and bounded and fast
