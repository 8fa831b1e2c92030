"""The ensemble exported with `--device gpu` (KIND_GPU router, vision encoder and generator_engine) on the pip
tritonserver: greedy answers equal the in-process CPU reference token for token (fp32 decoder selected), and 16
concurrent asks all answer as they do alone. The export is checked everywhere; the served tests are marked gpu,
skipped without CUDA (tests/conftest.py); scripts/gpu-check.sh runs them on a GPU machine."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from minivlm.export.repository import BuildOptions, build_repository
from minivlm.processing.images import preprocess_image_bytes
from minivlm.processing.prompts import clean_answer
from minivlm.serving.onnx_model import TORCH_PROGRAM
from tests.integration.conftest import make_image
from tests.integration.server_fixture import running_server
from vlm_client import VLMClient
from vlm_client.protocol import GENERATOR_ENGINE, ROUTER, VISION_ENCODER

MAX_NEW_TOKENS = 12
CASES = [("caption", "[CAPTION]", ""), ("od", "[OD]", ""), ("vqa", "[VQA] is the dog happy?", "is the dog happy?")]


@pytest.fixture(scope="module")
def gpu_repository(notebook_dir, tmp_path_factory):
    """fp32: what the CPU reference computes (bf16, the GPU default, is checked by tests/unit/test_decoder_cuda).
    The notebook's router: the GPU machine has no pretrained MiniLM package, and these queries are tagged."""
    output = tmp_path_factory.mktemp("served-gpu") / "repo"
    build_repository(BuildOptions(checkpoint_dir=notebook_dir, output=output, device="gpu", decoder_precision="fp32",
                                  router="notebook"))
    return output


@pytest.fixture(scope="module")
def gpu_server(gpu_repository, tmp_path_factory):
    with running_server(gpu_repository, log_dir=tmp_path_factory.mktemp("triton-gpu")) as server:
        yield server


def test_the_repository_puts_the_heavy_models_on_the_gpu(gpu_repository):
    for model in (ROUTER, VISION_ENCODER, GENERATOR_ENGINE):
        config = text_format.Parse((gpu_repository / model / "config.pbtxt").read_text(),
                                   model_config_pb2.ModelConfig())
        assert {g.kind for g in config.instance_group} == {model_config_pb2.ModelInstanceGroup.KIND_GPU}, model
    assert (gpu_repository / VISION_ENCODER / "1" / TORCH_PROGRAM).is_file()       # the CUDA path for ViT


@pytest.mark.gpu
@pytest.mark.parametrize("task, query, question", CASES)
def test_served_greedy_answers_equal_the_cpu_reference(gpu_server, reference, task, query, question):
    image = make_image(11)
    with VLMClient(gpu_server.grpc_url, timeout_s=120) as client:
        answer = client.ask(image, query, temperature=0.0, max_new_tokens=MAX_NEW_TOKENS, json_constraint=False)
    generation, text = reference.reference_answer(preprocess_image_bytes(image), task, question, MAX_NEW_TOKENS,
                                                  json_constraint=False)
    assert (answer.task, answer.text, answer.finish_reason) == (task, clean_answer(text), generation.finish_reason)
    assert answer.completion_tokens == len(generation.token_ids) + (generation.finish_reason == "stop")


@pytest.mark.gpu
def test_sixteen_concurrent_asks_answer_as_they_do_alone(gpu_server):
    jobs = [(make_image(100 + i), CASES[i % 3][1], 4 + i % 9) for i in range(16)]
    with VLMClient(gpu_server.grpc_url, timeout_s=300) as client:
        def ask(job):
            image, query, tokens = job
            return client.ask(image, query, temperature=0.0, max_new_tokens=tokens, json_constraint=False).to_dict()

        alone = [ask(job) for job in jobs]
        with ThreadPoolExecutor(16) as pool:
            together = list(pool.map(ask, jobs))
    assert together == alone
