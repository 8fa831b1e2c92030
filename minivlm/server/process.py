"""One real ``tritonserver`` (2.51) process: start, wait until every model is ready, stop cleanly.

Anonymous clients may only check health, read metadata/config and run inference: model control,
shared memory, statistics, trace and logging need a random admin key held by ``TritonServer`` (and, with
`admin_key_file`, in that 0600 file). The key is in no process list and no log: tritonserver's command line
carries a placeholder that a preloaded library swaps for it (minivlm.server.secret_argv).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from minivlm.server.discovery import (
    TritonPaths,
    TritonServerError,
    find_triton_paths,
    prepare_backend_dir,
    server_environment,
)
from minivlm.server.secret_argv import PLACEHOLDER, secret_environment
from minivlm.server.shm import SHM_DIR, remove_orphaned_shm
from minivlm.server.supervisor import RestartPolicy, StartupCancelled, supervise
from minivlm.server.watchdog import ModelWatchdog

log = logging.getLogger(__name__)

MiB = 1024 * 1024
ADMIN_HEADER = "admin-key"                                # HTTP header name
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"  # gRPC metadata key: Triton adds this prefix
# Everything but health, metadata, model-config and inference. model-config stays open because
# perf_analyzer and clients read it; model-repository covers load/unload (model control).
RESTRICTED_APIS = ("model-repository", "shared-memory", "statistics", "trace", "logging")


def server_ready(http_url: str, *, timeout_s: float = 1.0) -> bool:
    """Triton's /v2/health/ready at `http_url` (host:port) answers 200; for a server this process does not own
    (one under `vlm serve`). Strict readiness is on, so every model must be ready too."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _wait_for_group_exit(pgid: int, *, timeout_s: float) -> None:
    """SIGKILL is asynchronous: wait until no process of the server's group is left (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = False
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if os.getpgid(int(proc.name)) == pgid:
                    alive = True
                    break
            except (ProcessLookupError, PermissionError, ValueError):
                continue
        if not alive:
            return
        time.sleep(0.05)


def _term_when_parent_dies() -> None:
    """Runs in the child between fork and exec: ask Linux for SIGTERM when the parent goes away."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True, kw_only=True)
class GrpcTls:
    """TLS on the gRPC endpoint (PEM files). With `client_ca`, mutual TLS: only clients presenting a
    certificate signed by it are served. Triton 2.51's HTTP endpoint has no TLS: keep it on loopback or put a
    TLS-terminating proxy in front."""
    server_cert: Path
    server_key: Path
    client_ca: Path | None = None

    def __post_init__(self):
        for path in (self.server_cert, self.server_key, self.client_ca):
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"TLS file not found: {path}")

    def flags(self) -> list[str]:
        flags = ["--grpc-use-ssl=true", f"--grpc-server-cert={Path(self.server_cert).resolve()}",
                 f"--grpc-server-key={Path(self.server_key).resolve()}"]
        if self.client_ca is not None:
            flags += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={Path(self.client_ca).resolve()}"]
        return flags


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    model_repository: Path
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    host: str = "127.0.0.1"                     # loopback: expose it deliberately, behind a proxy
    startup_timeout_s: float = 120.0
    # After SIGTERM: in-flight requests, open connections and model unloading. The generator's 16 forwarder
    # stubs take about 20 s to unload one after another (measured); a shorter drain makes the server give up
    # and exit 1, and the stubs it leaves behind are killed with their shared memory still in /dev/shm.
    drain_timeout_s: int = 30
    stop_timeout_s: float = 45.0                # after SIGTERM: SIGKILL; longer than drain_timeout_s
    log_verbose: int = 0
    model_control_mode: str = "none"
    # Reload a model whose python stub died (minivlm.server.watchdog); needs explicit model control, so it
    # replaces model_control_mode with "explicit" and loads every model at startup.
    self_heal: bool = False
    restricted_apis: Sequence[str] = RESTRICTED_APIS
    # Where the admin key lives for the people and tools who need it (mode 0600): read if the file exists,
    # else a new random key is written there. None: the key stays in this process only.
    admin_key_file: Path | None = None
    # Python-backend shared memory per model instance, resident in /dev/shm (RAM) for the server's life: one
    # batch of 8 is 8 x 197 x 576 fp32 embeddings (3.6 MB) plus 8 x 3 x 224 x 224 fp32 pixel values (4.8 MB);
    # a request's inputs and outputs both live there. The 1 MB default would grow on every call; 64 MB cost
    # 1.3 GB per server across its ~20 instances.
    shm_default_byte_size: int = 24 * MiB
    shm_growth_byte_size: int = 16 * MiB
    backend_config: Sequence[str] = ()          # extra "<backend>,<key>=<value>" settings
    # Where Triton's trace API writes traces (docs/operations.md "Tracing a request"). Fixed at startup:
    # 2.51 refuses to change the file over the network. Tracing stays off until an admin turns it on.
    trace_file: Path | None = None
    grpc_tls: GrpcTls | None = None             # None: plaintext gRPC
    backend_directory: Path | None = None       # default: a per-version cache folder
    log_file: Path | None = None                # server stdout+stderr; default: a temporary file
    # Linux: SIGTERM the server when the thread that started it dies, so a killed test run or CLI leaves
    # no orphan server holding ports. Start it from a long-lived thread (the main thread).
    die_with_parent: bool = True


