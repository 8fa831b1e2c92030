"""The batched KV-cached decoder against the notebook's cache-free greedy loop, and its batching contract."""
from __future__ import annotations

import pytest
import torch

from minivlm.decoding.generate import decode, reference_greedy
from minivlm.decoding.sampling import Sampler, SamplingParams, top_p_filter

REQUESTS = [("caption", ""), ("od", ""), ("vqa", "what colour is the car?"),
            ("vqa", "How many people are there? Describe the image left to right.")]


@pytest.fixture(scope="module")
def prefixes(tiny_vlm):
    """One (N + T, D) prefix per request, each with its own image: prompt lengths differ."""
    pixels = torch.rand((len(REQUESTS), 3, 224, 224), generator=torch.Generator().manual_seed(1)) * 2 - 1
    embeds = tiny_vlm.encode_images(pixels)
    return [tiny_vlm.prefix(e, tiny_vlm.prompt_ids(task, q)) for e, (task, q) in zip(embeds, REQUESTS)]


def _decode(vlm, prefixes, params, eos=None):
    return decode(vlm.language_model, prefixes, params, vlm.eos_token_id if eos is None else eos)


def test_prefix_lengths_differ(prefixes):
    assert len({p.shape[0] for p in prefixes}) >= 3


def test_kv_cached_decode_equals_reference_greedy(tiny_vlm, prefixes):
    for prefix in prefixes:
        expected = reference_greedy(tiny_vlm.language_model, prefix, 16, tiny_vlm.eos_token_id)
        (got,) = _decode(tiny_vlm, [prefix], [SamplingParams(max_new_tokens=16)])
        assert got == expected
        assert len(set(got.token_ids)) > 1          # the tiny model's answers are not one repeated token


def test_request_decodes_the_same_alone_and_in_a_mixed_batch(tiny_vlm, prefixes):
    params = [SamplingParams(max_new_tokens=n) for n in (3, 16, 1, 9)]
    alone = [_decode(tiny_vlm, [p], [q])[0] for p, q in zip(prefixes, params)]
    batched = _decode(tiny_vlm, prefixes, params)
    assert batched == alone
    assert [len(g.token_ids) for g in batched] == [3, 16, 1, 9]
    assert {g.finish_reason for g in batched} == {"length"}
    assert _decode(tiny_vlm, prefixes[::-1], params[::-1]) == alone[::-1]     # order does not matter


def test_each_row_stops_at_its_own_eos(tiny_vlm, prefixes):
    """EOS := the third token request 0 emits, so that row stops early while the others run on."""
    first = reference_greedy(tiny_vlm.language_model, prefixes[0], 16, tiny_vlm.eos_token_id)
    eos = first.token_ids[2]
    expected = [reference_greedy(tiny_vlm.language_model, p, 12, eos) for p in prefixes]
    got = _decode(tiny_vlm, prefixes, [SamplingParams(max_new_tokens=12)] * len(prefixes), eos=eos)
    assert got == expected
    assert got[0].finish_reason == "stop" and got[0].token_ids == first.token_ids[:first.token_ids.index(eos)]
    assert any(g.finish_reason == "length" for g in got)          # other rows went on past row 0's stop


def test_eos_as_first_token_gives_an_empty_answer(tiny_vlm, prefixes):
    eos = reference_greedy(tiny_vlm.language_model, prefixes[1], 1, tiny_vlm.eos_token_id).token_ids[0]
    got = _decode(tiny_vlm, prefixes[:2], [SamplingParams(max_new_tokens=5)] * 2, eos=eos)
    assert got[1].token_ids == () and got[1].finish_reason == "stop"
    assert got[0] == reference_greedy(tiny_vlm.language_model, prefixes[0], 5, eos)


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(tiny_vlm, prefixes):
    sampled = SamplingParams(max_new_tokens=12, temperature=1.5, top_p=0.95, seed=1234)
    alone = _decode(tiny_vlm, [prefixes[2]], [sampled])[0]
    assert _decode(tiny_vlm, [prefixes[2]], [sampled]) == [alone]
    neighbours = [SamplingParams(max_new_tokens=4, temperature=1.0, seed=7), SamplingParams(max_new_tokens=16),
                  SamplingParams(max_new_tokens=2, temperature=0.7, seed=99)]
    batch = [neighbours[0], neighbours[1], sampled, neighbours[2]]
    assert _decode(tiny_vlm, prefixes, batch)[2] == alone
    others = {_decode(tiny_vlm, [prefixes[2]], [SamplingParams(12, 1.5, 0.95, seed)])[0].token_ids
              for seed in range(5)}
    assert len(others) > 1                                        # the seed actually changes the sample


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])                  # sorted: 0.5, 0.3 (crosses 0.7), 0.15, 0.05
    torch.testing.assert_close(top_p_filter(probs.clone(), 0.7), torch.tensor([0.0, 0.5, 0.0, 0.3]))
    torch.testing.assert_close(top_p_filter(probs.clone(), 0.4), torch.tensor([0.0, 0.5, 0.0, 0.0]))
    torch.testing.assert_close(top_p_filter(probs.clone(), 0.99), probs)


def test_sampler_with_top_p_never_draws_a_filtered_token():
    logits = torch.log(torch.tensor([0.15, 0.5, 0.05, 0.3]))
    sampler = Sampler(SamplingParams(max_new_tokens=1, temperature=1.0, top_p=0.7, seed=0))
    drawn = {sampler.next_token(logits) for _ in range(200)}
    assert drawn == {1, 3}
