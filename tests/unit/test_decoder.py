"""minivlm.decoding.llama_decoder against HF's LlamaForCausalLM: logits, greedy tokens, batching, weight import, fallbacks."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache, LlamaForCausalLM

from minivlm.decoding.generate import decode, left_pad, reference_greedy
from minivlm.decoding.llama_decoder import (
    DecoderConfig,
    LlamaDecoder,
    check_state_dict,
    fast_decoder,
    supports_fast_decoder,
)
from minivlm.decoding.sampling import SamplingParams
from minivlm.model.shapes import full_language_config, tiny_language_config

LOGIT_TOLERANCE = 1e-4            # fp32: HF and the fast decoder differ only in summation order


def _llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    config = tiny_language_config(256)
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def _prefixes(lm, lengths, seed=0) -> list[torch.Tensor]:
    """Token embeddings of random ids: the magnitudes a real prompt prefix has."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return [lm.get_input_embeddings()(torch.randint(lm.config.vocab_size, (n,), generator=g)) for n in lengths]


@torch.inference_mode()
def _max_logit_diff(lm, decoder, prefixes, steps: int) -> float:
    """Prefill then `steps` teacher-forced steps on HF's greedy tokens, left-padded batch of mixed lengths."""
    embeds, mask = left_pad(prefixes)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    hf_cache = DynamicCache()
    expected = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=hf_cache,
                  use_cache=True).logits[:, -1]
    cache = decoder.new_cache(len(prefixes), embeds.shape[1] + steps)
    worst = float((decoder.prefill(embeds, mask, cache) - expected).abs().max())
    for _ in range(steps):
        tokens, positions = expected.argmax(-1), positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((len(prefixes), 1))], dim=1)
        expected = lm(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions, cache=hf_cache,
                      use_cache=True).logits[:, -1]
        worst = max(worst, float((decoder.step(tokens, cache) - expected).abs().max()))
    return worst


