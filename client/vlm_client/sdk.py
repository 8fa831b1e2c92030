"""Synchronous client for the `vlm` and `route` ensembles, and the request building it shares with aio.

Requests are built as ``{protocol.Tensor: numpy array}`` first (testable without a server), then turned into
tritonclient inputs. Every tensor has a batch axis, so one request is shape [1, *dims].
"""
from __future__ import annotations

import importlib
import io
import numbers
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Union

import numpy as np
from tritonclient.utils import triton_to_np_dtype

from . import protocol as proto
from .errors import Overloaded, VLMError, translate_errors
from .step_times import StepTimes, admin_headers, engine_step_times, model_step_times, settled
from .types import Answer, Route, StreamChunk, parse_answer, parse_routes

DEFAULT_URLS = {"grpc": "localhost:8001", "http": "localhost:8000"}
DEFAULT_TIMEOUT_S = 60.0
# The server gives up on a request at its deadline (`timeout_s`, counted from when the generator receives it);
# the client waits this much longer, so the server's clear "deadline exceeded" arrives before its own timeout.
CLIENT_GRACE_S = 1.0
STATISTICS_POLLS, STATISTICS_POLL_S = 20, 0.05   # ask_traced: how long to wait for the steps' statistics
_MODULES = {("grpc", False): "tritonclient.grpc", ("http", False): "tritonclient.http",
            ("grpc", True): "tritonclient.grpc.aio", ("http", True): "tritonclient.http.aio"}

ImageInput = Union[bytes, bytearray, memoryview, str, os.PathLike, Any]   # Any: a PIL.Image.Image
Arrays = dict[proto.Tensor, np.ndarray]


# --- request building -------------------------------------------------------------------------------------
def encode_image(image: ImageInput) -> bytes:
    """Encoded image bytes from bytes, a file path, or a PIL image (sent as PNG)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        data = Path(image).read_bytes()
    elif _is_pil_image(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        raise TypeError(f"image must be bytes, a path or a PIL.Image, got {type(image).__name__}")
    if not data:
        raise ValueError(f"image {image!r} is empty (0 bytes)")
    return data


def _is_pil_image(obj: Any) -> bool:
    # A caller holding a PIL image has imported PIL already; never import it (or anything heavy) ourselves.
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(obj, pil.Image)


def check_task(task: str | None) -> None:
    if task is not None and task not in proto.TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(proto.TASKS)}")


def _column(tensor: proto.Tensor, values: Sequence[Any]) -> np.ndarray:
    """One element per request row: shape (B, *dims) in the tensor's numpy dtype."""
    return np.array(values, dtype=triton_to_np_dtype(tensor.dtype)).reshape(-1, *tensor.dims)


def _text(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    return value.encode("utf-8")


def _number(tensor: proto.Tensor, value: Any) -> np.ndarray:
    """A generation option as a [1, 1] array; only the type and wire range are checked, the server owns
    the valid range."""
    dtype = np.dtype(triton_to_np_dtype(tensor.dtype))
    integral = dtype.kind == "i"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integral else numbers.Real):
        raise TypeError(f"{tensor.name} must be {'an integer' if integral else 'a number'}, got {value!r}")
    if integral and not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
        raise ValueError(f"{tensor.name} {value} does not fit {tensor.dtype}")
    return _column(tensor, [value])


def ask_arrays(image: ImageInput, query: str, *, task: str | None = None, max_new_tokens: int | None = None,
               temperature: float | None = None, top_p: float | None = None, seed: int | None = None,
               json_constraint: bool | None = None) -> Arrays:
    """Inputs of one `vlm` request; options left as None are omitted so the server's defaults apply.
    `json_constraint=False` lets a detection answer leave the JSON grammar (it is on by default)."""
    check_task(task)
    arrays = {proto.IMAGE: _column(proto.IMAGE, [encode_image(image)]),
              proto.QUERY: _column(proto.QUERY, [_text("query", query)])}
    if task is not None:
        arrays[proto.TASK_OVERRIDE] = _column(proto.TASK_OVERRIDE, [task.encode()])
    options = {proto.MAX_NEW_TOKENS: max_new_tokens, proto.TEMPERATURE: temperature, proto.TOP_P: top_p,
               proto.SEED: seed}
    arrays.update({t: _number(t, v) for t, v in options.items() if v is not None})
    if json_constraint is not None:
        if not isinstance(json_constraint, (bool, np.bool_)):
            raise TypeError(f"json_constraint must be True or False, got {json_constraint!r}")
        arrays[proto.JSON_CONSTRAINT] = _column(proto.JSON_CONSTRAINT, [bool(json_constraint)])
    return arrays


