"""The bound arithmetic: parameter and FLOP counts from shapes, roofline steps, the workload bound."""
import pytest
from transformers import LlamaForCausalLM

from minivlm.model.shapes import full_language_config, full_vision_config, tiny_language_config
from vlm_tools.bench.roofline import (
    MachineRates,
    ModelCosts,
    RequestShape,
    decode_step_s,
    image_encode_s,
    language_costs,
    model_costs,
    prefill_s,
    vit_flops,
    workload_bound,
)

RATES = MachineRates(bandwidth_gb_s=10.0, matmul_gflop_s=100.0)
COSTS = ModelCosts(lm_weight_bytes=1_000_000_000, lm_layer_flops_per_token=1_000_000_000, lm_head_flops=0,
                   lm_attention_flops_per_context=0, kv_bytes_per_position=1_000_000, vit_flops=50_000_000_000,
                   image_positions=10)


def test_full_size_language_model_is_smollm_135m():
    costs = model_costs(full_vision_config(), full_language_config())
    assert costs.lm_weight_bytes == 4 * 134_515_008          # SmolLM-135M's parameter count, fp32
    assert costs.kv_bytes_per_position == 4 * 30 * 2 * 192    # 3 KV heads x 64 dims, K and V, 30 layers
    assert costs.image_positions == 197


def test_weight_bytes_match_a_real_model_with_tied_embeddings():
    config = tiny_language_config(512)
    params = sum(p.numel() for p in LlamaForCausalLM(config).parameters())   # tied weights counted once
    costs = language_costs(hidden=config.hidden_size, layers=config.num_hidden_layers,
                           heads=config.num_attention_heads, kv_heads=config.num_key_value_heads,
                           intermediate=config.intermediate_size, vocab=config.vocab_size)
    assert costs["lm_weight_bytes"] == 4 * params


def test_vit_base_flops_match_the_published_17_6_gmacs():
    flops, positions = vit_flops(image_size=224, patch_size=16, hidden=768, layers=12, intermediate=3072,
                                 language_hidden=576)
    assert positions == 197
    assert flops == pytest.approx(2 * 17.6e9, rel=0.01)


def test_decode_step_is_memory_bound_at_batch_1_and_compute_bound_at_large_batch():
    assert decode_step_s(COSTS, RATES) == pytest.approx(0.1)                # 1 GB at 10 GB/s
    assert decode_step_s(COSTS, RATES, batch=4, context=50) == pytest.approx(0.12)   # + 4 x 50 x 1 MB of KV
    assert decode_step_s(COSTS, RATES, batch=20) == pytest.approx(0.2)      # 20 GFLOP at 100 GFLOP/s


def test_prefill_and_image_encoding_are_compute_bound():
    assert prefill_s(COSTS, RATES, 30) == pytest.approx(0.3)
    assert image_encode_s(COSTS, RATES) == pytest.approx(0.5)


def test_prefill_counts_causal_attention_once_per_pair():
    costs = ModelCosts(0, 0, 0, lm_attention_flops_per_context=1_000_000_000, kv_bytes_per_position=0,
                       vit_flops=0, image_positions=0)
    assert prefill_s(costs, RATES, 4) == pytest.approx(0.1)     # 4 + 3 + 2 + 1 pairs, 1 GFLOP each


def test_workload_bound_shares_weight_reads_across_the_batch():
    requests = [RequestShape(prompt_tokens=0, new_tokens=11)] * 2
    single = workload_bound(COSTS, RATES, requests, batch=1)
    assert single.image_s == pytest.approx(1.0)
    assert single.prefill_s == pytest.approx(0.2)
    # 10 decode steps each (the first token comes from the prefill); KV of contexts 11..20 per step
    kv_s = sum((10 + step) * 1e6 for step in range(1, 11)) / 10e9
    assert single.decode_s == pytest.approx(2 * (10 * 0.1 + kv_s))
    assert single.tokens_per_s == pytest.approx(22 / single.seconds)
    batched = workload_bound(COSTS, RATES, requests, batch=2)
    assert batched.decode_s == pytest.approx(2 * (10 * 0.05 + kv_s))
    assert batched.requests_per_s > single.requests_per_s
