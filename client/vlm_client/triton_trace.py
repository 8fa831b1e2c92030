"""Read the JSON that Triton's trace API writes ("triton" mode): each traced request's steps and their times.

The file is the server's (`vlm serve --trace-file`), so this is for someone on the server's machine;
`vlm ask --trace` gives the same steps from anywhere (docs/operations.md "Tracing a request").

Triton writes one list of entries per file: for each trace id, an entry naming its model (and its
`parent_id`, the ensemble request it is a step of) and then one entry per timestamp. Triton 2.51 traces the
ensemble and its steps; the generator's own call to generator_engine (BLS) is not traced, so the generator
step's time holds the engine's queue, prefill and decode together.

    python -m vlm_client.triton_trace /tmp/vlm-trace.json.0
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TracedStep:
    id: int
    model: str = ""
    parent_id: int | None = None
    ns: dict[str, int] = field(default_factory=dict)     # timestamp name -> nanoseconds (a monotonic clock)
    steps: list[TracedStep] = field(default_factory=list)

    def span_s(self, start: str, end: str) -> float | None:
        """Seconds from one timestamp to another; None when either is missing (an ensemble has no COMPUTE_*)."""
        if start not in self.ns or end not in self.ns:
            return None
        return (self.ns[end] - self.ns[start]) / 1e9

    @property
    def total_s(self) -> float | None:
        return self.span_s("REQUEST_START", "REQUEST_END")

    @property
    def queue_s(self) -> float | None:
        return self.span_s("QUEUE_START", "COMPUTE_START")

    @property
    def compute_s(self) -> float | None:
        return self.span_s("COMPUTE_START", "COMPUTE_END")


def parse_trace(entries: list[dict]) -> list[TracedStep]:
    """The traced top-level requests, oldest first, each with its steps in the order they started."""
    traces: dict[int, TracedStep] = {}
    for entry in entries:
        step = traces.setdefault(int(entry["id"]), TracedStep(int(entry["id"])))
        if "model_name" in entry:
            step.model = entry["model_name"]
            step.parent_id = int(entry["parent_id"]) if "parent_id" in entry else None
        for stamp in entry.get("timestamps", ()):
            step.ns[stamp["name"]] = int(stamp["ns"])
    for step in traces.values():
        if step.parent_id in traces:
            traces[step.parent_id].steps.append(step)
    for step in traces.values():
        step.steps.sort(key=lambda s: s.ns.get("REQUEST_START", 0))
    roots = [step for step in traces.values() if step.parent_id not in traces]
    return sorted(roots, key=lambda s: s.ns.get("REQUEST_START", 0))


def format_trace(root: TracedStep) -> str:
    def ms(seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds * 1000:.1f}"

    lines = [f"trace {root.id}: {root.model} {ms(root.total_s)} ms",
             f"  {'step':<16}{'total ms':>10}{'queue ms':>10}{'compute ms':>12}"]
    lines += [f"  {s.model:<16}{ms(s.total_s):>10}{ms(s.queue_s):>10}{ms(s.compute_s):>12}" for s in root.steps]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    paths = (argv if argv is not None else sys.argv[1:])
    if not paths:
        print("usage: python -m vlm_client.triton_trace TRACE_FILE...", file=sys.stderr)
        return 2
    for path in paths:
        for root in parse_trace(json.loads(Path(path).read_text())):
            print(format_trace(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
