"""Unit tests of minivlm.server.process: path discovery, environment, command line, process handling.
No tritonserver is started here; tests/integration/test_triton_server_smoke.py runs a real one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from minivlm.server import discovery, perf_analyzer, process
from minivlm.server.discovery import TritonServerError
from minivlm.server.secret_argv import PLACEHOLDER, SECRET_ENV, secret_environment


@pytest.fixture(scope="module")
def paths() -> discovery.TritonPaths:
    return discovery.find_triton_paths()


def _server(tmp_path: Path, **options) -> process.TritonServer:
    return process.TritonServer(process.ServerOptions(model_repository=tmp_path, log_file=tmp_path / "server.log",
                                            **options))


def _flag(command: list[str], name: str) -> list[str]:
    return [arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}=")]


# --- discovery and environment ----------------------------------------------------------------------------
def test_find_triton_paths_finds_the_stub_of_the_running_python(paths):
    assert paths.server.name == "tritonserver" and os.access(paths.server, os.X_OK)
    assert (paths.python_backend / "libtriton_python.so").is_file()
    assert paths.libs.name == "nvidia_pytriton.libs"
    assert paths.stub.parent.name == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_find_triton_paths_names_the_missing_stub():
    with pytest.raises(discovery.TritonNotInstalledError, match="python_backend_stubs/2.7"):
        discovery.find_triton_paths("2.7")


def test_prepare_backend_dir_puts_the_stub_beside_the_backend(paths, tmp_path):
    backend_dir = discovery.prepare_backend_dir(paths, tmp_path / "backends")
    python_dir = backend_dir / "python"
    assert (python_dir / "libtriton_python.so").is_file()
    assert (python_dir / "triton_python_backend_utils.py").is_file()
    assert os.access(python_dir / "triton_python_backend_stub", os.X_OK)
    assert discovery.prepare_backend_dir(paths, tmp_path / "backends") == backend_dir   # idempotent
    assert not list(python_dir.glob("*.partial"))


def test_default_backend_dir_is_keyed_by_version(paths, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert discovery.default_backend_dir(paths).parent == tmp_path / "minivlm" / "triton-backends"
    assert paths.version in discovery.default_backend_dir(paths).name


def test_server_environment_puts_this_libpython_first(paths):
    env = discovery.server_environment(paths, {"LD_LIBRARY_PATH": "/opt/old", "PATH": "/usr/bin"})
    assert env["LD_LIBRARY_PATH"].split(os.pathsep) == [sysconfig.get_config_var("LIBDIR"), str(paths.libs),
                                                        "/opt/old"]
    assert env["PATH"].split(os.pathsep) == [str(Path(sys.prefix) / "bin"), "/usr/bin"]


def test_server_environment_without_existing_library_path(paths):
    env = discovery.server_environment(paths, {})
    assert not env["LD_LIBRARY_PATH"].endswith(os.pathsep)


# --- command line -----------------------------------------------------------------------------------------
def test_command_listens_on_loopback_by_default(tmp_path):
    command = _server(tmp_path).command(tmp_path / "backends")
    for name in ("grpc-address", "http-address", "metrics-address"):
        assert _flag(command, name) == ["127.0.0.1"]


def test_command_restricts_admin_apis_with_a_placeholder_for_the_admin_key(tmp_path):
    server = _server(tmp_path)
    command = server.command(tmp_path / "backends")
    assert not any(server.admin_key in argument for argument in command)
    expected = f"{','.join(process.RESTRICTED_APIS)}:{process.ADMIN_HEADER}={PLACEHOLDER}"
    assert _flag(command, "grpc-restricted-protocol") == [expected]
    assert _flag(command, "http-restricted-api") == [expected]
    assert {"model-repository", "shared-memory", "trace", "logging"} <= set(process.RESTRICTED_APIS)
    assert not {"inference", "health"} & set(process.RESTRICTED_APIS)


def test_admin_headers_carry_the_key(tmp_path):
    server = _server(tmp_path)
    assert server.admin_http_headers == {"admin-key": server.admin_key}
    assert server.admin_grpc_headers == {"triton-grpc-protocol-admin-key": server.admin_key}
    assert len(server.admin_key) >= 32 and server.admin_key != _server(tmp_path).admin_key


def test_admin_key_file_is_written_0600_and_read_back(tmp_path):
    key_file = tmp_path / "keys" / "admin-key"
    server = _server(tmp_path, admin_key_file=key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() == server.admin_key
    assert _server(tmp_path, admin_key_file=key_file).admin_key == server.admin_key


def test_admin_key_file_written_meanwhile_by_another_server_is_used(tmp_path, monkeypatch):
    key_file = tmp_path / "admin-key"
    first = _server(tmp_path, admin_key_file=key_file).admin_key
    monkeypatch.setattr(Path, "exists", lambda self: False if self == key_file else os.path.exists(self))
    assert _server(tmp_path, admin_key_file=key_file).admin_key == first


def test_admin_key_file_readable_by_others_is_refused(tmp_path):
    key_file = tmp_path / "admin-key"
    key_file.write_text("some-key\n")
    key_file.chmod(0o644)
    with pytest.raises(TritonServerError, match="readable by others"):
        _server(tmp_path, admin_key_file=key_file)


def test_admin_key_file_with_a_bad_key_is_refused(tmp_path):
    key_file = tmp_path / "admin-key"
    key_file.write_text("short,key:x=y\n")
    key_file.chmod(0o600)
    with pytest.raises(TritonServerError, match="must hold one key"):
        _server(tmp_path, admin_key_file=key_file)


def test_secret_argument_reaches_the_program_but_not_its_process_listing():
    """A real preloaded program: argv holds the key, /proc/PID/cmdline and /proc/PID/environ do not."""
    code = ("import os, sys; print(sys.argv[1]); print(open('/proc/self/cmdline', 'rb').read().hex()); "
            "print(open('/proc/self/environ', 'rb').read().hex()); print(os.environ.get('LD_PRELOAD'))")
    env = secret_environment(dict(os.environ), "the-secret-key")
    result = subprocess.run([sys.executable, "-c", code, f"key={PLACEHOLDER}"], env=env,
                            capture_output=True, text=True, check=True)
    argv, cmdline, environ, preload = result.stdout.splitlines()
    assert argv == "key=the-secret-key"
    assert b"the-secret-key" not in bytes.fromhex(cmdline) and PLACEHOLDER.encode() in bytes.fromhex(cmdline)
    assert b"the-secret-key" not in bytes.fromhex(environ) and SECRET_ENV.encode() in bytes.fromhex(environ)
    assert preload == "None"       # the server's children do not inherit the library


def test_command_without_restrictions(tmp_path):
    command = _server(tmp_path, restricted_apis=()).command(tmp_path / "backends")
    assert not _flag(command, "grpc-restricted-protocol") and not _flag(command, "http-restricted-api")


def test_command_fails_fast_and_loads_everything(tmp_path):
    command = _server(tmp_path, grpc_port=9001, http_port=9000, metrics_port=9002).command(tmp_path / "b")
    assert _flag(command, "model-control-mode") == ["none"]
    assert _flag(command, "exit-on-error") == ["true"] and _flag(command, "strict-readiness") == ["true"]
    assert _flag(command, "model-repository") == [str(tmp_path.resolve())]
    assert _flag(command, "backend-directory") == [str(tmp_path / "b")]
    assert (_flag(command, "grpc-port"), _flag(command, "http-port")) == (["9001"], ["9000"])


def test_command_sizes_python_shared_memory_for_batched_embeddings(tmp_path):
    command = _server(tmp_path, backend_config=["python,stub-timeout-seconds=60"]).command(tmp_path)
    settings = dict(value.split(",", 1)[1].split("=") for value in _flag(command, "backend-config"))
    batch_bytes = 8 * 197 * 576 * 4 + 8 * 3 * 224 * 224 * 4     # embeddings + pixel values, batch 8
    assert int(settings["shm-default-byte-size"]) >= 2 * batch_bytes
    assert int(settings["shm-growth-byte-size"]) >= batch_bytes
    assert settings["stub-timeout-seconds"] == "60"


def test_free_ports_are_distinct():
    ports = discovery.free_ports(5)
    assert len(set(ports)) == 5 and all(0 < port < 65536 for port in ports)


# --- process handling, with stand-in processes ------------------------------------------------------------
def test_wait_ready_fails_fast_with_the_log_tail_when_the_server_dies(tmp_path):
    server = _server(tmp_path, startup_timeout_s=60)
    server.log_path.write_text("E1127 model 'broken' failed to load\n")
    server.process = subprocess.Popen(["sh", "-c", "exit 3"])
    server.process.wait()
    with pytest.raises(discovery.TritonServerError, match=r"exited \(code 3\)[\s\S]*'broken' failed to load"):
        server.wait_ready()


def test_wait_ready_times_out_with_what_is_missing(tmp_path):
    server = _server(tmp_path, http_port=discovery.free_port())       # nothing listens there
    server.process = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(discovery.TritonServerError, match="not ready after 0 s"):
            server.wait_ready(timeout_s=0.3)
    finally:
        server.process.kill()
        server.process.wait()


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path):
    server = _server(tmp_path, stop_timeout_s=0.5)
    ready = tmp_path / "trap-set"
    server.process = subprocess.Popen(["sh", "-c", f"trap '' TERM; touch {ready}; sleep 30 & wait"],
                                      start_new_session=True)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:   # SIGTERM before `trap` would just kill sh
        time.sleep(0.01)
    assert server.stop() == -signal.SIGKILL
    assert server.stop() == -signal.SIGKILL     # a second stop is harmless


def test_stop_before_start_is_a_no_op(tmp_path):
    assert _server(tmp_path).stop() is None


# --- perf_analyzer ----------------------------------------------------------------------------------------
def test_perf_analyzer_command_sends_the_admin_header_over_grpc(tmp_path):
    server = _server(tmp_path, grpc_port=9101)
    command = perf_analyzer.perf_analyzer_command(server, "vlm", "--concurrency-range", "1:4")
    assert Path(command[0]).name == "perf_analyzer" and Path(command[0]).is_file()
    assert command[1:7] == ["-m", "vlm", "-i", "grpc", "-u", "127.0.0.1:9101"]
    assert command[7:9] == ["-H", f"triton-grpc-protocol-admin-key:{PLACEHOLDER}"]
    assert not any(server.admin_key in argument for argument in command)
    assert command[-2:] == ["--concurrency-range", "1:4"]


def test_perf_analyzer_env_finds_libcudart():
    env = perf_analyzer.perf_analyzer_env({})
    assert Path(env["LD_LIBRARY_PATH"].split(os.pathsep)[0], "libcudart.so.12").is_file()


def test_orphaned_shm_regions_of_a_killed_server_are_removed_and_live_ones_kept(tmp_path):
    from minivlm.server.shm import remove_orphaned_shm

    prefix = "triton_python_backend_shm_region_"
    older, orphan, held = (tmp_path / f"{prefix}{name}" for name in ("older", "orphan", "held"))
    for path in (older, orphan, held):
        path.write_bytes(b"\0" * 16)
    os.utime(older, (1_000, 1_000))                 # before this server started: someone else's
    since = time.time() - 5
    with open(held, "rb"):                          # open by a live process: a running server's region
        assert remove_orphaned_shm(since=since, shm_dir=tmp_path) == 1
    assert older.exists() and held.exists() and not orphan.exists()


def test_command_sets_the_trace_file_only_when_asked(tmp_path):
    assert _flag(_server(tmp_path).command(tmp_path / "b"), "trace-config") == []
    command = _server(tmp_path, trace_file=tmp_path / "t.json").command(tmp_path / "b")
    assert _flag(command, "trace-config") == ["mode=triton", f"triton,file={(tmp_path / 't.json').resolve()}"]


def test_the_container_entry_execs_a_program_with_the_key_only_in_its_arguments(tmp_path):
    """docker/entrypoint.sh's way of starting tritonserver, with /bin/sh standing in for it: the program's argv
    holds the key, its /proc cmdline the placeholder, its environment neither the key nor the variables."""
    import subprocess
    import sys

    from minivlm.server.secret_argv import PLACEHOLDER
    key_file = tmp_path / "admin-key"
    key_file.write_text("k3y-from-a-mounted-secret\n")
    script = 'echo "arg=$1"; tr "\\0" " " < /proc/$$/cmdline; echo; env'
    env = {"PATH": "/usr/bin:/bin", "ADMIN_KEY_FILE": str(key_file), "ADMIN_KEY": "ignored-when-a-file-is-named"}
    shown = subprocess.run([sys.executable, "-m", "minivlm.server.secret_argv", "/bin/sh", "-c", script, "sh",
                            f"admin-key={PLACEHOLDER}"], env=env, capture_output=True, text=True, check=True).stdout
    assert "arg=admin-key=k3y-from-a-mounted-secret" in shown
    cmdline = shown.splitlines()[1]
    assert PLACEHOLDER in cmdline and "k3y" not in cmdline
    environment = "\n".join(shown.splitlines()[2:])
    assert "k3y" not in environment and "ADMIN_KEY" not in environment and "LD_PRELOAD" not in environment
    refused = subprocess.run([sys.executable, "-m", "minivlm.server.secret_argv", "/bin/true"],
                             env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert refused.returncode != 0 and "ADMIN_KEY_FILE" in refused.stderr