class TritonServer:
    """One tritonserver process: ``start()``, ``wait_ready()``, ``stop()``, or use it as a context manager."""

    def __init__(self, options: ServerOptions, *, paths: TritonPaths | None = None) -> None:
        self.options = options
        self.paths = paths or find_triton_paths()
        self.admin_key = _admin_key(options.admin_key_file)
        self.process: subprocess.Popen | None = None
        self.watchdog: ModelWatchdog | None = None
        self.starts = 0
        self._started_at = time.time()
        self.log_path = options.log_file or Path(tempfile.mkdtemp(prefix="tritonserver-")) / "server.log"

    # Endpoints and the headers that unlock the restricted APIs.
    @property
    def grpc_url(self) -> str:
        return f"{self.options.host}:{self.options.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.options.host}:{self.options.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.options.host}:{self.options.metrics_port}/metrics"

    @property
    def admin_http_headers(self) -> dict[str, str]:
        return {ADMIN_HEADER: self.admin_key}

    @property
    def admin_grpc_headers(self) -> dict[str, str]:
        return {GRPC_ADMIN_HEADER: self.admin_key}

    def _restricted_flags(self) -> list[str]:
        # Triton 2.51 syntax: <api>,<api>,...:<header>=<value>, and no file or environment option. The value
        # is a placeholder: /proc/<pid>/cmdline is readable by every local user (see start()).
        if not self.options.restricted_apis:
            return []
        group = f"{','.join(self.options.restricted_apis)}:{ADMIN_HEADER}={PLACEHOLDER}"
        return [f"--grpc-restricted-protocol={group}", f"--http-restricted-api={group}"]

    def command(self, backend_directory: Path) -> list[str]:
        o = self.options
        command = [
            str(self.paths.server),
            f"--model-repository={Path(o.model_repository).resolve()}",
            f"--backend-directory={backend_directory}",
        ]
        if o.self_heal:
            command += ["--model-control-mode=explicit", "--load-model=*"]
        else:
            command += [f"--model-control-mode={o.model_control_mode}"]
        command += [
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--exit-timeout-secs={o.drain_timeout_s}",   # then it exits with code 1
            f"--log-verbose={o.log_verbose}",
            f"--grpc-address={o.host}", f"--grpc-port={o.grpc_port}",
            f"--http-address={o.host}", f"--http-port={o.http_port}",
            f"--metrics-address={o.host}", f"--metrics-port={o.metrics_port}",
            f"--backend-config=python,shm-default-byte-size={o.shm_default_byte_size}",
            f"--backend-config=python,shm-growth-byte-size={o.shm_growth_byte_size}",
        ]
        command += [f"--backend-config={setting}" for setting in o.backend_config]
        command += o.grpc_tls.flags() if o.grpc_tls else []
        if o.trace_file is not None:
            command += ["--trace-config=mode=triton", f"--trace-config=triton,file={Path(o.trace_file).resolve()}"]
        return command + self._restricted_flags()

    def start(self) -> None:
        if self.process is not None:
            raise TritonServerError(f"tritonserver already started (pid {self.process.pid})")
        backend_directory = prepare_backend_dir(self.paths, self.options.backend_directory)
        env = server_environment(self.paths)
        if self.options.restricted_apis:     # tritonserver reads the key from its environment, not argv
            env = secret_environment(env, self.admin_key)
        self._started_at = time.time()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A restarted server appends: the log of the one that died is what explains the restart.
        with open(self.log_path, "ab" if self.starts else "wb") as log_file:
            # A new session: Ctrl-C in a terminal reaches only us (we forward it), and stop() can kill
            # the python-backend stubs with the server as one process group.
            self.process = subprocess.Popen(
                self.command(backend_directory), env=env,
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_term_when_parent_dies if self.options.die_with_parent else None)
        self.starts += 1
        log.info("started tritonserver pid %d, log %s", self.process.pid, self.log_path)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no server log)"

    def server_pid(self) -> int | None:
        """The server's pid while it runs, None once it has exited (or before it started)."""
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid

    def _http(self, method: str, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://{self.http_url}{path}", method=method,
                                         headers=self.admin_http_headers,
                                         data=b"{}" if method == "POST" else None)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def model_index(self) -> list[dict]:
        """The repository index: [{"name", "version", "state", "reason"}, ...] (needs the admin key)."""
        status, body = self._http("POST", "/v2/repository/index")
        if status != 200:
            raise TritonServerError(f"repository index returned HTTP {status}: {body[:300]!r}")
        return json.loads(body)

    def model_states(self) -> dict[str, str]:
        """{model name: READY, LOADING, UNLOADING, UNAVAILABLE, ...} from the repository index."""
        return {model["name"]: model.get("state", "UNKNOWN") for model in self.model_index()}

    def _control(self, action: str, name: str, timeout_s: float) -> None:
        status, body = self._http("POST", f"/v2/repository/models/{name}/{action}", timeout_s=timeout_s)
        if status != 200:
            raise TritonServerError(f"{action} of model {name!r} returned HTTP {status}: {body[:300]!r}")

    def unload_model(self, name: str) -> None:
        """Start unloading `name` (explicit model control); it is UNLOADING until its requests are done."""
        self._control("unload", name, timeout_s=30.0)

    def load_model(self, name: str) -> None:
        """Load `name` (explicit model control); returns once it and the ensembles using it are ready."""
        self._control("load", name, timeout_s=self.options.startup_timeout_s)

    def _not_ready(self) -> list[str]:
        """What is not ready yet: empty when the server and every model in the index are ready."""
        try:
            if self._http("GET", "/v2/health/ready")[0] != 200:
                return ["server"]
            names = sorted({model["name"] for model in self.model_index()})
            return [name for name in names if self._http("GET", f"/v2/models/{name}/ready")[0] != 200]
        except (urllib.error.URLError, ConnectionError, TimeoutError, TritonServerError) as error:
            return [f"server ({error})"]

    def wait_ready(self, timeout_s: float | None = None, *, stop_when: Callable[[], bool] | None = None) -> None:
        """Poll health and each model's readiness; fail fast with the log tail if the server dies, and with
        StartupCancelled as soon as `stop_when()` is true (a Ctrl-C during a restart)."""
        timeout_s = self.options.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            if stop_when is not None and stop_when():
                raise StartupCancelled("startup cancelled")
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise TritonServerError(f"tritonserver exited (code {code}) before it was ready; "
                                        f"log tail:\n{self.log_tail()}")
            pending = self._not_ready()
            if not pending:
                log.info("tritonserver ready: grpc %s, http %s", self.grpc_url, self.http_url)
                if self.options.self_heal and self.watchdog is None:
                    self.watchdog = ModelWatchdog(self, on_failure=self._give_up_on_model).start()
                return
            if time.monotonic() > deadline:
                raise TritonServerError(f"tritonserver not ready after {timeout_s:.0f} s (waiting for "
                                        f"{', '.join(pending)}); log tail:\n{self.log_tail()}")
            time.sleep(0.25)

    def _give_up_on_model(self, model: str, error: str) -> None:
        """A model the watchdog cannot reload: stop the whole server (draining the other models' requests)
        rather than keep one up that fails requests; `vlm serve` restarts it."""
        log.error("model %r cannot be reloaded (%s): stopping tritonserver", model, error)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def _kill_group(self) -> None:
        try:  # stubs left behind by a killed server share its process group
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal the server (SIGTERM lets it drain), SIGKILL the group after ``stop_timeout_s``."""
        if self.watchdog is not None:     # first: the stubs a stopping server ends are not to be reloaded
            self.watchdog.stop()
            self.watchdog = None
        if self.process is None:
            return None
        if self.process.poll() is None:
            log.info("stopping tritonserver pid %d", self.process.pid)
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=self.options.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver pid %d ignored signal %d; killing it", self.process.pid, sig)
        self._kill_group()
        code = self.process.wait()
        _wait_for_group_exit(self.process.pid, timeout_s=5.0)     # stubs unmap their regions as they die
        removed = remove_orphaned_shm(since=self._started_at)
        if removed:     # a server that had to be killed cannot unlink its regions, and /dev/shm is RAM
            log.warning("removed %d orphaned shared-memory regions from %s", removed, SHM_DIR)
        return code

    def restart(self, stop_when: Callable[[], bool] | None = None) -> None:
        """Stop what is left of the server (its stubs, its shared memory), start it again, wait until ready.
        The admin key and the log file stay the same."""
        self.stop()
        self.process = None
        self.start()
        self.wait_ready(stop_when=stop_when)

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def serve_forever(self, out: TextIO = sys.stdout, restart_policy: RestartPolicy | None = None) -> int:
        """CLI helper: start, wait ready, write the endpoints to ``out``, run until SIGINT/SIGTERM; a server
        that dies meanwhile is restarted as `restart_policy` allows (None: never, TritonServerError).

        Returns the server's exit code. Ctrl-C during startup raises KeyboardInterrupt (server stopped).
        """
        with self, _stop_signals() as received:
            tls = self.options.grpc_tls
            security = "" if tls is None else " (mutual TLS)" if tls.client_ca else " (TLS)"
            out.write(f"tritonserver ready\n  grpc    {self.grpc_url}{security}\n  http    {self.http_url}\n"
                      f"  metrics {self.metrics_url}\n  log     {self.log_path}\n")
            out.flush()
            return supervise(self, received, restart_policy or RestartPolicy(max_restarts=0))


def _admin_key(path: Path | None) -> str:
    """A new random key, or the one in `path` (which must be private to its owner); a new key is written there
    with mode 0600."""
    if path is None:
        return secrets.token_urlsafe(32)
    path = Path(path)
    if not path.exists():
        try:
            return _write_new_key(path)
        except FileExistsError:      # another server wrote it meanwhile: use that one
            pass
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise TritonServerError(f"admin key file {path} is readable by others (mode {mode:o}); chmod 600 it")
    key = path.read_text().strip()
    if not re.fullmatch(r"[A-Za-z0-9._~-]{16,}", key):   # a header value Triton's flag parser keeps whole
        raise TritonServerError(f"admin key file {path} must hold one key of at least 16 letters, digits, "
                                f"'.', '_', '~' or '-'")
    return key


def _write_new_key(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_urlsafe(32)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key + "\n")
    try:
        os.link(partial, path)       # whole or not at all; FileExistsError when another server was first
    finally:
        partial.unlink()
    return key


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM in the yielded list instead of dying; restore the old handlers after."""
    received: list[int] = []
    handlers = {s: signal.signal(s, lambda signum, _frame: received.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
