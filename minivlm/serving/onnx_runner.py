"""ONNX Runtime sessions for the router and vision encoder when the server has no onnxruntime backend.

The pip-installed tritonserver (nvidia-pytriton wheel) ships only the python backend, so ONNX graphs run
here inside python-backend models. Requests of equal shapes are stacked into one ORT call; requests of
other shapes (router queries of other lengths) run as their own group. No torch import: these stubs stay small.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort

Feeds = Mapping[str, np.ndarray]


def make_session(path: str | Path, *, intra_op_threads: int = 1, providers: Sequence[str] | None = None
                 ) -> ort.InferenceSession:
    """Several stubs share 2 cores: fixed thread counts and no spinning keep them from starving each other."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=list(providers or ["CPUExecutionProvider"]))


class OnnxRunner:
    def __init__(self, session: ort.InferenceSession):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    def warm_up(self) -> None:
        """One call at load time: ORT allocates and picks kernels lazily, which the first request would pay."""
        dtypes = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
        feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtype=dtypes[i.type])
                 for i in self.session.get_inputs()}
        self.session.run(self.output_names, feeds)

    def run(self, requests: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
        """One feed dict per request (each with a leading batch axis) -> one output dict per request."""
        results: list[dict[str, np.ndarray]] = [{} for _ in requests]
        for rows in self._groups(requests).values():
            feeds = {name: np.concatenate([requests[r][name] for r in rows]) for name in self.input_names}
            outputs = self.session.run(self.output_names, feeds)
            offsets = np.cumsum([0] + [len(requests[r][self.input_names[0]]) for r in rows])
            for i, row in enumerate(rows):
                results[row] = {n: o[offsets[i]:offsets[i + 1]] for n, o in zip(self.output_names, outputs)}
        return results

    def _groups(self, requests: Sequence[Feeds]) -> dict[tuple, list[int]]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for row, feeds in enumerate(requests):
            groups[tuple((name, feeds[name].shape[1:], feeds[name].dtype.str) for name in self.input_names)].append(row)
        return groups


def python_backend_model(pb_utils) -> type:
    """The TritonPythonModel class for a `model.onnx` beside its model.py (pb_utils passed in, see triton_glue)."""
    from .triton_glue import model_parameters, respond_each

    class OnnxPythonModel:
        def initialize(self, args):
            self.name = json.loads(args["model_config"])["name"]
            threads = int(model_parameters(args).get("intra_op_threads", "1"))
            path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
            self.runner = OnnxRunner(make_session(path, intra_op_threads=threads))
            self.runner.warm_up()

        def execute(self, requests):
            feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.runner.input_names}
                     for r in requests]
            try:
                results = iter(self.runner.run(feeds))
            except Exception as error:  # shapes are fixed by the config, so this is a server-side fault
                message = f"{self.name}: internal error: {type(error).__name__}: {error}"
                return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in requests]
            return respond_each(pb_utils, self.name, requests, lambda _: self._response(next(results)))

        @staticmethod
        def _response(outputs):
            return pb_utils.InferenceResponse([pb_utils.Tensor(n, value) for n, value in outputs.items()])

    return OnnxPythonModel
