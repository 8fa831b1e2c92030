"""One frozen config per Triton python model: parsed once from config.pbtxt, defaults in one place, unknown
keys and bad values refused at load with the model and key named."""
from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from minivlm.export.repository import TEMPLATE_DIR
from minivlm.serving.config import (MODEL_CONFIGS, ConfigError, GeneratorEngineConfig, OnnxModelConfig,
                                    TaskDefaults)


def _parameters(model: str) -> dict[str, str]:
    config = text_format.Parse((TEMPLATE_DIR / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return {key: value.string_value for key, value in config.parameters.items()}


@pytest.mark.parametrize("model", sorted(MODEL_CONFIGS))
def test_checked_in_parameters_parse_and_state_the_defaults(model):
    """A config.pbtxt may list its knobs, but their values are the config class's defaults: one source."""
    config_class = MODEL_CONFIGS[model]
    parsed = config_class.from_parameters(_parameters(model), model=model)
    assert parsed == config_class(model=model)
    assert set(_parameters(model)) <= set(config_class.parameter_names())


def test_from_args_reads_the_json_triton_passes():
    args = {"model_config": json.dumps({"name": "router", "parameters": {"intra_op_threads": {"string_value": "2"}}})}
    assert OnnxModelConfig.from_args(args) == OnnxModelConfig(model="router", intra_op_threads=2)


def test_unknown_key_is_refused_with_the_known_ones_named():
    with pytest.raises(ConfigError, match=r"generator_engine: unknown config.pbtxt parameter\(s\) batchng; "
                                          r"generator_engine knows torch_threads, batching,"):
        GeneratorEngineConfig.from_parameters({"batchng": "static"}, model="generator_engine")


@pytest.mark.parametrize("key, value, message", [
    ("max_live_rows", "many", "max_live_rows must be int, got 'many'"),
    ("max_live_rows", "0", "max_live_rows must be >= 1, got 0"),
    ("batching", "dynamic", "batching must be one of"),
    ("decoder_precision", "fp8", "decoder_precision must be one of"),
    ("min_router_confidence", "1.5", r"min_router_confidence must be in \[0, 1\]"),
    ("od_temperature", "nan", r"od_temperature must be in \[0, 2.0\]"),
    ("vqa_max_new_tokens", "513", r"vqa_max_new_tokens must be in \[1, 512\]"),
])
def test_bad_values_are_refused_at_load(key, value, message):
    with pytest.raises(ConfigError, match=f"generator_engine: parameter {message}"):
        GeneratorEngineConfig.from_parameters({key: value}, model="generator_engine")


def test_task_defaults_come_from_the_parameters():
    config = GeneratorEngineConfig.from_parameters({"od_max_new_tokens": "64", "vqa_top_p": "0.9"}, model="e")
    assert config.task_defaults()["od"] == TaskDefaults(64, 0.3, 1.0)
    assert config.task_defaults()["vqa"] == TaskDefaults(10, 0.0, 0.9)
    assert GeneratorEngineConfig.from_parameters(config.parameters(), model="e") == config   # round trip
