"""Latency of the exported router graph: one query at a time through onnxruntime, pinned threads."""
from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path

import numpy as np

from minivlm.routing.onnx_runtime import OnnxRouter
from vlm_tools.router_training.data import HELDOUT_PATH, load_examples


@dataclass(frozen=True)
class BenchResult:
    onnx_path: str
    n_queries: int
    intra_op_threads: int
    graph_ms_p50: float           # onnxruntime run only, batch 1
    graph_ms_p90: float
    graph_ms_mean: float
    tokenize_ms_p50: float        # QueryTokenizer on one query


def _timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return (time.perf_counter() - start) * 1e3, result


def benchmark_router(onnx_path: str | Path, tokenizer_dir: str | Path | None = None, *, n_queries: int = 200,
                     warmup: int = 20, intra_op_threads: int = 1) -> BenchResult:
    router = OnnxRouter(onnx_path, tokenizer_dir, intra_op_threads=intra_op_threads)
    queries = list(islice(cycle(load_examples(HELDOUT_PATH).texts), warmup + n_queries))
    token_ms, graph_ms = [], []
    for i, query in enumerate(queries):
        t_tok, (ids, mask) = _timed(router.tokenizer, [query])
        t_run, _ = _timed(router.run, ids, mask)
        if i >= warmup:                       # first runs pay for allocations and cache warm-up
            token_ms.append(t_tok)
            graph_ms.append(t_run)
    g = np.asarray(graph_ms)
    return BenchResult(str(onnx_path), n_queries, intra_op_threads, float(np.percentile(g, 50)),
                       float(np.percentile(g, 90)), float(g.mean()), float(np.median(token_ms)))


def format_bench(result: BenchResult) -> str:
    return (f"{result.onnx_path}: batch 1, {result.intra_op_threads} intra-op thread(s), {result.n_queries} queries\n"
            f"  graph  p50 {result.graph_ms_p50:.3f} ms   p90 {result.graph_ms_p90:.3f} ms   "
            f"mean {result.graph_ms_mean:.3f} ms\n  tokenize p50 {result.tokenize_ms_p50:.3f} ms")

