"""The router and vision encoder as python-backend models, for servers without an onnxruntime backend.

The pip-installed tritonserver (nvidia-pytriton wheel) ships only the python backend, so ONNX graphs run
here inside python-backend models. Requests of equal shapes are stacked into one ORT call; requests of
other shapes (router queries of other lengths) run as their own group. No torch import: these stubs stay small.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from minivlm.onnx_sessions import make_session

Feeds = Mapping[str, np.ndarray]


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
    from minivlm.serving.config import OnnxModelConfig
    from minivlm.serving.triton_glue import respond_each

    class OnnxPythonModel:
        def initialize(self, args):
            config = OnnxModelConfig.from_args(args)
            self.name = config.model
            path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
            self.runner = OnnxRunner(make_session(path, intra_op_threads=config.intra_op_threads))
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
