"""Decoding for the VLM: a batched, KV-cached decoder and the notebook's cache-free reference.

Each request's prefix is [image embeds] + [prompt token embeds]. Requests of different lengths are
left-padded into one batch; position ids count only real positions, so a request decodes the same tokens
alone or inside a batch. Rows that finish (EOS or their own token limit) leave the batch and its cache.
`iter_decode` yields tokens step by step, so a streaming (decoupled) server can forward them as they come.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from transformers import DynamicCache, PreTrainedModel


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0      # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class TokenEvent:
    row: int                       # index of the request in the caller's list
    token_id: int
    finish_reason: str | None      # "stop" (EOS), "length", or None while decoding goes on


@dataclass(frozen=True)
class Generation:
    token_ids: tuple[int, ...]     # without the EOS token
    finish_reason: str


class _Sampler:
    """Per-request sampling state; its own torch.Generator makes seeded results independent of batching."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.generator = None
        if params.temperature > 0:
            self.generator = torch.Generator()
            self.generator.manual_seed(params.seed if params.seed is not None else torch.seed())

    def next_token(self, logits: torch.Tensor) -> int:        # logits: (vocab,)
        if self.generator is None:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float().cpu() / self.params.temperature, dim=-1)
        if self.params.top_p < 1.0:
            probs = _top_p_filter(probs, self.params.top_p)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    sorted_probs, order = torch.sort(probs, descending=True)
    outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > top_p   # keep the token that crosses top_p
    sorted_probs[outside] = 0.0
    return torch.zeros_like(probs).scatter_(0, order, sorted_probs)


def _left_pad(prefixes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_i, D) tensors -> embeds (B, L, D) and attention mask (B, L), padding on the left."""
    length = max(p.shape[0] for p in prefixes)
    embeds = prefixes[0].new_zeros((len(prefixes), length, prefixes[0].shape[1]))
    mask = torch.zeros((len(prefixes), length), dtype=torch.long, device=embeds.device)
    for row, prefix in enumerate(prefixes):
        embeds[row, length - prefix.shape[0]:] = prefix
        mask[row, length - prefix.shape[0]:] = 1
    return embeds, mask


@torch.inference_mode()
def iter_decode(lm: PreTrainedModel, prefixes: Sequence[torch.Tensor], params: Sequence[SamplingParams],
                eos_token_id: int) -> Iterator[TokenEvent]:
    embeds, mask = _left_pad(prefixes)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)                              # (B, L)
    cache = DynamicCache()
    out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
             logits_to_keep=1)
    samplers = [_Sampler(p) for p in params]
    active = list(range(len(prefixes)))               # caller's row index of each batch row
    counts = [0] * len(prefixes)
    last_logits, next_position = out.logits[:, -1], positions[:, -1:] + 1
    while active:
        tokens, keep = [], []
        for batch_row, row in enumerate(active):
            token = samplers[row].next_token(last_logits[batch_row])
            counts[row] += 1
            finish = "stop" if token == eos_token_id else (
                "length" if counts[row] >= params[row].max_new_tokens else None)
            yield TokenEvent(row, token, finish)
            if finish is None:
                tokens.append(token)
                keep.append(batch_row)
        if not keep:
            return
        if len(keep) < len(active):
            index = torch.tensor(keep, device=mask.device)
            cache.batch_select_indices(index)
            mask, next_position = mask[index], next_position[index]
            active = [active[i] for i in keep]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
        next_ids = torch.tensor(tokens, device=mask.device).unsqueeze(1)                  # (B, 1)
        out = lm(input_ids=next_ids, attention_mask=mask, position_ids=next_position, cache=cache, use_cache=True)
        last_logits, next_position = out.logits[:, -1], next_position + 1


def decode(lm: PreTrainedModel, prefixes: Sequence[torch.Tensor], params: Sequence[SamplingParams],
           eos_token_id: int) -> list[Generation]:
    """Decode every request to completion; results in the callers' order."""
    tokens: list[list[int]] = [[] for _ in prefixes]
    reasons: list[str] = [""] * len(prefixes)
    for event in iter_decode(lm, prefixes, params, eos_token_id):
        if event.finish_reason != "stop":
            tokens[event.row].append(event.token_id)
        if event.finish_reason:
            reasons[event.row] = event.finish_reason
    return [Generation(tuple(t), r) for t, r in zip(tokens, reasons)]


@torch.inference_mode()
def reference_greedy(lm: PreTrainedModel, prefix: torch.Tensor, max_new_tokens: int,
                     eos_token_id: int) -> Generation:
    """The notebook's semantics: no cache, the whole sequence re-run for every token. The yardstick."""
    sequence = prefix.unsqueeze(0)                                           # (1, L, D)
    embedding = lm.get_input_embeddings()
    tokens: list[int] = []
    for _ in range(max_new_tokens):
        token = int(torch.argmax(lm(inputs_embeds=sequence).logits[0, -1]))
        if token == eos_token_id:
            return Generation(tuple(tokens), "stop")
        tokens.append(token)
        sequence = torch.cat([sequence, embedding(torch.tensor([[token]]))], dim=1)
    return Generation(tuple(tokens), "length")
