"""A request's deadline on the real server: the SDK sends its timeout_s, and once it passes the request's
rows leave generator_engine's batch, measured in decode row steps (vlm_decoded_rows_total), not in time."""
from __future__ import annotations

import concurrent.futures
import time

import pytest

from tests.integration.conftest import make_image
from vlm_client import DeadlineExceeded, VLMClient
from vlm_client.metrics import scrape

LONG_OD = dict(task="od", max_new_tokens=150, json_constraint=False, temperature=0.0)


def decoded_rows(server) -> float:
    """The engine's row-step count once it stops moving (the counter is reported when the batch is idle)."""
    last = -1.0
    while True:
        now = scrape(server.metrics_url)["vlm_decoded_rows_total", frozenset()]
        if now == last:
            return now
        last = now
        time.sleep(0.3)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_expired_150_token_request_stops_consuming_decode_steps(server, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    image = make_image(90)
    with VLMClient(url, protocol=protocol, timeout_s=60) as patient:
        start = decoded_rows(server)
        full = patient.ask(image, "find the objects", **LONG_OD)
        full_steps = decoded_rows(server) - start
    assert full.completion_tokens == 150 and full.finish_reason == "length"
    assert full_steps == 150

    # The same request with a 5 ms deadline (counted from when the generator receives it): it gets the server's
    # clear error, and its row leaves the batch instead of decoding its 150 tokens. (The tiny model decodes
    # them in about 30 ms, too little for a deadline to land mid-way reliably; tests/unit/test_scheduler.py
    # stops a request mid-decode with slowed steps.)
    with VLMClient(url, protocol=protocol, timeout_s=0.005, retries=0) as hurried:
        start = decoded_rows(server)
        with pytest.raises(DeadlineExceeded) as info:
            hurried.ask(image, "find the objects", **LONG_OD)
        spent = decoded_rows(server) - start
    assert info.value.step == "generator" and info.value.message.startswith("deadline exceeded: ")
    assert info.value.status in ("UNAVAILABLE", "503")
    assert spent < full_steps / 4, spent


def test_neighbours_of_an_expired_request_are_answered_whole(server):
    """A request that expires beside another leaves the other's greedy answer unchanged (rows dropped mid-decode
    are checked in tests/unit/test_continuous.py and test_scheduler.py, where a deadline can land mid-way)."""
    image = make_image(91)
    with VLMClient(server.grpc_url, timeout_s=60) as patient:
        alone = patient.ask(image, "[CAPTION]", temperature=0.0, max_new_tokens=40)
        with VLMClient(server.grpc_url, timeout_s=0.005, retries=0) as hurried:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                expiring = pool.submit(hurried.ask, make_image(92), "find the objects", **LONG_OD)
                beside = pool.submit(patient.ask, image, "[CAPTION]", temperature=0.0, max_new_tokens=40)
                with pytest.raises(DeadlineExceeded):
                    expiring.result()
                assert beside.result() == alone
