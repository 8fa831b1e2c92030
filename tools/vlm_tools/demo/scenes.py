"""Synthetic scenes for the demo model: coloured shapes on varied backgrounds, with ground truth.

Each scene is drawn at the pipeline's 224x224 so preprocessing does not resample it. Every object has a
unique (colour, shape) pair, which keeps captions, labels and questions unambiguous. Boxes are taken from the
pixels each object shows, so ground truth matches what is drawn. A scene is a pure function of (seed,
index): any scene can be regenerated alone.

Objects sit one to a cell of a 7x7 grid of 32-pixel cells, the demo ViT's patches, near the cell's centre.
Why: a from-scratch ViT learns shape slowly when an object spreads over several patches, because a patch of
flat colour cannot show its object's outline without attention from its neighbours (measured: 65% of object
patches right after 1,000 steps, ../shared/DESIGN.md). With each object inside one patch, the patch embedding
sees the whole outline, and shape is learnt as fast as colour. Variety stays in the combinations: 49 cells,
18 labels, two sizes, one to four objects, backgrounds with gradients and noise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from minivlm.processing.images import IMAGE_SIZE
from vlm_tools.demo.texts import caption, questions

COLOURS = {"red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 85, 225), "yellow": (235, 205, 35),
           "purple": (140, 60, 190), "orange": (245, 135, 25)}
SHAPES = ("circle", "square", "triangle")
CELL = 32                   # pixels: the demo ViT's patch, so each object is seen whole by one patch
GRID = IMAGE_SIZE // CELL   # 7 cells a side
SIZES = {"small": (14, 18), "large": (24, 28)}           # side in pixels, inclusive; a gap between
JITTER = 2                  # pixels an object's centre may move off its cell's centre
MAX_OBJECTS = 4
COLOUR_JITTER = 12          # per channel, so colours are categories rather than exact values
BACKGROUNDS = {"light": (165, 245), "dark": (10, 75)}     # grey levels: far from the saturated colours


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    bbox: tuple[float, float, float, float]   # x, y, w, h of its visible pixels, normalized, 2 decimals
    rgb: tuple[int, int, int]

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return x + w / 2, y + h / 2


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    objects: tuple[SceneObject, ...]      # by grid column, then row: the order captions and OD use
    background: str                       # "light" or "dark"
    label_map: np.ndarray                 # (H, W) int8: index into `objects` of the visible object, -1 if none
    caption: str
    qa: tuple[tuple[str, str], ...]       # (question, answer) pairs

    def detection_json(self) -> str:
        """The notebook's OD answer format, with every coordinate written with two decimals ("0.50", not
        "0.5"): then each "0.NN" is the same three tokens and token "5" never has to mean fifty."""
        items = [f'{{"label": {json.dumps(o.label)}, "bbox": [{", ".join(f"{v:.2f}" for v in o.bbox)}]}}'
                 for o in self.objects]
        return f'{{"objects": [{", ".join(items)}]}}'


@dataclass(frozen=True)
class _Placement:
    colour: str
    shape: str
    size: str
    box: tuple[int, int, int]             # left, top, side in pixels


def make_scene(seed: int, index: int) -> Scene:
    rng = np.random.default_rng([seed, index])
    background = str(rng.choice(list(BACKGROUNDS)))
    image = _background(rng, background)
    placements = _placements(rng)
    return _compose(rng, image, background, placements, [_mask(p) for p in placements])


def generate_scenes(seed: int, count: int, start: int = 0) -> Iterator[Scene]:
    for index in range(start, start + count):
        yield make_scene(seed, index)


def _placements(rng: np.random.Generator) -> list[_Placement]:
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    chosen = rng.choice(len(pairs), size=count, replace=False)
    cells = rng.choice(GRID * GRID, size=count, replace=False)
    return [_placement(rng, *pairs[i], int(cell)) for i, cell in zip(chosen, cells)]


def _placement(rng: np.random.Generator, colour: str, shape: str, cell: int) -> _Placement:
    size = str(rng.choice(list(SIZES)))
    side = int(rng.integers(SIZES[size][0], SIZES[size][1] + 1))
    row, column = divmod(cell, GRID)
    left, top = (origin * CELL + (CELL - side) // 2 + int(rng.integers(-JITTER, JITTER + 1))
                 for origin in (column, row))
    return _Placement(colour, shape, size, (left, top, side))


def _mask(placement: _Placement) -> np.ndarray:
    canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, side = placement.box
    right, bottom = left + side - 1, top + side - 1
    if placement.shape == "circle":
        draw.ellipse((left, top, right, bottom), fill=255)
    elif placement.shape == "square":
        draw.rectangle((left, top, right, bottom), fill=255)
    else:
        draw.polygon([(left, bottom), (right, bottom), ((left + right) / 2, top)], fill=255)
    return np.asarray(canvas) > 0


def _background(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A grey-ish base with a tint, a linear gradient and pixel noise: (H, W, 3) float32."""
    low, high = BACKGROUNDS[kind]
    start, end = rng.uniform(low, high, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + _XS * np.cos(angle) + _YS * np.sin(angle), 0, 1)
    grey = (start + (end - start) * ramp).astype(np.float32)                 # (H, W)
    tint = rng.uniform(-12, 12, size=3).astype(np.float32)
    # uniform bytes are ten times cheaper to draw than normals, and look the same as sensor noise here
    noise = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8).astype(np.float32)
    noise = (noise - np.float32(127.5)) * np.float32(rng.uniform(0, 8) / 74)    # std 0..8 grey levels
    noise += grey[..., None] + tint
    return np.clip(noise, 0, 255, out=noise)


_YS, _XS = (np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / (IMAGE_SIZE - 1) - 0.5).astype(np.float32)


def _compose(rng: np.random.Generator, image: np.ndarray, background: str, placements: list[_Placement],
             visible: list[np.ndarray]) -> Scene:
    label_map = np.full((IMAGE_SIZE, IMAGE_SIZE), -1, dtype=np.int8)
    drawn = []
    for placement, mask in zip(placements, visible):
        rgb = tuple(int(v) for v in np.clip(np.add(COLOURS[placement.colour],
                                                   rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3)), 0, 255))
        image[mask] = rgb
        drawn.append(SceneObject(placement.colour, placement.shape, placement.size, pixel_bbox(mask), rgb))
    order = sorted(range(len(drawn)), key=lambda i: grid_cell(drawn[i]))
    for new_index, old_index in enumerate(order):
        label_map[visible[old_index]] = new_index
    objects = tuple(drawn[i] for i in order)
    qa = questions(objects, rng, tuple(COLOURS), SHAPES)
    return Scene(Image.fromarray(image.astype(np.uint8)), objects, background, label_map,
                 caption(objects, background), qa)


def grid_cell(obj: SceneObject) -> tuple[int, int]:
    """(column, row) of the cell an object sits in: the jitter never moves a centre across a cell edge."""
    x, y = obj.center
    return int(x * GRID), int(y * GRID)


def pixel_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight box of a mask's pixels as normalized [x, y, w, h], rounded to 2 decimals and kept inside [0, 1]."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    size = mask.shape[0]
    x, y = round(cols[0] / size, 2), round(rows[0] / size, 2)
    w = min(round((cols[-1] + 1 - cols[0]) / size, 2), round(1 - x, 2))
    h = min(round((rows[-1] + 1 - rows[0]) / size, 2), round(1 - y, 2))
    return x, y, w, h
