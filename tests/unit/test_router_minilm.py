"""MiniLM router: train on data/routing/train.jsonl, >= 98% on the hand-written held-out set, save/load, CLI."""
from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from minivlm.router.data import HELDOUT_PATH, TRAIN_PATH, load_examples
from minivlm.router.evaluate import evaluate_router, main
from minivlm.router.loading import load_router
from minivlm.router.train import train_minilm_router

REQUIRED_HELDOUT_ACCURACY = 0.98


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """About 15 s on 2 cores: the encoder is frozen, only the head trains."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("router") / "minilm"
    return train_minilm_router(folder, progress=False)


def test_heldout_accuracy(trained):
    report = evaluate_router(trained.output_dir, HELDOUT_PATH)
    assert report.accuracy >= REQUIRED_HELDOUT_ACCURACY, report.errors
    assert min(report.recall.values()) >= 0.95


def test_calibration_is_fitted_and_helps(trained):
    assert trained.temperature != 1.0 and trained.ece_after <= trained.ece_before
    assert trained.n_calibration > 0.15 * (trained.n_train + trained.n_calibration)


def test_heldout_and_train_sets_are_disjoint():
    norm = lambda t: "".join(c for c in t.lower() if c.isalnum())      # noqa: E731
    assert not {norm(t) for t in load_examples(TRAIN_PATH).texts} & {norm(t) for t in load_examples(HELDOUT_PATH).texts}
    assert len(load_examples(HELDOUT_PATH)) >= 150 and len(load_examples(TRAIN_PATH)) >= 900


def test_save_load_round_trip(trained):
    router = load_router(trained.output_dir)
    assert router.kind == "minilm" and router.temperature == pytest.approx(trained.temperature)
    probs = router.probs(["describe the picture", "how many dogs?", "detect objects with boxes"])
    np.testing.assert_array_equal(probs.argmax(axis=1), [0, 2, 1])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_training_is_seeded(trained, tmp_path):
    again = train_minilm_router(tmp_path / "again", progress=False)
    assert again.temperature == pytest.approx(trained.temperature, rel=1e-5)


def test_cli_router_eval_json(trained, capsys):
    assert main(["router-eval", str(trained.output_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= REQUIRED_HELDOUT_ACCURACY
