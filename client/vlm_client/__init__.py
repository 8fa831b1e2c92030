"""Thin Python client for the mini-VLM Triton ensembles `vlm` and `route` (no torch).

>>> from vlm_client import VLMClient
>>> with VLMClient("localhost:8001") as client:
...     answer = client.ask("cat.jpg", "what is in the picture?")
"""
from . import protocol
from .aio import AsyncVLMClient
from .errors import DeadlineExceeded, InvalidRequest, Overloaded, ServerError, VLMError
from .sdk import VLMClient
from .step_times import StepTimes, StepTimesUnavailable
from .types import Answer, AnswerPart, DetectedObject, Route, StreamChunk

__all__ = ["VLMClient", "AsyncVLMClient", "VLMError", "InvalidRequest", "Overloaded", "ServerError",
           "DeadlineExceeded", "Answer", "AnswerPart", "DetectedObject", "Route",
           "StreamChunk", "StepTimes", "StepTimesUnavailable", "protocol"]
