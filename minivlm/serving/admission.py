"""Admission at the door: the `vlm` ensemble's first step refuses requests while the pipeline is full.

Triton 2.51's ensemble scheduler can free a request while a parallel step still uses it when one step fails
beside another in flight (vlm/config.pbtxt). A full queue is such a failure, so no step that runs beside
another (router, vision_encoder) may have a bounded queue; only steps that run alone refuse: `preprocess`
(first) and the generator (last). Refusing at the generator alone would let every refused request cost the
image decode, the router and the vision encoder first, and let the queues in front of it grow; so the door,
`preprocess`, counts the requests it let in that have not left the pipeline yet and refuses more than
`max_requests_in_flight` (UNAVAILABLE, before decoding the image).

A request leaves when generator_engine answers it (its scheduler rings the door's bell once per request
it delivers or refuses) or when the generator step answers it without the engine (the engine is down: the
forwarder rings). The bell is a datagram on an abstract Unix socket named after the server's pid: nothing
in the file system to clean up, and a stub that dies takes its end with it. A request that never rings
(a bug in router or vision_encoder, a ring lost while preprocess reloads) stops counting after `lease_s`.
Requests reaching the engine without passing the door (a direct call) ring an empty door: ignored.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from minivlm.errors import ServerBusyError

log = logging.getLogger(__name__)

BIND_RETRY_S = 1.0
RECV_TIMEOUT_S = 0.25


def door_address(server_pid: int) -> bytes:
    """The abstract socket (leading NUL: no file) of the door of the tritonserver with this pid."""
    return b"\0minivlm-admission-%d" % server_pid


class AdmissionDoor:
    """Counts the requests in the pipeline; `admission()` lets one in or raises ServerBusyError."""

    def __init__(self, max_in_flight: int, *, address: bytes | None, lease_s: float = 120.0, metrics=None):
        """`metrics`: a DoorMetrics (minivlm.serving.metrics), or None."""
        if max_in_flight < 1:
            raise ValueError(f"max_requests_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight, self.address, self.lease_s = max_in_flight, address, lease_s
        self._admitted: deque[float] = deque()      # when each request still in the pipeline came in
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._socket: socket.socket | None = None
        self.metrics, self._reported, self._last_report = metrics, 0, 0.0

    def start(self) -> AdmissionDoor:
        if self.address is not None:
            threading.Thread(target=self._listen, name="admission-door", daemon=True).start()
        return self

    @property
    def in_flight(self) -> int:
        with self._lock:
            self._expire(time.monotonic())
            return len(self._admitted)

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Let one request in (ServerBusyError when full); it counts until its bell rings, or at once no more
        when the body raises (it failed here and goes no further)."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            if len(self._admitted) >= self.max_in_flight:
                if self.metrics is not None:
                    self.metrics.refusals.increment(1)
                raise ServerBusyError(f"{len(self._admitted)} requests are in the pipeline "
                                      f"(max_requests_in_flight={self.max_in_flight}); retry later")
            self._admitted.append(now)
        try:
            yield
        except BaseException:
            self.left()
            raise

    def left(self) -> None:
        """One request left the pipeline (the oldest one counts as it: they are alike)."""
        with self._lock:
            if self._admitted:
                self._admitted.popleft()

    def _expire(self, now: float) -> None:
        while self._admitted and now - self._admitted[0] > self.lease_s:
            self._admitted.popleft()

    def _listen(self) -> None:
        """Bind the door's address (retrying while an old instance still holds it), then count the rings."""
        while not self._closed.is_set():
            try:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.bind(self.address)
                break
            except OSError as error:   # a previous instance of this model is still unloading: try again
                self._socket.close()
                log.info("admission door %r is busy (%s); retrying", self.address, error)
                self._closed.wait(BIND_RETRY_S)
        self._socket.settimeout(RECV_TIMEOUT_S)         # so that close() ends this thread, which unbinds
        with self._socket:
            while not self._closed.is_set():
                try:
                    rings = self._socket.recv(64)
                except socket.timeout:
                    rings = b""
                for _ in rings:
                    self.left()
                self._report()

    def _report(self) -> None:
        """The gauge, when it changed and at most every RECV_TIMEOUT_S (each set is a message to the server)."""
        now = time.monotonic()
        if self.metrics is None or now - self._last_report < RECV_TIMEOUT_S:
            return
        self._last_report, count = now, self.in_flight
        if count != self._reported:
            self.metrics.in_flight.set(count)
            self._reported = count

    def close(self) -> None:
        """Stop listening; the address is free again within RECV_TIMEOUT_S."""
        self._closed.set()


class DoorBell:
    """Rings the door once per request that leaves the pipeline; never fails (no door: nobody to tell)."""

    def __init__(self, address: bytes | None):
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def ring(self) -> None:
        if self.address is None:
            return
        try:
            self._socket.sendto(b"x", self.address)
        except OSError:    # no door bound (preprocess reloading, or a server without one), or its buffer full
            pass


def stub_bell() -> DoorBell:
    """The bell of the door of the server this python stub belongs to (stubs are the server's children)."""
    return DoorBell(door_address(os.getppid()))
