"""The ensemble's generator step: each request goes unchanged to generator_engine, its answer comes back.

generator_engine is decoupled (it answers when a request's rows finish in its continuously running batch);
an ensemble with a decoupled step would refuse unary infer calls, so this non-decoupled model sits between.
No torch here: these processes only pass tensors through.
"""
import asyncio

import triton_python_backend_utils as pb_utils

from minivlm.serving.config import GeneratorConfig
from minivlm.serving.triton_glue import error_code


class TritonPythonModel:
    def initialize(self, args):
        self.engine_model = GeneratorConfig.from_args(args).engine_model

    async def execute(self, requests):
        return list(await asyncio.gather(*(self._forward(request) for request in requests)))

    async def _forward(self, request):
        forwarded = pb_utils.InferenceRequest(model_name=self.engine_model, inputs=request.inputs(),
                                              requested_output_names=sorted(request.requested_output_names()))
        answer = None
        try:
            for response in await forwarded.async_exec(decoupled=True):
                if response.has_error() or response.output_tensors():    # the final flag may come alone
                    answer = response
        except Exception as error:  # the engine could not be reached: this request alone fails
            return self._error(f"generator: internal error: {type(error).__name__}: {error}")
        if answer is None:
            return self._error(f"generator: internal error: {self.engine_model} sent no answer")
        if answer.has_error():      # its message already names the step and kind ("generator: ...")
            message = answer.error().message()
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, error_code(pb_utils, message)))
        return pb_utils.InferenceResponse(answer.output_tensors())

    @staticmethod
    def _error(message):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL))
