"""Key-word spelling correction for router queries: "descirbe teh imgae" -> "describe teh image".

A word is corrected only when it is unknown (not a whole word of the encoder's WordPiece vocabulary and not a
routing word) and a routing word lies within a small optimal-string-alignment distance of it (substitution,
insertion, deletion or one swap of neighbours each count 1): 1 for words of 4-5 letters, 2 from 6 letters on;
words of 3 letters or fewer are left alone. A typo that happens to spell another real word ("bonding box") is
left alone too: this corrects slips in the few words routing depends on, nothing else.

It runs inside QueryTokenizer, so the served preprocess step, the ONNX runner and the in-process router all see
the same corrected text. Torch-free; pure Python (a few dozen candidate words per unknown word; a query is
tokenized once per request, and the look-up costs microseconds).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

# Words that decide a query's task, and spellings a user means as one of them. Order breaks distance ties.
ROUTING_WORDS = (
    # caption
    "describe", "description", "caption", "captions", "summarize", "summary", "overview", "picture", "image",
    "photo", "scene", "write", "explain", "depict", "shows",
    # od
    "detect", "detection", "detections", "objects", "object", "bounding", "boxes", "box", "coordinates",
    "locate", "localize", "location", "locations", "position", "positions", "rectangle", "rectangles",
    "everything", "every", "item", "items", "label", "labels", "outline", "find",
    # vqa
    "what", "where", "which", "whether", "many", "there", "colour", "color", "count", "number", "triangle",
    "triangles", "circle", "circles", "square", "squares", "shape", "shapes", "this", "their",
    # kept as typed (not whole words of the MiniLM vocabulary, but meant as written)
    "img", "pic", "pics", "pls", "plz", "bbox", "bboxes", "coords", "json", "alt", "thx",
)

_WORD = re.compile(r"[A-Za-z]+")
MIN_LENGTH = 4            # shorter words are too ambiguous to correct ("wat", "teh", "dor")
LONG_WORD = 6             # from this length on, two edits are allowed
CACHE_WORDS = 4096        # words remembered per corrector (a serving process sees arbitrary words)


def osa_distance(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance of a and b, or limit + 1 when it exceeds limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2, previous = [], list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], previous2[j - 2] + 1)
        if min(row) > limit:
            return limit + 1
        previous2, previous = previous, row
    return min(previous[-1], limit + 1)


class SpellingCorrector:
    def __init__(self, words: Sequence[str], is_known: Callable[[str], bool]):
        self.words = tuple(dict.fromkeys(w.lower() for w in words))
        self._vocabulary = set(self.words)
        self._is_known = is_known
        self._nearest_cached = lru_cache(maxsize=CACHE_WORDS)(self._nearest)

    def correct_word(self, word: str) -> str:
        """The routing word `word` is a slip of, or `word` itself (lower case in both cases)."""
        return self._nearest_cached(word.lower())

    def _nearest(self, word: str) -> str:
        if len(word) < MIN_LENGTH or word in self._vocabulary or self._is_known(word):
            return word
        limit = 1 if len(word) < LONG_WORD else 2
        best, best_distance = word, limit + 1
        for candidate in self.words:
            distance = osa_distance(word, candidate, limit)
            if distance < best_distance:
                best, best_distance = candidate, distance
        return best

    def __call__(self, text: str) -> str:
        return _WORD.sub(lambda m: self._replace(m.group(0)), text)

    def _replace(self, word: str) -> str:
        corrected = self.correct_word(word)
        return word if corrected == word.lower() else corrected
