"""Reload a model whose python-backend stub died: Triton 2.51 never restarts a stub by itself.

After a stub is killed (an OOM kill, a segfault in native code) the server keeps reporting ready and every
request the dead instance gets fails with INTERNAL "Stub process '<instance>' is not healthy", for good. The
watchdog thread polls each stub's process; when one is gone it reloads the stub's model through the
repository API (the server runs with --model-control-mode=explicit):

1. unload: the model is UNLOADING, which strict readiness counts as not ready, so /v2/health/ready turns
   false and load balancers stop sending requests;
2. wait, a few seconds at most, for the unload to complete (the model is then UNAVAILABLE "unloaded", which
   readiness ignores: it reads true for the few milliseconds until step 3);
3. load: a model whose unload completed is LOADING (not ready) until its new stubs have initialized. The
   unload of a decoupled model (generator_engine) with requests in flight never completes: the dead stub
   answers none of them and Triton waits for their answers. Its load then runs beside it, in the
   background, and the old version stays UNLOADING (not ready) until the new one replaces it. The requests
   it held stay stuck in Triton (the generator's forwarder answers its callers UNAVAILABLE), and at the
   server's exit they hold shutdown until --exit-timeout-secs.

Ensembles that use the model (vlm_stream uses generator_engine; vlm and route use the rest) are unloaded and
loaded again by Triton along with it. A model that cannot be brought back (its load fails) is reported to
`on_failure`: `TritonServer` then stops the whole server, so that a supervisor (`vlm serve`) restarts it
rather than leaving a server up that fails every request.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from minivlm.serving.stub_processes import ModelStubs, is_alive, python_stubs

log = logging.getLogger(__name__)


class ModelControl(Protocol):
    """What the watchdog needs of the server (`TritonServer` provides it)."""
    def server_pid(self) -> int | None: ...          # None once the server process has exited
    def unload_model(self, name: str) -> None: ...
    def load_model(self, name: str) -> None: ...
    def model_states(self) -> dict[str, str]: ...     # name -> READY, UNLOADING, UNAVAILABLE, ...


@dataclass(frozen=True)
class Recovery:
    """One reload, for logs and the chaos tool: when the dead stub was seen, when the model was loaded again
    (`time.monotonic()` values), and the error when it could not be."""
    model: str
    dead_instances: tuple[str, ...]
    noticed_at: float
    ready_at: float | None
    error: str | None = None


class ModelWatchdog:
    """A daemon thread that reloads any model with a dead stub; ``start()`` once the server is ready."""

    def __init__(self, server: ModelControl, *, poll_s: float = 0.1, unload_wait_s: float = 5.0,
                 on_failure: Callable[[str, str], None] | None = None):
        self.server = server
        self.poll_s = poll_s
        self.unload_wait_s = unload_wait_s
        self.on_failure = on_failure
        self.recoveries: list[Recovery] = []
        self._stubs: dict[str, ModelStubs] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ModelWatchdog:
        pid = self.server.server_pid()
        if pid is None:
            raise RuntimeError("the server is not running")
        found = python_stubs(pid)
        self._stubs = {model: ModelStubs(model, pid) for model in {stub.model for stub in found}}
        for stubs in self._stubs.values():
            stubs.refresh()
        log.info("watching %d python-backend stubs of %d models", len(found), len(self._stubs))
        self._thread = threading.Thread(target=self._run, name="model-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching; a reload in progress finishes first (the thread is joined)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.server.server_pid() is None:     # the whole server died: its supervisor's job, not ours
                return
            for model, stubs in self._stubs.items():
                dead = [stub.instance for stub in stubs.known if not is_alive(stub)]
                if dead and not self._stop.is_set() and self.server.server_pid() is not None:
                    if not self._reload(model, dead):
                        return

    def _reload(self, model: str, dead: list[str]) -> bool:
        noticed = time.monotonic()
        log.error("python stub(s) %s of model %r died; reloading the model", ", ".join(dead), model)
        try:
            self.server.unload_model(model)
            if not self._unloaded_within(model, self.unload_wait_s):
                log.warning("model %r is still unloading after %.0f s (requests the dead stub never answered); "
                            "loading its replacement beside it", model, self.unload_wait_s)
            self.server.load_model(model)   # returns once the model and the ensembles using it are loaded
        except Exception as error:  # noqa: BLE001 - any failure leaves the model broken: report it
            message = f"{type(error).__name__}: {error}"
            self.recoveries.append(Recovery(model, tuple(dead), noticed, None, message))
            log.error("could not reload model %r: %s", model, message)
            if self.on_failure is not None:
                self.on_failure(model, message)
            return False
        self._stubs[model].refresh()      # the new version's processes, not the old one's still unloading
        self.recoveries.append(Recovery(model, tuple(dead), noticed, time.monotonic()))
        log.warning("model %r reloaded in %.1f s after its stub died", model, time.monotonic() - noticed)
        return True

    def _unloaded_within(self, model: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.server.model_states().get(model) == "UNLOADING":
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)      # readiness reads true from the end of the unload until the load starts
        return True
