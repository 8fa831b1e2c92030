"""Shared fixtures: one tiny random-weight VLM per session, and that model written as the notebook's folder."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"          # before transformers is imported: tests never touch the hub

import pytest
import torch

from minivlm.model.factory import tiny_vlm as build_tiny_vlm
from minivlm.model.factory import write_notebook_folder

torch.set_num_threads(2)                    # the machine has 2 cores, shared


@pytest.fixture(scope="session")
def tiny_vlm():
    """Read-only: tests that change weights work on a copy.deepcopy of the part they change."""
    return build_tiny_vlm(seed=0)


@pytest.fixture(scope="session")
def notebook_dir(tiny_vlm, tmp_path_factory):
    """`mini-vlm-routing/` written from `tiny_vlm`, base models as local folders beside it. Read-only."""
    return write_notebook_folder(tiny_vlm, tmp_path_factory.mktemp("notebook"))


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped, with the reason shown, where torch sees none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (scripts/gpu-check.sh runs these on a GPU machine)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:      # the marker, not a test id that says gpu
            item.add_marker(skip)
