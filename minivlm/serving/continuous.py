"""The generator's scheduler: one thread keeps a batch decoding while requests join and leave it.

`submit` (called from Triton's execute) only queues a request and returns; the scheduler thread validates it,
turns it into decoder rows (one per row and task of a compound query), admits rows into free slots of the
live batch between decode steps, runs the steps, and calls the request's `deliver` once with all its answers
(or once with its error) when its last row finishes. Nobody waits for a batch to drain: a VQA answer of 10
tokens leaves while a 150-token detection decodes on.

Bounds: at most `max_live_rows` rows decode at once (rows past it wait for a free slot, first come first
served) and at most `max_waiting_requests` requests wait to be admitted; `submit` refuses more with
`ServerBusyError`. The model and the tokenizer are used from the scheduler thread only.

`continuous=False`, or a model the fast decoder does not implement (HF's forward, a GPU), gives the static
fallback: the rows waiting when the previous batch finished decode together to the end.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ..continuous import ContinuousBatch, Job, StaticBatch
from ..decoder import fast_decoder, supports_fast_decoder
from ..errors import InputError, ServerBusyError
from ..generation import Generation
from .generator_engine import GenerationRequest, GenerationResult, GeneratorEngine, warm_up_request

log = logging.getLogger(__name__)

Deliver = Callable[[list[GenerationResult] | BaseException], None]


@dataclass(eq=False)
class _Ticket:
    """One submitted request: its rows, their plans, the generations that came back so far."""
    rows: list[GenerationRequest]
    deliver: Deliver
    plans: list = field(default_factory=list)
    jobs: deque[Job] = field(default_factory=deque)         # not admitted yet
    generations: dict[tuple[int, int], Generation] = field(default_factory=dict)
    expected: int = 0


class Scheduler:
    def __init__(self, engine: GeneratorEngine, *, max_live_rows: int = 16, max_waiting_requests: int = 64,
                 continuous: bool = True):
        if max_waiting_requests < 1:
            raise ValueError(f"max_waiting_requests must be >= 1, got {max_waiting_requests}")
        self.engine, self.max_live_rows, self.max_waiting_requests = engine, max_live_rows, max_waiting_requests
        self.continuous = continuous and supports_fast_decoder(engine.language_model)
        self.batch = self._new_batch()
        self._cond = threading.Condition()
        self._inbox: list[_Ticket] = []          # submitted, not seen by the thread yet (under _cond)
        self._waiting = 0                        # submitted, some rows not admitted yet (under _cond)
        self._queue: deque[_Ticket] = deque()    # planned, some rows not admitted yet (thread only)
        self._active: set[_Ticket] = set()       # some rows admitted, not delivered yet (thread only)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="generator-scheduler", daemon=True)

    @property
    def mode(self) -> str:
        return "continuous" if self.continuous else "static"

    def _new_batch(self) -> ContinuousBatch | StaticBatch:
        lm, eos = self.engine.language_model, int(self.engine.tokenizer.eos_token_id)
        if self.continuous:
            return ContinuousBatch(fast_decoder(lm), eos, max_rows=self.max_live_rows)
        return StaticBatch(lm, eos, max_rows=self.max_live_rows)

    # --- the caller's side ------------------------------------------------------------------------------------
    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def submit(self, rows: list[GenerationRequest], deliver: Deliver) -> None:
        """Queue one request (its rows answer together); `deliver` is called once, from the scheduler thread."""
        with self._cond:
            if self._closed:
                raise ServerBusyError("the generator is shutting down")
            if self._waiting >= self.max_waiting_requests:
                raise ServerBusyError(f"{self._waiting} requests are waiting for a decoding slot "
                                      f"(max_waiting_requests={self.max_waiting_requests}); retry later")
            self._inbox.append(_Ticket(list(rows), deliver))
            self._waiting += 1
            self._cond.notify()

    def warm_up(self, *, timeout_s: float = 600.0) -> None:
        """One short request through the running thread: the first real one pays no lazy initialization."""
        done, outcome = threading.Event(), []
        self.submit([warm_up_request(self.engine.language_model.config.hidden_size)],
                    lambda result: (outcome.append(result), done.set()))
        if not done.wait(timeout_s):
            raise TimeoutError(f"the scheduler's warm-up took over {timeout_s} s")
        if isinstance(outcome[0], BaseException):
            raise outcome[0]

    def close(self, *, timeout_s: float = 30.0) -> None:
        """Stop after the current step; requests not answered yet get a ServerBusyError."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # --- the scheduler thread ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._closed or self._inbox or self._queue or self._active):
                    self._cond.wait()
                if self._closed:
                    break
                new, self._inbox = self._inbox, []
            for ticket in new:
                self._plan(ticket)
            try:
                self._admit()
                finished = self.batch.step()
            except Exception as error:  # a decoding fault: the requests in the batch fail, the rest go on
                log.exception("generator batch failed")
                self._fail(list(self._active), error)
                self.batch = self._new_batch()
                continue
            for key, generation in finished:
                self._finish(key, generation)
        self._fail(list(self._active) + list(self._queue) + self._inbox,
                   ServerBusyError("the generator is shutting down"))

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
        """First come first served: whole requests in order, split across steps when slots run out."""
        jobs = []
        while self._queue and len(jobs) < self.batch.free_rows:
            ticket = self._queue[0]
            while ticket.jobs and len(jobs) < self.batch.free_rows:
                jobs.append(ticket.jobs.popleft())
            self._active.add(ticket)
            if not ticket.jobs:
                self._queue.popleft()
                self._settled()
        self.batch.admit(jobs)

    def _finish(self, key: tuple[_Ticket, int, int], generation: Generation) -> None:
        ticket, row, part = key
        ticket.generations[row, part] = generation
        if len(ticket.generations) < ticket.expected:
            return
        self._active.discard(ticket)
        try:
            results = [self.engine.result(request, plan, [ticket.generations[i, k] for k in range(len(plan.parts))])
                       for i, (request, plan) in enumerate(zip(ticket.rows, ticket.plans))]
        except Exception as error:  # a bug in answer building fails this request only
            log.exception("building the generator's answer failed")
            results = error
        self._deliver(ticket, results)

    def _fail(self, tickets: list[_Ticket], error: BaseException) -> None:
        for ticket in dict.fromkeys(tickets):     # once each, in order
            self._active.discard(ticket)
            if ticket in self._queue:
                self._queue.remove(ticket)
                self._settled()
            self._deliver(ticket, error)

    def _settled(self) -> None:
        """A request left the waiting count: all its rows were admitted, or it failed before they were."""
        with self._cond:
            self._waiting -= 1

    @staticmethod
    def _deliver(ticket: _Ticket, outcome) -> None:
        try:
            ticket.deliver(outcome)
        except Exception:  # the response could not be sent (client gone): nothing else to tell
            log.exception("delivering a generator answer failed")
