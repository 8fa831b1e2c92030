"""`vlm demo`'s queries, truths and drawing, without a server: each truth is worked out from the scene."""
from __future__ import annotations

import numpy as np
from PIL import Image

from vlm_client.types import Answer, AnswerPart, DetectedObject
from vlm_tools.demo.quickstart import (DEMO_SCENE, PREDICTED_COLOUR, TRUE_COLOUR, demo_queries, draw_detections,
                                       truth_lines)
from vlm_tools.demo.scenes import make_scene

SCENE = make_scene(*DEMO_SCENE)


def test_the_demo_scene_asks_every_kind_with_its_true_answers():
    queries = {q.query: q.truth for q in demo_queries(SCENE)}
    assert queries["Describe this picture."] == {"caption": SCENE.caption}
    assert queries["what colour is the circle?"] == {"vqa": "orange"}      # the README's example
    assert queries["Is there an orange circle?"] == {"vqa": "yes"}
    assert queries["is there a red circle"] == {"vqa": "no"}
    assert queries["How many shapes are there?"] == {"vqa": "4"}
    assert set(queries["describe the picture and find all the objects"]) == {"caption", "od"}


def _answer(task: str, text: str, objects=()) -> Answer:
    part = AnswerPart(task, text, tuple(objects), True, "stop", 3)
    return Answer(task=task, text=text, objects=tuple(objects), json_valid=True, routing="router",
                  confidence=0.99, finish_reason="stop", prompt_tokens=5, completion_tokens=3, parts=(part,))


def test_truth_lines_mark_right_and_wrong_answers():
    assert truth_lines(_answer("vqa", "orange"), {"vqa": "orange"}) == ["truth    orange  (right)"]
    assert truth_lines(_answer("vqa", "blue"), {"vqa": "orange"}) == ["truth    orange  (WRONG)"]
    exact = [DetectedObject(o.label, o.bbox) for o in SCENE.objects]
    assert "(right)" in truth_lines(_answer("od", "{}", exact), {"od": SCENE.objects})[0]
    shifted = [DetectedObject(o.label, (o.bbox[0] + o.bbox[2], *o.bbox[1:])) for o in SCENE.objects]
    assert "(WRONG)" in truth_lines(_answer("od", "{}", shifted), {"od": SCENE.objects})[0]
    assert "(WRONG)" in truth_lines(_answer("od", "{}", exact[:-1]), {"od": SCENE.objects})[0]


def test_drawing_shows_true_and_predicted_boxes_in_two_colours(tmp_path):
    predicted = [DetectedObject(SCENE.objects[0].label, (0.5, 0.5, 0.2, 0.2))]
    draw_detections(SCENE.image, predicted, SCENE.objects, tmp_path / "d.png")
    pixels = np.asarray(Image.open(tmp_path / "d.png").convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    assert TRUE_COLOUR in colours and PREDICTED_COLOUR in colours