@pytest.mark.parametrize("overrides", [
    {},
    {"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}, "rms_norm_eps": 1e-6},
    {"num_key_value_heads": 1},                      # 4 query heads share one KV head
    {"num_key_value_heads": 4},                      # plain multi-head attention
], ids=["default", "theta-eps", "gqa-4", "mha"])
def test_logits_match_hf_on_a_left_padded_batch(overrides):
    lm = _llama(**overrides)
    assert _max_logit_diff(lm, LlamaDecoder.from_hf(lm), _prefixes(lm, [7, 19, 1, 12]), steps=12) < LOGIT_TOLERANCE


def test_greedy_tokens_equal_reference_greedy():
    lm = _llama(seed=1)
    for prefix in _prefixes(lm, [5, 23, 40]):
        (got,) = decode(lm, [prefix], [SamplingParams(max_new_tokens=20)], eos_token_id=0, backend="fast")
        assert got == reference_greedy(lm, prefix, 20, eos_token_id=0)
        assert len(set(got.token_ids)) > 3


def test_a_request_decodes_the_same_alone_and_in_a_mixed_batch():
    """Mixed lengths and limits, and an EOS that stops one row early: rows leave the cache mid-batch."""
    lm = _llama(seed=2)
    prefixes = _prefixes(lm, [9, 30, 4, 17, 11])
    eos = reference_greedy(lm, prefixes[3], 4, eos_token_id=-1).token_ids[3]          # row 3 stops at step 4
    params = [SamplingParams(max_new_tokens=n) for n in (12, 3, 15, 10, 1)]
    alone = [decode(lm, [p], [q], eos, backend="fast")[0] for p, q in zip(prefixes, params)]
    assert decode(lm, prefixes, params, eos, backend="fast") == alone
    assert decode(lm, prefixes, params, eos, backend="hf") == alone
    assert alone[3].finish_reason == "stop" and len(alone[3].token_ids) <= 3
    assert [len(g.token_ids) for i, g in enumerate(alone) if i != 3] == [12, 3, 15, 1]
    assert alone == [reference_greedy(lm, p, q.max_new_tokens, eos) for p, q in zip(prefixes, params)]


def test_keep_moves_live_rows_from_the_tail_into_the_holes():
    lm = _llama()
    decoder = LlamaDecoder.from_hf(lm)
    cache = decoder.new_cache(5, 8)
    cache.length = 3
    for kv in cache.kv:
        kv.copy_(torch.arange(5.0)[:, None, None, None].expand_as(kv))        # each row holds its own index
    assert cache.keep([False, True, True, False, True]) == [4, 1, 2]
    assert cache.rows == 3
    assert cache.kv[1][:3, :, :3].flatten(1).amax(1).tolist() == [4.0, 1.0, 2.0]


def test_weight_import_checks_every_key_and_shape():
    lm = _llama()
    config = DecoderConfig.from_hf(lm.config)
    state = dict(lm.state_dict())
    check_state_dict(state, config)
    missing = {k: v for k, v in state.items() if k != "model.layers.1.mlp.up_proj.weight"}
    with pytest.raises(ValueError, match="up_proj"):
        check_state_dict(missing, config)
    with pytest.raises(ValueError, match="o_proj"):
        check_state_dict(state | {"model.layers.0.self_attn.o_proj.weight": torch.zeros(3, 3)}, config)
    with pytest.raises(ValueError, match="unexpected"):
        check_state_dict(state | {"model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}, config)
    with pytest.raises(ValueError, match="not tied"):
        check_state_dict(state | {"lm_head.weight": state["model.embed_tokens.weight"].clone()}, config)


def test_unsupported_llama_falls_back_to_hf():
    assert supports_fast_decoder(_llama())
    lm = _llama(attention_bias=True)
    with pytest.raises(ValueError, match="attention_bias"):
        DecoderConfig.from_hf(lm.config)
    assert not supports_fast_decoder(lm)
    prefix = _prefixes(lm, [6])[0]
    assert decode(lm, [prefix], [SamplingParams(8)], 0) == [reference_greedy(lm, prefix, 8, 0)]
    with pytest.raises(ValueError, match="backend"):
        decode(lm, [prefix], [SamplingParams(8)], 0, backend="onnx")


def test_decoder_is_built_once_per_model_and_rebuilt_when_weights_change():
    lm = copy.deepcopy(_llama())
    first = fast_decoder(lm)
    assert fast_decoder(lm) is first
    with torch.no_grad():
        lm.model.layers[0].mlp.down_proj.weight.mul_(2.0)                    # an in-place edit, as training does
    second = fast_decoder(lm)
    assert second is not first
    assert _max_logit_diff(lm, second, _prefixes(lm, [5]), steps=2) < LOGIT_TOLERANCE


def test_cache_limits_are_errors():
    lm = _llama()
    decoder = LlamaDecoder.from_hf(lm)
    with pytest.raises(ValueError, match="exceeds"):
        decoder.new_cache(1, lm.config.max_position_embeddings + 1)
    cache = decoder.new_cache(1, 4)
    decoder.prefill(_prefixes(lm, [4])[0][None], torch.ones(1, 4), cache)
    with pytest.raises(ValueError, match="4/4"):
        decoder.step(torch.tensor([1]), cache)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_opt_in_precisions_stay_close_to_fp32(precision):
    """Not exact by design; the benchmark measures their agreement at full size."""
    lm = _llama(seed=3)
    prefixes = _prefixes(lm, [10, 14])
    fp32 = decode(lm, prefixes, [SamplingParams(8)] * 2, -1, backend="fast")
    low = decode(lm, prefixes, [SamplingParams(8)] * 2, -1, backend=fast_decoder(lm, precision=precision))
    assert [g.token_ids[:2] for g in low] == [g.token_ids[:2] for g in fp32]


def test_full_size_greedy_equals_reference_and_logits_match_hf():
    """SmolLM-135M shapes (random weights): 30 layers, 9 heads over 3 KV heads, vocab 49152."""
    torch.manual_seed(0)
    lm = LlamaForCausalLM(full_language_config()).eval()
    prefixes = _prefixes(lm, [16, 5])
    assert _max_logit_diff(lm, fast_decoder(lm), prefixes, steps=2) < LOGIT_TOLERANCE
    got = decode(lm, prefixes, [SamplingParams(max_new_tokens=3)] * 2, eos_token_id=0, backend="fast")
    assert got == [reference_greedy(lm, p, 3, eos_token_id=0) for p in prefixes]
