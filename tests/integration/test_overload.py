"""Overload on the real server: a burst far past what the pipeline admits is answered or refused with
UNAVAILABLE (Overloaded), nothing else, and the admission door counts every request out again."""
from __future__ import annotations

import concurrent.futures
import time

from tests.integration.conftest import make_image
from vlm_client import Overloaded, VLMClient, VLMError
from vlm_client.metrics import scrape

BURST = 96          # three times preprocess's max_requests_in_flight (32), all at once


def _ask(url: str, image: bytes) -> tuple[str, float]:
    started = time.monotonic()
    with VLMClient(url, timeout_s=60, retries=0) as client:
        try:
            client.ask(image, "[CAPTION]", temperature=0.0, max_new_tokens=24)
            kind = "ok"
        except Overloaded as error:
            kind = "refused" if error.status in ("UNAVAILABLE", "503") else f"odd overload {error!r}"
        except VLMError as error:
            kind = f"{type(error).__name__}: {error}"
    return kind, time.monotonic() - started


def _burst(url: str, count: int) -> list[tuple[str, float]]:
    images = [make_image(200 + i % 4) for i in range(count)]
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda image: _ask(url, image), images))


def test_a_burst_is_answered_or_refused_fast_and_the_door_empties_again(server):
    outcomes = _burst(server.grpc_url, BURST)
    kinds = [kind for kind, _ in outcomes]
    assert set(kinds) <= {"ok", "refused"}, sorted(set(kinds))
    accepted = [s for kind, s in outcomes if kind == "ok"]
    refused = [s for kind, s in outcomes if kind == "refused"]
    assert refused, "a burst three times the door's limit must be partly refused"
    assert len(accepted) >= 16
    assert max(refused) < max(accepted), (max(refused), max(accepted))     # refusals do not wait for decoding

    # Every admitted request rang the door on its way out: as many as the engine decodes at once get in, and
    # the door counts none in the pipeline afterwards (after every earlier test of the session, bad requests
    # and fuzzing included: a request that never rang would still count here).
    again = _burst(server.grpc_url, 16)
    assert [kind for kind, _ in again] == ["ok"] * 16
    deadline = time.monotonic() + 5
    while scrape(server.metrics_url)["vlm_pipeline_requests", frozenset()] != 0:
        assert time.monotonic() < deadline, "the admission door still counts requests that were answered"
        time.sleep(0.1)

