"""Triton's trace API as docs/operations.md "Tracing a request" uses it: a server started with a trace file,
tracing turned on for one request with the admin key, the file read back with vlm_client.triton_trace."""
from __future__ import annotations

import json
import time

import tritonclient.http as httpclient

from tests.integration.conftest import make_image
from tests.integration.server_fixture import running_server
from vlm_client import VLMClient
from vlm_client.triton_trace import parse_trace

ONE_REQUEST = {"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "trace_count": "1", "log_frequency": "1"}
DEFAULTS = {name: None for name in ONE_REQUEST}        # null: back to the server's startup settings (off)


def test_one_traced_request_has_every_ensemble_step_in_the_servers_trace_file(model_repository, tmp_path):
    trace_file = tmp_path / "vlm-trace.json"
    with running_server(model_repository, log_dir=tmp_path, trace_file=trace_file) as server:
        admin = httpclient.InferenceServerClient(server.http_url)
        try:
            settings = admin.update_trace_settings("vlm", ONE_REQUEST, headers=server.admin_http_headers)
            assert settings["trace_file"] == str(trace_file.resolve()) and settings["trace_count"] == "1"
            with VLMClient(server.grpc_url, timeout_s=120) as client:
                for seed in (60, 61):                  # trace_count 1: only the first is traced
                    client.ask(make_image(seed), "[CAPTION]", temperature=0.0, max_new_tokens=3)
            written = trace_file.with_name(trace_file.name + ".0")
            deadline = time.monotonic() + 10
            while not written.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            (root,) = parse_trace(json.loads(written.read_text()))
            assert root.model == "vlm"
            assert [s.model for s in root.steps][::3] == ["preprocess", "generator"]
            assert {s.model for s in root.steps} == {"preprocess", "router", "vision_encoder", "generator"}
            assert all(s.total_s > 0 and s.compute_s > 0 for s in root.steps)
            assert sum(s.total_s for s in root.steps) <= 2 * root.total_s     # router and vision overlap
            off = admin.update_trace_settings("vlm", DEFAULTS, headers=server.admin_http_headers)
            assert off["trace_level"] == ["OFF"]
        finally:
            admin.close()
