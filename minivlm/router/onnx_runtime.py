"""Run an exported router graph with onnxruntime (no torch): texts -> calibrated task probabilities."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from minivlm.router.tokenization import QueryTokenizer
from vlm_client.protocol import ATTENTION_MASK, INPUT_IDS, TASK_PROBS

TOKENIZER_DIRNAME = "router_tokenizer"   # written beside the .onnx file by export_router


def tokenizer_dir_for(onnx_path: str | Path) -> Path:
    return Path(onnx_path).parent / TOKENIZER_DIRNAME


def make_session(onnx_path: str | Path, *, intra_op_threads: int = 1) -> ort.InferenceSession:
    """Several Triton stubs share 2 cores: pin the thread count and do not spin idle threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


class OnnxRouter:
    def __init__(self, onnx_path: str | Path, tokenizer_dir: str | Path | None = None, *,
                 intra_op_threads: int = 1):
        self.onnx_path = Path(onnx_path)
        self.session = make_session(onnx_path, intra_op_threads=intra_op_threads)
        self.tokenizer = QueryTokenizer.load(tokenizer_dir or tokenizer_dir_for(onnx_path))

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {INPUT_IDS.name: input_ids, ATTENTION_MASK.name: attention_mask}
        return self.session.run([TASK_PROBS.name], feeds)[0]

    def probs(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        chunks = [self.run(*self.tokenizer(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, 3), np.float32)
