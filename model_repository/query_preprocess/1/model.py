"""Query text -> router tokens; explicit [TAG]s and the task_override input decide the task before the router."""
from pathlib import Path

import triton_python_backend_utils as pb_utils

from minivlm.serving.query_step import QueryStep
from minivlm.serving.triton_glue import output, read_scalar, respond_each
from vlm_client import protocol as P


class TritonPythonModel:
    def initialize(self, args):
        self.step = QueryStep.load(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests):
        return respond_each(pb_utils, P.QUERY_PREPROCESS, requests, self._handle)

    def _handle(self, request):
        result = self.step.run(read_scalar(pb_utils, request, P.QUERY),
                               read_scalar(pb_utils, request, P.TASK_OVERRIDE))
        return pb_utils.InferenceResponse([
            output(pb_utils, P.INPUT_IDS, result.input_ids),
            output(pb_utils, P.ATTENTION_MASK, result.attention_mask),
            output(pb_utils, P.QUESTION, result.question.encode()),
            output(pb_utils, P.FORCED_TASK, result.forced_task),
            output(pb_utils, P.FORCED_BY, result.forced_by.encode()),
        ])
