"""Evaluate a router on a jsonl set: accuracy, per-task precision/recall, confusion matrix, ECE.

Works on a notebook `task_classifier.pt`, a MiniLM router folder, or an exported `.onnx` graph (with the
tokenizer folder written beside it), so the served artifact is measured the same way as its source.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from minivlm.router.calibration import expected_calibration_error
from minivlm.router.data import HELDOUT_PATH, Examples, load_examples
from vlm_client.protocol import TASKS

Predictor = Callable[[list[str]], np.ndarray]      # texts -> probabilities (N, len(TASKS))


@dataclass(frozen=True)
class EvalReport:
    n: int
    accuracy: float
    precision: dict[str, float]
    recall: dict[str, float]
    confusion: list[list[int]]          # rows: true task, columns: predicted task, in TASKS order
    ece: float
    errors: list[dict] = field(default_factory=list)   # {"text", "task", "predicted", "confidence"}


def load_predictor(path: str | Path, *, tokenizer_dir: str | Path | None = None) -> Predictor:
    if Path(path).suffix == ".onnx":
        from minivlm.router.onnx_runtime import OnnxRouter   # torch-free path for served graphs

        return OnnxRouter(path, tokenizer_dir).probs
    from minivlm.router.loading import load_router

    return load_router(path, tokenizer_dir=tokenizer_dir).probs


def evaluate_probs(probs: np.ndarray, examples: Examples) -> EvalReport:
    labels, predicted = np.asarray(examples.labels), probs.argmax(axis=-1)
    confusion = np.zeros((len(TASKS), len(TASKS)), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    diagonal = np.diag(confusion).astype(np.float64)
    precision = diagonal / np.maximum(confusion.sum(axis=0), 1)    # 0 where a task is never predicted
    recall = diagonal / np.maximum(confusion.sum(axis=1), 1)
    errors = [{"text": examples.texts[i], "task": TASKS[labels[i]], "predicted": TASKS[predicted[i]],
               "confidence": float(probs[i].max())} for i in np.flatnonzero(labels != predicted)]
    return EvalReport(len(labels), float((labels == predicted).mean()), dict(zip(TASKS, precision.tolist())),
                      dict(zip(TASKS, recall.tolist())), confusion.tolist(),
                      expected_calibration_error(probs, labels), errors)


def evaluate_router(path: str | Path, data_path: str | Path = HELDOUT_PATH, *,
                    tokenizer_dir: str | Path | None = None) -> EvalReport:
    examples = load_examples(data_path)
    return evaluate_probs(load_predictor(path, tokenizer_dir=tokenizer_dir)(examples.texts), examples)


def format_report(report: EvalReport) -> str:
    lines = [f"examples: {report.n}   accuracy: {report.accuracy:.4f}   ECE: {report.ece:.4f}", "",
             f"{'task':<10}{'precision':>10}{'recall':>10}"]
    lines += [f"{t:<10}{report.precision[t]:>10.4f}{report.recall[t]:>10.4f}" for t in TASKS]
    lines += ["", "confusion (rows: true, columns: predicted)", " " * 10 + "".join(f"{t:>9}" for t in TASKS)]
    lines += [f"{t:<10}" + "".join(f"{c:>9}" for c in row) for t, row in zip(TASKS, report.confusion)]
    if report.errors:
        lines += ["", "misrouted:"] + [f"  [{e['task']} -> {e['predicted']} @ {e['confidence']:.2f}] {e['text']}"
                                       for e in report.errors]
    return "\n".join(lines)


# The CLI lives in cli.py; re-exported so `minivlm.router.evaluate` offers the documented entry points.
from minivlm.router.cli import add_router_subcommands, main  # noqa: E402,F401
