"""Drop the clauses of a routing query that rule a task out, so the router reads only what is asked for:
"Rather than boxes, just give me the count of cars." -> "just give me the count of cars."

Why: the router's encoder is frozen and its heads read pooled token states, in which "boxes" weighs about the
same whether the user asks for boxes or declines them. Training data with rule-outs did not fix that: on the
fresh held-out set 5 half of the misroutes (5 of 10) were a task ruled out in words the heads read as a request
for it. Dropping the clause is exact where a pattern matches and leaves every other query untouched.

A clause (text up to . , ; : ! ? or a newline) is dropped when it holds a negator followed within four words
by a task word ("no caption", "don't draw boxes", "rather than listing objects with coordinates", "not
interested in how many") or a task word followed by "is not needed" and the like ("counting isn't needed").
Nothing is dropped unless at least two words remain, so "no boxes" or "is there no box?" stay as typed.

It runs inside QueryTokenizer after the key-word spelling correction (a corrected "descirbe" is seen as
"describe"), so the served preprocess step, the ONNX runner and the in-process router read the same text.
"""
from __future__ import annotations

import re

# Words that name a task; ruling one out says nothing about which task is wanted.
TASK_WORDS = (
    # caption
    r"caption(?:s|ing)?", r"descri(?:be|bing|ption|ptions)", r"summar(?:y|ies|ize|ise|izing|ising)",
    r"narrat(?:e|ion|ing)", r"overview", r"alt[- ]text",
    # od
    r"(?:bounding\s+)?box(?:es|ing)?", r"bbox(?:es)?", r"detect(?:ion|ions|ing)?", r"coord(?:inate)?s",
    r"locat(?:e|ing|ions?)", r"positions?", r"outlines?", r"rectangles?", r"od",
    # vqa
    r"count(?:ing|s)?", r"how\s+many", r"tally", r"questions?", r"answer(?:s|ing)?",
)
_TASK = r"(?:%s)\b" % "|".join(TASK_WORDS)
_NEGATOR = (r"(?:no|not|don'?t|do\s+not|never|without|skip(?:ping)?|forget|ignore|rather\s+than|instead\s+of|"
            r"no\s+need\s+(?:for|to)|never\s*mind|leave\s+out|hold)")
_RULED_OUT_BEFORE = re.compile(r"\b%s\b(?:\W+\w+){0,4}?\W+%s" % (_NEGATOR, _TASK), re.IGNORECASE)
_RULED_OUT_AFTER = re.compile(
    r"\b%s(?:\W+\w+){0,3}?\W+(?:is|are|'s|isn'?t|aren'?t)?\s*(?:not\s+)?"
    r"(?:needed|necessary|required|wanted|unnecessary|optional)\b" % _TASK, re.IGNORECASE)
_CLAUSE = re.compile(r"[^.;!?,:\n]+[.;!?,:\n]*|[.;!?,:\n]+")
_WORD = re.compile(r"\w+")
MIN_WORDS_LEFT = 2


def rules_out_a_task(clause: str) -> bool:
    return bool(_RULED_OUT_BEFORE.search(clause) or _RULED_OUT_AFTER.search(clause))


def drop_ruled_out(text: str) -> str:
    """`text` without its clauses that rule a task out, or `text` itself when none does or too little would
    remain."""
    clauses = _CLAUSE.findall(text)
    kept = [c for c in clauses if not rules_out_a_task(c)]
    if len(kept) == len(clauses) or len(_WORD.findall("".join(kept))) < MIN_WORDS_LEFT:
        return text
    return "".join(kept).strip()
