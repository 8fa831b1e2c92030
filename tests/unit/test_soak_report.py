"""vlm soak's arithmetic: growth after the warm-up, and what passes."""
from __future__ import annotations

from vlm_tools.bench.soak import Sample, SoakReport, format_report, growth_pct


def _samples(values: list[float]) -> list[Sample]:
    return [Sample(t_s=10.0 * i, server_rss_mb=v, stubs_rss_mb=2 * v, shm_mb=100.0, processes=3)
            for i, v in enumerate(values)]


def test_growth_ignores_the_warm_up_and_averages_the_ends():
    samples = _samples([50, 60, 100, 100, 100, 104, 106, 110])
    growth = growth_pct(samples, warmup_s=20)                 # from 100,100,100 to 104,106,110
    assert growth == {"server_rss": 6.67, "stubs_rss": 6.67, "shm": 0.0}


def test_growth_needs_two_samples_after_the_warm_up():
    assert growth_pct(_samples([50, 60, 70]), warmup_s=25) == {}


def test_a_report_passes_only_without_loss_unclear_errors_growth_or_leftovers():
    def report(**changes) -> SoakReport:
        fields = dict(duration_s=60, concurrency=16, bad_fraction=0.1, warmup_s=20, good_sent=10, good_ok=10,
                      bad_sent=2, bad_clear=2, growth_pct={"server_rss": 1.0, "stubs_rss": 0.0, "shm": 0.0})
        return SoakReport(**{**fields, **changes})

    assert report().passed() and "PASS" in format_report(report())
    assert not report(good_wrong=1).passed()
    assert not report(good_failed={"ServerError INTERNAL: boom": 1}).passed()
    assert not report(bad_unclear={"empty query: answered": 1}).passed()
    assert not report(growth_pct={"server_rss": 5.0}).passed()
    assert not report(shm_regions_left=["triton_python_backend_shm_region_1"]).passed()
    assert not report(orphan_warnings=1).passed()
    assert not report(good_ok=0, good_sent=0).passed()
