"""A checkpoint saved by the notebook's own classes exports with plain `vlm export`, and the exported router
gives the notebook's logits and answers; a failed export leaves the previous repository untouched.

`TaskClassifier` and `predict_task` below are the notebook's code (../shared/notebook/), only re-indented,
with the notebook's `device` fixed to the CPU.
"""
from __future__ import annotations

import os
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from minivlm.cli import main
from minivlm.export.repository import MANIFEST, ExportStepError, build_repository, BuildOptions
from minivlm.routing.onnx_runtime import OnnxRouter
from minivlm.serving.query_step import TOKENIZER_DIR
from vlm_client import protocol

device = "cpu"


class TaskClassifier(nn.Module):
    """Classify task from text query."""
    def __init__(self, tokenizer, hidden_dim=128, num_tasks=3):
        super().__init__()
        self.tokenizer = tokenizer
        self.embedding = nn.Embedding(tokenizer.vocab_size, hidden_dim)
        self.lstm = nn.LSTM(hidden_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(hidden_dim * 2, num_tasks)

    def forward(self, input_ids):
        embeds = self.embedding(input_ids)
        lstm_out, (h_n, c_n) = self.lstm(embeds)
        hidden = torch.cat([h_n[0], h_n[1]], dim=1)
        logits = self.classifier(hidden)
        return logits


def predict_task(query, model, tokenizer):
    """Predict task from query."""
    model.eval()
    tokens = tokenizer(query, return_tensors='pt', padding='max_length', max_length=32, truncation=True)
    input_ids = tokens['input_ids'].to(device)
    with torch.no_grad():
        logits = model(input_ids)
    pred = logits.argmax(dim=1).item()
    task_names = ['CAPTION', 'OD', 'VQA']
    return task_names[pred]


QUERIES = ["What's in this image?", "Detect all objects", "Is there a dog?", "Describe the scene in detail",
           "where are the cars? give me coordinates", "how many people are there"]


@pytest.fixture(scope="module")
def notebook_export(notebook_dir, tmp_path_factory):
    """The tiny model's folder with task_classifier.pt saved exactly as the notebook saves it."""
    root = tmp_path_factory.mktemp("notebook-classes")
    checkpoint = root / "mini-vlm-routing"
    shutil.copytree(notebook_dir, checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint / "tokenizer"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    task_classifier = TaskClassifier(tokenizer, hidden_dim=16).to(device)
    torch.save({'state_dict': task_classifier.state_dict(), 'config': {'hidden_dim': 16, 'num_tasks': 3}},
               f"{checkpoint}/task_classifier.pt")
    assert main(["export", str(checkpoint), "--output", str(root / "repo"), "--router", "notebook"]) == 0
    return checkpoint, root / "repo", task_classifier.eval(), tokenizer


def test_served_router_gives_the_notebook_logits_and_answers(notebook_export):
    _, repo, task_classifier, tokenizer = notebook_export
    router = OnnxRouter(repo / protocol.ROUTER / "1" / "model.onnx", repo / protocol.PREPROCESS / "1" / TOKENIZER_DIR)
    served = router.probs(QUERIES)
    ids = tokenizer(QUERIES, return_tensors='pt', padding='max_length', max_length=32, truncation=True)['input_ids']
    with torch.no_grad():
        expected = torch.softmax(task_classifier(ids), dim=-1).numpy()     # the LSTM is served at temperature 1
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)
    names = {"caption": "CAPTION", "od": "OD", "vqa": "VQA"}
    assert [names[protocol.TASKS[i]] for i in served.argmax(axis=1)] == \
        [predict_task(q, task_classifier, tokenizer) for q in QUERIES]


def test_a_failed_export_leaves_the_previous_repository_untouched(notebook_export, tmp_path, capsys):
    checkpoint, repo, _, _ = notebook_export
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    torch.save({"state_dict": {}, "config": {"hidden_dim": 16, "num_tasks": 3}}, broken / "task_classifier.pt")
    with pytest.raises(ExportStepError, match=r"export failed at step 'export router': CheckpointError: .*"
                                              r"no 'embedding.weight'") as caught:
        build_repository(BuildOptions(checkpoint_dir=broken, output=repo, router="notebook"))
    assert caught.value.step == "export router"
    after = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert after == before                                            # every file, byte for byte
    assert not [p for p in repo.parent.iterdir() if p.name.startswith(f".{repo.name}.")]   # no staging left
    assert main(["export", str(broken), "--output", str(repo), "--router", "notebook"]) == 1   # one clear line
    assert "error: export failed at step 'export router'" in capsys.readouterr().err


def test_a_folder_the_command_did_not_build_is_refused_before_any_work(notebook_export, tmp_path):
    checkpoint = notebook_export[0]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a repository this command built"):
        build_repository(BuildOptions(checkpoint_dir=checkpoint, output=foreign))
    assert (foreign / "notes.txt").read_text() == "keep me" and not (foreign / MANIFEST).exists()
