"""A router as the served ONNX graph (`ROUTER_SPEC`), with its tokenizer folder beside it.

Outputs, in this order:
    `task_probs`  (FP32 [batch, 3]) = softmax(logits / T) with the fitted temperature baked in;
    `task_scores` (FP32 [batch, 3]) = sigmoid(score logits) from the MiniLM scores head. A router without
                  one (the notebook's LSTM, MiniLM folders saved before the head existed) serves
                  task_scores = task_probs: they sum to 1, so no query is compound (barring an exact
                  0.5/0.5 tie).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from minivlm.export.onnx_graph import ExportReport, InputMaker, export_graph
from minivlm.export.specs import ROUTER_SPEC
from minivlm.routing.loading import LoadedRouter, has_scores_head, load_router, router_logits
from minivlm.routing.onnx_runtime import tokenizer_dir_for
from minivlm.routing.tokenization import QueryTokenizer
from vlm_client.protocol import ATTENTION_MASK, INPUT_IDS

log = logging.getLogger(__name__)

# Queries of different lengths, so batch 4 exercises padding and the dynamic sequence axis.
PARITY_QUERIES = ("describe this image", "detect all objects and give me their bounding boxes please",
                  "is it raining?", "what is the man in the red jacket holding in his left hand")


class CalibratedRouter(nn.Module):
    """The served graph: router -> (softmax(logits / T), sigmoid(score logits) or the probabilities)."""

    def __init__(self, router: nn.Module, temperature: float):
        super().__init__()
        self.router = router
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, score_logits = router_logits(self.router, input_ids, attention_mask)
        probs = torch.softmax(logits / self.temperature, dim=-1)                     # (B, 3)
        return probs, probs.clone() if score_logits is None else torch.sigmoid(score_logits)


@dataclass(frozen=True)
class RouterExportReport(ExportReport):
    tokenizer_dir: Path = Path()
    kind: str = ""
    temperature: float = 1.0
    has_scores_head: bool = False      # False: task_scores = task_probs


def router_inputs(tokenizer: QueryTokenizer) -> InputMaker:
    """Per batch size: real tokenized queries, and random ids with right padding of random lengths. Random ids
    give less saturated probabilities, so a logit-level mismatch cannot hide behind p = 1.0."""
    def make(batch_size: int, generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
        queries = tokenizer([PARITY_QUERIES[i % len(PARITY_QUERIES)] for i in range(batch_size)])
        length = queries[0].shape[1] if tokenizer.spec.fixed_length else 12
        ids = torch.randint(0, tokenizer.vocab_size, (batch_size, length), generator=generator)
        lengths = torch.randint(2, length + 1, (batch_size, 1), generator=generator)
        mask = (torch.arange(length)[None, :] < lengths).long()                     # (B, T)
        ids = torch.where(mask == 1, ids, tokenizer.spec.pad_id)
        return [_feeds(*(torch.from_numpy(a) for a in queries)), _feeds(ids, mask)]
    return make


def _feeds(ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {INPUT_IDS.name: ids.to(torch.int64), ATTENTION_MASK.name: mask.to(torch.int64)}


def export_router(router: str | Path | LoadedRouter, onnx_path: str | Path, *,
                  tokenizer_dir: str | Path | None = None, temperature: float | None = None) -> RouterExportReport:
    """Export a MiniLM router folder, a notebook task_classifier.pt or a LoadedRouter; validate; write the
    tokenizer folder (default: `router_tokenizer/` beside the graph)."""
    loaded = router if isinstance(router, LoadedRouter) else load_router(router, temperature=temperature)
    temp = loaded.temperature if temperature is None else temperature
    module = CalibratedRouter(loaded.model, temp).eval()
    tokenizer_dir = Path(tokenizer_dir or tokenizer_dir_for(onnx_path))
    report = export_graph(ROUTER_SPEC, module, router_inputs(loaded.tokenizer), onnx_path)
    loaded.tokenizer.save(tokenizer_dir)
    log.info("exported %s router to %s (T=%.3f, max diff %s)", loaded.kind, onnx_path, temp, report.output_diffs)
    return RouterExportReport(**vars(report), tokenizer_dir=tokenizer_dir, kind=loaded.kind,
                              temperature=float(temp), has_scores_head=has_scores_head(loaded.model))
