"""The package's exception types."""


class InputError(ValueError):
    """A request's input is unusable; the message names the problem and the offending value."""


class CheckpointError(ValueError):
    """A checkpoint file, key or tensor shape does not match what the model expects."""


class ExportParityError(RuntimeError):
    """An exported graph's outputs differ from PyTorch by more than the stated tolerance."""


class ServerBusyError(RuntimeError):
    """The server already holds as many requests as it is configured to; the client may retry later."""
