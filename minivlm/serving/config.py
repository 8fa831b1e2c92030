"""One frozen config per Triton python model, parsed once from its config.pbtxt `parameters` at load.

The defaults live here and nowhere else: a parameter a config.pbtxt leaves out gets the value below, and the
checked-in config.pbtxt files state these same values (a test keeps them equal). A key no field names is an
error at load, naming the model, the key and the keys it knows: a typo never silently falls back.
No torch: the thin forwarding and ONNX models import this too.
"""
from __future__ import annotations

import itertools
import json
import math
import typing
from dataclasses import dataclass, fields
from typing import ClassVar, Mapping

from vlm_client import protocol


@dataclass(frozen=True)
class TaskDefaults:
    """A task's sampling when the request sets nothing."""
    max_new_tokens: int
    temperature: float    # 0 means greedy
    top_p: float = 1.0


# The notebook's generation settings per task.
NOTEBOOK_TASK_DEFAULTS = {
    "caption": TaskDefaults(max_new_tokens=40, temperature=0.7),
    "od": TaskDefaults(max_new_tokens=150, temperature=0.3),
    "vqa": TaskDefaults(max_new_tokens=10, temperature=0.0),
}
BATCHING_MODES = ("continuous", "continuous_inline", "static")
DECODER_PRECISIONS = ("fp32", "bf16", "int8")     # the decoder's weight formats (minivlm/decoding/device.py)
# generator_engine's decoder_precision also takes "auto": fp32 on the CPU, bf16 on a GPU instance
DECODER_PRECISION_CHOICES = ("auto", *DECODER_PRECISIONS)
MAX_NEW_TOKENS_LIMIT = 512
MAX_TEMPERATURE = 2.0


# The range each sampling option allows, one rule for request options and the configured per-task defaults.
SAMPLING_RANGES = {
    "max_new_tokens": (lambda v: 1 <= v <= MAX_NEW_TOKENS_LIMIT, f"in [1, {MAX_NEW_TOKENS_LIMIT}]"),
    "temperature": (lambda v: math.isfinite(v) and 0.0 <= v <= MAX_TEMPERATURE, f"in [0, {MAX_TEMPERATURE}]"),
    "top_p": (lambda v: math.isfinite(v) and 0.0 < v <= 1.0, "in (0, 1]"),
}


def out_of_range(option: str, value: float) -> str | None:
    """The allowed range ("in [1, 512]") when `value` is outside it for sampling `option`, else None."""
    allowed, text = SAMPLING_RANGES[option]
    return None if allowed(value) else text


