"""Keep one tritonserver running under `vlm serve`: restart it when it dies, a bounded number of times.

A killed server (OOM kill, segfault, `kill -9`) leaves its stubs and their /dev/shm regions behind;
`TritonServer.restart` stops those first, then starts the same command again (same ports, same admin key,
the log appended). A server that keeps dying is given up on rather than restarted in a tight loop.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from minivlm.server.discovery import TritonServerError

if TYPE_CHECKING:
    from minivlm.server.process import TritonServer

log = logging.getLogger(__name__)


class StartupCancelled(TritonServerError):
    """`TritonServer.wait_ready` gave up because its caller asked it to (the server still runs: stop it)."""


@dataclass(frozen=True)
class RestartPolicy:
    """At most `max_restarts` restarts within any `window_s`; before each, a pause that doubles from
    `first_backoff_s` with every recent restart, up to `max_backoff_s`."""
    max_restarts: int = 5
    window_s: float = 600.0
    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def delay(self, restarts: list[float], now: float) -> float | None:
        """Seconds to wait before the next restart, given the times of earlier ones; None: give up."""
        recent = sum(1 for at in restarts if now - at < self.window_s)
        if recent >= self.max_restarts:
            return None
        return min(self.max_backoff_s, self.first_backoff_s * 2 ** recent)


def _wait(received: list[int], seconds: float, until: Callable[[], bool] = lambda: False) -> None:
    deadline = time.monotonic() + seconds
    while not received and not until() and time.monotonic() < deadline:
        time.sleep(0.1)


def supervise(server: TritonServer, received: list[int], policy: RestartPolicy) -> int:
    """Run until a signal lands in `received` (then stop the server with it and return its exit code);
    restart the server whenever it dies, as `policy` allows. Raises TritonServerError when it gives up."""
    restarts: list[float] = []
    while True:
        _wait(received, float("inf"), until=lambda: server.process.poll() is not None)
        if received:
            return server.stop(received[0])   # forward the user's signal: SIGTERM and SIGINT both drain
        code, now = server.process.returncode, time.monotonic()
        delay = policy.delay(restarts, now)
        if delay is None:
            raise TritonServerError(f"tritonserver exited (code {code}) after {len(restarts)} restarts within "
                                    f"{policy.window_s:.0f} s; giving up. Log tail:\n{server.log_tail()}")
        log.error("tritonserver exited (code %s); restarting it in %.1f s (restart %d of at most %d per %.0f s). "
                  "Log tail:\n%s", code, delay, len(restarts) + 1, policy.max_restarts, policy.window_s,
                  server.log_tail(20))
        _wait(received, delay)
        if received:
            return server.stop(received[0])
        restarts.append(time.monotonic())
        started = time.monotonic()
        try:
            server.restart(stop_when=lambda: bool(received))
        except StartupCancelled:
            continue                 # the loop stops it with the signal received
        except TritonServerError as error:
            log.error("restart failed: %s", error)
            server.stop()            # one that never got ready counts as dead: the loop restarts it again
            continue
        log.warning("tritonserver restarted and ready again in %.1f s", time.monotonic() - started)
