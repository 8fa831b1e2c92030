"""`ask_traced` / `vlm ask --trace` against the real server: every step's time is there, positive, and the
steps add up to no more than the wall time the client measured."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import make_image
from vlm_client import VLMClient, VLMError
from vlm_client.step_times import STEPS


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_each_step_is_timed_and_the_steps_fit_in_the_wall_time(server, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with VLMClient(url, protocol=protocol, timeout_s=120) as client:
        plain = client.ask(make_image(90), "[CAPTION]", temperature=0.0, max_new_tokens=6)
        start = time.perf_counter()
        answer, steps = client.ask_traced(make_image(90), "[CAPTION]", admin_key=server.admin_key,
                                          temperature=0.0, max_new_tokens=6)
        wall_s = time.perf_counter() - start
    assert answer == plain                                   # tracing does not change the answer
    assert tuple(steps.steps) == STEPS
    assert all(seconds > 0 for seconds in steps.steps.values()), steps.steps
    assert steps.critical_path_s <= steps.total_s <= wall_s  # router and vision encoder overlap: not the sum
    assert steps.other_s >= 0
    assert steps.steps["decode"] > 0 and answer.completion_tokens > 1


def test_step_times_need_the_admin_key(server, grpc_client):
    with pytest.raises(VLMError):
        grpc_client.ask_traced(make_image(91), "[CAPTION]", admin_key="not-the-key", max_new_tokens=2)


def test_vlm_ask_trace_prints_the_step_table(server, tmp_path):
    image = tmp_path / "image.png"
    image.write_bytes(make_image(92))
    out = subprocess.run([sys.executable, "-m", "minivlm.cli", "ask", "-u", server.grpc_url, "--trace",
                          "--temperature", "0", "--max-new-tokens", "4", str(image), "[CAPTION]"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VLM_ADMIN_KEY": server.admin_key})
    assert out.returncode == 0, out.stderr
    table = out.stdout.split("step times", 1)[1].splitlines()[1:]
    assert [line.rsplit(None, 2)[0] for line in table] == list(STEPS) + ["other", "total"]
    print(out.stdout)


def test_the_streamed_answer_still_ends_with_the_whole_answer(grpc_client):
    """vlm_stream declares the timings output too; its final response must still parse as the answer."""
    chunks = list(grpc_client.ask_stream(make_image(93), "[CAPTION]", temperature=0.0, max_new_tokens=4))
    assert chunks[-1].answer == grpc_client.ask(make_image(93), "[CAPTION]", temperature=0.0, max_new_tokens=4)