class ConfigError(ValueError):
    """A config.pbtxt parameter is unknown or has a value its model cannot use."""


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    model: str = ""           # the Triton model it configures, for messages; not a parameter
    NOT_PARAMETERS: ClassVar[frozenset[str]] = frozenset({"model"})

    @classmethod
    def from_args(cls, args: Mapping[str, str]):
        """From the `args` Triton passes to a python model's initialize()."""
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        return cls.from_parameters(parameters, model=config["name"])

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str], *, model: str):
        known = cls.parameter_names()
        unknown = sorted(set(parameters) - set(known))
        if unknown:
            raise ConfigError(f"{model}: unknown config.pbtxt parameter(s) {', '.join(unknown)}; "
                              f"{model} knows {', '.join(known) or 'none'}")
        types = typing.get_type_hints(cls)
        return cls(model=model, **{key: _parse(model, key, raw, types[key]) for key, raw in parameters.items()})

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name not in cls.NOT_PARAMETERS)

    def parameters(self) -> dict[str, str]:
        """As config.pbtxt strings (what `from_parameters` reads back)."""
        return {name: _format(getattr(self, name)) for name in self.parameter_names()}

    def _check(self, ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ConfigError(f"{self.model}: parameter {key} must be {expected}, got {getattr(self, key)!r}")


def _parse(model: str, key: str, raw: str, kind: type):
    try:
        if kind is bool:
            if raw.strip().lower() not in ("true", "false"):
                raise ValueError(raw)
            return raw.strip().lower() == "true"
        return kind(raw.strip()) if kind in (int, float) else raw
    except ValueError:
        raise ConfigError(f"{model}: parameter {key} must be {kind.__name__}, got {raw!r}") from None


def _format(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig(ModelConfig):
    """query_preprocess: no parameters (its limits are the protocol's)."""


@dataclass(frozen=True, kw_only=True)
class PreprocessStepConfig(PreprocessConfig):
    """preprocess, the vlm ensembles' first step and their admission door (minivlm/serving/admission.py)."""
    # Requests let into the pipeline and not answered yet; more are refused (UNAVAILABLE) before any work.
    # Two per live decoding row of generator_engine: one decoding, one waiting for its slot.
    max_requests_in_flight: int = 32

    def __post_init__(self):
        self._check(self.max_requests_in_flight >= 1, "max_requests_in_flight", ">= 1")


@dataclass(frozen=True, kw_only=True)
class OnnxModelConfig(ModelConfig):
    """router and vision_encoder on the python backend."""
    intra_op_threads: int = 1      # one each: several stubs share 2 cores (docs/benchmarks.md)

    def __post_init__(self):
        self._check(self.intra_op_threads >= 1, "intra_op_threads", ">= 1")


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig(ModelConfig):
    """generator: the ensemble's non-decoupled step, forwarding each request to the engine."""
    engine_model: str = protocol.GENERATOR_ENGINE


@dataclass(frozen=True, kw_only=True)
class GeneratorEngineConfig(ModelConfig):
    torch_threads: int = 1
    batching: str = "continuous"
    decoder_precision: str = "auto"
    max_live_rows: int = 16
    max_waiting_requests: int = 64
    decode_nice: int = 10
    min_router_confidence: float = 0.5
    compound_min_score: float = 0.5
    caption_max_new_tokens: int = NOTEBOOK_TASK_DEFAULTS["caption"].max_new_tokens
    caption_temperature: float = NOTEBOOK_TASK_DEFAULTS["caption"].temperature
    caption_top_p: float = NOTEBOOK_TASK_DEFAULTS["caption"].top_p
    od_max_new_tokens: int = NOTEBOOK_TASK_DEFAULTS["od"].max_new_tokens
    od_temperature: float = NOTEBOOK_TASK_DEFAULTS["od"].temperature
    od_top_p: float = NOTEBOOK_TASK_DEFAULTS["od"].top_p
    vqa_max_new_tokens: int = NOTEBOOK_TASK_DEFAULTS["vqa"].max_new_tokens
    vqa_temperature: float = NOTEBOOK_TASK_DEFAULTS["vqa"].temperature
    vqa_top_p: float = NOTEBOOK_TASK_DEFAULTS["vqa"].top_p

    def __post_init__(self):
        self._check(self.torch_threads >= 1, "torch_threads", ">= 1")
        self._check(self.batching in BATCHING_MODES, "batching", f"one of {BATCHING_MODES}")
        self._check(self.decoder_precision in DECODER_PRECISION_CHOICES, "decoder_precision",
                    f"one of {DECODER_PRECISION_CHOICES}")
        self._check(self.max_live_rows >= 1, "max_live_rows", ">= 1")
        self._check(self.max_waiting_requests >= 1, "max_waiting_requests", ">= 1")
        self._check(0 <= self.decode_nice <= 19, "decode_nice", "in [0, 19]")
        for key in ("min_router_confidence", "compound_min_score"):
            self._check(0.0 <= getattr(self, key) <= 1.0, key, "in [0, 1]")
        for task, option in itertools.product(protocol.TASKS, SAMPLING_RANGES):
            key = f"{task}_{option}"
            expected = out_of_range(option, getattr(self, key))
            self._check(expected is None, key, expected)

    def task_defaults(self) -> dict[str, TaskDefaults]:
        return {task: TaskDefaults(getattr(self, f"{task}_max_new_tokens"), getattr(self, f"{task}_temperature"),
                                   getattr(self, f"{task}_top_p")) for task in protocol.TASKS}


# Which config each python model of the repository reads (the ONNX models only on the python backend).
MODEL_CONFIGS: dict[str, type[ModelConfig]] = {
    protocol.PREPROCESS: PreprocessStepConfig,
    protocol.QUERY_PREPROCESS: PreprocessConfig,
    protocol.ROUTER: OnnxModelConfig,
    protocol.VISION_ENCODER: OnnxModelConfig,
    protocol.GENERATOR: GeneratorConfig,
    protocol.GENERATOR_ENGINE: GeneratorEngineConfig,
}
