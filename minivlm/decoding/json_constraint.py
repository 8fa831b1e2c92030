"""Detection answers that are JSON by construction: a grammar mask on every OD step, closed within the budget.

The grammar (llguidance, Lark syntax) is the notebook's format as it writes it,
`{"objects": [{"label": "...", "bbox": [x, y, w, h]}, ...]}`, with its separators, labels of 1-48 characters
and coordinates in [0, 1] with at most six decimals. Each step, tokens the grammar cannot continue with get
-inf logits, so a greedy answer that already conforms keeps every token, and any other answer conforms.

Closing in time: with `remaining` tokens left, the model's token is kept only if the answer can still be closed
in the tokens left after it; otherwise the row follows the shortest closing to the end (close the label, zero
coordinates, then `]}`s, then EOS), as the tokenizer writes that text. The closing is found by running the
grammar on a copy of the matcher, and only in the last `CLOSING_WINDOW` tokens, where it can bind. An object
cut short this way is completed with zeros, which `parse_detection` rejects (a box needs a size): the JSON
parses, and no made-up box is reported. A limit below the shortest complete answer (`{"objects": []}` and
EOS, about 8 tokens) cannot be met; the answer is then cut like any other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

DETECTION_GRAMMAR = r'''
start: /[ ]?/ "{\"objects\": [" (object (", " object)*)? "]}"
object: "{\"label\": \"" LABEL "\", \"bbox\": [" NUMBER ", " NUMBER ", " NUMBER ", " NUMBER "]}"
LABEL: /[^"\\\x00-\x1f]{1,48}/
NUMBER: /0|1|0\.[0-9]{1,6}|1\.0{1,6}/
'''
# The longest shortest-closing, in tokens: inside a label, `x", "bbox": [0, 0, 0, 0]}]}` and EOS, one
# character a token at worst (26), with margin. Before it the closing check cannot bind and is skipped.
CLOSING_WINDOW = 40
# Tokens the closing prefers, in order: they end what is open with the fewest characters.
# A quote first: inside a label every other closer is a label character.
CLOSERS = ('"', "]", "}", ",", " ", "0", "a")


@dataclass(frozen=True, eq=False)
class DetectionGrammar:
    """The compiled grammar and tokenizer view; built once per model, shared by every row (thread-safe)."""
    tokenizer: object                    # llguidance.LLTokenizer
    grammar: str
    closers: tuple[int, ...]             # token ids of CLOSERS that are single tokens
    eos_token_id: int
    vocab_size: int
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]

    @classmethod
    def for_tokenizer(cls, hf_tokenizer, vocab_size: int) -> DetectionGrammar:
        """`vocab_size`: the model's logits width (may exceed the tokenizer's)."""
        import llguidance
        import llguidance.hf

        tokenizer = llguidance.hf.from_tokenizer(hf_tokenizer, n_vocab=vocab_size)
        grammar = llguidance.LLMatcher.grammar_from_lark(DETECTION_GRAMMAR)
        closers = tuple(ids[0] for ids in (hf_tokenizer.encode(c, add_special_tokens=False) for c in CLOSERS)
                        if len(ids) == 1)
        return cls(tokenizer, grammar, closers, int(hf_tokenizer.eos_token_id), vocab_size,
                   encode=lambda text: hf_tokenizer.encode(text, add_special_tokens=False),
                   decode=hf_tokenizer.decode)

    def new_row(self) -> RowConstraint:
        import llguidance

        matcher = llguidance.LLMatcher(self.tokenizer, self.grammar)
        if matcher.is_error():
            raise ValueError(f"detection grammar: {matcher.get_error()}")
        return RowConstraint(self, matcher)


class RowConstraint:
    """One row's grammar state. `settle` decides each token after the (masked) sampler chose; once the answer
    must close, it follows a closing plan to the end."""

    def __init__(self, grammar: DetectionGrammar, matcher):
        import llguidance.numpy as llnp

        self.grammar, self.matcher, self._llnp = grammar, matcher, llnp
        self._bitmask = llnp.allocate_token_bitmask(1, grammar.tokenizer.vocab_size)
        self._plan: list[int] = []               # the closing's tokens still to send, EOS last

    def allowed(self, matcher=None) -> np.ndarray:
        """Boolean mask over the vocabulary: the tokens the grammar accepts next."""
        self._llnp.fill_next_token_bitmask(matcher or self.matcher, self._bitmask, 0)
        bits = np.unpackbits(self._bitmask.view(np.uint8), bitorder="little")
        return bits[: self.grammar.vocab_size].astype(bool)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """(V,) logits with every token the grammar refuses at -inf (a copy)."""
        allowed = torch.from_numpy(self.allowed()).to(logits.device)
        return logits.masked_fill(~allowed, float("-inf"))

    def settle(self, token: int, remaining: int) -> int:
        """The model's (masked) choice, or the closing's next token when keeping the choice would leave the
        answer unclosable in the `remaining - 1` tokens after it. Advances the grammar by the token returned."""
        eos = self.grammar.eos_token_id
        if not self._plan and self.matcher.is_stopped():     # the JSON is complete: only EOS is left to say
            return eos
        if not self._plan and remaining <= CLOSING_WINDOW and not self.closes_in(token, remaining - 1):
            self._plan = self._closing_plan(self.matcher)
        if self._plan:
            token = self._plan.pop(0)
        if not self.matcher.is_stopped():
            self.matcher.consume_token(token)
        return token

    def closes_in(self, token: int, budget: int) -> bool:
        """Whether the answer, after `token`, can still be closed within `budget` more tokens, EOS included."""
        if token == self.grammar.eos_token_id:
            return True
        trial = self.matcher.deep_copy()
        return trial.consume_token(token) and len(self._closing_plan(trial)) <= budget

    def _closing_plan(self, matcher) -> list[int]:
        """The shortest closing's text (one closer character at a time, on a copy), as the tokenizer writes
        it, then EOS: what the answer still needs from `matcher`'s state."""
        trial, text = matcher.deep_copy(), ""
        while not trial.is_stopped() and len(text) <= 2 * CLOSING_WINDOW:
            token = self._closing_token(trial, self.allowed(trial))
            if token == self.grammar.eos_token_id or not trial.consume_token(token):
                break
            text += self.grammar.decode([token])
        return self.grammar.encode(text) + [self.grammar.eos_token_id]

    def _closing_token(self, matcher, allowed: np.ndarray) -> int:
        if matcher.is_accepting() and allowed[self.grammar.eos_token_id]:
            return self.grammar.eos_token_id
        for token in self.grammar.closers:
            if allowed[token]:
                return token
        forced = matcher.compute_ff_tokens()          # a literal only one way on ("bbox": [, ...)
        if forced:
            return forced[0]
        return int(np.flatnonzero(allowed)[0])
