"""A transformers LlamaForCausalLM -> a GGUF file llama.cpp loads, in F32 or Q8_0, for llama_cpp_compare.

What llama.cpp's convert_hf_to_gguf.py does for a Llama, without needing the model's tokenizer files: the
same tensor names, q and k rows permuted to GGML's rotary layout, the tied embedding stored once (llama.cpp
reads it as the output matrix when `output.weight` is absent), 1-D norms kept F32 and every matrix quantized
in Q8_0 mode. The vocabulary is placeholder pieces: the benchmark feeds token ids, never text.

`gguf` is the gguf-py package: llama.cpp's own copy (vendored in the llama-cpp-python sdist) or PyPI's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

QTYPES = ("F32", "Q8_0")


def permute_rotary(w: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotate-half rows -> GGML's interleaved pairs, per head (convert_hf_to_gguf's LlamaModel.permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(state: dict[str, np.ndarray], *, layers: int, heads: int, kv_heads: int) -> dict[str, np.ndarray]:
    """HF state-dict names -> GGUF names, q and k permuted."""
    out = {"token_embd.weight": state["model.embed_tokens.weight"], "output_norm.weight": state["model.norm.weight"]}
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(layers):
        for hf, gg in names.items():
            w = state[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                w = permute_rotary(w, heads)
            elif gg == "attn_k":
                w = permute_rotary(w, kv_heads)
            out[f"blk.{i}.{gg}.weight"] = w
    return out


def write_gguf(model, path: Path, qtype: str) -> Path:
    """`model` a LlamaForCausalLM with tied embeddings; `qtype` one of QTYPES."""
    if qtype not in QTYPES:
        raise ValueError(f"qtype {qtype!r}: expected one of {QTYPES}")
    import gguf

    c = model.config
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    tensors = gguf_tensors(state, layers=c.num_hidden_layers, heads=c.num_attention_heads,
                           kv_heads=c.num_key_value_heads)
    quant = gguf.GGMLQuantizationType[qtype]
    writer = gguf.GGUFWriter(str(path), "llama")
    _add_hparams(writer, c, gguf.LlamaFileType.ALL_F32 if qtype == "F32" else gguf.LlamaFileType.MOSTLY_Q8_0)
    _add_vocab(writer, c, gguf)
    for name, w in tensors.items():
        if w.ndim == 1 or quant == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
        else:
            writer.add_tensor(name, gguf.quants.quantize(w, quant), raw_dtype=quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_hparams(writer, c, file_type) -> None:
    writer.add_name("minivlm random-weight decoder")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_rope_freq_base(_rope_theta(c))
    writer.add_layer_norm_rms_eps(float(c.rms_norm_eps))
    writer.add_vocab_size(c.vocab_size)
    writer.add_file_type(int(file_type))


def _rope_theta(c) -> float:
    """transformers 4 keeps `rope_theta`; 5 moved it into `rope_parameters`."""
    theta = getattr(c, "rope_theta", None) or (getattr(c, "rope_parameters", None) or {}).get("rope_theta")
    if theta is None:
        raise ValueError(f"no rope_theta in {type(c).__name__}")
    return float(theta)


def _add_vocab(writer, c, gguf) -> None:
    """A SentencePiece-style table: one control token, the 256 byte tokens llama.cpp looks up, placeholders."""
    tokens = ["<|endoftext|>", *(f"<0x{b:02X}>" for b in range(256))]
    types = [gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    tokens += [f"<t{i}>" for i in range(len(tokens), c.vocab_size)]
    types += [gguf.TokenType.NORMAL] * (c.vocab_size - len(types))
    writer.add_tokenizer_model("llama")
    writer.add_token_list([t.encode() for t in tokens])
    writer.add_token_scores([0.0] * c.vocab_size)
    writer.add_token_types([int(t) for t in types])
    writer.add_bos_token_id(c.bos_token_id or 0)
    writer.add_eos_token_id(c.eos_token_id or 0)
