"""Export PyTorch modules to ONNX graphs declared by a spec, and check each against PyTorch with ORT.

Every exported graph has a `GraphSpec`: its Triton model name, input/output tensor names (from
`vlm_client.protocol`), dynamic axes and the largest absolute difference from PyTorch it may show.
`export_onnx` runs torch.onnx's dynamo exporter (torch.export based; in torch 2.13 it gives a smaller graph
than the TorchScript exporter, with fixed non-batch dims and a named batch dim on inputs and outputs), then
`onnx.checker`; `validate_onnx` runs ORT and PyTorch on the same seeded random inputs at several batch sizes
and raises `ExportParityError` naming the graph, batch size and max difference.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
import torch
from torch import nn
from vlm_client import protocol

from .config import IMAGE_SIZE
from .errors import ExportParityError
from .serving.onnx_runner import make_session   # one ORT session factory for export checks and serving
from .vision import VisionEncoder

__all__ = ["GraphSpec", "ExportReport", "VISION_ENCODER_SPEC", "export_onnx", "validate_onnx",
           "export_vision_encoder", "make_session"]

log = logging.getLogger(__name__)

OPSET = 18                       # the dynamo exporter's native opset; ORT 1.32 and Triton 2.51 support it
VALIDATION_BATCH_SIZES = (1, 4)
BATCH = "batch"

# fp32 ViT-base + projector: 12 layers of sums over up to 3072 products, then LayerNorm. ORT fuses attention,
# GELU and LayerNorm and sums in another order: measured max |ORT - PyTorch| was 3.5e-6 (tiny) and 4e-6 (full
# size, random weights) on outputs of magnitude ~1. Trained weights have larger activations, so allow 25x:
# 1e-4 is still far below what a real export bug (a wrong op, a baked-in batch size, stale weights) gives.
VISION_ENCODER_TOLERANCE = 1e-4

InputMaker = Callable[[int, torch.Generator], Mapping[str, torch.Tensor]]   # (batch size, generator) -> inputs


@dataclass(frozen=True)
class GraphSpec:
    name: str                                   # Triton model name, e.g. protocol.VISION_ENCODER
    input_names: tuple[str, ...]                # in the module's forward() argument order
    output_names: tuple[str, ...]               # in the order forward() returns them
    dynamic_axes: dict[str, dict[int, str]] = field(hash=False)   # tensor name -> {axis: dim name}
    tolerance: float                            # max absolute difference ORT vs PyTorch
    opset: int = OPSET


@dataclass(frozen=True)
class ExportReport:
    graph: str
    path: Path
    max_abs_diff: dict[int, float] = field(hash=False)   # batch size -> max |ORT - PyTorch| over all outputs
    file_size_bytes: int = 0
    export_s: float = 0.0


VISION_ENCODER_SPEC = GraphSpec(
    name=protocol.VISION_ENCODER,
    input_names=(protocol.PIXEL_VALUES.name,),
    output_names=(protocol.IMAGE_EMBEDS.name,),
    dynamic_axes={protocol.PIXEL_VALUES.name: {0: BATCH}, protocol.IMAGE_EMBEDS.name: {0: BATCH}},
    tolerance=VISION_ENCODER_TOLERANCE,
)


def export_onnx(spec: GraphSpec, module: nn.Module, example_inputs: Mapping[str, torch.Tensor],
                onnx_path: str | Path) -> Path:
    """Export `module` as one self-contained .onnx file (weights inside; fine below 2 GB) and check it."""
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(example_inputs[name] for name in spec.input_names)
    dims = {dim: torch.export.Dim(dim) for axes in spec.dynamic_axes.values() for dim in axes.values()}
    dynamic_shapes = tuple({axis: dims[dim] for axis, dim in spec.dynamic_axes.get(name, {}).items()} or None
                           for name in spec.input_names)
    log.info("%s: exporting with torch.onnx (dynamo, opset %d)", spec.name, spec.opset)
    module.eval()
    with torch.no_grad(), _quiet_loggers("onnxscript", "onnx_ir", "torch.onnx"):
        torch.onnx.export(module, args, str(onnx_path), dynamo=True, verbose=False, opset_version=spec.opset,
                          input_names=list(spec.input_names), output_names=list(spec.output_names),
                          dynamic_shapes=dynamic_shapes, external_data=False)
    log.info("%s: onnx.checker", spec.name)
    onnx.checker.check_model(str(onnx_path), full_check=True)
    check_graph_signature(spec, onnx.load(str(onnx_path), load_external_data=False))
    return onnx_path


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """The exporter's passes log every rewrite at INFO; keep only their warnings while exporting."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def check_graph_signature(spec: GraphSpec, model: onnx.ModelProto) -> None:
    """The graph's tensor names are the spec's, and every declared dynamic axis is symbolic."""
    for kind, declared, values in (("inputs", spec.input_names, model.graph.input),
                                   ("outputs", spec.output_names, model.graph.output)):
        found = tuple(value.name for value in values)
        if found != declared:
            raise ExportParityError(f"{spec.name}: graph {kind} are {found}; the spec declares {declared}")
        for value in values:
            dims = value.type.tensor_type.shape.dim
            for axis in spec.dynamic_axes.get(value.name, {}):
                if dims[axis].HasField("dim_value"):
                    raise ExportParityError(f"{spec.name}: {value.name} axis {axis} is fixed at "
                                            f"{dims[axis].dim_value}; the spec declares it dynamic")


