"""ViT + projector as one graph: pixel_values (B, 3, 224, 224) -> image_embeds (B, N, D)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from minivlm.export.onnx_graph import VALIDATION_BATCH_SIZES, ExportReport, export_graph
from minivlm.export.specs import VISION_ENCODER_SPEC
from minivlm.model.vision import VisionEncoder
from minivlm.processing.images import IMAGE_SIZE
from vlm_client import protocol


def random_pixel_values(batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Normalized pixels lie in [-1, 1]; uniform noise there covers what preprocessing can produce."""
    pixels = torch.rand((batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), generator=generator) * 2 - 1
    return {protocol.PIXEL_VALUES.name: pixels}


def vision_encoder_inputs(batch_size: int, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
    return [random_pixel_values(batch_size, generator)]


def save_torch_program(vision: VisionEncoder, path: str | Path, *, max_batch: int = 64) -> Path:
    """The module as a torch.export program with a dynamic batch axis. A KIND_GPU vision_encoder on the pip
    server runs it on CUDA, because the wheel's onnxruntime has no CUDA provider (minivlm/serving/onnx_model.py)."""
    path = Path(path)
    pixels = random_pixel_values(2, torch.Generator().manual_seed(0))[protocol.PIXEL_VALUES.name]
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with torch.no_grad():
        program = torch.export.export(vision.eval(), (pixels,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def export_vision_encoder(vision: VisionEncoder, onnx_path: str | Path, *,
                          batch_sizes: Sequence[int] = VALIDATION_BATCH_SIZES, seed: int = 0) -> ExportReport:
    return export_graph(VISION_ENCODER_SPEC, vision, vision_encoder_inputs, onnx_path, batch_sizes=batch_sizes,
                        seed=seed)
