"""The synthetic scene generator: deterministic, and its ground truth matches the drawn pixels."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from minivlm.processing.detection import parse_detection
from vlm_tools.demo.metrics import iou
from vlm_tools.demo.scenes import COLOURS, MAX_OBJECTS, SHAPES, generate_scenes, make_scene
from vlm_tools.demo.texts import question_kind

SCENES = list(generate_scenes(seed=7, count=40))
PIXEL = 1 / 224
ROUNDING = 0.005 + 1e-9


def test_same_seed_and_index_give_the_same_scene():
    again = make_scene(7, 3)
    assert np.array_equal(np.asarray(again.image), np.asarray(SCENES[3].image))
    assert again.objects == SCENES[3].objects and again.caption == SCENES[3].caption and again.qa == SCENES[3].qa


def test_other_seeds_give_other_scenes():
    assert not np.array_equal(np.asarray(make_scene(8, 3).image), np.asarray(SCENES[3].image))


def test_scenes_vary_in_count_background_and_overlap():
    assert {len(s.objects) for s in SCENES} == set(range(1, MAX_OBJECTS + 1))
    assert {s.background for s in SCENES} == {"light", "dark"}
    assert any(_partly_hidden(s) for s in SCENES)


def _partly_hidden(scene) -> bool:
    return any(iou(a.bbox, b.bbox) > 0 for a in scene.objects for b in scene.objects if a is not b)


@pytest.mark.parametrize("index", range(len(SCENES)))
def test_boxes_are_inside_the_image_and_rounded(index):
    for obj in SCENES[index].objects:
        x, y, w, h = obj.bbox
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 1 and y + h <= 1
        assert all(round(v, 2) == v for v in obj.bbox)


@pytest.mark.parametrize("index", range(len(SCENES)))
def test_boxes_match_the_pixels_each_object_shows(index):
    scene = SCENES[index]
    pixels = np.asarray(scene.image)
    for number, obj in enumerate(scene.objects):
        rows, cols = np.nonzero(scene.label_map == number)
        drawn = (cols.min() * PIXEL, rows.min() * PIXEL, (cols.max() + 1 - cols.min()) * PIXEL,
                 (rows.max() + 1 - rows.min()) * PIXEL)
        assert np.allclose(obj.bbox, drawn, atol=ROUNDING), (obj, drawn)
        assert (pixels[rows, cols] == obj.rgb).all()


def test_objects_are_unique_and_listed_left_to_right():
    for scene in SCENES:
        labels = [o.label for o in scene.objects]
        assert len(set(labels)) == len(labels)
        assert [o.center[0] for o in scene.objects] == sorted(o.center[0] for o in scene.objects)
        assert all(o.colour in COLOURS and o.shape in SHAPES for o in scene.objects)


def test_detection_json_is_the_notebook_format():
    for scene in SCENES:
        document = json.loads(scene.detection_json())
        assert document == {"objects": [{"label": o.label, "bbox": list(o.bbox)} for o in scene.objects]}
        assert re.fullmatch(r'\{"objects": \[(\{"label": "[a-z ]+", "bbox": \[(\d\.\d\d(, )?){4}\]\}(, )?)+\]\}',
                            scene.detection_json())
        result = parse_detection(scene.detection_json())
        assert result.json_valid and not result.rejected
        assert [o.label for o in result.objects] == [o.label for o in scene.objects]


def test_caption_names_every_object_in_order():
    for scene in SCENES:
        positions = [scene.caption.index(f"{o.size} {o.label}") for o in scene.objects]
        assert positions == sorted(positions) and scene.caption.endswith(f"on a {scene.background} background")


def _named(scene, name: str) -> list:
    """The objects a question's name picks out: "red circle", "red object", "circle", "leftmost object"."""
    if name in ("leftmost object", "rightmost object"):
        ordered = sorted(scene.objects, key=lambda o: o.center[0])
        return [ordered[0] if name == "leftmost object" else ordered[-1]]
    words = name.split()
    if words[-1] == "object":
        return [o for o in scene.objects if o.colour == words[0]]
    if len(words) == 2:
        return [o for o in scene.objects if o.label == name]
    return [o for o in scene.objects if o.shape == name]


def test_answers_agree_with_the_objects():
    kinds = set()
    for scene in SCENES:
        for question, answer in scene.qa:
            kind = question_kind(question)
            kinds.add(kind)
            if question == "How many objects are there?":
                assert answer == str(len(scene.objects))
            if kind == "presence":
                named = question.removeprefix("Is there a ").removesuffix("?")
                assert answer == ("yes" if _named(scene, named) else "no")
            if kind == "colour":
                targets = _named(scene, question.split(" is the ")[1].rstrip("?"))
                assert len(targets) == 1 and answer == targets[0].colour
    assert kinds == {"colour", "count", "presence", "position"}


def test_position_answers_follow_the_box_centres():
    for scene in SCENES:
        for question, answer in scene.qa:
            if question_kind(question) != "position":
                continue
            relation = next(r for r in ("to the left of", "to the right of", "above", "below") if f" {r} " in question)
            first, second = question.removeprefix("Is the ").removesuffix("?").split(f" {relation} the ")
            (a,), (b,) = _named(scene, first), _named(scene, second)
            (ax, ay), (bx, by) = a.center, b.center
            truth = {"to the left of": ax < bx, "to the right of": ax > bx, "above": ay < by, "below": ay > by}
            assert answer == ("yes" if truth[relation] else "no")
