"""The router shipped in minivlm/routing/minilm_router/: its files are the ones its README records, and it
routes the held-out sets as the README says."""
from __future__ import annotations

import hashlib
import re

import pytest

from minivlm.routing.loading import load_router
from minivlm.routing.minilm import SHIPPED_ROUTER, packaged_encoder_sha256
from vlm_tools.router_training.data import COMPOUND_HELDOUT_PATH, HELDOUT_PATH, load_examples, load_multilabel
from vlm_tools.router_training.evaluate import evaluate_compound, evaluate_probs


def test_every_file_has_the_sha256_its_readme_records():
    recorded = dict(re.findall(r"\| `([\w.]+)` \| `([0-9a-f]{64})` \|", (SHIPPED_ROUTER / "README.md").read_text()))
    files = {p.name for p in SHIPPED_ROUTER.iterdir()} - {"README.md"}
    assert set(recorded) == files
    for name, digest in recorded.items():
        assert hashlib.sha256((SHIPPED_ROUTER / name).read_bytes()).hexdigest() == digest, name


def test_it_names_the_installed_packaged_encoder():
    assert f'"encoder_sha256": "{packaged_encoder_sha256()}"' in (SHIPPED_ROUTER / "router.json").read_text()


@pytest.fixture(scope="module")
def router():
    return load_router(SHIPPED_ROUTER)


def test_it_routes_the_held_out_sets_as_recorded(router):
    examples = load_examples(HELDOUT_PATH)
    output = router.predict(examples.texts)
    report = evaluate_probs(output.probs, examples, output.scores)
    assert report.accuracy == 1.0 and report.ece < 0.01
    compound = load_multilabel(COMPOUND_HELDOUT_PATH)
    assert evaluate_compound(router.predict(compound.texts).scores, compound).exact_accuracy == 1.0
