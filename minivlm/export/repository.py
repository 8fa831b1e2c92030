"""Build a servable Triton model repository from the notebook's checkpoint folder.

The checked-in `model_repository/` holds every config.pbtxt and model.py; this copies it and fills in the
build outputs: vision_encoder/1/model.onnx, router/1/model.onnx, the router's tokenizer for preprocess and
query_preprocess, and the language model + tokenizer for generator_engine (which `generator` forwards to).
One switch picks how ONNX graphs run: `python` (ONNX Runtime inside python-backend models: the pip-installed
server) or `onnxruntime` (Triton's native backend: the NGC image); another picks CPU or GPU instances.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tqdm import tqdm
from tritonclient.grpc import model_config_pb2

from minivlm.errors import CheckpointError
from minivlm.model.checkpoint import ROUTER_FILE, TOKENIZER_DIR, load_vlm
from minivlm.routing.minilm import SHIPPED_ROUTER
from minivlm.serving.config import DECODER_PRECISION_CHOICES
from minivlm.serving.query_step import TOKENIZER_DIR as QUERY_TOKENIZER_DIR
from vlm_client import protocol

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "model_repository"
ONNX_BACKENDS = ("python", "onnxruntime")
DEVICES = ("cpu", "gpu")
ONNX_MODELS = (protocol.ROUTER, protocol.VISION_ENCODER)
TOKENIZING_MODELS = (protocol.PREPROCESS, protocol.QUERY_PREPROCESS)   # each gets the router's tokenizer
NOTEBOOK_ROUTER = ("notebook", "lstm")
MANIFEST = "build_manifest.json"
_NOT_COPIED = ("__pycache__", ".gitkeep")      # template files and folders a built repository lacks


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    checkpoint_dir: Path
    output: Path
    vision_model: str | None = None       # hub name or local folder; default: the checkpoint's config
    language_model: str | None = None
    # "minilm": the MiniLM router shipped in minivlm/routing/minilm_router/ (the best one); "notebook" (or its
    # older name "lstm"): the checkpoint's task_classifier.pt; else a MiniLM router folder (vlm router-train)
    router: str = "minilm"
    onnx_backend: str = "python"
    device: str = "cpu"
    # "auto": fp32 on the CPU, bf16 on the GPU; "int8" (CPU) / "bf16": faster, opt-in accuracy cost
    # (docs/benchmarks.md, docs/gpu.md)
    decoder_precision: str = "auto"

    def __post_init__(self):
        if self.onnx_backend not in ONNX_BACKENDS:
            raise ValueError(f"onnx_backend must be one of {ONNX_BACKENDS}, got {self.onnx_backend!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.decoder_precision not in DECODER_PRECISION_CHOICES:
            raise ValueError(f"decoder_precision must be one of {DECODER_PRECISION_CHOICES}, "
                             f"got {self.decoder_precision!r}")
        if self.device == "gpu" and self.decoder_precision == "int8":
            raise ValueError("decoder_precision 'int8' runs only on the CPU fast decoder (fbgemm); a GPU "
                             "generator_engine takes fp32 or bf16")


@dataclass
class BuildReport:
    output: str
    onnx_backend: str
    device: str
    router: str
    decoder_precision: str = "auto"
    template: str = ""                    # template_fingerprint() of the template it was built from
    max_abs_diff: dict[str, dict[int, float]] = field(default_factory=dict)


def build_repository(options: BuildOptions) -> BuildReport:
    from minivlm.export.vision_encoder import export_vision_encoder, save_torch_program
    from minivlm.serving.onnx_model import TORCH_PROGRAM
    from minivlm.model.artifacts import write_generator_artifacts

    output = Path(options.output)
    check_replaceable(output)
    staging = output.with_name(f".{output.name}.building-{os.getpid()}")   # beside it: same file system
    shutil.rmtree(staging, ignore_errors=True)
    report = BuildReport(str(output), options.onnx_backend, options.device, options.router,
                         options.decoder_precision, template_fingerprint())
    steps = tqdm(total=5, desc="export", unit="step")
    try:
        with _step(steps, "load the checkpoint"):
            vlm = load_vlm(options.checkpoint_dir, vision_model=options.vision_model,
                           language_model=options.language_model)
        with _step(steps, "copy the model repository template"):
            copy_template(staging)
        with _step(steps, f"export {protocol.VISION_ENCODER}"):
            vision = export_vision_encoder(vlm.vision, staging / protocol.VISION_ENCODER / "1" / "model.onnx")
            report.max_abs_diff[protocol.VISION_ENCODER] = vision.max_abs_diff
            if options.device == "gpu" and options.onnx_backend == "python":     # see save_torch_program
                save_torch_program(vlm.vision, staging / protocol.VISION_ENCODER / "1" / TORCH_PROGRAM)
        with _step(steps, f"export {protocol.ROUTER}"):
            report.max_abs_diff[protocol.ROUTER] = _export_router(options, staging)
        with _step(steps, f"write {protocol.GENERATOR_ENGINE}'s weights and configure the repository"):
            write_generator_artifacts(vlm, staging / protocol.GENERATOR_ENGINE / "1")
            apply_variant(staging, onnx_backend=options.onnx_backend, device=options.device)
            set_model_parameter(staging, protocol.GENERATOR_ENGINE, "decoder_precision", options.decoder_precision)
            (staging / MANIFEST).write_text(json.dumps(asdict(report), indent=2))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        steps.close()
    _move_into_place(staging, output)
    return report


class ExportStepError(RuntimeError):
    """A step of `build_repository` failed; `step` names it, the cause is chained. Nothing was replaced."""

    def __init__(self, step: str, cause: BaseException):
        super().__init__(f"export failed at step '{step}': {type(cause).__name__}: {cause} "
                         f"(nothing was written at the output)")
        self.step = step


@contextlib.contextmanager
def _step(steps: tqdm, name: str):
    steps.set_postfix_str(name)
    try:
        yield
    except Exception as error:
        raise ExportStepError(name, error) from error
    steps.update()


def check_replaceable(output: Path) -> None:
    """Only an empty folder, or a repository this command built, may be replaced: checked before any work."""
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / MANIFEST).exists())):
        raise FileExistsError(f"{output} exists and is not a repository this command built; refusing to overwrite")


def _move_into_place(staging: Path, output: Path) -> None:
    """The finished repository replaces the old one with two renames; the old one is removed last."""
    retired = output.with_name(f".{output.name}.replaced-{os.getpid()}")
    if output.exists():
        output.rename(retired)
    staging.rename(output)
    shutil.rmtree(retired, ignore_errors=True)


def copy_template(output: Path) -> None:
    if not TEMPLATE_DIR.is_dir():
        raise FileNotFoundError(f"model repository template not found at {TEMPLATE_DIR}")
    check_replaceable(output)
    if output.exists():
        shutil.rmtree(output)
    shutil.copytree(TEMPLATE_DIR, output, ignore=shutil.ignore_patterns(*_NOT_COPIED))


def _export_router(options: BuildOptions, output: Path) -> dict[int, float]:
    from minivlm.export.router import export_router
    from minivlm.routing.loading import load_router

    lstm = options.router in NOTEBOOK_ROUTER
    source = options.checkpoint_dir / ROUTER_FILE if lstm else SHIPPED_ROUTER if options.router == "minilm" \
        else Path(options.router)
    if not source.exists():
        raise CheckpointError(f"router source {source} does not exist")
    # The notebook's LSTM reads the language model tokenizer's ids; a MiniLM folder brings its own.
    router = load_router(source, tokenizer_dir=options.checkpoint_dir / TOKENIZER_DIR if lstm else None)
    first, *others = (output / name / "1" / QUERY_TOKENIZER_DIR for name in TOKENIZING_MODELS)
    report = export_router(router, output / protocol.ROUTER / "1" / "model.onnx", tokenizer_dir=first)
    for tokenizer_dir in others:
        shutil.copytree(first, tokenizer_dir)
    return report.max_abs_diff


def template_fingerprint() -> str:
    """Changes whenever a file of the model_repository template does. A repository built from another
    template holds model.py files that may call code this version no longer has, so it is rebuilt, not reused."""
    digest = hashlib.sha256()
    for path in sorted(p for p in TEMPLATE_DIR.rglob("*")
                       if p.is_file() and not set(p.relative_to(TEMPLATE_DIR).parts) & set(_NOT_COPIED)):
        digest.update(str(path.relative_to(TEMPLATE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def built_from_this_template(repository: Path) -> bool:
    """The repository's manifest names the current template (see `template_fingerprint`)."""
    try:
        return json.loads((Path(repository) / MANIFEST).read_text()).get("template") == template_fingerprint()
    except (OSError, ValueError):
        return False


def set_model_parameter(repository: Path, model: str, key: str, value: str) -> None:
    """Rewrite one string parameter of a model's config.pbtxt in a built repository."""
    path = Path(repository) / model / "config.pbtxt"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    config.parameters[key].string_value = value
    path.write_text(text_format.MessageToString(config))


def apply_variant(output: Path, *, onnx_backend: str, device: str) -> None:
    """Swap in the native onnxruntime configs and/or GPU instance groups (the generator's forwarders pass
    tensors through and stay on the CPU)."""
    for name in ONNX_MODELS:
        native = output / name / "config.onnxruntime.pbtxt"
        if onnx_backend == "onnxruntime":
            native.replace(output / name / "config.pbtxt")
            (output / name / "1" / "model.py").unlink()
        else:
            native.unlink()
    kind = model_config_pb2.ModelInstanceGroup.KIND_GPU if device == "gpu" else \
        model_config_pb2.ModelInstanceGroup.KIND_CPU
    for name in ONNX_MODELS + (protocol.GENERATOR_ENGINE,):
        path = output / name / "config.pbtxt"
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        for group in config.instance_group:
            group.kind = kind
        path.write_text(text_format.MessageToString(config))
