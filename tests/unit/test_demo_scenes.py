"""The synthetic scene generator: deterministic, and its ground truth matches the drawn pixels."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from minivlm.processing.detection import parse_detection
from vlm_tools.demo.metrics import iou
from vlm_tools.demo.scenes import CELL, COLOURS, MAX_OBJECTS, SHAPES, generate_scenes, grid_cell, make_scene
from vlm_tools.demo.texts import position_questions, question_kind, restyle, swap_spelling

SCENES = list(generate_scenes(seed=7, count=40))
PIXEL = 1 / 224
ROUNDING = 0.005 + 1e-9


def test_same_seed_and_index_give_the_same_scene():
    again = make_scene(7, 3)
    assert np.array_equal(np.asarray(again.image), np.asarray(SCENES[3].image))
    assert again.objects == SCENES[3].objects and again.caption == SCENES[3].caption and again.qa == SCENES[3].qa


def test_other_seeds_give_other_scenes():
    assert not np.array_equal(np.asarray(make_scene(8, 3).image), np.asarray(SCENES[3].image))


def test_scenes_vary_in_count_background_size_and_place():
    assert {len(s.objects) for s in SCENES} == set(range(1, MAX_OBJECTS + 1))
    assert {s.background for s in SCENES} == {"light", "dark"}
    assert {o.size for s in SCENES for o in s.objects} == {"small", "large"}
    assert len({grid_cell(o) for s in SCENES for o in s.objects}) > 40      # of the 49 cells


@pytest.mark.parametrize("index", range(len(SCENES)))
def test_each_object_lies_inside_one_patch_sized_cell(index):
    """The property that makes shape learnable: one ViT patch sees the whole object."""
    scene = SCENES[index]
    for number, obj in enumerate(scene.objects):
        rows, cols = np.nonzero(scene.label_map == number)
        assert rows.min() // CELL == rows.max() // CELL and cols.min() // CELL == cols.max() // CELL
        assert (cols.min() // CELL, rows.min() // CELL) == grid_cell(obj)
    assert len({grid_cell(o) for o in scene.objects}) == len(scene.objects)
    assert all(iou(a.bbox, b.bbox) == 0 for a in scene.objects for b in scene.objects if a is not b)


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


def test_objects_are_unique_and_listed_by_column_then_row():
    for scene in SCENES:
        labels = [o.label for o in scene.objects]
        assert len(set(labels)) == len(labels)
        assert [grid_cell(o) for o in scene.objects] == sorted(grid_cell(o) for o in scene.objects)
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
            if question in ("How many objects are there?", "How many shapes are there?"):
                assert answer == str(len(scene.objects))
            if kind == "presence":
                named = re.sub(r"^Is there an? ", "", question).removesuffix("?")
                assert answer == ("yes" if _named(scene, named) else "no")
            if kind == "colour":
                targets = _named(scene, question.split(" is the ")[1].rstrip("?"))
                assert len(targets) == 1 and answer == targets[0].colour
    assert kinds == {"colour", "count", "presence", "position"}


def test_position_answers_follow_the_box_centres():
    rng = np.random.default_rng(0)
    extra = [(scene, qa) for scene in SCENES for qa in position_questions(scene.objects, rng, 3)]
    for scene, (question, answer) in [(scene, qa) for scene in SCENES for qa in scene.qa] + extra:
        if question_kind(question) != "position":
            continue
            relation = next(r for r in ("to the left of", "to the right of", "above", "below") if f" {r} " in question)
            first, second = question.removeprefix("Is the ").removesuffix("?").split(f" {relation} the ")
            (a,), (b,) = _named(scene, first), _named(scene, second)
            (ax, ay), (bx, by) = a.center, b.center
            truth = {"to the left of": ax < bx, "to the right of": ax > bx, "above": ay < by, "below": ay > by}
            assert answer == ("yes" if truth[relation] else "no")


def test_extra_position_questions_are_distinct_and_leave_the_scene_alone():
    rng = np.random.default_rng(0)
    asked = [position_questions(scene.objects, rng, 3) for scene in SCENES]
    assert all(len(set(qas)) == len(qas) <= 3 for qas in asked)
    assert any(len(qas) == 3 for qas in asked) and any(" above " in q for qas in asked for q, _ in qas)
    assert [scene.qa for scene in SCENES] == [scene.qa for scene in generate_scenes(seed=7, count=40)]


def test_questions_use_the_right_article():
    questions = [q for scene in generate_scenes(seed=3, count=300) for q, _ in scene.qa]
    assert any(q.startswith("Is there an orange") for q in questions)
    assert not any(re.search(r"\ba [aeiou]", q) or re.search(r"\ban [^aeiou]", q) for q in questions)


def test_restyled_questions_keep_their_words():
    rng = np.random.default_rng(0)
    question = "What colour is the leftmost object?"
    styles = {restyle(question, rng) for _ in range(200)}
    assert {"what colour is the leftmost object", "What color is the leftmost object?", question} <= styles
    same_words = {question.lower().rstrip("?"), swap_spelling(question).lower().rstrip("?")}
    assert all(style.lower().rstrip("?") in same_words for style in styles)
