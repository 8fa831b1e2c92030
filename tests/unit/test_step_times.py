"""`vlm ask --trace`'s arithmetic: statistics deltas per ensemble step, the engine's timings, the table."""
from __future__ import annotations

import json

import pytest

from minivlm.server import process
from minivlm.serving.timings import EngineTimings
from vlm_client import VLMError
from vlm_client import protocol as P
from vlm_client.cli import format_step_times
from vlm_client.step_times import (STEPS, StepTimes, StepTimesUnavailable, admin_headers, engine_step_times,
                                   model_step_times, model_totals, settled)


def stats(**models) -> dict:
    """gRPC-style statistics JSON: int64 as strings, zero counters left out. models: name=(count, ns each)."""
    entries = []
    for name, (count, queue, cin, infer, cout) in models.items():
        inference = {"success": {"count": str(count), "ns": "1"}} if count else {}
        for field, ns in (("queue", queue), ("compute_input", cin), ("compute_infer", infer),
                          ("compute_output", cout)):
            if ns:
                inference[field] = {"count": str(count), "ns": str(ns)}
        entries.append({"name": name, "version": "1", "inference_stats": inference})
    return {"model_stats": entries}


BEFORE = stats(preprocess=(0, 0, 0, 0, 0), router=(3, 10, 20, 30, 40), vision_encoder=(3, 0, 5, 500, 5),
               generator=(3, 0, 0, 9, 0))
AFTER = stats(preprocess=(1, 1_000_000, 0, 4_000_000, 0), router=(4, 2_000_010, 20, 1_000_030, 40),
              vision_encoder=(4, 0, 5, 30_000_500, 1_000_005), generator=(5, 0, 0, 99, 0))


def test_each_step_is_its_models_queue_plus_compute_time_across_the_request():
    assert model_step_times(BEFORE, AFTER) == pytest.approx(
        {"preprocess": 0.005, "router": 0.003, "vision encoder": 0.031})


def test_versions_add_up_and_http_ints_read_like_grpc_strings():
    http = {"model_stats": [{"name": "router", "version": "1", "inference_stats": {"success": {"count": 2},
                                                                                    "queue": {"ns": 7}}},
                            {"name": "router", "version": "2", "inference_stats": {"compute_infer": {"ns": 5}}}]}
    assert model_totals(http) == {"router": (2, 12)}


def test_another_request_in_between_makes_the_numbers_unattributable():
    busy = stats(preprocess=(2, 1, 1, 1, 1), router=(4, 0, 0, 0, 0), vision_encoder=(4, 0, 0, 0, 0))
    with pytest.raises(StepTimesUnavailable, match="preprocess served 2 requests"):
        model_step_times(BEFORE, busy)


def test_settled_waits_until_every_step_counted_the_request():
    assert settled(BEFORE, AFTER)
    late = stats(preprocess=(1, 1, 0, 0, 0), router=(4, 0, 0, 0, 0), vision_encoder=(3, 0, 0, 0, 0))
    assert not settled(BEFORE, late)


def test_engine_timings_round_trip_through_the_timings_output():
    timings = EngineTimings.from_marks(submitted=10.0, admitted=10.5, first_token=12.0, finished=15.0)
    assert engine_step_times(timings.to_json()) == {"queue": 0.5, "prefill": 1.5, "decode": 3.0}
    with pytest.raises(VLMError, match="malformed 'timings'"):
        engine_step_times("{}")


def test_engine_spans_are_never_negative_and_add_up_to_the_engines_time():
    timings = EngineTimings.from_marks(submitted=10.0, admitted=9.0, first_token=12.0, finished=11.0)
    assert (timings.queue_s, timings.prefill_s, timings.decode_s) == (0.0, 2.0, 0.0)
    assert sum(json.loads(timings.to_json()).values()) == 2.0


def test_the_table_has_every_step_other_and_total_in_order():
    steps = StepTimes(dict(zip(STEPS, (0.004, 0.002, 0.030, 0.001, 0.120, 0.500))), total_s=0.700)
    lines = format_step_times(steps).splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["preprocess", "router", "vision", "queue", "prefill", "decode",
                                                   "other", "total"]
    # router (2 ms) runs beside the vision encoder (30 ms): only the longer counts, other = 700 - 655
    assert lines[-2].split()[-2] == "45.0" and lines[-1].split()[-2] == "700.0"
    assert steps.critical_path_s == pytest.approx(0.655)
    assert steps.to_dict()["steps_s"]["prefill"] == 0.120


def test_the_admin_header_is_the_one_the_server_checks():
    assert admin_headers("grpc", "k") == {process.GRPC_ADMIN_HEADER: "k"}
    assert admin_headers("http", "k") == {process.ADMIN_HEADER: "k"}


def test_timings_is_requested_only_when_tracing():
    assert P.TIMINGS not in P.ENSEMBLE_OUTPUTS and P.ANSWER_OUTPUTS == P.ENSEMBLE_OUTPUTS + (P.TIMINGS,)
