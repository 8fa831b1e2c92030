"""Parsing the model's object-detection JSON: valid, truncated, invalid boxes, and text that is not JSON."""
from __future__ import annotations

import json

import pytest

from minivlm.processing.detection import DetectedObject, parse_detection

PERSON = {"label": "person", "bbox": [0.1, 0.25, 0.5, 0.375]}
DOG = {"label": "dog", "bbox": [0.5, 0.5, 0.25, 0.25]}


def test_valid_json():
    result = parse_detection(json.dumps({"objects": [PERSON, DOG]}))
    assert result.json_valid and not result.truncated and result.rejected == ()
    assert result.objects == (DetectedObject("person", (0.1, 0.25, 0.5, 0.375)),
                              DetectedObject("dog", (0.5, 0.5, 0.25, 0.25)))
    assert json.loads(result.objects_json()) == [PERSON, DOG]


def test_bare_list_and_empty_list():
    assert parse_detection(json.dumps([DOG])).objects == (DetectedObject("dog", (0.5, 0.5, 0.25, 0.25)),)
    empty = parse_detection('{"objects": []}')
    assert empty.objects == () and empty.json_valid and empty.objects_json() == "[]"


@pytest.mark.parametrize("cut", ['{"label": "dog", "bbox": [0.5, 0.', '{"label": "d', "{", ""])
def test_truncated_trailing_object_is_dropped_and_reported(cut):
    text = '{"objects": [' + json.dumps(PERSON) + ", " + cut
    result = parse_detection(text)
    assert not result.json_valid and result.truncated
    assert result.objects == (DetectedObject("person", (0.1, 0.25, 0.5, 0.375)),)


def test_complete_list_with_missing_closing_brace_is_not_truncated():
    result = parse_detection('{"objects": [' + json.dumps(PERSON) + "]")
    assert not result.json_valid and not result.truncated and len(result.objects) == 1


def test_cut_before_any_object():
    result = parse_detection('{"objec')
    assert result.objects == () and result.truncated and not result.json_valid


@pytest.mark.parametrize("item, reason", [
    ({"label": "cat", "bbox": [0.1, 0.2, 0.3]}, "bbox is not four numbers"),
    ({"label": "cat", "bbox": [0.1, 0.2, 0.3, "0.4"]}, "bbox is not four numbers"),
    ({"label": "cat", "bbox": [True, 0.2, 0.3, 0.4]}, "bbox is not four numbers"),
    ({"label": "cat", "bbox": [0.1, 0.2, 1.5, 0.4]}, "bbox outside [0, 1]"),
    ({"label": "cat", "bbox": [-0.2, 0.2, 0.3, 0.4]}, "bbox outside [0, 1]"),
    ({"label": "cat", "bbox": [0.8, 0.2, 0.3, 0.4]}, "bbox outside [0, 1]"),       # x + w > 1
    ({"label": "cat", "bbox": [0.1, 0.2, 0.0, 0.4]}, "bbox outside [0, 1]"),       # zero width
    ({"label": "", "bbox": [0.1, 0.2, 0.3, 0.4]}, "missing label"),
    ({"bbox": [0.1, 0.2, 0.3, 0.4]}, "missing label"),
    ("person", "not an object"),
])
def test_invalid_objects_are_rejected_with_a_reason(item, reason):
    result = parse_detection(json.dumps({"objects": [PERSON, item]}))
    assert result.json_valid and [o.label for o in result.objects] == ["person"]
    assert len(result.rejected) == 1 and reason in result.rejected[0]


def test_rounding_at_the_edge_is_tolerated():
    result = parse_detection(json.dumps([{"label": "sky", "bbox": [0.0, 0.0, 1.0004, 0.5]}]))
    assert len(result.objects) == 1 and result.rejected == ()


@pytest.mark.parametrize("text", ["a dog sitting on a sofa", "objects: person, dog", "null", "42",
                                  '{"label": "dog"}'])
def test_non_json_or_unexpected_json_gives_no_objects(text):
    result = parse_detection(text)
    assert result.objects == () and not result.json_valid
