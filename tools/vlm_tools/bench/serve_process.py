"""`vlm serve` as a child process, seen from outside (vlm chaos, vlm soak, their tests): its tritonserver, the
server's process group, the python backend's /dev/shm regions, and a stop that reports what the server left."""
from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minivlm.server.discovery import free_ports
from minivlm.server.process import server_ready
from minivlm.server.shm import SHM_DIR

STOP_TIMEOUT_S = 120.0       # vlm serve drains, then stops tritonserver, whose stubs take ~20 s to exit


def random_png(seed: int) -> bytes:
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((96, 128, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def tritonserver_pid(serve_pid: int) -> int | None:
    for child in children(serve_pid):
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].endswith(b"tritonserver"):
                return child
        except OSError:
            continue
    return None


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(poll_s)


def shm_regions() -> set[str]:
    return {path.name for path in SHM_DIR.glob("triton_python_backend_shm_region_*")}


def group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@dataclass(frozen=True)
class Serve:
    process: subprocess.Popen
    grpc_url: str
    http_url: str
    log_path: Path


def start_serve(repository: Path, log_path: Path, startup_timeout_s: float) -> Serve:
    """`vlm serve` on free ports, its output in `log_path`, once the server is ready (stopped again when it
    is not ready in time or exits first)."""
    grpc_port, http_port, metrics_port = free_ports(3)
    command = [sys.executable, "-m", "minivlm.cli", "serve", f"--model-repository={Path(repository).resolve()}",
               f"--grpc-port={grpc_port}", f"--http-port={http_port}", f"--metrics-port={metrics_port}",
               f"--startup-timeout-s={startup_timeout_s}"]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    serve = Serve(process, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}", Path(log_path))
    try:
        wait_for(lambda: server_ready(serve.http_url) or process.poll() is not None,
                 startup_timeout_s, "ready server", 0.25)
        if process.poll() is not None:
            raise RuntimeError(f"vlm serve exited with code {process.returncode}; see {log_path}")
    except BaseException:
        stop_serve(process)
        raise
    return serve


def stop_serve(serve: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM (a normal stop), SIGKILL only past `timeout_s`; the exit code."""
    if serve.poll() is None:
        serve.send_signal(signal.SIGTERM)
    try:
        return serve.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        serve.kill()
        return serve.wait()
