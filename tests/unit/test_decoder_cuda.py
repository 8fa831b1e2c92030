"""The decoder and the scheduler on CUDA against the CPU reference: fp32 greedy tokens equal token for token,
bf16 (the GPU default) stays close, prefill on its own stream changes no answer. Skipped without CUDA
(tests/conftest.py); scripts/gpu-check.sh runs them on a GPU machine."""
from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from minivlm.decoding.generate import decode, left_pad, reference_greedy
from minivlm.decoding.llama_decoder import LlamaDecoder, fast_decoder
from minivlm.decoding.sampling import SamplingParams
from minivlm.model.shapes import tiny_language_config
from minivlm.serving.config import GeneratorEngineConfig
from minivlm.serving.generator_engine import GenerationRequest, GeneratorEngine
from minivlm.serving.options import RequestOptions
from minivlm.serving.scheduler import Scheduler
from vlm_client.protocol import ROUTED_BY_TAG, TASKS

pytestmark = pytest.mark.gpu
LOGIT_TOLERANCE = 1e-4            # fp32 on another device: only the summation order differs


@pytest.fixture(scope="module", autouse=True)
def exact_fp32_matmuls():
    """TF32 would make CUDA's fp32 matmuls ~1e-3 off: what fp32 means here is the CPU's arithmetic."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.fixture(scope="module")
def cpu_lm() -> LlamaForCausalLM:
    torch.manual_seed(1)
    return LlamaForCausalLM(tiny_language_config(256)).eval()


@pytest.fixture(scope="module")
def cuda_lm(cpu_lm) -> LlamaForCausalLM:
    return copy.deepcopy(cpu_lm).to("cuda")


def _prefixes(lm, lengths, seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ids = [torch.randint(lm.config.vocab_size, (n,), generator=g) for n in lengths]
        return [lm.get_input_embeddings()(i.to(lm.device)) for i in ids]


def test_cuda_fp32_greedy_tokens_equal_the_cpu_reference(cpu_lm, cuda_lm):
    decoder = fast_decoder(cuda_lm, precision="fp32")
    assert decoder.device.type == "cuda" and decoder.new_cache(1, 4).kv[0].is_cuda
    cpu_prefixes, cuda_prefixes = _prefixes(cpu_lm, [5, 23, 40, 9]), _prefixes(cuda_lm, [5, 23, 40, 9])
    params = [SamplingParams(max_new_tokens=n) for n in (20, 7, 16, 12)]
    expected = [reference_greedy(cpu_lm, p, q.max_new_tokens, eos_token_id=0) for p, q in zip(cpu_prefixes, params)]
    assert decode(cuda_lm, cuda_prefixes, params, 0, backend=decoder) == expected   # a batch, rows leaving
    assert [decode(cuda_lm, [p], [q], 0)[0] for p, q in zip(cuda_prefixes, params)] == expected   # "auto"


@torch.inference_mode()
def test_cuda_fp32_logits_match_the_cpu_decoder(cpu_lm, cuda_lm):
    cpu, cuda = LlamaDecoder.from_hf(cpu_lm), LlamaDecoder.from_hf(cuda_lm)
    embeds, mask = left_pad(_prefixes(cpu_lm, [7, 19, 1, 12]))
    cpu_cache, cuda_cache = cpu.new_cache(4, 40), cuda.new_cache(4, 40)
    expected, got = cpu.prefill(embeds, mask, cpu_cache), cuda.prefill(embeds.cuda(), mask.cuda(), cuda_cache)
    for _ in range(12):
        assert float((got.cpu() - expected).abs().max()) < LOGIT_TOLERANCE
        tokens = expected.argmax(-1)
        expected, got = cpu.step(tokens, cpu_cache), cuda.step(tokens.cuda(), cuda_cache)


@torch.inference_mode()
def test_cuda_bf16_is_bf16_throughout_and_close_to_fp32(cuda_lm):
    exact, bf16 = fast_decoder(cuda_lm, precision="fp32"), fast_decoder(cuda_lm, precision="bf16")
    embeds, mask = left_pad(_prefixes(cuda_lm, [7, 19, 12]))
    cache = bf16.new_cache(3, 24)
    logits = bf16.prefill(embeds, mask, cache)
    reference = exact.prefill(embeds, mask, exact.new_cache(3, 24))
    assert cache.kv[0].dtype == torch.bfloat16 and bf16.layers[0].wqkv.dtype == torch.bfloat16
    assert float((logits - reference).norm() / reference.norm()) < 0.05


def _request(image, task: str, max_new_tokens: int) -> GenerationRequest:
    one_hot = np.eye(len(TASKS))[TASKS.index(task)]
    question = "what colour is it?" if task == "vqa" else ""
    return GenerationRequest(image, one_hot, question, task_scores=one_hot, forced_task=TASKS.index(task),
                             forced_by=ROUTED_BY_TAG,
                             options=RequestOptions(max_new_tokens=max_new_tokens, temperature=0.0,
                                                    json_constraint=False))


def test_a_cuda_scheduler_answers_as_the_cpu_engine(tiny_vlm):
    """KIND_GPU's engine: the continuous scheduler, prefill on its own stream (overlapped), fp32 selected."""
    config = GeneratorEngineConfig(decoder_precision="fp32")
    cpu_engine = GeneratorEngine(tiny_vlm.language_model, tiny_vlm.tokenizer, config)
    cuda_engine = GeneratorEngine(copy.deepcopy(tiny_vlm.language_model).to("cuda"), tiny_vlm.tokenizer, config)
    pixels = torch.rand((4, 3, 224, 224), generator=torch.Generator().manual_seed(3)) * 2 - 1
    images = [e.numpy() for e in tiny_vlm.encode_images(pixels)]
    requests = [[_request(images[i], task, n)] for i, (task, n) in
                enumerate([("od", 30), ("caption", 9), ("vqa", 5), ("caption", 14)])]
    scheduler = Scheduler.from_config(cuda_engine, config).start()
    assert scheduler.mode == "continuous" and scheduler.batch.decoder.device.type == "cuda"
    try:
        done, answers = threading.Semaphore(0), {}
        for i, rows in enumerate(requests):
            scheduler.submit(rows, lambda outcome, i=i: (answers.__setitem__(i, outcome), done.release()))
        for _ in requests:
            assert done.acquire(timeout=120)
    finally:
        scheduler.close()
    assert [answers[i] for i in range(len(requests))] == [cpu_engine.run(rows) for rows in requests]
    assert Scheduler(cuda_engine, precision="auto").precision == "bf16"         # the GPU default
