"""A structured starting point for the demo's ViT, so a few minutes of CPU training go into objects, not basics.

Trained from random weights, the ViT spends its first hundreds of steps discovering what a patch looks like
and where it is. Two initializations hand it that knowledge and stay ordinary, trainable weights (the
checkpoint format does not change):

- patch embedding: the first channels average each colour channel over a grid of sub-blocks of the patch, so
  every patch token starts out carrying a small picture of its patch (sub-patch detail locates box edges);
- position embeddings: 2D sine-cosine codes of the patch's column and row (as in MAE), so positions start out
  ordered and near patches start out similar.

Measured on the vision heads alone (300 steps of 32 scenes): the patch box error halves (L1 0.099 -> 0.055), but
shape stays at chance (37% of patches name the right shape, colour 98%) with or without it, still 36-43% after 600
steps, and in the whole 12-minute training (with 300 vision-only steps first) the held-out scores did not move
(VQA 62% vs 63%, mAP@0.5 0.000 vs 0.003). So it is opt-in (`DemoConfig.structured_init`, `vision_steps`), kept
for longer budgets.
"""
from __future__ import annotations

import torch
from transformers import ViTModel

POOL = 4                    # sub-blocks per patch side: 4 x 4 x 3 colour channels = 48 channels


@torch.no_grad()
def structured_vision_init(vit: ViTModel, *, pool: int = POOL) -> None:
    conv = vit.embeddings.patch_embeddings.projection           # Conv2d(3, hidden, patch, stride=patch)
    hidden, channels, patch, _ = conv.weight.shape
    block = patch // pool
    used = channels * pool * pool
    if used > hidden or block * pool != patch:
        raise ValueError(f"cannot pool a {patch}-pixel patch into {pool}x{pool} blocks in {hidden} channels")
    weight = torch.zeros(channels, pool, pool, channels, patch, patch)
    for c in range(channels):
        for i in range(pool):
            for j in range(pool):
                weight[c, i, j, c, i * block:(i + 1) * block, j * block:(j + 1) * block] = 1.0 / (block * block)
    conv.weight[:used] = weight.reshape(used, channels, patch, patch)
    conv.bias[:used] = 0.0
    positions = vit.embeddings.position_embeddings                # (1, 1 + grid * grid, hidden)
    grid = int(round((positions.shape[1] - 1) ** 0.5))
    positions[0, 0] = 0.0
    positions[0, 1:] = sincos_2d(grid, hidden)


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim) codes, row-major like the ViT's patches: half the channels code x, half y."""
    quarter = dim // 4
    frequencies = 1.0 / (100 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                            indexing="ij")

    def code(values: torch.Tensor) -> torch.Tensor:
        angles = values.flatten()[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    codes = torch.cat([code(xs), code(ys)], dim=1)
    return torch.nn.functional.pad(codes, (0, dim - codes.shape[1]))
