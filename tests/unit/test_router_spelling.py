"""Key-word spelling correction before the router's tokenizer: what it corrects, what it leaves alone, and that
the setting travels with a saved tokenizer folder (what the served preprocess step loads)."""
from __future__ import annotations

import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

from minivlm.routing.minilm import pretrained_encoder_dir
from minivlm.routing.spelling import ROUTING_WORDS, SpellingCorrector, osa_distance
from minivlm.routing.tokenization import QueryTokenizer


@pytest.fixture(scope="module")
def tokenizer() -> QueryTokenizer:
    return QueryTokenizer.from_pretrained(pretrained_encoder_dir(), "minilm", spelling_words=ROUTING_WORDS)


@pytest.mark.parametrize("a, b, distance", [
    ("detect", "detect", 0), ("detcet", "detect", 1), ("descirbe", "describe", 1), ("boxs", "boxes", 1),
    ("descripton", "description", 1), ("cordnates", "coordinates", 2), ("ca", "abc", 3), ("", "box", 3),
])
def test_osa_distance(a, b, distance):
    assert osa_distance(a, b, limit=2) == min(distance, 3)
    assert osa_distance(b, a, limit=2) == min(distance, 3)


@pytest.mark.parametrize("typed, meant", [
    ("descirbe the pictue", "describe the picture"), ("detcet all objcts", "detect all objects"),
    ("captoin this imgae", "caption this image"), ("draw boxs", "draw boxes"), ("Summarise it", "summarize it"),
    ("give me cordinates", "give me coordinates"), ("DETECT EVRYTHING", "DETECT everything"),
])
def test_slips_of_routing_words_are_corrected(tokenizer, typed, meant):
    assert tokenizer.corrector(typed) == meant


@pytest.mark.parametrize("text", [
    "is the dog happy",                 # known words stay
    "bonding box",                      # a typo that spells another real word stays
    "wat is teh dor",                   # three letters or fewer: too ambiguous to correct
    "bboxes as json pls",               # routing words missing from the WordPiece vocabulary stay
    "xylophonist qwzrtp",               # unknown and far from every routing word
    "Is it raining? 42%!",              # punctuation and digits untouched
])
def test_other_words_are_left_alone(tokenizer, text):
    assert tokenizer.corrector(text) == text


def test_ties_go_to_the_earlier_routing_word():
    corrector = SpellingCorrector(["boxes", "box"], is_known=lambda word: False)
    assert corrector("boxs") == "boxes"
    assert SpellingCorrector(["box", "boxes"], is_known=lambda word: False)("boxs") == "box"


def test_the_router_sees_the_corrected_text(tokenizer):
    plain = QueryTokenizer.from_pretrained(pretrained_encoder_dir(), "minilm")
    for got, want in zip(tokenizer(["descirbe teh imgae"]), plain(["describe teh image"])):
        np.testing.assert_array_equal(got, want)
    assert plain.corrector is None and plain.spec.spelling_words == ()


def test_the_setting_travels_with_a_saved_folder(tokenizer, tmp_path):
    loaded = QueryTokenizer.load(tokenizer.save(tmp_path / "tok"))
    assert loaded.spec == tokenizer.spec and loaded.spec.spelling_words == ROUTING_WORDS
    for got, want in zip(loaded(["detcet the objcts"]), tokenizer(["detect the objects"])):
        np.testing.assert_array_equal(got, want)


def test_the_notebook_lstm_tokenizer_refuses_it():
    with pytest.raises(ValueError, match="predict_task"):
        QueryTokenizer.from_pretrained(pretrained_encoder_dir(), "lstm", spelling_words=ROUTING_WORDS)


def test_the_served_path_still_imports_no_torch(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    code = ("import sys; from minivlm.routing.tokenization import QueryTokenizer; "
            f"t = QueryTokenizer.load({str(tmp_path)!r}); assert t.corrector('detcet') == 'detect'; t(['detcet']); "
            "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_served_query_step_routes_the_corrected_text_and_keeps_the_question(tokenizer, tmp_path):
    from minivlm.serving.query_step import TOKENIZER_DIR, QueryStep

    tokenizer.save(tmp_path / TOKENIZER_DIR)
    batch = QueryStep.load(tmp_path).run([b"detcet the objcts", b"[VQA] waht colour is the sqaure"])
    want_ids, want_mask = tokenizer(["detect the objects", "what colour is the square"])
    np.testing.assert_array_equal(batch.input_ids, want_ids)
    np.testing.assert_array_equal(batch.attention_mask, want_mask)
    assert batch.questions == ["detcet the objcts", "waht colour is the sqaure"]    # the LM reads what was typed
