"""Drop the clauses of a routing query that rule a task out, so the router reads only what is asked for:
"Rather than boxes, just give me the count of cars." -> "just give me the count of cars."

Why: the router's encoder is frozen and its heads read pooled token states, in which "boxes" weighs about the
same whether the user asks for boxes or declines them. Training data with rule-outs did not fix that: on the
fresh held-out set 5 half of the misroutes (5 of 10) were a task ruled out in words the heads read as a request
for it. Dropping the clause is exact where a pattern matches and leaves every other query untouched.

A clause (text up to . , ; : ! ? a newline or a spaced dash) that is not a question is dropped when it holds
a negator followed within three words by a task word ("no caption", "don't draw boxes", "rather than listing objects
with coordinates", "not interested in how many") or a task word followed by "is not needed" and the like
("counting isn't needed", "boxes are optional"; "boxes are needed" asks for them). When a request starts again
inside such a clause ("Skip the detection and give me a summary", "i dont want boxes i want a description"),
the clause is dropped only up to it. Nothing is dropped unless at least two words remain, so "no boxes" stays as
typed.

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
    r"locat(?:e|ing|ions?)", r"positions?", r"outlin(?:e|es|ed|ing)", r"rectangles?", r"od", r"mark(?:s|ed|ing)?",
    # vqa
    r"count(?:ing|s)?", r"how\s+many", r"tally", r"questions?", r"answer(?:s|ing)?", r"numbers?",
    r"yes[\s-]+or[\s-]+no",
)
_TASK = r"(?:%s)\b" % "|".join(TASK_WORDS)
_NEGATOR = (r"(?:no|not|don'?t|do\s+not|never|without|skip(?:ping)?|forget|ignore|rather\s+than|instead\s+of|"
            r"no\s+need\s+(?:for|to)|never\s*mind|leave\s+out|hold\s+the)")
_RULED_OUT_BEFORE = re.compile(r"\b%s\b(?:\W+\w+){0,3}?\W+%s" % (_NEGATOR, _TASK), re.IGNORECASE)
_NEED = r"(?:needed|necessary|required|wanted)"
_NOT = r"(?:not|isn'?t|aren'?t|wasn'?t|weren'?t)"
_RULED_OUT_AFTER = re.compile(    # "boxes are needed" asks for them: only a need negated or optional rules out
    r"\b%s(?:\W+\w+){0,3}?\W+(?:(?:is|are|was|were)\s+)?%s\s+%s\b"
    r"|\b%s(?:\W+\w+){0,3}?\W+(?:(?:is|are)\s+)?(?:unnecessary|optional|useless|pointless|irrelevant)\b"
    % (_TASK, _NOT, _NEED, _TASK),
    re.IGNORECASE)
# Where a request starts again inside a clause that rules a task out ("Skip the detection and give me a summary"):
# a request verb after a conjunction or "just"/"instead" and the like, or "I want". A bare verb does not count
# ("Don't count anything or draw boxes" rules both out), nor do question words ("no need to count how many").
_REQUEST_VERB = (r"(?:give|tell|show|count|describe|find|locate|mark|draw|list|write|say|answer|summari[sz]e|"
                 r"detect|explain|caption|box)\b")
_REQUEST_START = re.compile(
    r"\s+(?:(?:and|but|so|then)\s+(?=(?:(?:just|only|instead|please|simply|rather)\s+)*%s)"
    r"|(?=(?:(?:just|only|instead|please|simply|rather)\s+)+%s)"
    r"|(?=i\s+(?:just\s+|only\s+)?(?:want|need)\b|i'?d\s+like\b))" % (_REQUEST_VERB, _REQUEST_VERB), re.IGNORECASE)
_CLAUSE_END = re.compile(r"[.;!?,:\n]+|\s[-–—]+\s|[–—]")    # punctuation, a spaced hyphen or any long dash
_WORD = re.compile(r"\w+")
MIN_WORDS_LEFT = 2


def _rule_out(clause: str) -> re.Match | None:
    """Where `clause` rules a task out, or None. A question never does ("Is there no forklift near the boxes?"
    asks about boxes as objects)."""
    if clause.rstrip().endswith("?"):
        return None
    return _RULED_OUT_BEFORE.search(clause) or _RULED_OUT_AFTER.search(clause)


def _without_rule_out(clause: str) -> str:
    """`clause` itself, or what follows its rule-out when a request starts again after it, or ""."""
    rule_out = _rule_out(clause)
    if rule_out is None:
        return clause
    request = _REQUEST_START.search(clause, rule_out.end())
    return _without_rule_out(clause[request.end():]) if request else ""


def drop_ruled_out(text: str) -> str:
    """`text` without its clauses that rule a task out, or `text` itself when none does or too little would
    remain."""
    clauses = _clauses(text)
    kept = [_without_rule_out(c) for c in clauses]
    if kept == clauses or len(_WORD.findall("".join(kept))) < MIN_WORDS_LEFT:
        return text
    return "".join(kept).strip()


def _clauses(text: str) -> list[str]:
    """`text` cut after each clause end; the pieces join back to `text`."""
    pieces, start = [], 0
    for end in _CLAUSE_END.finditer(text):
        pieces.append(text[start:end.end()])
        start = end.end()
    return pieces + [text[start:]] if start < len(text) else pieces
