"""`decoder_precision: int8` served: the engine decodes with int8 weights, answers equal the in-process int8
decoder's token for token (the accuracy cost against fp32 is measured by `vlm demo-eval`, not here)."""
from __future__ import annotations

import shutil

import pytest

from minivlm.decoding.llama_decoder import fast_decoder
from minivlm.decoding.sampling import SamplingParams
from minivlm.export.repository import set_model_parameter
from minivlm.processing.images import preprocess_image_bytes
from minivlm.processing.prompts import clean_answer
from tests.integration.conftest import make_image
from tests.integration.server_fixture import running_server
from vlm_client import VLMClient
from vlm_client.protocol import GENERATOR_ENGINE

CASES = [("caption", "[CAPTION]", "", 12), ("od", "[OD]", "", 30), ("vqa", "[VQA] is the dog happy?", "is the dog happy?", 6)]


@pytest.fixture(scope="module")
def int8_server(model_repository, tmp_path_factory):
    repository = tmp_path_factory.mktemp("int8") / "repo"
    shutil.copytree(model_repository, repository)
    set_model_parameter(repository, GENERATOR_ENGINE, "decoder_precision", "int8")
    with running_server(repository, log_dir=tmp_path_factory.mktemp("triton-int8")) as server:
        yield server


def test_an_int8_engine_answers_as_the_in_process_int8_decoder(int8_server, reference):
    int8 = fast_decoder(reference.language_model, precision="int8")
    differs_from_fp32 = []            # the test can tell an int8 engine from an fp32 one
    with VLMClient(int8_server.grpc_url, timeout_s=120) as client:
        for seed, (task, query, question, limit) in enumerate(CASES):
            image = make_image(60 + seed)
            answer = client.ask(image, query, temperature=0.0, max_new_tokens=limit, json_constraint=False)
            embeds = reference.encode_images(preprocess_image_bytes(image)[None])[0]
            prompt, params = [reference.prompt_ids(task, question)], [SamplingParams(limit, temperature=0.0)]
            [generation] = reference.generate([embeds], prompt, params, backend=int8)
            differs_from_fp32.append(reference.generate([embeds], prompt, params)[0] != generation)
            text = clean_answer(reference.tokenizer.decode(list(generation.token_ids), skip_special_tokens=True))
            assert (answer.task, answer.text, answer.finish_reason) == (task, text, generation.finish_reason), task
    assert any(differs_from_fp32), "int8 and fp32 agree on every case: pick cases that tell them apart"
