"""The ensemble's generator step: each request goes unchanged to generator_engine, its answer comes back.

generator_engine is decoupled (it answers when a request's rows finish in its continuously running batch);
an ensemble with a decoupled step would refuse unary infer calls, so this non-decoupled model sits between.
No torch here: these processes only pass tensors through.

When generator_engine's process dies, Triton 2.51 never answers the requests it was decoding; this forwarder
notices the death (it checks the engine's processes while it waits) and answers UNAVAILABLE, as it does when
the engine is down while the server's watchdog reloads it: the client may retry once the server is ready.
"""
import asyncio
import os

import triton_python_backend_utils as pb_utils

from minivlm.serving.config import GeneratorConfig
from minivlm.serving.stub_processes import ModelStubs, is_alive
from minivlm.serving.triton_glue import error_code, model_down

LIVENESS_POLL_S = 0.25


class TritonPythonModel:
    def initialize(self, args):
        self.engine_model = GeneratorConfig.from_args(args).engine_model
        self.engine_stubs = ModelStubs(self.engine_model, server_pid=os.getppid())   # stubs are its children

    async def execute(self, requests):
        return list(await asyncio.gather(*(self._forward(request) for request in requests)))

    async def _forward(self, request):
        forwarded = pb_utils.InferenceRequest(model_name=self.engine_model, inputs=request.inputs(),
                                              requested_output_names=sorted(request.requested_output_names()))
        engine = self.engine_stubs.current()     # the processes this request goes to
        exchange = asyncio.ensure_future(self._exchange(forwarded))
        while not exchange.done():
            await asyncio.wait({exchange}, timeout=LIVENESS_POLL_S)
            if not exchange.done() and not all(map(is_alive, engine)):
                exchange.cancel()
                return self._unavailable(f"{self.engine_model}'s process died while decoding this request")
        try:
            answer = exchange.result()
        except Exception as error:  # the engine could not be reached: this request alone fails
            if model_down(str(error)):
                return self._unavailable(str(error))
            return self._error(f"generator: internal error: {type(error).__name__}: {error}",
                               pb_utils.TritonError.INTERNAL)
        if answer is None:
            return self._error(f"generator: internal error: {self.engine_model} sent no answer",
                               pb_utils.TritonError.INTERNAL)
        if answer.has_error():      # its message already names the step and kind ("generator: ...")
            message = answer.error().message()
            if model_down(message):
                return self._unavailable(message)
            return self._error(message, error_code(pb_utils, message))
        return pb_utils.InferenceResponse(answer.output_tensors())

    @staticmethod
    async def _exchange(forwarded):
        answer = None
        for response in await forwarded.async_exec(decoupled=True):
            if response.has_error() or response.output_tensors():    # the final flag may come alone
                answer = response
        return answer

    def _unavailable(self, why):
        return self._error(f"generator: unavailable: {self.engine_model} is down and being restarted, retry "
                           f"later ({why})", pb_utils.TritonError.UNAVAILABLE)

    @staticmethod
    def _error(message, code):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
