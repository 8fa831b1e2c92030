"""Routing data sets.

Single-task jsonl rows: {"text": query, "task": one of protocol.TASKS}.
Multi-label (compound) jsonl rows: {"text": query, "tasks": [one or more of protocol.TASKS]}.

The router trains on two kinds of file: generated (`train.jsonl`, `compound_train.jsonl`, from the seeded
templates beside them) and hand-written (`written_train.jsonl`, `written_compound_train.jsonl`: the phrasing
of real users that templates do not reach). The held-out sets are written separately and share no query with
either (a test checks, after normalising case and punctuation).
"""
from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlm_client.protocol import TASKS

REPO_ROOT = Path(__file__).resolve().parents[3]
TRAIN_PATH = REPO_ROOT / "data" / "routing" / "train.jsonl"
HELDOUT_PATH = REPO_ROOT / "data" / "routing" / "heldout.jsonl"
COMPOUND_TRAIN_PATH = REPO_ROOT / "data" / "routing" / "compound_train.jsonl"
COMPOUND_HELDOUT_PATH = REPO_ROOT / "data" / "routing" / "compound_heldout.jsonl"
WRITTEN_TRAIN_PATH = REPO_ROOT / "data" / "routing" / "written_train.jsonl"
WRITTEN_COMPOUND_TRAIN_PATH = REPO_ROOT / "data" / "routing" / "written_compound_train.jsonl"
TRAIN_PATHS = (TRAIN_PATH, WRITTEN_TRAIN_PATH)
COMPOUND_TRAIN_PATHS = (COMPOUND_TRAIN_PATH, WRITTEN_COMPOUND_TRAIN_PATH)
Paths = str | Path | Sequence[str | Path]


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


def _lines(paths: Paths):
    """(path, line number, line) of every non-blank line of one file or of several, in order."""
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        for line_no, line in enumerate(Path(path).read_text().splitlines(), start=1):
            if line.strip():
                yield path, line_no, line


def load_multilabel(paths: Paths) -> MultiLabelExamples:
    """One file's rows, or several files' rows one after the other."""
    texts, targets = [], []
    for path, line_no, line in _lines(paths):
        row = json.loads(line)
        tasks = row.get("tasks")
        if (not isinstance(row.get("text"), str) or not isinstance(tasks, list) or not tasks
                or any(t not in TASKS for t in tasks) or len(set(tasks)) != len(tasks)):
            raise ValueError(f"{path}:{line_no}: expected {{'text': str, 'tasks': distinct tasks from {TASKS}}}, "
                             f"got {row!r}")
        texts.append(row["text"])
        targets.append([float(t in tasks) for t in TASKS])
    return MultiLabelExamples(texts, np.asarray(targets, dtype=np.float32).reshape(-1, len(TASKS)))


def load_examples(paths: Paths) -> Examples:
    """One file's rows, or several files' rows one after the other."""
    texts, labels = [], []
    for path, line_no, line in _lines(paths):
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
