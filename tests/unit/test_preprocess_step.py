"""The vlm ensemble's preprocess step: image and query checked together, errors named after the bad half."""
from __future__ import annotations

import io
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from PIL import Image

from minivlm.errors import DeadlineExceededError, InputError, RequestCancelledError, ServerBusyError
from minivlm.processing.images import preprocess_image_bytes
from minivlm.routing.minilm import pretrained_encoder_dir
from minivlm.routing.tokenization import QueryTokenizer
from minivlm.serving.preprocess_step import PreprocessStep, blamed_on
from minivlm.serving.query_step import QueryStep
from minivlm.serving.triton_glue import error_code, exception_response, respond_each
from vlm_client.protocol import GENERATOR, IMAGE_PREPROCESS, NO_TASK, PREPROCESS, QUERY_PREPROCESS, TASKS


@pytest.fixture(scope="module")
def step() -> PreprocessStep:
    return PreprocessStep(QueryStep(QueryTokenizer.from_pretrained(pretrained_encoder_dir(), "minilm")))


def png(size=(40, 30), seed=0) -> bytes:
    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_prepares_both_halves_like_the_separate_steps(step):
    images, queries = [png(seed=1), png(seed=2)], [b"[VQA] what colour?", b"describe it"]
    batch = step.run(images, queries, [b"", b"od"])
    for got, image in zip(batch.pixel_values, images):
        np.testing.assert_array_equal(got, preprocess_image_bytes(image))
    alone = step.query_step.run(queries, [b"", b"od"])
    np.testing.assert_array_equal(batch.query.input_ids, alone.input_ids)
    assert batch.query.questions == ["what colour?", "describe it"]
    assert batch.query.forced_tasks == [TASKS.index("vqa"), TASKS.index("od")]
    assert step.run([png()], [b"hello"]).query.forced_tasks == [NO_TASK]     # no override sent


@pytest.mark.parametrize("image, query, blamed, needle", [
    (b"not an image", b"[CAPTION]", IMAGE_PREPROCESS, "could not be decoded"),
    (png(size=(1, 1)), b"[CAPTION]", IMAGE_PREPROCESS, "1x1 pixels"),
    (png(), b"   ", QUERY_PREPROCESS, "query is empty"),
    (png(), b"[OD] [VQA] what", QUERY_PREPROCESS, "conflicting task tags"),
    (b"not an image", b"", QUERY_PREPROCESS, "query is empty"),     # both bad: one error, the cheap check's
])
def test_errors_name_the_half_at_fault(step, image, query, blamed, needle):
    with pytest.raises(InputError, match=needle) as error:
        step.run([image], [query])
    assert error.value.step == blamed


def test_one_bad_row_fails_its_request_and_rows_must_pair_up(step):
    with pytest.raises(InputError) as error:
        step.run([png(), b"junk"], [b"a", b"b"])
    assert error.value.step == IMAGE_PREPROCESS
    with pytest.raises(InputError, match="2 images but 1 queries"):
        step.run([png(), png()], [b"a"])


def test_blamed_on_keeps_an_earlier_name():
    with pytest.raises(InputError) as error, blamed_on(QUERY_PREPROCESS), blamed_on(IMAGE_PREPROCESS):
        raise InputError("bad")
    assert error.value.step == IMAGE_PREPROCESS


class FakePbUtils:
    """Just enough of triton_python_backend_utils for respond_each's error responses."""

    class TritonError:
        INVALID_ARG, INTERNAL, UNAVAILABLE, CANCELLED = "INVALID_ARG", "INTERNAL", "UNAVAILABLE", "CANCELLED"

        def __init__(self, message, code):
            self.message, self.code = message, code

    class InferenceResponse:
        def __init__(self, tensors=None, error=None):
            self.tensors, self.error = tensors, error


def test_each_request_gets_its_own_error_prefixed_with_the_named_step():
    def handle(request):
        if request == "bad image":
            raise InputError("image is empty (0 bytes)", step=IMAGE_PREPROCESS)
        if request == "bug":
            raise RuntimeError("oops")
        return FakePbUtils.InferenceResponse(["ok"])

    responses = respond_each(FakePbUtils, PREPROCESS, ["good", "bad image", "bug", "good"], handle)
    assert [r.tensors for r in responses] == [["ok"], None, None, ["ok"]]
    assert responses[1].error.message == "image_preprocess: image is empty (0 bytes)"
    assert responses[1].error.code == "INVALID_ARG"
    assert responses[2].error.message.startswith("preprocess: internal error: RuntimeError")


def test_the_error_kind_survives_a_hop_that_drops_the_code():
    """generator forwards generator_engine's errors; Triton 2.51 hands it every one as INTERNAL."""
    errors = {"bad option": InputError("max_new_tokens must be in [1, 512], got -5"),
              "busy": ServerBusyError("64 requests are waiting for a decoding slot; retry later"),
              "deadline": DeadlineExceededError("its deadline (timeout 0.2 s) passed"),
              "cancelled": RequestCancelledError("the client cancelled it"),
              "bug": KeyError("x")}
    for name, error in errors.items():
        sent = exception_response(FakePbUtils, GENERATOR, error).error
        assert error_code(FakePbUtils, sent.message) == sent.code, name
    assert [exception_response(FakePbUtils, GENERATOR, e).error.code for e in errors.values()] == \
        ["INVALID_ARG", "UNAVAILABLE", "UNAVAILABLE", "CANCELLED", "INTERNAL"]
    assert exception_response(FakePbUtils, GENERATOR, errors["deadline"]).error.message == \
        "generator: deadline exceeded: its deadline (timeout 0.2 s) passed"
