"""The vlm ensemble's first step: check and prepare a request's image and query together.

Every bad image or query is refused here, before any other step of the request runs. Triton 2.51's
ensemble scheduler can free a request while a parallel step still uses it when a step fails beside another
in flight (fixed upstream in triton-inference-server/core feede8e, not in 2.51): with separate image and
query steps running side by side, one bad request corrupted or failed its neighbours and could hang the
server. Errors keep the names of the two halves: "image_preprocess: ..." and "query_preprocess: ...".
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minivlm.errors import InputError
from minivlm.processing.images import ImageLimits, preprocess_image_bytes
from minivlm.serving.query_step import QueryBatch, QueryStep
from vlm_client.protocol import IMAGE_PREPROCESS, QUERY_PREPROCESS


@dataclass(frozen=True)
class PreprocessBatch:
    pixel_values: list[np.ndarray]     # one (3, 224, 224) float32 array per row
    query: QueryBatch


@contextmanager
def blamed_on(step: str) -> Iterator[None]:
    """Name `step` in the InputErrors raised inside, unless they already name one."""
    try:
        yield
    except InputError as error:
        if error.step is not None:
            raise
        raise InputError(str(error), step=step) from None


class PreprocessStep:
    def __init__(self, query_step: QueryStep, limits: ImageLimits = ImageLimits()):
        self.query_step = query_step
        self.limits = limits

    @classmethod
    def load(cls, version_dir: Path) -> "PreprocessStep":
        return cls(QueryStep.load(version_dir))

    def run(self, images: list[bytes], queries: list[bytes],
            overrides: list[bytes] | None = None) -> PreprocessBatch:
        """The query is checked first: it is cheap, and a request with both wrong gets one error."""
        if len(images) != len(queries):
            raise InputError(f"the request has {len(images)} images but {len(queries)} queries")
        with blamed_on(QUERY_PREPROCESS):
            query = self.query_step.run(queries, overrides)
        with blamed_on(IMAGE_PREPROCESS):
            pixels = [preprocess_image_bytes(image, self.limits) for image in images]
        return PreprocessBatch(pixels, query)
