"""`vlm serve` as a child process, seen from outside (vlm chaos, vlm soak, their tests): its tritonserver, the
server's process group, the python backend's /dev/shm regions, and a stop that reports what the server left."""
from __future__ import annotations

import io
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

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


def stop_serve(serve: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM (a normal stop), SIGKILL only past `timeout_s`; the exit code."""
    if serve.poll() is None:
        serve.send_signal(signal.SIGTERM)
    try:
        return serve.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        serve.kill()
        return serve.wait()
