"""Unit tests of the self-healing parts that need no server: the restart policy, recognising a stub's command
line, the error texts that mean "model down", and the flags a self-healing server starts with."""
from __future__ import annotations

import os

from minivlm.server import process
from minivlm.server.supervisor import RestartPolicy
from minivlm.serving.stub_processes import Stub, is_alive, parse_stub
from minivlm.serving.triton_glue import model_down

STUB_ARGV = ["/cache/python/triton_python_backend_stub", "/repo/generator_engine/1/model.py",
             "triton_python_backend_shm_region_1", "25165824", "16777216", "4242", "/cache/python", "336",
             "generator_engine_0_0", "DEFAULT", ""]


def test_restart_delays_double_up_to_the_cap_then_give_up():
    policy = RestartPolicy(max_restarts=4, window_s=100, first_backoff_s=1, max_backoff_s=3)
    assert [policy.delay([0.0] * n, now=10.0) for n in range(5)] == [1, 2, 3, 3, None]


def test_restarts_older_than_the_window_are_forgotten():
    policy = RestartPolicy(max_restarts=2, window_s=60, first_backoff_s=1)
    assert policy.delay([0.0, 1.0], now=30.0) is None
    assert policy.delay([0.0, 1.0], now=70.0) == 1


def test_no_restarts_policy_gives_up_at_once():
    assert RestartPolicy(max_restarts=0).delay([], now=0.0) is None


def test_a_stub_command_line_names_its_model_and_instance():
    assert parse_stub(77, STUB_ARGV, server_pid=4242) == Stub(77, "generator_engine", "generator_engine_0_0")


def test_stubs_of_another_server_and_other_programs_are_not_ours():
    assert parse_stub(77, STUB_ARGV, server_pid=4243) is None
    assert parse_stub(77, ["/usr/bin/python3", "-c", "pass"], server_pid=4242) is None
    assert parse_stub(77, [], server_pid=4242) is None


def test_a_process_that_is_no_stub_is_not_alive_as_one():
    assert not is_alive(Stub(os.getpid(), "generator_engine", "generator_engine_0_0"))   # pytest, not a stub
    assert not is_alive(Stub(2 ** 22 + 1, "x", "x_0_0"))                                   # no such pid


def test_the_texts_of_a_model_that_is_down_are_recognised():
    assert model_down("Stub process 'generator_engine_0_0' is not healthy.")
    assert model_down("Failed for execute the inference request. Model 'generator_engine' is not ready.")
    assert model_down("Request for unknown model: 'generator_engine' has no available versions")
    assert not model_down("generator: temperature must be in [0, 2], got nan")
    assert not model_down("generator: internal error: KeyError: 'x'")


def test_a_self_healing_server_loads_every_model_under_explicit_control(tmp_path):
    server = process.TritonServer(process.ServerOptions(model_repository=tmp_path, log_file=tmp_path / "log",
                                                        self_heal=True))
    command = server.command(tmp_path / "backends")
    assert "--model-control-mode=explicit" in command and "--load-model=*" in command
    assert "model-repository" in process.RESTRICTED_APIS     # model control stays behind the admin key
    plain = process.TritonServer(process.ServerOptions(model_repository=tmp_path, log_file=tmp_path / "log"))
    assert "--model-control-mode=none" in plain.command(tmp_path / "backends")
