"""The generator step: pick the task, build the notebook's prompt, decode a batch, clean the answer.

Triton hands the python model a list of requests; `GeneratorEngine.run` decodes them together (one KV-cached
batch, each row stopping at its own EOS or limit) and returns one result per request, in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from vlm_client import protocol as P
from vlm_client.protocol import NO_TASK, ROUTED_BY_ROUTER, ROUTED_BY_ROUTER_UNCERTAIN, TASKS

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
                 task_defaults: dict[str, TaskDefaults], *, min_router_confidence: float = 0.0):
        self.min_router_confidence = min_router_confidence
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
        return _Plan(task, self._routing(request, float(probs[index])), float(probs[index]), prompt_ids, params)

    def _routing(self, request: GenerationRequest, confidence: float) -> str:
        """Below the threshold the answer still follows the router's best guess, flagged as uncertain."""
        if request.forced_task != NO_TASK:
            return request.forced_by
        return ROUTED_BY_ROUTER if confidence >= self.min_router_confidence else ROUTED_BY_ROUTER_UNCERTAIN

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

    def run_rows(self, requests: list[RowInputs]) -> list[list[GenerationResult] | InputError]:
        """Each Triton request may carry several rows; all valid rows of all requests decode together.
        A request with any bad row gets one InputError; the other requests are unaffected."""
        parsed: list[list[GenerationRequest] | InputError] = []
        for inputs in requests:
            try:
                parsed.append(requests_from_rows(inputs))
            except InputError as error:
                parsed.append(error)
        flat = [row for rows in parsed if not isinstance(rows, InputError) for row in rows]
        results = iter(self.run(flat))
        grouped = [rows if isinstance(rows, InputError) else [next(results) for _ in rows] for rows in parsed]
        return [next((r for r in g if isinstance(r, InputError)), g) if isinstance(g, list) else g
                for g in grouped]

    def warm_up(self) -> None:
        """Decode once at load, so the first real request does not pay for lazy initialization."""
        config = self.language_model.config
        embeds = np.zeros((4, config.hidden_size), dtype=np.float32)
        self.run([GenerationRequest(embeds, np.array([1.0, 0.0, 0.0]), "", options=RequestOptions(max_new_tokens=2))])

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


# --- the Triton-facing shape of the engine: tensors in, tensors out -------------------------------------
RowInputs = dict   # protocol.Tensor -> list of per-row values (None for an absent optional input)


def requests_from_rows(inputs: RowInputs) -> list[GenerationRequest]:
    """One request's input columns -> one GenerationRequest per row; InputError names the bad value."""
    rows = len(inputs[P.IMAGE_EMBEDS])
    options = [inputs[t] or [None] * rows for t in P.GENERATION_OPTIONS]
    try:
        questions = [q.decode("utf-8") for q in inputs[P.QUESTION]]
    except UnicodeDecodeError:
        raise InputError("question is not valid UTF-8") from None
    return [GenerationRequest(
        image_embeds=inputs[P.IMAGE_EMBEDS][i], task_probs=inputs[P.TASK_PROBS][i], question=questions[i],
        forced_task=int(inputs[P.FORCED_TASK][i]), forced_by=inputs[P.FORCED_BY][i].decode("utf-8"),
        options=RequestOptions(*(column[i] for column in options)),
    ) for i in range(rows)]


def response_values(result: GenerationResult) -> dict:
    detection = result.detection
    return {
        P.TASK: result.task.encode(), P.ROUTING: result.routing.encode(), P.CONFIDENCE: result.confidence,
        P.TEXT: result.text.encode(), P.OBJECTS: (detection.objects_json() if detection else "[]").encode(),
        P.JSON_VALID: detection.json_valid if detection else True, P.FINISH_REASON: result.finish_reason.encode(),
        P.PROMPT_TOKENS: result.prompt_tokens, P.COMPLETION_TOKENS: result.completion_tokens,
    }
