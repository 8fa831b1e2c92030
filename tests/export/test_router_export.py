"""Router ONNX export: the protocol's graph spec (task_probs, task_scores), parity with PyTorch at batch 1 and 4 for
both outputs, task_scores = task_probs for routers without a scores head, tokenizer beside the graph."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import onnx
import pytest
import torch

from minivlm.errors import ExportParityError
from minivlm.export.onnx_graph import check_graph, validate_onnx
from minivlm.export.router import CalibratedRouter, export_router, router_inputs
from minivlm.export.specs import ROUTER_SPEC
from minivlm.routing.loading import load_router
from minivlm.routing.lstm import LSTMRouter, save_notebook_checkpoint
from minivlm.routing.minilm import (
    SCORES_HEAD_FILE,
    SHIPPED_ROUTER,
    build_pretrained_router,
    pretrained_encoder_dir,
    save_minilm_router,
)
from minivlm.routing.multilabel import is_compound
from minivlm.routing.onnx_runtime import OnnxRouter
from vlm_client.protocol import ATTENTION_MASK, INPUT_IDS, TASK_PROBS, TASK_SCORES

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


@pytest.fixture(scope="module")
def minilm_old_export(minilm_export):
    """The same router saved before the scores head existed: no scores_head.safetensors in the folder."""
    folder = minilm_export[0].parent / "old_router"
    model, tokenizer = build_pretrained_router()
    save_minilm_router(folder, model, tokenizer, temperature=0.5)
    (folder / SCORES_HEAD_FILE).unlink()
    return folder, export_router(folder, folder.parent / "old_onnx" / "router.onnx")


@pytest.fixture(scope="module")
def shipped_export(tmp_path_factory):
    """What `vlm export` serves by default: the shipped heads on the packaged encoder, with spelling correction."""
    torch.set_num_threads(1)
    return SHIPPED_ROUTER, export_router(SHIPPED_ROUTER, tmp_path_factory.mktemp("shipped") / "router.onnx")


@pytest.fixture(params=["lstm", "minilm", "minilm_old", "shipped"])
def exported(request, lstm_export, minilm_export, minilm_old_export, shipped_export):
    return {"lstm": lstm_export, "minilm": minilm_export, "minilm_old": minilm_old_export,
            "shipped": shipped_export}[request.param]


# (what the user typed, what the router should read, the tasks) for the shipped tokenizer's two rewrites
REWRITES = {
    "spelling": (["descirbe teh imgae", "detcet the objcts", "waht colour is the sqaure"],
                 ["describe teh image", "detect the objects", "what colour is the square"], [0, 1, 2]),
    "ruled_out": (["Rather than boxes, just give me the count of cars.", "No caption. Boxes only.",
                   "Skip the object detection. A plain description is all I'm after."],
                  ["just give me the count of cars.", "Boxes only.", "A plain description is all I'm after."],
                  [2, 1, 0]),
}


@pytest.mark.parametrize("rewrite", REWRITES)
def test_the_served_router_reads_the_rewritten_query_as_the_in_process_one_does(shipped_export, rewrite):
    """Slips corrected, ruled-out clauses dropped: the exported tokenizer does both, as in process."""
    source, report = shipped_export
    typed, meant, tasks = REWRITES[rewrite]
    served, in_process = OnnxRouter(report.path), load_router(source)
    assert served.tokenizer.spec == in_process.tokenizer.spec
    assert served.tokenizer.spec.spelling_words and served.tokenizer.spec.drop_ruled_out
    got, want, rewritten = served.predict(typed), in_process.predict(typed), in_process.predict(meant)
    for a, b in ((got, want), (want, rewritten)):
        np.testing.assert_allclose(a.probs, b.probs, atol=ROUTER_SPEC.tolerance, rtol=0)
        np.testing.assert_allclose(a.scores, b.scores, atol=ROUTER_SPEC.tolerance, rtol=0)
    np.testing.assert_array_equal(got.probs.argmax(axis=1), tasks)


def test_graph_declares_the_protocol_tensors(exported):
    graph = onnx.load(str(exported[1].path)).graph
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]   # noqa: E731
    assert [i.name for i in graph.input] == [INPUT_IDS.name, ATTENTION_MASK.name]   # the LSTM keeps the mask
    assert {i.type.tensor_type.elem_type for i in graph.input} == {onnx.TensorProto.INT64}
    assert all(isinstance(d, str) for i in graph.input for d in dims(i))               # batch, sequence dynamic
    assert [o.name for o in graph.output] == [TASK_PROBS.name, TASK_SCORES.name]
    for output in graph.output:
        assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert isinstance(dims(output)[0], str) and dims(output)[1] == 3


def test_parity_at_batch_1_and_4_for_both_outputs(exported):
    report = exported[1]
    assert set(report.output_diffs) == {TASK_PROBS.name, TASK_SCORES.name}
    for diffs in report.output_diffs.values():
        assert set(diffs) == {1, 4} and max(diffs.values()) <= ROUTER_SPEC.tolerance
    assert report.max_abs_diff == {b: max(d[b] for d in report.output_diffs.values()) for b in (1, 4)}


def test_onnx_outputs_match_torch_on_fresh_queries(exported):
    source, report = exported
    torch_router = load_router(source, temperature=report.temperature)
    onnx_router = OnnxRouter(report.path)        # tokenizer folder found beside the graph
    for batch in (1, 4):
        got, want = onnx_router.predict(QUERIES[:batch]), torch_router.predict(QUERIES[:batch])
        np.testing.assert_allclose(got.probs, want.probs, atol=ROUTER_SPEC.tolerance, rtol=0)
        np.testing.assert_allclose(got.scores, want.scores, atol=ROUTER_SPEC.tolerance, rtol=0)


def test_minilm_scores_are_independent_sigmoids(minilm_export):
    source, report = minilm_export
    model = load_router(source).model
    ids, mask = OnnxRouter(report.path).tokenizer(QUERIES)
    with torch.no_grad():
        expected = torch.sigmoid(model.scores_head(model.features(torch.from_numpy(ids), torch.from_numpy(mask))))
    scores = OnnxRouter(report.path).scores(QUERIES)
    assert report.has_scores_head and not np.allclose(scores.sum(axis=1), 1.0, atol=1e-2)
    np.testing.assert_allclose(scores, expected.numpy(), atol=ROUTER_SPEC.tolerance, rtol=0)


@pytest.mark.parametrize("which", ["lstm", "minilm_old"])
def test_routers_without_a_scores_head_serve_probs_as_scores(which, lstm_export, minilm_old_export):
    report = {"lstm": lstm_export, "minilm_old": minilm_old_export}[which][1]
    output = OnnxRouter(report.path).predict(QUERIES)
    assert not report.has_scores_head
    np.testing.assert_array_equal(output.scores, output.probs)
    assert not is_compound(output.scores).any()


def test_temperature_is_baked_in(lstm_export):
    source, report = lstm_export
    logits = load_router(source).logits(QUERIES)
    probs = OnnxRouter(report.path).probs(QUERIES)
    scaled = torch.softmax(torch.from_numpy(logits) / 1.5, dim=-1).numpy()
    assert report.temperature == 1.5
    np.testing.assert_allclose(probs, scaled, atol=ROUTER_SPEC.tolerance)


def test_tokenizer_folder_written_beside_the_graph(exported):
    report = exported[1]
    assert report.tokenizer_dir == report.path.parent / "router_tokenizer"
    assert (report.tokenizer_dir / "tokenizer.json").is_file()


def test_parity_error_names_the_graph_and_the_difference(lstm_export):
    source, report = lstm_export
    other = CalibratedRouter(LSTMRouter(30522, embed_dim=16, hidden_dim=16), 1.0).eval()   # different weights
    with pytest.raises(ExportParityError, match=r"router graph .*router.onnx: batch 1 max abs difference"):
        validate_onnx(ROUTER_SPEC, other, report.path, router_inputs(OnnxRouter(report.path).tokenizer))


def test_parity_error_on_task_scores_alone(minilm_export):
    source, report = minilm_export
    router = load_router(source)
    with torch.no_grad():
        router.model.scores_head.bias += 1.0          # task_probs unchanged, task_scores shifted
    with pytest.raises(ExportParityError, match=r"batch 1 max abs difference .* in task_scores"):
        validate_onnx(ROUTER_SPEC, CalibratedRouter(router.model, router.temperature).eval(), report.path,
                      router_inputs(router.tokenizer))


def test_graph_spec_rejects_a_graph_without_task_scores(lstm_export, tmp_path):
    model = onnx.load(str(lstm_export[1].path))
    model.graph.output.pop()
    onnx.save(model, str(tmp_path / "probs_only.onnx"))
    with pytest.raises(ExportParityError, match=r"outputs are \('task_probs',\); the spec declares .*task_scores"):
        check_graph(ROUTER_SPEC, onnx.load(str(tmp_path / "probs_only.onnx")))
    # OnnxRouter still runs a graph exported before task_scores existed: its scores are its probabilities.
    output = OnnxRouter(tmp_path / "probs_only.onnx", lstm_export[1].tokenizer_dir).predict(QUERIES)
    np.testing.assert_array_equal(output.scores, output.probs)
