"""Where the served time goes: Triton's per-model statistics and the CPU each model's process used.

Triton's `/v2/models/stats` (restricted: needs the admin header) gives, per model, cumulative request
counts and nanoseconds in the queue and in compute, and one entry per batch size actually executed.
Differencing two snapshots isolates one load level. The python backend runs each model instance in its own
stub process, so the CPU time of those processes shows which model the cores were busy with.
"""
from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class ModelLoad:
    """One model over one load level (a difference of two snapshots)."""
    requests: int
    executions: int
    mean_batch: float                       # rows per execution
    batch_sizes: dict[int, int]             # batch size -> executions
    ms_per_request: dict[str, float]        # stage -> mean ms a request spent there
    ms_per_execution: float                 # compute_infer of one execution, whatever its batch
    cpu_s: float | None = None              # CPU seconds of the model's stub process(es)
    extra: dict = field(default_factory=dict)


def fetch_stats(http_url: str, headers: dict[str, str], *, timeout_s: float = 10.0) -> dict[str, dict]:
    request = urllib.request.Request(f"http://{http_url}/v2/models/stats", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        body = json.load(response)
    return {m["name"]: m for m in body.get("model_stats", [])}


def _stage(model: dict, stage: str) -> tuple[int, int]:
    """(count, ns) of one inference_stats entry; zeros when the model has none yet."""
    stat = model.get("inference_stats", {}).get(stage, {})
    return int(stat.get("count", 0)), int(stat.get("ns", 0))


def _batch_table(model: dict) -> dict[int, tuple[int, int]]:
    """batch size -> (executions, compute_infer ns)."""
    return {int(b["batch_size"]): (int(b.get("compute_infer", {}).get("count", 0)),
                                   int(b.get("compute_infer", {}).get("ns", 0)))
            for b in model.get("batch_stats", [])}


def model_load(before: dict, after: dict, cpu_s: float | None = None) -> ModelLoad:
    requests = _stage(after, "success")[0] - _stage(before, "success")[0]
    stages = {}
    for stage in STAGES:
        (count_a, ns_a), (count_b, ns_b) = _stage(after, stage), _stage(before, stage)
        stages[stage] = (ns_a - ns_b) / 1e6 / max(count_a - count_b, 1)
    old = _batch_table(before)
    batches, infer_ns = {}, 0
    for size, (count, ns) in _batch_table(after).items():
        count -= old.get(size, (0, 0))[0]
        if count > 0:
            batches[size] = count
            infer_ns += ns - old.get(size, (0, 0))[1]
    executions = sum(batches.values())
    rows = sum(size * count for size, count in batches.items())
    return ModelLoad(requests=requests, executions=executions, mean_batch=rows / executions if executions else 0.0,
                     batch_sizes=dict(sorted(batches.items())), ms_per_request=stages,
                     ms_per_execution=infer_ns / 1e6 / executions if executions else 0.0, cpu_s=cpu_s)


def loads(before: dict[str, dict], after: dict[str, dict],
          cpu_before: dict[str, float] | None = None, cpu_after: dict[str, float] | None = None
          ) -> dict[str, ModelLoad]:
    cpu_before, cpu_after = cpu_before or {}, cpu_after or {}
    cpu = {name: seconds - cpu_before.get(name, 0.0) for name, seconds in cpu_after.items()}
    result = {name: model_load(before.get(name, {}), stats, cpu.get(name)) for name, stats in sorted(after.items())}
    for name in sorted(set(cpu) - set(result)):        # the server process itself: CPU only
        result[name] = ModelLoad(0, 0, 0.0, {}, {}, 0.0, cpu[name])
    return result


# --- CPU time per model process -------------------------------------------------------------------------
def _proc_cpu_s(pid: str) -> tuple[int, float] | None:
    """(process group, user + system CPU seconds) from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()     # after "(comm)", which may contain spaces
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / ticks


def _model_of(pid: str, repository: str) -> str | None:
    """A python stub's command line names its model folder; the server itself is "tritonserver"."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for arg in argv:
        text = arg.decode(errors="replace")
        if text.startswith(repository):
            return Path(text[len(repository):].lstrip("/")).parts[0] if text != repository else None
    return "tritonserver" if argv and argv[0].endswith(b"tritonserver") else None


def cpu_by_model(server_pid: int, repository: str | Path) -> dict[str, float]:
    """CPU seconds so far of the server and each model's stub(s): all share the server's process group."""
    repository = str(Path(repository).resolve())
    totals: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        usage = _proc_cpu_s(pid)
        if usage is None or usage[0] != server_pid:
            continue
        name = _model_of(pid, repository)
        if name:
            totals[name] = totals.get(name, 0.0) + usage[1]
    return totals
