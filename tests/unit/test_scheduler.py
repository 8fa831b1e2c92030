"""The generator's scheduler thread: answers equal the static engine's, short requests overtake long ones,
bad input and faults stay with their own request, the queues stay bounded."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch

from minivlm.errors import DeadlineExceededError, InputError, RequestCancelledError, ServerBusyError
from minivlm.processing.prompts import clean_answer
from minivlm.serving.config import GeneratorEngineConfig
from minivlm.serving.generator_engine import GenerationRequest, GeneratorEngine
from minivlm.serving.options import RequestOptions
from minivlm.serving.metrics import GeneratorMetrics
from minivlm.serving.scheduler import Scheduler
from vlm_client.protocol import NO_TASK, ROUTED_BY_TAG, TASKS

GREEDY = dict(temperature=0.0)


@pytest.fixture(scope="module")
def engine(tiny_vlm):
    return GeneratorEngine(tiny_vlm.language_model, tiny_vlm.tokenizer, GeneratorEngineConfig(min_router_confidence=0.0))


@pytest.fixture(scope="module")
def images(tiny_vlm):
    pixels = torch.rand((6, 3, 224, 224), generator=torch.Generator().manual_seed(3)) * 2 - 1
    return [e.numpy() for e in tiny_vlm.encode_images(pixels)]


def ask(image, task: str, question: str = "", **options) -> GenerationRequest:
    one_hot = np.eye(len(TASKS))[TASKS.index(task)]
    return GenerationRequest(image, one_hot, question, task_scores=one_hot, forced_task=TASKS.index(task),
                             forced_by=ROUTED_BY_TAG, options=RequestOptions(**options))


def compound(image) -> GenerationRequest:
    """Routed, not tagged: the scores ask for a caption and the objects."""
    return GenerationRequest(image, np.array([0.6, 0.3, 0.1]), "describe it and find the objects",
                             task_scores=np.array([0.9, 0.8, 0.1]), forced_task=NO_TASK,
                             options=RequestOptions(max_new_tokens=7, temperature=0.0))


class Outcomes:
    """Collects what `deliver` gets, in arrival order."""

    def __init__(self):
        self.done: dict[str, object] = {}
        self.order: list[str] = []
        self.event = threading.Condition()

    def deliver(self, name: str):
        def callback(outcome):
            with self.event:
                self.done[name] = outcome
                self.order.append(name)
                self.event.notify_all()
        return callback

    def wait(self, count: int, timeout_s: float = 120.0) -> None:
        with self.event:
            assert self.event.wait_for(lambda: len(self.done) >= count, timeout_s), self.done.keys()


@pytest.fixture
def scheduler(engine):
    running = Scheduler(engine, max_live_rows=4).start()
    yield running
    running.close()


def test_answers_equal_the_static_engines_including_multi_row_and_compound(engine, scheduler, images):
    requests = {
        "caption": [ask(images[0], "caption", max_new_tokens=9, **GREEDY)],
        "od+vqa rows": [ask(images[1], "od", max_new_tokens=14, **GREEDY),
                        ask(images[2], "vqa", "what colour is the car?", max_new_tokens=5)],
        "compound": [compound(images[3])],
        "seeded": [ask(images[4], "caption", max_new_tokens=8, temperature=1.0, top_p=0.9, seed=11)],
        "vqa": [ask(images[5], "vqa", "how many?", **GREEDY)],
    }
    outcomes = Outcomes()
    for name, rows in requests.items():                     # 7 rows > 4 live: some wait for a slot
        scheduler.submit(rows, outcomes.deliver(name))
    outcomes.wait(len(requests))
    for name, rows in requests.items():
        assert outcomes.done[name] == engine.run(rows), name
    assert [p.task for p in outcomes.done["compound"][0].parts] == ["caption", "od"]
    assert scheduler.mode == "continuous"


@pytest.mark.parametrize("continuous", [True, False])
def test_a_short_request_overtakes_a_long_one_only_when_batching_is_continuous(engine, images, continuous):
    scheduler = Scheduler(engine, max_live_rows=4, continuous=continuous)
    step = scheduler.batch.step
    # A step of at least 2 ms, as a real model's: the tiny one's 400 steps could otherwise all run while the
    # short request is still being prefilled on a busy machine, and the order would say nothing.
    scheduler.batch.step = lambda: (time.sleep(0.002), step())[1]
    scheduler.start()
    try:
        outcomes = Outcomes()
        scheduler.submit([ask(images[0], "od", max_new_tokens=400, json_constraint=False, **GREEDY)],
                         outcomes.deliver("long"))
        time.sleep(0.05)                                      # the long one is decoding
        scheduler.submit([ask(images[1], "vqa", "is it red?", max_new_tokens=2, **GREEDY)],
                         outcomes.deliver("short"))
        outcomes.wait(2)
    finally:
        scheduler.close()
    assert outcomes.done["long"][0].parts[0].completion_tokens == 400
    assert outcomes.order == (["short", "long"] if continuous else ["long", "short"])


def test_a_bad_request_gets_its_own_error_and_its_neighbours_their_answers(engine, scheduler, images):
    outcomes = Outcomes()
    scheduler.submit([ask(images[0], "caption", max_new_tokens=4, **GREEDY)], outcomes.deliver("good"))
    scheduler.submit([ask(images[1], "caption", max_new_tokens=4), ask(images[2], "vqa")], outcomes.deliver("bad"))
    scheduler.submit([ask(images[3], "caption", max_new_tokens=600)], outcomes.deliver("too long"))
    outcomes.wait(3)
    assert isinstance(outcomes.done["bad"], InputError) and "needs a question" in str(outcomes.done["bad"])
    assert isinstance(outcomes.done["too long"], InputError) and "600" in str(outcomes.done["too long"])
    assert outcomes.done["good"] == engine.run([ask(images[0], "caption", max_new_tokens=4, **GREEDY)])


def test_a_decoding_fault_fails_the_batch_and_the_scheduler_goes_on(engine, scheduler, images, monkeypatch):
    outcomes = Outcomes()
    original = type(scheduler.batch).step
    monkeypatch.setattr(type(scheduler.batch), "step", lambda self: (_ for _ in ()).throw(RuntimeError("boom")))
    scheduler.submit([ask(images[0], "caption", max_new_tokens=3, **GREEDY)], outcomes.deliver("victim"))
    outcomes.wait(1)
    monkeypatch.setattr(type(scheduler.batch), "step", original)
    scheduler.submit([ask(images[1], "caption", max_new_tokens=3, **GREEDY)], outcomes.deliver("after"))
    outcomes.wait(2)
    assert isinstance(outcomes.done["victim"], RuntimeError)
    assert outcomes.done["after"] == engine.run([ask(images[1], "caption", max_new_tokens=3, **GREEDY)])


def test_a_fault_while_planning_fails_that_request_only(engine, scheduler, images, monkeypatch):
    outcomes = Outcomes()
    monkeypatch.setattr(engine, "jobs", lambda *args: (_ for _ in ()).throw(KeyError("oops")))
    scheduler.submit([ask(images[0], "caption", max_new_tokens=3, **GREEDY)], outcomes.deliver("victim"))
    outcomes.wait(1)
    monkeypatch.undo()
    scheduler.submit([ask(images[1], "caption", max_new_tokens=3, **GREEDY)], outcomes.deliver("after"))
    outcomes.wait(2)
    assert isinstance(outcomes.done["victim"], KeyError)
    assert outcomes.done["after"] == engine.run([ask(images[1], "caption", max_new_tokens=3, **GREEDY)])


def test_waiting_requests_are_bounded(engine, images):
    scheduler = Scheduler(engine, max_live_rows=2, max_waiting_requests=3)      # not started: nothing leaves
    outcomes = Outcomes()
    for i in range(3):
        scheduler.submit([ask(images[i], "caption")], outcomes.deliver(str(i)))
    with pytest.raises(ServerBusyError, match="max_waiting_requests=3"):
        scheduler.submit([ask(images[3], "caption")], outcomes.deliver("3"))
    scheduler.close()
    scheduler.start()                                         # sees the close first
    outcomes.wait(3)                                          # closing answers every request, with an error
    assert all(isinstance(o, ServerBusyError) for o in outcomes.done.values())
    with pytest.raises(ServerBusyError, match="shutting down"):
        scheduler.submit([ask(images[0], "caption")], outcomes.deliver("late"))


def test_warm_up_and_the_static_fallback(engine, images):
    scheduler = Scheduler(engine, continuous=False).start()
    try:
        scheduler.warm_up()
        assert scheduler.mode == "static"
        outcomes = Outcomes()
        rows = [ask(images[0], "od", max_new_tokens=6, **GREEDY), ask(images[1], "caption", max_new_tokens=3, **GREEDY)]
        scheduler.submit(rows, outcomes.deliver("two rows"))
        outcomes.wait(1)
        assert outcomes.done["two rows"] == engine.run(rows)
    finally:
        scheduler.close()


def test_models_the_fast_decoder_does_not_implement_get_static_batches(engine, monkeypatch):
    """A GPU instance or a Llama variant the fast decoder refuses: HF's forward, whole batches."""
    import minivlm.serving.scheduler as continuous

    monkeypatch.setattr(continuous, "supports_fast_decoder", lambda model: False)
    scheduler = Scheduler(engine, continuous=True)
    assert scheduler.mode == "static" and isinstance(scheduler.batch, continuous.StaticBatch)


