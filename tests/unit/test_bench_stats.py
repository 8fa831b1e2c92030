"""Percentiles and the per-system summary."""
import pytest

from vlm_tools.bench.stats import percentiles, summarize


def test_percentiles_interpolate_between_ranks():
    assert percentiles([1.0, 2.0]) == pytest.approx([1.5, 1.95, 1.99])
    assert percentiles(list(range(1, 102))) == pytest.approx([51, 96, 100])
    assert percentiles([3.0]) == [3.0, 3.0, 3.0]


def test_percentiles_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        percentiles([])


def test_summary_rates_come_from_wall_time_not_latencies():
    summary = summarize([1.0, 2.0, 3.0, 4.0], tokens=200, wall_s=5.0)
    assert summary.requests == 4
    assert summary.requests_per_s == pytest.approx(0.8)
    assert summary.tokens_per_s == pytest.approx(40.0)
    assert summary.latency_mean_s == pytest.approx(2.5)
    assert summary.latency_p50_s == pytest.approx(2.5)
    assert summary.latency_p99_s == pytest.approx(3.97)


def test_summary_needs_a_positive_wall_time():
    with pytest.raises(ValueError, match="wall_s"):
        summarize([1.0], tokens=1, wall_s=0)
