"""Model shapes: the full-size base models and tiny ones for tests.

The full-size shapes are those of google/vit-base-patch16-224 and HuggingFaceTB/SmolLM-135M; the tiny ones
keep the same architecture family so tests run in seconds.
"""
from __future__ import annotations

from transformers import LlamaConfig, ViTConfig

from minivlm.processing.images import IMAGE_SIZE

VISION_MODEL_NAME = "google/vit-base-patch16-224"
LANGUAGE_MODEL_NAME = "HuggingFaceTB/SmolLM-135M"


def full_vision_config() -> ViTConfig:
    return ViTConfig(image_size=IMAGE_SIZE, patch_size=16, hidden_size=768, num_hidden_layers=12,
                     num_attention_heads=12, intermediate_size=3072)


def full_language_config() -> LlamaConfig:
    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                       bos_token_id=0, eos_token_id=0, pad_token_id=0)


def tiny_vision_config(*, hidden_size: int = 32, num_layers: int = 2, patch_size: int = 32) -> ViTConfig:
    return ViTConfig(image_size=IMAGE_SIZE, patch_size=patch_size, hidden_size=hidden_size,
                     num_hidden_layers=num_layers, num_attention_heads=2, intermediate_size=hidden_size * 2)


def tiny_language_config(vocab_size: int, *, hidden_size: int = 64, num_layers: int = 2,
                         eos_token_id: int = 0) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                       num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=512, tie_word_embeddings=True, bos_token_id=eos_token_id,
                       initializer_range=0.3,   # random weights that give varied, decisive tokens in tests
                       eos_token_id=eos_token_id, pad_token_id=eos_token_id)
