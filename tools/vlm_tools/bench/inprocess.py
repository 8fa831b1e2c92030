"""Systems that run inside this process, one request at a time, and the served decoder's step.

(a) the notebook's pipeline: PyTorch ViT + projector, then its cache-free loop that re-runs the whole
    sequence for every token (`reference_greedy`'s semantics, timed per step so long runs can be
    extrapolated from short ones);
(b) what a user would write instead: the same vision step, then transformers `generate` with its KV cache.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from minivlm.decoding.generate import decode
from minivlm.decoding.json_constraint import CLOSING_WINDOW, DetectionGrammar
from minivlm.decoding.llama_decoder import fast_decoder, supports_fast_decoder
from minivlm.decoding.sampling import SamplingParams
from minivlm.model.vlm import MiniVLM
from minivlm.processing.images import preprocess_image_bytes
from vlm_tools.bench.workload import WorkItem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestTiming:
    index: int
    task: str
    prefix_positions: int     # image positions + prompt tokens
    tokens: int               # generated
    latency_s: float
    vision_s: float           # image decode + ViT + projector, inside latency_s
    cpu_s: float = 0.0        # this process's CPU time: unlike latency, other load on the machine barely moves it


@dataclass(frozen=True)
class NotebookRun:
    requests: list[RequestTiming]
    steps: list[tuple[int, float]]     # (sequence length fed to the model, seconds) of every token


@torch.inference_mode()
def _prefix(vlm: MiniVLM, item: WorkItem) -> torch.Tensor:
    """Image bytes -> (positions, hidden): decode, ViT + projector in PyTorch, prompt embeddings; on the device
    the model is on (`vlm bench --device cuda` moves it to the GPU)."""
    device = vlm.language_model.device
    pixels = torch.as_tensor(preprocess_image_bytes(item.image)[None], dtype=torch.float32, device=device)
    embeds = vlm.vision(pixels)[0]
    question = item.query.split("]", 1)[1].strip() if item.task == "vqa" else ""
    prompt = torch.tensor(vlm.prompt_ids(item.task, question), device=device)
    return torch.cat([embeds, vlm.language_model.get_input_embeddings()(prompt)])


@torch.inference_mode()
def notebook_loop(lm, prefix: torch.Tensor, max_new_tokens: int, eos_token_id: int,
                  steps: list[tuple[int, float]]) -> list[int]:
    """The notebook's generate(): no cache, the whole sequence through the model for every token."""
    sequence = prefix.unsqueeze(0)                                           # (1, L, D)
    embedding = lm.get_input_embeddings()
    tokens: list[int] = []
    for _ in range(max_new_tokens):
        start = time.perf_counter()
        token = int(torch.argmax(lm(inputs_embeds=sequence).logits[0, -1]))
        steps.append((sequence.shape[1], time.perf_counter() - start))
        if token == eos_token_id:
            break
        tokens.append(token)
        sequence = torch.cat([sequence, embedding(torch.tensor([[token]]))], dim=1)
    return tokens


def run_notebook(vlm: MiniVLM, items: Sequence[WorkItem], *, progress: bool = True) -> NotebookRun:
    timings, steps = [], []
    for item in tqdm(items, desc="notebook pipeline", unit="req", disable=not progress):
        start, cpu = time.perf_counter(), time.process_time()
        prefix = _prefix(vlm, item)
        vision_s = time.perf_counter() - start
        tokens = notebook_loop(vlm.language_model, prefix, item.max_new_tokens, vlm.eos_token_id, steps)
        timings.append(RequestTiming(item.index, item.task, prefix.shape[0], len(tokens),
                                     time.perf_counter() - start, vision_s, time.process_time() - cpu))
    return NotebookRun(timings, steps)