def validate_onnx(spec: GraphSpec, torch_module: nn.Module, onnx_path: str | Path, make_inputs: InputMaker,
                  *, batch_sizes: Sequence[int] = VALIDATION_BATCH_SIZES, seed: int = 0,
                  intra_op_threads: int = 2) -> dict[int, float]:
    """ORT vs PyTorch on seeded random inputs per batch size -> {batch size: max abs difference}.

    `make_inputs(batch_size, generator)` returns a tensor per spec input name. Raises ExportParityError
    above `spec.tolerance`, or when an output's shape differs.
    """
    session = make_session(onnx_path, intra_op_threads=intra_op_threads)
    torch_module.eval()
    diffs: dict[int, float] = {}
    for batch_size in batch_sizes:
        inputs = make_inputs(batch_size, torch.Generator().manual_seed(seed + batch_size))
        expected = _torch_outputs(torch_module, [inputs[name] for name in spec.input_names])
        actual = session.run(list(spec.output_names), {name: inputs[name].numpy() for name in spec.input_names})
        diffs[batch_size] = max(_max_abs_diff(spec, batch_size, name, e, a)
                                for name, e, a in zip(spec.output_names, expected, actual))
        log.info("%s: batch %d: max abs difference %.3g (tolerance %.1g)", spec.name, batch_size,
                 diffs[batch_size], spec.tolerance)
        if not diffs[batch_size] <= spec.tolerance:      # `not <=` also catches NaN
            raise ExportParityError(f"{spec.name}: batch {batch_size}: ONNX Runtime differs from PyTorch by "
                                    f"max abs {diffs[batch_size]:.3g}, above the tolerance {spec.tolerance:.1g}")
    return diffs


def _torch_outputs(module: nn.Module, args: list[torch.Tensor]) -> list[np.ndarray]:
    with torch.no_grad():
        outputs = module(*args)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return [output.numpy() for output in outputs]


def _max_abs_diff(spec: GraphSpec, batch_size: int, name: str, expected: np.ndarray, actual: np.ndarray) -> float:
    if expected.shape != actual.shape:
        raise ExportParityError(f"{spec.name}: batch {batch_size}: output {name} has shape {actual.shape} "
                                f"in ONNX Runtime, {expected.shape} in PyTorch")
    return float(np.max(np.abs(expected.astype(np.float64) - actual.astype(np.float64)), initial=0.0))


def random_pixel_values(batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Normalized pixels lie in [-1, 1]; uniform noise there covers what preprocessing can produce."""
    pixels = torch.rand((batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), generator=generator) * 2 - 1
    return {protocol.PIXEL_VALUES.name: pixels}


def export_vision_encoder(vision: VisionEncoder, onnx_path: str | Path, *,
                          batch_sizes: Sequence[int] = VALIDATION_BATCH_SIZES, seed: int = 0) -> ExportReport:
    """ViT + projector as one graph: pixel_values (B, 3, 224, 224) -> image_embeds (B, N, D)."""
    spec = VISION_ENCODER_SPEC
    started = time.perf_counter()
    # An example batch of 2: a batch of 1 invites the exporter to specialize the batch dim.
    export_onnx(spec, vision, random_pixel_values(2, torch.Generator().manual_seed(seed)), onnx_path)
    export_s = time.perf_counter() - started
    log.info("%s: exported in %.1f s; validating at batch sizes %s", spec.name, export_s, list(batch_sizes))
    diffs = validate_onnx(spec, vision, onnx_path, random_pixel_values, batch_sizes=batch_sizes, seed=seed)
    return ExportReport(spec.name, Path(onnx_path), diffs, Path(onnx_path).stat().st_size, export_s)
