"""Choosing each row's next token, and when a row stops: shared by every decoding loop.

Each request has its own `Sampler` (its own seeded torch.Generator), so sampled tokens do not depend on which
requests share its batch. `finish_reason` is the one stop rule: EOS ends a row ("stop"), its own token limit
ends it ("length"); the EOS token itself is never part of the answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from minivlm.decoding.json_constraint import DetectionGrammar


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0      # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    grammar: DetectionGrammar | None = None    # constrain the answer to detection JSON (json_constraint.py)


@dataclass(frozen=True)
class Generation:
    token_ids: tuple[int, ...]     # without the EOS token
    finish_reason: str             # "stop" (EOS) or "length" (token limit)


def finish_reason(token: int, generated: int, params: SamplingParams, eos_token_id: int) -> str | None:
    """After a row produced `token`, its `generated`-th: "stop", "length", or None while it goes on."""
    if token == eos_token_id:
        return "stop"
    return "length" if generated >= params.max_new_tokens else None


class Sampler:
    """Per-request sampling state; its own torch.Generator makes seeded results independent of batching, and a
    grammar-constrained row keeps its grammar state here."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.generator = None
        if params.temperature > 0:
            self.generator = torch.Generator()
            self.generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        self.constraint = params.grammar.new_row() if params.grammar is not None else None
        self.generated = 0

    @property
    def free(self) -> bool:
        """Greedy and unconstrained: the batch's argmax is this row's token."""
        return self.generator is None and self.constraint is None

    def pick(self, logits: torch.Tensor) -> int:
        """This row's next token from its (V,) logits."""
        self.generated += 1
        if self.constraint is None:
            return self.next_token(logits)
        token = self.next_token(self.constraint.mask(logits))
        return self.constraint.settle(token, self.params.max_new_tokens - self.generated + 1)

    def next_token(self, logits: torch.Tensor) -> int:        # logits: (vocab,)
        if self.generator is None:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float().cpu() / self.params.temperature, dim=-1)
        if self.params.top_p < 1.0:
            probs = top_p_filter(probs, self.params.top_p)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_probs, order = torch.sort(probs, descending=True)
    outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p   # keep the token that crosses top_p
    sorted_probs[outside] = 0.0
    return torch.zeros_like(probs).scatter_(0, order, sorted_probs)


def next_tokens(logits: torch.Tensor, samplers: list[Sampler]) -> list[int]:
    """One argmax over the batch (B, V) for the free rows; sampling and constrained rows pick their own."""
    greedy = logits.argmax(dim=-1).tolist()
    return [g if s.free else s.pick(row) for g, s, row in zip(greedy, samplers, logits)]
