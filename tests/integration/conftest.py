"""One real tritonserver per session, serving a repository exported from the tiny notebook-format model."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from minivlm.export.repository import BuildOptions, build_repository
from minivlm.model.checkpoint import load_vlm
from tests.integration.server_fixture import running_server
from vlm_client import VLMClient


@pytest.fixture(scope="session")
def model_repository(notebook_dir, tmp_path_factory):
    """Tiny random VLM weights behind the real router `vlm export` serves by default (the shipped MiniLM
    heads), so natural queries route as a user expects."""
    output = tmp_path_factory.mktemp("served") / "repo"
    report = build_repository(BuildOptions(checkpoint_dir=notebook_dir, output=output))
    assert report.router == "minilm"
    return output


@pytest.fixture(scope="session")
def server(model_repository, tmp_path_factory):
    with running_server(model_repository, log_dir=tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture(scope="session")
def reference(notebook_dir):
    """The in-process PyTorch model loaded from the same notebook folder the repository was built from."""
    return load_vlm(notebook_dir)


@pytest.fixture(scope="session", params=["grpc", "http"])
def client(request, server):
    url = server.grpc_url if request.param == "grpc" else server.http_url
    with VLMClient(url, protocol=request.param, timeout_s=120) as client:
        yield client


@pytest.fixture(scope="session")
def grpc_client(server):
    with VLMClient(server.grpc_url, timeout_s=120) as client:
        yield client


def make_image(seed: int, size=(96, 128), fmt="PNG") -> bytes:
    pixels = (np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()
