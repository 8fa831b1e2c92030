"""Targets of the training-only vision heads agree with the scene's drawn objects."""
from __future__ import annotations

import torch

from vlm_tools.demo.auxiliary import IGNORE, LABELS, OWN_COVER, VisionHeads, vision_targets
from vlm_tools.demo.scenes import generate_scenes

PATCH = 32
SCENES = list(generate_scenes(seed=5, count=12))


def test_patch_classes_name_the_object_that_covers_the_patch():
    targets = vision_targets(SCENES, PATCH)
    assert targets.patch_classes.shape == (len(SCENES), (224 // PATCH) ** 2)
    for row, scene in enumerate(SCENES):
        for patch, label in enumerate(targets.patch_classes[row].tolist()):
            top, left = divmod(patch, 224 // PATCH)
            tile = scene.label_map[top * PATCH:(top + 1) * PATCH, left * PATCH:(left + 1) * PATCH]
            if label == 0:
                assert (tile == -1).all()
                continue
            if label == IGNORE:
                largest = max((tile == i).sum() for i in range(len(scene.objects)))
                assert 0 < (tile >= 0).sum() and largest < OWN_COVER * PATCH * PATCH
                continue
            number = [o.label for o in scene.objects].index(LABELS[label - 1])
            assert (tile == number).sum() >= OWN_COVER * PATCH * PATCH
            box = torch.tensor(scene.objects[number].bbox, dtype=torch.float32)
            assert torch.allclose(targets.patch_boxes[row, patch], box)


def test_the_scene_summary_lists_every_object():
    targets = vision_targets(SCENES, PATCH)
    for row, scene in enumerate(SCENES):
        owned = {LABELS[k - 1] for k in targets.patch_classes[row].tolist() if k > 0}
        assert owned <= {o.label for o in scene.objects}
        assert targets.present[row].sum() == len(scene.objects)
        for obj in scene.objects:
            box = torch.tensor(obj.bbox, dtype=torch.float32)
            assert torch.allclose(targets.boxes[row, LABELS.index(obj.label)], box)


def test_heads_loss_is_finite_and_reaches_the_vit_features():
    heads = VisionHeads(16)
    features = torch.randn(len(SCENES), 1 + (224 // PATCH) ** 2, 16, requires_grad=True)
    loss = heads.loss(features, vision_targets(SCENES, PATCH))
    loss.backward()
    assert torch.isfinite(loss) and features.grad[:, 0].abs().sum() > 0 and features.grad[:, 1:].abs().sum() > 0