def step_time_fit(steps: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """(intercept s, slope s per position) of the notebook's step time against sequence length: the
    cache-free step costs a forward over the whole sequence, so it grows about linearly."""
    lengths = np.array([s[0] for s in steps], dtype=np.float64)
    seconds = np.array([s[1] for s in steps], dtype=np.float64)
    if np.ptp(lengths) == 0:
        return float(seconds.mean()), 0.0
    slope, intercept = np.polyfit(lengths, seconds, 1)
    return float(intercept), float(max(slope, 0.0))


def notebook_latencies(run: NotebookRun, workload: Sequence[tuple[int, int]]) -> list[float]:
    """Predicted latency of each (prefix positions, new tokens) request: measured mean vision time plus the
    fitted step time summed over the sequence lengths that request would feed."""
    intercept, slope = step_time_fit(run.steps)
    vision_s = float(np.mean([r.vision_s for r in run.requests]))
    return [vision_s + sum(intercept + slope * (prefix + k) for k in range(tokens)) for prefix, tokens in workload]


@torch.inference_mode()
def run_generate(vlm: MiniVLM, items: Sequence[WorkItem], *, progress: bool = True) -> list[RequestTiming]:
    """transformers `generate` with its KV cache, forced to exactly max_new_tokens, one request at a time."""
    lm, timings = vlm.language_model, []
    for item in tqdm(items, desc="transformers generate", unit="req", disable=not progress):
        start, cpu = time.perf_counter(), time.process_time()
        prefix = _prefix(vlm, item)
        vision_s = time.perf_counter() - start
        output = lm.generate(inputs_embeds=prefix[None], max_new_tokens=item.max_new_tokens,
                             min_new_tokens=item.max_new_tokens, do_sample=False,
                             pad_token_id=vlm.eos_token_id)
        timings.append(RequestTiming(item.index, item.task, prefix.shape[0], int(output.shape[1]),
                                     time.perf_counter() - start, vision_s, time.process_time() - cpu))
    return timings


@dataclass(frozen=True)
class DecodeStep:
    batch: int
    prefix_positions: int
    step_s: float             # one KV-cached token for every row, after the prefill
    prefill_s: float


@torch.inference_mode()
def measure_decode_step(lm, *, batch: int, prefix_positions: int, steps: int = 32,
                        eos_token_id: int = 0, precision: str = "fp32") -> DecodeStep:
    """The served generator's `decode` at a fixed batch: (time for 1 + steps tokens - time for 1) / steps.
    One token costs only the prefill, so the difference is `steps` pure decode steps. On the model's device,
    with the decoder in `precision` (what the served engine runs). Every step ends in a host sync on its
    tokens, so wall time is the GPU's time too."""
    hidden = lm.config.hidden_size
    prefixes = [torch.randn(prefix_positions, hidden, device=lm.device) * 0.02 for _ in range(batch)]
    backend = fast_decoder(lm, precision=precision) if supports_fast_decoder(lm) else "auto"

    def timed(tokens: int) -> float:
        start = time.perf_counter()
        decode(lm, prefixes, [SamplingParams(max_new_tokens=tokens)] * batch, eos_token_id, backend=backend)
        return time.perf_counter() - start

    timed(2)                                                   # warm-up: allocations, thread pools
    prefill = min(timed(1) for _ in range(2))
    full = timed(1 + steps)
    return DecodeStep(batch, prefix_positions, max(full - prefill, 0.0) / steps, prefill)


# A detection answer long enough to walk the grammar through many labels and coordinates.
LONG_DETECTION = "{\"objects\": [" + ", ".join(
    f'{{"label": "{label}", "bbox": [0.{i}1, 0.{i}2, 0.1{i}, 0.2{i}]}}'
    for i, label in enumerate(["person", "red car", "dog", "traffic light", "bicycle", "small blue square",
                               "cup", "laptop", "chair"])) + "]}"


@torch.inference_mode()
def measure_json_constraint(grammar: DetectionGrammar, tokenizer, *, batch: int) -> dict[str, float]:
    """What the OD grammar adds to one decode step with `batch` constrained rows, in seconds: the mask and
    the token check on each row ("step_s"), and the same within the last CLOSING_WINDOW tokens, where each
    token is also checked for a closing in time ("closing_step_s"). Rows walk a real detection answer."""
    ids = tokenizer.encode(LONG_DETECTION, add_special_tokens=False)
    logits = torch.randn(batch, grammar.vocab_size)
    timings = {}
    for name, closing in (("step_s", False), ("closing_step_s", True)):
        rows = [grammar.new_row() for _ in range(batch)]
        start = time.perf_counter()
        for token in ids:
            for row, row_logits in zip(rows, logits):
                row.mask(row_logits)
                if closing:
                    row.closes_in(token, CLOSING_WINDOW)      # what settle checks near the limit
                row.matcher.consume_token(token)
        timings[name] = (time.perf_counter() - start) / len(ids)
    return timings
