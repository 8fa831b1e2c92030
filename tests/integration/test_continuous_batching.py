"""Continuous batching in the served generator: a short request does not wait for a long one to finish."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.integration.conftest import make_image
from vlm_client.protocol import GENERATOR_ENGINE
from vlm_tools.bench.server_stats import fetch_stats

LONG_TOKENS = 440         # the tiny model's 512 positions hold 50 image positions, the prompt and these


def _engine_requests(server) -> int:
    """Requests generator_engine has taken in (its execute only queues them, so this counts arrivals)."""
    stats = fetch_stats(server.http_url, server.admin_http_headers)[GENERATOR_ENGINE]
    return int(stats.get("inference_stats", {}).get("success", {}).get("count", 0))


def test_a_short_request_finishes_while_a_long_one_decodes(server, grpc_client):
    long_job = (make_image(40), "[OD]", LONG_TOKENS)
    short_jobs = [(make_image(41 + i), "[VQA] is it red?" if i % 2 else "[CAPTION]", 2 + i % 3) for i in range(3)]
    # the long detection runs free of the JSON grammar, which would close it early on these random weights
    ask = lambda job: grpc_client.ask(job[0], job[1], temperature=0.0, max_new_tokens=job[2],   # noqa: E731
                                      json_constraint=False)
    sequential = [ask(job) for job in [long_job] + short_jobs]
    assert sequential[0].completion_tokens == LONG_TOKENS

    with ThreadPoolExecutor(1) as pool:
        arrivals = _engine_requests(server)
        long_call = pool.submit(lambda: (ask(long_job), time.monotonic()))
        deadline = time.monotonic() + 30
        while _engine_requests(server) == arrivals and time.monotonic() < deadline:
            time.sleep(0.002)                                  # until the long request reached the engine
        shorts = [(ask(job), time.monotonic()) for job in short_jobs]
        long_answer, long_done = long_call.result()

    assert shorts[0][1] < long_done, "a short request waited for the long one to finish"
    assert [a.to_dict() for a in [long_answer] + [s for s, _ in shorts]] == [a.to_dict() for a in sequential]
