"""The mixed workload every benchmarked system runs: the same requests, in the same order, same lengths.

Output lengths are fixed per task (the notebook's limits), so every system does the same work. Random
weights could still emit EOS; `bench_model.suppress_eos` makes that impossible under greedy decoding (see its note).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from itertools import cycle, islice

import numpy as np
from PIL import Image, ImageDraw

from vlm_client.protocol import TASKS

TASK_TOKENS = {"caption": 40, "od": 150, "vqa": 10}          # the notebook's max_new_tokens per task
TASK_QUERIES = {"caption": "[CAPTION]", "od": "[OD]", "vqa": "[VQA] What colour is the large shape?"}
DEFAULT_MIX = {"caption": 1, "od": 1, "vqa": 1}
IMAGE_SIZES = ((640, 480), (320, 240), (800, 600), (224, 224))
IMAGE_FORMATS = ("JPEG", "PNG")


@dataclass(frozen=True)
class WorkItem:
    index: int
    task: str
    query: str                # with an explicit tag, so the (random) router cannot change the task
    max_new_tokens: int
    image: bytes              # encoded PNG or JPEG


def parse_mix(text: str) -> dict[str, int]:
    """"caption=1,od=1,vqa=2" -> {"caption": 1, "od": 1, "vqa": 2}; every weight a non-negative integer."""
    mix: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        task, _, weight = part.partition("=")
        task = task.strip().lower()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} in mix {text!r}; expected {', '.join(TASKS)}")
        if not weight.strip().isdigit():
            raise ValueError(f"weight of {task!r} in mix {text!r} must be a non-negative integer")
        mix[task] = int(weight)
    if sum(mix.values()) == 0:
        raise ValueError(f"mix {text!r} has no task with a positive weight")
    return mix


def task_cycle(mix: dict[str, int]) -> list[str]:
    """One round of the mix, interleaved (caption, od, vqa, vqa ...) rather than grouped by task."""
    remaining = {t: w for t, w in mix.items() if w > 0}
    order: list[str] = []
    while remaining:
        for task in list(remaining):
            order.append(task)
            remaining[task] -= 1
            if remaining[task] == 0:
                del remaining[task]
    return order


def whole_cycles(count: int, mix: dict[str, int]) -> int:
    """`count` rounded up to whole rounds of the mix, so a run's task shares equal the mix exactly."""
    length = sum(mix.values())
    return max(length, -(-count // length) * length)


def synthetic_image(seed: int, size: tuple[int, int] = (640, 480), fmt: str = "PNG") -> bytes:
    """A picture with a gradient background and a few shapes: realistic encoded sizes, no data set needed."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    base = rng.integers(40, 200, size=3).astype(np.float32)
    pixels = np.clip(base + 50 * ramp + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 5))):
        x, y = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
        side = int(rng.integers(min(size) // 8, min(size) // 3))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x, y, x + side, y + side], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def build_workload(count: int, mix: dict[str, int] | None = None, *, seed: int = 0) -> list[WorkItem]:
    tasks = islice(cycle(task_cycle(mix or DEFAULT_MIX)), count)
    return [WorkItem(i, task, TASK_QUERIES[task], TASK_TOKENS[task],
                     synthetic_image(seed + i, IMAGE_SIZES[i % len(IMAGE_SIZES)], IMAGE_FORMATS[i % 2]))
            for i, task in enumerate(tasks)]
