"""The trained demo model committed in tools/vlm_tools/demo/trained/: intact, movable, and as good as promised.

The quality test decodes 500 held-out scenes in-process (greedy, the serving decode path) and fails below the
targets the README states (`DemoReport.misses`)."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from minivlm.model.checkpoint import load_vlm
from vlm_tools.demo.config import STATS_FILE
from vlm_tools.demo.evaluate import evaluate_held_out
from vlm_tools.demo.shipped import (CHECKSUMS, README, SHIPPED_DEMO_MODEL, ShippedModelError, read_checksums,
                                    shipped_recipe, verify_shipped_model)
from vlm_tools.demo.train import CHECKPOINT_DIR


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(2)
    return load_vlm(SHIPPED_DEMO_MODEL / CHECKPOINT_DIR)


def test_every_file_has_its_listed_sha256():
    verify_shipped_model()
    assert len(read_checksums(SHIPPED_DEMO_MODEL)) >= 8


def test_the_readme_lists_the_same_checksums():
    table = dict(re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{64})` \|$", (SHIPPED_DEMO_MODEL / README).read_text(), re.M))
    assert table == read_checksums(SHIPPED_DEMO_MODEL)


def test_a_changed_or_extra_file_is_named(tmp_path):
    copy = tmp_path / "trained"
    shutil.copytree(SHIPPED_DEMO_MODEL, copy)
    with (copy / CHECKPOINT_DIR / "vlm_with_tags.pt").open("ab") as file:
        file.write(b"\0")
    (copy / "stray.bin").write_bytes(b"x")
    with pytest.raises(ShippedModelError, match=r"vlm_with_tags.pt: SHA-256 .*stray.bin: not listed"):
        verify_shipped_model(copy)
    (copy / CHECKSUMS).unlink()
    with pytest.raises(ShippedModelError, match="no SHA256SUMS"):
        verify_shipped_model(copy)


def test_the_recipe_is_the_recorded_training_config():
    recorded = json.loads((SHIPPED_DEMO_MODEL / STATS_FILE).read_text())["config"]
    recipe = shipped_recipe()
    assert {k: v for k, v in vars(recipe).items() if k != "threads"} == \
        {k: v for k, v in recorded.items() if k != "threads"}


def test_the_folder_loads_after_a_move(tmp_path, shipped):
    """Base models are recorded relative to the checkpoint, fp16 weights come back as fp32."""
    moved = tmp_path / "elsewhere"
    shutil.copytree(SHIPPED_DEMO_MODEL, moved)
    vlm = load_vlm(moved / CHECKPOINT_DIR)
    for mine, theirs in ((vlm.vision.vit, shipped.vision.vit), (vlm.language_model, shipped.language_model)):
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert a.dtype == torch.float32 and torch.equal(a, b), name


# 500 scenes, the README's table, not 100: on 100 scenes (69 position questions) the position score moves by
# +-4 points from scene sampling alone (88.4% on the first 100, 91.0% on 500), so a test of 100 would fail a
# model that meets the target or pass one that misses it. 500 scenes take ~7 s.
HELD_OUT_SCENES = 500


def test_the_shipped_model_meets_its_targets_on_500_held_out_scenes(shipped):
    report = evaluate_held_out(shipped, HELD_OUT_SCENES)
    assert report.misses() == [], report.to_dict()
