"""Where one request's time went inside generator_engine, returned in its `timings` output.

The BLS request the `generator` step forwards to generator_engine is not traced by Triton (2.51 traces the
ensemble's own steps only), so the engine reports these itself. The three spans are consecutive and do not
overlap, so they add up to the request's whole time in the engine:

    queue    submitted -> its rows were handed to prefill (waiting for a free decoding slot)
    prefill  -> its first token (the prompt's forward pass; on the prefill thread, then joining the batch)
    decode   -> its last row finished (the remaining tokens, interleaved with the other live rows)

A compound query's parts decode side by side: prefill ends at the first part's first token, decode at the last
part's end. A static batch has no per-step first token, so its prefill span includes the decoding.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

ENGINE_STEPS = ("queue", "prefill", "decode")


@dataclass(frozen=True)
class EngineTimings:
    queue_s: float
    prefill_s: float
    decode_s: float

    @classmethod
    def from_marks(cls, *, submitted: float, admitted: float, first_token: float, finished: float
                   ) -> EngineTimings:
        """Spans between monotonic-clock marks; each mark is clamped to the one before, so no span is negative
        (the marks come from two threads; a row's first token can be seen in the step that finishes it)."""
        admitted = max(admitted, submitted)
        first_token = max(first_token, admitted)
        finished = max(finished, first_token)
        return cls(admitted - submitted, first_token - admitted, finished - first_token)

    def to_dict(self) -> dict[str, float]:
        return {"queue_s": self.queue_s, "prefill_s": self.prefill_s, "decode_s": self.decode_s}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
