"""The admin key is in no process list and no log, yet unlocks the restricted endpoints; `vlm serve` keeps it in a
0600 file, prints the file's path, and a normal stop (SIGTERM) leaves no process and no /dev/shm region."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tritonclient.http as httpclient

from minivlm.server.discovery import free_ports
from minivlm.server.process import server_ready
from vlm_client import VLMClient
from tests.integration.conftest import make_image
from vlm_tools.bench.serve_process import group_members, shm_regions, tritonserver_pid


def leaks(key: str, pids: list[int] | None = None) -> list[str]:
    """Where `key` shows: every process's command line, and the environment of `pids` (ours to read)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if key.encode() in (proc / "cmdline").read_bytes():
                found.append(f"{proc}/cmdline")
            if pids is not None and int(proc.name) in pids and key.encode() in (proc / "environ").read_bytes():
                found.append(f"{proc}/environ")
        except OSError:
            continue
    return found


def test_admin_key_is_in_no_process_list_nor_log_and_still_works(server):
    members = group_members(server.process.pid)
    assert len(members) > 1                     # the server and its python stubs
    assert leaks(server.admin_key, members) == []
    assert server.admin_key not in server.log_path.read_text(errors="replace")
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.get_model_repository_index(headers=server.admin_http_headers)


def test_vlm_serve_prints_the_key_file_not_the_key_and_stops_clean(model_repository, tmp_path):
    key_file = tmp_path / "secrets" / "admin-key"
    grpc_port, http_port, metrics_port = free_ports(3)
    shm_before = shm_regions()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "minivlm.cli", "serve", f"--model-repository={model_repository}",
               f"--grpc-port={grpc_port}", f"--http-port={http_port}", f"--metrics-port={metrics_port}",
               f"--admin-key-file={key_file}"]
    with open(log, "wb") as out:
        serve = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600      # ready once it says so: then SIGTERM is a normal stop
        while "tritonserver ready" not in log.read_text() and serve.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert serve.poll() is None and server_ready(f"127.0.0.1:{http_port}"), log.read_text()
        key = key_file.read_text().strip()
        assert key_file.stat().st_mode & 0o777 == 0o600
        triton_pid = tritonserver_pid(serve.pid)
        assert leaks(key, [serve.pid, *group_members(triton_pid)]) == []
        with VLMClient(f"127.0.0.1:{grpc_port}", timeout_s=120) as client:
            assert client.ask(make_image(5), "[CAPTION]", max_new_tokens=2).text is not None
        index = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}").get_model_repository_index(
            headers={"admin-key": key})
        assert {model["name"] for model in index} >= {"vlm", "generator_engine"}
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=120)
    output = log.read_text(errors="replace")
    assert str(key_file) in output and key not in output, output
    assert code == 0, output
    time.sleep(0.5)
    assert group_members(triton_pid) == []
    assert sorted(shm_regions() - shm_before) == []
    assert "orphaned" not in output, output
    assert os.path.exists(key_file)
