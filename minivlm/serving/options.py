"""Per-request generation options: validation and the per-task defaults they override."""
from __future__ import annotations

import math
from dataclasses import dataclass

from minivlm.decoding.sampling import SamplingParams
from minivlm.errors import InputError
from minivlm.serving.config import MAX_NEW_TOKENS_LIMIT, MAX_TEMPERATURE, TaskDefaults


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

    def validate(self, *, max_new_tokens_limit: int = MAX_NEW_TOKENS_LIMIT) -> "RequestOptions":
        if self.max_new_tokens is not None and not 1 <= self.max_new_tokens <= max_new_tokens_limit:
            raise InputError(f"max_new_tokens must be in [1, {max_new_tokens_limit}], got {self.max_new_tokens}")
        if self.temperature is not None and not (math.isfinite(self.temperature)
                                                 and 0.0 <= self.temperature <= MAX_TEMPERATURE):
            raise InputError(f"temperature must be in [0, {MAX_TEMPERATURE}], got {self.temperature}")
        if self.top_p is not None and not (math.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")
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
