"""Image bytes + query -> pixel_values, router tokens, question and forced task: every input check at once.

The logic is minivlm.serving.preprocess_step; errors name "image_preprocess" or "query_preprocess".
"""
from pathlib import Path

import triton_python_backend_utils as pb_utils

from minivlm.serving.preprocess_step import PreprocessStep
from minivlm.serving.triton_glue import output_rows, read_rows, respond_each
from vlm_client import protocol as P


class TritonPythonModel:
    def initialize(self, args):
        self.step = PreprocessStep.load(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests):
        return respond_each(pb_utils, P.PREPROCESS, requests, self._handle)

    def _handle(self, request):
        batch = self.step.run(read_rows(pb_utils, request, P.IMAGE), read_rows(pb_utils, request, P.QUERY),
                              read_rows(pb_utils, request, P.TASK_OVERRIDE))
        query = batch.query
        return pb_utils.InferenceResponse([
            output_rows(pb_utils, P.PIXEL_VALUES, batch.pixel_values),
            output_rows(pb_utils, P.INPUT_IDS, query.input_ids),
            output_rows(pb_utils, P.ATTENTION_MASK, query.attention_mask),
            output_rows(pb_utils, P.QUESTION, [q.encode() for q in query.questions]),
            output_rows(pb_utils, P.FORCED_TASK, query.forced_tasks),
            output_rows(pb_utils, P.FORCED_BY, [f.encode() for f in query.forced_by]),
        ])
