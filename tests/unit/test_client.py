"""Unit tests of the client: request building, response parsing, errors, CLI. No server; the integration
tests cover behaviour against a real one."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.grpc
import tritonclient.http
from PIL import Image
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from vlm_client import (Answer, DeadlineExceeded, DetectedObject, InvalidRequest, Overloaded, Route, ServerError,
                        VLMClient, VLMError, cli)
from vlm_client import protocol as proto
from vlm_client.aio import AsyncVLMClient
from vlm_client.errors import split_step, translate_errors
from vlm_client.sdk import CLIENT_GRACE_S, ask_arrays, chunked, encode_image, infer_inputs, max_batch_size, route_arrays
from vlm_client.types import AnswerPart, parse_answer, parse_routes


def _check_wire(tensor: proto.Tensor, array: np.ndarray, batch: int = 1) -> None:
    assert array.shape == (batch, *tensor.dims)
    assert array.dtype == triton_to_np_dtype(tensor.dtype)


# --- request building -------------------------------------------------------------------------------------
def test_ask_arrays_minimal_sends_only_image_and_query():
    arrays = ask_arrays(b"\x89PNG...", "what is this?")
    assert set(arrays) == {proto.IMAGE, proto.QUERY}
    for tensor, array in arrays.items():
        _check_wire(tensor, array)
    assert arrays[proto.IMAGE][0, 0] == b"\x89PNG..."
    assert arrays[proto.QUERY][0, 0] == "what is this?".encode()


def test_ask_arrays_all_options_match_protocol():
    arrays = ask_arrays(b"img", "q", task="od", max_new_tokens=7, temperature=0.5, top_p=0.9, seed=2**40,
                        json_constraint=False)
    assert set(arrays) == set(proto.ENSEMBLE_INPUTS)
    for tensor, array in arrays.items():
        _check_wire(tensor, array)
    assert arrays[proto.TASK_OVERRIDE][0, 0] == b"od"
    assert arrays[proto.MAX_NEW_TOKENS][0, 0] == 7
    assert arrays[proto.SEED][0, 0] == 2**40
    assert arrays[proto.TEMPERATURE][0, 0] == pytest.approx(0.5)


def test_ask_arrays_omits_each_unset_option():
    arrays = ask_arrays(b"img", "q", temperature=0.0)
    assert set(arrays) == {proto.IMAGE, proto.QUERY, proto.TEMPERATURE}


@pytest.mark.parametrize("kwargs, error, names", [
    ({"task": "detect"}, ValueError, "'detect'"),
    ({"max_new_tokens": 3.5}, TypeError, "max_new_tokens"),
    ({"max_new_tokens": True}, TypeError, "max_new_tokens"),
    ({"max_new_tokens": 2**31}, ValueError, "2147483648"),
    ({"temperature": "hot"}, TypeError, "'hot'"),
])
def test_ask_arrays_rejects_client_side_mistakes(kwargs, error, names):
    with pytest.raises(error, match=names):
        ask_arrays(b"img", "q", **kwargs)


def test_ask_arrays_leaves_value_ranges_to_the_server():
    arrays = ask_arrays(b"img", "q", temperature=5.0, top_p=-1.0, max_new_tokens=0)
    assert arrays[proto.TEMPERATURE][0, 0] == 5.0


def test_route_arrays_batches_queries_and_repeats_override():
    arrays = route_arrays(["a", "b", "c"], task="vqa")
    assert set(arrays) == {proto.QUERY, proto.TASK_OVERRIDE}
    for tensor, array in arrays.items():
        _check_wire(tensor, array, batch=3)
    assert list(arrays[proto.TASK_OVERRIDE][:, 0]) == [b"vqa"] * 3


@pytest.mark.parametrize("tc", [tritonclient.grpc, tritonclient.http])
def test_infer_inputs_use_protocol_names_and_dtypes(tc):
    inputs = infer_inputs(tc, ask_arrays(b"img", "q", seed=1))
    assert [(i.name(), i.datatype(), i.shape()) for i in inputs] == [
        (proto.IMAGE.name, "BYTES", [1, 1]), (proto.QUERY.name, "BYTES", [1, 1]),
        (proto.SEED.name, "INT64", [1, 1])]


def test_encode_image_accepts_bytes_path_and_pil(tmp_path):
    image = Image.new("RGB", (4, 3), "red")
    png = encode_image(image)
    assert png.startswith(b"\x89PNG")
    path = tmp_path / "x.png"
    path.write_bytes(png)
    assert encode_image(path) == encode_image(str(path)) == encode_image(bytearray(png)) == png


def test_encode_image_rejects_empty_and_unknown():
    with pytest.raises(ValueError, match="empty"):
        encode_image(b"")
    with pytest.raises(TypeError, match="ndarray"):
        encode_image(np.zeros((2, 2)))


def test_client_validates_settings_without_connecting():
    with pytest.raises(ValueError, match="'tcp'"):
        VLMClient(protocol="tcp")
    with pytest.raises(ValueError, match="timeout_s"):
        VLMClient(timeout_s=0)
    assert VLMClient().url == "localhost:8001"
    assert VLMClient(protocol="http").url == "localhost:8000"
    assert AsyncVLMClient(protocol="http").url == "localhost:8000"


# --- response parsing -------------------------------------------------------------------------------------
def _col(values, dtype=object):
    return np.array(values, dtype=dtype).reshape(-1, 1)


def _answer_outputs(**override):
    outputs = {
        proto.TASK.name: _col([b"od"]), proto.ROUTING.name: _col([b"router"]),
        proto.CONFIDENCE.name: _col([0.75], np.float32), proto.TEXT.name: _col([b'{"objects": []}']),
        proto.OBJECTS.name: _col([b'[{"label": "cat", "bbox": [0.1, 0.2, 0.3, 0.4]}]']),
        proto.JSON_VALID.name: _col([True], bool), proto.FINISH_REASON.name: _col([b"stop"]),
        proto.PROMPT_TOKENS.name: _col([12], np.int32), proto.COMPLETION_TOKENS.name: _col([30], np.int32),
        proto.PARTS.name: _col([json.dumps([{"task": "od", "text": '{"objects": []}', "objects": [
            {"label": "cat", "bbox": [0.1, 0.2, 0.3, 0.4]}], "json_valid": True, "finish_reason": "stop",
            "completion_tokens": 30}]).encode()]),
    }
    return {**outputs, **override}


def test_parse_answer():
    answer = parse_answer(_answer_outputs())
    cat = (DetectedObject("cat", (0.1, 0.2, 0.3, 0.4)),)
    assert answer == Answer("od", "router", 0.75, '{"objects": []}', cat, True, "stop", 12, 30,
                            (AnswerPart("od", '{"objects": []}', cat, True, "stop", 30),))
    assert isinstance(answer.prompt_tokens, int) and isinstance(answer.json_valid, bool)
    assert json.loads(json.dumps(answer.to_dict()))["objects"] == [{"label": "cat", "bbox": [0.1, 0.2, 0.3, 0.4]}]


def test_parse_answer_accepts_str_elements_from_json_http():
    answer = parse_answer(_answer_outputs(**{proto.TASK.name: _col(["vqa"]), proto.OBJECTS.name: _col(["[]"]),
                                             proto.PARTS.name: _col(["[]"])}))
    assert answer.task == "vqa" and answer.objects == ()


def test_parse_answer_reports_missing_and_malformed_outputs():
    outputs = _answer_outputs()
    del outputs[proto.TEXT.name]
    with pytest.raises(VLMError, match=proto.TEXT.name):
        parse_answer(outputs)
    with pytest.raises(VLMError, match="malformed"):
        parse_answer(_answer_outputs(**{proto.OBJECTS.name: _col([b"[{"])}))


def _route_outputs(probs, forced, forced_by):
    return {proto.TASK_PROBS.name: np.array(probs, np.float32), proto.FORCED_TASK.name: _col(forced, np.int32),
            proto.FORCED_BY.name: _col(forced_by)}


def test_parse_routes_argmax_and_forced():
    routes = parse_routes(_route_outputs([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], [proto.NO_TASK, 2], [b"", b"tag"]))
    assert routes[0] == Route("od", pytest.approx(0.7), "router",
                              {"caption": pytest.approx(0.1), "od": pytest.approx(0.7), "vqa": pytest.approx(0.2)})
    assert (routes[1].task, routes[1].confidence, routes[1].routing) == ("vqa", 1.0, "tag")
    assert list(routes[1].probabilities) == list(proto.TASKS)


def test_parse_routes_rejects_bad_shapes_and_ids():
    with pytest.raises(VLMError, match=proto.TASK_PROBS.name):
        parse_routes(_route_outputs([[0.5, 0.5]], [proto.NO_TASK], [b""]))
    with pytest.raises(VLMError, match=proto.FORCED_TASK.name):
        parse_routes(_route_outputs([[0.2, 0.3, 0.5]], [7], [b"override"]))


def test_max_batch_size_from_grpc_and_http_configs():
    assert max_batch_size({"config": {"name": "route", "max_batch_size": 8}}) == 8
    assert max_batch_size({"name": "route", "max_batch_size": 16}) == 16
    assert chunked(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]


# --- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, step, message", [
    ("generator: temperature must be in [0, 2], got 5.0", "generator", "temperature must be in [0, 2], got 5.0"),
    ("in ensemble 'vlm', Failed to process the request(s) for model 'image_preprocess_0_0', message: "
     "image_preprocess: image could not be decoded: cannot identify image file",
     "image_preprocess", "image could not be decoded: cannot identify image file"),
    ("in ensemble 'route', query_preprocess : query is longer than 2048 bytes",
     "query_preprocess", "query is longer than 2048 bytes"),
    # the vlm ensemble's preprocess model names the half of the request at fault, or itself for a bug
    ("in ensemble 'vlm', image_preprocess: image is 1x1 pixels", "image_preprocess", "image is 1x1 pixels"),
    ("in ensemble 'vlm', Failed to process the request(s) for model 'preprocess_0_0', message: "
     "query_preprocess: query is empty", "query_preprocess", "query is empty"),
    ("in ensemble 'vlm', preprocess: internal error: KeyError: 'x'", "preprocess", "internal error: KeyError: 'x'"),
    ("model 'query_router': router: bad ids", "router", "bad ids"),
    ("Request for unknown model: 'vlm' is not found", None, "Request for unknown model: 'vlm' is not found"),
])
def test_split_step(raw, step, message):
    assert split_step(raw) == (step, message)


def test_server_exception_becomes_vlm_error():
    with pytest.raises(VLMError) as info, translate_errors("h:1"):
        raise InferenceServerException("in ensemble 'vlm', vision_encoder: out of memory",
                                       status="StatusCode.INTERNAL")
    err = info.value
    assert (err.step, err.message, err.status) == ("vision_encoder", "out of memory", "INTERNAL")
    assert "in ensemble 'vlm'" in err.raw
    assert str(err) == "vision_encoder: out of memory"


@pytest.mark.parametrize("status, kind", [
    ("StatusCode.INVALID_ARGUMENT", InvalidRequest), ("400", InvalidRequest),
    ("StatusCode.UNAVAILABLE", Overloaded), ("503", Overloaded), ("429", Overloaded),
    ("StatusCode.INTERNAL", ServerError), ("500", ServerError), (None, ServerError),
    ("StatusCode.DEADLINE_EXCEEDED", DeadlineExceeded), ("504", DeadlineExceeded),
])
def test_server_errors_have_the_kind_of_their_status(status, kind):
    with pytest.raises(VLMError) as info, translate_errors("h:1"):
        raise InferenceServerException("generator: something", status=status)
    assert type(info.value) is kind


class FlakyTritonClient:
    """Answers `infer` with the errors it is given, then with a route response."""

    def __init__(self, *errors):
        self.errors, self.calls = list(errors), 0

    def infer(self, model, inputs, outputs=None, **kwargs):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return _FakeResult({proto.TASK_PROBS.name: np.array([[0.1, 0.8, 0.1]], dtype=np.float32),
                            proto.TASK_SCORES.name: np.array([[0.1, 0.8, 0.1]], dtype=np.float32),
                            proto.FORCED_TASK.name: np.array([[-1]], dtype=np.int32),
                            proto.FORCED_BY.name: np.array([[b""]], dtype=np.object_)})


class _FakeResult:
    def __init__(self, arrays):
        self.arrays = arrays

    def as_numpy(self, name):
        return self.arrays.get(name)


def test_an_unreachable_server_is_not_an_overload():
    refused = InferenceServerException("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
                                       "Failed to connect to remote host: Connection refused",
                                       status="StatusCode.UNAVAILABLE")
    with pytest.raises(VLMError) as info, translate_errors("127.0.0.1:1"):
        raise refused
    assert type(info.value) is VLMError and info.value.status == "UNAVAILABLE"
    assert info.value.message.startswith("cannot reach server at 127.0.0.1:1")


@pytest.mark.parametrize("status", ["StatusCode.NOT_FOUND", "400"])
def test_a_model_the_watchdog_is_reloading_is_a_retryable_overload(status):
    """Triton's words for an ensemble taken down while a crashed composing model reloads (docs/operations.md)."""
    reloading = InferenceServerException("Request for unknown model: 'vlm' has no available versions", status=status)
    with pytest.raises(Overloaded), translate_errors("127.0.0.1:1"):
        raise reloading
    unknown = InferenceServerException("Request for unknown model: 'vlmm' is not found", status=status)
    with pytest.raises(VLMError) as info, translate_errors("127.0.0.1:1"):
        raise unknown
    assert not isinstance(info.value, Overloaded)        # a wrong model name does not pass with time


