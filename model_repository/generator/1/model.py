"""SmolLM decoding: every row of the requests Triton hands over together is decoded in one KV-cached batch."""
from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils

from minivlm.artifacts import load_generator_artifacts
from minivlm.errors import InputError
from minivlm.serving.generator_engine import GeneratorEngine, response_values
from minivlm.serving.options import task_defaults_from_parameters
from minivlm.serving.triton_glue import error_response, model_parameters, output_rows, read_rows
from vlm_client import protocol as P


class TritonPythonModel:
    def initialize(self, args):
        parameters = model_parameters(args)
        torch.set_num_threads(int(parameters.get("torch_threads", "1")))
        device = f"cuda:{args['model_instance_device_id']}" if args["model_instance_kind"] == "GPU" else "cpu"
        language_model, tokenizer = load_generator_artifacts(Path(args["model_repository"]) / args["model_version"])
        self.engine = GeneratorEngine(language_model.to(device), tokenizer, task_defaults_from_parameters(parameters),
                                      min_router_confidence=float(parameters.get("min_router_confidence", "0")),
                                      compound_min_score=float(parameters.get("compound_min_score", "0.5")))
        self.engine.warm_up()

    def execute(self, requests):
        inputs = [{t: read_rows(pb_utils, r, t) for t in P.GENERATOR_INPUTS} for r in requests]
        try:
            results = self.engine.run_rows(inputs)
        except Exception as error:  # a decoding fault: every request of this batch gets the message
            return [error_response(pb_utils, P.GENERATOR, f"internal error: {type(error).__name__}: {error}",
                                   invalid_argument=False) for _ in requests]
        return [self._response(rows) for rows in results]

    @staticmethod
    def _response(rows):
        if isinstance(rows, InputError):
            return error_response(pb_utils, P.GENERATOR, str(rows))
        columns = [response_values(row) for row in rows]
        return pb_utils.InferenceResponse([output_rows(pb_utils, t, [c[t] for c in columns])
                                           for t in P.GENERATOR_OUTPUTS])
