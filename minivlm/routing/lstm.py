"""The notebook's LSTM task router and its `task_classifier.pt` checkpoint format.

The module mirrors the notebook's `TaskClassifier` attribute for attribute (`embedding`, `lstm`, `classifier`),
so its checkpoint loads as saved: {"state_dict": {embedding.weight, lstm.*, classifier.*}, "config":
{"hidden_dim", "num_tasks"}}; the vocabulary size and embedding width are read from `embedding.weight`.
Loading is strict: every key and shape must match, or a CheckpointError names the offender. Checkpoints this
project wrote before it used the notebook's names (`fc.*`) are read too.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from minivlm.errors import CheckpointError
from vlm_client.protocol import TASKS

CHECKPOINT_KEYS = ("state_dict", "config")
CONFIG_KEYS = ("hidden_dim", "num_tasks")


class LSTMRouter(nn.Module):
    """Embedding -> BiLSTM -> Linear over the final hidden states of both directions."""

    def __init__(self, vocab_size: int, embed_dim: int = 128, hidden_dim: int = 128, num_tasks: int = len(TASKS)):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.classifier = nn.Linear(hidden_dim * 2, num_tasks)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # The notebook runs over all 32 positions, pads included; the mask is accepted for a uniform
        # router interface and deliberately ignored so outputs match the notebook's checkpoint.
        x = self.embedding(input_ids)                      # (B, T, E)
        _, (h, _) = self.lstm(x)                           # h: (2, B, H), forward then backward direction
        return self.classifier(torch.cat([h[-2], h[-1]], dim=1))   # (B, num_tasks)

    @property
    def config(self) -> dict[str, int]:
        return {"hidden_dim": self.lstm.hidden_size, "num_tasks": self.classifier.out_features}


def save_notebook_checkpoint(model: LSTMRouter, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "config": model.config}, path)
    return path


def load_notebook_checkpoint(path: str | Path) -> LSTMRouter:
    checkpoint = _read_checkpoint(Path(path))
    config, state = checkpoint["config"], _notebook_names(checkpoint["state_dict"])
    if "embedding.weight" not in state:
        raise CheckpointError(f"{path}: state_dict has no 'embedding.weight' (needed for the vocabulary size)")
    vocab_size, embed_dim = state["embedding.weight"].shape
    model = LSTMRouter(vocab_size, embed_dim, int(config["hidden_dim"]), int(config["num_tasks"]))
    check_state_dict(model, state, source=str(path))
    model.load_state_dict(state, strict=True)
    return model.eval()


def _notebook_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`fc.*` -> `classifier.*`, for the checkpoints this project's older versions wrote."""
    if any(key.startswith("classifier.") for key in state):
        return state
    return {f"classifier.{key[3:]}" if key.startswith("fc.") else key: value for key, value in state.items()}


def _read_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"LSTM router checkpoint not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a dict with keys {CHECKPOINT_KEYS}, got {type(checkpoint).__name__}")
    for key in CHECKPOINT_KEYS:
        if key not in checkpoint:
            raise CheckpointError(f"{path}: missing top-level key {key!r} (found {sorted(checkpoint)})")
    for key in CONFIG_KEYS:
        if key not in checkpoint["config"]:
            raise CheckpointError(f"{path}: config is missing {key!r} (found {sorted(checkpoint['config'])})")
    if checkpoint["config"]["num_tasks"] != len(TASKS):
        raise CheckpointError(f"{path}: config num_tasks={checkpoint['config']['num_tasks']}, "
                              f"but the router serves {len(TASKS)} tasks {TASKS}")
    return checkpoint


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Raise on the first missing key, unexpected key or shape mismatch (nanoGPT-style strict import)."""
    expected = model.state_dict()
    for key in expected:
        if key not in state:
            raise CheckpointError(f"{source}: missing key {key!r} (expected shape {tuple(expected[key].shape)})")
    for key in state:
        if key not in expected:
            raise CheckpointError(f"{source}: unexpected key {key!r} with shape {tuple(state[key].shape)}")
        if state[key].shape != expected[key].shape:
            raise CheckpointError(f"{source}: key {key!r} has shape {tuple(state[key].shape)} in the checkpoint "
                                  f"but the model expects {tuple(expected[key].shape)}")
