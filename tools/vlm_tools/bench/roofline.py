"""What the machine allows: model shapes + measured rates -> the fastest possible steps and workload.

Pure arithmetic (no torch), so it is unit-tested exactly. Costs count multiply-adds as 2 FLOPs and fp32
weights as 4 bytes. A decode step must read every weight once (memory-bound at small batch) and do 2 FLOPs
per weight per row (compute-bound at large batch); image encoding and prefill are compute-bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

BYTES_PER_VALUE = 4       # fp32


@dataclass(frozen=True)
class MachineRates:
    bandwidth_gb_s: float     # reading weights: a large matrix-vector product
    matmul_gflop_s: float     # the best fp32 GEMM rate measured (ONNX Runtime or PyTorch)


@dataclass(frozen=True)
class ModelCosts:
    lm_weight_bytes: int              # every language-model weight once (tied embeddings counted once)
    lm_layer_flops_per_token: int     # the transformer layers, without attention over the context
    lm_head_flops: int                # logits of one position
    lm_attention_flops_per_context: int   # per token, per position it attends to
    kv_bytes_per_position: int        # K and V of one position, all layers
    vit_flops: int                    # ViT + projector, one image
    image_positions: int


def vit_flops(*, image_size: int, patch_size: int, hidden: int, layers: int, intermediate: int,
              language_hidden: int) -> tuple[int, int]:
    """-> (FLOPs of ViT + projector for one image, output positions)."""
    patches = (image_size // patch_size) ** 2
    n = patches + 1                                                   # + [CLS]
    macs = patches * 3 * patch_size * patch_size * hidden             # patch embedding
    macs += layers * (4 * n * hidden * hidden + 2 * n * hidden * intermediate + 2 * n * n * hidden)
    macs += n * (hidden * language_hidden + language_hidden * language_hidden)   # projector
    return 2 * macs, n


def language_costs(*, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int,
                   vocab: int) -> dict[str, int]:
    head_dim = hidden // heads
    kv_dim = kv_heads * head_dim
    layer_weights = 2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * intermediate   # q, o, k, v, MLP
    weights = layers * (layer_weights + 2 * hidden) + vocab * hidden + hidden               # norms, embeddings
    return {"lm_weight_bytes": BYTES_PER_VALUE * weights,
            "lm_layer_flops_per_token": 2 * layers * layer_weights,
            "lm_head_flops": 2 * vocab * hidden,
            "lm_attention_flops_per_context": 2 * 2 * layers * heads * head_dim,            # q.k and p.v
            "kv_bytes_per_position": BYTES_PER_VALUE * layers * 2 * kv_dim}


def model_costs(vision_config, language_config) -> ModelCosts:
    """From a transformers ViTConfig and LlamaConfig (only their fields are read)."""
    v, lm = vision_config, language_config
    flops, positions = vit_flops(image_size=v.image_size, patch_size=v.patch_size, hidden=v.hidden_size,
                                 layers=v.num_hidden_layers, intermediate=v.intermediate_size,
                                 language_hidden=lm.hidden_size)
    return ModelCosts(vit_flops=flops, image_positions=positions, **language_costs(
        hidden=lm.hidden_size, layers=lm.num_hidden_layers, heads=lm.num_attention_heads,
        kv_heads=lm.num_key_value_heads, intermediate=lm.intermediate_size, vocab=lm.vocab_size))


def _seconds(*, bytes_read: float, flops: float, rates: MachineRates) -> float:
    """Roofline: a step takes at least as long as its memory traffic and as long as its arithmetic."""
    return max(bytes_read / (rates.bandwidth_gb_s * 1e9), flops / (rates.matmul_gflop_s * 1e9))


def decode_step_s(costs: ModelCosts, rates: MachineRates, *, batch: int = 1, context: int = 0) -> float:
    """One token for each of `batch` rows, each attending to `context` cached positions."""
    flops = batch * (costs.lm_layer_flops_per_token + costs.lm_head_flops
                     + context * costs.lm_attention_flops_per_context)
    bytes_read = costs.lm_weight_bytes + batch * context * costs.kv_bytes_per_position
    return _seconds(bytes_read=bytes_read, flops=flops, rates=rates)


def prefill_s(costs: ModelCosts, rates: MachineRates, positions: int) -> float:
    """The whole prefix in one pass; logits only for its last position, causal attention."""
    attended = positions * (positions + 1) // 2
    flops = positions * costs.lm_layer_flops_per_token + costs.lm_head_flops \
        + attended * costs.lm_attention_flops_per_context
    return _seconds(bytes_read=costs.lm_weight_bytes, flops=flops, rates=rates)


def image_encode_s(costs: ModelCosts, rates: MachineRates) -> float:
    return costs.vit_flops / (rates.matmul_gflop_s * 1e9)


@dataclass(frozen=True)
class RequestShape:
    prompt_tokens: int        # text tokens after the image positions
    new_tokens: int


@dataclass(frozen=True)
class WorkloadBound:
    batch: int
    seconds: float            # the least time the whole workload can take
    requests_per_s: float
    tokens_per_s: float
    image_s: float            # of `seconds`: image encoding
    prefill_s: float          #              prefill
    decode_s: float           #              decode steps


def workload_bound(costs: ModelCosts, rates: MachineRates, requests: Iterable[RequestShape], *,
                   batch: int = 1) -> WorkloadBound:
    """Every request encodes its image, prefills, then decodes new_tokens - 1 steps (the first token comes
    from the prefill's logits) in decode batches of `batch` rows that share each weight read."""
    image = prefill = decode = 0.0
    requests = list(requests)
    for request in requests:
        prefix = costs.image_positions + request.prompt_tokens
        image += image_encode_s(costs, rates)
        prefill += prefill_s(costs, rates, prefix)
        for step in range(1, request.new_tokens):
            decode += decode_step_s(costs, rates, batch=batch, context=prefix + step) / batch
    seconds = image + prefill + decode
    tokens = sum(r.new_tokens for r in requests)
    return WorkloadBound(batch, seconds, len(requests) / seconds, tokens / seconds, image, prefill, decode)
