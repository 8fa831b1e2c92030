"""SmolLM decoding: the requests Triton hands over together are decoded together with a KV cache."""
from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils

from minivlm.artifacts import load_generator_artifacts
from minivlm.errors import InputError
from minivlm.serving.generator_engine import GenerationRequest, GeneratorEngine
from minivlm.serving.options import RequestOptions, task_defaults_from_parameters
from minivlm.serving.triton_glue import error_response, model_parameters, output, read, read_scalar
from vlm_client import protocol as P


class TritonPythonModel:
    def initialize(self, args):
        parameters = model_parameters(args)
        torch.set_num_threads(int(parameters.get("torch_threads", "2")))
        device = f"cuda:{args['model_instance_device_id']}" if args["model_instance_kind"] == "GPU" else "cpu"
        language_model, tokenizer = load_generator_artifacts(Path(args["model_repository"]) / args["model_version"])
        self.engine = GeneratorEngine(language_model.to(device), tokenizer, task_defaults_from_parameters(parameters))

    def execute(self, requests):
        parsed = []
        for request in requests:
            try:
                parsed.append(self._parse(request))
            except InputError as error:
                parsed.append(error)
        valid = [p for p in parsed if isinstance(p, GenerationRequest)]
        try:
            results = iter(self.engine.run(valid))
        except Exception as error:  # a decoding fault: every request of this batch gets the message
            return [error_response(pb_utils, P.GENERATOR, f"internal error: {type(error).__name__}: {error}",
                                   invalid_argument=False) for _ in requests]
        return [self._response(p if isinstance(p, InputError) else next(results)) for p in parsed]

    def _parse(self, request) -> GenerationRequest:
        question = read_scalar(pb_utils, request, P.QUESTION).decode("utf-8")
        return GenerationRequest(
            image_embeds=read(pb_utils, request, P.IMAGE_EMBEDS)[0],
            task_probs=read(pb_utils, request, P.TASK_PROBS)[0],
            question=question,
            forced_task=int(read_scalar(pb_utils, request, P.FORCED_TASK)),
            forced_by=read_scalar(pb_utils, request, P.FORCED_BY).decode("utf-8"),
            options=RequestOptions(*(read_scalar(pb_utils, request, t) for t in P.GENERATION_OPTIONS)),
        )

    def _response(self, result):
        if isinstance(result, InputError):
            return error_response(pb_utils, P.GENERATOR, str(result))
        detection = result.detection
        values = {
            P.TASK: result.task.encode(), P.ROUTING: result.routing.encode(), P.CONFIDENCE: result.confidence,
            P.TEXT: result.text.encode(), P.OBJECTS: (detection.objects_json() if detection else "[]").encode(),
            P.JSON_VALID: detection.json_valid if detection else True, P.FINISH_REASON: result.finish_reason.encode(),
            P.PROMPT_TOKENS: result.prompt_tokens, P.COMPLETION_TOKENS: result.completion_tokens,
        }
        return pb_utils.InferenceResponse([output(pb_utils, tensor, value) for tensor, value in values.items()])
