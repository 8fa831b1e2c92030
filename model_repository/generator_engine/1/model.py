"""SmolLM decoding, continuous batching (decoupled): `execute` queues, the scheduler thread answers (streams too)."""
from functools import partial
from pathlib import Path

import torch
import triton_python_backend_utils as pb_utils

from minivlm.model.artifacts import load_generator_artifacts
from minivlm.serving.admission import stub_bell
from minivlm.serving.config import GeneratorEngineConfig
from minivlm.serving.generator_engine import GeneratorEngine, requests_from_rows, response_values
from minivlm.serving.metrics import GeneratorMetrics
from minivlm.serving.scheduler import Scheduler, deadline_from_timeout
from minivlm.serving.triton_glue import exception_response, output_rows, read_rows
from vlm_client import protocol as P

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        config = GeneratorEngineConfig.from_args(args)
        torch.set_num_threads(config.torch_threads)
        device = f"cuda:{args['model_instance_device_id']}" if args["model_instance_kind"] == "GPU" else "cpu"
        language_model, tokenizer = load_generator_artifacts(Path(args["model_repository"]) / args["model_version"])
        engine = GeneratorEngine(language_model.to(device), tokenizer, config)
        self.scheduler = Scheduler.from_config(engine, config, metrics=GeneratorMetrics(pb_utils),
                                               on_leave=stub_bell().ring).start()
        self.scheduler.warm_up()

    def execute(self, requests):
        for request in requests:         # every request gets exactly one (final) response, later or now
            sender = request.get_response_sender()
            try:
                inputs = {t: read_rows(pb_utils, request, t) for t in P.GENERATOR_INPUTS}
                stream = partial(self._send_text, sender) if any(inputs[P.STREAM] or []) else None
                self.scheduler.submit(requests_from_rows(inputs), partial(self._send, sender), on_text=stream,
                                      deadline=deadline_from_timeout(request.timeout()),  # Triton's timeout
                                      cancelled=sender.is_cancelled)
            except Exception as error:   # bad input, a full queue: this request alone
                self.scheduler.note_refusal(error)
                sender.send(exception_response(pb_utils, P.GENERATOR, error), flags=FINAL)
        return None

    @staticmethod
    def _send(sender, outcome):
        """From the scheduler thread: one request's rows, or its error."""
        if isinstance(outcome, BaseException):
            return sender.send(exception_response(pb_utils, P.GENERATOR, outcome), flags=FINAL)
        columns = [response_values(row) for row in outcome]
        sender.send(pb_utils.InferenceResponse([output_rows(pb_utils, t, [c[t] for c in columns])
                                                for t in P.GENERATOR_OUTPUTS]), flags=FINAL)

    @staticmethod
    def _send_text(sender, piece):
        """From the scheduler thread, streaming (vlm_stream): the next piece of the answer's text alone."""
        sender.send(pb_utils.InferenceResponse([output_rows(pb_utils, P.TEXT, [piece.encode()])]))

    def finalize(self):
        self.scheduler.close()
