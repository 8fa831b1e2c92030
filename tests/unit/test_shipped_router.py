"""The router shipped in minivlm/routing/minilm_router/: its files are the ones its README records, and it
routes the held-out sets as the README says."""
from __future__ import annotations

import hashlib
import re

import pytest

from minivlm.routing.loading import load_router
from minivlm.routing.minilm import SHIPPED_ROUTER, packaged_encoder_sha256
from minivlm.routing.multilabel import task_sets
from vlm_client.protocol import TASKS
from vlm_tools.router_training.data import COMPOUND_HELDOUT_PATH, HELDOUT_PATH, load_examples, load_multilabel
from vlm_tools.router_training.evaluate import evaluate_compound, evaluate_probs

DATA = HELDOUT_PATH.parent


def test_every_file_has_the_sha256_its_readme_records():
    recorded = dict(re.findall(r"\| `([\w.]+)` \| `([0-9a-f]{64})` \|", (SHIPPED_ROUTER / "README.md").read_text()))
    files = {p.name for p in SHIPPED_ROUTER.iterdir()} - {"README.md"}
    assert set(recorded) == files
    for name, digest in recorded.items():
        assert hashlib.sha256((SHIPPED_ROUTER / name).read_bytes()).hexdigest() == digest, name


def test_it_names_the_installed_packaged_encoder_and_drops_ruled_out_clauses():
    config = (SHIPPED_ROUTER / "router.json").read_text()
    assert f'"encoder_sha256": "{packaged_encoder_sha256()}"' in config and '"drop_ruled_out": true' in config


@pytest.fixture(scope="module")
def router():
    return load_router(SHIPPED_ROUTER)


# (file, accuracy, recall per class (caption, od, vqa), most ECE, served) as the README records them; the
# target (>= 99% per class on a fresh set) is not met on sets 7 and 8, so these floors are what was measured.
RECORDED = [
    (HELDOUT_PATH, 1.0, (1.0, 1.0, 1.0), 0.01, 1.0),
    (DATA / "heldout_styles.jsonl", 1.0, (1.0, 1.0, 1.0), 0.01, 1.0),
    (DATA / "heldout_styles_2.jsonl", 1.0, (1.0, 1.0, 1.0), 0.01, 1.0),
    (DATA / "heldout_styles_3.jsonl", 1.0, (1.0, 1.0, 1.0), 0.01, 1.0),
    (DATA / "heldout_styles_4.jsonl", 1.0, (1.0, 1.0, 1.0), 0.01, 0.9967),
    (DATA / "heldout_styles_5.jsonl", 0.995, (1.0, 1.0, 0.985), 0.01, 0.995),
    (DATA / "heldout_styles_6.jsonl", 1.0, (1.0, 1.0, 1.0), 0.01, 0.9967),
    (DATA / "heldout_styles_7.jsonl", 0.985, (0.98, 0.995, 0.98), 0.01, 0.97),
    (DATA / "heldout_styles_8.jsonl", 0.97, (0.95, 0.98, 0.98), 0.015, 0.9617),
]
# (file, exact task sets); every set's is-compound precision is 1.0
RECORDED_COMPOUND = [(COMPOUND_HELDOUT_PATH, 1.0), (DATA / "compound_heldout_2.jsonl", 0.9667),
                     (DATA / "compound_heldout_3.jsonl", 0.9333), (DATA / "compound_heldout_4.jsonl", 0.95),
                     (DATA / "compound_heldout_5.jsonl", 0.82), (DATA / "compound_heldout_6.jsonl", 0.9),
                     (DATA / "compound_heldout_7.jsonl", 0.76), (DATA / "compound_heldout_8.jsonl", 0.88)]


@pytest.mark.parametrize("path, accuracy, recall, ece, served", RECORDED, ids=lambda v: getattr(v, "name", None))
def test_it_routes_the_held_out_sets_as_recorded(router, path, accuracy, recall, ece, served):
    examples = load_examples(path)
    output = router.predict(examples.texts)
    report = evaluate_probs(output.probs, examples, output.scores)
    assert report.accuracy >= accuracy - 1e-4 and report.ece <= ece, report.errors
    assert report.served_accuracy >= served - 1e-3, report.flagged
    assert all(r >= want - 1e-4 for r, want in zip(report.recall.values(), recall)), report.recall


@pytest.mark.parametrize("path, exact", RECORDED_COMPOUND, ids=lambda v: getattr(v, "name", None))
def test_it_finds_the_compound_task_sets_as_recorded(router, path, exact):
    compound = load_multilabel(path)
    report = evaluate_compound(router.predict(compound.texts).scores, compound)
    assert report.exact_accuracy >= exact - 1e-4 and report.compound_precision == 1.0, report.errors


def test_issue_13_examples(router):
    """The compound query of issue 13, a negation and key-word typos its first styles set missed."""
    texts = ["describe the picture and tell me how many triangles there are", "Skip the caption. Run detection.",
             "descirbe the picture", "detcet all the objects", "Rather than boxes, just give me the count of cars."]
    output = router.predict(texts)
    assert task_sets(output.scores)[0] == ("caption", "vqa")
    assert [TASKS[i] for i in output.probs[1:].argmax(axis=1)] == ["od", "caption", "od", "vqa"]
