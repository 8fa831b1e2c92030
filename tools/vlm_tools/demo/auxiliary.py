"""Training-only heads that tell the ViT what it sees: per patch, and for the whole scene on the CLS token.

Learning vision from scratch only through the decoder's answers is slow: in a few hundred CPU steps the
language priors are learnt but hardly any grounding. The scenes give dense targets for free: each patch's
object ("colour shape", or background) and that object's box, and the scene's objects with their boxes. The
heads are dropped after training; the served model is the usual ViT + projector + decoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlm_tools.demo.scenes import COLOURS, SHAPES, Scene

LABELS = [f"{c} {s}" for c in COLOURS for s in SHAPES]     # class k + 1; class 0 is background
OWN_COVER = 0.05            # an object owns a patch when it covers at least this share of its pixels (a small
IGNORE = -100               # triangle covers 9%); a smaller sliver is ambiguous and left out of the loss
BOX_WEIGHT = 3.0            # boxes are fractions: their L1 is small next to a cross-entropy


@dataclass(frozen=True)
class VisionTargets:
    patch_classes: torch.Tensor       # (B, P) 0 = background, k = LABELS[k - 1], IGNORE = a mere sliver
    patch_boxes: torch.Tensor         # (B, P, 4) the owning object's box; zeros on background
    present: torch.Tensor             # (B, L) 1.0 where the label is in the scene
    boxes: torch.Tensor               # (B, L, 4) each present label's box; zeros elsewhere


class VisionHeads(nn.Module):
    """Patch features -> each patch's object and box; CLS feature -> the scene's objects and their boxes.

    The CLS summary sits at image position 0, a place the decoder finds by position alone."""

    def __init__(self, vision_dim: int):
        super().__init__()
        self.patch_classes = nn.Linear(vision_dim, 1 + len(LABELS))
        self.patch_boxes = nn.Linear(vision_dim, 4)
        self.present = nn.Linear(vision_dim, len(LABELS))
        self.boxes = nn.Linear(vision_dim, len(LABELS) * 4)

    def loss(self, vit_hidden: torch.Tensor, targets: VisionTargets) -> torch.Tensor:
        """Cross-entropies plus weighted L1 on boxes, over (B, N, vision_dim) ViT output."""
        cls, patches = vit_hidden[:, 0], vit_hidden[:, 1:]
        loss = F.cross_entropy(self.patch_classes(patches).flatten(0, 1), targets.patch_classes.flatten(),
                               ignore_index=IGNORE)
        loss = loss + F.binary_cross_entropy_with_logits(self.present(cls), targets.present)
        on_object, present = targets.patch_classes > 0, targets.present > 0      # every scene has an object
        boxes = self.boxes(cls).view(len(cls), len(LABELS), 4)
        loss = loss + BOX_WEIGHT * F.l1_loss(boxes[present], targets.boxes[present])
        if on_object.any():
            loss = loss + BOX_WEIGHT * F.l1_loss(self.patch_boxes(patches)[on_object], targets.patch_boxes[on_object])
        return loss


def vision_targets(scenes: list[Scene], patch_size: int) -> VisionTargets:
    patch_classes, patch_boxes = zip(*(_patch_targets(scene, patch_size) for scene in scenes))
    present = torch.zeros(len(scenes), len(LABELS))
    boxes = torch.zeros(len(scenes), len(LABELS), 4)
    for row, scene in enumerate(scenes):
        for obj in scene.objects:
            present[row, LABELS.index(obj.label)] = 1.0
            boxes[row, LABELS.index(obj.label)] = torch.tensor(obj.bbox)
    return VisionTargets(torch.from_numpy(np.stack(patch_classes)), torch.from_numpy(np.stack(patch_boxes)),
                         present, boxes)


def _patch_targets(scene: Scene, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(P,) class ids and (P, 4) boxes, patches in ViT (row-major) order."""
    grid = scene.label_map.shape[0] // patch_size
    tiles = scene.label_map[:grid * patch_size, :grid * patch_size].reshape(grid, patch_size, grid, patch_size)
    tiles = tiles.transpose(0, 2, 1, 3).reshape(grid * grid, patch_size * patch_size)     # (P, pixels)
    counts = np.stack([(tiles == i).sum(axis=1) for i in range(len(scene.objects))], axis=1)  # (P, objects)
    owner = counts.argmax(axis=1)
    owned = counts.max(axis=1) >= OWN_COVER * patch_size * patch_size
    empty = counts.sum(axis=1) == 0
    labels = np.array([LABELS.index(o.label) + 1 for o in scene.objects])
    object_boxes = np.array([o.bbox for o in scene.objects], dtype=np.float32)
    classes = np.where(owned, labels[owner], np.where(empty, 0, IGNORE))
    return classes, np.where(owned[:, None], object_boxes[owner], 0).astype(np.float32)
