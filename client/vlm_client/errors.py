"""The client's exception types, and the translation of tritonclient and network errors into them.

Everything is a VLMError; what the server answered is one of three kinds, by its status:
`InvalidRequest` (INVALID_ARGUMENT, HTTP 400: fix the request, never retried), `Overloaded` (UNAVAILABLE,
HTTP 503 or 429: refused before any work, safe to retry later; the clients retry it with backoff) and
`ServerError` (INTERNAL, HTTP 500, anything else: the server's fault). `DeadlineExceeded`: the request's
deadline (the client's `timeout_s`, which the server also enforces) passed; the server's rows for it were freed
("generator: deadline exceeded: ...", UNAVAILABLE) or the client stopped waiting (DEADLINE_EXCEEDED, a read
timeout); not retried, its time is spent. A server that cannot be reached raises a plain VLMError with status
UNAVAILABLE (gRPC's word for it too).
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager

from tritonclient.utils import InferenceServerException

from . import protocol as proto

# What the server's error messages start with ("<step>: "): composing models and the preprocess halves.
STEPS = proto.ERROR_STEPS
# \b keeps e.g. "query_router:" from matching "router:"; Triton wraps the text in its own words before it.
_STEP_RE = re.compile(r"\b(" + "|".join(map(re.escape, STEPS)) + r")\s*:\s*(.*)", re.DOTALL)


class VLMError(Exception):
    """A failed request: `message` as the server (or network layer) said it, the pipeline `step` that
    failed (a name in STEPS, or None when unknown), the gRPC/HTTP `status` (or None), and `raw`, the full
    text as received."""

    def __init__(self, message: str, *, step: str | None = None, status: str | None = None,
                 raw: str | None = None):
        super().__init__(message)
        self.message = message
        self.step = step
        self.status = status
        self.raw = message if raw is None else raw

    def __str__(self) -> str:
        return f"{self.step}: {self.message}" if self.step else self.message


class InvalidRequest(VLMError):
    """The request is at fault (INVALID_ARGUMENT / HTTP 400); its message names the step and the problem."""


class Overloaded(VLMError):
    """The server refused the request for now (UNAVAILABLE / HTTP 503 or 429): safe to send again later."""


class ServerError(VLMError):
    """The server failed on a valid request (INTERNAL / HTTP 500 or another status)."""


class DeadlineExceeded(VLMError):
    """The request's deadline passed before its answer came (the server gave up on it, or the client stopped
    waiting); never retried."""


_KINDS: dict[str, type[VLMError]] = {"INVALID_ARGUMENT": InvalidRequest, "400": InvalidRequest,
                                     "UNAVAILABLE": Overloaded, "RESOURCE_EXHAUSTED": Overloaded,
                                     "503": Overloaded, "429": Overloaded,
                                     "DEADLINE_EXCEEDED": DeadlineExceeded, "504": DeadlineExceeded}


def split_step(text: str) -> tuple[str | None, str]:
    """("generator", "temperature must be ...") from "...wrapping...: generator: temperature must be ..."."""
    match = _STEP_RE.search(text)
    if match is None:
        return None, text
    return match.group(1), match.group(2).strip()


def _status_text(status: str | None) -> str | None:
    # gRPC gives "StatusCode.INVALID_ARGUMENT"; the enum prefix adds nothing.
    return status.removeprefix("StatusCode.") if status else None


# gRPC reports a server it cannot reach as UNAVAILABLE too: that is no answer from the server, not an overload.
_UNREACHABLE = re.compile(r"failed to connect|connection refused|dns resolution failed", re.IGNORECASE)


# While the server's watchdog reloads a crashed model (docs/operations.md), Triton answers NOT_FOUND / 400 for
# the ensembles it took down with it: the one status that does not say "try again", for a state that passes.
_RELOADING = re.compile(r"has no available versions|is not ready", re.IGNORECASE)


def from_server_exception(exc: InferenceServerException, url: str | None = None) -> VLMError:
    raw = exc.message() or str(exc)
    step, message = split_step(raw)
    status = _status_text(exc.status())
    if status == "UNAVAILABLE" and step is None and _UNREACHABLE.search(raw):
        return VLMError(f"cannot reach server at {url}: {raw}" if url else raw, status=status, raw=raw)
    if _RELOADING.search(raw):
        return Overloaded(message, step=step, status=status, raw=raw)
    if message.startswith("deadline exceeded:"):       # the server's own word: minivlm.serving.triton_glue
        return DeadlineExceeded(message, step=step, status=status, raw=raw)
    return _KINDS.get(status or "", ServerError)(message, step=step, status=status, raw=raw)


@contextmanager
def translate_errors(url: str, extra: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Re-raise tritonclient and connection errors as VLMError. Works around `await`s too.

    `extra` names transport-specific exception types (aiohttp's) that are not OSErrors; before Python 3.11
    asyncio.TimeoutError was not one either.
    """
    try:
        yield
    except InferenceServerException as exc:
        raise from_server_exception(exc, url) from exc
    except (OSError, asyncio.TimeoutError, *extra) as exc:   # refused, reset, timeout, DNS: HTTP raises them raw
        text = str(exc) or type(exc).__name__
        # gRPC's codes for the same failures, so callers check one vocabulary whatever the protocol.
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            raise DeadlineExceeded(f"no answer from {url} in time: {text}", status="DEADLINE_EXCEEDED") from exc
        raise VLMError(f"cannot reach server at {url}: {text}", status="UNAVAILABLE") from exc
