"""`vlm_stream` over gRPC streaming: the answer's text arrives piece by piece, then the same answer `vlm` gives."""
from __future__ import annotations

import time

import pytest

from minivlm.processing.prompts import clean_answer
from tests.integration.conftest import make_image
from vlm_client import VLMClient, VLMError


def _stream(client, *args, **kwargs):
    """(arrival time, chunk) for every chunk of one streamed answer."""
    start = time.monotonic()
    return [(time.monotonic() - start, chunk) for chunk in client.ask_stream(*args, **kwargs)]


@pytest.mark.parametrize("query, tokens", [("[CAPTION]", 14), ("[VQA] what colour is the car?", 6),
                                           ("describe the picture and find all the objects", 10)])
def test_streamed_pieces_come_first_and_the_answer_equals_the_unary_one(grpc_client, query, tokens):
    image = make_image(70)
    chunks = _stream(grpc_client, image, query, temperature=0.0, max_new_tokens=tokens)
    *pieces, (answered_at, last) = chunks
    unary = grpc_client.ask(image, query, temperature=0.0, max_new_tokens=tokens)
    assert last.answer is not None and last.answer.to_dict() == unary.to_dict()
    assert pieces and all(chunk.answer is None and chunk.text for _, chunk in pieces)
    assert clean_answer("".join(chunk.text for _, chunk in pieces)) == unary.parts[0].text
    assert pieces[0][0] < answered_at                       # the first piece did not wait for the answer


def test_a_bad_request_on_the_stream_fails_alone_and_the_next_stream_works(grpc_client):
    with pytest.raises(VLMError) as error:
        list(grpc_client.ask_stream(b"\x89PNG not really", "[CAPTION]"))
    assert error.value.step == "image_preprocess"
    with pytest.raises(VLMError, match="max_new_tokens"):
        list(grpc_client.ask_stream(make_image(71), "[CAPTION]", max_new_tokens=0))
    chunks = list(grpc_client.ask_stream(make_image(72), "[CAPTION]", temperature=0.0, max_new_tokens=5))
    assert chunks[-1].answer is not None and chunks[-1].answer.task == "caption"


def test_streaming_needs_grpc(server):
    with VLMClient(server.http_url, protocol="http") as client:
        with pytest.raises(VLMError, match="grpc"):
            next(client.ask_stream(make_image(73), "[CAPTION]"))


def test_cli_ask_stream_prints_the_text_then_the_answer(server, grpc_client, tmp_path):
    import json
    import subprocess
    import sys

    image_path = tmp_path / "image.png"
    image_path.write_bytes(make_image(74))
    command = [sys.executable, "-m", "minivlm.cli", "ask", "-u", server.grpc_url, str(image_path), "[CAPTION]",
               "--stream", "--max-new-tokens", "6", "--temperature", "0"]
    unary = grpc_client.ask(make_image(74), "[CAPTION]", max_new_tokens=6, temperature=0.0)
    shown = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    streamed, answer = shown.stdout.split("\n", 1)
    assert clean_answer(streamed) == unary.text and answer.startswith("task     caption (by tag")
    as_json = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=120)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == unary.to_dict()


def test_the_asyncio_client_streams_the_same(server, grpc_client):
    import asyncio

    from vlm_client import AsyncVLMClient

    async def stream():
        async with AsyncVLMClient(server.grpc_url, timeout_s=120) as client:
            return [chunk async for chunk in client.ask_stream(make_image(75), "[CAPTION]", temperature=0.0,
                                                                max_new_tokens=8)]

    *pieces, last = asyncio.run(stream())
    unary = grpc_client.ask(make_image(75), "[CAPTION]", temperature=0.0, max_new_tokens=8)
    assert last.answer.to_dict() == unary.to_dict()
    assert pieces and clean_answer("".join(chunk.text for chunk in pieces)) == unary.text
