"""perf_analyzer --input-data files: BYTES elements carry the 4-byte little-endian length prefix."""
import base64
import io
import json
import struct

import numpy as np
import pytest
from PIL import Image

from vlm_tools.bench.perf_inputs import (
    bytes_element,
    decode_bytes_element,
    length_prefixed,
    perf_input_data,
    write_perf_inputs,
)


def test_length_prefix_is_uint32_little_endian():
    assert length_prefixed(b"abc") == b"\x03\x00\x00\x00abc"
    assert length_prefixed(b"") == b"\x00\x00\x00\x00"
    raw = base64.b64decode(bytes_element(b"x" * 300)["b64"])
    assert raw[:4] == struct.pack("<I", 300) and raw[4:] == b"x" * 300


def test_decode_rejects_a_wrong_prefix():
    bad = {"b64": base64.b64encode(struct.pack("<I", 9) + b"abc").decode()}
    with pytest.raises(ValueError, match="says 9 bytes"):
        decode_bytes_element(bad)


def test_vlm_file_holds_real_images_and_the_query_mix(tmp_path):
    path = write_perf_inputs(tmp_path / "in.json", count=4, mix={"caption": 1, "vqa": 1})
    data = json.loads(path.read_text())["data"]
    assert len(data) == 4
    image = Image.open(io.BytesIO(decode_bytes_element(data[0]["image"])))
    assert image.format in ("PNG", "JPEG") and min(image.size) >= 224
    queries = [decode_bytes_element(e["query"]).decode() for e in data]
    assert queries[0] == "[CAPTION]" and queries[1].startswith("[VQA] ")
    assert set(data[0]) == {"image", "query"}                 # optional inputs left to the server


def test_fixed_length_adds_the_task_limit_and_greedy_decoding():
    element = perf_input_data(count=2, mix={"od": 1}, fixed_length=True)["data"][0]
    assert element["max_new_tokens"] == [150] and element["temperature"] == [0.0]


def test_route_file_has_queries_only():
    element = perf_input_data(model="route", count=1)["data"][0]
    assert set(element) == {"query"}


def test_preprocess_file_has_an_image_and_a_query_and_no_generation_options():
    element = perf_input_data(model="preprocess", count=1, mix={"vqa": 1}, fixed_length=True)["data"][0]
    assert set(element) == {"image", "query"}
    assert decode_bytes_element(element["query"]).startswith(b"[VQA] ")


def test_generator_embeds_are_raw_little_endian_floats_with_their_shape():
    element = perf_input_data(model="generator", count=1, mix={"vqa": 1}, embeds_shape=(5, 8))["data"][0]
    embeds = np.frombuffer(base64.b64decode(element["image_embeds"]["b64"]), dtype="<f4")
    assert embeds.size == 40 and element["image_embeds"]["shape"] == [5, 8]
    assert element["forced_task"] == [2] and element["task_probs"] == [0.0, 0.0, 1.0]
    assert decode_bytes_element(element["forced_by"]) == b"override"


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="'router'"):
        perf_input_data(model="router")