@pytest.mark.parametrize("overlap", [True, False])
def test_prompts_are_prefilled_while_the_live_rows_decode_only_when_overlapped(engine, images, monkeypatch, overlap):
    """The prefill thread: a new prompt does not stall the rows already decoding (it would on one thread)."""
    import minivlm.decoding.batch as continuous

    scheduler = Scheduler(engine, max_live_rows=4, overlap_prefill=overlap)
    steps, seen = [0], {}
    original_step, original_prefill = continuous.ContinuousBatch.step, continuous.ContinuousBatch.prefill

    def counting_step(self):
        steps[0] += 1
        return original_step(self)

    def slow_prefill(self, jobs):
        before = steps[0]
        time.sleep(0.3)                     # a full-size prompt takes ~0.5 s
        prefilled = original_prefill(self, jobs)
        seen[jobs[0].key[0].rows[0].options.max_new_tokens] = steps[0] - before
        return prefilled

    monkeypatch.setattr(continuous.ContinuousBatch, "step", counting_step)
    monkeypatch.setattr(continuous.ContinuousBatch, "prefill", slow_prefill)
    scheduler.start()
    try:
        assert scheduler.mode == ("continuous" if overlap else "continuous_inline")
        outcomes = Outcomes()
        long_request, short_request = (ask(images[0], "od", max_new_tokens=400, json_constraint=False, **GREEDY),
                                       ask(images[1], "vqa", "is it red?", max_new_tokens=3, **GREEDY))
        scheduler.submit([long_request], outcomes.deliver("long"))
        while steps[0] < 3:                  # the long one is decoding
            time.sleep(0.005)
        scheduler.submit([short_request], outcomes.deliver("short"))
        outcomes.wait(2)
    finally:
        scheduler.close()
    assert (seen[3] > 0) == overlap, seen          # steps of the long row ran during the short one's prefill
    assert outcomes.done["short"] == engine.run([short_request])
    assert outcomes.done["long"] == engine.run([long_request])


