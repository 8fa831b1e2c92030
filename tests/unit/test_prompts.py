"""Queries and task tags, the notebook's prompt formats, and answer clean-up."""
from __future__ import annotations

import pytest

from minivlm.errors import InputError
from minivlm.processing.prompts import (
    MAX_QUERY_CHARS,
    ParsedQuery,
    build_prompt,
    clean_answer,
    decode_query,
    parse_query,
    parse_task_name,
)


@pytest.mark.parametrize("query, expected", [
    ("[VQA] what colour is the car?", ParsedQuery("what colour is the car?", "vqa")),
    ("what colour is the car? [VQA]", ParsedQuery("what colour is the car?", "vqa")),
    ("what colour [ vqa ] is the car?", ParsedQuery("what colour is the car?", "vqa")),
    ("[OD]", ParsedQuery("", "od")),
    ("please [caption] this", ParsedQuery("please this", "caption")),
    ("[OD] find the dogs [od]", ParsedQuery("find the dogs", "od")),          # repeated, same task
    ("what colour is the car?", ParsedQuery("what colour is the car?", None)),
    ("  spaced \n out\tquery ", ParsedQuery("spaced out query", None)),
    ("[QA] not a tag", ParsedQuery("[QA] not a tag", None)),
])
def test_tags_anywhere(query, expected):
    assert parse_query(query) == expected


def test_conflicting_tags():
    with pytest.raises(InputError, match=r"conflicting task tags: \['\[CAPTION\]', '\[OD\]'\]"):
        parse_query("[OD] or maybe [CAPTION]?")


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query(query):
    with pytest.raises(InputError, match="query is empty"):
        parse_query(query)


def test_too_long_query():
    parse_query("a" * MAX_QUERY_CHARS)
    with pytest.raises(InputError, match=f"query is {MAX_QUERY_CHARS + 1} characters; the limit is {MAX_QUERY_CHARS}"):
        parse_query("a" * (MAX_QUERY_CHARS + 1))


def test_utf8_query_decodes():
    assert decode_query("où est le chat? 猫".encode()) == "où est le chat? 猫"


def test_non_utf8_query():
    with pytest.raises(InputError, match=r"not valid UTF-8 \(byte 4: b'\\xff'\)"):
        decode_query(b"cat \xff dog")


@pytest.mark.parametrize("name, task", [("vqa", "vqa"), (" OD ", "od"), ("Caption", "caption")])
def test_task_override_names(name, task):
    assert parse_task_name(name) == task


def test_unknown_task_override():
    with pytest.raises(InputError, match="task_override must be one of .* got 'segment'"):
        parse_task_name("segment")


def test_notebook_prompt_formats():
    assert build_prompt("caption", "ignored") == "[CAPTION]"
    assert build_prompt("od", "") == "[OD]"
    assert build_prompt("vqa", "is it red?") == "[VQA] is it red?"


@pytest.mark.parametrize("raw, clean", [
    ("] a dog on a sofa", "a dog on a sofa"),            # the notebook's stray "] "
    ("[CAPTION] a dog on a sofa", "a dog on a sofa"),    # prompt echo
    (" : - > yes  ", "yes"),
    ("a [VQA] b", "a   b"),                              # a tag inside the answer goes too
    ("  ", ""),
])
def test_clean_answer_removes_residue(raw, clean):
    assert clean_answer(raw) == clean
