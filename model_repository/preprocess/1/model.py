"""Image bytes + query -> pixel_values, router tokens, question and forced task: every input check at once.

The logic is minivlm.serving.preprocess_step; errors name "image_preprocess" or "query_preprocess". As the
first step it is also the admission door: a full pipeline refuses the request here (UNAVAILABLE), before
the image is decoded (minivlm/serving/admission.py).
"""
import os
from pathlib import Path

import triton_python_backend_utils as pb_utils

from minivlm.serving.admission import AdmissionDoor, door_address
from minivlm.serving.config import PreprocessStepConfig
from minivlm.serving.metrics import DoorMetrics
from minivlm.serving.preprocess_step import PreprocessStep
from minivlm.serving.triton_glue import output_rows, query_outputs, read_rows, respond_each
from vlm_client import protocol as P


class TritonPythonModel:
    def initialize(self, args):
        config = PreprocessStepConfig.from_args(args)
        self.door = AdmissionDoor(config.max_requests_in_flight, address=door_address(os.getppid()),
                                  metrics=DoorMetrics(pb_utils)).start()
        self.step = PreprocessStep.load(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests):
        return respond_each(pb_utils, P.PREPROCESS, requests, self._handle)

    def _handle(self, request):
        with self.door.admission():       # counts until the generator answers it; refused here when full
            batch = self.step.run(read_rows(pb_utils, request, P.IMAGE), read_rows(pb_utils, request, P.QUERY),
                                  read_rows(pb_utils, request, P.TASK_OVERRIDE))
            return pb_utils.InferenceResponse([output_rows(pb_utils, P.PIXEL_VALUES, batch.pixel_values),
                                               *query_outputs(pb_utils, batch.query)])

    def finalize(self):
        self.door.close()
