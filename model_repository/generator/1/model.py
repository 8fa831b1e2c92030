"""The ensemble's generator step: each request goes unchanged to generator_engine, its answer comes back.

The logic, and why this non-decoupled step exists, is in minivlm/serving/engine_forwarder.py. No torch here:
these processes only pass tensors through.
"""
import asyncio
import os

import triton_python_backend_utils as pb_utils

from minivlm.serving.config import GeneratorConfig
from minivlm.serving.engine_forwarder import EngineForwarder
from minivlm.serving.stub_processes import ModelStubs


class TritonPythonModel:
    def initialize(self, args):
        engine_model = GeneratorConfig.from_args(args).engine_model
        stubs = ModelStubs(engine_model, server_pid=os.getppid())     # stubs are the server's children
        self.forwarder = EngineForwarder(pb_utils, engine_model, stubs)

    async def execute(self, requests):
        return list(await asyncio.gather(*(self.forwarder.forward(request) for request in requests)))
