"""Helpers shared by the repository's thin `model.py` files.

The python backend's `triton_python_backend_utils` module exists only inside the stub process, so it is
passed in rather than imported: this package stays importable (and testable) anywhere.
"""
from __future__ import annotations

import logging
import re
from typing import Callable

import numpy as np

from minivlm.errors import DeadlineExceededError, InputError, RequestCancelledError, ServerBusyError
from vlm_client import protocol as P
from vlm_client.protocol import Tensor

log = logging.getLogger(__name__)

_NUMPY_DTYPES = {"FP32": np.float32, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}


# Words that open an error message after its step and say its kind: "<step>: server busy: ..." and
# "<step>: deadline exceeded: ..." are UNAVAILABLE (2.51's python backend has no DEADLINE_EXCEEDED code),
# "<step>: cancelled: ..." CANCELLED, "<step>: internal error: ..." INTERNAL, anything else the client's
# fault (INVALID_ARG). Triton 2.51 drops the
# code of an error a decoupled model sends back to a BLS caller (the generator forwarding to its engine gets
# INTERNAL for everything), so the kind travels in the message and `error_code` reads it back.
BUSY, DEADLINE, CANCELLED, INTERNAL = "server busy", "deadline exceeded", "cancelled", "internal error"
_KIND_WORDS = {BUSY: ServerBusyError, DEADLINE: DeadlineExceededError, CANCELLED: RequestCancelledError}


# What Triton 2.51 answers a request (BLS included) for a model that cannot take it now: its stub died
# ("Stub process 'generator_engine_0_0' is not healthy."), it is being unloaded or loaded again ("Failed for
# execute the inference request. Model 'generator_engine' is not ready.") or it is gone for the moment.
_MODEL_DOWN = re.compile(r"Stub process '[^']*' is not healthy|Model '[^']*' is not ready|"
                         r"unknown model|has no available versions")


def model_down(message: str) -> bool:
    """Whether a model's error says that the model is down for now (the watchdog is reloading it)."""
    return _MODEL_DOWN.search(message) is not None


def error_response(pb_utils, step: str, message: str, *, invalid_argument: bool = True):
    code = pb_utils.TritonError.INVALID_ARG if invalid_argument else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{step}: {message}", code))


def error_code(pb_utils, message: str):
    """The TritonError code an `exception_response` message stands for (see BUSY, INTERNAL)."""
    _, _, text = message.partition(": ")
    if text.startswith((f"{BUSY}: ", f"{DEADLINE}: ")):
        return pb_utils.TritonError.UNAVAILABLE
    if text.startswith(f"{CANCELLED}: "):
        return _cancelled_code(pb_utils)
    if text.startswith(f"{INTERNAL}: "):
        return pb_utils.TritonError.INTERNAL
    return pb_utils.TritonError.INVALID_ARG


def exception_response(pb_utils, step: str, error: BaseException):
    """Bad input -> INVALID_ARG with its message; a full server -> UNAVAILABLE; anything else is a bug."""
    if isinstance(error, InputError):
        return error_response(pb_utils, error.step or step, str(error))
    for word, kind in _KIND_WORDS.items():
        if isinstance(error, kind):
            message = f"{step}: {word}: {error}"
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, error_code(pb_utils, message)))
    return error_response(pb_utils, step, f"{INTERNAL}: {type(error).__name__}: {error}", invalid_argument=False)


def _cancelled_code(pb_utils):
    return getattr(pb_utils.TritonError, "CANCELLED", pb_utils.TritonError.UNAVAILABLE)


def respond_each(pb_utils, step: str, requests: list, handle: Callable) -> list:
    """Exactly one response per request; a failing request gets its own error and never its neighbours'."""
    responses = []
    for request in requests:
        try:
            responses.append(handle(request))
        except Exception as error:  # a bug must fail this request, not the batch or the stub
            if not isinstance(error, InputError):
                log.exception("%s failed", step)
            responses.append(exception_response(pb_utils, step, error))
    return responses


def read(pb_utils, request, tensor: Tensor) -> np.ndarray | None:
    """The request's tensor as numpy, None when an optional input was not sent."""
    found = pb_utils.get_input_tensor_by_name(request, tensor.name)
    if found is None:
        if tensor.optional:
            return None
        raise InputError(f"missing input {tensor.name!r}")
    return found.as_numpy()


def read_rows(pb_utils, request, tensor: Tensor) -> list | None:
    """One value per row of the request's batch: a Python scalar/bytes for per-row [1] tensors, else an array.

    A request may carry several rows (a client batch); None when an optional input was not sent.
    """
    array = read(pb_utils, request, tensor)
    if array is None:
        return None
    if tensor.dims != (1,):
        return list(array)
    if array.ndim != 2 or array.shape[1] != 1:
        raise InputError(f"{tensor.name} must have shape [batch, 1], got {list(array.shape)}")
    return [value if isinstance(value, bytes) else value.item() for value in array[:, 0]]


def output_rows(pb_utils, tensor: Tensor, values: list) -> object:
    """Stack one value per row into the output tensor (batch axis first)."""
    array = np.stack([np.asarray(v, dtype=_NUMPY_DTYPES[tensor.dtype]) for v in values])
    return pb_utils.Tensor(tensor.name, array.reshape((len(values),) + (array.shape[1:] or (1,))))


def query_outputs(pb_utils, query) -> list:
    """The router-token and task outputs of a `QueryBatch`, for `query_preprocess` and `preprocess` alike."""
    return [
        output_rows(pb_utils, P.INPUT_IDS, query.input_ids),
        output_rows(pb_utils, P.ATTENTION_MASK, query.attention_mask),
        output_rows(pb_utils, P.QUESTION, [q.encode() for q in query.questions]),
        output_rows(pb_utils, P.FORCED_TASK, query.forced_tasks),
        output_rows(pb_utils, P.FORCED_BY, [f.encode() for f in query.forced_by]),
    ]
