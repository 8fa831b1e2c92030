"""Temperature fitting, ECE, evaluation metrics and data loading."""
from __future__ import annotations

import numpy as np
import pytest

from minivlm.routing.calibration import expected_calibration_error, fit_temperature, softmax
from vlm_tools.router_training.data import Examples, load_examples, split_examples
from vlm_tools.router_training.evaluate import evaluate_probs, format_report


def test_fit_temperature_recovers_the_scale_of_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 3)) * 2.0
    labels = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    assert fit_temperature(true_logits * 3.0, labels) == pytest.approx(3.0, rel=0.1)


def test_temperature_scaling_lowers_ece_of_miscalibrated_logits():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(size=(4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    t = fit_temperature(true_logits * 4.0, labels)
    assert expected_calibration_error(softmax(true_logits * 4.0, t), labels) < \
        expected_calibration_error(softmax(true_logits * 4.0), labels) / 3


def test_ece_of_known_cases():
    confident_right = np.array([[1.0, 0.0, 0.0]] * 10)
    assert expected_calibration_error(confident_right, np.zeros(10, int)) == pytest.approx(0.0)
    assert expected_calibration_error(confident_right, np.ones(10, int)) == pytest.approx(1.0)
    half = np.array([[0.55, 0.45, 0.0]] * 10)                      # 55% confident, 50% right
    assert expected_calibration_error(half, np.array([0, 1] * 5)) == pytest.approx(0.05)


def test_evaluate_probs_metrics():
    examples = Examples(["a", "b", "c", "d"], [0, 0, 1, 2])
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.0, 0.1, 0.9]])
    report = evaluate_probs(probs, examples)
    assert report.accuracy == 0.75 and report.confusion == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert report.precision == {"caption": 1.0, "od": 0.5, "vqa": 1.0}
    assert report.recall == {"caption": 0.5, "od": 1.0, "vqa": 1.0}
    assert report.errors == [{"text": "b", "task": "caption", "predicted": "od", "confidence": 0.7}]
    assert "misrouted" in format_report(report)


def test_load_examples_rejects_unknown_task(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "hi", "task": "caption"}\n{"text": "x", "task": "segment"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_examples(path)


def test_split_is_stratified_and_disjoint():
    examples = Examples([str(i) for i in range(30)], [i % 3 for i in range(30)])
    first, second = split_examples(examples, holdout_fraction=0.2, seed=0)
    assert sorted(second.labels) == [0, 0, 1, 1, 2, 2] and not set(first.texts) & set(second.texts)
