"""A real tritonserver on a one-model python repository: inference, restricted endpoints, clean stop."""
from __future__ import annotations

import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.server_fixture import running_server

CONFIG = """
name: "double"
backend: "python"
max_batch_size: 8
dynamic_batching { }
input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

MODEL = """
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x * 2)]))
        return responses
"""


def write_repository(root: Path) -> Path:
    (root / "double" / "1").mkdir(parents=True)
    (root / "double" / "config.pbtxt").write_text(textwrap.dedent(CONFIG))
    (root / "double" / "1" / "model.py").write_text(textwrap.dedent(MODEL))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repository = write_repository(tmp_path_factory.mktemp("repository"))
    with running_server(repository, log_dir=tmp_path_factory.mktemp("triton-log")) as server:
        yield server


def test_grpc_inference(server):
    x = np.array([[1.5], [-2.0]], dtype=np.float32)
    inputs = [grpcclient.InferInput("x", list(x.shape), "FP32")]
    inputs[0].set_data_from_numpy(x)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        result = client.infer("double", inputs, client_timeout=30)
    np.testing.assert_array_equal(result.as_numpy("y"), x * 2)


def test_grpc_repository_index_needs_the_admin_key(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index()
        index = client.get_model_repository_index(headers=server.admin_grpc_headers)
    assert [model.name for model in index.models] == ["double"]


def test_http_admin_apis_need_the_admin_key(server):
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        for call in (client.get_model_repository_index, client.get_log_settings,
                     lambda: client.unload_model("double")):
            with pytest.raises(InferenceServerException, match="restricted"):
                call()
        assert client.is_model_ready("double")             # health stays open
    finally:
        client.close()


def _live_group_members(pgid: int) -> list[int]:
    """Processes in ``pgid`` that are not zombies (a zombie is dead, waiting for init to reap it)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()   # after "(comm)": state ppid pgrp ...
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


def test_stop_leaves_no_process_behind(tmp_path):
    with running_server(write_repository(tmp_path / "repository"), log_dir=tmp_path) as server:
        pid = server.process.pid
        assert len(_live_group_members(pid)) >= 2              # the server and its python stub
    assert server.process.returncode == 0
    deadline = time.monotonic() + 5
    while _live_group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _live_group_members(pid) == []


def test_an_exported_repository_names_the_template_it_was_built_from(model_repository):
    from minivlm.export.repository import built_from_this_template

    assert built_from_this_template(model_repository)
