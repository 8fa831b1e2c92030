"""The query step: decode and check the query, honour tags and the override, tokenize for the router."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlm_client.protocol import NO_TASK, ROUTED_BY_OVERRIDE, ROUTED_BY_TAG, TASKS

from ..errors import InputError
from ..prompts import decode_query, parse_query, parse_task_name
from ..router.tokenization import QueryTokenizer

TOKENIZER_DIR = "router_tokenizer"
MAX_QUERY_BYTES = 4096     # checked before decoding: gRPC would carry up to 2 GiB


@dataclass(frozen=True)
class QueryResult:
    input_ids: np.ndarray          # (T,) int64
    attention_mask: np.ndarray     # (T,) int64
    question: str
    forced_task: int
    forced_by: str


class QueryStep:
    def __init__(self, tokenizer: QueryTokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, version_dir: Path) -> "QueryStep":
        return cls(QueryTokenizer.load(version_dir / TOKENIZER_DIR))

    def run(self, raw_query: bytes, raw_override: bytes | None = None) -> QueryResult:
        if len(raw_query) > MAX_QUERY_BYTES:
            raise InputError(f"query is {len(raw_query)} bytes; the limit is {MAX_QUERY_BYTES}")
        parsed = parse_query(decode_query(raw_query))
        forced_task, forced_by = NO_TASK, ""
        if raw_override is not None and raw_override.strip():
            forced_task, forced_by = TASKS.index(parse_task_name(decode_query(raw_override))), ROUTED_BY_OVERRIDE
        elif parsed.tagged_task is not None:
            forced_task, forced_by = TASKS.index(parsed.tagged_task), ROUTED_BY_TAG
        # The router sees the query without tags; a bare tag still gets a (harmless) non-empty input.
        ids, mask = self.tokenizer([parsed.question or " "])
        return QueryResult(ids[0], mask[0], parsed.question, forced_task, forced_by)
