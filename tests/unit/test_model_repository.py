"""Every checked-in config.pbtxt agrees with vlm_client.protocol, the single source of tensor names."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from minivlm.export.repository import TEMPLATE_DIR, apply_variant, copy_template
from vlm_client import protocol

DTYPES = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
          "BOOL": "TYPE_BOOL"}
DataType = model_config_pb2.DataType


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def signature(tensors) -> list[tuple]:
    return [(t.name, DataType.Name(t.data_type), tuple(t.dims), getattr(t, "optional", False)) for t in tensors]


def expected(tensors) -> list[tuple]:
    return [(t.name, DTYPES[t.dtype], t.dims, t.optional) for t in tensors]


CONFIGS = sorted(TEMPLATE_DIR.glob("*/config*.pbtxt"))


def test_every_protocol_model_has_a_folder_and_nothing_else_does():
    assert sorted(p.name for p in TEMPLATE_DIR.iterdir() if p.is_dir()) == sorted(protocol.MODELS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_matches_protocol(path):
    config = parse(path)
    inputs, outputs = protocol.MODELS[path.parent.name]
    assert config.name == path.parent.name
    assert signature(config.input) == expected(inputs)
    assert signature(config.output) == expected(outputs)
    assert config.max_batch_size > 0, "queue policies and batching need a batch axis"


def _runs_alone(name: str, ancestors: dict[str, set[str]]) -> bool:
    return all(other == name or other in ancestors[name] or name in ancestors[other] for other in ancestors)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_only_steps_that_run_alone_can_refuse_for_a_full_queue(path):
    """Triton 2.51 can corrupt or hang an ensemble request when one step fails beside another in flight, and a
    full queue fails the request: a model with a bounded queue must run alone in every ensemble using it. The
    door (preprocess) bounds the requests in the pipeline instead (minivlm/serving/admission.py)."""
    config = parse(path)
    if config.platform == "ensemble" or not config.dynamic_batching.default_queue_policy.max_queue_size:
        return
    for ensemble in (protocol.ENSEMBLE, protocol.STREAM_ENSEMBLE, protocol.ROUTE_ENSEMBLE):
        ancestors = _ancestors(parse(TEMPLATE_DIR / ensemble / "config.pbtxt").ensemble_scheduling.step)
        assert config.name not in ancestors or _runs_alone(config.name, ancestors), \
            f"{config.name} has a bounded queue and runs beside another step of {ensemble}"


def test_the_vlm_ensembles_are_bounded_at_their_door():
    """preprocess, their first step, has a bounded queue and admits a bounded number of requests."""
    config = parse(TEMPLATE_DIR / protocol.PREPROCESS / "config.pbtxt")
    assert config.dynamic_batching.default_queue_policy.max_queue_size > 0
    assert int(config.parameters["max_requests_in_flight"].string_value) >= 1
    assert [group.count for group in config.instance_group] == [1]        # one door per server
    for ensemble in (protocol.ENSEMBLE, protocol.STREAM_ENSEMBLE):
        steps = parse(TEMPLATE_DIR / ensemble / "config.pbtxt").ensemble_scheduling.step
        assert _ancestors(steps)[protocol.PREPROCESS] == set()


@pytest.mark.parametrize("ensemble", [protocol.ENSEMBLE, protocol.STREAM_ENSEMBLE, protocol.ROUTE_ENSEMBLE])
def test_ensemble_steps_wire_existing_tensors(ensemble):
    config = parse(TEMPLATE_DIR / ensemble / "config.pbtxt")
    available = {t.name for t in config.input}
    for step in config.ensemble_scheduling.step:
        step_inputs, step_outputs = protocol.MODELS[step.model_name]
        assert set(step.input_map) <= {t.name for t in step_inputs}
        assert {t.name for t in step_inputs if not t.optional} <= set(step.input_map), step.model_name
        assert set(step.input_map.values()) <= available, f"{step.model_name} reads a tensor not produced yet"
        assert set(step.output_map) <= {t.name for t in step_outputs}
        available |= set(step.output_map.values())
    assert {t.name for t in config.output} <= available


def _ancestors(steps) -> dict[str, set[str]]:
    """Step model name -> the steps whose outputs it needs, directly or not."""
    producer = {tensor: step.model_name for step in steps for tensor in step.output_map.values()}
    direct = {step.model_name: {producer[t] for t in step.input_map.values() if t in producer} for step in steps}
    ancestors = {}

    def visit(name):
        if name not in ancestors:
            ancestors[name] = set(direct[name]).union(*(visit(parent) | {parent} for parent in direct[name]))
        return ancestors[name]

    for name in direct:
        visit(name)
    return ancestors


@pytest.mark.parametrize("ensemble", [protocol.ENSEMBLE, protocol.STREAM_ENSEMBLE, protocol.ROUTE_ENSEMBLE])
def test_steps_that_check_client_input_never_run_beside_another_step(ensemble):
    """Triton 2.51 can free an ensemble request while a parallel step still uses it when a step fails beside
    another in flight (upstream core feede8e). Steps that read the client's tensors can refuse them, so each
    must come before or after every other step of its ensemble, never beside one."""
    config = parse(TEMPLATE_DIR / ensemble / "config.pbtxt")
    client_tensors = {t.name for t in config.input}
    ancestors = _ancestors(config.ensemble_scheduling.step)
    checking = [s.model_name for s in config.ensemble_scheduling.step if set(s.input_map.values()) & client_tensors]
    assert checking, "some step must read the client's input"
    for name in checking:
        for other in ancestors:
            assert other == name or other in ancestors[name] or name in ancestors[other], \
                f"{name} checks client input and may run beside {other}"


def test_vlm_checks_image_and_query_in_one_first_step_then_encodes_and_routes_in_parallel():
    steps = parse(TEMPLATE_DIR / protocol.ENSEMBLE / "config.pbtxt").ensemble_scheduling.step
    ancestors = _ancestors(steps)
    assert ancestors[protocol.PREPROCESS] == set()
    assert ancestors[protocol.ROUTER] == ancestors[protocol.VISION_ENCODER] == {protocol.PREPROCESS}
    assert ancestors[protocol.GENERATOR] == {protocol.PREPROCESS, protocol.ROUTER, protocol.VISION_ENCODER}


@pytest.mark.parametrize("path", sorted(TEMPLATE_DIR.glob("*/1/model.py")), ids=lambda p: p.parent.parent.name)
def test_python_models_are_thin(path):
    assert len(path.read_text().splitlines()) <= 60


@pytest.mark.parametrize("backend, device", [("python", "cpu"), ("onnxruntime", "gpu"), ("onnxruntime", "cpu")])
def test_both_onnx_variants_produce_valid_configs(tmp_path, backend, device):
    copy_template(tmp_path / "repo")
    apply_variant(tmp_path / "repo", onnx_backend=backend, device=device)
    for name in (protocol.ROUTER, protocol.VISION_ENCODER):
        config = parse(tmp_path / "repo" / name / "config.pbtxt")
        assert (config.backend, (tmp_path / "repo" / name / "1" / "model.py").exists()) == \
            (backend, backend == "python")
        assert not (tmp_path / "repo" / name / "config.onnxruntime.pbtxt").exists()
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    for name in (protocol.ROUTER, protocol.VISION_ENCODER, protocol.GENERATOR_ENGINE, protocol.GENERATOR):
        groups = parse(tmp_path / "repo" / name / "config.pbtxt").instance_group
        expected = "KIND_CPU" if name == protocol.GENERATOR else kind       # forwarders only pass tensors on
        assert [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in groups] == [expected]


def test_generator_forwards_to_a_decoupled_engine_and_stays_unary():
    """A decoupled ensemble step would make `vlm` refuse unary infer: only the engine is decoupled."""
    forwarder, engine = (parse(TEMPLATE_DIR / name / "config.pbtxt")
                         for name in (protocol.GENERATOR, protocol.GENERATOR_ENGINE))
    assert forwarder.parameters["engine_model"].string_value == protocol.GENERATOR_ENGINE
    assert not forwarder.model_transaction_policy.decoupled and engine.model_transaction_policy.decoupled
    for name in (protocol.ENSEMBLE, protocol.ROUTE_ENSEMBLE):
        steps = parse(TEMPLATE_DIR / name / "config.pbtxt").ensemble_scheduling.step
        assert protocol.GENERATOR_ENGINE not in {step.model_name for step in steps}
    # one request per forwarder execution, so no request waits for a neighbour's answer
    assert list(forwarder.dynamic_batching.preferred_batch_size) == [1]
    assert forwarder.dynamic_batching.max_queue_delay_microseconds == 0
    tree = ast.parse((TEMPLATE_DIR / protocol.GENERATOR / "1" / "model.py").read_text())
    imported = {node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    # light processes: no torch (test_layers.py checks that these modules import none)
    assert imported == {"asyncio", "os", "minivlm.serving.config", "minivlm.serving.engine_forwarder",
                        "minivlm.serving.stub_processes", "triton_python_backend_utils"}
    parameters = {key: value.string_value for key, value in engine.parameters.items()}
    assert parameters["batching"] == "continuous" and int(parameters["max_live_rows"]) >= 1
    assert int(parameters["max_waiting_requests"]) >= 1


def test_decoder_precision_is_an_export_option_checked_before_anything_is_built(tmp_path):
    import argparse
    from typing import get_args

    from minivlm.cli import add_export_command
    from minivlm.decoding.llama_decoder import Precision
    from minivlm.export.repository import BuildOptions, set_model_parameter
    from minivlm.serving.config import DECODER_PRECISION_CHOICES

    assert parse(TEMPLATE_DIR / protocol.GENERATOR_ENGINE / "config.pbtxt").parameters[
        "decoder_precision"].string_value == "auto"      # fp32 on the CPU: exact by default (bf16 on a GPU)
    parser = argparse.ArgumentParser()
    add_export_command(parser.add_subparsers())
    args = parser.parse_args(["export", "CKPT", "-o", "REPO", "--decoder-precision", "int8"])
    assert args.decoder_precision == "int8"
    choices = next(a.choices for a in parser._subparsers._group_actions[0].choices["export"]._actions
                   if a.dest == "decoder_precision")
    assert tuple(choices) == DECODER_PRECISION_CHOICES == ("auto", *get_args(Precision))
    assert parser.parse_args(["export", "CKPT", "-o", "REPO"]).decoder_precision == "auto"
    with pytest.raises(ValueError, match="decoder_precision must be one of"):
        BuildOptions(checkpoint_dir=tmp_path, output=tmp_path / "repo", decoder_precision="fp8")
    with pytest.raises(ValueError, match="CPU fast decoder"):
        BuildOptions(checkpoint_dir=tmp_path, output=tmp_path / "repo", device="gpu", decoder_precision="int8")
    copy_template(tmp_path / "repo")
    set_model_parameter(tmp_path / "repo", protocol.GENERATOR_ENGINE, "decoder_precision", "int8")
    engine = parse(tmp_path / "repo" / protocol.GENERATOR_ENGINE / "config.pbtxt")
    assert engine.parameters["decoder_precision"].string_value == "int8"
    assert engine.parameters["batching"].string_value == "continuous"     # the rest untouched


def test_a_repository_is_reused_only_when_built_from_this_template(tmp_path, monkeypatch):
    """`vlm demo` reuses an exported repository; one exported by an older version holds model.py files that
    call code this version may not have (seen: `GeneratorEngine.run_rows`), so it must be rebuilt."""
    import json

    import minivlm.export.repository as repository

    repo = tmp_path / "repo"
    copy_template(repo)
    assert not repository.built_from_this_template(repo)                          # no manifest
    (repo / repository.MANIFEST).write_text(json.dumps({"template": repository.template_fingerprint()}))
    assert repository.built_from_this_template(repo)
    (repo / repository.MANIFEST).write_text(json.dumps({"template": "0123456789abcdef"}))
    assert not repository.built_from_this_template(repo)
    (repo / repository.MANIFEST).write_text("{not json")
    assert not repository.built_from_this_template(repo)
    edited = tmp_path / "template"                       # any edit of a template file changes the fingerprint
    copy_template(edited)
    before = repository.template_fingerprint()
    monkeypatch.setattr(repository, "TEMPLATE_DIR", edited)
    assert repository.template_fingerprint() == before
    (edited / protocol.GENERATOR / "1" / "model.py").write_text("# edited\n")
    assert repository.template_fingerprint() != before


def test_vlm_stream_is_vlm_with_the_decoupled_engine_as_its_last_step():
    vlm, stream = (parse(TEMPLATE_DIR / name / "config.pbtxt") for name in (protocol.ENSEMBLE, protocol.STREAM_ENSEMBLE))
    assert [s.model_name for s in stream.ensemble_scheduling.step] == \
        [s.model_name for s in vlm.ensemble_scheduling.step][:-1] + [protocol.GENERATOR_ENGINE]
    for ours, theirs in zip(stream.ensemble_scheduling.step[:-1], vlm.ensemble_scheduling.step[:-1]):
        assert ours == theirs                                  # the same checks, in the same order
    last, engine_last = stream.ensemble_scheduling.step[-1], vlm.ensemble_scheduling.step[-1]
    assert dict(last.input_map) == {**dict(engine_last.input_map), "stream": "stream"}
    assert dict(last.output_map) == dict(engine_last.output_map)
    assert parse(TEMPLATE_DIR / protocol.GENERATOR_ENGINE / "config.pbtxt").model_transaction_policy.decoupled
