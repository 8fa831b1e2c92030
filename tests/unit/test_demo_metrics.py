"""mAP, F1 and caption parsing on hand-made cases whose answers are worked out by hand."""
from __future__ import annotations

import math

import pytest

from vlm_tools.demo.metrics import (
    Detection,
    average_precision,
    caption_objects,
    f1_counts,
    f1_score,
    iou,
    mean_average_precision,
)

BOX = (0.1, 0.1, 0.2, 0.2)
SHIFTED = (0.2, 0.1, 0.2, 0.2)          # half of BOX's width: IoU = 0.02 / 0.06 = 1/3
FAR = (0.6, 0.6, 0.2, 0.2)


def test_iou():
    assert iou(BOX, BOX) == pytest.approx(1.0)
    assert iou(BOX, SHIFTED) == pytest.approx(1 / 3)
    assert iou(BOX, FAR) == 0.0
    assert iou(BOX, (0.15, 0.15, 0.1, 0.1)) == pytest.approx(0.01 / 0.04)


def test_perfect_detections_score_one():
    truth = [[Detection("red circle", BOX)], [Detection("blue square", FAR), Detection("red circle", SHIFTED)]]
    assert mean_average_precision(truth, truth) == pytest.approx(1.0)


def test_wrong_label_or_poor_overlap_scores_zero():
    truth = [[Detection("red circle", BOX)]]
    assert mean_average_precision([[Detection("blue circle", BOX)]], truth) == 0.0
    assert mean_average_precision([[Detection("red circle", SHIFTED)]], truth) == 0.0
    assert mean_average_precision([[Detection("red circle", SHIFTED)]], truth, iou_threshold=0.3) == 1.0


def test_half_recall_gives_half_ap():
    truth = [[Detection("a", BOX)], [Detection("a", FAR)]]
    assert mean_average_precision([[Detection("a", BOX)], []], truth) == pytest.approx(0.5)


def test_a_false_positive_ranked_first_costs_precision():
    # ranked: miss (0.9), hit (0.8) -> precision 1/2 at recall 1 -> AP 0.5
    truth = [[Detection("a", BOX)]]
    predicted = [[Detection("a", FAR, 0.9), Detection("a", BOX, 0.8)]]
    assert average_precision(predicted, truth, "a", 0.5) == pytest.approx(0.5)
    # ranked last, the false positive does not lower the envelope: AP 1
    predicted = [[Detection("a", FAR, 0.1), Detection("a", BOX, 0.8)]]
    assert average_precision(predicted, truth, "a", 0.5) == pytest.approx(1.0)


def test_a_duplicate_counts_once():
    truth = [[Detection("a", BOX)], [Detection("a", FAR)]]
    predicted = [[Detection("a", BOX, 0.9), Detection("a", BOX, 0.8)], [Detection("a", FAR, 0.7)]]
    # hit, duplicate (miss), hit: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> envelope 1, 2/3 -> AP 5/6
    assert average_precision(predicted, truth, "a", 0.5) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_map_averages_the_classes_with_ground_truth():
    truth = [[Detection("a", BOX), Detection("b", FAR)]]
    predicted = [[Detection("a", BOX), Detection("c", SHIFTED)]]    # class c has no truth: not averaged
    assert mean_average_precision(predicted, truth) == pytest.approx(0.5)
    assert math.isnan(mean_average_precision(predicted, [[]]))


def test_label_f1():
    counts = f1_counts(["a", "a", "b"], ["a", "b", "c"])
    assert counts == (2, 3, 3)
    assert f1_score(*counts) == pytest.approx(2 / 3)
    assert f1_score(0, 0, 0) == 1.0


def test_caption_objects():
    text = "a small red circle, a large blue square and a small green triangle on a dark background"
    assert caption_objects(text) == ["red circle", "blue square", "green triangle"]
    assert caption_objects("a red circles and a pink square") == []
