"""Continuous batching: rows admitted into a live cache decode exactly as they would alone."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from minivlm.decoding.batch import ContinuousBatch, Job, StaticBatch
from minivlm.decoding.generate import decode, left_pad, reference_greedy
from minivlm.decoding.llama_decoder import LlamaDecoder
from minivlm.decoding.sampling import SamplingParams
from minivlm.model.shapes import tiny_language_config

ATOL = 1e-5


@pytest.fixture(scope="module")
def lm() -> LlamaForCausalLM:
    """Logits of magnitude ~5: fp32 noise between a batch and a row alone stays a few 1e-6 (at the tiny
    config's 0.3 init, logits ~10, a plain static batch already differs from rows alone by up to 2e-5)."""
    config = tiny_language_config(256)
    config.initializer_range = 0.15
    torch.manual_seed(4)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def decoder(lm) -> LlamaDecoder:
    return LlamaDecoder.from_hf(lm)


def _prefixes(lm, lengths, seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return [lm.get_input_embeddings()(torch.randint(lm.config.vocab_size, (n,), generator=g)) for n in lengths]


def _alone(decoder, prefix, tokens) -> list[torch.Tensor]:
    """The row decoded by itself: prefill logits, then one step per teacher-forced token."""
    cache = decoder.new_cache(1, prefix.shape[0] + len(tokens))
    logits = [decoder.prefill(prefix[None], torch.ones(1, prefix.shape[0]), cache)[0]]
    for token in tokens:
        logits.append(decoder.step(torch.tensor([token]), cache)[0])
    return logits


def _admit(decoder, cache, prefixes, ahead=8) -> torch.Tensor:
    rows, logits = decoder.prefill_rows(*left_pad(prefixes))
    decoder.join(rows, cache, ahead=ahead)
    return logits


# --- the decoder: admission into a live cache -----------------------------------------------------------------
@pytest.mark.parametrize("late_lengths", [[3, 6], [40], [2, 45, 13]], ids=["shorter", "longer", "mixed"])
def test_admitted_rows_get_the_logits_they_get_alone(lm, decoder, late_lengths):
    """Rows join after 6 steps of a live batch whose column is 26: prompts shorter and longer than that."""
    early, late = _prefixes(lm, [9, 20], seed=1), _prefixes(lm, late_lengths, seed=2)
    cache = decoder.new_cache(6, 0, empty=True)
    logits = _admit(decoder, cache, early)
    history = [[] for _ in early + late]                        # the tokens each row was fed
    steps = [[row] for row in logits]                           # each row's logits, step by step

    def greedy_steps(count: int) -> None:
        for _ in range(count):
            cache.make_room(history=0, ahead=1)
            tokens = torch.stack([s[-1] for s in steps]).argmax(-1)
            for row, token in enumerate(tokens.tolist()):
                history[row].append(token)
            for row, out in enumerate(decoder.step(tokens, cache)):
                steps[row].append(out)

    greedy_steps(6)
    assert cache.length == 26
    for row, out in enumerate(_admit(decoder, cache, late)):
        steps.append([out])
    greedy_steps(5)
    for prefix, fed, got in zip(early + late, history, steps):
        expected = _alone(decoder, prefix, fed)
        assert len(got) == len(expected)
        assert max(float((g - e).abs().max()) for g, e in zip(got, expected)) < ATOL


def test_the_live_window_grows_trims_and_slides_back_without_changing_logits(lm, decoder):
    """A row runs 40 steps (the allocation doubles twice), a second joins, the first leaves (the window
    starts at the second's first column), and the second runs on until the window slides back to column 0."""
    first, second = _prefixes(lm, [5, 7], seed=3)
    cache = decoder.new_cache(2, 0, empty=True)
    _admit(decoder, cache, [first], ahead=1)                 # allocation 2 x (5 + 1) = 12
    assert (cache.start, cache.length, cache.capacity) == (0, 5, 12)
    log = []

    def step(tokens):
        cache.make_room(history=0, ahead=1)
        out = decoder.step(torch.tensor(tokens), cache)
        log.append((cache.start, cache.capacity))
        return out

    for _ in range(40):
        step([3])
    _admit(decoder, cache, [second], ahead=1)
    first_logits = step([3, 9])[0]
    assert float((first_logits - _alone(decoder, first, [3] * 41)[-1]).abs().max()) < ATOL
    assert cache.keep([False, True]) == [1]
    cache.trim()
    assert cache.start == 45 - 7                                # the second row's first column
    for _ in range(40):
        second_logits = step([9])[0]
    assert [c for _, c in log[:40]] != [12] * 40                # grew
    assert log[-1] == (0, 54) and max(s for s, _ in log) > 0     # slid back to 0 without growing again
    assert float((second_logits - _alone(decoder, second, [9] * 41)[-1]).abs().max()) < ATOL


def test_admission_beyond_the_free_rows_is_an_error(lm, decoder):
    cache = decoder.new_cache(2, 0, empty=True)
    _admit(decoder, cache, _prefixes(lm, [3, 4]))
    with pytest.raises(ValueError, match="2 of 2"):
        _admit(decoder, cache, _prefixes(lm, [3]))


# --- the scheduler's batch: whole generations -----------------------------------------------------------------
def _run(batch, arrivals: dict[int, list[Job]]) -> tuple[dict, list]:
    """Admit each step's arrivals (as free rows allow, first come first served) until everything finished."""
    waiting, results, order, step = [], {}, [], 0
    while step <= max(arrivals) or waiting or batch.rows:
        waiting += arrivals.get(step, [])
        admitted, waiting = waiting[:batch.free_rows], waiting[batch.free_rows:]
        batch.admit(admitted)
        for key, generation in batch.step():
            results[key] = generation
            order.append(key)
        step += 1
    return results, order


def test_continuous_batch_gives_every_request_its_greedy_answer(lm, decoder):
    """Rows join mid-decode with prompts shorter and longer than the live column, finish at different steps
    (limits, and an EOS), and wait for a free row when the batch is full."""
    lengths = [9, 30, 4, 17, 60, 11, 2, 25]
    limits = [12, 3, 15, 10, 6, 1, 20, 8]
    prefixes = _prefixes(lm, lengths, seed=5)
    eos = reference_greedy(lm, prefixes[3], 4, eos_token_id=-1).token_ids[3]         # row 3 stops by step 4
    jobs = [Job(i, p, SamplingParams(max_new_tokens=n)) for i, (p, n) in enumerate(zip(prefixes, limits))]
    arrivals = {0: jobs[:2], 2: jobs[2:4], 5: [jobs[4]], 6: jobs[5:7], 9: [jobs[7]]}
    results, order = _run(ContinuousBatch(decoder, eos, max_rows=4), arrivals)
    expected = [reference_greedy(lm, p, n, eos) for p, n in zip(prefixes, limits)]
    assert [results[i] for i in range(len(jobs))] == expected
    assert [results[i] for i in range(len(jobs))] == decode(lm, prefixes, [j.params for j in jobs], eos)
    assert results[3].finish_reason == "stop"
    assert order.index(1) < order.index(0)                    # the short request left first
    assert order.index(5) < order.index(4)                    # a late one-token request overtook a long one


def test_sampled_rows_are_reproducible_by_seed_whatever_joins_them(lm, decoder):
    prefixes = _prefixes(lm, [8, 14, 5], seed=6)
    params = [SamplingParams(12, temperature=1.0, top_p=0.9, seed=s) for s in (1, 2, 3)]
    alone = [decode(lm, [p], [q], -1)[0] for p, q in zip(prefixes, params)]
    jobs = [Job(i, p, q) for i, (p, q) in enumerate(zip(prefixes, params))]
    results, _ = _run(ContinuousBatch(decoder, -1, max_rows=3), {0: [jobs[0]], 3: [jobs[1]], 4: [jobs[2]]})
    assert [results[i] for i in range(3)] == alone
    assert len({g.token_ids for g in alone}) == 3


def test_static_batch_decodes_its_rows_to_the_end_at_once(lm):
    prefixes = _prefixes(lm, [6, 13], seed=7)
    jobs = [Job(i, p, SamplingParams(n)) for i, (p, n) in enumerate(zip(prefixes, (4, 9)))]
    batch = StaticBatch(lm, -1, max_rows=2)
    batch.admit(jobs)
    assert batch.free_rows == 0
    results = dict(batch.step())
    assert [results[0], results[1]] == [reference_greedy(lm, p, n, -1) for p, n in zip(prefixes, (4, 9))]
    assert batch.free_rows == 2 and batch.step() == []


def test_dropped_rows_leave_before_the_next_step_and_the_others_decode_as_alone(lm, decoder):
    prefixes = _prefixes(lm, [7, 12, 5], seed=8)
    batch = ContinuousBatch(decoder, -1, max_rows=3)
    batch.admit([Job(i, p, SamplingParams(max_new_tokens=10)) for i, p in enumerate(prefixes)])
    for _ in range(3):
        assert batch.step() == []
    assert batch.drop(lambda key: key == 0) == 1                  # the first row: the last one moves into it
    assert batch.drop(lambda key: key == 0) == 0 and batch.free_rows == 1
    results = {}
    while batch.rows:
        results.update(batch.step())
    assert results == {i: reference_greedy(lm, prefixes[i], 10, -1) for i in (1, 2)}
