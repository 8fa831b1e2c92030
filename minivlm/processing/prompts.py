"""Queries, task tags, the notebook's prompt formats, and answer clean-up."""
from __future__ import annotations

import re
from dataclasses import dataclass

from minivlm.errors import InputError
from vlm_client.protocol import TASK_TAGS, TASKS

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


_QUESTION_WORDS = (r"(?:is|are|was|were|does|do|did|can|could|what|which|who|whose|where|why|when|how|tell me|"
                   r"say|answer)\b")
_CONNECTOR_BEFORE_QUESTION = re.compile(r"\b(?:and also|and|then|also|plus|as well as)\s+(?=" + _QUESTION_WORDS + ")",
                                        re.IGNORECASE)
_QUESTION_START = re.compile(_QUESTION_WORDS, re.IGNORECASE)


def question_clause(query: str) -> str:
    """The VQA part of a compound query ("describe it and tell me if the dog is happy" -> "tell me if the dog
    is happy"): the sentence with a question mark, else one that holds a question after a connector."""
    sentences = [s.strip() for s in re.split(r"(?<=[?.!;,])\s+", query) if s.strip()]
    for sentence in sentences:
        if sentence.endswith("?"):
            return _after_connector(sentence)
    for sentence in sentences:
        clause = _after_connector(sentence)
        if clause != sentence or _QUESTION_START.match(clause):
            return clause
    return query


def _after_connector(sentence: str) -> str:
    match = _CONNECTOR_BEFORE_QUESTION.search(sentence)
    return sentence[match.end():] if match else sentence
