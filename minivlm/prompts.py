"""Queries, task tags, the notebook's prompt formats, and answer clean-up."""
from __future__ import annotations

import re
from dataclasses import dataclass

from vlm_client.protocol import TASK_TAGS, TASKS

from .errors import InputError

MAX_QUERY_CHARS = 1000
_TAG_PATTERN = re.compile(r"\[\s*(CAPTION|OD|VQA)\s*\]", re.IGNORECASE)
_TAG_TO_TASK = {"CAPTION": "caption", "OD": "od", "VQA": "vqa"}


@dataclass(frozen=True)
class ParsedQuery:
    question: str                 # the query without task tags
    tagged_task: str | None       # the task named by an explicit tag, anywhere in the query


def decode_query(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"query is not valid UTF-8 (byte {error.start}: {raw[error.start:error.start + 1]!r})") \
            from None


def parse_query(query: str) -> ParsedQuery:
    """Find explicit tags anywhere in the query; conflicting tags are an error, not a guess."""
    if len(query) > MAX_QUERY_CHARS:
        raise InputError(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
    tasks = {_TAG_TO_TASK[match.upper()] for match in _TAG_PATTERN.findall(query)}
    if len(tasks) > 1:
        raise InputError(f"query has conflicting task tags: {sorted(TASK_TAGS[t] for t in tasks)}")
    question = " ".join(_TAG_PATTERN.sub(" ", query).split())
    tagged = tasks.pop() if tasks else None
    if not question and tagged is None:
        raise InputError("query is empty")
    return ParsedQuery(question=question, tagged_task=tagged)


def parse_task_name(name: str) -> str:
    task = name.strip().lower()
    if task not in TASKS:
        raise InputError(f"task_override must be one of {list(TASKS)}, got {name!r}")
    return task


def build_prompt(task: str, question: str) -> str:
    """The notebook's prompt formats: "[CAPTION]", "[OD]", "[VQA] {question}"."""
    if task == "vqa":
        return f"{TASK_TAGS['vqa']} {question}"
    return TASK_TAGS[task]


_RESIDUE = re.compile(r"^[\s\]:>\-]+")


def clean_answer(text: str) -> str:
    """Drop tag residue (the notebook left a stray "] ") and surrounding whitespace."""
    text = _TAG_PATTERN.sub(" ", text)
    return _RESIDUE.sub("", text).strip()
