"""ViT image encoder + the notebook's MLP projector, as one module (exported as one ONNX graph)."""
from __future__ import annotations

import torch
from torch import nn
from transformers import ViTModel


class Projector(nn.Module):
    """Linear -> GELU -> LayerNorm -> Linear; state_dict keys `projection.{0,2,3}.*` as in the notebook."""

    def __init__(self, vision_dim: int, language_dim: int):
        super().__init__()
        self.projection = nn.Sequential(
            nn.Linear(vision_dim, language_dim),
            nn.GELU(),
            nn.LayerNorm(language_dim),
            nn.Linear(language_dim, language_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(features)


class VisionEncoder(nn.Module):
    """pixel_values (B, 3, 224, 224) -> image_embeds (B, 1 + patches, language_dim)."""

    def __init__(self, vit: ViTModel, projector: Projector):
        super().__init__()
        self.vit = vit
        self.projector = projector

    @property
    def num_positions(self) -> int:
        config = self.vit.config
        return (config.image_size // config.patch_size) ** 2 + 1

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.vit(pixel_values=pixel_values).last_hidden_state  # (B, N, vision_dim)
        return self.projector(hidden)                                  # (B, N, language_dim)
