"""Routing data sets: jsonl rows {"text": query, "task": one of protocol.TASKS}."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from vlm_client.protocol import TASKS

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_PATH = REPO_ROOT / "data" / "routing" / "train.jsonl"
HELDOUT_PATH = REPO_ROOT / "data" / "routing" / "heldout.jsonl"


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    labels: list[int]      # indices into TASKS

    def __len__(self) -> int:
        return len(self.texts)


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
