"""The vision encoder (ViT + projector) exported to ONNX matches PyTorch, and a mismatch is caught."""
from __future__ import annotations

import copy

import onnx
import pytest
import torch

from minivlm.errors import ExportParityError
from minivlm.export.onnx_graph import validate_onnx
from minivlm.export.specs import VISION_ENCODER_SPEC
from minivlm.export.vision_encoder import export_vision_encoder, random_pixel_values, vision_encoder_inputs
from minivlm.onnx_sessions import make_session
from vlm_client import protocol


@pytest.fixture(scope="module")
def exported(tiny_vlm, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_vision_encoder(tiny_vlm.vision, path)


def test_export_matches_pytorch_at_batch_1_and_4(exported):
    assert set(exported.max_abs_diff) == {1, 4}
    assert all(diff <= VISION_ENCODER_SPEC.tolerance for diff in exported.max_abs_diff.values())
    assert exported.graph == protocol.VISION_ENCODER
    assert exported.file_size_bytes == exported.path.stat().st_size > 0


def test_graph_uses_protocol_names_and_a_dynamic_batch_axis(exported, tiny_vlm):
    graph = onnx.load(str(exported.path)).graph
    (pixels,), (embeds,) = graph.input, graph.output
    assert (pixels.name, embeds.name) == (protocol.PIXEL_VALUES.name, protocol.IMAGE_EMBEDS.name)
    pixel_dims = [d.dim_param or d.dim_value for d in pixels.type.tensor_type.shape.dim]
    embed_dims = [d.dim_param or d.dim_value for d in embeds.type.tensor_type.shape.dim]
    assert pixel_dims == ["batch", *protocol.PIXEL_VALUES.dims]
    assert embed_dims == ["batch", tiny_vlm.vision.num_positions, tiny_vlm.language_model.config.hidden_size]


def test_session_runs_a_batch_size_never_seen_in_export(exported, tiny_vlm):
    pixels = random_pixel_values(3, torch.Generator().manual_seed(7))[protocol.PIXEL_VALUES.name]
    (embeds,) = make_session(exported.path, intra_op_threads=1).run(None, {"pixel_values": pixels.numpy()})
    torch.testing.assert_close(torch.from_numpy(embeds), tiny_vlm.encode_images(pixels),
                               atol=VISION_ENCODER_SPEC.tolerance, rtol=0)


def test_perturbed_weights_raise_parity_error_with_the_max_difference(exported, tiny_vlm):
    changed = copy.deepcopy(tiny_vlm.vision)
    with torch.no_grad():
        changed.projector.projection[3].bias += 0.01                # every output moves by exactly 0.01
    with pytest.raises(ExportParityError) as caught:
        validate_onnx(VISION_ENCODER_SPEC, changed, exported.path, vision_encoder_inputs)
    message = str(caught.value)
    assert "vision_encoder" in message and "batch 1" in message
    assert "max abs difference 0.01 in image_embeds" in message and "tolerance 0.0001" in message
