"""The generator step's logic: pass each request to generator_engine and its one answer back.

generator_engine is decoupled (it answers when a request's rows finish in its continuously running batch);
an ensemble with a decoupled step would refuse unary infer calls, so the non-decoupled `generator` model sits
between, and this is all it does.

When generator_engine's process dies, Triton 2.51 never answers the requests it was decoding; the forwarder
notices the death (it checks the engine's processes while it waits) and answers UNAVAILABLE, as it does when
the engine is down while the server's watchdog reloads it: the client may retry once the server is ready.

A request's deadline (Triton's per-request `timeout`, which the ensemble hands to each step) goes on to the
engine, which fails the request and frees its rows once it passes. Triton 2.51 does not pass a client's
cancellation to an ensemble step already running (tested: `request.is_cancelled()` stays false here, while a
direct call to a model sees it), so through `vlm` only the deadline can stop a request early.

A request the engine answered has left the pipeline for the admission door (the engine rang its bell); one
the forwarder answers itself (the engine is down or unreachable) rings it here.
"""
from __future__ import annotations

import asyncio

from minivlm.serving.admission import DoorBell, door_address
from minivlm.serving.stub_processes import ModelStubs, is_alive
from minivlm.serving.triton_glue import error_code, model_down

LIVENESS_POLL_S = 0.25


class EngineForwarder:
    def __init__(self, pb_utils, engine_model: str, engine_stubs: ModelStubs):
        self.pb = pb_utils                    # triton_python_backend_utils: passed in, it exists only in a stub
        self.engine_model = engine_model
        self.engine_stubs = engine_stubs
        self.bell = DoorBell(door_address(engine_stubs.server_pid))

    async def forward(self, request):
        pb = self.pb
        forwarded = pb.InferenceRequest(model_name=self.engine_model, inputs=request.inputs(),
                                        requested_output_names=sorted(request.requested_output_names()),
                                        timeout=request.timeout())
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
            self.bell.ring()
            return self._error(f"generator: internal error: {type(error).__name__}: {error}",
                               pb.TritonError.INTERNAL)
        if answer is None:
            self.bell.ring()
            return self._error(f"generator: internal error: {self.engine_model} sent no answer",
                               pb.TritonError.INTERNAL)
        if answer.has_error():      # its message already names the step and kind ("generator: ...")
            message = answer.error().message()
            if model_down(message):
                return self._unavailable(message)
            return self._error(message, error_code(pb, message))
        return pb.InferenceResponse(answer.output_tensors())

    @staticmethod
    async def _exchange(forwarded):
        answer = None
        for response in await forwarded.async_exec(decoupled=True):
            if response.has_error() or response.output_tensors():    # the final flag may come alone
                answer = response
        return answer

    def _unavailable(self, why: str):
        self.bell.ring()
        return self._error(f"generator: unavailable: {self.engine_model} is down and being restarted, retry "
                           f"later ({why})", self.pb.TritonError.UNAVAILABLE)

    def _error(self, message: str, code):
        return self.pb.InferenceResponse(error=self.pb.TritonError(message, code))
