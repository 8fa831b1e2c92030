"""Routing data sets.

Single-task jsonl rows: {"text": query, "task": one of protocol.TASKS}.
Multi-label (compound) jsonl rows: {"text": query, "tasks": [one or more of protocol.TASKS]}.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlm_client.protocol import TASKS

REPO_ROOT = Path(__file__).resolve().parents[3]
TRAIN_PATH = REPO_ROOT / "data" / "routing" / "train.jsonl"
HELDOUT_PATH = REPO_ROOT / "data" / "routing" / "heldout.jsonl"
COMPOUND_TRAIN_PATH = REPO_ROOT / "data" / "routing" / "compound_train.jsonl"
COMPOUND_HELDOUT_PATH = REPO_ROOT / "data" / "routing" / "compound_heldout.jsonl"


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    labels: list[int]      # indices into TASKS

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class MultiLabelExamples:
    texts: list[str]
    targets: np.ndarray    # (N, len(TASKS)) float32, 1 where the query asks for the task

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def from_single_task(cls, examples: Examples) -> "MultiLabelExamples":
        return cls(list(examples.texts), np.eye(len(TASKS), dtype=np.float32)[examples.labels].reshape(-1, len(TASKS)))


def load_multilabel(path: str | Path) -> MultiLabelExamples:
    texts, targets = [], []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        tasks = row.get("tasks")
        if (not isinstance(row.get("text"), str) or not isinstance(tasks, list) or not tasks
                or any(t not in TASKS for t in tasks) or len(set(tasks)) != len(tasks)):
            raise ValueError(f"{path}:{line_no}: expected {{'text': str, 'tasks': distinct tasks from {TASKS}}}, "
                             f"got {row!r}")
        texts.append(row["text"])
        targets.append([float(t in tasks) for t in TASKS])
    return MultiLabelExamples(texts, np.asarray(targets, dtype=np.float32).reshape(-1, len(TASKS)))


def load_examples(path: str | Path) -> Examples:
    texts, labels = [], []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("task") not in TASKS or not isinstance(row.get("text"), str):
            raise ValueError(f"{path}:{line_no}: expected {{'text': str, 'task': one of {TASKS}}}, got {row!r}")
        texts.append(row["text"])
        labels.append(TASKS.index(row["task"]))
    return Examples(texts, labels)


def split_examples(examples: Examples, *, holdout_fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Stratified random split, so the calibration part has every task in proportion."""
    rng = random.Random(seed)
    first, second = [], []
    for task in range(len(TASKS)):
        idx = [i for i, label in enumerate(examples.labels) if label == task]
        rng.shuffle(idx)
        cut = round(len(idx) * holdout_fraction)
        second += idx[:cut]
        first += idx[cut:]
    pick = lambda ids: Examples([examples.texts[i] for i in ids], [examples.labels[i] for i in ids])  # noqa: E731
    return pick(sorted(first)), pick(sorted(second))
