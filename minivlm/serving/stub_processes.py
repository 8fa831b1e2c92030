"""The python-backend stub processes of a running tritonserver, read from /proc.

Each python model instance runs in its own stub process, a child of tritonserver. Triton 2.51 neither restarts
a stub that died nor fails the requests it was working on: the server's watchdog (minivlm.server.watchdog)
and the generator's forwarder (model_repository/generator) both look at the processes themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STUB_EXECUTABLE = "triton_python_backend_stub"


@dataclass(frozen=True)
class Stub:
    """One stub process: the model instance `instance` (e.g. "generator_engine_0_0") of `model`."""
    pid: int
    model: str
    instance: str


def _cmdline(pid: int | str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:     # gone, or not ours to read
        return []


def parse_stub(pid: int, argv: list[str], server_pid: int) -> Stub | None:
    """The stub a command line belongs to, None if it is no stub of the server `server_pid`."""
    # The python backend (r24.10) starts each stub as: <stub> <model.py path> <shm region> <shm default size>
    # <shm growth size> <parent pid> <python lib dir> <ipc handle> <instance name> <runtime dir> ...
    if len(argv) < 9 or not argv[0].endswith(STUB_EXECUTABLE) or argv[5] != str(server_pid):
        return None
    return Stub(pid=pid, model=Path(argv[1]).parent.parent.name, instance=argv[8])   # <repo>/<model>/<v>/model.py


def python_stubs(server_pid: int) -> list[Stub]:
    """The live stubs of the tritonserver with pid `server_pid`."""
    stubs = []
    for proc in Path("/proc").glob("[0-9]*"):
        stub = parse_stub(int(proc.name), _cmdline(proc.name), server_pid)
        if stub is not None:
            stubs.append(stub)
    return stubs


def is_alive(stub: Stub) -> bool:
    """Whether `stub` still runs: a killed one is a zombie until the server reaps it, and a zombie's cmdline
    is empty; a reused pid names another program."""
    argv = _cmdline(stub.pid)
    return len(argv) > 8 and argv[0].endswith(STUB_EXECUTABLE) and argv[8] == stub.instance


class ModelStubs:
    """The current stubs of one model of the server `server_pid`, looked up again once one of them has died
    (the model was or is being reloaded with new processes).

    A reloaded model's old stubs can outlive the reload: the old version unloads in the background, instance
    by instance. Those belong to no current model, so every stub seen before is left out of a new look-up."""

    def __init__(self, model: str, server_pid: int):
        self.model, self.server_pid = model, server_pid
        self._stubs: tuple[Stub, ...] = ()
        self._retired: set[int] = set()

    @property
    def known(self) -> tuple[Stub, ...]:
        """The stubs of the last look-up, dead or alive."""
        return self._stubs

    def current(self) -> tuple[Stub, ...]:
        """The stubs of the last look-up, or of a new one if any of those has died."""
        if not self._stubs or not all(map(is_alive, self._stubs)):
            self.refresh()
        return self._stubs

    def refresh(self) -> tuple[Stub, ...]:
        """Look the model's stubs up again, leaving out every one seen before."""
        self._retired.update(stub.pid for stub in self._stubs)
        self._stubs = tuple(s for s in python_stubs(self.server_pid)
                            if s.model == self.model and s.pid not in self._retired)
        return self._stubs
