"""Multi-label task scores: task sets, the compound flag, compound-set metrics and the multi-label jsonl format."""
from __future__ import annotations

import json

import numpy as np
import pytest

from minivlm.routing.multilabel import is_compound, task_sets
from vlm_tools.router_training.data import (
    COMPOUND_HELDOUT_PATH,
    COMPOUND_TRAIN_PATHS,
    HELDOUT_PATH,
    TRAIN_PATHS,
    Examples,
    MultiLabelExamples,
    load_examples,
    load_multilabel,
)
from vlm_tools.router_training.evaluate import evaluate_compound, evaluate_probs, format_compound_report, format_report

SCORES = np.array([[0.9, 0.6, 0.1], [0.2, 0.95, 0.3], [0.7, 0.8, 0.5], [0.4, 0.1, 0.2]])


def test_task_sets_and_compound_flag_use_the_generators_threshold():
    assert task_sets(SCORES) == [("caption", "od"), ("od",), ("caption", "od", "vqa"), ()]
    assert is_compound(SCORES).tolist() == [True, False, True, False]


def test_evaluate_compound_metrics():
    targets = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]], dtype=np.float32)
    report = evaluate_compound(SCORES, MultiLabelExamples(["a", "b", "c", "d"], targets))
    assert (report.n, report.n_compound, report.exact_accuracy) == (4, 2, 0.5)
    assert report.compound_precision == 0.5 and report.compound_recall == 0.5   # "c" single but flagged; "d" missed
    assert [e["text"] for e in report.errors] == ["c", "d"] and report.errors[0]["predicted"] == ["caption", "od", "vqa"]
    assert "exact task sets: 0.5000" in format_compound_report(report)


def test_single_task_report_counts_queries_flagged_compound():
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    report = evaluate_probs(probs, Examples(["a", "b", "c", "d"], [0, 1, 2, 0]), SCORES)
    assert report.flagged_compound == 0.5 and [f["text"] for f in report.flagged] == ["a", "c"]
    assert "flagged compound: 0.5000" in format_report(report)
    assert evaluate_probs(probs, Examples(["a", "b", "c", "d"], [0, 1, 2, 0])).flagged_compound == 0.0


def test_served_accuracy_counts_only_right_and_unflagged_queries():
    """The generator answers a flagged query with two or more tasks, so a right argmax is not enough."""
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])
    report = evaluate_probs(probs, Examples(["a", "b", "c", "d"], [0, 1, 2, 0]), SCORES)
    assert report.accuracy == 0.75 and report.served_accuracy == 0.25     # "a", "c" flagged; "d" wrong
    assert "served exactly this task: 0.2500" in format_report(report)
    assert evaluate_probs(probs, Examples(["a", "b", "c", "d"], [0, 1, 2, 0])).served_accuracy == 0.75


def test_load_multilabel(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "describe it and box the dogs", "tasks": ["od", "caption"]}\n\n'
                    '{"text": "is there a cat and a dog?", "tasks": ["vqa"]}\n')
    examples = load_multilabel(path)
    assert examples.texts[1] == "is there a cat and a dog?"
    np.testing.assert_array_equal(examples.targets, [[1, 1, 0], [0, 0, 1]])


@pytest.mark.parametrize("row", [{"text": "x", "tasks": []}, {"text": "x", "tasks": ["segment"]},
                                 {"text": "x", "tasks": ["od", "od"]}, {"text": "x", "task": "od"}, {"tasks": ["od"]}])
def test_load_multilabel_rejects_bad_rows(tmp_path, row):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "tasks": ["od"]}\n' + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_multilabel(path)


def test_compound_sets_are_disjoint_from_each_other_and_the_single_task_sets():
    norm = lambda t: "".join(c for c in t.lower() if c.isalnum())      # noqa: E731
    train = ({norm(t) for t in load_multilabel(COMPOUND_TRAIN_PATHS).texts}
             | {norm(t) for t in load_examples(TRAIN_PATHS).texts})
    heldout = {norm(t) for t in load_multilabel(COMPOUND_HELDOUT_PATH).texts} | {norm(t) for t in load_examples(HELDOUT_PATH).texts}
    assert not train & heldout


def test_compound_heldout_has_compounds_and_single_task_queries_that_join_things():
    heldout = load_multilabel(COMPOUND_HELDOUT_PATH)
    n_tasks = heldout.targets.sum(axis=1)
    singles = [t for t, n in zip(heldout.texts, n_tasks) if n == 1]
    assert len(heldout) >= 55 and (n_tasks >= 2).sum() >= 30 and (n_tasks == 3).sum() >= 3
    assert len(singles) >= 20 and all(" and " in t or " plus " in t or " as well as " in t for t in singles)
    assert heldout.targets[n_tasks == 1].sum(axis=0).min() >= 6          # negatives for every task
