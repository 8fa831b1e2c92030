"""The reader of Triton's trace JSON, on the shape Triton 2.51 writes for one `vlm` request (trimmed)."""
from __future__ import annotations

import copy
import json

import pytest

from vlm_client.triton_trace import format_trace, main, parse_trace


def stamps(id_, **ns):
    return [{"id": id_, "timestamps": [{"name": name, "ns": value}]} for name, value in ns.items()]


def step(id_, model, start, queue, compute, end, parent=1):
    return [{"id": id_, "model_name": model, "model_version": 1, "parent_id": parent}] + stamps(
        id_, REQUEST_START=start, QUEUE_START=start + 1000, COMPUTE_START=queue, COMPUTE_INPUT_END=queue + 5,
        COMPUTE_OUTPUT_START=compute - 5, COMPUTE_END=compute, REQUEST_END=end)


# Triton writes the steps before the ensemble, latest first, each timestamp as an entry of its own.
ENTRIES = (step(5, "generator", 39_000_000, 44_000_000, 60_000_000, 60_100_000)
           + step(4, "vision_encoder", 29_500_000, 35_000_000, 39_000_000, 39_100_000)
           + step(3, "router", 29_400_000, 31_000_000, 35_000_000, 35_100_000)
           + step(2, "preprocess", 1_000_000, 5_000_000, 29_000_000, 29_500_000)
           + [{"id": 1, "model_name": "vlm", "model_version": 1}]
           + stamps(1, REQUEST_START=900_000, QUEUE_START=910_000, GRPC_WAITREAD_END=800_000,
                    INFER_RESPONSE_COMPLETE=60_200_000, REQUEST_END=60_300_000))


def test_steps_hang_under_their_ensemble_in_the_order_they_started():
    (root,) = parse_trace(ENTRIES)
    assert (root.id, root.model, root.total_s) == (1, "vlm", pytest.approx(0.0594))
    assert [s.model for s in root.steps] == ["preprocess", "router", "vision_encoder", "generator"]
    preprocess = root.steps[0]
    assert preprocess.total_s == pytest.approx(0.0285)
    assert preprocess.queue_s == pytest.approx(0.003999) and preprocess.compute_s == pytest.approx(0.024)
    assert root.queue_s is None and root.compute_s is None         # an ensemble has no compute timestamps


def test_two_requests_in_one_file_stay_apart_oldest_first():
    later = [{**e, "id": e["id"] + 10, **({"parent_id": 11} if "parent_id" in e else {})}
             for e in copy.deepcopy(ENTRIES)]
    for entry in later:
        for stamp in entry.get("timestamps", ()):
            stamp["ns"] += 100_000_000
    roots = parse_trace(later + ENTRIES)
    assert [r.id for r in roots] == [1, 11] and [len(r.steps) for r in roots] == [4, 4]


def test_the_printed_table_names_each_step_with_its_times(tmp_path, capsys):
    path = tmp_path / "trace.json.0"
    path.write_text(json.dumps(ENTRIES))
    assert main([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["trace", "1:", "vlm", "59.4", "ms"]
    assert lines[2].split() == ["preprocess", "28.5", "4.0", "24.0"]
    assert format_trace(parse_trace(ENTRIES)[0]).count("\n") == 5
