"""The generator's Prometheus metrics, on the server's metrics port beside Triton's own (python backend
custom metrics API). Names follow Prometheus: base units, `_seconds`, `_total` for counters.

| metric | kind | labels | what |
|---|---|---|---|
| `vlm_time_to_first_token_seconds` | histogram | task | from the engine receiving the request to the part's first token (static batches: to its last) |
| `vlm_time_per_output_token_seconds` | histogram | task | the part's decoding time after its first token, per further token |
| `vlm_generated_tokens_total` | counter | task | tokens generated, EOS included, per answer part's task |
| `vlm_requests_total` | counter | routing, task | requests answered, by how the task was chosen and the task(s) (`caption+od`) |
| `vlm_router_confidence` | histogram | | the calibrated probability of requests the router chose the task of |
| `vlm_detection_answers_total` | counter | outcome | OD parts: `parsed` (valid JSON), `salvaged` (objects recovered), `failed` |
| `vlm_live_decode_rows` | gauge | | rows decoding or being prefilled now |
| `vlm_waiting_requests` | gauge | | requests waiting for a decoding slot |
| `vlm_refused_requests_total` | counter | reason | `invalid_request`, `queue_full`, `shutting_down`, `deadline_exceeded`, `cancelled` (the last two after admission too) |
| `vlm_decoded_rows_total` | counter | | rows decoded, summed over decode steps (what requests cost in steps; reported every 64, and when idle) |
| `vlm_pipeline_requests` | gauge | | requests the admission door (preprocess) let in and not answered yet (updated every 0.25 s at most) |
| `vlm_door_refusals_total` | counter | | requests the admission door refused because the pipeline was full |

Every label value is known in advance, so every series exists from the start (a dashboard sees zeros, not
gaps) and the decoding thread only increments. `pb_utils` is passed in, as everywhere in serving; tests pass
a recorder with the same API.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from vlm_client.protocol import ROUTED_BY_OVERRIDE, ROUTED_BY_ROUTER, ROUTED_BY_ROUTER_UNCERTAIN, ROUTED_BY_TAG, TASKS

ROUTINGS = (ROUTED_BY_TAG, ROUTED_BY_OVERRIDE, ROUTED_BY_ROUTER, ROUTED_BY_ROUTER_UNCERTAIN)
TASK_SETS = tuple("+".join(combo) for n in range(1, len(TASKS) + 1) for combo in itertools.combinations(TASKS, n))
DETECTION_OUTCOMES = ("parsed", "salvaged", "failed")
REFUSALS = ("invalid_request", "queue_full", "shutting_down", "deadline_exceeded", "cancelled")
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class PartTiming:
    task: str
    first_token_s: float          # from submission to the part's first token
    decode_s: float               # from its first token to its last
    tokens: int                   # generated, EOS included


class GeneratorMetrics:
    def __init__(self, pb_utils):
        family = pb_utils.MetricFamily

        def make(name, description, kind, labels, values, buckets=None):
            created = family(name=name, description=description, kind=kind)
            self._families.append(created)
            extra = {} if buckets is None else {"buckets": list(buckets)}
            return {value: created.Metric(labels=dict(zip(labels, value)), **extra) for value in values}

        self._families = []           # kept referenced: a family lives as long as its Python object
        self._load: tuple[int, int] | None = None     # the gauges' last values
        self.ttft = make("vlm_time_to_first_token_seconds", "Time to an answer part's first token",
                         family.HISTOGRAM, ("task",), [(t,) for t in TASKS], TTFT_BUCKETS)
        self.tpot = make("vlm_time_per_output_token_seconds", "Decoding time per token after the first",
                         family.HISTOGRAM, ("task",), [(t,) for t in TASKS], TPOT_BUCKETS)
        self.tokens = make("vlm_generated_tokens_total", "Generated tokens, EOS included", family.COUNTER,
                           ("task",), [(t,) for t in TASKS])
        self.requests = make("vlm_requests_total", "Answered requests by routing source and task(s)",
                             family.COUNTER, ("routing", "task"), itertools.product(ROUTINGS, TASK_SETS))
        self.confidence = make("vlm_router_confidence", "Router confidence of the requests it routed",
                               family.HISTOGRAM, (), [()], CONFIDENCE_BUCKETS)[()]
        self.detections = make("vlm_detection_answers_total", "Detection answer parts by parse outcome",
                               family.COUNTER, ("outcome",), [(o,) for o in DETECTION_OUTCOMES])
        self.live_rows = make("vlm_live_decode_rows", "Rows decoding or being prefilled", family.GAUGE, (), [()])[()]
        self.waiting = make("vlm_waiting_requests", "Requests waiting for a decoding slot", family.GAUGE, (),
                            [()])[()]
        self.refused = make("vlm_refused_requests_total", "Refused requests by reason", family.COUNTER,
                            ("reason",), [(r,) for r in REFUSALS])
        self.decoded = make("vlm_decoded_rows_total", "Rows decoded, summed over decode steps", family.COUNTER,
                            (), [()])[()]

    def answered(self, routing: str, task: str, confidence: float, parts: list[PartTiming],
                 detection_outcome: str | None) -> None:
        self.requests[routing, task].increment(1)
        if routing in (ROUTED_BY_ROUTER, ROUTED_BY_ROUTER_UNCERTAIN):
            self.confidence.observe(confidence)
        for part in parts:
            self.ttft[(part.task,)].observe(part.first_token_s)
            self.tokens[(part.task,)].increment(part.tokens)
            if part.tokens > 1:
                self.tpot[(part.task,)].observe(part.decode_s / (part.tokens - 1))
        if detection_outcome is not None:
            self.detections[(detection_outcome,)].increment(1)

    def refused_request(self, reason: str) -> None:
        self.refused[(reason,)].increment(1)

    def decoded_rows(self, rows: int) -> None:
        self.decoded.increment(rows)

    def load(self, *, live_rows: int, waiting: int) -> None:
        """Called after every decode step; each set is a message to the server process, so only changes go."""
        if (live_rows, waiting) != self._load:
            self._load = (live_rows, waiting)
            self.live_rows.set(live_rows)
            self.waiting.set(waiting)


class DoorMetrics:
    """The admission door's, from the preprocess stub (minivlm/serving/admission.py)."""

    def __init__(self, pb_utils):
        family = pb_utils.MetricFamily
        self._families = [
            family(name="vlm_pipeline_requests", description="Requests in the pipeline, let in by the admission door",
                   kind=family.GAUGE),
            family(name="vlm_door_refusals_total", description="Requests refused by the admission door",
                   kind=family.COUNTER)]
        self.in_flight = self._families[0].Metric(labels={})
        self.refusals = self._families[1].Metric(labels={})


def refusal_reason(error: BaseException) -> str | None:
    """The `vlm_refused_requests_total` reason of an error a request got, or None for our own faults."""
    from minivlm.errors import DeadlineExceededError, InputError, RequestCancelledError, ServerBusyError

    if isinstance(error, InputError):
        return "invalid_request"
    if isinstance(error, DeadlineExceededError):
        return "deadline_exceeded"
    if isinstance(error, RequestCancelledError):
        return "cancelled"
    if isinstance(error, ServerBusyError):
        return "shutting_down" if "shutting down" in str(error) else "queue_full"
    return None


def detection_outcome(detection) -> str:
    """parsed, salvaged or failed, for a `DetectionResult`."""
    if detection.json_valid:
        return "parsed"
    return "salvaged" if detection.objects else "failed"
