"""Where the nvidia-pytriton wheel keeps tritonserver, its libraries, the python backend and its stubs.

The backend folder inside site-packages may be read-only and holds no stub, so it is copied to a writable
cache folder with the stub of the running Python beside ``libtriton_python.so``.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import socket
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path


class TritonServerError(RuntimeError):
    """The server could not be found, started, or stopped; the message says why (with the log tail)."""


class TritonNotInstalledError(TritonServerError):
    """A file the server needs is missing from the installed wheels or the system."""


@dataclass(frozen=True)
class TritonPaths:
    server: Path          # the tritonserver binary
    libs: Path            # nvidia_pytriton.libs: the server's shared libraries
    python_backend: Path  # folder holding libtriton_python.so and triton_python_backend_utils.py
    stub: Path            # triton_python_backend_stub built for the running Python
    version: str          # nvidia-pytriton version, used to key the backend cache


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # find without importing: pytriton's import is slow
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalledError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _must_exist(path: Path) -> Path:
    if not path.exists():
        raise TritonNotInstalledError(f"expected {path}; is the package that ships it installed?")
    return path


def find_triton_paths(python_version: str | None = None) -> TritonPaths:
    """Locate the server, its libraries, the python backend and the stub for ``python_version`` (3.X)."""
    python_version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    root = _package_dir("pytriton") / "tritonserver"
    return TritonPaths(
        server=_must_exist(root / "bin" / "tritonserver"),
        libs=_must_exist(root.parent.parent / "nvidia_pytriton.libs"),
        python_backend=_must_exist(root / "backends" / "python"),
        stub=_must_exist(root / "python_backend_stubs" / python_version / "triton_python_backend_stub"),
        version=importlib.metadata.version("nvidia-pytriton"),
    )


def default_backend_dir(paths: TritonPaths) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    python_tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    return cache / "minivlm" / "triton-backends" / f"{paths.version}-{python_tag}"


def _copy_if_changed(source: Path, target: Path) -> None:
    if target.exists() and target.stat().st_size == source.stat().st_size:
        return
    # Copy then rename: a second server preparing the same cache never sees a half-written file.
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.copy2(source, partial)
    os.replace(partial, target)


def prepare_backend_dir(paths: TritonPaths, target: Path | None = None) -> Path:
    """Return a backend directory holding ``python/`` with the backend and the stub beside it."""
    target = target or default_backend_dir(paths)
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in paths.python_backend.iterdir():
        if source.is_file():
            _copy_if_changed(source, python_dir / source.name)
    _copy_if_changed(paths.stub, python_dir / paths.stub.name)
    return target


def _prepend(value: str, existing: str | None) -> str:
    return f"{value}{os.pathsep}{existing}" if existing else value


def server_environment(paths: TritonPaths, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver: this interpreter's libpython first, then the wheel's libraries."""
    env = dict(os.environ if base is None else base)
    # The stub links libpython3.X.so; without this it may load the system's copy of another patch
    # release and fail on import ssl with "undefined symbol: _PyModule_Add" (see DESIGN.md).
    libdirs = [str(sysconfig.get_config_var("LIBDIR")), str(paths.libs)]
    env["LD_LIBRARY_PATH"] = _prepend(os.pathsep.join(libdirs), env.get("LD_LIBRARY_PATH"))
    # The stub's embedded Python finds its environment (the venv's site-packages) through PATH.
    env["PATH"] = _prepend(str(Path(sys.prefix) / "bin"), env.get("PATH"))
    return env


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports; all sockets stay open until all are chosen so none repeats."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]
