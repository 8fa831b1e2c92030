"""`--input-data` JSON files for perf_analyzer: real encoded images and a configurable mix of queries.

perf_analyzer takes a BYTES element given as {"b64": ...} as the raw serialized tensor, so each element
carries Triton's 4-byte little-endian length prefix before its payload. Numeric tensors given as {"b64": ...}
are raw little-endian values, with a "shape" where the model's dims are variable.
"""
from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Callable

import numpy as np

from vlm_client import protocol as P
from vlm_client.protocol import TASKS
from vlm_tools.bench.workload import DEFAULT_MIX, WorkItem, build_workload

FULL_SIZE_EMBEDS = (197, 576)         # ViT-base positions x SmolLM-135M hidden size


def length_prefixed(payload: bytes) -> bytes:
    """One serialized BYTES element: uint32 little-endian length, then the bytes."""
    return struct.pack("<I", len(payload)) + payload


def bytes_element(payload: bytes) -> dict:
    return {"b64": base64.b64encode(length_prefixed(payload)).decode("ascii")}


def decode_bytes_element(element: dict) -> bytes:
    """The inverse of `bytes_element`; checks the prefix against the payload's length."""
    raw = base64.b64decode(element["b64"])
    if len(raw) < 4:
        raise ValueError(f"element has {len(raw)} bytes; a length prefix alone needs 4")
    (length,) = struct.unpack("<I", raw[:4])
    if length != len(raw) - 4:
        raise ValueError(f"length prefix says {length} bytes, the payload has {len(raw) - 4}")
    return raw[4:]


def _fixed(item: WorkItem) -> dict:
    """Options that make every request do the same work: the task's token limit, greedy decoding."""
    return {P.MAX_NEW_TOKENS.name: [item.max_new_tokens], P.TEMPERATURE.name: [0.0]}


def _preprocess(item: WorkItem, fixed: bool) -> dict:
    return {P.IMAGE.name: bytes_element(item.image), P.QUERY.name: bytes_element(item.query.encode())}


def _vlm(item: WorkItem, fixed: bool) -> dict:
    return _preprocess(item, fixed) | (_fixed(item) if fixed else {})


def _vlm_stream(item: WorkItem, fixed: bool) -> dict:
    """vlm_stream's inputs with stream on: perf_analyzer --streaming then sees each piece as a response."""
    return _vlm(item, fixed) | {P.STREAM.name: [True]}


def _query(item: WorkItem, fixed: bool) -> dict:
    return {P.QUERY.name: bytes_element(item.query.encode())}


def _generator(item: WorkItem, fixed: bool, embeds_shape: tuple[int, int]) -> dict:
    """What the ensemble hands the generator: image embeddings, the task forced by an override."""
    embeds = np.random.default_rng(item.index).standard_normal(embeds_shape).astype("<f4")
    question = item.query.split("]", 1)[1].strip() if item.task == "vqa" else ""
    one_hot = [1.0 if t == item.task else 0.0 for t in TASKS]
    element = {P.IMAGE_EMBEDS.name: {"b64": base64.b64encode(embeds.tobytes()).decode("ascii"),
                                     "shape": list(embeds_shape)},
               P.TASK_PROBS.name: one_hot, P.TASK_SCORES.name: one_hot,
               P.QUESTION.name: bytes_element(question.encode()),
               P.FORCED_TASK.name: [TASKS.index(item.task)],
               P.FORCED_BY.name: bytes_element(P.ROUTED_BY_OVERRIDE.encode())}
    return element | (_fixed(item) if fixed else {})


MODELS: dict[str, Callable] = {P.ENSEMBLE: _vlm, P.STREAM_ENSEMBLE: _vlm_stream, P.ROUTE_ENSEMBLE: _query,
                               P.QUERY_PREPROCESS: _query, P.PREPROCESS: _preprocess, P.GENERATOR: _generator}


def perf_input_data(*, model: str = P.ENSEMBLE, count: int = 12, mix: dict[str, int] | None = None,
                    seed: int = 0, fixed_length: bool = False,
                    embeds_shape: tuple[int, int] = FULL_SIZE_EMBEDS) -> dict:
    """{"data": [one element per request]}; perf_analyzer sends them round-robin."""
    if model not in MODELS:
        raise ValueError(f"no input generator for model {model!r}; choose one of {', '.join(MODELS)}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    build = MODELS[model]
    extra = {"embeds_shape": tuple(embeds_shape)} if model == P.GENERATOR else {}
    return {"data": [build(item, fixed_length, **extra)
                     for item in build_workload(count, mix or DEFAULT_MIX, seed=seed)]}


def write_perf_inputs(path: str | Path, **options) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(perf_input_data(**options)))
    return path
