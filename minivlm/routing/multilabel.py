"""The router's two outputs and what the generator reads from the second one.

`task_probs` is a calibrated softmax: exactly one task per query. `task_scores` holds an independent
probability per task ("does the query ask for this task?"); when two or more reach COMPOUND_MIN_SCORE the
query is compound ("describe the picture and find all the objects") and the generator answers each of them.
Torch-free, so the ONNX runtime path and the evaluation of served graphs can use it.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from vlm_client.protocol import TASKS

COMPOUND_MIN_SCORE = 0.5     # the generator's default compound_min_score


class RouterOutput(NamedTuple):
    probs: np.ndarray        # (B, len(TASKS)) calibrated softmax, rows sum to 1
    scores: np.ndarray       # (B, len(TASKS)) independent per-task probabilities


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def task_sets(scores: np.ndarray, *, threshold: float = COMPOUND_MIN_SCORE) -> list[tuple[str, ...]]:
    """The tasks each query asks for (score >= threshold), in TASKS order; may be empty."""
    return [tuple(t for t, hit in zip(TASKS, row) if hit) for row in scores >= threshold]


def is_compound(scores: np.ndarray, *, threshold: float = COMPOUND_MIN_SCORE) -> np.ndarray:
    """(B,) bool: two or more tasks reach the threshold."""
    return (scores >= threshold).sum(axis=-1) >= 2
