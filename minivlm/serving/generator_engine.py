"""The generator step: pick the task, build the notebook's prompt, decode, clean the answer.

`GeneratorEngine.plan` validates a request and decides what to decode (one part per task; a compound query
has several), `jobs` turns the plan into decoder rows and `result` turns their generations into the answer.
The served model feeds the rows to a continuously running batch (`serving.continuous.Scheduler`); `run`
decodes a list of requests in one static batch, in-process.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from minivlm.decoding.batch import Job
from minivlm.decoding.generate import decode
from minivlm.decoding.json_constraint import DetectionGrammar
from minivlm.decoding.sampling import Generation, SamplingParams
from minivlm.errors import InputError
from minivlm.processing.detection import DetectionResult, parse_detection
from minivlm.processing.prompts import build_prompt, clean_answer, question_clause
from minivlm.serving.config import GeneratorEngineConfig
from minivlm.serving.options import RequestOptions, sampling_params
from minivlm.serving.timings import EngineTimings
from vlm_client import protocol as P
from vlm_client.protocol import NO_TASK, ROUTED_BY_ROUTER, ROUTED_BY_ROUTER_UNCERTAIN, TASKS


@dataclass(frozen=True)
class GenerationRequest:
    image_embeds: np.ndarray        # (N, D)
    task_probs: np.ndarray          # (3,) calibrated router probabilities
    question: str
    task_scores: np.ndarray | None = None   # (3,) independent per-task scores; None = never compound
    forced_task: int = NO_TASK      # from an explicit tag or the task_override input
    forced_by: str = ""
    options: RequestOptions = field(default_factory=RequestOptions)


@dataclass(frozen=True)
class PartResult:
    """One task's answer; a compound query has several."""
    task: str
    text: str
    detection: DetectionResult | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    def to_dict(self) -> dict:
        detection = self.detection
        return {"task": self.task, "text": self.text,
                "objects": [o.to_dict() for o in detection.objects] if detection else [],
                "json_valid": detection.json_valid if detection else True,
                "finish_reason": self.finish_reason, "completion_tokens": self.completion_tokens}


@dataclass(frozen=True)
class GenerationResult:
    routing: str
    confidence: float
    parts: tuple[PartResult, ...]
    # set by the scheduler that decoded it; not part of the answer, so equal answers compare equal
    timings: EngineTimings | None = field(default=None, compare=False)

    @property
    def task(self) -> str:
        return "+".join(part.task for part in self.parts)


@dataclass(frozen=True)
class _Part:
    task: str
    prompt_ids: list[int]
    params: SamplingParams


@dataclass(frozen=True)
class _Plan:
    routing: str
    confidence: float
    parts: tuple[_Part, ...]


