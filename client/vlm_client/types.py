"""Typed results of the `vlm` and `route` ensembles, and their parsing from output tensors.

Parsing takes a plain ``{tensor name: numpy array}`` mapping so it is the same for gRPC and HTTP, sync and
async, and testable without a server.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from . import protocol as proto
from .errors import VLMError

Outputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class DetectedObject:
    label: str
    bbox: tuple[float, float, float, float]   # x, y, w, h normalized to [0, 1]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "bbox": list(self.bbox)}

    def __str__(self) -> str:
        """How every command prints a detection: `label  [x, y, w, h]`, three decimals."""
        return f"{self.label}  [{', '.join(f'{v:.3f}' for v in self.bbox)}]"


@dataclass(frozen=True)
class AnswerPart:
    """One task's answer inside an Answer; a compound query ("describe it and find the objects") has several."""
    task: str
    text: str
    objects: tuple[DetectedObject, ...]
    json_valid: bool
    finish_reason: str
    completion_tokens: int

    def to_dict(self) -> dict[str, Any]:
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {**fields, "objects": [o.to_dict() for o in self.objects]}


@dataclass(frozen=True)
class Answer:
    task: str                 # one of protocol.TASKS, or "caption+od" etc. for a compound query
    routing: str              # protocol.ROUTED_BY_ROUTER / _ROUTER_UNCERTAIN / _TAG / _OVERRIDE
    confidence: float
    text: str
    objects: tuple[DetectedObject, ...]
    json_valid: bool
    finish_reason: str        # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    parts: tuple[AnswerPart, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists, not tuples)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {**fields, "objects": [o.to_dict() for o in self.objects],
                "parts": [p.to_dict() for p in self.parts]}


@dataclass(frozen=True)
class StreamChunk:
    """One event of `VLMClient.ask_stream`: a piece of the answer's text while it is decoded, then (last) the
    whole `answer`, exactly what `ask` returns."""
    text: str = ""
    answer: Answer | None = None


@dataclass(frozen=True)
class Route:
    task: str
    confidence: float
    routing: str
    probabilities: dict[str, float]   # keyed by protocol.TASKS, in that order
    scores: dict[str, float] = field(default_factory=dict)   # independent per-task scores (compound queries)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "confidence": self.confidence, "routing": self.routing,
                "probabilities": dict(self.probabilities), "scores": dict(self.scores)}

    def compound_tasks(self, min_score: float = 0.5) -> tuple[str, ...]:
        """The tasks a compound query asks for (empty when it asks for one), by the server's default rule."""
        tasks = tuple(t for t, s in self.scores.items() if s >= min_score)
        return tasks if len(tasks) > 1 and self.routing == proto.ROUTED_BY_ROUTER else ()


def _str(value: Any) -> str:
    # gRPC and binary HTTP give bytes; JSON-encoded HTTP outputs give str.
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _scalar(outputs: Outputs, tensor: proto.Tensor, row: int = 0) -> Any:
    """Element `row` of a per-request (1,) output, shape (B, 1)."""
    array = outputs.get(tensor.name)
    if array is None:
        raise VLMError(f"response has no output {tensor.name!r}")
    return array.reshape(array.shape[0], -1)[row, 0]


def parse_objects(raw: str) -> tuple[DetectedObject, ...]:
    try:
        items = json.loads(raw)
        return tuple(DetectedObject(str(o["label"]), tuple(float(v) for v in o["bbox"])) for o in items)
    except (ValueError, TypeError, KeyError) as exc:
        raise VLMError(f"malformed {proto.OBJECTS.name!r} output {raw!r}: {exc}") from exc


def parse_answer(outputs: Outputs) -> Answer:
    """Build an Answer from the outputs of one `vlm` request."""
    get = partial(_scalar, outputs)
    return Answer(
        task=_str(get(proto.TASK)),
        routing=_str(get(proto.ROUTING)),
        confidence=float(get(proto.CONFIDENCE)),
        text=_str(get(proto.TEXT)),
        objects=parse_objects(_str(get(proto.OBJECTS))),
        json_valid=bool(get(proto.JSON_VALID)),
        finish_reason=_str(get(proto.FINISH_REASON)),
        prompt_tokens=int(get(proto.PROMPT_TOKENS)),
        completion_tokens=int(get(proto.COMPLETION_TOKENS)),
        parts=parse_parts(_str(get(proto.PARTS))),
    )


def parse_parts(raw: str) -> tuple[AnswerPart, ...]:
    try:
        return tuple(AnswerPart(task=str(p["task"]), text=str(p["text"]),
                                objects=parse_objects(json.dumps(p["objects"])), json_valid=bool(p["json_valid"]),
                                finish_reason=str(p["finish_reason"]), completion_tokens=int(p["completion_tokens"]))
                     for p in json.loads(raw))
    except (ValueError, TypeError, KeyError) as exc:
        raise VLMError(f"malformed {proto.PARTS.name!r} output {raw!r}: {exc}") from exc


def parse_routes(outputs: Outputs) -> list[Route]:
    """One Route per batch row of a `route` response."""
    probs = outputs.get(proto.TASK_PROBS.name)
    if probs is None or probs.ndim != 2 or probs.shape[1] != len(proto.TASKS):
        raise VLMError(f"response output {proto.TASK_PROBS.name!r} is not [B, {len(proto.TASKS)}]")
    return [_route_row(outputs, probs[row], row) for row in range(probs.shape[0])]


def _route_row(outputs: Outputs, probs: np.ndarray, row: int) -> Route:
    probabilities = {task: float(p) for task, p in zip(proto.TASKS, probs)}
    scores_array = outputs.get(proto.TASK_SCORES.name)
    scores = {} if scores_array is None else {t: float(s) for t, s in zip(proto.TASKS, scores_array[row])}
    forced = int(_scalar(outputs, proto.FORCED_TASK, row))
    if forced == proto.NO_TASK:
        best = int(np.argmax(probs))
        return Route(proto.TASKS[best], float(probs[best]), proto.ROUTED_BY_ROUTER, probabilities, scores)
    if not 0 <= forced < len(proto.TASKS):
        raise VLMError(f"response has unknown {proto.FORCED_TASK.name} {forced}")
    forced_by = _str(_scalar(outputs, proto.FORCED_BY, row))
    return Route(proto.TASKS[forced], 1.0, forced_by, probabilities, scores)
