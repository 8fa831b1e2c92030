"""Run an exported router graph with onnxruntime (no torch): texts -> calibrated task probabilities and
multi-label task scores.

A graph exported before `task_scores` existed has only `task_probs`; its scores are the probabilities
(which sum to 1, so never compound), as for a router without a scores head.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minivlm.onnx_sessions import make_session  # the one ORT session factory (no torch)
from minivlm.routing.multilabel import RouterOutput
from minivlm.routing.tokenization import QueryTokenizer
from vlm_client.protocol import ATTENTION_MASK, INPUT_IDS, TASK_PROBS, TASK_SCORES, TASKS

TOKENIZER_DIRNAME = "router_tokenizer"   # written beside the .onnx file by export_router


def tokenizer_dir_for(onnx_path: str | Path) -> Path:
    return Path(onnx_path).parent / TOKENIZER_DIRNAME


class OnnxRouter:
    def __init__(self, onnx_path: str | Path, tokenizer_dir: str | Path | None = None, *,
                 intra_op_threads: int = 1):
        self.onnx_path = Path(onnx_path)
        self.session = make_session(onnx_path, intra_op_threads=intra_op_threads)
        self.tokenizer = QueryTokenizer.load(tokenizer_dir or tokenizer_dir_for(onnx_path))
        outputs = [o.name for o in self.session.get_outputs()]
        self.has_scores = TASK_SCORES.name in outputs
        self._outputs = [TASK_PROBS.name, TASK_SCORES.name] if self.has_scores else [TASK_PROBS.name]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> RouterOutput:
        feeds = {INPUT_IDS.name: input_ids, ATTENTION_MASK.name: attention_mask}
        results = self.session.run(self._outputs, feeds)
        return RouterOutput(results[0], results[1] if self.has_scores else results[0].copy())

    def predict(self, texts: list[str], *, batch_size: int = 64) -> RouterOutput:
        chunks = [self.run(*self.tokenizer(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        empty = np.zeros((0, len(TASKS)), np.float32)
        return RouterOutput(np.concatenate([empty] + [c.probs for c in chunks]),
                            np.concatenate([empty] + [c.scores for c in chunks]))

    def probs(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        return self.predict(texts, batch_size=batch_size).probs

    def scores(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        return self.predict(texts, batch_size=batch_size).scores