def _busy():
    return InferenceServerException("generator: server busy: 64 requests are waiting", status="StatusCode.UNAVAILABLE")


def test_only_overloaded_answers_are_retried_with_backoff(monkeypatch):
    pauses = []
    monkeypatch.setattr("vlm_client.sdk.time.sleep", pauses.append)
    client = VLMClient("h:1", retries=2, retry_backoff_s=0.1)
    client._triton_client = FlakyTritonClient(_busy(), _busy())
    client._route_batch = 8
    assert client.route("find the cars").task == "od"
    assert client._triton_client.calls == 3 and pauses == [0.1, 0.2]
    client._triton_client = FlakyTritonClient(_busy(), _busy(), _busy())
    with pytest.raises(Overloaded):
        client.route("find the cars")                      # three refusals: the last one is raised
    client._triton_client = FlakyTritonClient(InferenceServerException("query_preprocess: query is empty",
                                                                       status="StatusCode.INVALID_ARGUMENT"))
    with pytest.raises(InvalidRequest):
        client.route("x")
    assert client._triton_client.calls == 1                 # a bad request is never sent twice


def test_the_servers_deadline_error_is_typed_and_never_retried(monkeypatch):
    """generator_engine freed the rows of a request whose deadline passed: UNAVAILABLE, but not an overload."""
    expired = InferenceServerException("in ensemble 'vlm', generator: deadline exceeded: the request's deadline "
                                       "passed 0.001 s ago (timeout 0.200 s)", status="StatusCode.UNAVAILABLE")
    monkeypatch.setattr("vlm_client.sdk.time.sleep", lambda s: None)
    client = VLMClient("h:1", retries=2, timeout_s=0.2)
    client._triton_client = FlakyTritonClient(expired)
    client._route_batch = 8
    with pytest.raises(DeadlineExceeded) as info:
        client.route("x")
    assert client._triton_client.calls == 1 and info.value.step == "generator"
    assert not isinstance(info.value, Overloaded) and "deadline" in str(info.value)


