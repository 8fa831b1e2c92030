"""Where one request's time went, step by step: `VLMClient.ask_traced` and `vlm ask --trace`.

Two sources, both readable by a client on another machine (Triton's trace file is not: it lands on the
server's disk, docs/operations.md "Tracing a request"):

- the ensemble's steps (preprocess, router, vision_encoder): the change in each model's inference statistics
  across the request, queue + compute time. The statistics API is restricted, so this needs the admin key.
  They are server-wide counters, so the numbers are this request's only when no other request ran a step
  meanwhile: each model's success count must have moved by exactly one, else `StepTimesUnavailable`.
- queue, prefill and decode inside generator_engine: its `timings` output, measured by the engine itself
  (Triton does not trace the generator's BLS call to it).

`total` is the wall time the client measured; what the steps leave of it is the network, the ensemble's
hand-offs and the generator step forwarding the request.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import protocol as proto
from .errors import VLMError

# Triton's restricted-API header (minivlm.server.process sets the server's; a unit test keeps them equal).
ADMIN_HEADER = "admin-key"
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"

# The ensemble's steps in request order; router and vision_encoder run side by side.
MODEL_STEPS = (("preprocess", proto.PREPROCESS), ("router", proto.ROUTER), ("vision encoder", proto.VISION_ENCODER))
ENGINE_STEPS = (("queue", "queue_s"), ("prefill", "prefill_s"), ("decode", "decode_s"))
STEPS = tuple(name for name, _ in MODEL_STEPS + ENGINE_STEPS)
SIDE_BY_SIDE = ("router", "vision encoder")
_STAT_FIELDS = ("queue", "compute_input", "compute_infer", "compute_output")


class StepTimesUnavailable(VLMError):
    """The statistics moved by more than one request (another client was served meanwhile): retry when idle."""


@dataclass(frozen=True)
class StepTimes:
    steps: dict[str, float]       # STEPS -> seconds
    total_s: float                # the client's wall time of the request

    @property
    def critical_path_s(self) -> float:
        """The steps' time on the request's path: router and vision encoder run side by side, so only the
        longer of the two counts (their sum can exceed the wall time)."""
        side_by_side = max(self.steps[name] for name in SIDE_BY_SIDE)
        return sum(s for name, s in self.steps.items() if name not in SIDE_BY_SIDE) + side_by_side

    @property
    def other_s(self) -> float:
        """Time no step accounts for: network, ensemble hand-offs, the generator forwarding to the engine."""
        return self.total_s - self.critical_path_s

    def to_dict(self) -> dict[str, Any]:
        return {"steps_s": dict(self.steps), "total_s": self.total_s}

    def table(self) -> str:
        rows = [(name, seconds) for name, seconds in self.steps.items()] + [("other", self.other_s),
                                                                            ("total", self.total_s)]
        return "\n".join(f"{name:<16}{seconds * 1000:10.1f} ms" for name, seconds in rows)


def admin_headers(protocol: str, admin_key: str) -> dict[str, str]:
    return {GRPC_ADMIN_HEADER if protocol == "grpc" else ADMIN_HEADER: admin_key}


def model_totals(statistics: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """{model: (successful requests, queue + compute nanoseconds)} from Triton's statistics JSON (gRPC's
    JSON writes int64 as strings and leaves zero counters out; HTTP's has ints), summed over versions."""
    totals: dict[str, tuple[int, int]] = {}
    for model in statistics.get("model_stats", ()):
        stats = model.get("inference_stats", {})
        count = int(stats.get("success", {}).get("count", 0))
        ns = sum(int(stats.get(f, {}).get("ns", 0)) for f in _STAT_FIELDS)
        before = totals.get(model["name"], (0, 0))
        totals[model["name"]] = (before[0] + count, before[1] + ns)
    return totals


def settled(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """True once every ensemble step's statistics count the request: Triton records a step's statistics when
    it releases the step's request, which can come a moment after the ensemble's answer."""
    start, end = model_totals(before), model_totals(after)
    return all(end.get(m, (0, 0))[0] > start.get(m, (0, 0))[0] for _, m in MODEL_STEPS)


def model_step_times(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, float]:
    """Seconds each ensemble step spent on the one request made between two statistics snapshots."""
    start, end = model_totals(before), model_totals(after)
    steps = {}
    for step, model in MODEL_STEPS:
        count = end.get(model, (0, 0))[0] - start.get(model, (0, 0))[0]
        if count != 1:
            raise StepTimesUnavailable(f"{model} served {count} requests while one was traced; the server's "
                                       f"statistics are shared, so trace on an otherwise idle server")
        steps[step] = (end[model][1] - start[model][1]) / 1e9
    return steps


def engine_step_times(raw: str) -> dict[str, float]:
    """queue / prefill / decode seconds from generator_engine's `timings` output."""
    try:
        timings = json.loads(raw)
        return {step: float(timings[key]) for step, key in ENGINE_STEPS}
    except (ValueError, KeyError, TypeError) as exc:
        raise VLMError(f"malformed {proto.TIMINGS.name!r} output {raw!r}: {exc}") from exc
