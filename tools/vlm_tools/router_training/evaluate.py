"""Evaluate a router on jsonl sets.

Single-task set: accuracy, per-task precision/recall, confusion matrix, ECE, and how many queries the task
scores wrongly flag as compound. Compound set (multi-label rows): exact task-set accuracy and precision/recall
of "is compound". Works on a notebook `task_classifier.pt`, a MiniLM router folder, or an exported `.onnx`
graph (with the tokenizer folder written beside it), so the served artifact is measured the same way as its source.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from minivlm.routing.calibration import expected_calibration_error
from minivlm.routing.multilabel import RouterOutput, is_compound, task_sets
from vlm_client.protocol import TASKS
from vlm_tools.router_training.data import (
    COMPOUND_HELDOUT_PATH,
    HELDOUT_PATH,
    Examples,
    MultiLabelExamples,
    load_examples,
    load_multilabel,
)

Predictor = Callable[[list[str]], RouterOutput]      # texts -> (probs, scores), each (N, len(TASKS))


@dataclass(frozen=True)
class EvalReport:
    n: int
    accuracy: float
    precision: dict[str, float]
    recall: dict[str, float]
    confusion: list[list[int]]          # rows: true task, columns: predicted task, in TASKS order
    ece: float
    errors: list[dict] = field(default_factory=list)   # {"text", "task", "predicted", "confidence"}
    flagged_compound: float = 0.0       # fraction of these single-task queries with >= 2 task scores >= 0.5
    flagged: list[dict] = field(default_factory=list)  # {"text", "task", "scores"}
    served_accuracy: float = 0.0        # what the generator answers is exactly the task: right and not flagged


@dataclass(frozen=True)
class CompoundReport:
    n: int
    n_compound: int                     # rows asking for two or more tasks
    exact_accuracy: float               # predicted task set (scores >= 0.5) == the row's tasks
    compound_precision: float           # of the rows flagged compound, the share that are
    compound_recall: float              # of the compound rows, the share flagged
    errors: list[dict] = field(default_factory=list)   # {"text", "tasks", "predicted", "scores"}


def load_predictor(path: str | Path, *, tokenizer_dir: str | Path | None = None) -> Predictor:
    if Path(path).suffix == ".onnx":
        from minivlm.routing.onnx_runtime import OnnxRouter  # torch-free path for served graphs

        return OnnxRouter(path, tokenizer_dir).predict
    from minivlm.routing.loading import load_router

    return load_router(path, tokenizer_dir=tokenizer_dir).predict


def evaluate_probs(probs: np.ndarray, examples: Examples, scores: np.ndarray | None = None) -> EvalReport:
    """`scores` None: no compound check (flagged_compound 0)."""
    labels, predicted = np.asarray(examples.labels), probs.argmax(axis=-1)
    confusion = np.zeros((len(TASKS), len(TASKS)), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    diagonal = np.diag(confusion).astype(np.float64)
    precision = diagonal / np.maximum(confusion.sum(axis=0), 1)    # 0 where a task is never predicted
    recall = diagonal / np.maximum(confusion.sum(axis=1), 1)
    errors = [{"text": examples.texts[i], "task": TASKS[labels[i]], "predicted": TASKS[predicted[i]],
               "confidence": float(probs[i].max())} for i in np.flatnonzero(labels != predicted)]
    flags = np.zeros(len(labels), bool) if scores is None else is_compound(scores)
    flagged = [{"text": examples.texts[i], "task": TASKS[labels[i]], "scores": _rounded(scores[i])}
               for i in np.flatnonzero(flags)]
    served = float(((labels == predicted) & ~flags).mean()) if len(flags) else 0.0
    return EvalReport(len(labels), float((labels == predicted).mean()), dict(zip(TASKS, precision.tolist())),
                      dict(zip(TASKS, recall.tolist())), confusion.tolist(),
                      expected_calibration_error(probs, labels), errors, float(flags.mean()) if len(flags) else 0.0,
                      flagged, served)


def evaluate_compound(scores: np.ndarray, examples: MultiLabelExamples) -> CompoundReport:
    truth = examples.targets == 1
    want, got = task_sets(examples.targets), task_sets(scores)
    exact = np.array([w == g for w, g in zip(want, got)])
    flagged, compound = is_compound(scores), truth.sum(axis=1) >= 2
    errors = [{"text": examples.texts[i], "tasks": list(want[i]), "predicted": list(got[i]),
               "scores": _rounded(scores[i])} for i in np.flatnonzero(~exact)]
    return CompoundReport(len(exact), int(compound.sum()), float(exact.mean()) if len(exact) else 0.0,
                          _share(flagged & compound, flagged), _share(flagged & compound, compound), errors)


def _share(hits: np.ndarray, of: np.ndarray) -> float:
    return float(hits.sum() / of.sum()) if of.sum() else 0.0


def _rounded(row: np.ndarray) -> dict[str, float]:
    return {t: round(float(s), 3) for t, s in zip(TASKS, row)}


def evaluate_router(path: str | Path, data_path: str | Path = HELDOUT_PATH, *,
                    tokenizer_dir: str | Path | None = None) -> EvalReport:
    examples = load_examples(data_path)
    probs, scores = load_predictor(path, tokenizer_dir=tokenizer_dir)(examples.texts)
    return evaluate_probs(probs, examples, scores)


def evaluate_compound_router(path: str | Path, data_path: str | Path = COMPOUND_HELDOUT_PATH, *,
                             tokenizer_dir: str | Path | None = None) -> CompoundReport:
    examples = load_multilabel(data_path)
    return evaluate_compound(load_predictor(path, tokenizer_dir=tokenizer_dir)(examples.texts).scores, examples)


def format_report(report: EvalReport) -> str:
    lines = [f"examples: {report.n}   accuracy: {report.accuracy:.4f}   ECE: {report.ece:.4f}   "
             f"flagged compound: {report.flagged_compound:.4f}   served exactly this task: "
             f"{report.served_accuracy:.4f}", "",
             f"{'task':<10}{'precision':>10}{'recall':>10}"]
    lines += [f"{t:<10}{report.precision[t]:>10.4f}{report.recall[t]:>10.4f}" for t in TASKS]
    lines += ["", "confusion (rows: true, columns: predicted)", " " * 10 + "".join(f"{t:>9}" for t in TASKS)]
    lines += [f"{t:<10}" + "".join(f"{c:>9}" for c in row) for t, row in zip(TASKS, report.confusion)]
    if report.errors:
        lines += ["", "misrouted:"] + [f"  [{e['task']} -> {e['predicted']} @ {e['confidence']:.2f}] {e['text']}"
                                       for e in report.errors]
    if report.flagged:
        lines += ["", "single-task queries flagged compound:"] + [f"  [{e['task']}] {e['scores']} {e['text']}"
                                                                   for e in report.flagged]
    return "\n".join(lines)


def format_compound_report(report: CompoundReport) -> str:
    lines = [f"compound set: {report.n} rows ({report.n_compound} compound)   exact task sets: "
             f"{report.exact_accuracy:.4f}   is-compound precision: {report.compound_precision:.4f}   "
             f"recall: {report.compound_recall:.4f}"]
    if report.errors:
        lines += ["wrong task sets:"] + [f"  {'+'.join(e['tasks'])} -> {'+'.join(e['predicted']) or '-'} "
                                         f"{e['scores']} {e['text']}" for e in report.errors]
    return "\n".join(lines)

