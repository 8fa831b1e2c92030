"""Differencing Triton statistics snapshots into per-model load: batch sizes, queue and compute times."""
import pytest

from vlm_tools.bench.server_stats import loads, model_load


def snapshot(success, queue_ns, batches):
    return {"inference_stats": {"success": {"count": success, "ns": 0}, "queue": {"count": success, "ns": queue_ns}},
            "batch_stats": [{"batch_size": size, "compute_infer": {"count": count, "ns": ns}}
                            for size, (count, ns) in batches.items()]}


def test_a_load_level_is_the_difference_of_two_snapshots():
    before = snapshot(2, 2_000_000, {1: (2, 10_000_000)})
    after = snapshot(12, 52_000_000, {1: (4, 20_000_000), 4: (2, 60_000_000)})
    load = model_load(before, after, cpu_s=3.0)
    assert load.requests == 10
    assert load.batch_sizes == {1: 2, 4: 2}
    assert load.executions == 4 and load.mean_batch == pytest.approx(2.5)
    assert load.ms_per_request["queue"] == pytest.approx(5.0)
    assert load.ms_per_execution == pytest.approx(70 / 4)
    assert load.cpu_s == 3.0


def test_models_without_stats_yet_and_cpu_only_processes():
    result = loads({}, {"router": snapshot(1, 0, {1: (1, 1_000_000)})}, {"tritonserver": 1.0},
                   {"tritonserver": 1.5, "router": 0.2})
    assert result["router"].requests == 1 and result["router"].cpu_s == pytest.approx(0.2)
    assert result["tritonserver"].requests == 0 and result["tritonserver"].cpu_s == pytest.approx(0.5)
