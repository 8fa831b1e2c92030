"""Evaluate a demo model on held-out scenes through the serving decode path (batched, KV cache, greedy).

Answers are produced exactly as the generator serves them: `MiniVLM.generate` after `prompt_ids(task,
question)`, decoded text through `clean_answer`, OD text through `parse_detection`. `precision` picks the
decoder's weight format as generator_engine's `decoder_precision` does, so the accuracy cost of int8 or bf16
is measured on a trained model.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np
import torch

from minivlm.decoding.llama_decoder import Precision, fast_decoder
from minivlm.decoding.sampling import SamplingParams
from minivlm.model.vlm import MiniVLM
from minivlm.processing.detection import parse_detection
from minivlm.processing.images import pixel_values
from minivlm.processing.prompts import clean_answer
from minivlm.serving.config import NOTEBOOK_TASK_DEFAULTS
from vlm_tools.demo.config import EVAL_SEED
from vlm_tools.demo.metrics import Detection, caption_objects, f1_counts, f1_score, mean_average_precision
from vlm_tools.demo.scenes import Scene, generate_scenes
from vlm_tools.demo.texts import question_kind, swap_spelling

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class DemoReport:
    scenes: int
    caption_objects_accuracy: float   # captions naming exactly the scene's (colour, shape) objects
    caption_object_f1: float          # over the named "colour shape" mentions
    caption_exact_match: float        # the whole caption, sizes and background included
    vqa_accuracy: float               # exact match after clean_answer
    vqa_by_kind: dict
    vqa_questions: int
    vqa_restyled_accuracy: float      # the same questions lower-cased, without "?", other spelling of colour
    od_valid_json_rate: float         # raw text parses as JSON without repair
    od_label_f1: float
    od_map50: float
    seconds: float
    decoder_precision: str = "fp32"
    identical_to_fp32: float | None = None   # answers (every task) equal to the fp32 decoder's, when not fp32

    def to_dict(self) -> dict:
        return asdict(self)

    def misses(self) -> list[str]:
        """The targets this model misses (issue 12), each with the measured value; empty when all are met."""
        checks = [("VQA exact match", self.vqa_accuracy, 0.95),
                  *[(f"VQA {kind}", value, 0.90) for kind, value in self.vqa_by_kind.items()],
                  ("VQA restyled questions", self.vqa_restyled_accuracy, 0.95),
                  ("caption names every object", self.caption_objects_accuracy, 0.90),
                  ("OD valid JSON", self.od_valid_json_rate, 1.0),
                  ("OD label F1", self.od_label_f1, 0.95),
                  ("OD mAP@0.5", self.od_map50, 0.70)]
        return [f"{name} {value:.3f} < {target}" for name, value, target in checks if not value >= target]


@dataclass(frozen=True)
class _Request:
    scene: int
    task: str
    question: str = ""


def evaluate_demo(vlm: MiniVLM, scenes: list[Scene], *, batch_size: int = 64,
                  precision: Precision = "fp32") -> DemoReport:
    started = time.monotonic()
    embeds = _image_embeds(vlm, scenes, batch_size)
    requests = [_Request(i, task) for task in ("caption", "od") for i in range(len(scenes))]
    requests += [_Request(i, "vqa", q) for i, scene in enumerate(scenes) for q, _ in scene.qa]
    requests += [_Request(i, "vqa", people_style(q)) for i, scene in enumerate(scenes) for q, _ in scene.qa]
    log.info("answering %d requests about %d scenes", len(requests), len(scenes))
    texts = answer_all(vlm, embeds, requests, batch_size, precision)
    identical = None
    if precision != "fp32":
        reference = answer_all(vlm, embeds, requests, batch_size)
        identical = sum(a == b for a, b in zip(texts, reference)) / len(texts)
    answers = dict(zip(requests, texts))
    caption = _caption_scores(scenes, [answers[_Request(i, "caption")] for i in range(len(scenes))])
    od = _detection_scores(scenes, [answers[_Request(i, "od")] for i in range(len(scenes))])
    vqa = _vqa_scores(scenes, answers)
    return DemoReport(scenes=len(scenes), **caption, **vqa, **od, seconds=time.monotonic() - started,
                      decoder_precision=precision, identical_to_fp32=identical)


def evaluate_held_out(vlm: MiniVLM, count: int, *, seed: int = EVAL_SEED, batch_size: int = 64,
                      precision: Precision = "fp32") -> DemoReport:
    return evaluate_demo(vlm, list(generate_scenes(seed, count)), batch_size=batch_size, precision=precision)


def _image_embeds(vlm: MiniVLM, scenes: list[Scene], batch_size: int) -> list[torch.Tensor]:
    embeds = []
    for start in range(0, len(scenes), batch_size):
        pixels = np.stack([pixel_values(s.image) for s in scenes[start:start + batch_size]])
        embeds += list(vlm.encode_images(pixels))
    return embeds


def answer_all(vlm: MiniVLM, embeds: list[torch.Tensor], requests: list[_Request], batch_size: int,
               precision: Precision = "fp32") -> list[str]:
    """Greedy answers, batched by task so rows in a batch have similar lengths."""
    backend = "auto" if precision == "fp32" else fast_decoder(vlm.language_model, precision=precision)
    texts = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        params = [SamplingParams(NOTEBOOK_TASK_DEFAULTS[r.task].max_new_tokens, temperature=0.0) for r in chunk]
        generations = vlm.generate([embeds[r.scene] for r in chunk],
                                   [vlm.prompt_ids(r.task, r.question) for r in chunk], params, backend=backend)
        texts += [clean_answer(vlm.tokenizer.decode(list(g.token_ids), skip_special_tokens=True))
                  for g in generations]
    return texts


def _caption_scores(scenes: list[Scene], captions: list[str]) -> dict:
    named = [caption_objects(text) for text in captions]
    truth = [[o.label for o in scene.objects] for scene in scenes]
    counts = np.sum([f1_counts(n, t) for n, t in zip(named, truth)], axis=0)
    return {"caption_objects_accuracy": float(np.mean([sorted(n) == sorted(t) for n, t in zip(named, truth)])),
            "caption_object_f1": f1_score(*counts),
            "caption_exact_match": float(np.mean([c == s.caption for c, s in zip(captions, scenes)]))}


def _detection_scores(scenes: list[Scene], texts: list[str]) -> dict:
    results = [parse_detection(text) for text in texts]
    # The model gives no scores; earlier objects in its list rank higher.
    predicted = [[Detection(o.label, o.bbox, 1.0 - 0.01 * rank) for rank, o in enumerate(r.objects)]
                 for r in results]
    truth = [[Detection(o.label, o.bbox) for o in scene.objects] for scene in scenes]
    counts = np.sum([f1_counts([d.label for d in p], [d.label for d in t]) for p, t in zip(predicted, truth)],
                    axis=0)
    return {"od_valid_json_rate": float(np.mean([r.json_valid for r in results])),
            "od_label_f1": f1_score(*counts),
            "od_map50": mean_average_precision(predicted, truth, iou_threshold=0.5)}


def _vqa_scores(scenes: list[Scene], answers: dict) -> dict:
    by_kind = defaultdict(list)
    for i, scene in enumerate(scenes):
        for question, expected in scene.qa:
            by_kind[question_kind(question)].append(answers[_Request(i, "vqa", question)] == expected)
    every = [hit for hits in by_kind.values() for hit in hits]
    restyled = [answers[_Request(i, "vqa", people_style(question))] == expected
                for i, scene in enumerate(scenes) for question, expected in scene.qa]
    return {"vqa_accuracy": float(np.mean(every)), "vqa_questions": len(every),
            "vqa_by_kind": {kind: float(np.mean(hits)) for kind, hits in sorted(by_kind.items())},
            "vqa_restyled_accuracy": float(np.mean(restyled))}


def people_style(question: str) -> str:
    """All three departures from the training templates at once: lower case, no "?", the other spelling."""
    return swap_spelling(question.lower().rstrip("?"))