class GeneratorEngine:
    def __init__(self, language_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase,
                 config: GeneratorEngineConfig = GeneratorEngineConfig()):
        self.config = config
        self.language_model = language_model.eval()
        self.tokenizer = tokenizer
        self.task_defaults = config.task_defaults()
        self.max_positions = int(language_model.config.max_position_embeddings)
        self.detection_grammar = DetectionGrammar.for_tokenizer(tokenizer, int(language_model.config.vocab_size))

    def plan(self, request: GenerationRequest) -> _Plan:
        """Validate one request and decide what to decode; raises InputError for this request alone."""
        request.options.validate()
        probs = _task_vector(request.task_probs, "task_probs")
        scores = None if request.task_scores is None else _task_vector(request.task_scores, "task_scores")
        if request.forced_task != NO_TASK and not 0 <= request.forced_task < len(TASKS):
            raise InputError(f"forced_task must be -1 or in [0, {len(TASKS)}), got {request.forced_task}")
        tasks, routing, confidence = self._choose_tasks(request, probs, scores)
        parts = tuple(self._part(task, request, compound=len(tasks) > 1) for task in tasks)
        return _Plan(routing, confidence, parts)

    def _choose_tasks(self, request: GenerationRequest, probs: np.ndarray, scores: np.ndarray | None
                      ) -> tuple[list[str], str, float]:
        """A tag or override wins; then a compound query; then the router's best guess, flagged if unsure.
        The confidence is one thing for every source: how sure the server is that this is the task the client
        asked for. 1.0 when the client named it; the router's calibrated probability otherwise."""
        if request.forced_task != NO_TASK:
            return [TASKS[request.forced_task]], request.forced_by, 1.0
        if scores is not None and np.sum(scores >= self.config.compound_min_score) >= 2:
            chosen = [t for t, s in zip(TASKS, scores) if s >= self.config.compound_min_score]
            return chosen, ROUTED_BY_ROUTER, float(min(s for s in scores if s >= self.config.compound_min_score))
        index = int(np.argmax(probs))
        confident = probs[index] >= self.config.min_router_confidence
        return [TASKS[index]], ROUTED_BY_ROUTER if confident else ROUTED_BY_ROUTER_UNCERTAIN, float(probs[index])

    def _part(self, task: str, request: GenerationRequest, *, compound: bool) -> _Part:
        question = question_clause(request.question) if compound and task == "vqa" else request.question
        if task == "vqa" and not question:
            raise InputError("a VQA request needs a question after the [VQA] tag")
        prompt_ids = list(self.tokenizer(build_prompt(task, question))["input_ids"])
        params = sampling_params(request.options, self.task_defaults[task])
        if task == "od" and request.options.constrained:
            params = replace(params, grammar=self.detection_grammar)
        prefix_length = request.image_embeds.shape[0] + len(prompt_ids)
        if prefix_length + params.max_new_tokens > self.max_positions:
            raise InputError(f"prompt ({prefix_length} positions) plus max_new_tokens ({params.max_new_tokens}) "
                             f"exceeds the model's {self.max_positions} positions")
        return _Part(task, prompt_ids, params)

    def jobs(self, request: GenerationRequest, plan: _Plan, key=None) -> list[Job]:
        """One decoder row per part: [image embeds] + [prompt token embeds]; keys are (key, part index)."""
        embedding, device = self.language_model.get_input_embeddings(), self.language_model.device
        with torch.inference_mode():
            image = torch.as_tensor(np.array(request.image_embeds, dtype=np.float32), device=device)  # a copy
            return [Job((key, i), torch.cat([image, embedding(torch.tensor(part.prompt_ids, device=device))]),
                        part.params) for i, part in enumerate(plan.parts)]

    def result(self, request: GenerationRequest, plan: _Plan, generations: list[Generation]) -> GenerationResult:
        return GenerationResult(plan.routing, plan.confidence,
                                tuple(self._part_result(part, generation, request)
                                      for part, generation in zip(plan.parts, generations)))

    def run(self, requests: list[GenerationRequest]) -> list[GenerationResult | InputError]:
        """Decode every valid request in one static batch; a bad one gets its InputError, in place."""
        plans: list[_Plan | InputError] = []
        for request in requests:
            try:
                plans.append(self.plan(request))
            except InputError as error:
                plans.append(error)
        jobs = [job for i, (r, p) in enumerate(zip(requests, plans)) if isinstance(p, _Plan)
                for job in self.jobs(r, p, key=i)]
        generations = dict(zip((job.key for job in jobs),
                               decode(self.language_model, [job.prefix for job in jobs], [job.params for job in jobs],
                                      int(self.tokenizer.eos_token_id)) if jobs else ()))
        return [p if isinstance(p, InputError) else
                self.result(r, p, [generations[(i, k)] for k in range(len(p.parts))])
                for i, (r, p) in enumerate(zip(requests, plans))]

    def _part_result(self, part: _Part, generation: Generation, request: GenerationRequest) -> PartResult:
        text = clean_answer(self.tokenizer.decode(list(generation.token_ids), skip_special_tokens=True))
        return PartResult(
            task=part.task, text=text, detection=parse_detection(text) if part.task == "od" else None,
            finish_reason=generation.finish_reason,
            prompt_tokens=request.image_embeds.shape[0] + len(part.prompt_ids),
            completion_tokens=len(generation.token_ids) + (generation.finish_reason == "stop"),
        )


def warm_up_request(hidden_size: int) -> GenerationRequest:
    """A two-token caption of a 4-position blank image: touches every code path of decoding."""
    return GenerationRequest(np.zeros((4, hidden_size), dtype=np.float32), np.array([1.0, 0.0, 0.0]), "",
                             options=RequestOptions(max_new_tokens=2))


def _task_vector(values: np.ndarray, name: str) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float64).reshape(-1)
    if vector.shape != (len(TASKS),) or not np.all(np.isfinite(vector)):
        raise InputError(f"{name} must be {len(TASKS)} finite numbers, got {vector.tolist()}")
    return vector


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
        task_scores=inputs[P.TASK_SCORES][i],
        forced_task=int(inputs[P.FORCED_TASK][i]), forced_by=inputs[P.FORCED_BY][i].decode("utf-8"),
        options=RequestOptions(*(column[i] for column in options)),
    ) for i in range(rows)]


def response_values(result: GenerationResult) -> dict:
    """A compound answer's text joins its non-OD parts; objects come from its OD part."""
    parts = result.parts
    detection = next((p.detection for p in parts if p.detection is not None), None)
    texts = [p.text for p in parts if p.task != "od"] if len(parts) > 1 else [parts[0].text]
    return {
        P.TASK: result.task.encode(), P.ROUTING: result.routing.encode(), P.CONFIDENCE: result.confidence,
        P.TEXT: "\n".join(texts).encode(),
        P.OBJECTS: (detection.objects_json() if detection else "[]").encode(),
        P.JSON_VALID: detection.json_valid if detection else True,
        P.FINISH_REASON: b"length" if any(p.finish_reason == "length" for p in parts) else b"stop",
        P.PROMPT_TOKENS: sum(p.prompt_tokens for p in parts),
        P.COMPLETION_TOKENS: sum(p.completion_tokens for p in parts),
        P.PARTS: json.dumps([p.to_dict() for p in parts]).encode(),
        P.TIMINGS: (result.timings.to_json() if result.timings else "{}").encode(),
    }
