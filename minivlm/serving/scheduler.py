"""The generator's scheduler: one thread keeps a batch decoding while requests join and leave it.

`submit` (called from Triton's execute) only queues a request and returns; the scheduler thread validates it,
turns it into decoder rows (one per row and task of a compound query), admits rows into free slots of the
live batch between decode steps, runs the steps, and calls the request's `deliver` once with all its answers
(or once with its error) when its last row finishes. Nobody waits for a batch to drain: a VQA answer of 10
tokens leaves while a 150-token detection decodes on.

Deadlines and cancellation (`submit(..., deadline=..., cancelled=...)`): before every step the thread fails the
requests whose deadline (a `time.monotonic()` instant) passed with `DeadlineExceededError`, and, every
`CANCEL_POLL_S`, those whose `cancelled()` says so with `RequestCancelledError`; their rows leave the live
batch before that step (or the queue, or are not joined when their prefill comes back), so an abandoned
150-token request stops costing decode steps. `row_steps` counts the rows decoded, summed over steps.

Bounds: at most `max_live_rows` rows decode at once (rows past it wait for a free slot, first come first
served) and at most `max_waiting_requests` requests wait to be admitted; `submit` refuses more with
`ServerBusyError`. The model and the tokenizer are used from the scheduler thread only.

Prompts are prefilled on a second thread (`overlap_prefill`, on by default): a full-size prompt takes ~0.5 s,
which on the scheduler thread would stall every live row for as long; on its own thread it runs on another
core while the live rows decode (the decoder releases the GIL in its kernels, and with one torch thread each
the two threads do not contend for a pool), and the prefilled rows join the batch between two steps. Rows
being prefilled hold their slot, so `max_live_rows` still bounds the rows that decode at once.

`precision` picks the decoder's weight format: "fp32" (HF's greedy tokens exactly) or the opt-in "bf16" /
"int8", faster with an accuracy cost (`minivlm/decoding/llama_decoder.py`, docs/benchmarks.md); "auto" (the
default) is fp32 on the CPU and bf16 on CUDA (`minivlm/decoding/device.py`).

Devices: the engine's language model decides. On CUDA (a KIND_GPU instance) the same scheduler and decoder
run there, prefill on a CUDA stream of its own (docs/gpu.md).

Streaming (`submit(..., on_text=...)`, one-row requests): after each step the new text of the request's first
answer part goes to `on_text` (raw decoded text, held back while it ends inside a multi-byte character; the
pieces join to that part's whole raw text); the final answer still comes once through `deliver`, after the
last piece. Static batches send the text in one piece when the row finishes.

`continuous=False`, or a model the fast decoder does not implement (a Llama variant, a device other than the
CPU and CUDA), gives the static fallback: the rows waiting when the previous batch finished decode together to the end.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

from minivlm.decoding.batch import ContinuousBatch, Job, Prefilled, StaticBatch
from minivlm.decoding.device import AUTO, model_device, resolve_precision
from minivlm.decoding.llama_decoder import fast_decoder, supports_fast_decoder
from minivlm.decoding.sampling import Generation
from minivlm.errors import DeadlineExceededError, InputError, RequestCancelledError, ServerBusyError
from minivlm.serving.config import GeneratorEngineConfig
from minivlm.serving.generator_engine import GenerationRequest, GenerationResult, GeneratorEngine, warm_up_request
from minivlm.serving.metrics import GeneratorMetrics, PartTiming, detection_outcome, refusal_reason
from minivlm.serving.timings import EngineTimings

log = logging.getLogger(__name__)


Deliver = Callable[[list[GenerationResult] | BaseException], None]
CANCEL_POLL_S = 0.5       # asking Triton whether a request was cancelled is a message to the server process


@dataclass(eq=False)
class _Ticket:
    """One submitted request: its rows, their plans, the generations that came back so far."""
    rows: list[GenerationRequest]
    deliver: Deliver
    plans: list = field(default_factory=list)
    jobs: deque[Job] = field(default_factory=deque)         # not admitted yet
    generations: dict[tuple[int, int], Generation] = field(default_factory=dict)
    expected: int = 0
    submitted: float = field(default_factory=time.monotonic)
    admitted: float | None = None         # its first rows were handed to prefill (left the queue)
    first_token: dict[tuple[int, int], float] = field(default_factory=dict)    # (row, part) -> when
    finished: dict[tuple[int, int], float] = field(default_factory=dict)
    delivered: bool = False      # answered or failed: rows of it still decoding are ignored
    on_text: Callable[[str], None] | None = None    # streaming: the next piece of its first part's text
    streamed: str = ""           # the text sent to on_text so far
    deadline: float | None = None         # time.monotonic() after which it fails with DeadlineExceededError
    cancelled: Callable[[], bool] | None = None     # whether the client cancelled it
    steps: int = 0               # decode steps its rows took part in (a step with two of its rows counts once)


class Scheduler:
    def __init__(self, engine: GeneratorEngine, *, max_live_rows: int = 16, max_waiting_requests: int = 64,
                 continuous: bool = True, overlap_prefill: bool = True, precision: str = AUTO,
                 decode_nice: int = 0, metrics: GeneratorMetrics | None = None,
                 on_leave: Callable[[], None] | None = None):
        """`metrics`: where answered requests, their timings and the load are recorded (None: nowhere).
        `on_leave`: called once per request answered or refused (the admission door's bell,
        minivlm/serving/admission.py)."""
        self.metrics, self.on_leave = metrics, on_leave
        if max_waiting_requests < 1:
            raise ValueError(f"max_waiting_requests must be >= 1, got {max_waiting_requests}")
        self.engine, self.max_live_rows, self.max_waiting_requests = engine, max_live_rows, max_waiting_requests
        self.continuous = continuous and supports_fast_decoder(engine.language_model)
        self.overlap_prefill = overlap_prefill and self.continuous
        if self.continuous:
            precision = resolve_precision(precision, model_device(engine.language_model))
        elif precision == AUTO:
            precision = "fp32"
        elif precision != "fp32":                           # HF's forward has no such weight format
            raise ValueError(f"decoder precision {precision!r} needs continuous batching on the fast decoder; "
                             f"this generator {'runs static batches' if continuous else 'has batching=static'}")
        self.precision, self.decode_nice = precision, decode_nice
        self.batch = self._new_batch()
        self._cond = threading.Condition()
        self._inbox: list[_Ticket] = []          # submitted, not seen by the thread yet (under _cond)
        self._waiting = 0                        # submitted, some rows not admitted yet (under _cond)
        self._queue: deque[_Ticket] = deque()    # planned, some rows not admitted yet (thread only)
        self._active: set[_Ticket] = set()       # some rows admitted, not delivered yet (thread only)
        self._prefilling = 0                     # rows handed to the prefill thread, not joined yet (thread only)
        self._prefilled: list[tuple[list[Job], Prefilled | BaseException]] = []   # back from it (under _cond)
        self._to_prefill: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._closed = False
        self.row_steps = 0                       # rows decoded, summed over steps (thread only; read anywhere)
        self._unreported_row_steps = 0           # not added to the metrics yet
        self._cancel_polled = 0.0
        self._thread = threading.Thread(target=self._loop, name="generator-scheduler", daemon=True)
        self._prefill_thread = threading.Thread(target=self._prefill_loop, name="generator-prefill", daemon=True)

    @classmethod
    def from_config(cls, engine: GeneratorEngine, config: GeneratorEngineConfig, *,
                    metrics: GeneratorMetrics | None = None, on_leave: Callable[[], None] | None = None) -> Scheduler:
        """batching: prefill on its own thread ("continuous"), on the scheduler's ("continuous_inline"), or
        static batches."""
        return cls(engine, max_live_rows=config.max_live_rows, max_waiting_requests=config.max_waiting_requests,
                   continuous=config.batching != "static", overlap_prefill=config.batching == "continuous",
                   precision=config.decoder_precision, decode_nice=config.decode_nice, metrics=metrics,
                   on_leave=on_leave)

    @property
    def mode(self) -> str:
        if not self.continuous:
            return "static"
        return "continuous" if self.overlap_prefill else "continuous_inline"

    def _new_batch(self) -> ContinuousBatch | StaticBatch:
        lm, eos = self.engine.language_model, int(self.engine.tokenizer.eos_token_id)
        if self.continuous:
            return ContinuousBatch(fast_decoder(lm, precision=self.precision), eos, max_rows=self.max_live_rows)
        return StaticBatch(lm, eos, max_rows=self.max_live_rows)

    # --- the caller's side ------------------------------------------------------------------------------------
    def start(self) -> Scheduler:
        if self.overlap_prefill:
            self._prefill_thread.start()
        self._thread.start()
        return self

    def submit(self, rows: list[GenerationRequest], deliver: Deliver, *,
               on_text: Callable[[str], None] | None = None, deadline: float | None = None,
               cancelled: Callable[[], bool] | None = None) -> None:
        """Queue one request (its rows answer together); `deliver` is called once, from the scheduler thread.
        `on_text` (one-row requests only) streams its text as it is decoded, from the same thread. `deadline`
        (time.monotonic()) and `cancelled` end it early (the module's docstring)."""
        if on_text is not None and len(rows) != 1:
            raise InputError(f"streaming needs one row per request, got {len(rows)}")
        with self._cond:
            if self._closed:
                raise ServerBusyError("the generator is shutting down")
            if self._waiting >= self.max_waiting_requests:
                raise ServerBusyError(f"{self._waiting} requests are waiting for a decoding slot "
                                      f"(max_waiting_requests={self.max_waiting_requests}); retry later")
            self._inbox.append(_Ticket(list(rows), deliver, on_text=on_text, deadline=deadline,
                                       cancelled=cancelled))
            self._waiting += 1
            self._cond.notify()

    def warm_up(self, *, timeout_s: float = 600.0) -> None:
        """One short request through the running thread: the first real one pays no lazy initialization."""
        done, outcome = threading.Event(), []
        on_leave, self.on_leave = self.on_leave, None      # it never passed the admission door
        self.submit([warm_up_request(self.engine.language_model.config.hidden_size)],
                    lambda result: (outcome.append(result), done.set()))
        if not done.wait(timeout_s):
            raise TimeoutError(f"the scheduler's warm-up took over {timeout_s} s")
        self.on_leave = on_leave
        if isinstance(outcome[0], BaseException):
            raise outcome[0]

    def close(self, *, timeout_s: float = 30.0) -> None:
        """Stop after the current step; requests not answered yet get a ServerBusyError."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._to_prefill.put(None)
        if self._prefill_thread.is_alive():
            self._prefill_thread.join(timeout_s)

    # --- the scheduler thread ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        self._lower_decode_priority()
        while True:
            with self._cond:
                while not (self._closed or self._inbox or self._prefilled or self._has_work()):
                    self._cond.wait()
                if self._closed:
                    break
                new, self._inbox = self._inbox, []
                prefilled, self._prefilled = self._prefilled, []
            for ticket in new:
                self._plan(ticket)
            try:
                self._expire()
                for jobs, outcome in prefilled:
                    self._join(jobs, outcome)
                self._admit()
                self._count_step()
                finished = self.batch.step()
            except Exception as error:  # a decoding fault: the requests in the batch fail, the rest go on
                log.exception("generator batch failed")
                self._fail(list(self._active), error)
                self.batch = self._new_batch()
                continue
            self._first_tokens()
            for key, generation in finished:
                self._finish(key, generation)
            self._stream_text()
            if self.metrics is not None:
                self.metrics.load(live_rows=len(getattr(self.batch, "rows", ())) + self._prefilling,
                                  waiting=self._waiting)
                self._report_row_steps()
        self._fail(list(self._active) + list(self._queue) + self._inbox,
                   ServerBusyError("the generator is shutting down"))

    def _expire(self) -> None:
        """Fail the requests whose deadline passed (or, every CANCEL_POLL_S, that were cancelled); their rows
        leave the batch before the next step."""
        now = time.monotonic()
        poll = now - self._cancel_polled >= CANCEL_POLL_S
        if poll:
            self._cancel_polled = now
        ending: dict[_Ticket, BaseException] = {}
        for ticket in (*self._queue, *self._active):
            if ticket.deadline is not None and now >= ticket.deadline:
                ending[ticket] = DeadlineExceededError(
                    f"the request's deadline passed {now - ticket.deadline:.3f} s ago, "
                    f"{now - ticket.submitted:.3f} s after it reached the generator (timeout "
                    f"{ticket.deadline - ticket.submitted:.3f} s), after {ticket.steps} decode steps; "
                    f"its rows left the batch")
            elif poll and ticket.cancelled is not None and _asked(ticket.cancelled):
                ending[ticket] = RequestCancelledError(f"the client cancelled the request after "
                                                       f"{ticket.steps} decode steps; its rows left the batch")
        if not ending:
            return
        for ticket, error in ending.items():
            self._fail([ticket], error)
        self.batch.drop(lambda key: key[0].delivered)

    def _count_step(self) -> None:
        """Each live request's step count, and the rows the coming step decodes (continuous batches)."""
        if not self.continuous:
            return
        rows = self.batch.rows
        self.row_steps += len(rows)
        self._unreported_row_steps += len(rows)
        for ticket in {row.key[0] for row in rows}:
            ticket.steps += 1

    def _report_row_steps(self) -> None:
        """Add the row steps to the metrics in few messages: every 64 row steps, and whenever the batch is idle
        (so a reader of an idle server sees the exact count)."""
        if self._unreported_row_steps >= 64 or (self._unreported_row_steps and not self.batch.rows):
            self.metrics.decoded_rows(self._unreported_row_steps)
            self._unreported_row_steps = 0

    def _first_tokens(self) -> None:
        """When each live row produced its first token (continuous batches; a row that ends on its first token,
        or a static batch's, gets it in `_finish`). Always recorded: every answer carries its timings."""
        if not self.continuous:
            return
        now = time.monotonic()
        for row in self.batch.rows:
            ticket, index, part = row.key
            if len(row.tokens) == 1:
                ticket.first_token.setdefault((index, part), now)

    def _stream_text(self) -> None:
        """Each streaming request's new text since the last step (continuous batches: static ones have no rows
        decoding between steps, their text goes in one piece when the row finishes)."""
        if self.continuous:
            for row in self.batch.rows:
                self._stream_piece(row.key, row.tokens)

    def _stream_piece(self, key: tuple[_Ticket, int, int], tokens, *, last: bool = False) -> None:
        ticket, index, part = key
        if ticket.on_text is None or ticket.delivered or (index, part) != (0, 0):
            return
        text = self.engine.tokenizer.decode(list(tokens), skip_special_tokens=True)
        # a token may end inside a multi-byte character, or re-decode earlier text: wait for more tokens
        if len(text) == len(ticket.streamed) or not text.startswith(ticket.streamed) or \
                (text.endswith("\ufffd") and not last):
            return
        piece, ticket.streamed = text[len(ticket.streamed):], text
        try:
            ticket.on_text(piece)
        except Exception:  # the stream is gone (client left): the final answer will find out too
            log.exception("streaming generator text failed")

    def _has_work(self) -> bool:
        """Rows to step, or rows waiting with a free slot to go to (thread only)."""
        return bool(self.batch.rows) or (bool(self._queue) and self._free_slots() > 0)

    def _free_slots(self) -> int:
        return self.batch.free_rows - self._prefilling

    def _plan(self, ticket: _Ticket) -> None:
        """Validate and build the request's rows; a request with any bad row gets one error."""
        try:
            if not ticket.rows:
                raise InputError("the request has no rows")
            ticket.plans = [self.engine.plan(row) for row in ticket.rows]
            for index, (row, plan) in enumerate(zip(ticket.rows, ticket.plans)):
                ticket.jobs.extend(Job((ticket, index, part), job.prefix, job.params)
                                   for part, job in enumerate(self.engine.jobs(row, plan)))
        except Exception as error:  # InputError, or a bug: this request alone, the thread goes on
            if not isinstance(error, InputError):
                log.exception("planning a generator request failed")
            self._settled()
            self._deliver(ticket, error)
            return
        ticket.expected = len(ticket.jobs)
        self._queue.append(ticket)

    def _admit(self) -> None:
        """First come first served: whole requests in order, split across steps when slots run out. With
        `overlap_prefill` each request's rows go to the prefill thread (one prefill each, so the first request
        joins without waiting for the others' prompts); otherwise they are prefilled here."""
        chunks, free = [], self._free_slots()
        while self._queue and free > 0:
            ticket = self._queue[0]
            chunk = [ticket.jobs.popleft() for _ in range(min(free, len(ticket.jobs)))]
            chunks.append(chunk)
            free -= len(chunk)
            if ticket.admitted is None:
                ticket.admitted = time.monotonic()
            self._active.add(ticket)
            if not ticket.jobs:
                self._queue.popleft()
                self._settled()
        if not self.overlap_prefill:
            self.batch.admit([job for chunk in chunks for job in chunk])
            return
        for chunk in chunks:
            self._prefilling += len(chunk)
            self._to_prefill.put(chunk)

    def _join(self, jobs: list[Job], outcome: Prefilled | BaseException) -> None:
        """Rows back from the prefill thread join the batch, unless their request already failed (expired or
        cancelled meanwhile)."""
        self._prefilling -= len(jobs)
        tickets = list(dict.fromkeys(job.key[0] for job in jobs))
        if isinstance(outcome, BaseException):     # this request alone: its neighbours decode on
            self._fail(tickets, outcome)
        elif not all(ticket.delivered for ticket in tickets):
            self.batch.join(outcome)
            self.batch.drop(lambda key: key[0].delivered)

    def _lower_decode_priority(self) -> None:
        """On the CPU the decoding thread gives way to the threads a new request waits for: the prefill thread
        and the vision encoder's stub (same session, so the kernel weighs their nice values against each
        other). Rows already streaming slow a little while a new request's prompt and image are worked on,
        instead of the new request queueing behind them (time to first token; docs/benchmarks.md)."""
        if not self.decode_nice or model_device(self.engine.language_model).type != "cpu":
            return
        try:
            thread = threading.get_native_id()      # relative to the stub's own nice value, at most 19
            nice = min(19, os.getpriority(os.PRIO_PROCESS, thread) + self.decode_nice)
            os.setpriority(os.PRIO_PROCESS, thread, nice)
        except (OSError, AttributeError) as error:      # not Linux, or not allowed: decode at normal priority
            log.warning("could not lower the decoding thread's priority (decode_nice=%d): %s",
                        self.decode_nice, error)

    # --- the prefill thread -----------------------------------------------------------------------------------
    def _prefill_loop(self) -> None:
        while (jobs := self._to_prefill.get()) is not None:
            try:
                outcome = self.batch.prefill(jobs)
            except Exception as error:  # noqa: BLE001 - goes back to the scheduler thread, which fails the request
                log.exception("prefilling a generator request failed")
                outcome = error
            with self._cond:
                self._prefilled.append((jobs, outcome))
                self._cond.notify()

    def _finish(self, key: tuple[_Ticket, int, int], generation: Generation) -> None:
        ticket, row, part = key
        if ticket.delivered:                      # failed while this row decoded on
            return
        self._stream_piece(key, generation.token_ids, last=True)     # the rest of a streamed text
        ticket.generations[row, part] = generation
        ticket.finished[row, part] = now = time.monotonic()
        ticket.first_token.setdefault((row, part), now)
        if len(ticket.generations) < ticket.expected:
            return
        self._active.discard(ticket)
        try:
            results = [self.engine.result(request, plan, [ticket.generations[i, k] for k in range(len(plan.parts))])
                       for i, (request, plan) in enumerate(zip(ticket.rows, ticket.plans))]
            results = [replace(result, timings=self._timings(ticket, index)) for index, result in enumerate(results)]
        except Exception as error:  # a bug in answer building fails this request only
            log.exception("building the generator's answer failed")
            results = error
        self._deliver(ticket, results)
        if self.metrics is not None and not isinstance(results, BaseException):
            self._record(ticket, results)

    @staticmethod
    def _timings(ticket: _Ticket, row: int) -> EngineTimings:
        """One row's queue / prefill / decode spans (a request's rows share its queue and admission)."""
        parts = [key for key in ticket.finished if key[0] == row]
        return EngineTimings.from_marks(submitted=ticket.submitted, admitted=ticket.admitted or ticket.submitted,
                                        first_token=min(ticket.first_token[key] for key in parts),
                                        finished=max(ticket.finished[key] for key in parts))

    def _record(self, ticket: _Ticket, results: list[GenerationResult]) -> None:
        for index, result in enumerate(results):
            parts = [PartTiming(p.task, ticket.first_token[index, k] - ticket.submitted,
                                ticket.finished[index, k] - ticket.first_token[index, k], p.completion_tokens)
                     for k, p in enumerate(result.parts)]
            detection = next((p.detection for p in result.parts if p.detection is not None), None)
            self.metrics.answered(result.routing, result.task, result.confidence, parts,
                                  None if detection is None else detection_outcome(detection))

    def _fail(self, tickets: list[_Ticket], error: BaseException) -> None:
        for ticket in dict.fromkeys(tickets):     # once each, in order
            if ticket.delivered:                  # failed already (its prefill), rows of it decoded on
                continue
            self._active.discard(ticket)
            if ticket in self._queue:
                self._queue.remove(ticket)
                self._settled()
            self._deliver(ticket, error)

    def _settled(self) -> None:
        """A request left the waiting count: all its rows were admitted, or it failed before they were."""
        with self._cond:
            self._waiting -= 1

    def note_refusal(self, error: BaseException) -> None:
        """Count a request refused with `error` (bad input, a full queue, shutdown). The scheduler counts the
        refusals it delivers; the caller counts what `submit` raises."""
        self._count_refusal(error)
        self._left()

    def _count_refusal(self, error: BaseException) -> None:
        reason = refusal_reason(error)
        if self.metrics is not None and reason is not None:
            self.metrics.refused_request(reason)

    def _left(self) -> None:
        if self.on_leave is not None:
            self.on_leave()

    def _deliver(self, ticket: _Ticket, outcome) -> None:
        if isinstance(outcome, BaseException):
            self._count_refusal(outcome)
        self._left()
        ticket.delivered = True
        try:
            ticket.deliver(outcome)
        except Exception:  # the response could not be sent (client gone): nothing else to tell
            log.exception("delivering a generator answer failed")


def _asked(cancelled: Callable[[], bool]) -> bool:
    try:
        return bool(cancelled())
    except Exception:  # the server could not say (shutting down): decode on; the deadline still holds
        log.exception("checking a generator request for cancellation failed")
        return False


def deadline_from_timeout(timeout_us: int) -> float | None:
    """A Triton request's `timeout()` (microseconds from now; 0 = none) as a time.monotonic() deadline."""
    return None if timeout_us <= 0 else time.monotonic() + timeout_us / 1e6
