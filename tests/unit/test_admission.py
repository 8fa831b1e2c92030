"""The admission door: at most max_requests_in_flight requests in the pipeline, each counting until the
generator rings its bell (a datagram on an abstract socket) or its lease ends."""
from __future__ import annotations

import os
import time

import pytest

from minivlm.errors import InputError, ServerBusyError
from minivlm.serving.admission import AdmissionDoor, DoorBell, door_address


@pytest.fixture
def address():
    return door_address(os.getpid() * 1000 + int(time.monotonic_ns() % 1000))   # unique per test


def _until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_a_full_door_refuses_until_a_request_leaves(address):
    door = AdmissionDoor(2, address=address).start()
    bell = DoorBell(address)
    try:
        for _ in range(2):
            with door.admission():
                pass
        with pytest.raises(ServerBusyError, match=r"2 requests are in the pipeline \(max_requests_in_flight=2\)"):
            with door.admission():
                pass
        time.sleep(0.2)                    # the listener has bound its address by now
        bell.ring()
        _until(lambda: door.in_flight == 1)
        with door.admission():             # room for one again
            pass
        assert door.in_flight == 2
    finally:
        door.close()


def test_a_request_that_fails_in_the_door_step_stops_counting_at_once(address):
    door = AdmissionDoor(1, address=None)
    with pytest.raises(InputError):
        with door.admission():
            raise InputError("image is empty (0 bytes)")
    assert door.in_flight == 0


def test_requests_that_never_ring_stop_counting_after_their_lease(address):
    door = AdmissionDoor(1, address=None, lease_s=0.05)
    with door.admission():
        pass
    assert door.in_flight == 1
    time.sleep(0.1)
    assert door.in_flight == 0


def test_rings_without_admitted_requests_and_bells_without_a_door_are_harmless(address):
    door = AdmissionDoor(1, address=address).start()
    try:
        time.sleep(0.2)
        DoorBell(address).ring()               # a direct call to the engine: it never passed the door
        time.sleep(0.1)
        assert door.in_flight == 0
    finally:
        door.close()
    DoorBell(door_address(1)).ring()           # nobody listening: no error


def test_a_second_door_waits_for_the_address_to_be_free(address):
    first = AdmissionDoor(1, address=address).start()
    time.sleep(0.2)
    second = AdmissionDoor(1, address=address).start()     # a reloaded preprocess while the old one unloads
    try:
        with second.admission():
            pass
        first.close()
        time.sleep(1.5)                                    # the second retries its bind every second
        DoorBell(address).ring()
        _until(lambda: second.in_flight == 0)
    finally:
        second.close()


class _Recorder:
    def __init__(self):
        self.values = []

    def set(self, value):
        self.values.append(value)

    def increment(self, value):
        self.values.append(value)


def test_the_door_reports_its_count_and_refusals(address):
    metrics = type("DoorMetrics", (), {})()
    metrics.in_flight, metrics.refusals = _Recorder(), _Recorder()
    door = AdmissionDoor(1, address=address, metrics=metrics).start()
    try:
        with door.admission():
            pass
        with pytest.raises(ServerBusyError):
            with door.admission():
                pass
        assert metrics.refusals.values == [1]
        _until(lambda: metrics.in_flight.values[-1:] == [1])
        time.sleep(0.1)
        DoorBell(address).ring()
        _until(lambda: metrics.in_flight.values[-1:] == [0])
    finally:
        door.close()
