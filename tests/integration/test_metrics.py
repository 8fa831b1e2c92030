"""The generator's metrics on the server's real /metrics endpoint move by exactly what known requests do."""
from __future__ import annotations

import re
import urllib.request

import pytest

from tests.integration.conftest import make_image
from vlm_client import InvalidRequest

_LINE = re.compile(r'^(\w+)(?:\{(.*)\})? ([0-9.eE+-]+|NaN|\+Inf)$')


def scrape(server) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match and match.group(1).startswith("vlm_"):
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            samples[match.group(1), labels] = float(match.group(3))
    return samples


def moved(before, after, name, **labels) -> float:
    key = (name, frozenset(labels.items()))
    return after[key] - before.get(key, 0.0)


def test_each_metric_moves_by_what_the_requests_did(server, grpc_client):
    before = scrape(server)
    captions = [grpc_client.ask(make_image(70 + i), "[CAPTION]", temperature=0.0, max_new_tokens=4) for i in range(2)]
    detection = grpc_client.ask(make_image(72), "Detect all objects", temperature=0.0, max_new_tokens=30)
    with pytest.raises(InvalidRequest):
        grpc_client.ask(make_image(73), "[CAPTION]", max_new_tokens=-5)
    after = scrape(server)

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
