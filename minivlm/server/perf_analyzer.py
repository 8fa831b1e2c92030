"""perf_analyzer from the tritonclient wheel: where it is, what it links, how to point it at our server."""
from __future__ import annotations

import ctypes.util
import os
import shutil
import sys
from pathlib import Path

from minivlm.server.discovery import TritonNotInstalledError, _must_exist, _package_dir, _prepend
from minivlm.server.process import GRPC_ADMIN_HEADER, TritonServer
from minivlm.server.secret_argv import PLACEHOLDER, secret_environment


def find_perf_analyzer() -> Path:
    """The perf_analyzer binary that the tritonclient wheel installs into the environment's bin/."""
    candidates = [Path(sys.prefix) / "bin" / "perf_analyzer", shutil.which("perf_analyzer")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise TritonNotInstalledError("perf_analyzer not found; install tritonclient[all]==2.51.0")


def perf_analyzer_env(base: dict[str, str] | None = None, *, admin_key: str | None = None) -> dict[str, str]:
    """perf_analyzer links libcudart.so.12 (from nvidia-cuda-runtime-cu12) and Debian's libb64.so.0d; with
    `admin_key`, it sees the key where perf_analyzer_command's arguments hold a placeholder."""
    if ctypes.util.find_library("b64") is None:
        raise TritonNotInstalledError("libb64.so.0d missing: run scripts/install_system_deps.sh")
    cudart = _package_dir("nvidia.cuda_runtime") / "lib"
    _must_exist(cudart / "libcudart.so.12")
    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = _prepend(str(cudart), env.get("LD_LIBRARY_PATH"))
    return env if admin_key is None else secret_environment(env, admin_key)


def perf_analyzer_command(server: TritonServer, model: str, *extra: str) -> list[str]:
    """perf_analyzer over gRPC against ``server``; the admin header lets it read server statistics. Run it
    with ``perf_analyzer_env(admin_key=server.admin_key)``: the key itself is not on its command line."""
    return [str(find_perf_analyzer()), "-m", model, "-i", "grpc", "-u", server.grpc_url,
            "-H", f"{GRPC_ADMIN_HEADER}:{PLACEHOLDER}", *extra]
