"""llama_cpp_compare's pieces that need no llama.cpp: the GGUF tensor layout and the results table."""
import math

import numpy as np
import pytest

from vlm_tools.bench import gguf_export
from vlm_tools.bench.llama_cpp_compare import results_table


def test_rotary_permutation_interleaves_each_heads_halves():
    """HF's rotate-half rows (first half, second half) -> GGML's interleaved pairs, per head."""
    one_head = np.arange(8, dtype=np.float32)[:, None]
    assert gguf_export.permute_rotary(one_head, 1)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert gguf_export.permute_rotary(one_head, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_gguf_tensors_rename_every_weight_and_permute_q_and_k_only():
    rng = np.random.default_rng(0)
    hf = {"model.embed_tokens.weight": rng.standard_normal((10, 8)), "model.norm.weight": np.ones(8)}
    for name, shape in {"input_layernorm": (8,), "self_attn.q_proj": (8, 8), "self_attn.k_proj": (4, 8),
                        "self_attn.v_proj": (4, 8), "self_attn.o_proj": (8, 8), "post_attention_layernorm": (8,),
                        "mlp.gate_proj": (16, 8), "mlp.up_proj": (16, 8), "mlp.down_proj": (8, 16)}.items():
        hf[f"model.layers.0.{name}.weight"] = rng.standard_normal(shape)
    out = gguf_export.gguf_tensors(hf, layers=1, heads=2, kv_heads=1)
    assert len(out) == len(hf) and "output.weight" not in out                 # tied: llama.cpp reuses token_embd
    assert np.array_equal(out["blk.0.attn_v.weight"], hf["model.layers.0.self_attn.v_proj.weight"])
    assert np.array_equal(out["blk.0.attn_q.weight"],
                          gguf_export.permute_rotary(hf["model.layers.0.self_attn.q_proj.weight"], 2))
    assert np.array_equal(out["blk.0.attn_k.weight"],
                          gguf_export.permute_rotary(hf["model.layers.0.self_attn.k_proj.weight"], 1))


def test_write_gguf_rejects_an_unknown_type():
    with pytest.raises(ValueError, match="Q4_K"):
        gguf_export.write_gguf(None, None, "Q4_K")


def test_results_pair_each_precision_with_its_llama_cpp_type_and_bound_fp32_only():
    medians = {("fp32", 1): 0.040, ("F32", 1): 0.020, ("int8", 1): 0.010, ("Q8_0", 1): 0.020}
    rows = results_table(medians, [1], {1: 0.010})
    assert [(r["ours"], r["llama_cpp"], r["ours_over_llama_cpp"]) for r in rows] == [("fp32", "F32", 2.0),
                                                                                   ("int8", "Q8_0", 0.5)]
    assert rows[0]["llama_cpp_over_bound"] == pytest.approx(2.0)
    assert math.isnan(rows[1]["fp32_read_bound_ms"])
