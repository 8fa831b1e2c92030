"""The generator's metrics on the server's real /metrics endpoint move by exactly what known requests do."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import make_image
from vlm_client import InvalidRequest
from vlm_client.metrics import Interval, scrape


def moved(before, after, name, **labels) -> float:
    key = (name, frozenset(labels.items()))
    return after[key] - before.get(key, 0.0)


def test_each_metric_moves_by_what_the_requests_did(server, grpc_client):
    before = scrape(server.metrics_url)
    captions = [grpc_client.ask(make_image(70 + i), "[CAPTION]", temperature=0.0, max_new_tokens=4) for i in range(2)]
    detection = grpc_client.ask(make_image(72), "Detect all objects", temperature=0.0, max_new_tokens=30)
    with pytest.raises(InvalidRequest):
        grpc_client.ask(make_image(73), "[CAPTION]", max_new_tokens=-5)
    after = scrape(server.metrics_url)

    assert moved(before, after, "vlm_requests_total", routing="tag", task="caption") == 2
    assert moved(before, after, "vlm_requests_total", routing=detection.routing, task="od") == 1
    assert moved(before, after, "vlm_router_confidence_count") == 1
    assert moved(before, after, "vlm_router_confidence_sum") == pytest.approx(detection.confidence, abs=1e-5)
    assert moved(before, after, "vlm_generated_tokens_total", task="caption") == \
        sum(a.completion_tokens for a in captions)
    assert moved(before, after, "vlm_generated_tokens_total", task="od") == detection.completion_tokens
    assert moved(before, after, "vlm_time_to_first_token_seconds_count", task="caption") == 2
    assert moved(before, after, "vlm_time_to_first_token_seconds_count", task="od") == 1
    assert moved(before, after, "vlm_detection_answers_total", outcome="parsed") == 1
    assert moved(before, after, "vlm_refused_requests_total", reason="invalid_request") == 1
    assert after["vlm_waiting_requests", frozenset()] == 0

    interval = Interval.between(before, after, seconds=1.0)          # what `vlm top` shows for this window
    assert interval.requests_per_s == 3 and interval.refused_per_s["invalid_request"] == 1
    assert interval.routing_mix == {"tag": pytest.approx(2 / 3), detection.routing: pytest.approx(1 / 3)}
    assert 0 < interval.ttft_p50_s <= interval.ttft_p95_s


def test_vlm_top_prints_the_servers_numbers(server):
    out = subprocess.run([sys.executable, "-m", "minivlm.cli", "top", "--once", "--interval-s", "0.2",
                          "-u", server.metrics_url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for row in ("requests/s", "time to first token p50 / p95", "waiting requests / live decode rows", "routing"):
        assert row in out.stdout
