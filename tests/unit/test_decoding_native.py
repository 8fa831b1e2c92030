"""The CPU fp32 decoder's own kernels (minivlm/decoding/native): products and the whole C step against
oneDNN's format, float rounding apart, through everything a continuous batch does to the cache."""
import os
import subprocess
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from minivlm.decoding import device, native
from minivlm.decoding.llama_decoder import LlamaDecoder


def _llama(**shape) -> LlamaForCausalLM:
    # the demo model's odd shapes (vocab 465, MLP 341): products pad them to blocks of 16 and slice back
    config = dict(vocab_size=465, hidden_size=128, intermediate_size=341, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  tie_word_embeddings=True, rope_theta=10000.0) | shape
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**config)).eval()


@pytest.fixture(scope="module")
def decoders():
    lm = _llama()
    return (LlamaDecoder.from_hf(lm, precision="fp32"),
            LlamaDecoder.from_hf(lm, precision="fp32", weight_format=device._ONEDNN_FP32))


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def test_the_kernels_build_here_and_fp32_on_the_cpu_uses_them(decoders):
    assert native.library() is not None, "the C kernels did not build: see the log for the compiler's error"
    ours, theirs = decoders
    assert device.weight_format("fp32", "cpu").native_step and ours._native is not None
    assert theirs._native is None


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 9, 17, 207])
@pytest.mark.parametrize("n, k", [(16, 8), (40, 37), (96, 576)])
def test_a_product_equals_torch_for_every_row_count_and_padded_width(rows, n, k, threads):
    torch.manual_seed(rows)
    w, x = torch.randn(n, k), torch.randn(rows, k)
    y = native.product(x, native.block(w))
    assert y.shape == (rows, n) and y.is_contiguous()
    torch.testing.assert_close(y, x @ w.t(), rtol=1e-5, atol=1e-4)


def _same_scheme_int8(x, w):
    """What the int8 kernels compute, in float64: per-row symmetric scales for weights and inputs."""
    w_scale, x_scale = w.abs().amax(1) / 127, x.abs().amax(1) / 127
    wq = torch.round(w / w_scale[:, None]).clamp(-127, 127).double()
    xq = torch.round(x / x_scale[:, None]).clamp(-127, 127).double()
    return (xq @ wq.t()).float() * w_scale[None] * x_scale[:, None]


@pytest.mark.skipif(not native.has_int8(), reason="the int8 kernels need AVX-512 VNNI")
@pytest.mark.parametrize("rows", [1, 3, 8, 9, 207])
@pytest.mark.parametrize("n, k", [(16, 8), (40, 37), (96, 576)])
def test_an_int8_product_is_exactly_its_quantization_scheme(rows, n, k, threads):
    torch.manual_seed(rows)
    w, x = torch.randn(n, k), torch.randn(rows, k)
    y = native.product(x, native.block_int8(w))
    torch.testing.assert_close(y, _same_scheme_int8(x, w), rtol=1e-6, atol=1e-5)   # int32 sums: exact
    assert (y - x @ w.t()).abs().max() < 0.03 * (x @ w.t()).abs().max()             # and near fp32


def test_a_product_refuses_a_wrong_shape_or_dtype():
    w = native.block(torch.randn(32, 8))
    for bad in (torch.randn(2, 9), torch.randn(8), torch.randn(2, 8, dtype=torch.float64)):
        with pytest.raises(ValueError, match="blocked"):
            native.product(bad, w)


def test_the_c_step_refuses_a_token_outside_the_vocabulary(decoders):
    ours = decoders[0]
    cache = ours.new_cache(1, 8)
    ours.prefill(torch.randn(1, 3, 128), torch.ones(1, 3), cache)
    for bad in (465, -1):
        with pytest.raises(ValueError, match=r"token ids must be in \[0, 465\)"):
            ours.step(torch.tensor([bad]), cache)
    assert ours.step(torch.tensor([464]), cache).shape == (1, 465)


def _steps(decoder, cache, tokens, n):
    out = []
    for _ in range(n):
        logits = decoder.step(tokens, cache)
        out.append(logits)
        tokens = logits.argmax(-1)
    return out, tokens


