"""asyncio client: the same API as VLMClient over tritonclient.grpc.aio / tritonclient.http.aio."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import numpy as np

from . import protocol as proto
from .errors import Overloaded, VLMError, translate_errors
from .sdk import (
    CLIENT_GRACE_S,
    Arrays,
    ImageInput,
    _as_arrays,
    _ClientBase,
    ask_arrays,
    chunked,
    infer_inputs,
    max_batch_size,
    route_arrays,
)
from .types import Answer, Route, StreamChunk, parse_answer, parse_routes


class AsyncVLMClient(_ClientBase):
    """Non-blocking client. Raises VLMError for every server or connection failure.

    >>> async with AsyncVLMClient("localhost:8001") as client:
    ...     answer = await client.ask("cat.jpg", "what is in the picture?")
    """
    _aio = True

    async def ask(self, image: ImageInput, query: str, *, task: str | None = None,
                  max_new_tokens: int | None = None, temperature: float | None = None,
                  top_p: float | None = None, seed: int | None = None,
                  json_constraint: bool | None = None) -> Answer:
        """Answer `query` about `image`; `task` (one of protocol.TASKS) overrides the router."""
        arrays = ask_arrays(image, query, task=task, max_new_tokens=max_new_tokens, temperature=temperature,
                            top_p=top_p, seed=seed, json_constraint=json_constraint)
        return parse_answer(await self._infer(self.model_name, arrays, proto.ENSEMBLE_OUTPUTS))

    async def ask_stream(self, image: ImageInput, query: str, *, task: str | None = None,
                         max_new_tokens: int | None = None, temperature: float | None = None,
                         top_p: float | None = None, seed: int | None = None,
                         json_constraint: bool | None = None) -> AsyncIterator[StreamChunk]:
        """`VLMClient.ask_stream` for asyncio: `async for chunk in client.ask_stream(...)`."""
        arrays = self._stream_arrays(image, query, task=task, max_new_tokens=max_new_tokens,
                                     temperature=temperature, top_p=top_p, seed=seed,
                                     json_constraint=json_constraint)

        async def request() -> AsyncIterator[dict]:
            yield {"model_name": self.stream_model_name, "inputs": infer_inputs(self._tc, arrays),
                   "enable_empty_final_response": True, "timeout": self.server_timeout_us}

        with self._errors():
            responses = self._client().stream_infer(request(), stream_timeout=self.timeout_s + CLIENT_GRACE_S)
            async for result, error in responses:
                chunk, final = self._stream_chunk(result, error)
                if chunk is not None:
                    yield chunk
                if final:
                    return

    async def route(self, query: str, *, task: str | None = None) -> Route:
        """The task `query` would be routed to, without generating anything."""
        outputs = await self._infer(self.route_model_name, route_arrays([query], task=task),
                                    proto.ROUTE_OUTPUTS)
        return parse_routes(outputs)[0]

    async def route_many(self, queries: Iterable[str]) -> list[Route]:
        """Route many queries: batches of the server's max batch size, sent concurrently."""
        queries = list(queries)
        if not queries:
            return []
        size = await self._route_batch_size()
        results = await asyncio.gather(*(self._infer(self.route_model_name, route_arrays(chunk),
                                                     proto.ROUTE_OUTPUTS) for chunk in chunked(queries, size)))
        return [route for outputs in results for route in parse_routes(outputs)]

    async def is_ready(self) -> bool:
        """True when both ensembles are ready; False when not, or when the server is unreachable."""
        try:
            with self._errors():
                for model in (self.model_name, self.route_model_name):
                    if not await self._client().is_model_ready(model, **self._call_kwargs()):
                        return False
                return True
        except VLMError:
            return False

    async def close(self) -> None:
        if self._triton_client is not None:
            await self._triton_client.close()
            self._triton_client = None

    async def __aenter__(self) -> AsyncVLMClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _errors(self):
        # aiohttp reports some failures (bad responses, closed sessions) with errors that are not OSErrors.
        extra: tuple[type[BaseException], ...] = ()
        if self.protocol == "http":
            import aiohttp  # only http.aio users have it loaded, and need it
            extra = (aiohttp.ClientError,)
        return translate_errors(self.url, extra)

    async def _infer(self, model: str, arrays: Arrays,
                     outputs: Sequence[proto.Tensor]) -> dict[str, np.ndarray]:
        for delay_s in self._retry_delays():
            try:
                with self._errors():
                    result = await self._client().infer(model, infer_inputs(self._tc, arrays),
                                                        outputs=self._outputs(outputs), **self._infer_kwargs())
                return _as_arrays(result, outputs)
            except Overloaded:
                if delay_s is None:
                    raise
                await asyncio.sleep(delay_s)
        raise AssertionError("unreachable: the last attempt raises")

    async def _route_batch_size(self) -> int:
        if self._route_batch is None:
            with self._errors():
                config: Any = await self._client().get_model_config(self.route_model_name,
                                                                    **self._config_kwargs())
            self._route_batch = max_batch_size(config)
        return self._route_batch
