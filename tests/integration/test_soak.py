"""A one-minute `vlm soak` on the session server: 16 clients, 10% bad requests. No good request is lost, every bad
one gets INVALID_ARGUMENT naming its step, and after the warm-up neither memory nor /dev/shm grows by 5%.
(`vlm soak --minutes 10` is the full run; its numbers are in docs/operations.md.)"""
from __future__ import annotations

from vlm_tools.bench.soak import format_report, soak

MAX_GROWTH_PCT = 5.0


def test_one_minute_soak_loses_nothing_and_does_not_grow(server):
    report = soak(server.grpc_url, server.process.pid, duration_s=60, concurrency=16, bad_fraction=0.1,
                  max_new_tokens=8, warmup_s=30, sample_every_s=2)
    summary = format_report(report)
    print(summary)
    assert report.good_ok > 50, summary
    assert report.lost == 0, summary
    assert report.bad_sent > 5 and report.bad_unclear == {}, summary
    assert report.bad_clear == report.bad_sent, summary
    assert set(report.growth_pct) == {"server_rss", "stubs_rss", "shm"}, summary
    assert all(growth < MAX_GROWTH_PCT for growth in report.growth_pct.values()), summary
    assert server.process.poll() is None
