"""Encoded image bytes -> pixel_values (3, 224, 224), with clear errors for unusable images."""
import triton_python_backend_utils as pb_utils

from minivlm.images import preprocess_image_bytes
from minivlm.serving.triton_glue import output_rows, read_rows, respond_each
from vlm_client import protocol as P


class TritonPythonModel:
    def execute(self, requests):
        return respond_each(pb_utils, P.IMAGE_PREPROCESS, requests, self._handle)

    def _handle(self, request):
        pixels = [preprocess_image_bytes(image) for image in read_rows(pb_utils, request, P.IMAGE)]
        return pb_utils.InferenceResponse([output_rows(pb_utils, P.PIXEL_VALUES, pixels)])