def test_a_fault_while_prefilling_fails_that_request_only(engine, scheduler, images, monkeypatch):
    import minivlm.decoding.batch as continuous

    original = continuous.ContinuousBatch.prefill

    def failing_prefill(self, jobs):
        if jobs[0].key[0].rows[0].question == "boom?":
            raise RuntimeError("prefill broke")
        return original(self, jobs)

    monkeypatch.setattr(continuous.ContinuousBatch, "prefill", failing_prefill)
    outcomes = Outcomes()
    long_request = ask(images[0], "od", max_new_tokens=60, json_constraint=False, **GREEDY)
    scheduler.submit([long_request], outcomes.deliver("long"))
    scheduler.submit([ask(images[1], "vqa", "boom?", **GREEDY), ask(images[2], "caption", max_new_tokens=4)],
                     outcomes.deliver("victim"))
    outcomes.wait(2)
    assert isinstance(outcomes.done["victim"], RuntimeError) and "prefill broke" in str(outcomes.done["victim"])
    assert outcomes.done["long"] == engine.run([long_request])
    assert outcomes.order == ["victim", "long"]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_opt_in_decoder_precisions_serve_through_the_same_scheduler(engine, images, precision):
    scheduler = Scheduler(engine, max_live_rows=4, precision=precision).start()
    try:
        assert scheduler.batch.decoder.precision == precision
        outcomes = Outcomes()
        rows = [ask(images[0], "od", max_new_tokens=12, **GREEDY), ask(images[1], "vqa", "is it red?", **GREEDY)]
        scheduler.submit(rows, outcomes.deliver("two rows"))
        outcomes.wait(1)
    finally:
        scheduler.close()
    answer = outcomes.done["two rows"]
    assert not isinstance(answer, BaseException), answer
    assert [row.parts[0].task for row in answer] == ["od", "vqa"]
    assert 0 < answer[0].parts[0].completion_tokens <= 12


