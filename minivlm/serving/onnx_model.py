"""The router and vision encoder as python-backend models, for servers without an onnxruntime backend.

The pip-installed tritonserver (nvidia-pytriton wheel) ships only the python backend, so ONNX graphs run
here inside python-backend models. Requests of equal shapes are stacked into one ORT call; requests of
other shapes (router queries of other lengths) run as their own group. No torch import on the CPU: these
stubs stay small.

A KIND_GPU instance (`vlm export --device gpu`) runs, in this order of preference (`make_runner`):
1. ONNX Runtime's CUDA provider, when the installed onnxruntime has one (onnxruntime-gpu);
2. the graph's torch.export program (model.pt2, which export writes beside the vision encoder's model.onnx for
   GPU repositories) on CUDA: the pip wheel's onnxruntime is a CPU build, and ViT is the ensemble's heaviest
   step after decoding;
3. ONNX Runtime on the CPU, logged as a warning: the router (MiniLM, a few ms per query on one core) has no
   program, and neither has a vision encoder on a machine where torch sees no CUDA.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from minivlm.onnx_sessions import CUDA_PROVIDER, make_session

log = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray]
TORCH_PROGRAM = "model.pt2"         # written by minivlm.export.vision_encoder.save_torch_program


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
            outputs = self._call(feeds)
            offsets = np.cumsum([0] + [len(requests[r][self.input_names[0]]) for r in rows])
            for i, row in enumerate(rows):
                results[row] = {n: o[offsets[i]:offsets[i + 1]] for n, o in zip(self.output_names, outputs)}
        return results

    def _call(self, feeds: Feeds) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)

    def _groups(self, requests: Sequence[Feeds]) -> dict[tuple, list[int]]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for row, feeds in enumerate(requests):
            groups[tuple((name, feeds[name].shape[1:], feeds[name].dtype.str) for name in self.input_names)].append(row)
        return groups


class TorchProgramRunner(OnnxRunner):
    """A torch.export program on a device, behind OnnxRunner's interface; the tensor names and the warm-up
    shapes come from the model.onnx it was exported with, so the two cannot disagree."""

    def __init__(self, program: Path, onnx_path: Path, device: str):
        import onnx
        import torch
        from torch.export.passes import move_to_device_pass

        graph = onnx.load(str(onnx_path), load_external_data=False).graph
        self.session = None
        self.input_names = [i.name for i in graph.input]
        self.output_names = [o.name for o in graph.output]
        self._warm_up_shapes = {i.name: [d.dim_value or 1 for d in i.type.tensor_type.shape.dim] for i in graph.input}
        self._torch, self.device = torch, torch.device(device)
        # fp32 means fp32: TF32 convolutions (cuDNN's default) would move the patch embedding ~1e-3 off the
        # ONNX graph's answer, for one convolution per image
        torch.backends.cudnn.allow_tf32 = False
        self.module = move_to_device_pass(torch.export.load(str(program)), self.device).module()

    def warm_up(self) -> None:
        self._call({name: np.zeros(shape, dtype=np.float32) for name, shape in self._warm_up_shapes.items()})

    def _call(self, feeds: Feeds) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            outputs = self.module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device)
                                    for n in self.input_names))
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        return [o.cpu().numpy() for o in outputs]


def cuda_available() -> bool:
    """Whether torch sees a GPU; imports torch only when asked (GPU instances)."""
    import torch

    return torch.cuda.is_available()


def make_runner(model_dir: Path, *, intra_op_threads: int, gpu_device: int | None = None,
                ort_providers: Sequence[str] | None = None, torch_cuda: bool | None = None) -> OnnxRunner:
    """The runner for `model_dir`'s model.onnx on a CPU instance (gpu_device None) or a GPU instance (see the
    module docstring). `ort_providers` and `torch_cuda`: what this machine has (looked up when None)."""
    onnx_path = Path(model_dir) / "model.onnx"
    if gpu_device is None:
        return OnnxRunner(make_session(onnx_path, intra_op_threads=intra_op_threads))
    providers = ort.get_available_providers() if ort_providers is None else ort_providers
    if CUDA_PROVIDER in providers:
        return OnnxRunner(make_session(onnx_path, intra_op_threads=intra_op_threads,
                                       providers=[(CUDA_PROVIDER, {"device_id": gpu_device}), "CPUExecutionProvider"]))
    program = Path(model_dir) / TORCH_PROGRAM
    if program.exists() and (cuda_available() if torch_cuda is None else torch_cuda):
        log.info("%s: onnxruntime has no CUDA provider; running %s on cuda:%d", model_dir, program.name, gpu_device)
        return TorchProgramRunner(program, onnx_path, f"cuda:{gpu_device}")
    log.warning("%s: a GPU instance, but onnxruntime has no CUDA provider and there is no %s to run on CUDA: "
                "running model.onnx on the CPU", model_dir, TORCH_PROGRAM)
    return OnnxRunner(make_session(onnx_path, intra_op_threads=intra_op_threads))


def python_backend_model(pb_utils) -> type:
    """The TritonPythonModel class for a `model.onnx` beside its model.py (pb_utils passed in, see triton_glue)."""
    from minivlm.serving.config import OnnxModelConfig
    from minivlm.serving.triton_glue import respond_each

    class OnnxPythonModel:
        def initialize(self, args):
            config = OnnxModelConfig.from_args(args)
            self.name = config.model
            gpu = int(args["model_instance_device_id"]) if args["model_instance_kind"] == "GPU" else None
            self.runner = make_runner(Path(args["model_repository"]) / args["model_version"],
                                      intra_op_threads=config.intra_op_threads, gpu_device=gpu)
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