def route_arrays(queries: Sequence[str], *, task: str | None = None) -> Arrays:
    """Inputs of one `route` request carrying every query as a batch row."""
    check_task(task)
    arrays = {proto.QUERY: _column(proto.QUERY, [_text("query", q) for q in queries])}
    if task is not None:
        arrays[proto.TASK_OVERRIDE] = _column(proto.TASK_OVERRIDE, [task.encode()] * len(queries))
    return arrays


def infer_inputs(tc: ModuleType, arrays: Arrays) -> list[Any]:
    """tritonclient InferInputs (of module `tc`: tritonclient.grpc, .http or their aio) from `arrays`."""
    inputs = []
    for tensor, array in arrays.items():
        item = tc.InferInput(tensor.name, list(array.shape), tensor.dtype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def max_batch_size(config: Mapping[str, Any]) -> int:
    config = config.get("config", config)   # gRPC's JSON wraps the model config; HTTP's does not
    return max(1, int(config.get("max_batch_size", 1)))


def chunked(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# --- the clients ------------------------------------------------------------------------------------------
def _tls_files(protocol: str, ca: str | Path | None, cert: str | Path | None,
               key: str | Path | None) -> dict[str, str] | None:
    """tritonclient's gRPC TLS arguments from PEM file paths, each checked to exist; None without TLS."""
    if ca is None and cert is None and key is None:
        return None
    if protocol != "grpc":
        raise ValueError("TLS is for protocol='grpc': Triton's HTTP endpoint has no TLS (put a proxy in front)")
    if ca is None or (cert is None) != (key is None):
        raise ValueError("TLS needs tls_ca, and tls_cert and tls_key together (or neither)")
    files = {"root_certificates": ca, "certificate_chain": cert, "private_key": key}
    for path in filter(None, files.values()):
        if not Path(path).is_file():
            raise FileNotFoundError(f"TLS file not found: {path}")
    return {name: str(path) for name, path in files.items() if path is not None}


class _ClientBase:
    """Settings and protocol differences shared by VLMClient and AsyncVLMClient."""
    _aio = False

    def __init__(self, url: str | None = None, *, protocol: str = "grpc",
                 timeout_s: float = DEFAULT_TIMEOUT_S, model_name: str = proto.ENSEMBLE,
                 route_model_name: str = proto.ROUTE_ENSEMBLE, stream_model_name: str = proto.STREAM_ENSEMBLE,
                 retries: int = 2, retry_backoff_s: float = 0.25, tls_ca: str | Path | None = None,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None):
        """`retries`: how often an `Overloaded` answer (refused before any work) is sent again, after
        `retry_backoff_s`, then twice that, and so on; nothing else is retried. `tls_ca` (PEM file of the CA
        that signed the server's certificate) turns on gRPC TLS; `tls_cert` + `tls_key` add the client's
        certificate for a server that asks for one (mutual TLS)."""
        if protocol not in DEFAULT_URLS:
            raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(DEFAULT_URLS)}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if retries < 0 or retry_backoff_s < 0:
            raise ValueError(f"retries and retry_backoff_s must be >= 0, got {retries!r}, {retry_backoff_s!r}")
        self.retries, self.retry_backoff_s = int(retries), float(retry_backoff_s)
        self.tls = _tls_files(protocol, tls_ca, tls_cert, tls_key)
        self.url = url or DEFAULT_URLS[protocol]
        self.protocol = protocol
        self.timeout_s = float(timeout_s)
        self.model_name = model_name
        self.route_model_name = route_model_name
        self.stream_model_name = stream_model_name
        self._tc = importlib.import_module(_MODULES[protocol, self._aio])   # only the protocol in use
        self._route_batch: int | None = None
        self._triton_client: Any = None   # made on first use: the aio clients need a running event loop
        self._stream_lock = threading.Lock()   # a tritonclient gRPC client holds one stream at a time

    def _client(self) -> Any:
        if self._triton_client is None:
            with self._errors():
                self._triton_client = self._new_triton_client()
        return self._triton_client

    def _new_triton_client(self) -> Any:
        if self.protocol == "grpc":
            if self.tls is None:
                return self._tc.InferenceServerClient(self.url)
            return self._tc.InferenceServerClient(self.url, ssl=True, **self.tls)
        if self._aio:
            return self._tc.InferenceServerClient(self.url, conn_timeout=self.timeout_s + CLIENT_GRACE_S)
        return self._tc.InferenceServerClient(self.url, connection_timeout=self.timeout_s + CLIENT_GRACE_S,
                                              network_timeout=self.timeout_s + CLIENT_GRACE_S)

    def _call_kwargs(self) -> dict[str, Any]:
        # gRPC takes a deadline per call; the HTTP clients were given theirs at construction.
        return {"client_timeout": self.timeout_s + CLIENT_GRACE_S} if self.protocol == "grpc" else {}

    def _infer_kwargs(self) -> dict[str, Any]:
        """An infer call's: the client's wait, and the deadline sent to the server (Triton's per-request
        `timeout`, in microseconds), which frees the request's decoding rows once it passes."""
        return self._call_kwargs() | {"timeout": self.server_timeout_us}

    @property
    def server_timeout_us(self) -> int:
        return max(1, round(self.timeout_s * 1e6))

    def _config_kwargs(self) -> dict[str, Any]:
        return {**self._call_kwargs(), "as_json": True} if self.protocol == "grpc" else {}

    def _errors(self):
        return translate_errors(self.url)

    def _retry_delays(self) -> list[float | None]:
        """The pause before each further attempt; None marks the last attempt."""
        return [self.retry_backoff_s * 2 ** i for i in range(self.retries)] + [None]

    def _stream_arrays(self, image: ImageInput, query: str, **options: Any) -> Arrays:
        if self.protocol != "grpc":
            raise VLMError("streaming needs protocol='grpc' (Triton's HTTP endpoint has no streaming)")
        return ask_arrays(image, query, **options) | {proto.STREAM: np.array([[True]])}

    def _stream_chunk(self, result: Any, error: Any) -> tuple[StreamChunk | None, bool]:
        """One response of a `vlm_stream` call -> (its chunk: a piece of text or the answer; whether it was the
        last). Raises VLMError for an error response."""
        if error is not None:
            with self._errors():
                raise error
        response = result.get_response()
        present = {output.name for output in response.outputs}
        chunk = None
        if present >= {t.name for t in proto.ENSEMBLE_OUTPUTS}:
            chunk = StreamChunk(answer=parse_answer(_as_arrays(result, proto.ENSEMBLE_OUTPUTS)))
        elif proto.TEXT.name in present:
            chunk = StreamChunk(text=result.as_numpy(proto.TEXT.name).item().decode("utf-8"))
        return chunk, response.parameters["triton_final_response"].bool_param

    def _outputs(self, tensors: Iterable[proto.Tensor]) -> list[Any]:
        return [self._tc.InferRequestedOutput(t.name) for t in tensors]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, protocol={self.protocol!r}, model_name={self.model_name!r})"