def test_decoder_precisions_need_the_continuous_fast_decoder(engine):
    with pytest.raises(ValueError, match="needs continuous batching"):
        Scheduler(engine, continuous=False, precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        Scheduler(engine, precision="fp8")


@pytest.mark.parametrize("continuous", [True, False])
def test_streamed_pieces_join_to_the_first_parts_raw_text_before_the_answer(engine, images, continuous):
    scheduler = Scheduler(engine, max_live_rows=4, continuous=continuous).start()
    events, done = [], threading.Event()
    try:
        for name, rows in (("caption", [ask(images[0], "caption", max_new_tokens=14, **GREEDY)]),
                           ("compound", [compound(images[3])])):
            events.clear()
            done.clear()
            scheduler.submit(rows, lambda outcome: (events.append(outcome), done.set()),
                             on_text=lambda piece: events.append(piece))
            assert done.wait(60)
            answer = events[-1]
            assert answer == engine.run(rows), name                       # streaming changes no answer
            pieces = events[:-1]
            assert all(isinstance(p, str) and p for p in pieces)
            assert clean_answer("".join(pieces)) == answer[0].parts[0].text, name
            assert len(pieces) > 1 if continuous else len(pieces) == 1     # piece by piece / in one piece
        with pytest.raises(InputError, match="one row per request"):
            scheduler.submit([ask(images[0], "caption"), ask(images[1], "caption")], lambda outcome: None,
                             on_text=lambda piece: None)
    finally:
        scheduler.close()


class RecordingMetrics:
    """The python backend's metrics API (MetricFamily, .Metric, increment/set/observe), recorded."""

    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

    def __init__(self, name, description, kind):
        self.name, self.kind, self.series = name, kind, {}
        RecordingMetrics.families[name] = self

    def Metric(self, labels, buckets=None):  # noqa: N802 - the backend's name
        series = RecordingSeries()
        self.series[tuple(sorted(labels.items()))] = series
        return series

    @classmethod
    def value(cls, name, **labels):
        return cls.families[name].series[tuple(sorted(labels.items()))]


class RecordingSeries:
    def __init__(self):
        self.total, self.observed = 0.0, []

    def increment(self, value):
        self.total += value

    def set(self, value):
        self.total = value

    def observe(self, value):
        self.observed.append(value)


def test_metrics_record_each_answer_its_timings_and_refusals(engine, images):
    RecordingMetrics.families = {}
    pb_utils = type("pb_utils", (), {"MetricFamily": RecordingMetrics})
    scheduler = Scheduler(engine, max_live_rows=4, metrics=GeneratorMetrics(pb_utils)).start()
    try:
        outcomes = Outcomes()
        scheduler.submit([ask(images[0], "caption", max_new_tokens=5, **GREEDY)], outcomes.deliver("caption"))
        scheduler.submit([ask(images[1], "od", max_new_tokens=30, **GREEDY)], outcomes.deliver("od"))
        scheduler.submit([compound(images[2])], outcomes.deliver("compound"))
        scheduler.submit([ask(images[3], "vqa", "is it red?", max_new_tokens=0)], outcomes.deliver("bad"))
        outcomes.wait(4)
    finally:
        scheduler.close()
    assert isinstance(outcomes.done["bad"], InputError)
    value = RecordingMetrics.value
    assert value("vlm_requests_total", routing="tag", task="caption").total == 1
    assert value("vlm_requests_total", routing="tag", task="od").total == 1
    assert value("vlm_requests_total", routing="router", task="caption+od").total == 1
    assert value("vlm_refused_requests_total", reason="invalid_request").total == 1
    assert len(value("vlm_router_confidence").observed) == 1              # tagged requests are not the router's
    answers = [part for name in ("caption", "od", "compound") for part in outcomes.done[name][0].parts]
    for task in ("caption", "od"):
        parts = [p for p in answers if p.task == task]
        assert value("vlm_generated_tokens_total", task=task).total == sum(p.completion_tokens for p in parts)
        assert len(value("vlm_time_to_first_token_seconds", task=task).observed) == len(parts)
        assert all(0 < s < 60 for s in value("vlm_time_to_first_token_seconds", task=task).observed)
    assert value("vlm_detection_answers_total", outcome="parsed").total == 2    # JSON by construction
    assert value("vlm_live_decode_rows").total == 0 and value("vlm_waiting_requests").total == 0


def test_every_answer_carries_its_queue_prefill_and_decode_times(engine, images):
    scheduler = Scheduler(engine, max_live_rows=1).start()           # one slot: the second request queues
    try:
        outcomes = Outcomes()
        start = time.monotonic()
        scheduler.submit([ask(images[0], "caption", max_new_tokens=12, **GREEDY)], outcomes.deliver("first"))
        scheduler.submit([compound(images[1])], outcomes.deliver("second"))
        outcomes.wait(2)
        elapsed = time.monotonic() - start
    finally:
        scheduler.close()
    first, second = outcomes.done["first"][0].timings, outcomes.done["second"][0].timings
    for timings in (first, second):
        assert timings.prefill_s > 0 and timings.decode_s > 0
        assert timings.queue_s + timings.prefill_s + timings.decode_s <= elapsed
    assert second.queue_s >= 0.5 * (first.prefill_s + first.decode_s)    # it waited for the only slot


def _slow_steps(scheduler: Scheduler, seconds: float = 0.002) -> Scheduler:
    """A step of at least `seconds`, as a real model's, so a deadline falls mid-decode on any machine."""
    step = scheduler.batch.step
    scheduler.batch.step = lambda: (time.sleep(seconds), step())[1]
    return scheduler


def _idle_row_steps(scheduler: Scheduler) -> int:
    """The scheduler's row-step count once nothing decodes any more (it must stop moving)."""
    before = -1
    while before != scheduler.row_steps:
        before = scheduler.row_steps
        time.sleep(0.1)
    return before


def test_an_expired_request_leaves_the_batch_and_its_neighbour_decodes_on_unchanged(engine, images):
    long_od = dict(max_new_tokens=150, json_constraint=False, **GREEDY)
    alone = engine.run([ask(images[1], "od", **long_od)])[0]
    scheduler = _slow_steps(Scheduler(engine, max_live_rows=4)).start()
    try:
        outcomes = Outcomes()
        scheduler.submit([ask(images[0], "od", **long_od)], outcomes.deliver("expires"),
                         deadline=time.monotonic() + 0.15)
        scheduler.submit([ask(images[1], "od", **long_od)], outcomes.deliver("neighbour"))
        outcomes.wait(2)
        steps = _idle_row_steps(scheduler)
    finally:
        scheduler.close()
    error = outcomes.done["expires"]
    assert isinstance(error, DeadlineExceededError) and "deadline" in str(error), error
    assert outcomes.order == ["expires", "neighbour"]
    assert outcomes.done["neighbour"][0] == alone                  # the rows that stayed decode as if alone
    assert alone.parts[0].completion_tokens == 150
    # The neighbour took 150 row steps; the expired request far fewer than its 150 (it stopped at its deadline).
    expired_steps = steps - 150
    assert 0 < expired_steps < 120, steps


def test_a_cancelled_request_leaves_the_batch_at_the_next_poll(engine, images):
    cancelled = threading.Event()
    scheduler = _slow_steps(Scheduler(engine, max_live_rows=4)).start()
    try:
        outcomes = Outcomes()
        scheduler.submit([ask(images[0], "od", max_new_tokens=400, json_constraint=False, **GREEDY)],
                         outcomes.deliver("cancelled"), cancelled=cancelled.is_set)
        time.sleep(0.1)
        cancelled.set()
        outcomes.wait(1)
        steps = _idle_row_steps(scheduler)
    finally:
        scheduler.close()
    assert isinstance(outcomes.done["cancelled"], RequestCancelledError)
    assert 0 < steps < 400


def test_a_request_that_expires_while_waiting_never_decodes(engine, images):
    scheduler = _slow_steps(Scheduler(engine, max_live_rows=1)).start()
    try:
        outcomes = Outcomes()
        scheduler.submit([ask(images[0], "od", max_new_tokens=100, json_constraint=False, **GREEDY)],
                         outcomes.deliver("long"))
        scheduler.submit([ask(images[1], "caption", max_new_tokens=5, **GREEDY)], outcomes.deliver("waits"),
                         deadline=time.monotonic() + 0.05)
        outcomes.wait(2)
        steps = _idle_row_steps(scheduler)
    finally:
        scheduler.close()
    assert isinstance(outcomes.done["waits"], DeadlineExceededError)
    assert "after 0 decode steps" in str(outcomes.done["waits"])
    assert outcomes.done["long"][0].parts[0].completion_tokens == 100 and steps == 100
    assert scheduler._waiting == 0


def test_every_request_answered_or_refused_leaves_once_for_the_admission_door(engine, images):
    left = []
    scheduler = Scheduler(engine, max_live_rows=2, on_leave=lambda: left.append(1)).start()
    try:
        scheduler.warm_up()                                  # never passed the door: no ring
        assert left == []
        outcomes = Outcomes()
        scheduler.submit([ask(images[0], "caption", max_new_tokens=3, **GREEDY)], outcomes.deliver("good"))
        scheduler.submit([ask(images[1], "vqa", "?", max_new_tokens=0)], outcomes.deliver("bad"))
        outcomes.wait(2)
        assert len(left) == 2
        scheduler.note_refusal(ServerBusyError("64 requests are waiting"))   # what execute reports for submit
        assert len(left) == 3
    finally:
        scheduler.close()


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread nice values are a POSIX feature")
def test_the_decoding_thread_gives_way_to_prefill_and_answers_stay_the_same(engine, images):
    """decode_nice lowers only the decoding thread's priority (the prefill thread keeps the stub's), and the
    tokens do not depend on it."""
    rows = [ask(images[0], "caption", max_new_tokens=4, **GREEDY)]
    scheduler = Scheduler(engine, decode_nice=7).start()
    try:
        scheduler.warm_up()
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, scheduler._thread.native_id) == min(19, base + 7)
        assert os.getpriority(os.PRIO_PROCESS, scheduler._prefill_thread.native_id) == base
        outcomes = Outcomes()
        scheduler.submit(rows, outcomes.deliver("niced"))
        outcomes.wait(1)
        assert outcomes.done["niced"] == engine.run(rows)
    finally:
        scheduler.close()
