"""vlm bench's served part: the batching switch in the cached repository, its flag, and how results are named."""
from __future__ import annotations

import argparse

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from minivlm.export.repository import copy_template
from vlm_client.protocol import GENERATOR_ENGINE
from vlm_tools.bench import served
from vlm_tools.bench.cli import add_bench_command
from vlm_tools.bench.run import _served_result
from vlm_tools.bench.server_stats import ModelLoad


def _parameter(repository, key: str) -> str:
    path = repository / GENERATOR_ENGINE / "config.pbtxt"
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig()).parameters[key].string_value


def test_set_mode_rewrites_the_engine_parameters_and_refuses_unknown_modes(tmp_path):
    copy_template(tmp_path / "repo")
    assert (_parameter(tmp_path / "repo", "batching"), _parameter(tmp_path / "repo", "decoder_precision")) == \
        ("continuous", "auto")                                  # fp32 on the CPU, bf16 on a GPU
    served.set_mode(tmp_path / "repo", "static")
    assert _parameter(tmp_path / "repo", "batching") == "static"
    served.set_mode(tmp_path / "repo", "continuous:int8")
    assert (_parameter(tmp_path / "repo", "batching"), _parameter(tmp_path / "repo", "decoder_precision")) == \
        ("continuous", "int8")
    served.set_model_threads(tmp_path / "repo", 2)
    assert _parameter(tmp_path / "repo", "torch_threads") == "2"
    served.set_live_rows(tmp_path / "repo", 64)
    assert _parameter(tmp_path / "repo", "max_live_rows") == "64"
    door = (tmp_path / "repo" / "preprocess" / "config.pbtxt").read_text()
    assert 'string_value: "128"' in door and "max_queue_size: 64" in door      # 64 clients are never refused
    assert served.parse_mode("continuous:int8+stream") == ("continuous", "int8", True)
    assert served.parse_mode("static") == ("static", "fp32", False)
    for bad, why in (("dynamic", "batching in"), ("continuous:fp8", "precision in"), ("static:int8", "continuous"),
                     ("continuous+fast", "stream")):
        with pytest.raises(ValueError, match=why):
            served.set_mode(tmp_path / "repo", bad)


def test_served_batching_flag():
    parser = argparse.ArgumentParser()
    add_bench_command(parser.add_subparsers())
    assert parser.parse_args(["bench"]).served_batching == ("continuous",)
    assert parser.parse_args(["bench", "--served-batching", "continuous,static"]).served_batching == \
        ("continuous", "static")
    assert parser.parse_args(["bench", "--served-batching", "continuous,continuous:int8"]).served_batching == \
        ("continuous", "continuous:int8")
    for bad in ("eager", "static:bf16", ","):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "--served-batching", bad])


def test_static_results_are_named_apart_from_continuous_ones():
    level = served.LoadLevel(8, [served.ServedTiming(0, "vqa", 10, "length", 1.0)], 2.0, 1.5,
                             {"vlm": ModelLoad(1, 1, 1.0, {1: 1}, {}, 0.0, cpu_s=1.0)})
    items = [type("Item", (), {"index": 0, "max_new_tokens": 10})()]
    assert _served_result(level, items).name == "served_c8"
    static = _served_result(level, items, "static")
    assert (static.name, static.label) == ("served_static_c8", "(c) served static batching, c=8")
    int8 = _served_result(level, items, "continuous:int8")
    assert (int8.name, int8.label) == ("served_continuous_int8_c8", "(c) served int8 decoder, c=8")
    assert int8.ttft_p50_s is None                          # not streamed: no time to first token
    # the last request left at 1.5 s of 2: the level drained for a quarter of its wall time
    assert int8.full_load_share == 0.75 and "in flight 75% of the wall time" in int8.note
    streamed = served.LoadLevel(8, [served.ServedTiming(0, "vqa", 10, "length", 1.0, 0.25),
                                    served.ServedTiming(1, "vqa", 10, "length", 1.0, 0.75)], 2.0, 2.0,
                                level.models)
    result = _served_result(streamed, items + [type("Item", (), {"index": 1, "max_new_tokens": 10})()],
                            "continuous+stream")
    assert (result.name, result.label) == ("served_continuous_stream_c8", "(c) served streamed, c=8")
    assert (result.ttft_p50_s, result.ttft_p95_s) == (0.5, 0.725)

