"""Load either router kind from disk behind one interface: texts -> logits / calibrated probabilities."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minivlm.router.calibration import softmax
from minivlm.router.lstm import load_notebook_checkpoint
from minivlm.router.minilm import ROUTER_CONFIG, load_minilm_router
from minivlm.router.tokenization import CONFIG_FILE, QueryTokenizer

LSTM_CHECKPOINT = "task_classifier.pt"     # the notebook's file name inside mini-vlm-routing/


@dataclass
class LoadedRouter:
    kind: str
    model: nn.Module            # forward(input_ids, attention_mask) -> logits
    tokenizer: QueryTokenizer
    temperature: float = 1.0

    @torch.no_grad()
    def logits(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        self.model.eval()
        chunks = []
        for start in range(0, len(texts), batch_size):
            ids, mask = self.tokenizer(texts[start:start + batch_size])
            chunks.append(self.model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 3), np.float32)

    def probs(self, texts: list[str]) -> np.ndarray:
        return softmax(self.logits(texts), self.temperature)


def load_lstm_tokenizer(folder: str | Path) -> QueryTokenizer:
    """A saved QueryTokenizer folder, or the notebook's HF tokenizer folder (`mini-vlm-routing/tokenizer/`)."""
    folder = Path(folder)
    if (folder / CONFIG_FILE).is_file():
        return QueryTokenizer.load(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"LSTM router tokenizer folder not found: {folder}")
    return QueryTokenizer.from_pretrained(folder, "lstm")


def load_router(path: str | Path, *, tokenizer_dir: str | Path | None = None,
                temperature: float | None = None) -> LoadedRouter:
    """`path` is a notebook `task_classifier.pt` or the `mini-vlm-routing/` folder holding it (tokenizer
    defaults to the sibling `tokenizer/` folder, as the notebook saves it), or a MiniLM router folder.
    `temperature` overrides the saved one."""
    path = Path(path)
    if path.is_dir() and (path / LSTM_CHECKPOINT).is_file():
        path = path / LSTM_CHECKPOINT
    if path.is_dir() and (path / ROUTER_CONFIG).is_file():
        model, tokenizer, config = load_minilm_router(path)
        return LoadedRouter("minilm", model, tokenizer, config.temperature if temperature is None else temperature)
    if path.suffix == ".pt" or path.is_file():   # a missing .pt gets load_notebook_checkpoint's error
        model = load_notebook_checkpoint(path)
        tokenizer = load_lstm_tokenizer(tokenizer_dir or path.parent / "tokenizer")
        return LoadedRouter("lstm", model, tokenizer, 1.0 if temperature is None else temperature)
    raise FileNotFoundError(f"{path} is neither a task_classifier.pt file nor a MiniLM router folder")