def test_the_timeout_goes_to_the_server_and_the_client_waits_a_little_longer():
    client = VLMClient("h:1", timeout_s=2.5)
    assert client._infer_kwargs() == {"client_timeout": 2.5 + CLIENT_GRACE_S, "timeout": 2_500_000}
    assert VLMClient("h:1", protocol="http", timeout_s=0.25)._infer_kwargs() == {"timeout": 250_000}


@pytest.mark.parametrize("exc, status", [(ConnectionRefusedError(111, "refused"), "UNAVAILABLE"),
                                         (TimeoutError("timed out"), "DEADLINE_EXCEEDED")])
def test_connection_failure_becomes_vlm_error(exc, status):
    with pytest.raises(VLMError, match="h:1") as info, translate_errors("h:1"):
        raise exc
    assert info.value.status == status and info.value.step is None


# --- packaging --------------------------------------------------------------------------------------------
def test_import_does_not_load_torch():
    code = ("import sys, vlm_client, vlm_client.cli, vlm_client.aio; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'minivlm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- CLI --------------------------------------------------------------------------------------------------
class FakeClient:
    """Stands in for VLMClient in CLI tests: records calls, returns canned results."""
    calls: list = []
    error: VLMError | None = None

    def __init__(self, url, *, protocol, timeout_s, tls_ca=None, tls_cert=None, tls_key=None):
        FakeClient.calls.append(("init", url, protocol, timeout_s))
        FakeClient.tls = (tls_ca, tls_cert, tls_key)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def ask(self, image, query, **options):
        FakeClient.calls.append(("ask", image, query, options))
        if FakeClient.error:
            raise FakeClient.error
        return parse_answer(_answer_outputs())

    def route_many(self, queries):
        FakeClient.calls.append(("route_many", list(queries)))
        return [Route("vqa", 0.875, "router", dict.fromkeys(proto.TASKS, 0.0)) for _ in queries]


@pytest.fixture
def fake_client(monkeypatch):
    FakeClient.calls, FakeClient.error = [], None
    monkeypatch.setattr(cli, "VLMClient", FakeClient)
    return FakeClient


def test_cli_ask_passes_options(fake_client, capsys):
    argv = ["ask", "-u", "h:9", "--protocol", "http", "--task", "od", "--max-new-tokens", "5",
            "--temperature", "0.2", "--top-p", "0.8", "--seed", "3", "--timeout-s", "2.5", "img.png", "find cats"]
    assert cli.main(argv) == 0
    assert fake_client.calls == [
        ("init", "h:9", "http", 2.5),
        ("ask", "img.png", "find cats", {"task": "od", "max_new_tokens": 5, "temperature": 0.2, "top_p": 0.8,
                                         "seed": 3, "json_constraint": None})]
    out = capsys.readouterr().out
    assert "od (by router, confidence 0.75)" in out and "cat" in out


def test_cli_ask_defaults_leave_options_unset(fake_client, capsys):
    assert cli.main(["ask", "--json", "img.png", "hi"]) == 0
    assert fake_client.calls[0] == ("init", None, "grpc", 60.0)
    assert set(fake_client.calls[1][3].values()) == {None}
    assert json.loads(capsys.readouterr().out)["task"] == "od"


def test_cli_ask_can_turn_the_json_constraint_off(fake_client, capsys):
    assert cli.main(["ask", "--no-json-constraint", "img.png", "find cats"]) == 0
    assert fake_client.calls[1][3]["json_constraint"] is False
    assert ask_arrays(b"img", "q", json_constraint=False)[proto.JSON_CONSTRAINT][0, 0] == False   # noqa: E712
    with pytest.raises(TypeError, match="json_constraint must be True or False"):
        ask_arrays(b"img", "q", json_constraint="no")


def test_cli_passes_tls_files(fake_client, capsys):
    assert cli.main(["route", "--tls-ca", "ca.pem", "--tls-cert", "c.pem", "--tls-key", "k.pem", "hi"]) == 0
    assert fake_client.tls == ("ca.pem", "c.pem", "k.pem")


def test_tls_options_are_checked_before_connecting(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here: gRPC reads it")
    with pytest.raises(ValueError, match="Triton's HTTP endpoint has no TLS"):
        VLMClient("h:1", protocol="http", tls_ca=ca)
    with pytest.raises(ValueError, match="tls_cert and tls_key together"):
        VLMClient("h:1", tls_ca=ca, tls_cert=ca)
    with pytest.raises(FileNotFoundError, match="missing.pem"):
        VLMClient("h:1", tls_ca=tmp_path / "missing.pem")
    assert VLMClient("h:1", tls_ca=ca).tls == {"root_certificates": str(ca)}


def test_cli_rejects_unknown_task():
    with pytest.raises(SystemExit):
        cli.main(["ask", "--task", "detect", "img.png", "hi"])


def test_cli_error_goes_to_stderr_with_step(fake_client, capsys):
    fake_client.error = VLMError("temperature must be in [0, 2], got 5.0", step="generator")
    assert cli.main(["ask", "--temperature", "5", "img.png", "hi"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "error (generator): temperature must be in [0, 2], got 5.0\n"
    assert captured.out == ""


def test_cli_route_reads_stdin(fake_client, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("describe it\n\n  what color?  \n"))
    assert cli.main(["route"]) == 0
    assert fake_client.calls[-1] == ("route_many", ["describe it", "what color?"])
    assert capsys.readouterr().out == "vqa\t0.875\tdescribe it\nvqa\t0.875\twhat color?\n"


def test_cli_route_json_from_arguments(fake_client, capsys):
    assert cli.main(["route", "--json", "a", "b"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["query"], d["task"]) for d in lines] == [("a", "vqa"), ("b", "vqa")]


def test_add_client_subcommands_on_a_foreign_parser():
    import argparse
    parser = argparse.ArgumentParser(prog="vlm")
    cli.add_client_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["route", "-u", "x:1", "q"])
    assert (args.func, args.url, args.queries) == (cli.run_route, "x:1", ["q"])


# --- metrics ----------------------------------------------------------------------------------------------
METRICS_TEXT = """# HELP vlm_requests_total Answered requests
# TYPE vlm_requests_total counter
vlm_requests_total{routing="tag",task="caption"} 3
vlm_requests_total{routing="router",task="od"} 1
vlm_time_to_first_token_seconds_bucket{task="caption",le="0.1"} 1
vlm_time_to_first_token_seconds_bucket{task="caption",le="0.5"} 3
vlm_time_to_first_token_seconds_bucket{task="caption",le="+Inf"} 4
vlm_time_to_first_token_seconds_count{task="caption"} 4
vlm_waiting_requests 2
nv_inference_request_failure{model="vlm",version="1"} 5
"""


def test_prometheus_text_and_histogram_quantiles():
    from vlm_client.metrics import histogram_quantile, parse_prometheus, total

    samples = parse_prometheus(METRICS_TEXT)
    assert total(samples, "vlm_requests_total") == 4 and total(samples, "vlm_requests_total", routing="tag") == 3
    assert samples["vlm_waiting_requests", frozenset()] == 2
    buckets = {0.1: 1, 0.5: 3, float("inf"): 4}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (2 - 1) / 2)   # inside (0.1, 0.5]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.99, buckets) == 0.5                   # in +Inf: the last finite bound
    assert np.isnan(histogram_quantile(0.5, {}))


def test_an_interval_between_two_scrapes():
    from vlm_client.metrics import Interval, parse_prometheus

    before = parse_prometheus(METRICS_TEXT)
    after = parse_prometheus(METRICS_TEXT.replace('task="caption"} 3', 'task="caption"} 7')
                             .replace('le="+Inf"} 4', 'le="+Inf"} 8').replace('le="0.5"} 3', 'le="0.5"} 7'))
    interval = Interval.between(before, after, seconds=2.0)
    assert interval.requests_per_s == 2.0 and interval.routing_mix == {"tag": 1.0}
    assert interval.ttft_p50_s == pytest.approx(0.1 + 0.4 * 2 / 4) and interval.waiting == 2
    assert interval.failed_per_s == 0.0
