"""Load either router kind from disk behind one interface: texts -> logits, calibrated probabilities and
multi-label task scores.

Only a MiniLM router with a scores head has multi-label scores. The notebook's LSTM and MiniLM folders saved
before the scores head existed give scores = probs, which sum to 1 and so never flag a query as compound (barring an
exact 0.5/0.5 tie).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minivlm.routing.calibration import softmax
from minivlm.routing.lstm import load_notebook_checkpoint
from minivlm.routing.minilm import ROUTER_CONFIG, load_minilm_router
from minivlm.routing.multilabel import RouterOutput, sigmoid
from minivlm.routing.tokenization import CONFIG_FILE, QueryTokenizer

LSTM_CHECKPOINT = "task_classifier.pt"     # the notebook's file name inside mini-vlm-routing/


def has_scores_head(model: nn.Module) -> bool:
    return getattr(model, "scores_head", None) is not None


def router_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(task logits, multi-label score logits), or (task logits, None) for a router without a scores head."""
    if has_scores_head(model):
        return model.forward_with_scores(input_ids, attention_mask)
    return model(input_ids, attention_mask), None


@dataclass
class LoadedRouter:
    kind: str
    model: nn.Module            # forward(input_ids, attention_mask) -> logits; MiniLM: forward_with_scores too
    tokenizer: QueryTokenizer
    temperature: float = 1.0

    @property
    def has_scores_head(self) -> bool:
        return has_scores_head(self.model)

    @torch.no_grad()
    def all_logits(self, texts: list[str], *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """(task logits, score logits or None), each (N, 3)."""
        self.model.eval()
        logits, scores = [np.zeros((0, 3), np.float32)], [np.zeros((0, 3), np.float32)]
        for start in range(0, len(texts), batch_size):
            ids, mask = self.tokenizer(texts[start:start + batch_size])
            task, score = router_logits(self.model, torch.from_numpy(ids), torch.from_numpy(mask))
            logits.append(task.numpy())
            if score is not None:
                scores.append(score.numpy())
        return np.concatenate(logits), np.concatenate(scores) if self.has_scores_head else None

    def logits(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        return self.all_logits(texts, batch_size=batch_size)[0]

    def predict(self, texts: list[str]) -> RouterOutput:
        """What the exported graph serves: (task_probs, task_scores)."""
        logits, score_logits = self.all_logits(texts)
        probs = softmax(logits, self.temperature)
        return RouterOutput(probs, probs.copy() if score_logits is None else sigmoid(score_logits))

    def probs(self, texts: list[str]) -> np.ndarray:
        return self.predict(texts).probs

    def scores(self, texts: list[str]) -> np.ndarray:
        return self.predict(texts).scores


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
