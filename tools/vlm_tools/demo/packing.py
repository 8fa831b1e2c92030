"""Training batches in exactly the serving format, with one image shared by all of its questions.

Serving runs `[image embeds] + [prompt ids]` and decodes the answer greedily. Training every (image, task)
pair as its own row would re-run the image positions once per question, so each row here packs one image with
all its segments `prompt + answer`: a block attention mask lets a segment see the image and itself only, and
its position ids restart after the image. Every answer token therefore sees the same context at the same
positions as at serving time (a unit test checks the logits against separate rows). Loss targets are the
answer ids followed by EOS; image and prompt positions are never targets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from minivlm.model.vlm import MiniVLM
from minivlm.processing.images import pixel_values
from vlm_client.protocol import TASKS
from vlm_tools.demo.scenes import Scene
from vlm_tools.demo.texts import position_questions, restyle

_PAD_SEGMENT = -1          # padding attends to the image and earlier padding, so no attention row is empty


@dataclass(frozen=True)
class Segment:
    task: str
    prompt_ids: tuple[int, ...]       # MiniVLM.prompt_ids(task, question): what serving feeds
    answer_ids: tuple[int, ...]       # without EOS


@dataclass(frozen=True)
class PackedBatch:
    pixel_values: torch.Tensor        # (B, 3, 224, 224)
    input_ids: torch.Tensor           # (B, T) text tokens after the image
    position_ids: torch.Tensor        # (B, N + T)
    attention_mask: torch.Tensor      # (B, 1, N + T, N + T) bool, True = may attend
    target_rows: torch.Tensor         # (K,) batch row of each target
    target_columns: torch.Tensor      # (K,) sequence position whose output predicts the target
    target_ids: torch.Tensor          # (K,)
    target_tasks: torch.Tensor        # (K,) index into TASKS


def scene_texts(scene: Scene, restyle_rng: np.random.Generator | None = None,
                extra_position: int = 0) -> list[tuple[str, str, str]]:
    """(task, question, answer) for everything a scene teaches; with `restyle_rng`, questions as people type
    them (lower case, no "?", either spelling) as often as in the templates' own form, and `extra_position`
    more position questions drawn with it."""
    texts = [("caption", "", scene.caption), ("od", "", scene.detection_json())]
    style = (lambda q: restyle(q, restyle_rng)) if restyle_rng is not None else (lambda q: q)
    extra = position_questions(scene.objects, restyle_rng, extra_position) if extra_position and restyle_rng is not None else []
    return texts + [("vqa", style(question), answer) for question, answer in (*scene.qa, *extra)]


def scene_segments(vlm: MiniVLM, scene: Scene, restyle_rng: np.random.Generator | None = None,
                   extra_position: int = 0) -> list[Segment]:
    return [Segment(task, tuple(vlm.prompt_ids(task, question)), tuple(vlm.tokenizer(answer)["input_ids"]))
            for task, question, answer in scene_texts(scene, restyle_rng, extra_position)]


def pack(vlm: MiniVLM, scenes: list[Scene], restyle_rng: np.random.Generator | None = None,
         extra_position: int = 0) -> PackedBatch:
    n_image = vlm.vision.num_positions
    rows = [_pack_row(scene_segments(vlm, scene, restyle_rng, extra_position), n_image, vlm.eos_token_id)
            for scene in scenes]
    length = max(len(row[0]) for row in rows)
    input_ids = torch.full((len(rows), length), vlm.eos_token_id, dtype=torch.long)
    segments = torch.full((len(rows), n_image + length), _PAD_SEGMENT, dtype=torch.long)
    positions = torch.full((len(rows), n_image + length), n_image, dtype=torch.long)
    segments[:, :n_image], positions[:, :n_image] = 0, torch.arange(n_image)
    targets = []
    for b, (tokens, segment_ids, token_positions, row_targets) in enumerate(rows):
        input_ids[b, :len(tokens)] = torch.tensor(tokens)
        segments[b, n_image:n_image + len(tokens)] = torch.tensor(segment_ids)
        positions[b, n_image:n_image + len(tokens)] = torch.tensor(token_positions)
        targets += [(b, *target) for target in row_targets]
    images = torch.from_numpy(np.stack([pixel_values(scene.image) for scene in scenes]))
    rows_t, columns, ids, tasks = torch.tensor(targets).T
    return PackedBatch(images, input_ids, positions, _block_mask(segments), rows_t, columns, ids, tasks)


def _pack_row(segments: list[Segment], n_image: int, eos_token_id: int):
    """Token ids, segment ids (1, 2, ...), positions and (column, target id, task) of one image's row."""
    tokens, segment_ids, positions, targets = [], [], [], []
    for number, segment in enumerate(segments, start=1):
        start, ids = len(tokens), segment.prompt_ids + segment.answer_ids
        tokens += ids
        segment_ids += [number] * len(ids)
        positions += range(n_image, n_image + len(ids))
        first = n_image + start + len(segment.prompt_ids) - 1     # its output is the first answer token
        task = TASKS.index(segment.task)
        targets += [(first + j, target, task) for j, target in enumerate(segment.answer_ids + (eos_token_id,))]
    return tokens, segment_ids, positions, targets


def _block_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, L) segment ids (0 = image) -> (B, 1, L, L): causal, and a segment sees only the image and itself."""
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()                     # (L, L)
    same = segments[:, :, None] == segments[:, None, :]                               # (B, Lq, Lk)
    image_key = (segments == 0)[:, None, :]                                           # (B, 1, Lk)
    return ((same | image_key) & causal)[:, None]                                     # (B, 1, Lq, Lk)