def test_the_c_step_equals_onednns_through_padding_leaving_and_joining_rows(decoders, threads):
    ours, theirs = decoders
    torch.manual_seed(1)
    embeds, mask = torch.randn(3, 12, 128) * 0.5, torch.ones(3, 12, dtype=torch.long)
    mask[0, :5] = 0                                                      # left padding
    mask[2, :2] = 0
    newcomer = torch.randn(1, 20, 128) * 0.5
    results = []
    for decoder in (ours, theirs):
        cache = decoder.new_cache(3, 64)
        first = decoder.prefill(embeds, mask, cache)
        logits, tokens = _steps(decoder, cache, first.argmax(-1), 5)
        order = cache.keep([False, True, True])                          # a row leaves: swap-remove
        cache.trim()
        more, tokens = _steps(decoder, cache, tokens[order], 3)
        rows, prefilled = decoder.prefill_rows(newcomer, torch.ones(1, 20, dtype=torch.long))
        decoder.join(rows, cache, ahead=8)                               # a longer row joins
        tokens = torch.cat([tokens, prefilled.argmax(-1)])
        last, _ = _steps(decoder, cache, tokens, 4)
        live = [kv[:cache.rows, :, cache.start:cache.length] for kv in cache.kv]
        results.append((logits + more + last, live, cache.positions[:cache.rows].clone()))
    (ours_logits, ours_kv, ours_pos), (their_logits, their_kv, their_pos) = results
    assert [tuple(t.shape) for t in ours_logits] == [tuple(t.shape) for t in their_logits]
    assert ours_logits[-1].shape == (3, 465)
    for a, b in zip(ours_logits, their_logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        assert torch.equal(a.argmax(-1), b.argmax(-1))
    for a, b in zip(ours_kv, their_kv):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert torch.equal(ours_pos, their_pos)


@pytest.mark.skipif(not native.has_int8(), reason="the int8 kernels need AVX-512 VNNI")
def test_the_int8_c_step_stays_as_close_to_fp32_as_fbgemms_int8(decoders, threads):
    lm = _llama()
    ours = LlamaDecoder.from_hf(lm, precision="int8")
    fbgemm = LlamaDecoder.from_hf(lm, precision="int8", weight_format=device._FBGEMM_INT8)
    assert ours.format is device._NATIVE_INT8 and ours._native is not None
    fp32 = decoders[0]
    torch.manual_seed(2)
    embeds, mask = torch.randn(2, 10, 128) * 0.5, torch.ones(2, 10)
    runs = []
    for decoder in (ours, fbgemm, fp32):
        cache = decoder.new_cache(2, 32)
        logits = [decoder.prefill(embeds, mask, cache)]
        tokens = logits[0].argmax(-1)
        for _ in range(4):
            logits.append(decoder.step(tokens, cache))
            tokens = logits[-1].argmax(-1)
        runs.append(torch.stack(logits))
    ours_error, fbgemm_error = (runs[0] - runs[2]).abs().max(), (runs[1] - runs[2]).abs().max()
    assert 0 < ours_error < 1.5 * fbgemm_error and ours_error < 0.05 * runs[2].abs().max()


def test_greedy_tokens_equal_transformers_at_full_width(threads):
    """A wider model (576, the SmolLM width; 9 query heads on 3 KV heads) through the C step: HF's tokens."""
    lm = _llama(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
                vocab_size=1000, eos_token_id=None, pad_token_id=0)
    decoder = LlamaDecoder.from_hf(lm)
    assert decoder._native is not None
    prompt = torch.randint(0, 1000, (2, 9))
    with torch.no_grad():
        expected = lm.generate(prompt, max_new_tokens=12, do_sample=False)[:, 9:]
    cache = decoder.new_cache(2, 32)
    tokens = decoder.prefill(lm.model.embed_tokens(prompt).detach(), torch.ones(2, 9), cache).argmax(-1)
    generated = [tokens]
    for _ in range(11):
        tokens = decoder.step(tokens, cache).argmax(-1)
        generated.append(tokens)
    assert torch.equal(torch.stack(generated, 1), expected)


def _in_a_fresh_process(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=os.environ | env)


FALLBACK = """
import logging, torch
logging.basicConfig(level=logging.INFO)
from minivlm.decoding import device
from minivlm.decoding.llama_decoder import LlamaDecoder
from transformers import LlamaConfig, LlamaForCausalLM
fmt = device.weight_format("fp32", "cpu")
lm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)).eval()
decoder = LlamaDecoder.from_hf(lm)
cache = decoder.new_cache(1, 8)
decoder.prefill(torch.randn(1, 3, 32), torch.ones(1, 3), cache)
print("native" if fmt.native_step else "onednn", decoder.step(torch.tensor([1]), cache).shape[-1])
"""


@pytest.mark.parametrize("env, said", [
    ({"MINIVLM_NATIVE_KERNELS": "0"}, "MINIVLM_NATIVE_KERNELS=0: the CPU fp32 decoder uses oneDNN"),
    ({"CC": "/nonexistent/cc", "XDG_CACHE_HOME": "/nonexistent-cache"}, "native decode kernels unavailable"),
], ids=["switched-off", "no-compiler"])
def test_without_the_kernels_the_decoder_says_so_once_and_decodes_with_onednn(env, said):
    result = _in_a_fresh_process(FALLBACK, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["onednn", "64"]
    assert result.stderr.count(said) == 1, result.stderr
