"""Per-request generation options: validation and the per-task defaults they override."""
from __future__ import annotations

from dataclasses import dataclass

from minivlm.decoding.sampling import SamplingParams
from minivlm.errors import InputError
from minivlm.serving.config import SAMPLING_RANGES, TaskDefaults, out_of_range


@dataclass(frozen=True)
class RequestOptions:
    """What a request may set; None means "use the task's default"."""
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    json_constraint: bool | None = None     # None: on (OD answers are JSON by construction)

    @property
    def constrained(self) -> bool:
        return self.json_constraint is None or bool(self.json_constraint)

    def validate(self) -> "RequestOptions":
        for option in SAMPLING_RANGES:
            value = getattr(self, option)
            if value is not None and (expected := out_of_range(option, value)):
                raise InputError(f"{option} must be {expected}, got {value}")
        if self.seed is not None and self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")
        return self


def sampling_params(options: RequestOptions, defaults: TaskDefaults) -> SamplingParams:
    return SamplingParams(
        max_new_tokens=options.max_new_tokens if options.max_new_tokens is not None else defaults.max_new_tokens,
        temperature=options.temperature if options.temperature is not None else defaults.temperature,
        top_p=options.top_p if options.top_p is not None else defaults.top_p,
        seed=options.seed,
    )
