"""The generator step: pick the task, build the notebook's prompt, decode a batch, clean the answer.

Triton hands the python model a list of requests; `GeneratorEngine.run` decodes them together (one KV-cached
batch, each row stopping at its own EOS or limit) and returns one result per request, in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from vlm_client.protocol import NO_TASK, ROUTED_BY_ROUTER, TASKS

from ..config import TaskDefaults
from ..detection import DetectionResult, parse_detection
from ..errors import InputError
from ..generation import Generation, SamplingParams, decode
from ..prompts import build_prompt, clean_answer
from .options import RequestOptions, sampling_params


@dataclass(frozen=True)
class GenerationRequest:
    image_embeds: np.ndarray        # (N, D)
    task_probs: np.ndarray          # (3,) calibrated router probabilities
    question: str
    forced_task: int = NO_TASK      # from an explicit tag or the task_override input
    forced_by: str = ""
    options: RequestOptions = field(default_factory=RequestOptions)


@dataclass(frozen=True)
class GenerationResult:
    task: str
    routing: str
    confidence: float
    text: str
    detection: DetectionResult | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class _Plan:
    task: str
    routing: str
    confidence: float
    prompt_ids: list[int]
    params: SamplingParams


class GeneratorEngine:
    def __init__(self, language_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase,
                 task_defaults: dict[str, TaskDefaults]):
        self.language_model = language_model.eval()
        self.tokenizer = tokenizer
        self.task_defaults = task_defaults
        self.max_positions = int(language_model.config.max_position_embeddings)

    def plan(self, request: GenerationRequest) -> _Plan:
        """Validate one request and decide what to decode; raises InputError for this request alone."""
        request.options.validate()
        probs = np.asarray(request.task_probs, dtype=np.float64).reshape(-1)
        if probs.shape != (len(TASKS),) or not np.all(np.isfinite(probs)):
            raise InputError(f"task_probs must be {len(TASKS)} finite numbers, got {probs.tolist()}")
        if request.forced_task != NO_TASK and not 0 <= request.forced_task < len(TASKS):
            raise InputError(f"forced_task must be -1 or in [0, {len(TASKS)}), got {request.forced_task}")
        forced = request.forced_task != NO_TASK
        index = request.forced_task if forced else int(np.argmax(probs))
        task = TASKS[index]
        if task == "vqa" and not request.question:
            raise InputError("a VQA request needs a question after the [VQA] tag")
        prompt_ids = list(self.tokenizer(build_prompt(task, request.question))["input_ids"])
        params = sampling_params(request.options, self.task_defaults[task])
        prefix_length = request.image_embeds.shape[0] + len(prompt_ids)
        if prefix_length + params.max_new_tokens > self.max_positions:
            raise InputError(f"prompt ({prefix_length} positions) plus max_new_tokens ({params.max_new_tokens}) "
                             f"exceeds the model's {self.max_positions} positions")
        return _Plan(task, request.forced_by if forced else ROUTED_BY_ROUTER, float(probs[index]), prompt_ids, params)

    def run(self, requests: list[GenerationRequest]) -> list[GenerationResult | InputError]:
        plans: list[_Plan | InputError] = []
        for request in requests:
            try:
                plans.append(self.plan(request))
            except InputError as error:
                plans.append(error)
        valid = [(r, p) for r, p in zip(requests, plans) if isinstance(p, _Plan)]
        generations = iter(self._decode(valid)) if valid else iter(())
        return [p if isinstance(p, InputError) else self._result(p, next(generations), r)
                for r, p in zip(requests, plans)]

    def _decode(self, valid: list[tuple[GenerationRequest, _Plan]]) -> list[Generation]:
        embedding, device = self.language_model.get_input_embeddings(), self.language_model.device
        with torch.inference_mode():
            prefixes = [torch.cat([torch.as_tensor(np.asarray(r.image_embeds, dtype=np.float32), device=device),
                                   embedding(torch.tensor(p.prompt_ids, device=device))], dim=0)
                        for r, p in valid]
        return decode(self.language_model, prefixes, [p.params for _, p in valid],
                      int(self.tokenizer.eos_token_id))

    def _result(self, plan: _Plan, generation: Generation, request: GenerationRequest) -> GenerationResult:
        text = clean_answer(self.tokenizer.decode(list(generation.token_ids), skip_special_tokens=True))
        detection = parse_detection(text) if plan.task == "od" else None
        return GenerationResult(
            task=plan.task, routing=plan.routing, confidence=plan.confidence, text=text, detection=detection,
            finish_reason=generation.finish_reason,
            prompt_tokens=request.image_embeds.shape[0] + len(plan.prompt_ids),
            completion_tokens=len(generation.token_ids) + (generation.finish_reason == "stop"),
        )
