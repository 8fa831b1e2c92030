"""One export and validation path for every ONNX graph: a declared `GraphSpec`, export, checks, parity.

`export_graph` runs torch.onnx's dynamo exporter (torch.export based; in torch 2.13 it gives a smaller graph
than the TorchScript exporter, with fixed non-batch dims and named dynamic dims), `onnx.checker`, then
`check_graph` (the graph's tensors are the spec's: names in order, element types, dynamic and fixed dims),
then `validate_onnx`: ONNX Runtime and PyTorch on the same seeded inputs at several batch sizes, raising
`ExportParityError` that names the graph, batch size, output and max difference. The specs themselves are
in `minivlm.export.specs`.
"""
from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from minivlm.errors import ExportParityError
from minivlm.onnx_sessions import make_session
from vlm_client.protocol import Tensor

log = logging.getLogger(__name__)

OPSET = 18                       # the dynamo exporter's native opset; ORT 1.32 and Triton 2.51 support it
VALIDATION_BATCH_SIZES = (1, 4)
ELEMENT_TYPES = {"FP32": onnx.TensorProto.FLOAT, "INT64": onnx.TensorProto.INT64, "INT32": onnx.TensorProto.INT32}

Feeds = Mapping[str, torch.Tensor]
# (batch size, generator) -> input sets of that batch size, each a tensor per spec input name
InputMaker = Callable[[int, torch.Generator], Sequence[Feeds]]
OutputDiffs = dict[str, dict[int, float]]         # output name -> batch size -> max |ORT - PyTorch|


@dataclass(frozen=True)
class GraphSpec:
    name: str                                   # Triton model name, e.g. protocol.VISION_ENCODER
    inputs: tuple[Tensor, ...]                  # protocol tensors, in the module's forward() argument order
    outputs: tuple[Tensor, ...]                 # in the order forward() returns them
    dynamic_axes: dict[str, dict[int, str]] = field(hash=False)   # tensor name -> {axis: dim name}
    tolerance: float                            # max absolute difference ORT vs PyTorch
    opset: int = OPSET

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


@dataclass(frozen=True)
class ExportReport:
    graph: str
    path: Path
    output_diffs: OutputDiffs = field(hash=False)
    file_size_bytes: int = 0
    export_s: float = 0.0

    @property
    def max_abs_diff(self) -> dict[int, float]:
        """Batch size -> the largest difference over all outputs."""
        batches = next(iter(self.output_diffs.values()))
        return {b: max(diffs[b] for diffs in self.output_diffs.values()) for b in batches}


def export_graph(spec: GraphSpec, module: nn.Module, make_inputs: InputMaker, onnx_path: str | Path, *,
                 batch_sizes: Sequence[int] = VALIDATION_BATCH_SIZES, seed: int = 0) -> ExportReport:
    """Export, check and validate one graph; the .onnx file holds its weights (fine below 2 GB)."""
    started = time.perf_counter()
    # An example batch of 2: a batch of 1 invites the exporter to specialize the batch dim.
    export_onnx(spec, module, make_inputs(2, torch.Generator().manual_seed(seed))[0], onnx_path)
    export_s = time.perf_counter() - started
    log.info("%s: exported in %.1f s; validating at batch sizes %s", spec.name, export_s, list(batch_sizes))
    diffs = validate_onnx(spec, module, onnx_path, make_inputs, batch_sizes=batch_sizes, seed=seed)
    return ExportReport(spec.name, Path(onnx_path), diffs, Path(onnx_path).stat().st_size, export_s)


def export_onnx(spec: GraphSpec, module: nn.Module, example_inputs: Feeds, onnx_path: str | Path) -> Path:
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    args = tuple(example_inputs[name] for name in spec.input_names)
    dims = {dim: torch.export.Dim(dim) for axes in spec.dynamic_axes.values() for dim in axes.values()}
    dynamic_shapes = tuple({axis: dims[dim] for axis, dim in spec.dynamic_axes.get(name, {}).items()} or None
                           for name in spec.input_names)
    log.info("%s: exporting with torch.onnx (dynamo, opset %d)", spec.name, spec.opset)
    module.eval()
    # The torch.export-based exporter keeps every forward() argument as a graph input, so an argument the
    # module ignores (the LSTM router's attention_mask) stays declared, as the spec wants.
    with torch.no_grad(), _quiet_loggers("onnxscript", "onnx_ir", "torch.onnx"), warnings.catch_warnings():
        # Expected, not faults: inputs sharing a dim name ("batch") make the exporter say so once per input;
        # torch.export's pytree internals warn about their own deprecations.
        warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*treespec")
        torch.onnx.export(module, args, str(onnx_path), dynamo=True, verbose=False, opset_version=spec.opset,
                          input_names=list(spec.input_names), output_names=list(spec.output_names),
                          dynamic_shapes=dynamic_shapes, external_data=False)
    onnx.checker.check_model(str(onnx_path), full_check=True)
    check_graph(spec, onnx.load(str(onnx_path), load_external_data=False))
    return onnx_path


