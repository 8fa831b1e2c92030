"""Detection and caption metrics: IoU, label F1, mAP at an IoU threshold (VOC all-point AP), caption objects."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vlm_tools.demo.scenes import COLOURS, SHAPES

Box = Sequence[float]      # x, y, w, h


@dataclass(frozen=True)
class Detection:
    label: str
    bbox: tuple[float, float, float, float]
    score: float = 1.0


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter_w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    inter_h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = inter_w * inter_h
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def f1_counts(predicted: Sequence[str], expected: Sequence[str]) -> tuple[int, int, int]:
    """(true positives, predicted count, expected count) of two label multisets."""
    overlap = Counter(predicted) & Counter(expected)
    return sum(overlap.values()), len(predicted), len(expected)


def f1_score(true_positives: int, predicted: int, expected: int) -> float:
    if predicted + expected == 0:
        return 1.0
    return 2 * true_positives / (predicted + expected)


def mean_average_precision(predictions: Sequence[Sequence[Detection]], truths: Sequence[Sequence[Detection]],
                           *, iou_threshold: float = 0.5) -> float:
    """Mean over the classes that have ground truth of each class's AP; one list of each per image."""
    classes = sorted({d.label for image in truths for d in image})
    if not classes:
        return float("nan")
    return float(np.mean([average_precision(predictions, truths, label, iou_threshold) for label in classes]))


def average_precision(predictions, truths, label: str, iou_threshold: float) -> float:
    """Greedy matching by descending score (each truth matched once), then the area under the
    precision envelope over recall (VOC 2010+ all-point interpolation)."""
    ranked = sorted(((d.score, i, d) for i, image in enumerate(predictions) for d in image if d.label == label),
                    key=lambda item: -item[0])
    wanted = {i: [d.bbox for d in image if d.label == label] for i, image in enumerate(truths)}
    total = sum(len(boxes) for boxes in wanted.values())
    used = {i: [False] * len(boxes) for i, boxes in wanted.items()}
    hits = [_match(d.bbox, wanted.get(i, []), used.get(i, []), iou_threshold) for _, i, d in ranked]
    return _area(np.array(hits, dtype=bool), total)


def _match(box: Box, candidates: list, used: list, iou_threshold: float) -> bool:
    overlaps = [iou(box, c) if not taken else -1.0 for c, taken in zip(candidates, used)]
    if not overlaps or max(overlaps) < iou_threshold:
        return False
    used[int(np.argmax(overlaps))] = True
    return True


def _area(hits: np.ndarray, total: int) -> float:
    if total == 0 or len(hits) == 0:
        return 0.0
    true_positives = np.cumsum(hits)
    recall = np.concatenate([[0.0], true_positives / total])
    precision = true_positives / np.arange(1, len(hits) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]        # best precision at this recall or beyond
    return float(np.sum(np.diff(recall) * envelope))


_OBJECT_PATTERN = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")


def caption_objects(text: str) -> list[str]:
    """The "colour shape" names a caption mentions, e.g. ["red circle", "blue square"]."""
    return [f"{colour} {shape}" for colour, shape in _OBJECT_PATTERN.findall(text)]
