"""Router ONNX export: the protocol's graph spec, parity with PyTorch at batch 1 and 4, tokenizer beside it."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import onnx
import pytest
import torch

from minivlm.errors import ExportParityError
from minivlm.router.export import PARITY_TOLERANCE, CalibratedRouter, export_router, validate_parity
from minivlm.router.loading import load_router
from minivlm.router.lstm import LSTMRouter, save_notebook_checkpoint
from minivlm.router.minilm import build_pretrained_router, pretrained_encoder_dir, save_minilm_router
from minivlm.router.onnx_runtime import OnnxRouter
from vlm_client.protocol import ATTENTION_MASK, INPUT_IDS, TASK_PROBS

# The long one is truncated to the tokenizer's maximum (64 for MiniLM): the longest sequence served.
QUERIES = ["describe this image", "where are the objects? give coordinates " * 12, "is the dog happy?", "caption"]


@pytest.fixture(scope="module")
def lstm_export(tmp_path_factory):
    """The notebook's layout: task_classifier.pt beside the LM tokenizer's save_pretrained folder (MiniLM's
    WordPiece tokenizer stands in for SmolLM's, which cannot be downloaded here)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lstm") / "mini-vlm-routing"
    torch.manual_seed(0)
    hf_folder = root / "tokenizer"
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(str(pretrained_encoder_dir())).save_pretrained(str(hf_folder))
    save_notebook_checkpoint(LSTMRouter(30522, embed_dim=16, hidden_dim=16), root / "task_classifier.pt")
    checkpoint = root / "task_classifier.pt"
    return checkpoint, export_router(checkpoint, root.parent / "onnx" / "router.onnx", temperature=1.5)


@pytest.fixture(scope="module")
def minilm_export(tmp_path_factory):
    """The real pretrained encoder with a random head; the temperature must be baked in."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, tokenizer = build_pretrained_router()
    folder = save_minilm_router(tmp_path_factory.mktemp("minilm") / "router", model, tokenizer, temperature=0.5)
    return folder, export_router(folder, folder.parent / "onnx" / "router.onnx")


@pytest.fixture(params=["lstm", "minilm"])
def exported(request, lstm_export, minilm_export):
    return {"lstm": lstm_export, "minilm": minilm_export}[request.param]


def test_graph_declares_the_protocol_tensors(exported):
    graph = onnx.load(str(exported[1].onnx_path)).graph
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]   # noqa: E731
    assert [i.name for i in graph.input] == [INPUT_IDS.name, ATTENTION_MASK.name]   # the LSTM keeps the mask
    assert {i.type.tensor_type.elem_type for i in graph.input} == {onnx.TensorProto.INT64}
    assert all(isinstance(d, str) for i in graph.input for d in dims(i))               # batch, sequence dynamic
    assert [o.name for o in graph.output] == [TASK_PROBS.name]
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert isinstance(dims(graph.output[0])[0], str) and dims(graph.output[0])[1] == 3


def test_parity_at_batch_1_and_4(exported):
    report = exported[1]
    assert set(report.max_abs_diff) == {1, 4} and max(report.max_abs_diff.values()) <= PARITY_TOLERANCE


def test_onnx_probabilities_match_torch_on_fresh_queries(exported):
    source, report = exported
    torch_router = load_router(source, temperature=report.temperature)
    onnx_router = OnnxRouter(report.onnx_path)        # tokenizer folder found beside the graph
    for batch in (1, 4):
        np.testing.assert_allclose(onnx_router.probs(QUERIES[:batch]), torch_router.probs(QUERIES[:batch]),
                                   atol=PARITY_TOLERANCE, rtol=0)


def test_temperature_is_baked_in(lstm_export):
    source, report = lstm_export
    logits = load_router(source).logits(QUERIES)
    probs = OnnxRouter(report.onnx_path).probs(QUERIES)
    scaled = torch.softmax(torch.from_numpy(logits) / 1.5, dim=-1).numpy()
    assert report.temperature == 1.5
    np.testing.assert_allclose(probs, scaled, atol=PARITY_TOLERANCE)


def test_tokenizer_folder_written_beside_the_graph(exported):
    report = exported[1]
    assert report.tokenizer_dir == report.onnx_path.parent / "router_tokenizer"
    assert (report.tokenizer_dir / "tokenizer.json").is_file()


def test_parity_error_names_the_graph_and_the_difference(lstm_export):
    source, report = lstm_export
    other = CalibratedRouter(LSTMRouter(30522, embed_dim=16, hidden_dim=16), 1.0).eval()   # different weights
    with pytest.raises(ExportParityError, match=rf"router graph .*router.onnx: batch 1 max abs difference"):
        validate_parity(other, OnnxRouter(report.onnx_path))
