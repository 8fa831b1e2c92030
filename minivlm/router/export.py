"""Export a router to the served ONNX graph and prove it matches PyTorch.

Graph spec (names from vlm_client.protocol): inputs `input_ids`, `attention_mask` (INT64 [batch, sequence]),
outputs, in this order:
    `task_probs`  (FP32 [batch, 3]) = softmax(logits / T) with the fitted temperature baked in;
    `task_scores` (FP32 [batch, 3]) = sigmoid(score logits) from the MiniLM scores head. A router without
                  one (the notebook's LSTM, MiniLM folders saved before the head existed) serves
                  task_scores = task_probs: they sum to 1, so no query is compound (barring an exact
                  0.5/0.5 tie).
The QueryTokenizer folder the graph expects is written beside it.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from minivlm.errors import ExportParityError
from minivlm.router.loading import LoadedRouter, has_scores_head, load_router, router_logits
from minivlm.router.onnx_runtime import OnnxRouter, tokenizer_dir_for
from vlm_client.protocol import ROUTER, ROUTER_INPUTS, ROUTER_OUTPUTS

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-4          # max |p_onnx - p_torch| over all probabilities
PARITY_BATCH_SIZES = (1, 4)
OPSET = 18
# Queries of different lengths, so batch 4 exercises padding and the dynamic sequence axis.
PARITY_QUERIES = ("describe this image", "detect all objects and give me their bounding boxes please",
                  "is it raining?", "what is the man in the red jacket holding in his left hand")
DYNAMIC_AXES = {**{t.name: {0: "batch", 1: "sequence"} for t in ROUTER_INPUTS},
                **{t.name: {0: "batch"} for t in ROUTER_OUTPUTS}}


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
class ExportReport:
    onnx_path: Path
    tokenizer_dir: Path
    kind: str
    temperature: float
    max_abs_diff: dict[int, float]     # batch size -> max |onnx - torch| over both outputs
    output_diffs: dict[str, dict[int, float]]   # output name -> batch size -> max |onnx - torch|
    has_scores_head: bool              # False: task_scores = task_probs
    tolerance: float = PARITY_TOLERANCE


def export_router(router: str | Path | LoadedRouter, onnx_path: str | Path, *,
                  tokenizer_dir: str | Path | None = None, temperature: float | None = None) -> ExportReport:
    """Export a MiniLM router folder, a notebook task_classifier.pt or a LoadedRouter; validate; write the
    tokenizer folder (default: `router_tokenizer/` beside the graph)."""
    loaded = router if isinstance(router, LoadedRouter) else load_router(router, temperature=temperature)
    temp = loaded.temperature if temperature is None else temperature
    module = CalibratedRouter(loaded.model, temp).eval()
    onnx_path = Path(onnx_path)
    tokenizer_dir = Path(tokenizer_dir or tokenizer_dir_for(onnx_path))
    _export_graph(module, loaded.tokenizer(list(PARITY_QUERIES[:2])), onnx_path)
    check_graph_spec(onnx_path)
    loaded.tokenizer.save(tokenizer_dir)
    diffs = validate_parity(module, OnnxRouter(onnx_path, tokenizer_dir))
    worst = {b: max(d[b] for d in diffs.values()) for b in PARITY_BATCH_SIZES}
    log.info("exported %s router to %s (T=%.3f, max diff %s)", loaded.kind, onnx_path, temp, diffs)
    return ExportReport(onnx_path, tokenizer_dir, loaded.kind, float(temp), worst, diffs, has_scores_head(loaded.model))


def _export_graph(module: nn.Module, sample: tuple[np.ndarray, np.ndarray], onnx_path: Path) -> None:
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(torch.from_numpy(a) for a in sample)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")   # exporter deprecation chatter; correctness is checked below
        # The torch.export-based exporter keeps every forward() argument as a graph input, so the LSTM's
        # unused attention_mask stays declared (the legacy TorchScript exporter silently drops it).
        torch.onnx.export(module, args, str(onnx_path), input_names=[t.name for t in ROUTER_INPUTS],
                          output_names=[t.name for t in ROUTER_OUTPUTS], dynamic_axes=DYNAMIC_AXES,
                          opset_version=OPSET, dynamo=True, external_data=False, verbose=False)


def check_graph_spec(onnx_path: Path) -> None:
    """The graph's inputs/outputs must be exactly the protocol's router tensors, in order: inputs INT64
    [batch, sequence] with both axes dynamic, outputs FP32 [batch, 3] with a dynamic batch axis."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    got = ([i.name for i in graph.input], [o.name for o in graph.output])
    want = ([t.name for t in ROUTER_INPUTS], [t.name for t in ROUTER_OUTPUTS])
    if got != want:
        raise ExportParityError(f"{ROUTER} graph {onnx_path}: inputs/outputs {got}, expected {want}")
    expected = [(i, onnx.TensorProto.INT64, [str, str]) for i in graph.input]
    expected += [(o, onnx.TensorProto.FLOAT, [str, t.dims[0]]) for o, t in zip(graph.output, ROUTER_OUTPUTS)]
    for value, elem_type, dims in expected:
        got_dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        shape_ok = len(got_dims) == len(dims) and all(
            isinstance(g, str) if w is str else g == w for g, w in zip(got_dims, dims))
        if value.type.tensor_type.elem_type != elem_type or not shape_ok:
            raise ExportParityError(f"{ROUTER} graph {onnx_path}: {value.name} has element type "
                                    f"{value.type.tensor_type.elem_type} and shape {got_dims}, expected "
                                    f"{onnx.TensorProto.DataType.Name(elem_type)} with dims {dims} (str = dynamic)")


@torch.no_grad()
def validate_parity(module: nn.Module, onnx_router: OnnxRouter, *, seed: int = 0) -> dict[str, dict[int, float]]:
    """Max |onnx - torch| per output and batch size over real tokenized queries and random token ids; random
    ids give less saturated probabilities, so a logit-level mismatch cannot hide behind p = 1.0."""
    names = [t.name for t in ROUTER_OUTPUTS]
    diffs, rng = {name: {} for name in names}, np.random.default_rng(seed)
    for batch in PARITY_BATCH_SIZES:
        for ids, mask in (onnx_router.tokenizer(list(PARITY_QUERIES[:batch])), _random_inputs(onnx_router, batch, rng)):
            expected = [t.numpy() for t in module(torch.from_numpy(ids), torch.from_numpy(mask))]
            for name, got, want in zip(names, onnx_router.run(ids, mask), expected):
                diffs[name][batch] = max(diffs[name].get(batch, 0.0), float(np.abs(got - want).max()))
        for name in names:
            if diffs[name][batch] > PARITY_TOLERANCE:
                raise ExportParityError(f"{ROUTER} graph {onnx_router.onnx_path}: batch {batch} max abs difference "
                                        f"{diffs[name][batch]:.3g} > tolerance {PARITY_TOLERANCE:g} in {name}")
    return diffs


def _random_inputs(onnx_router: OnnxRouter, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random ids at the tokenizer's padded length, with right padding of random lengths."""
    length = onnx_router.tokenizer(["x"])[0].shape[1] if onnx_router.tokenizer.spec.fixed_length else 12
    ids = rng.integers(0, onnx_router.tokenizer.vocab_size, size=(batch, length), dtype=np.int64)
    lengths = rng.integers(2, length + 1, size=(batch, 1))
    mask = (np.arange(length)[None, :] < lengths).astype(np.int64)            # (B, T)
    return np.where(mask == 1, ids, onnx_router.tokenizer.spec.pad_id), mask
