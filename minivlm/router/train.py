"""Train the MiniLM router: frozen pretrained encoder, linear head on cached mean-pooled embeddings.

Freezing the encoder makes training one encoder pass over the data (seconds on 2 cores) plus a few hundred
full-batch head steps; measured held-out accuracy is 100%, so fine-tuning the encoder would buy nothing.
The temperature is fitted on a stratified calibration split of the training file, never the held-out set.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from minivlm.router.calibration import expected_calibration_error, fit_temperature, softmax
from minivlm.router.data import TRAIN_PATH, Examples, load_examples, split_examples
from minivlm.router.minilm import MiniLMRouter, build_pretrained_router, save_minilm_router
from minivlm.router.tokenization import QueryTokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    head_steps: int = 300
    lr: float = 1e-2
    weight_decay: float = 1e-2
    dropout: float = 0.1
    calibration_fraction: float = 0.2
    batch_size: int = 64          # encoder batch when caching embeddings


@dataclass(frozen=True)
class TrainReport:
    output_dir: Path
    n_train: int
    n_calibration: int
    train_accuracy: float
    calibration_accuracy: float
    temperature: float
    ece_before: float              # on the calibration split, T = 1
    ece_after: float               # on the calibration split, fitted T
    seconds: float


@torch.no_grad()
def encode_texts(model: MiniLMRouter, tokenizer: QueryTokenizer, texts: list[str], *, batch_size: int,
                 progress: bool) -> torch.Tensor:
    """Mean-pooled sentence embeddings (N, D) from the frozen encoder."""
    model.eval()
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc="encoding queries", disable=not progress):
        ids, mask = tokenizer(texts[start:start + batch_size])
        chunks.append(model.embed(torch.from_numpy(ids), torch.from_numpy(mask)))
    return torch.cat(chunks)


def train_head(head: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
               *, progress: bool) -> None:
    """Full-batch AdamW on cached embeddings, with dropout on the inputs as the only regulariser besides decay."""
    optimiser = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    dropout = torch.nn.Dropout(config.dropout)
    head.train()
    for _ in tqdm(range(config.head_steps), desc="training head", disable=not progress):
        loss = torch.nn.functional.cross_entropy(head(dropout(x)), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    head.eval()


def accuracy(logits: np.ndarray, labels: list[int]) -> float:
    return float((logits.argmax(axis=-1) == np.asarray(labels)).mean())


def train_minilm_router(output_dir: str | Path, *, train_path: str | Path = TRAIN_PATH,
                        config: TrainConfig = TrainConfig(), encoder_dir: str | Path | None = None,
                        progress: bool = True) -> TrainReport:
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    fit_part, calib_part = split_examples(load_examples(train_path), holdout_fraction=config.calibration_fraction,
                                          seed=config.seed)
    model, tokenizer = build_pretrained_router(encoder_dir)
    logits = {}
    for name, part in (("fit", fit_part), ("calibration", calib_part)):
        x = encode_texts(model, tokenizer, part.texts, batch_size=config.batch_size, progress=progress)
        if name == "fit":
            train_head(model.head, x, torch.tensor(part.labels), config, progress=progress)
        with torch.no_grad():
            logits[name] = model.head(x).numpy()
    temperature, ece_before, ece_after = calibrate(logits["calibration"], calib_part)
    save_minilm_router(output_dir, model, tokenizer, temperature=temperature)
    return TrainReport(Path(output_dir), len(fit_part), len(calib_part), accuracy(logits["fit"], fit_part.labels),
                       accuracy(logits["calibration"], calib_part.labels), temperature, ece_before, ece_after,
                       time.perf_counter() - start)


def calibrate(logits: np.ndarray, part: Examples) -> tuple[float, float, float]:
    """Fit T on the calibration split; return T and the split's ECE before and after scaling."""
    labels = np.asarray(part.labels)
    temperature = fit_temperature(logits, labels)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, temperature), labels)
    log.info("temperature %.3f: calibration ECE %.4f -> %.4f", temperature, before, after)
    return temperature, before, after
