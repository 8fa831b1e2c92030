"""Helper for integration tests: a real tritonserver on free ports, its log kept and shown on failure.

Not a test module. Use it from a fixture:

    @pytest.fixture(scope="session")
    def server(model_repository, tmp_path_factory):
        with running_server(model_repository, log_dir=tmp_path_factory.mktemp("triton")) as server:
            yield server
"""
from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from minivlm.server.discovery import TritonServerError, free_ports
from minivlm.server.process import ServerOptions, TritonServer


def _show_log(server: TritonServer, why: str) -> None:
    # stderr, so pytest prints it with the failing test's captured output.
    print(f"\n--- {why}; tritonserver log {server.log_path} (tail) ---\n{server.log_tail(200)}\n---",
          file=sys.stderr)


@contextmanager
def running_server(model_repository: Path, *, log_dir: Path | None = None, **options) -> Iterator[TritonServer]:
    """Yield a started, ready ``TritonServer`` on free loopback ports; ``options`` go to ``ServerOptions``."""
    grpc_port, http_port, metrics_port = free_ports(3)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tritonserver-test-"))
    options.setdefault("drain_timeout_s", 2)   # a client's idle keep-alive connection holds shutdown this long
    server = TritonServer(ServerOptions(
        model_repository=Path(model_repository), grpc_port=grpc_port, http_port=http_port,
        metrics_port=metrics_port, log_file=Path(log_dir) / "tritonserver.log", **options))
    server.start()
    try:
        server.wait_ready()
        yield server
        if server.process.poll() is not None:
            raise TritonServerError(f"tritonserver died during the tests (code {server.process.returncode})")
    except GeneratorExit:      # closed without finishing: not a failure
        raise
    except BaseException as error:
        _show_log(server, f"failed: {type(error).__name__}")
        raise
    finally:
        server.stop()
