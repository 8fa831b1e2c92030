"""What the decoder does per device, checked on the CPU: precision defaults and refusals, tensors made on the
weights' device, CUDA's bf16-throughout format's arithmetic (plain torch ops, so it runs here too), and the
scheduler's choice of engine. tests/unit/test_decoder_cuda.py runs the same code on a GPU."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from minivlm.decoding.batch import ContinuousBatch, Job
from minivlm.decoding.device import (
    FORMATS,
    PrefillStream,
    default_precision,
    resolve_precision,
    weight_format,
)
from minivlm.decoding.generate import decode, left_pad
from minivlm.decoding.llama_decoder import LlamaDecoder, fast_decoder, supports_fast_decoder
from minivlm.decoding.sampling import SamplingParams
from minivlm.export.repository import BuildOptions
from minivlm.model.shapes import tiny_language_config
from minivlm.serving.config import GeneratorEngineConfig
from minivlm.serving.generator_engine import GeneratorEngine
from minivlm.serving.scheduler import Scheduler


@pytest.fixture(scope="module")
def lm() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_language_config(256)).eval()


def _prefixes(lm, lengths, seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return [lm.get_input_embeddings()(torch.randint(lm.config.vocab_size, (n,), generator=g)) for n in lengths]


@pytest.mark.parametrize("device, expected", [("cpu", "fp32"), ("cuda", "bf16"), ("cuda:1", "bf16")])
def test_auto_is_exact_on_the_cpu_and_bf16_on_cuda(device, expected):
    """torch.device("cuda") needs no GPU: the choice is made from the name alone."""
    assert default_precision(device) == resolve_precision("auto", device) == expected
    assert resolve_precision("fp32", device) == "fp32"                 # fp32 stays selectable everywhere


def test_formats_each_device_does_not_have_are_refused_by_name():
    with pytest.raises(ValueError, match=r"'int8' does not run on cuda; cuda offers \['bf16', 'fp32'\]"):
        resolve_precision("int8", "cuda")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8", "cpu")
    with pytest.raises(ValueError, match="fast decoder runs on"):
        weight_format("fp32", "meta")


def test_cpu_formats_keep_fp32_activations_and_cuda_bf16_is_bf16_throughout():
    assert [weight_format(p, "cpu").dtype for p in ("fp32", "bf16", "int8")] == [torch.float32] * 3
    assert weight_format("fp32", "cuda").dtype == torch.float32
    assert weight_format("bf16", "cuda").dtype == torch.bfloat16


def test_the_decoder_makes_every_tensor_on_the_weights_device(lm):
    decoder = fast_decoder(lm)
    assert decoder.device == torch.device("cpu") and decoder.precision == "fp32"
    cache = decoder.new_cache(2, 8)
    assert {t.device.type for t in [*cache.tensors(), decoder.rotations, decoder._eps_d]} == {"cpu"}
    assert cache.kv[0].dtype == cache.bias.dtype == torch.float32


def test_cuda_bf16_arithmetic_stays_close_to_fp32(lm):
    """CUDA's bf16 format (bf16 weights, activations and cache; norms and RoPE in fp32), run on the CPU: the
    code path the GPU takes by default, checked here for shape, dtype and accuracy."""
    fp32 = LlamaDecoder.from_hf(lm)
    bf16 = LlamaDecoder.from_hf(lm, precision="bf16", weight_format=FORMATS["cuda", "bf16"])
    embeds, mask = left_pad(_prefixes(lm, [7, 19, 12]))
    exact_cache, cache = fp32.new_cache(3, 24), bf16.new_cache(3, 24)
    exact, logits = fp32.prefill(embeds, mask, exact_cache), bf16.prefill(embeds, mask, cache)
    assert cache.kv[0].dtype == cache.bias.dtype == torch.bfloat16 and logits.dtype == torch.float32
    for _ in range(4):
        assert float((logits - exact).norm() / exact.norm()) < 0.05        # bf16 keeps ~3 significant digits
        tokens = exact.argmax(-1)
        exact, logits = fp32.step(tokens, exact_cache), bf16.step(tokens, cache)
    assert not torch.equal(logits, exact)                                # it did run in bf16


def test_a_continuous_batch_in_cuda_bf16_format_decodes_rows_to_their_limits(lm):
    decoder = LlamaDecoder.from_hf(lm, precision="bf16", weight_format=FORMATS["cuda", "bf16"])
    batch = ContinuousBatch(decoder, eos_token_id=-1, max_rows=4)
    prefixes = _prefixes(lm, [5, 11, 8], seed=1)
    batch.admit([Job(i, p, SamplingParams(max_new_tokens=3 + 2 * i)) for i, p in enumerate(prefixes)])
    finished = {}
    while batch.rows:
        finished.update(batch.step())
    assert {k: len(g.token_ids) for k, g in finished.items()} == {0: 3, 1: 5, 2: 7}


def test_prefill_stream_is_a_plain_call_on_the_cpu():
    stream = PrefillStream("cpu")
    assert stream.stream is None and stream.run(lambda: 42) == 42
    stream.adopt([torch.zeros(1)])                                        # nothing to hand over


def test_the_fast_decoder_takes_cpu_and_cuda_llamas_only(lm):
    assert supports_fast_decoder(lm)
    meta = LlamaForCausalLM(tiny_language_config(256)).to("meta")
    assert not supports_fast_decoder(meta)


def test_scheduler_resolves_auto_per_device_and_static_stays_fp32(tiny_vlm):
    engine = GeneratorEngine(tiny_vlm.language_model, tiny_vlm.tokenizer, GeneratorEngineConfig())
    assert GeneratorEngineConfig().decoder_precision == "auto"
    continuous = Scheduler(engine)                                       # the default: "auto"
    assert (continuous.mode, continuous.precision, continuous.batch.decoder.precision) == \
        ("continuous", "fp32", "fp32")
    assert Scheduler(engine, continuous=False).precision == "fp32"
    generations = decode(engine.language_model, _prefixes(engine.language_model, [6]), [SamplingParams(5)], 0)
    assert generations == decode(engine.language_model, _prefixes(engine.language_model, [6]),
                                 [SamplingParams(5)], 0, backend=continuous.batch.decoder)


def test_export_options_take_gpu_precisions_and_refuse_int8_there(tmp_path):
    for precision in ("auto", "fp32", "bf16"):
        assert BuildOptions(checkpoint_dir=tmp_path, output=tmp_path / "r", device="gpu",
                            decoder_precision=precision).decoder_precision == precision
    with pytest.raises(ValueError, match="only on the CPU"):
        BuildOptions(checkpoint_dir=tmp_path, output=tmp_path / "r", device="gpu", decoder_precision="int8")
