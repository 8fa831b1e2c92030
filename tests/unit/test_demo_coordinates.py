"""Distance-aware coordinate targets: a Gaussian over neighbour values, one-hot for every other token."""
from __future__ import annotations

import pytest
import torch

from minivlm.model.factory import train_tokenizer
from vlm_tools.demo.coordinates import CoordinateTargets

CORPUS = [" ".join(f"0.{v:02d}" for v in range(100))] * 3 + ["yes no red circle"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, 400)


def test_coordinate_tokens_get_a_gaussian_peaked_on_their_value(tokenizer):
    targets = CoordinateTargets(tokenizer, sigma=1.0)
    token_32 = tokenizer.get_vocab()["32"]
    probs = targets.soft(torch.tensor([token_32]))[0]
    by_value = {v: float(probs[tokenizer.get_vocab()[f"{v:02d}"]]) for v in range(28, 37)}
    assert probs.sum() == pytest.approx(1.0)
    assert max(by_value, key=by_value.get) == 32
    assert by_value[31] == pytest.approx(by_value[33]) and by_value[31] > by_value[30] > by_value[28] >= 0


def test_other_tokens_stay_one_hot(tokenizer):
    targets = CoordinateTargets(tokenizer, sigma=1.0)
    ids = torch.tensor(tokenizer("yes")["input_ids"] + [tokenizer.eos_token_id])
    assert torch.equal(targets.soft(ids), torch.nn.functional.one_hot(ids, len(tokenizer)).float())
