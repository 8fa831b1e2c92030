"""`vlm chaos`: how long a served repository takes to heal after kill -9, measured from outside.

Runs `vlm serve` (self-healing, restarts) as a child process, keeps closed-loop load on it (clients asking
`vlm` and `route` greedily, every answer compared with the one the healthy server gave), polls
/v2/health/ready every 20 ms, and SIGKILLs one stub of each python model in turn, then the tritonserver
process itself. For each kill it reports: time until readiness turned false, until it was true again for good
(true for a second: the watchdog's reload shows ready for a few milliseconds between unload and load), until
a request sent after that was answered right, and the requests that failed meanwhile with their error kinds.
Finally it stops `vlm serve` with SIGTERM and checks that no process and no /dev/shm region is left.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minivlm.server.process import server_ready
from minivlm.server.watchdog import python_stubs
from vlm_tools.bench.serve_process import (group_members, random_png, shm_regions, start_serve, stop_serve,
                                           tritonserver_pid, wait_for)
from vlm_client import VLMClient, VLMError

READY_POLL_S = 0.02
STABLE_READY_S = 1.0
QUERIES = ("[CAPTION]", "what is in the picture?")


@dataclass
class Outcome:
    sent: float
    done: float
    kind: str                 # "ok", "wrong" or the error: "<exception type> <status>"
    message: str = ""


@dataclass
class KillResult:
    target: str               # a model's stub instance, or "tritonserver"
    pid: int
    not_ready_s: float | None           # from the kill to the first not-ready poll
    ready_again_s: float | None         # to the start of the first ready stretch of STABLE_READY_S
    correct_again_s: float | None       # to the first right answer of a request sent after that
    readiness_flaps: int                # ready -> not ready transitions after the first not-ready
    requests: int
    failed: dict[str, int] = field(default_factory=dict)   # "<kind>: <message start>" -> count
    wrong: int = 0


class ReadinessLog(threading.Thread):
    """Polls readiness; `transitions` is [(monotonic time, ready)] at every change."""

    def __init__(self, http_url: str):
        super().__init__(name="readiness", daemon=True)
        self.http_url = http_url
        self.transitions: list[tuple[float, bool]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        last = None
        while not self.stopped.is_set():
            ready = server_ready(self.http_url)
            if ready != last:
                self.transitions.append((time.monotonic(), ready))
                last = ready
            time.sleep(READY_POLL_S)

    def is_ready(self) -> bool:
        return bool(self.transitions) and self.transitions[-1][1]


class Load:
    """Closed-loop clients; each alternates `ask` and `route` over a few images and checks every answer."""

    def __init__(self, grpc_url: str, clients: int, max_new_tokens: int):
        self.grpc_url, self.max_new_tokens = grpc_url, max_new_tokens
        self.images = [random_png(seed) for seed in range(3)]
        self.outcomes: list[Outcome] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]
        with VLMClient(grpc_url, timeout_s=60, retries=0) as client:
            self.expected = {key: self._call(client, key) for key in self._keys()}

    def _keys(self) -> list[tuple[str, int, str]]:
        return [(kind, image, query) for kind in ("ask", "route") for image in range(len(self.images))
                for query in QUERIES]

    def _call(self, client: VLMClient, key: tuple[str, int, str]) -> tuple:
        kind, image, query = key
        if kind == "route":
            route = client.route(query)
            return route.task, tuple(round(p, 3) for p in route.probabilities.values())
        answer = client.ask(self.images[image], query, max_new_tokens=self.max_new_tokens, temperature=0)
        return answer.task, answer.text, answer.completion_tokens

    def _client(self, index: int) -> None:
        keys = self._keys()
        with VLMClient(self.grpc_url, timeout_s=30, retries=0) as client:   # no retries: count every failure
            n = index
            while not self.stopped.is_set():
                key = keys[n % len(keys)]
                n += 1
                outcome = self.check(client, key)
                self.outcomes.append(outcome)
                if outcome.kind != "ok":
                    time.sleep(0.05)    # a refused connection fails at once: do not spin on 2 cores

    def check(self, client: VLMClient, key: tuple[str, int, str]) -> Outcome:
        sent = time.monotonic()
        try:
            right = self._call(client, key) == self.expected[key]
            return Outcome(sent, time.monotonic(), "ok" if right else "wrong")
        except VLMError as error:
            kind = f"{type(error).__name__} {error.status}"
            return Outcome(sent, time.monotonic(), kind, " ".join(str(error).split())[:90])

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=60)


def python_models(repository: Path) -> list[str]:
    models = []
    for config in sorted(repository.glob("*/config.pbtxt")):
        if 'backend: "python"' in config.read_text():
            models.append(config.parent.name)
    return models


def measure_kill(target: str, pid: int, readiness: ReadinessLog, load: Load, probe: VLMClient,
                 timeout_s: float) -> KillResult:
    """SIGKILL `pid`, then wait for the server to be ready for good and to answer right."""
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: any(t >= killed and not r for t, r in readiness.transitions), 10.0,
              "readiness false", READY_POLL_S)

    def stable_ready_since() -> float | None:
        after = [(t, r) for t, r in readiness.transitions if t >= killed]
        if after and after[-1][1] and time.monotonic() - after[-1][0] >= STABLE_READY_S:
            return after[-1][0]
        return None
    wait_for(lambda: stable_ready_since() is not None, timeout_s, "stable readiness")
    ready_at = stable_ready_since()
    keys = load._keys()
    correct_at = None
    deadline = time.monotonic() + timeout_s
    while correct_at is None and time.monotonic() < deadline:
        outcomes = [load.check(probe, key) for key in (keys[0], keys[-1])]     # one ask, one route
        if all(o.kind == "ok" for o in outcomes):
            correct_at = outcomes[-1].done
    time.sleep(1.0)       # let requests in flight at recovery finish before they are counted
    end = time.monotonic()
    window = [o for o in load.outcomes if o.done >= killed and o.sent <= end]
    failed = collections.Counter(f"{o.kind}: {o.message}" for o in window if o.kind not in ("ok", "wrong"))
    after_kill = [(t, r) for t, r in readiness.transitions if t >= killed]
    not_ready_at = next(t for t, r in after_kill if not r)
    flaps = sum(1 for (_, a), (_, b) in zip(after_kill, after_kill[1:]) if a and not b)
    return KillResult(target=target, pid=pid, not_ready_s=not_ready_at - killed, ready_again_s=ready_at - killed,
                      correct_again_s=None if correct_at is None else correct_at - killed,
                      readiness_flaps=flaps, requests=len(window), failed=dict(failed),
                      wrong=sum(1 for o in window if o.kind == "wrong"))


@dataclass
class ChaosReport:
    repository: str
    clients: int
    kills: list[KillResult]
    stop_exit_code: int | None
    processes_left: list[int]
    shm_regions_left: list[str]


def run_chaos(repository: Path, *, clients: int = 4, max_new_tokens: int = 16, timeout_s: float = 300.0,
              log_path: Path | None = None, models: list[str] | None = None, kill_server: bool = True) -> ChaosReport:
    repository = repository.resolve()
    shm_before = shm_regions()
    serve = start_serve(repository, log_path or Path(f"vlm-chaos-serve-{os.getpid()}.log"), timeout_s)
    http_url, grpc_url = serve.http_url, serve.grpc_url
    first_triton_pid = tritonserver_pid(serve.process.pid)
    kills: list[KillResult] = []
    try:
        readiness = ReadinessLog(http_url)
        readiness.start()
        load = Load(grpc_url, clients, max_new_tokens)
        load.start()
        with VLMClient(grpc_url, timeout_s=30, retries=0) as probe:
            for model in models or python_models(repository):
                triton_pid = tritonserver_pid(serve.process.pid)
                stub = next(s for s in sorted(python_stubs(triton_pid), key=lambda s: s.instance) if s.model == model)
                print(f"kill -9 {stub.instance} (pid {stub.pid})", flush=True)
                kills.append(measure_kill(stub.instance, stub.pid, readiness, load, probe, timeout_s))
            if kill_server:
                triton_pid = tritonserver_pid(serve.process.pid)
                print(f"kill -9 tritonserver (pid {triton_pid})", flush=True)
                kills.append(measure_kill("tritonserver", triton_pid, readiness, load, probe, timeout_s))
        load.stop()
        readiness.stopped.set()
    finally:
        triton_pids = {first_triton_pid, tritonserver_pid(serve.process.pid)} - {None}
        code = stop_serve(serve.process)
    time.sleep(0.5)
    left = [pid for pgid in triton_pids for pid in group_members(pgid)]   # each server leads its own group
    return ChaosReport(repository=str(repository), clients=clients, kills=kills, stop_exit_code=code,
                       processes_left=left, shm_regions_left=sorted(shm_regions() - shm_before))


def format_report(report: ChaosReport) -> str:
    def seconds(value: float | None) -> str:
        return "   never" if value is None else f"{value:7.2f}s"

    lines = [f"{'killed':<26} {'not ready':>9} {'ready':>9} {'correct':>9} {'flaps':>5} {'requests':>8} {'failed':>6}"]
    for kill in report.kills:
        lines.append(f"{kill.target:<26} {seconds(kill.not_ready_s)} {seconds(kill.ready_again_s)} "
                     f"{seconds(kill.correct_again_s)} {kill.readiness_flaps:>5} {kill.requests:>8} "
                     f"{sum(kill.failed.values()):>6}" + (f"  ({kill.wrong} WRONG answers)" if kill.wrong else ""))
        for error, count in sorted(kill.failed.items(), key=lambda item: -item[1]):
            lines.append(f"    {count:4d} x {error}")
    lines.append(f"stop (SIGTERM to vlm serve): exit code {report.stop_exit_code}, "
                 f"{len(report.processes_left)} processes left, {len(report.shm_regions_left)} /dev/shm regions left")
    return "\n".join(lines)


def report_json(report: ChaosReport) -> str:
    return json.dumps(asdict(report), indent=2)
