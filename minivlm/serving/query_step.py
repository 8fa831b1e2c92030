"""The query step: decode and check the query, honour tags and the override, tokenize for the router."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minivlm.errors import InputError
from minivlm.processing.prompts import decode_query, parse_query, parse_task_name
from minivlm.routing.tokenization import QueryTokenizer
from vlm_client.protocol import NO_TASK, ROUTED_BY_OVERRIDE, ROUTED_BY_TAG, TASKS

TOKENIZER_DIR = "router_tokenizer"
MAX_QUERY_BYTES = 4096     # checked before decoding: gRPC would carry up to 2 GiB


@dataclass(frozen=True)
class QueryBatch:
    input_ids: np.ndarray          # (B, T) int64, padded to the batch's longest query
    attention_mask: np.ndarray     # (B, T) int64
    questions: list[str]           # each query without its tags
    forced_tasks: list[int]        # from a tag or task_override, NO_TASK otherwise
    forced_by: list[str]           # ROUTED_BY_TAG / ROUTED_BY_OVERRIDE / ""


class QueryStep:
    def __init__(self, tokenizer: QueryTokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, version_dir: Path) -> "QueryStep":
        return cls(QueryTokenizer.load(version_dir / TOKENIZER_DIR))

    def run(self, raw_queries: list[bytes], raw_overrides: list[bytes] | None = None) -> QueryBatch:
        forced = [self._one(q, o) for q, o in zip(raw_queries, raw_overrides or [None] * len(raw_queries))]
        questions = [question for question, _, _ in forced]
        # The router sees queries without tags; a bare tag still gets a (harmless) non-empty input.
        ids, mask = self.tokenizer([q or " " for q in questions])
        return QueryBatch(ids, mask, questions, [t for _, t, _ in forced], [b for _, _, b in forced])

    @staticmethod
    def _one(raw_query: bytes, raw_override: bytes | None) -> tuple[str, int, str]:
        if len(raw_query) > MAX_QUERY_BYTES:
            raise InputError(f"query is {len(raw_query)} bytes; the limit is {MAX_QUERY_BYTES}")
        parsed = parse_query(decode_query(raw_query))
        if raw_override is not None and raw_override.strip():
            task = parse_task_name(decode_query(raw_override))
            return parsed.question, TASKS.index(task), ROUTED_BY_OVERRIDE
        if parsed.tagged_task is not None:
            return parsed.question, TASKS.index(parsed.tagged_task), ROUTED_BY_TAG
        return parsed.question, NO_TASK, ""
