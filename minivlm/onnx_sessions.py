"""ONNX Runtime sessions with deliberate thread settings: the one factory for serving, routing and export checks.

Several python-backend stubs share 2 cores: fixed thread counts and no spinning keep them from starving each
other. No torch import: the stubs that run ONNX graphs stay small.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import onnxruntime as ort

CUDA_PROVIDER = "CUDAExecutionProvider"     # in onnxruntime-gpu builds only (not the pip server's onnxruntime)


def make_session(path: str | Path, *, intra_op_threads: int = 1, providers: Sequence[str | tuple] | None = None
                 ) -> ort.InferenceSession:
    """`providers`: ONNX Runtime's list, names or (name, options) pairs; the CPU's by default."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=list(providers or ["CPUExecutionProvider"]))
