"""Parse the model's object-detection JSON: {"objects": [{"label": str, "bbox": [x, y, w, h]}, ...]}.

Only valid objects are kept: a non-empty label and a box of four numbers inside [0, 1]. When the text was
cut off (tokens ran out mid-object), the complete objects before the cut are recovered and the truncation
is reported instead of failing the whole answer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

BOX_TOLERANCE = 1e-3     # rounding in generated decimals


@dataclass(frozen=True)
class DetectedObject:
    label: str
    bbox: tuple[float, float, float, float]   # x, y, w, h normalized to [0, 1]

    def to_dict(self) -> dict:
        return {"label": self.label, "bbox": list(self.bbox)}


@dataclass(frozen=True)
class DetectionResult:
    objects: tuple[DetectedObject, ...]
    json_valid: bool          # the raw text parsed as JSON as it was
    truncated: bool = False   # a trailing incomplete object was dropped
    rejected: tuple[str, ...] = field(default_factory=tuple)   # why each invalid object was dropped

    def objects_json(self) -> str:
        return json.dumps([obj.to_dict() for obj in self.objects])


def parse_detection(text: str) -> DetectionResult:
    try:
        items = _object_list(json.loads(text))
        return _validated(items, json_valid=True, truncated=False)
    except (ValueError, TypeError):
        items, truncated = _salvage_objects(text)
        return _validated(items, json_valid=False, truncated=truncated)


def _object_list(document) -> list:
    if isinstance(document, dict) and isinstance(document.get("objects"), list):
        return document["objects"]
    if isinstance(document, list):
        return document
    raise ValueError("not an object list")


def _salvage_objects(text: str) -> tuple[list, bool]:
    """Decode complete `{...}` items one by one after the list opens; anything left over was cut off."""
    start = text.find("[")
    if start < 0:
        return [], bool(text.strip())
    decoder, position, items = json.JSONDecoder(), start + 1, []
    while True:
        position = _skip(text, position, " \n\t,")
        if position >= len(text) or text[position] == "]":
            return items, position >= len(text)
        try:
            item, position = decoder.raw_decode(text, position)
        except ValueError:
            return items, True
        items.append(item)


def _skip(text: str, position: int, characters: str) -> int:
    while position < len(text) and text[position] in characters:
        position += 1
    return position


def _validated(items: list, *, json_valid: bool, truncated: bool) -> DetectionResult:
    objects, rejected = [], []
    for item in items:
        problem = _problem(item)
        if problem:
            rejected.append(problem)
        else:
            objects.append(DetectedObject(item["label"].strip(), tuple(float(v) for v in item["bbox"])))
    return DetectionResult(tuple(objects), json_valid, truncated, tuple(rejected))


def _problem(item) -> str | None:
    if not isinstance(item, dict):
        return f"not an object: {item!r}"
    label, box = item.get("label"), item.get("bbox")
    if not isinstance(label, str) or not label.strip():
        return f"missing label: {item!r}"
    if not (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        return f"bbox is not four numbers: {item!r}"
    x, y, w, h = box
    low, high = -BOX_TOLERANCE, 1 + BOX_TOLERANCE
    if not (all(low <= v <= high for v in box) and w > 0 and h > 0 and x + w <= high and y + h <= high):
        return f"bbox outside [0, 1]: {item!r}"
    return None