def _as_arrays(result: Any, tensors: Iterable[proto.Tensor]) -> dict[str, np.ndarray]:
    return {t.name: result.as_numpy(t.name) for t in tensors}


class VLMClient(_ClientBase):
    """Blocking client. Raises VLMError for every server or connection failure.

    >>> with VLMClient("localhost:8001") as client:
    ...     print(client.ask("cat.jpg", "what is in the picture?").text)
    """

    def ask(self, image: ImageInput, query: str, *, task: str | None = None, max_new_tokens: int | None = None,
            temperature: float | None = None, top_p: float | None = None, seed: int | None = None,
            json_constraint: bool | None = None) -> Answer:
        """Answer `query` about `image`; `task` (one of protocol.TASKS) overrides the router."""
        arrays = ask_arrays(image, query, task=task, max_new_tokens=max_new_tokens, temperature=temperature,
                            top_p=top_p, seed=seed, json_constraint=json_constraint)
        return parse_answer(self._infer(self.model_name, arrays, proto.ENSEMBLE_OUTPUTS))

    def ask_traced(self, image: ImageInput, query: str, *, admin_key: str, task: str | None = None,
                   max_new_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                   seed: int | None = None, json_constraint: bool | None = None) -> tuple[Answer, StepTimes]:
        """`ask`, and where the request's time went: preprocess, router, vision encoder (the server's
        statistics, read with `admin_key`: the key in `vlm serve`'s --admin-key-file) and queue, prefill, decode
        (reported by generator_engine). Sent once, never retried, so its wall time is one request's. Raises
        StepTimesUnavailable when another request ran a step meanwhile (the statistics are server-wide)."""
        arrays = ask_arrays(image, query, task=task, max_new_tokens=max_new_tokens, temperature=temperature,
                            top_p=top_p, seed=seed, json_constraint=json_constraint)
        headers = admin_headers(self.protocol, admin_key)
        with self._errors():
            client = self._client()
            before = self._statistics(client, headers)
            start = time.perf_counter()
            result = client.infer(self.model_name, infer_inputs(self._tc, arrays),
                                  outputs=self._outputs(proto.ANSWER_OUTPUTS), **self._infer_kwargs())
            total_s = time.perf_counter() - start
            after = self._statistics(client, headers)
            for _ in range(STATISTICS_POLLS):
                if settled(before, after):
                    break
                time.sleep(STATISTICS_POLL_S)
                after = self._statistics(client, headers)
        outputs = _as_arrays(result, proto.ANSWER_OUTPUTS)
        steps = model_step_times(before, after) | engine_step_times(outputs[proto.TIMINGS.name].item().decode())
        return parse_answer(outputs), StepTimes(steps, total_s)

    def _statistics(self, client: Any, headers: dict[str, str]) -> dict[str, Any]:
        """Every model's inference statistics as JSON (a restricted API: `headers` carry the admin key)."""
        return client.get_inference_statistics("", headers=headers, **self._config_kwargs())

    def ask_stream(self, image: ImageInput, query: str, *, task: str | None = None,
                   max_new_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                   seed: int | None = None, json_constraint: bool | None = None) -> Iterator[StreamChunk]:
        """`ask`, with the answer's text as it is decoded (gRPC only, the `vlm_stream` ensemble): yields
        StreamChunk(text=piece) while decoding, then StreamChunk(answer=...) with what `ask` would return.
        The pieces are the first answer part's raw text; the final answer's `text` is cleaned (stripped, tag
        residue removed). One stream at a time per client: concurrent calls wait for each other."""
        arrays = self._stream_arrays(image, query, task=task, max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_p=top_p, seed=seed,
                                     json_constraint=json_constraint)
        events: queue.Queue = queue.Queue()
        with self._stream_lock:
            with self._errors():
                client = self._client()
                client.start_stream(callback=lambda result, error: events.put((result, error)),
                                    stream_timeout=self.timeout_s + CLIENT_GRACE_S)
            try:
                with self._errors():
                    client.async_stream_infer(self.stream_model_name, infer_inputs(self._tc, arrays),
                                              enable_empty_final_response=True, timeout=self.server_timeout_us)
                yield from self._stream_events(events)
            finally:
                client.stop_stream()

    def _stream_events(self, events: queue.Queue) -> Iterator[StreamChunk]:
        while True:
            try:
                result, error = events.get(timeout=self.timeout_s + CLIENT_GRACE_S)
            except queue.Empty:
                raise VLMError(f"no streamed response from {self.url} within {self.timeout_s:g} s") from None
            chunk, final = self._stream_chunk(result, error)
            if chunk is not None:
                yield chunk
            if final:
                return

    def route(self, query: str, *, task: str | None = None) -> Route:
        """The task `query` would be routed to, without generating anything."""
        outputs = self._infer(self.route_model_name, route_arrays([query], task=task), proto.ROUTE_OUTPUTS)
        return parse_routes(outputs)[0]

    def route_many(self, queries: Iterable[str]) -> list[Route]:
        """Route many queries, as few requests as the server's max batch size allows."""
        queries = list(queries)
        if not queries:
            return []
        routes: list[Route] = []
        for chunk in chunked(queries, self._route_batch_size()):
            outputs = self._infer(self.route_model_name, route_arrays(chunk), proto.ROUTE_OUTPUTS)
            routes += parse_routes(outputs)
        return routes

    def is_ready(self) -> bool:
        """True when both ensembles are ready; False when not, or when the server is unreachable."""
        try:
            with self._errors():
                return all(self._client().is_model_ready(m, **self._call_kwargs())
                           for m in (self.model_name, self.route_model_name))
        except VLMError:
            return False

    def close(self) -> None:
        if self._triton_client is not None:
            self._triton_client.close()
            self._triton_client = None

    def __enter__(self) -> VLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _infer(self, model: str, arrays: Arrays, outputs: Sequence[proto.Tensor]) -> dict[str, np.ndarray]:
        for delay_s in self._retry_delays():
            try:
                with self._errors():
                    result = self._client().infer(model, infer_inputs(self._tc, arrays),
                                                  outputs=self._outputs(outputs), **self._infer_kwargs())
                return _as_arrays(result, outputs)
            except Overloaded:
                if delay_s is None:
                    raise
                time.sleep(delay_s)
        raise AssertionError("unreachable: the last attempt raises")

    def _route_batch_size(self) -> int:
        if self._route_batch is None:
            with self._errors():
                config = self._client().get_model_config(self.route_model_name, **self._config_kwargs())
            self._route_batch = max_batch_size(config)
        return self._route_batch
