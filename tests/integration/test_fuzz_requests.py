"""The request fields fuzzed with hypothesis against the live server (a bounded number of examples, the same ones
every run): no crash, no hang, every error INVALID_ARGUMENT naming the step and the problem, and the server still
answers a good request afterwards.

Requests are built by hand (tests/integration/test_bad_input.py's raw_inputs), so the server's own checks are
what is tested, not the SDK's.
"""
from __future__ import annotations

import collections
import io

import pytest
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import make_image
from tests.integration.test_bad_input import raw_inputs
from vlm_client.errors import split_step
from vlm_client.protocol import ENSEMBLE, TEXT

EXAMPLES = 200
REQUEST_TIMEOUT_S = 60           # a hang fails the example instead of the whole run
INT32, INT64 = 2**31 - 1, 2**63 - 1


def _png(width: int, height: int, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color=0).save(buffer, format="PNG")
    return buffer.getvalue()


images = st.one_of(
    st.sampled_from([make_image(3), make_image(4, size=(40, 300), fmt="JPEG")]),   # valid: options get checked
    st.binary(max_size=64),                                                    # garbage, often empty
    st.builds(lambda n: make_image(n % 5)[: max(1, n)], st.integers(1, 2000)),  # truncated
    st.builds(_png, st.integers(1, 64), st.integers(1, 64), st.sampled_from(["RGB", "L", "RGBA", "P", "1"])),
)
queries = st.one_of(
    st.text(max_size=40),
    st.builds(lambda tag, text: f"{tag} {text}", st.sampled_from(["[CAPTION]", "[OD]", "[VQA]", "[caption]", "["]),
              st.text(max_size=20)),
    st.binary(max_size=40),                                                    # not always UTF-8
    st.just("x" * 5000),
)
options = st.fixed_dictionaries({}, optional={
    "max_new_tokens": st.one_of(st.integers(-3, 12), st.sampled_from([-INT32 - 1, INT32, 100_000])),
    "temperature": st.floats(width=32, allow_nan=True, allow_infinity=True),
    "top_p": st.floats(width=32, allow_nan=True, allow_infinity=True),
    "seed": st.integers(-INT64 - 1, INT64),
    "task_override": st.one_of(st.sampled_from([b"caption", b"od", b"vqa", b"", b"CAPTION"]), st.binary(max_size=12)),
})


@pytest.fixture(scope="module")
def raw(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        yield client


def _send(raw, image: bytes, query: bytes, fields: dict) -> str | None:
    """None when answered; else the error's status and message, to be judged."""
    # bounded answers on 2 cores: an unset max_new_tokens would decode up to the server's default
    fields = {"max_new_tokens": 4, **fields}
    try:
        result = raw.infer(ENSEMBLE, raw_inputs(image, query, fields), client_timeout=REQUEST_TIMEOUT_S)
    except InferenceServerException as error:
        return f"{error.status()}|{error.message()}"
    assert result.as_numpy(TEXT.name) is not None
    return None


def test_fuzzed_requests_get_an_answer_or_a_clear_error(raw, grpc_client, server):
    outcomes: collections.Counter = collections.Counter()     # "answered", or the step that refused

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(image=images, query=queries, fields=options)
    def one_request(image, query, fields):
        query = query.encode() if isinstance(query, str) else query
        error = _send(raw, image, query, fields)
        if error is None:
            outcomes["answered"] += 1
            return
        status, message = error.split("|", 1)
        assert status == "StatusCode.INVALID_ARGUMENT", error       # never INTERNAL, UNAVAILABLE or a deadline
        step, problem = split_step(message)
        assert step is not None and problem.strip(), error          # names the step and says what is wrong
        outcomes[step] += 1

    one_request()
    print(dict(outcomes))
    # the fuzzing reached every step that checks a request, and some requests were answered
    assert {"answered", "image_preprocess", "query_preprocess", "generator"} <= set(outcomes), outcomes
    assert server.process.poll() is None
    answer = grpc_client.ask(make_image(2), "[CAPTION]", max_new_tokens=2)     # still serving
    assert answer.task == "caption" and answer.completion_tokens > 0
