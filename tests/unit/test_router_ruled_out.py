"""Clauses that rule a task out are dropped before the router's encoder: which ones, what stays, and that the
setting travels with a saved tokenizer folder (what the served preprocess step loads)."""
from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from minivlm.routing.minilm import pretrained_encoder_dir
from minivlm.routing.ruled_out import drop_ruled_out
from minivlm.routing.spelling import ROUTING_WORDS
from minivlm.routing.tokenization import CONFIG_FILE, QueryTokenizer


@pytest.fixture(scope="module")
def tokenizer() -> QueryTokenizer:
    return QueryTokenizer.from_pretrained(pretrained_encoder_dir(), "minilm", spelling_words=ROUTING_WORDS,
                                          drop_ruled_out=True)


@pytest.mark.parametrize("text, meant", [
    ("Rather than boxes, just give me the count of cars.", "just give me the count of cars."),
    ("No caption. Boxes only.", "Boxes only."),
    ("Forget the caption. Give me bounding boxes.", "Give me bounding boxes."),
    ("Counting isn't needed. Just locate each of the sheep.", "Just locate each of the sheep."),
    ("Not interested in how many there are. Show me where the boats are.", "Show me where the boats are."),
    ("Don't describe, just detect.", "just detect."),
    ("no need for boxes; is the door open?", "is the door open?"),
    ("Skip the object detection. A plain description is all I'm after.", "A plain description is all I'm after."),
    ("Instead of describing it, find every object and return coordinates.",
     "find every object and return coordinates."),
    ("Forget the bounding boxes - Describe the setting thanks! That's all!",     # a spaced dash ends a clause
     "Describe the setting thanks! That's all!"),
    ("no coordinates - what's this? thank you", "what's this? thank you"),
    ("What kind of boat is this - no boxes", "What kind of boat is this -"),
    ("no caption\u2014boxes only", "boxes only"),
    ("Boxes are optional. Describe the scene.", "Describe the scene."),
    ("hold the description; is this indoors?", "is this indoors?"),
    # a request that starts again inside the ruling-out clause is kept
    ("Skip the object detection and give me a summary", "give me a summary"),
    ("i dont want boxes i want a description", "i want a description"),
    ("don't box the cars and trucks just describe", "just describe"),
    ("Don't draw boxes around the cars and count them instead.", "count them instead."),
    ("Don't count anything or draw boxes; I only want a caption.", "I only want a caption."),   # "or draw": no
    # ruled out in words found in held-out set 7's misses (paraphrased)
    ("Captions are useless here; box every person.", "box every person."),
    ("I don't want you to mark them, just count the cans.", "just count the cans."),
    ("I don't need a yes or no; show me where every cone is.", "show me where every cone is."),
    ("Don't give me the number of boats, give me where each one is.", "give me where each one is."),
])
def test_a_ruled_out_task_is_dropped(text, meant):
    assert drop_ruled_out(text) == meant


@pytest.mark.parametrize("text", [
    "no boxes",                                           # nothing else would be left
    "Warehouse photo. Is there no forklift near the boxes?",   # a question rules nothing out
    "Bounding boxes are required for every car. Please be precise.",   # a need, not ruled out
    "a well-lit room - describe it",                      # a hyphen inside a word ends nothing
    "how many cars are not red?",                         # a negation that rules no task out
    "count the cars that are not parked, and describe the scene",
    "describe the picture and tell me how many triangles there are",
    "Is there no dog?",
    "skip the caption and the boxes",                     # "and the boxes" asks for nothing
    "no need to count how many birds there are",          # a question word is no new request
    "Is every mark on the wall a crack?",
    "Boxes are useful here, so box every car.",
    "",
])
def test_other_queries_are_left_alone(text):
    assert drop_ruled_out(text) == text


def test_the_router_sees_the_text_without_the_ruled_out_clause(tokenizer):
    plain = QueryTokenizer.from_pretrained(pretrained_encoder_dir(), "minilm", spelling_words=ROUTING_WORDS)
    assert not plain.spec.drop_ruled_out
    for got, want in zip(tokenizer(["No descirption. Detcet the objects."]), plain(["Detect the objects."])):
        np.testing.assert_array_equal(got, want)          # the slips are corrected first, then the clause goes


def test_the_setting_travels_with_a_saved_folder_and_older_folders_keep_every_clause(tokenizer, tmp_path):
    loaded = QueryTokenizer.load(tokenizer.save(tmp_path / "tok"))
    assert loaded.spec == tokenizer.spec and loaded.spec.drop_ruled_out
    config = json.loads((tmp_path / "tok" / CONFIG_FILE).read_text())
    del config["drop_ruled_out"]                           # a folder saved before the setting existed
    (tmp_path / "tok" / CONFIG_FILE).write_text(json.dumps(config))
    assert not QueryTokenizer.load(tmp_path / "tok").spec.drop_ruled_out


def test_the_notebook_lstm_tokenizer_refuses_it():
    with pytest.raises(ValueError, match="predict_task"):
        QueryTokenizer.from_pretrained(pretrained_encoder_dir(), "lstm", drop_ruled_out=True)


def test_the_served_query_step_drops_the_clause_for_the_router_and_keeps_it_for_the_answer(tokenizer, tmp_path):
    from minivlm.serving.query_step import TOKENIZER_DIR, QueryStep

    tokenizer.save(tmp_path / TOKENIZER_DIR)
    batch = QueryStep.load(tmp_path).run([b"Rather than boxes, just give me the count of cars."])
    want_ids, want_mask = tokenizer(["just give me the count of cars."])
    np.testing.assert_array_equal(batch.input_ids, want_ids)
    np.testing.assert_array_equal(batch.attention_mask, want_mask)
    assert batch.questions == ["Rather than boxes, just give me the count of cars."]   # the LM reads what was typed
