"""Self-healing on a real tritonserver: a python stub killed with SIGKILL (as the OOM killer would) makes
readiness false, its model is reloaded by the watchdog, and the server answers exactly as before; under
`vlm serve`, a killed tritonserver is restarted and a SIGTERM still stops everything cleanly.

Each test runs its own server: killing processes of the shared one would disturb the other tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minivlm.server.discovery import free_ports
from minivlm.server.process import server_ready
from minivlm.server.shm import SHM_DIR
from minivlm.serving.stub_processes import python_stubs
from tests.integration.conftest import make_image
from tests.integration.server_fixture import running_server
from tests.integration.test_triton_server_smoke import _live_group_members, write_repository
from vlm_client import VLMClient

NOT_READY_WITHIN_S = 2.0      # the watchdog polls every 0.1 s
READY_AGAIN_WITHIN_S = 180.0  # generator_engine's reload on 2 busy cores took 15 s (docs/operations.md)


def _wait(condition, timeout_s: float, poll_s: float = 0.02) -> float:
    """Seconds until `condition()` held; fails the test after `timeout_s`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"not within {timeout_s} s"
        time.sleep(poll_s)
    return time.monotonic() - start


def _ready_for(http_url: str, seconds: float) -> bool:
    """Ready now and for `seconds` after: the reload shows ready for a few ms between its unload and load."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not server_ready(http_url):
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def healing_server(model_repository, tmp_path_factory):
    with running_server(model_repository, log_dir=tmp_path_factory.mktemp("triton-heal"), self_heal=True) as server:
        yield server


@pytest.mark.parametrize("model", ["generator_engine", "vision_encoder"])
def test_a_killed_stub_is_reloaded_and_answers_as_before(healing_server, model):
    server = healing_server
    with VLMClient(server.grpc_url, timeout_s=60, retries=0) as client:
        before = client.ask(make_image(3), "[CAPTION]", max_new_tokens=8, temperature=0)
        stub = next(s for s in python_stubs(server.process.pid) if s.model == model)
        os.kill(stub.pid, signal.SIGKILL)
        _wait(lambda: not server_ready(server.http_url), NOT_READY_WITHIN_S)
        _wait(lambda: _ready_for(server.http_url, 1.0), READY_AGAIN_WITHIN_S, poll_s=0.1)
        after = client.ask(make_image(3), "[CAPTION]", max_new_tokens=8, temperature=0)
    assert after == before
    assert stub.pid not in {s.pid for s in python_stubs(server.process.pid)}       # a new process serves
    recovery = server.watchdog.recoveries[-1]
    assert (recovery.model, recovery.error) == (model, None)
    assert {m: state for m, state in server.model_states().items() if state != "READY"} == {}


def _tritonserver_child(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return next(int(c) for c in children if Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")[0]
                .endswith(b"tritonserver"))


def _read_until(process: subprocess.Popen, text: str) -> str:
    """`process`'s output up to the line containing `text` (the test's timeout bounds the wait)."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if text in line:
            return "".join(lines)
    raise AssertionError(f"{text!r} never printed; output:\n{''.join(lines)[-3000:]}")


def test_vlm_serve_restarts_a_killed_tritonserver_and_stops_cleanly(tmp_path):
    repository = write_repository(tmp_path / "repository")          # one tiny python model: fast restarts
    grpc_port, http_port, metrics_port = free_ports(3)
    shm_before = set(SHM_DIR.glob("triton_python_backend_shm_region_*"))
    serve = subprocess.Popen(
        [sys.executable, "-m", "minivlm.cli", "serve", f"--model-repository={repository}",
         f"--grpc-port={grpc_port}", f"--http-port={http_port}", f"--metrics-port={metrics_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    http_url = f"127.0.0.1:{http_port}"
    try:
        # Triton reads ready a moment before `vlm serve` has checked every model: wait for what it prints (a
        # death before "ready" is a failed start, reported rather than restarted; a SIGTERM during a restart
        # cancels it).
        _read_until(serve, "tritonserver ready")
        first = _tritonserver_child(serve.pid)
        os.kill(first, signal.SIGKILL)
        _wait(lambda: not server_ready(http_url), NOT_READY_WITHIN_S)
        output = _read_until(serve, "restarted and ready again")
        assert server_ready(http_url) and "restarting it in 1.0 s" in output
        second = _tritonserver_child(serve.pid)
        assert second != first and _live_group_members(first) == []   # the dead server's stubs are gone
        serve.send_signal(signal.SIGTERM)
        output, _ = serve.communicate(timeout=90)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.communicate()
    assert serve.returncode == 0, output
    assert _live_group_members(second) == []
    assert set(SHM_DIR.glob("triton_python_backend_shm_region_*")) - shm_before == set()
