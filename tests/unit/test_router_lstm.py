"""The notebook's task_classifier.pt: round trip and every strict-loading error."""
from __future__ import annotations

import pytest
import torch

from minivlm.errors import CheckpointError
from minivlm.routing.lstm import LSTMRouter, load_notebook_checkpoint, save_notebook_checkpoint

VOCAB = 50
CONFIG = {"hidden_dim": 6, "num_tasks": 3}


def tiny_router(seed: int = 0) -> LSTMRouter:
    torch.manual_seed(seed)
    return LSTMRouter(VOCAB, embed_dim=8, hidden_dim=6).eval()


def write(path, payload):
    torch.save(payload, path)
    return path


def test_round_trip_keeps_weights_and_outputs(tmp_path):
    model = tiny_router()
    loaded = load_notebook_checkpoint(save_notebook_checkpoint(model, tmp_path / "task_classifier.pt"))
    ids = torch.randint(0, VOCAB, (3, 32))
    assert loaded.embedding.weight.shape == (VOCAB, 8) and loaded.config == {"hidden_dim": 6, "num_tasks": 3}
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


def test_checkpoint_has_the_notebook_format(tmp_path):
    raw = torch.load(save_notebook_checkpoint(tiny_router(), tmp_path / "c.pt"), weights_only=True)
    assert set(raw) == {"state_dict", "config"} and raw["config"] == {"hidden_dim": 6, "num_tasks": 3}
    assert {k.split(".")[0] for k in raw["state_dict"]} == {"embedding", "lstm", "classifier"}   # the notebook's names


def test_forward_ignores_the_mask_like_the_notebook():
    model, ids = tiny_router(), torch.randint(0, VOCAB, (2, 32))
    torch.testing.assert_close(model(ids, torch.zeros_like(ids)), model(ids))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_notebook_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("key", ["state_dict", "config"])
def test_missing_top_level_key(tmp_path, key):
    payload = {"state_dict": tiny_router().state_dict(), "config": {"hidden_dim": 6, "num_tasks": 3}}
    del payload[key]
    with pytest.raises(CheckpointError, match=f"missing top-level key '{key}'"):
        load_notebook_checkpoint(write(tmp_path / "c.pt", payload))


def test_missing_config_key(tmp_path):
    payload = {"state_dict": tiny_router().state_dict(), "config": {"num_tasks": 3}}
    with pytest.raises(CheckpointError, match="config is missing 'hidden_dim'"):
        load_notebook_checkpoint(write(tmp_path / "c.pt", payload))


def test_wrong_number_of_tasks(tmp_path):
    model = LSTMRouter(VOCAB, 8, 6, num_tasks=4)
    with pytest.raises(CheckpointError, match="num_tasks=4"):
        load_notebook_checkpoint(save_notebook_checkpoint(model, tmp_path / "c.pt"))


def test_missing_state_key(tmp_path):
    state = tiny_router().state_dict()
    del state["classifier.bias"]
    with pytest.raises(CheckpointError, match=r"missing key 'classifier.bias' \(expected shape \(3,\)\)"):
        load_notebook_checkpoint(write(tmp_path / "c.pt", {"state_dict": state, "config": CONFIG}))


def test_unexpected_state_key(tmp_path):
    state = {**tiny_router().state_dict(), "extra.weight": torch.zeros(2, 2)}
    with pytest.raises(CheckpointError, match=r"unexpected key 'extra.weight' with shape \(2, 2\)"):
        load_notebook_checkpoint(write(tmp_path / "c.pt", {"state_dict": state, "config": CONFIG}))


def test_wrong_shape_names_key_and_both_shapes(tmp_path):
    state = tiny_router().state_dict()
    state["classifier.weight"] = torch.zeros(3, 10)
    with pytest.raises(CheckpointError, match=r"'classifier.weight' has shape \(3, 10\) .* expects \(3, 12\)"):
        load_notebook_checkpoint(write(tmp_path / "c.pt", {"state_dict": state, "config": CONFIG}))


def test_config_disagreeing_with_weights_is_a_shape_error(tmp_path):
    payload = {"state_dict": tiny_router().state_dict(), "config": {"hidden_dim": 7, "num_tasks": 3}}
    with pytest.raises(CheckpointError, match=r"'lstm.weight_ih_l0' has shape \(24, 8\) .* expects \(28, 8\)"):
        load_notebook_checkpoint(write(tmp_path / "c.pt", payload))


def test_missing_embedding_weight(tmp_path):
    state = tiny_router().state_dict()
    del state["embedding.weight"]
    with pytest.raises(CheckpointError, match="embedding.weight"):
        load_notebook_checkpoint(write(tmp_path / "c.pt", {"state_dict": state, "config": CONFIG}))


def test_load_router_from_the_notebook_folder(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from minivlm.routing.loading import load_router
    from minivlm.routing.tokenization import QueryTokenizer, TokenizerSpec

    vocab = {f"w{i}": i for i in range(VOCAB)} | {"[UNK]": VOCAB - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    QueryTokenizer(tok, TokenizerSpec("lstm", 32, 0, "w0", True)).save(tmp_path / "tokenizer")
    save_notebook_checkpoint(tiny_router(), tmp_path / "task_classifier.pt")
    router = load_router(tmp_path)
    assert router.kind == "lstm" and router.probs(["w3 w4", "w9"]).shape == (2, 3)


def test_load_router_without_tokenizer_folder(tmp_path):
    from minivlm.routing.loading import load_router

    save_notebook_checkpoint(tiny_router(), tmp_path / "task_classifier.pt")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_router(tmp_path / "task_classifier.pt")