# Warns once per torchvision operator it cannot register ("torchvision is not installed"): none of our graphs
# uses one.
_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """The exporter's passes log every rewrite at INFO; keep only their warnings while exporting."""
    loggers = [logging.getLogger(name) for name in (*names, _REGISTRATION_LOGGER)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        floor = logging.ERROR if logger.name == _REGISTRATION_LOGGER else logging.WARNING
        logger.setLevel(max(logger.getEffectiveLevel(), floor))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def check_graph(spec: GraphSpec, model: onnx.ModelProto) -> None:
    """The graph's inputs and outputs are the spec's tensors: names in order, element types, a symbolic dim
    for every declared dynamic axis, and the protocol's fixed dims (-1 there: any size)."""
    for kind, declared, values in (("inputs", spec.inputs, model.graph.input),
                                   ("outputs", spec.outputs, model.graph.output)):
        found = tuple(value.name for value in values)
        if found != tuple(t.name for t in declared):
            raise ExportParityError(f"{spec.name} graph: {kind} are {found}; the spec declares "
                                    f"{tuple(t.name for t in declared)}")
        for tensor, value in zip(declared, values):
            _check_tensor(spec, tensor, value)


def _check_tensor(spec: GraphSpec, tensor: Tensor, value: onnx.ValueInfoProto) -> None:
    elem_type = value.type.tensor_type.elem_type
    if elem_type != ELEMENT_TYPES[tensor.dtype]:
        raise ExportParityError(f"{spec.name} graph: {tensor.name} has element type "
                                f"{onnx.TensorProto.DataType.Name(elem_type)}; the spec declares {tensor.dtype}")
    dims = value.type.tensor_type.shape.dim
    if len(dims) != len(tensor.dims) + 1:
        raise ExportParityError(f"{spec.name} graph: {tensor.name} has {len(dims)} dims; the spec declares "
                                f"{len(tensor.dims) + 1} (batch + {tensor.dims})")
    dynamic = spec.dynamic_axes.get(tensor.name, {})
    for axis, dim in enumerate(dims):
        if axis in dynamic and dim.HasField("dim_value"):
            raise ExportParityError(f"{spec.name} graph: {tensor.name} axis {axis} is fixed at {dim.dim_value}; "
                                    f"the spec declares it dynamic")
        expected = tensor.dims[axis - 1] if axis else -1
        if expected != -1 and dim.dim_value != expected:
            raise ExportParityError(f"{spec.name} graph: {tensor.name} axis {axis} is "
                                    f"{dim.dim_param or dim.dim_value}; the spec declares {expected}")


def validate_onnx(spec: GraphSpec, torch_module: nn.Module, onnx_path: str | Path, make_inputs: InputMaker,
                  *, batch_sizes: Sequence[int] = VALIDATION_BATCH_SIZES, seed: int = 0,
                  intra_op_threads: int = 2) -> OutputDiffs:
    """ORT vs PyTorch on every input set of every batch size -> max abs difference per output and batch size.
    Raises ExportParityError above `spec.tolerance`, or when an output's shape differs."""
    session = make_session(onnx_path, intra_op_threads=intra_op_threads)
    torch_module.eval()
    diffs: OutputDiffs = {name: {} for name in spec.output_names}
    for batch_size in batch_sizes:
        for inputs in make_inputs(batch_size, torch.Generator().manual_seed(seed + batch_size)):
            expected = _torch_outputs(torch_module, [inputs[name] for name in spec.input_names])
            actual = session.run(list(spec.output_names), {n: inputs[n].numpy() for n in spec.input_names})
            for name, e, a in zip(spec.output_names, expected, actual):
                diff = _max_abs_diff(spec, batch_size, name, e, a)
                diffs[name][batch_size] = max(diffs[name].get(batch_size, 0.0), diff)
        for name in spec.output_names:
            diff = diffs[name][batch_size]
            log.info("%s: batch %d: %s max abs difference %.3g (tolerance %.1g)", spec.name, batch_size, name,
                     diff, spec.tolerance)
            if not diff <= spec.tolerance:      # `not <=` also catches NaN
                raise ExportParityError(f"{spec.name} graph {onnx_path}: batch {batch_size} max abs difference "
                                        f"{diff:.3g} in {name}, above the tolerance {spec.tolerance:g}")
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
