"""The package's exception types."""


class InputError(ValueError):
    """A request's input is unusable; the message names the problem and the offending value.

    `step`, when set, is the pipeline step the error message names instead of the model that raised it
    (the `preprocess` model reports "image_preprocess" or "query_preprocess").
    """

    def __init__(self, message: str, *, step: str | None = None):
        super().__init__(message)
        self.step = step


class CheckpointError(ValueError):
    """A checkpoint file, key or tensor shape does not match what the model expects."""


class ExportParityError(RuntimeError):
    """An exported graph's outputs differ from PyTorch by more than the stated tolerance."""


class ServerBusyError(RuntimeError):
    """The server already holds as many requests as it is configured to; the client may retry later."""


class DeadlineExceededError(RuntimeError):
    """The request's deadline (the client's `timeout`) passed before its answer was ready; its rows left the
    batch. Not retried by the client: its time is spent."""


class RequestCancelledError(RuntimeError):
    """The client cancelled the request (Triton reported it) before its answer was ready."""
