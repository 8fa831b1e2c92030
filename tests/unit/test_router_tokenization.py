"""QueryTokenizer: both router kinds, save/load round trip, agreement with transformers, no torch at serving."""
from __future__ import annotations

import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from transformers import AutoTokenizer

from minivlm.routing.minilm import pretrained_encoder_dir
from minivlm.routing.tokenization import LSTM_MAX_LENGTH, MINILM_MAX_LENGTH, QueryTokenizer

QUERIES = ["describe this image", "Is it raining?", "detect all objects " * 30, ""]


@pytest.fixture(scope="module", params=["lstm", "minilm"])
def tokenizer(request) -> QueryTokenizer:
    return QueryTokenizer.from_pretrained(pretrained_encoder_dir(), request.param)


def test_shapes_and_dtypes(tokenizer):
    ids, mask = tokenizer(QUERIES)
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape
    expected_length = LSTM_MAX_LENGTH if tokenizer.kind == "lstm" else MINILM_MAX_LENGTH   # long query truncated
    assert ids.shape == (4, expected_length)
    assert (ids[mask == 0] == tokenizer.spec.pad_id).all()


def test_minilm_pads_to_the_longest_query_only():
    tok = QueryTokenizer.from_pretrained(pretrained_encoder_dir(), "minilm")
    ids, mask = tok(["short one", "a slightly longer query here"])
    assert ids.shape[1] == mask.sum(axis=1).max() < MINILM_MAX_LENGTH


def test_lstm_is_fixed_length_even_for_one_short_query():
    tok = QueryTokenizer.from_pretrained(pretrained_encoder_dir(), "lstm")
    assert tok(["hi"])[0].shape == (1, LSTM_MAX_LENGTH)


def test_matches_transformers_tokenizer(tokenizer):
    hf = AutoTokenizer.from_pretrained(str(pretrained_encoder_dir()))
    fixed = tokenizer.kind == "lstm"
    want = hf(QUERIES, padding="max_length" if fixed else "longest", truncation=True,
              max_length=tokenizer.spec.max_length, return_tensors="np")
    ids, mask = tokenizer(QUERIES)
    np.testing.assert_array_equal(ids, want["input_ids"])
    np.testing.assert_array_equal(mask, want["attention_mask"])


def test_save_load_round_trip(tokenizer, tmp_path):
    loaded = QueryTokenizer.load(tokenizer.save(tmp_path / "tok"))
    assert loaded.spec == tokenizer.spec
    for got, want in zip(loaded(QUERIES), tokenizer(QUERIES)):
        np.testing.assert_array_equal(got, want)


def test_load_of_a_non_tokenizer_folder_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="query_tokenizer.json"):
        QueryTokenizer.load(tmp_path)


def test_single_string_is_rejected(tokenizer):
    with pytest.raises(TypeError, match="list of strings"):
        tokenizer("describe this image")


def test_serving_path_does_not_import_torch(tmp_path):
    QueryTokenizer.from_pretrained(pretrained_encoder_dir(), "minilm").save(tmp_path)
    code = ("import sys; from minivlm.routing.tokenization import QueryTokenizer; "
            f"QueryTokenizer.load({str(tmp_path)!r})(['hello']); "
            "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
