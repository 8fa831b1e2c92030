"""Continuous batching: rows join the running batch between decode steps and leave it when they finish.

`iter_decode` runs a fixed batch until its longest row ends; here a batch lives on. `ContinuousBatch.admit`
prefills new rows and moves them into free rows of the live KV cache (`prefill` may run on another thread
while the batch steps, `join` then takes a few milliseconds between two steps), `step` samples the next
token of every live row, retires the rows that finished (EOS or their own limit) and decodes one position for
the rest. A row's tokens are those it would get decoded alone: each row keeps its own RoPE positions, padding
bias and seeded sampler, and no row attends to another's keys.

On CUDA the same code runs on the decoder's device; prefill queues its kernels on a stream of its own
(`minivlm.decoding.device.PrefillStream`), and `join` hands the prefilled tensors over to the decoding stream.

`StaticBatch` has the same two calls for what the fast decoder does not implement (HF's forward for other
Llama variants): the rows admitted together decode to the end in one `decode`, like the server did before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import torch
from transformers import PreTrainedModel

from minivlm.decoding.device import PrefillStream
from minivlm.decoding.generate import decode, left_pad
from minivlm.decoding.llama_decoder import KVCache, LlamaDecoder
from minivlm.decoding.sampling import Generation, Sampler, SamplingParams, finish_reason, next_tokens


@dataclass(frozen=True)
class Job:
    key: Hashable                  # the caller's name for this row; finished rows come back with it
    prefix: torch.Tensor           # (L, D): image embeds + prompt token embeds
    params: SamplingParams


@dataclass(frozen=True)
class Prefilled:
    """Jobs whose prompts went through the decoder, waiting to join a live batch."""
    jobs: tuple[Job, ...]
    cache: KVCache
    logits: torch.Tensor          # (rows, V): each row's first next-token logits


@dataclass
class _Row:
    key: Hashable
    params: SamplingParams
    sampler: Sampler
    tokens: list[int]


class ContinuousBatch:
    """One live batch of at most `max_rows` rows over one KV cache. Not thread-safe: one thread drives it."""

    def __init__(self, decoder: LlamaDecoder, eos_token_id: int, *, max_rows: int):
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.decoder, self.eos_token_id, self.max_rows = decoder, eos_token_id, max_rows
        self.cache = decoder.new_cache(max_rows, 0, empty=True)        # grows on admission
        self.prefill_stream = PrefillStream(decoder.device)
        self.rows: list[_Row] = []                # row i of the cache
        self.logits: torch.Tensor | None = None   # (rows, V): each row's next-token logits, not sampled yet

    @property
    def free_rows(self) -> int:
        return self.max_rows - len(self.rows)

    def admit(self, jobs: Sequence[Job]) -> None:
        """Prefill `jobs` into free rows now; their first token is sampled by the next `step`."""
        if jobs:
            self.join(self.prefill(jobs))

    def prefill(self, jobs: Sequence[Job]) -> Prefilled:
        """The expensive half of `admit`, safe on another thread while this batch steps: the jobs' prompts
        through the decoder into a cache of their own."""
        def prefill() -> tuple[KVCache, torch.Tensor]:
            return self.decoder.prefill_rows(*left_pad([job.prefix for job in jobs]))

        cache, logits = self.prefill_stream.run(prefill)
        return Prefilled(tuple(jobs), cache, logits)

    def join(self, prefilled: Prefilled) -> None:
        """The cheap half of `admit`, on the thread that steps: the prefilled rows join the live batch."""
        jobs = prefilled.jobs
        if len(jobs) > self.free_rows:
            raise ValueError(f"cannot admit {len(jobs)} rows: {self.free_rows} of {self.max_rows} are free")
        ahead = max(job.params.max_new_tokens for job in jobs)
        self.prefill_stream.adopt([*prefilled.cache.tensors(), prefilled.logits])
        self.decoder.join(prefilled.cache, self.cache, ahead=ahead)
        logits = prefilled.logits
        self.logits = logits if self.logits is None else torch.cat([self.logits, logits])
        self.rows += [_Row(job.key, job.params, Sampler(job.params), []) for job in jobs]

    @torch.inference_mode()
    def drop(self, leaving: Callable[[Hashable], bool]) -> int:
        """Remove the live rows whose key `leaving` picks (their request expired or was cancelled) before the
        next step; returns how many left."""
        alive = [not leaving(row.key) for row in self.rows]
        if all(alive):
            return 0
        order = self.cache.keep(alive)
        self.cache.trim()
        self.rows = [self.rows[i] for i in order]
        if self.logits is not None:
            self.logits = self.logits[order] if order else None
        return len(alive) - len(order)

    @torch.inference_mode()
    def step(self) -> list[tuple[Hashable, Generation]]:
        """Sample one token for every live row, retire the finished ones, decode one position for the rest."""
        if not self.rows:
            return []
        tokens = next_tokens(self.logits, [row.sampler for row in self.rows])
        finished, alive = [], []
        for row, token in zip(self.rows, tokens):
            if token != self.eos_token_id:
                row.tokens.append(token)
            finish = finish_reason(token, len(row.tokens), row.params, self.eos_token_id)
            if finish:
                finished.append((row.key, Generation(tuple(row.tokens), finish)))
            alive.append(finish is None)
        if not all(alive):
            order = self.cache.keep(alive)
            self.cache.trim()                     # the window need not reach back to rows that left
            self.rows, tokens = [self.rows[i] for i in order], [tokens[i] for i in order]
        self.logits = None
        if self.rows:
            self.cache.make_room(history=0, ahead=1)
            self.logits = self.decoder.step(torch.tensor(tokens, device=self.decoder.device), self.cache)
        return finished


class StaticBatch:
    """The fallback: rows admitted together decode to the end in one `decode` call at the next `step`."""

    def __init__(self, language_model: PreTrainedModel, eos_token_id: int, *, max_rows: int):
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.language_model, self.eos_token_id, self.max_rows = language_model, eos_token_id, max_rows
        self.rows: list[Job] = []

    @property
    def free_rows(self) -> int:
        return self.max_rows - len(self.rows)

    def admit(self, jobs: Sequence[Job]) -> None:
        if len(jobs) > self.free_rows:
            raise ValueError(f"cannot admit {len(jobs)} rows: {self.free_rows} of {self.max_rows} are free")
        self.rows += jobs

    def drop(self, leaving: Callable[[Hashable], bool]) -> int:
        """Remove the rows not decoded yet whose key `leaving` picks; a running `decode` cannot be left."""
        kept = [job for job in self.rows if not leaving(job.key)]
        dropped, self.rows = len(self.rows) - len(kept), kept
        return dropped

    def step(self) -> list[tuple[Hashable, Generation]]:
        jobs, self.rows = self.rows, []
        if not jobs:
            return []
        generations = decode(self.language_model, [j.prefix for j in jobs], [j.params for j in jobs],
                             self.eos_token_id)
        return [(job.key, generation) for job, generation in zip(jobs, generations)]
