"""Query text -> router tokens; explicit [TAG]s and the task_override input decide the task before the router."""
from pathlib import Path

import triton_python_backend_utils as pb_utils

from minivlm.serving.config import PreprocessConfig
from minivlm.serving.query_step import QueryStep
from minivlm.serving.triton_glue import query_outputs, read_rows, respond_each
from vlm_client import protocol as P


class TritonPythonModel:
    def initialize(self, args):
        PreprocessConfig.from_args(args)          # no parameters: refuses unknown ones
        self.step = QueryStep.load(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests):
        return respond_each(pb_utils, P.QUERY_PREPROCESS, requests, self._handle)

    def _handle(self, request):
        batch = self.step.run(read_rows(pb_utils, request, P.QUERY), read_rows(pb_utils, request, P.TASK_OVERRIDE))
        return pb_utils.InferenceResponse(query_outputs(pb_utils, batch))
