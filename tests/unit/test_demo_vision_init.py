"""The demo ViT's structured initialization: pooled patch channels and 2D sine-cosine positions."""
from __future__ import annotations

import pytest
import torch
from transformers import ViTConfig, ViTModel

from vlm_tools.demo.vision_init import POOL, sincos_2d, structured_vision_init


def _vit(hidden: int = 64, patch: int = 32) -> ViTModel:
    torch.manual_seed(0)
    config = ViTConfig(image_size=224, patch_size=patch, hidden_size=hidden, num_hidden_layers=1,
                       num_attention_heads=4, intermediate_size=hidden * 2)
    return ViTModel(config, add_pooling_layer=False)


def test_pooled_channels_are_the_mean_colour_of_each_sub_block():
    vit = _vit()
    structured_vision_init(vit)
    pixels = torch.randn(2, 3, 224, 224)
    tokens = vit.embeddings.patch_embeddings(pixels)                         # (B, 49, hidden)
    block = 32 // POOL
    pooled = torch.nn.functional.avg_pool2d(pixels, block)                   # (B, 3, 28, 28)
    # patch (row 2, column 5), channel c, sub-block (i, j) -> pooled[c, 2*POOL + i, 5*POOL + j]
    patch = 2 * 7 + 5
    for c in range(3):
        for i in range(POOL):
            for j in range(POOL):
                channel = c * POOL * POOL + i * POOL + j
                expected = pooled[:, c, 2 * POOL + i, 5 * POOL + j]
                assert torch.allclose(tokens[:, patch, channel], expected, atol=1e-5)


def test_positions_are_ordered_codes_and_cls_starts_at_zero():
    vit = _vit()
    structured_vision_init(vit)
    positions = vit.embeddings.position_embeddings[0]
    assert torch.equal(positions[0], torch.zeros(64))
    assert torch.allclose(positions[1:], sincos_2d(7, 64))
    codes = sincos_2d(7, 64)
    distance = torch.cdist(codes, codes)
    # a neighbour is closer than a patch three columns away, in every row
    for row in range(7):
        here = row * 7
        assert distance[here, here + 1] < distance[here, here + 3]


def test_refuses_a_patch_it_cannot_pool():
    with pytest.raises(ValueError, match="cannot pool"):
        structured_vision_init(_vit(hidden=32))          # 48 pooled channels do not fit in 32
