"""Encoded image bytes -> pixel_values (3, 224, 224), with clear errors for unusable images."""
import triton_python_backend_utils as pb_utils

from minivlm.images import preprocess_image_bytes
from minivlm.serving.triton_glue import output, read_scalar, respond_each
from vlm_client import protocol as P


class TritonPythonModel:
    def execute(self, requests):
        return respond_each(pb_utils, P.IMAGE_PREPROCESS, requests, self._handle)

    def _handle(self, request):
        pixels = preprocess_image_bytes(read_scalar(pb_utils, request, P.IMAGE))
        return pb_utils.InferenceResponse([output(pb_utils, P.PIXEL_VALUES, pixels)])
