"""The served ensemble against the in-process PyTorch reference, over gRPC and HTTP, on tiny random weights."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from minivlm.processing.images import preprocess_image_bytes
from minivlm.processing.prompts import clean_answer
from tests.integration.conftest import make_image
from vlm_client import VLMError
from vlm_client.protocol import TASKS

MAX_NEW_TOKENS = 12
TAGGED = [("caption", "[CAPTION]", ""), ("od", "[OD]", ""), ("vqa", "[VQA] is the dog happy?", "is the dog happy?"),
          ("vqa", "How many circles? [VQA]", "How many circles?")]


def reference_text(reference, image: bytes, task: str, question: str, max_new_tokens: int = MAX_NEW_TOKENS):
    generation, text = reference.reference_answer(preprocess_image_bytes(image), task, question, max_new_tokens)
    return generation, clean_answer(text)


@pytest.mark.parametrize("task, query, question", TAGGED)
def test_explicit_tag_answers_like_the_pytorch_reference(client, reference, task, query, question):
    image = make_image(1)
    answer = client.ask(image, query, temperature=0.0, max_new_tokens=MAX_NEW_TOKENS)
    generation, text = reference_text(reference, image, task, question)
    assert (answer.task, answer.routing, answer.confidence) == (task, "tag", 1.0)   # as `route` reports it
    assert answer.text == text
    assert answer.completion_tokens == len(generation.token_ids) + (generation.finish_reason == "stop")
    assert answer.finish_reason == generation.finish_reason
    assert answer.prompt_tokens == reference.vision.num_positions + len(reference.prompt_ids(task, question))


def test_detection_is_json_by_construction_unless_the_request_turns_it_off(client, reference):
    image = make_image(5)
    constrained = client.ask(image, "[OD]", temperature=0.0, max_new_tokens=40)
    free = client.ask(image, "[OD]", temperature=0.0, max_new_tokens=40, json_constraint=False)
    pixels = preprocess_image_bytes(image)
    _, text = reference.reference_answer(pixels, "od", "", 40)                        # under the grammar
    _, free_text = reference.reference_answer(pixels, "od", "", 40, json_constraint=False)
    assert constrained.text == clean_answer(text) and constrained.json_valid
    assert json.loads(constrained.text).keys() == {"objects"} and constrained.finish_reason == "stop"
    assert free.text == clean_answer(free_text) != constrained.text       # the tiny random model's own tokens


def test_task_override_wins_over_tag_and_router(grpc_client):
    answer = grpc_client.ask(make_image(2), "[VQA] what colour is it?", task="caption", max_new_tokens=3)
    assert (answer.task, answer.routing, answer.confidence) == ("caption", "override", 1.0)


def test_answer_confidence_is_the_routers_probability(grpc_client):
    for query in ("Describe this picture", "Detect all objects", "Is the dog happy?"):
        route = grpc_client.route(query)
        answer = grpc_client.ask(make_image(3), query, max_new_tokens=2)
        assert answer.routing == "router" and route.routing == "router"
        assert answer.task == route.task == max(route.probabilities, key=route.probabilities.get)
        assert answer.confidence == pytest.approx(route.probabilities[answer.task], abs=1e-6)
        assert abs(sum(route.probabilities.values()) - 1) < 1e-5


ROUTED = [("Describe this picture, please", "caption"), ("what's going on in this photo", "caption"),
          ("Detect all objects", "od"), ("Where are the objects? Give coordinates.", "od"),
          ("Is it raining?", "vqa"), ("Is the dog happy?", "vqa"), ("how many people are there", "vqa"),
          ("Rather than boxes, just give me the count of cars.", "vqa"),     # a ruled-out task is dropped first
          ("No need for a description, just the boxes.", "od")]


@pytest.mark.parametrize("query, task", ROUTED)
def test_natural_queries_reach_the_right_task(grpc_client, query, task):
    answer = grpc_client.ask(make_image(9), query, max_new_tokens=2)
    assert (answer.task, answer.routing) == (task, "router")
    assert answer.confidence > 0.5


def test_compound_query_is_answered_with_both_tasks(grpc_client, reference):
    image = make_image(11)
    answer = grpc_client.ask(image, "describe the picture and find all the objects", temperature=0.0,
                             max_new_tokens=6)
    assert answer.task == "caption+od" and [p.task for p in answer.parts] == ["caption", "od"]
    for part in answer.parts:
        assert part.text == reference_text(reference, image, part.task, "", 6)[1]
    assert answer.text == answer.parts[0].text
    assert answer.completion_tokens == sum(p.completion_tokens for p in answer.parts)


def test_route_many_and_tags_in_route(grpc_client):
    routes = grpc_client.route_many(["where is everything?", "[OD] describe", "caption please"])
    assert len(routes) == 3
    assert (routes[1].task, routes[1].routing, routes[1].confidence) == ("od", "tag", 1.0)
    assert all(r.task in TASKS for r in routes)


def test_sixteen_concurrent_asks_equal_their_sequential_answers(grpc_client):
    jobs = [(make_image(10 + i), TAGGED[i % len(TAGGED)][1], 4 + i % 5) for i in range(16)]
    sequential = [grpc_client.ask(image, query, temperature=0.0, max_new_tokens=n) for image, query, n in jobs]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda job: grpc_client.ask(job[0], job[1], temperature=0.0, max_new_tokens=job[2]),
                                   jobs))
    assert [a.to_dict() for a in concurrent] == [a.to_dict() for a in sequential]
    assert [a.completion_tokens for a in sequential] == [n for _, _, n in jobs]


def test_seeded_sampling_is_reproducible(grpc_client):
    image = make_image(4)
    first = grpc_client.ask(image, "[CAPTION]", temperature=1.0, top_p=0.9, seed=7, max_new_tokens=8)
    again = grpc_client.ask(image, "[CAPTION]", temperature=1.0, top_p=0.9, seed=7, max_new_tokens=8)
    assert first.text == again.text


def test_default_token_limits_follow_the_notebook(grpc_client):
    answer = grpc_client.ask(make_image(5), "[VQA] what is it?")
    assert answer.completion_tokens <= 10
    if answer.finish_reason == "length":
        assert answer.completion_tokens == 10


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "GIF"])
def test_other_image_formats_are_accepted(grpc_client, fmt):
    image = Image.fromarray((np.random.default_rng(6).random((64, 80, 3)) * 255).astype(np.uint8))
    answer = grpc_client.ask(_encoded(image, fmt), "[CAPTION]", max_new_tokens=2)
    assert answer.task == "caption"


def test_cli_ask_and_route_speak_json(server, tmp_path):
    image_path = tmp_path / "image.png"
    image_path.write_bytes(make_image(7))
    ask = subprocess.run([sys.executable, "-m", "minivlm.cli", "ask", "-u", server.grpc_url, str(image_path),
                          "[VQA] is it red?", "--json", "--max-new-tokens", "3"],
                         capture_output=True, text=True, timeout=120)
    assert ask.returncode == 0, ask.stderr
    assert json.loads(ask.stdout)["task"] == "vqa"
    route = subprocess.run([sys.executable, "-m", "minivlm.cli", "route", "-u", server.grpc_url, "--json"],
                           input="describe it\n[OD] boxes\n", capture_output=True, text=True, timeout=120)
    assert route.returncode == 0, route.stderr
    lines = [json.loads(line) for line in route.stdout.splitlines()]
    assert len(lines) == 2 and lines[1]["task"] == "od"


def test_cli_reports_server_errors_with_the_step(server, tmp_path):
    image_path = tmp_path / "broken.jpg"
    image_path.write_bytes(b"not an image at all")
    result = subprocess.run([sys.executable, "-m", "minivlm.cli", "ask", "-u", server.grpc_url, str(image_path),
                             "hello"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "image_preprocess" in result.stderr and "could not be decoded" in result.stderr


def test_ask_fails_clearly_when_no_server_listens():
    from minivlm.server.discovery import free_port
    from vlm_client import VLMClient

    with VLMClient(f"127.0.0.1:{free_port()}", timeout_s=5) as client:
        with pytest.raises(VLMError) as error:
            client.ask(make_image(8), "[CAPTION]")
    assert error.value.status in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
