"""The vision encoder's torch.export program (what a KIND_GPU vision_encoder runs on the pip server, whose
onnxruntime has no CUDA provider) answers as its ONNX graph, and `make_runner` picks what a machine can run.
Checked on the CPU; tests/integration/test_gpu_serving.py serves it on a GPU."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from minivlm.export.vision_encoder import export_vision_encoder, random_pixel_values, save_torch_program
from minivlm.serving import onnx_model
from minivlm.serving.onnx_model import TORCH_PROGRAM, OnnxRunner, TorchProgramRunner, make_runner
from vlm_client import protocol


@pytest.fixture(scope="module")
def model_dir(tiny_vlm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vision_encoder")
    export_vision_encoder(tiny_vlm.vision, folder / "model.onnx")
    save_torch_program(tiny_vlm.vision, folder / TORCH_PROGRAM)
    return folder


def test_the_program_answers_as_the_onnx_graph_at_any_batch(model_dir):
    onnx_runner = make_runner(model_dir, intra_op_threads=1)
    program = TorchProgramRunner(model_dir / TORCH_PROGRAM, model_dir / "model.onnx", "cpu")
    assert (program.input_names, program.output_names) == (onnx_runner.input_names, onnx_runner.output_names)
    program.warm_up()
    name = protocol.PIXEL_VALUES.name
    requests = [{name: random_pixel_values(n, torch.Generator().manual_seed(n))[name].numpy()} for n in (1, 3, 2)]
    for expected, got in zip(onnx_runner.run(requests), program.run(requests)):
        (key,) = expected
        assert got[key].shape == expected[key].shape
        np.testing.assert_allclose(got[key], expected[key], atol=1e-4)


def test_cpu_instances_run_onnx_runtime_on_the_cpu(model_dir):
    runner = make_runner(model_dir, intra_op_threads=1)
    assert type(runner) is OnnxRunner and runner.session.get_providers() == ["CPUExecutionProvider"]


def test_gpu_instances_prefer_cuda_onnx_runtime_then_the_program_then_the_cpu(model_dir, monkeypatch, caplog):
    chosen = []
    monkeypatch.setattr(onnx_model, "TorchProgramRunner", lambda program, onnx, device: chosen.append(device) or "p")
    monkeypatch.setattr(onnx_model, "make_session", lambda path, **kw: chosen.append(kw.get("providers")) or None)
    monkeypatch.setattr(OnnxRunner, "__init__", lambda self, session: None)
    make_runner(model_dir, intra_op_threads=1, gpu_device=1, ort_providers=["CUDAExecutionProvider"])
    assert chosen.pop() == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert make_runner(model_dir, intra_op_threads=1, gpu_device=1, ort_providers=[], torch_cuda=True) == "p"
    assert chosen.pop() == "cuda:1"
    with caplog.at_level(logging.WARNING):
        make_runner(model_dir, intra_op_threads=1, gpu_device=0, ort_providers=[], torch_cuda=False)
    assert chosen.pop() is None and "running model.onnx on the CPU" in caplog.text
