"""JobHandler: validation, claiming, delivery counting, classification and dead-lettering."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

import invresilience as ir
from invresilience._codec import fingerprint
from invresilience._core.dlq import letter_id_for_key
from invresilience.backends.memory import MemoryBackend
from invresilience.exceptions import (
    ConfigurationError,
    DeadLetterQueueFullError,
    IdempotencyKeyReuseError,
    LeaseLostError,
    RateLimitedError,
)
from invresilience.testing import ManualClock


class FatalError(Exception):
    """An error the handlers below classify as fatal."""


class World:
    """A memory backend, a guard, a dead-letter queue and a scripted handler."""

    def __init__(self, **options: Any) -> None:
        self.clock = ManualClock()
        self.backend = MemoryBackend(clock=self.clock)
        self.store = self.backend.idempotency_store()
        self.guard = ir.Idempotency(self.store, lease=10.0, clock=self.clock, heartbeat=False)
        self.dlq = self.backend.dead_letter_queue("jobs")
        self.calls: list[Any] = []
        self.script: dict[str, list[BaseException | object]] = {}
        options.setdefault("idempotency", self.guard)
        options.setdefault("max_deliveries", 3)
        options.setdefault("fatal", FatalError)
        options.setdefault("backoff", ir.Backoff.constant(2.0))
        self.handler = ir.JobHandler(
            self.handle, key=lambda job: job["id"], dead_letters=self.dlq, **options
        )

    def handle(self, job: dict[str, Any]) -> object:
        self.calls.append(job["id"])
        steps = self.script.get(job["id"])
        step = steps.pop(0) if steps else {"done": job["id"]}
        if isinstance(step, BaseException):
            raise step
        return step


def test_a_job_runs_once_and_its_replay_returns_the_stored_result() -> None:
    """The first delivery runs the handler; the next one replays without running it."""
    w = World()
    assert ir.Done({"done": "a"}) == w.handler.process({"id": "a"})
    assert ir.Replayed({"done": "a"}) == w.handler.process({"id": "a"})
    assert ["a"] == w.calls


def test_every_outcome_says_whether_to_acknowledge() -> None:
    """Done, Replayed and DeadLettered acknowledge; RetryLater does not."""
    assert ir.Done().ack
    assert ir.Replayed().ack
    assert ir.DeadLettered("manual").ack
    assert not ir.RetryLater(1.0).ack


def test_a_message_failing_validation_is_dead_lettered_as_invalid() -> None:
    """The validation hook's error is recorded with the raw message; the handler never runs."""

    def validate(raw: object) -> dict[str, Any]:
        if not isinstance(raw, dict) or "id" not in raw:
            raise ValueError("missing field 'id'")
        return raw

    w = World(validate=validate)
    outcome = w.handler.process({"sku": "A-1"}, headers={"message-id": "m-1"})
    assert isinstance(outcome, ir.DeadLettered)
    assert "invalid" == outcome.reason
    letter = w.dlq.get(outcome.letter_id or "")
    assert letter is not None
    assert ("builtins.ValueError", "missing field 'id'") == (
        letter.error_type,
        letter.error_message,
    )
    assert {"sku": "A-1"} == w.dlq.decode(letter)
    assert "m-1" == letter.headers["message-id"]
    assert [] == w.calls


def test_undecodable_bytes_are_kept_byte_for_byte() -> None:
    """A raw body that is not even JSON is dead-lettered as invalid, exactly as received."""
    w = World()
    outcome = w.handler.process(b"\xff\x00not json")
    assert isinstance(outcome, ir.DeadLettered)
    letter = w.dlq.get(outcome.letter_id or "")
    assert letter is not None
    assert b"\xff\x00not json" == w.dlq.decode(letter)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (lambda job: job["missing"], "KeyError"),
        (lambda job: 42, "must be a str"),
        (lambda job: "", "empty"),
    ],
)
def test_a_key_that_cannot_be_computed_is_invalid(key: Any, problem: str) -> None:
    """A key function that raises or returns a bad key makes the message invalid."""
    w = World()
    handler = ir.JobHandler(w.handle, key=key, dead_letters=w.dlq, idempotency=w.guard)
    outcome = handler.process({"id": "a"})
    assert isinstance(outcome, ir.DeadLettered)
    assert "invalid" == outcome.reason
    assert problem in f"{type(outcome.error).__name__}: {outcome.error}"


def test_a_payload_that_cannot_be_fingerprinted_is_invalid_unless_a_fingerprint_is_given() -> None:
    """Non-JSON jobs need an explicit fingerprint function."""
    w = World()
    job = {"id": "a", "when": datetime.date(2026, 1, 1)}
    outcome = w.handler.process(job, headers=None)
    assert isinstance(outcome, ir.DeadLettered)
    assert "invalid" == outcome.reason
    w2 = World(fingerprint=lambda job: "sha256:fixed")
    assert ir.Done({"done": "a"}) == w2.handler.process(job)


def test_a_fatal_error_is_dead_lettered_at_once_and_the_key_released() -> None:
    """FatalError errors skip retries; the claim is released so a redrive can run the job."""
    w = World()
    w.script["f"] = [FatalError("bad sku")]
    outcome = w.handler.process({"id": "f"})
    assert isinstance(outcome, ir.DeadLettered)
    assert ("fatal", letter_id_for_key("f\n" + fingerprint(({"id": "f"},)))) == (
        outcome.reason,
        outcome.letter_id,
    )
    claim = w.store.claim("f", fingerprint(({"id": "f"},)), lease=1.0)
    assert isinstance(claim, ir.typing.Acquired)


def test_fatal_may_be_a_predicate() -> None:
    """A callable classifier decides what is fatal."""
    w = World(fatal=lambda exc: isinstance(exc, LookupError))
    w.script["k"] = [KeyError("gone")]
    outcome = w.handler.process({"id": "k"})
    assert isinstance(outcome, ir.DeadLettered)
    assert "fatal" == outcome.reason


def test_a_retryable_failure_is_retried_later_after_the_backoff_then_exhausted() -> None:
    """Each failed delivery asks for a redelivery until the last one, which dead-letters."""
    w = World()
    w.script["r"] = [ConnectionError("reset")] * 3
    first = w.handler.process({"id": "r"})
    second = w.handler.process({"id": "r"})
    third = w.handler.process({"id": "r"})
    assert isinstance(first, ir.RetryLater)
    assert isinstance(second, ir.RetryLater)
    assert (2.0, 2.0) == (first.delay, second.delay)
    assert isinstance(first.error, ConnectionError)
    assert isinstance(third, ir.DeadLettered)
    assert "exhausted" == third.reason
    letter = w.dlq.get(third.letter_id or "")
    assert letter is not None
    assert 3 == letter.attempts
    assert 3 == len(w.calls)


def test_the_brokers_delivery_count_counts_when_it_is_higher() -> None:
    """deliveries= from the broker wins over a fence that started again."""
    w = World()
    w.script["r"] = [ConnectionError("reset")]
    outcome = w.handler.process({"id": "r"}, deliveries=3)
    assert isinstance(outcome, ir.DeadLettered)
    assert "exhausted" == outcome.reason


def test_a_retry_after_hint_sets_the_redelivery_delay() -> None:
    """A rejection's retry_after (seconds or a timedelta) replaces the backoff."""
    w = World()
    w.script["r"] = [RateLimitedError(7.5)]
    outcome = w.handler.process({"id": "r"})
    assert isinstance(outcome, ir.RetryLater)
    assert 7.5 == outcome.delay

    class ThrottledError(Exception):
        retry_after = datetime.timedelta(seconds=12)

    w.script["t"] = [ThrottledError()]
    outcome = w.handler.process({"id": "t"})
    assert isinstance(outcome, ir.RetryLater)
    assert 12.0 == outcome.delay


def test_a_job_that_kills_its_worker_every_time_is_quarantined_as_a_crash_loop() -> None:
    """Claims whose workers died count as deliveries; past the limit the job does not run."""
    w = World()
    fp = fingerprint(({"id": "c"},))
    for _ in range(3):  # three workers claimed it and died
        assert isinstance(w.store.claim("c", fp, lease=10.0), ir.typing.Acquired)
        w.clock.advance(11.0)
    outcome = w.handler.process({"id": "c"})
    assert isinstance(outcome, ir.DeadLettered)
    assert "crash_loop" == outcome.reason
    assert [] == w.calls
    letter = w.dlq.get(outcome.letter_id or "")
    assert letter is not None
    assert (4, None) == (letter.attempts, letter.error_type)


def test_a_redelivered_dead_letter_is_recognised_not_stored_twice() -> None:
    """A job dead-lettered before its ack is acknowledged again as a duplicate."""
    w = World()
    w.script["f"] = [FatalError("bad")]
    first = w.handler.process({"id": "f"})
    again = w.handler.process({"id": "f"})
    assert isinstance(first, ir.DeadLettered)
    assert isinstance(again, ir.DeadLettered)
    assert (False, True) == (first.duplicate, again.duplicate)
    assert first.letter_id == again.letter_id
    assert 1 == w.dlq.count()
    assert ["f"] == w.calls


def test_a_key_held_by_another_worker_is_retried_when_its_lease_ends() -> None:
    """In progress elsewhere: retry later, after the other lease's remaining time."""
    w = World()
    w.store.claim("p", fingerprint(({"id": "p"},)), lease=10.0)
    w.clock.advance(4.0)
    outcome = w.handler.process({"id": "p"})
    assert isinstance(outcome, ir.RetryLater)
    assert 6.0 == pytest.approx(outcome.delay)
    assert [] == w.calls


def test_a_key_reused_with_another_payload_is_poison() -> None:
    """Same key, different payload: dead-lettered as poison, the first result untouched."""
    w = World()
    w.handler.process({"id": "a"})
    outcome = w.handler.process({"id": "a", "qty": 2})
    assert isinstance(outcome, ir.DeadLettered)
    assert "poison" == outcome.reason
    assert isinstance(outcome.error, IdempotencyKeyReuseError)
    assert ir.Replayed({"done": "a"}) == w.handler.process({"id": "a"})


def test_a_lease_lost_while_running_asks_for_a_redelivery() -> None:
    """When another claim took the key over, the job is not acknowledged blindly."""
    w = World()

    def slow(job: dict[str, Any]) -> str:
        w.clock.advance(11.0)  # the lease runs out, and another worker claims the key
        w.store.claim("s", fingerprint(({"id": "s"},)), lease=10.0)
        return "late"

    handler = ir.JobHandler(slow, key=lambda j: j["id"], dead_letters=w.dlq, idempotency=w.guard)
    outcome = handler.process({"id": "s"})
    assert isinstance(outcome, ir.RetryLater)
    assert (0.0, LeaseLostError) == (outcome.delay, type(outcome.error))


def test_a_result_the_codec_cannot_store_is_fatal() -> None:
    """The work ran but its result is not JSON: dead-lettered as fatal, the key released."""
    w = World()
    w.script["x"] = [object()]
    outcome = w.handler.process({"id": "x"})
    assert isinstance(outcome, ir.DeadLettered)
    assert "fatal" == outcome.reason
    assert isinstance(outcome.error, ir.CodecError)


def test_a_keyboard_interrupt_propagates_and_releases_the_claim() -> None:
    """BaseException stops the worker; the key is free for the next delivery."""
    w = World()
    w.script["k"] = [KeyboardInterrupt()]
    with pytest.raises(KeyboardInterrupt):
        w.handler.process({"id": "k"})
    assert ir.Done({"done": "k"}) == w.handler.process({"id": "k"})


def test_a_full_dead_letter_queue_raises_and_keeps_nothing_half_done() -> None:
    """The job stays with the broker when the dead-letter queue refuses it."""
    w = World()
    w.dlq = w.backend.dead_letter_queue("tiny", max_letters=1)
    handler = ir.JobHandler(
        w.handle, key=lambda j: j["id"], dead_letters=w.dlq, idempotency=w.guard, fatal=FatalError
    )
    w.script["a"] = [FatalError("one")]
    w.script["b"] = [FatalError("two"), {"done": "b"}]
    assert isinstance(handler.process({"id": "a"}), ir.DeadLettered)
    with pytest.raises(DeadLetterQueueFullError):
        handler.process({"id": "b"})
    assert ir.Done({"done": "b"}) == handler.process({"id": "b"})


def test_without_idempotency_jobs_run_every_time_and_still_dead_letter() -> None:
    """No guard: no replay, the broker's count decides exhaustion."""
    w = World(idempotency=None)
    assert ir.Done({"done": "a"}) == w.handler.process({"id": "a"})
    assert ir.Done({"done": "a"}) == w.handler.process({"id": "a"})
    w.script["r"] = [ConnectionError("x")]
    outcome = w.handler.process({"id": "r"}, deliveries=3)
    assert isinstance(outcome, ir.DeadLettered)
    assert (None, "exhausted") == (w.dlq.get(outcome.letter_id or "").fingerprint, outcome.reason)  # type: ignore[union-attr]


def test_the_pipeline_wraps_the_handler() -> None:
    """A retry policy in the pipeline retries inside one delivery."""
    w = World()
    retry = ir.RetryPolicy(
        on=ConnectionError, attempts=3, backoff=ir.Backoff.constant(0.0), clock=w.clock
    )
    handler = ir.JobHandler(
        w.handle, key=lambda j: j["id"], dead_letters=w.dlq, idempotency=w.guard, pipeline=retry
    )
    w.script["p"] = [ConnectionError("1"), ConnectionError("2")]
    assert ir.Done({"done": "p"}) == handler.process({"id": "p"})
    assert ["p", "p", "p"] == w.calls


def test_the_heartbeat_runs_around_a_long_job() -> None:
    """With the guard's heartbeat on, the job runs and completes normally."""
    w = World()
    guard = ir.Idempotency(w.store, lease=10.0, clock=w.clock, heartbeat=True)
    handler = ir.JobHandler(w.handle, key=lambda j: j["id"], dead_letters=w.dlq, idempotency=guard)
    assert ir.Done({"done": "h"}) == handler.process({"id": "h"})
    w.script["h2"] = [ConnectionError("x")]
    assert isinstance(handler.process({"id": "h2"}), ir.RetryLater)


def test_redrive_through_the_handler_runs_skips_or_keeps_letters() -> None:
    """process_letter: fixed jobs run, jobs done meanwhile are skipped, failing ones stay."""
    w = World()
    w.script["fixed"] = [FatalError("bug"), {"done": "fixed"}]
    w.script["done"] = [FatalError("bug")]
    w.script["still"] = [FatalError("bug"), FatalError("bug again")]
    for key in ("fixed", "done", "still"):
        assert isinstance(w.handler.process({"id": key}), ir.DeadLettered)
    w.guard.run_fingerprinted("done", fingerprint(({"id": "done"},)), lambda: {"done": "elsewhere"})
    report = w.dlq.redrive(w.handler)
    ids = {
        letter_id_for_key(f"{k}\n{fingerprint(({'id': k},))}"): k
        for k in ("fixed", "done", "still")
    }
    assert ["fixed"] == [ids[i] for i in report.redriven]
    assert ["done"] == [ids[i] for i in report.skipped]
    assert ["still"] == [ids[i] for i, _ in report.failed]
    (left,) = w.dlq.iter()
    assert ("fatal", 2, "bug again") == (left.reason, left.attempts, left.error_message)


def test_redrive_of_an_invalid_letter_fails_again_and_keeps_it() -> None:
    """A letter whose payload still does not validate stays, reason invalid."""

    def validate(raw: object) -> dict[str, Any]:
        if not isinstance(raw, dict) or "id" not in raw:
            raise ValueError("missing id")
        return raw

    w = World(validate=validate)
    w.handler.process({"nope": 1})
    report = w.dlq.redrive(w.handler)
    assert 1 == len(report.failed)
    assert 1 == w.dlq.count(reason="invalid")


def test_redrive_of_a_poison_letter_stays_poison() -> None:
    """A key reused with another payload cannot be redriven until the key is free."""
    w = World()
    w.handler.process({"id": "a"})
    w.handler.process({"id": "a", "qty": 2})
    report = w.dlq.redrive(w.handler)
    assert 1 == len(report.failed)
    assert 1 == w.dlq.count(reason="poison")


def test_redrive_of_a_key_in_progress_keeps_the_letter() -> None:
    """A key held by a running worker fails the redrive for now."""
    w = World()
    w.script["f"] = [FatalError("bug")]
    w.handler.process({"id": "f"})
    w.store.claim("f", fingerprint(({"id": "f"},)), lease=10.0)
    report = w.dlq.redrive(w.handler)
    assert 1 == len(report.failed)


def test_redrive_classifies_retryable_and_fatal_failures() -> None:
    """A failing redrive records the new error; a fatal one also its reason."""
    w = World()
    w.script["f"] = [
        ConnectionError("1"),
        ConnectionError("2"),
        ConnectionError("3"),
        FatalError("now fatal"),
    ]
    for _ in range(3):
        w.handler.process({"id": "f"})
    assert 1 == w.dlq.count(reason="exhausted")
    w.dlq.redrive(w.handler)
    assert 1 == w.dlq.count(reason="fatal")
    w.script["x"] = [FatalError("a"), object()]
    w.handler.process({"id": "x"})
    report = w.dlq.redrive(w.handler, key="x")
    assert "CodecError" in report.failed[0][1]


def test_an_async_dead_letter_queue_needs_aprocess() -> None:
    """process() refuses an async queue with a message saying what to use."""
    w = World()
    handler = ir.JobHandler(
        w.handle, key=lambda j: j["id"], dead_letters=w.backend.async_dead_letter_queue("a")
    )
    with pytest.raises(ConfigurationError, match="aprocess"):
        handler.process({"id": "a"})


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"handle": 1}, "JobHandler.handle"),
        ({"key": None}, "JobHandler.key"),
        ({"dead_letters": object()}, "JobHandler.dead_letters"),
        ({"max_deliveries": 0}, "JobHandler.max_deliveries"),
        ({"fatal": (ValueError, 3)}, "JobHandler.fatal"),
        ({"fatal": 3}, "JobHandler.fatal"),
        ({"backoff": 1.0}, "JobHandler.backoff"),
        ({"validate": 1}, "JobHandler.validate"),
        ({"pipeline": 1}, "JobHandler.pipeline"),
        ({"idempotency": object()}, "JobHandler.idempotency"),
        ({"fingerprint": "x"}, "JobHandler.fingerprint"),
    ],
)
def test_configuration_errors_name_the_field(options: dict[str, Any], field: str) -> None:
    """Every bad setting is refused at construction, naming the field."""
    w = World()
    args: dict[str, Any] = {"handle": w.handle, "key": lambda j: j["id"], "dead_letters": w.dlq}
    args.update(options)
    handle = args.pop("handle")
    with pytest.raises(ConfigurationError) as info:
        ir.JobHandler(handle, **args)
    assert field == info.value.field


def test_a_bad_delivery_count_is_refused() -> None:
    """deliveries must be a positive int."""
    w = World()
    with pytest.raises(ConfigurationError, match="deliveries"):
        w.handler.process({"id": "a"}, deliveries=0)
    with pytest.raises(ConfigurationError, match="deliveries"):
        asyncio.run(w.handler.aprocess({"id": "a"}, deliveries=True))


# -- async ---------------------------------------------------------------------------------------


class AsyncWorld(World):
    """The same world with an async handler, store and queue."""

    def __init__(self, *, sync_queue: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.astore = self.backend.async_idempotency_store()
        self.aguard = ir.Idempotency(self.astore, lease=10.0, clock=self.clock, heartbeat=True)
        self.adlq: Any = self.dlq if sync_queue else self.backend.async_dead_letter_queue("jobs")
        self.handler = ir.JobHandler(
            self.ahandle,
            key=lambda job: job["id"],
            dead_letters=self.adlq,
            idempotency=self.aguard,
            max_deliveries=3,
            fatal=FatalError,
            backoff=ir.Backoff.constant(2.0),
            **{
                k: v
                for k, v in options.items()
                if k not in ("idempotency", "max_deliveries", "fatal", "backoff")
            },
        )

    async def ahandle(self, job: dict[str, Any]) -> object:
        await asyncio.sleep(0)
        return self.handle(job)


@pytest.mark.parametrize("sync_queue", [False, True])
def test_aprocess_runs_replays_retries_and_dead_letters(sync_queue: bool) -> None:
    """The async twin reaches the same outcomes, with an async or a sync queue."""
    w = AsyncWorld(sync_queue=sync_queue)
    w.script["r"] = [ConnectionError("1"), ConnectionError("2"), ConnectionError("3")]
    w.script["f"] = [FatalError("bad")]

    async def scenario() -> list[object]:
        h = w.handler
        return [
            await h.aprocess({"id": "a"}),
            await h.aprocess({"id": "a"}),
            await h.aprocess({"id": "r"}),
            await h.aprocess({"id": "r"}),
            await h.aprocess({"id": "r"}),
            await h.aprocess({"id": "f"}),
            await h.aprocess({"id": "f"}),
            await h.aprocess(b"\xff"),
            await h.aprocess({"id": "a", "other": 1}),
        ]

    outcomes = asyncio.run(scenario())
    kinds = [
        type(o).__name__ + (f":{o.reason}" if isinstance(o, ir.DeadLettered) else "")
        for o in outcomes
    ]
    assert [
        "Done",
        "Replayed",
        "RetryLater",
        "RetryLater",
        "DeadLettered:exhausted",
        "DeadLettered:fatal",
        "DeadLettered:fatal",
        "DeadLettered:invalid",
        "DeadLettered:poison",
    ] == kinds
    last_fatal = outcomes[6]
    assert isinstance(last_fatal, ir.DeadLettered)
    assert last_fatal.duplicate
    assert 4 == w.dlq.count()


def test_aprocess_quarantines_a_crash_loop_and_handles_base_exceptions() -> None:
    """Dead claims count; a cancellation propagates and frees the key."""
    w = AsyncWorld()
    fp = fingerprint(({"id": "c"},))
    for _ in range(3):
        w.store.claim("c", fp, lease=10.0)
        w.clock.advance(11.0)
    w.script["k"] = [KeyboardInterrupt()]

    async def scenario() -> tuple[object, object]:
        crash = await w.handler.aprocess({"id": "c"})
        with pytest.raises(KeyboardInterrupt):
            await w.handler.aprocess({"id": "k"})
        return crash, await w.handler.aprocess({"id": "k"})

    crash, after = asyncio.run(scenario())
    assert isinstance(crash, ir.DeadLettered)
    assert "crash_loop" == crash.reason
    assert ir.Done({"done": "k"}) == after


def test_aprocess_in_progress_lost_lease_and_unencodable_result() -> None:
    """The async twin's other branches match the sync ones."""
    w = AsyncWorld()
    w.store.claim("p", fingerprint(({"id": "p"},)), lease=10.0)
    w.script["x"] = [object()]

    async def lose(job: dict[str, Any]) -> str:
        w.clock.advance(11.0)
        await w.astore.claim("s", fingerprint(({"id": "s"},)), lease=10.0)
        return "late"

    loser = ir.JobHandler(lose, key=lambda j: j["id"], dead_letters=w.adlq, idempotency=w.aguard)

    async def scenario() -> list[object]:
        return [
            await w.handler.aprocess({"id": "p"}),
            await w.handler.aprocess({"id": "x"}),
            await loser.aprocess({"id": "s"}),
        ]

    busy, unencodable, lost = asyncio.run(scenario())
    assert isinstance(busy, ir.RetryLater)
    assert isinstance(unencodable, ir.DeadLettered)
    assert "fatal" == unencodable.reason
    assert isinstance(lost, ir.RetryLater)
    assert isinstance(lost.error, LeaseLostError)


def test_async_redrive_through_the_handler() -> None:
    """AsyncDeadLetterQueue.redrive(handler) runs aprocess_letter on each letter."""
    w = AsyncWorld()
    w.script["fixed"] = [FatalError("bug"), {"done": "fixed"}]
    w.script["still"] = [FatalError("bug"), FatalError("again")]
    w.script["bad-result"] = [FatalError("bug"), object()]
    w.script["retry"] = [FatalError("bug"), ConnectionError("later")]

    def validate(raw: object) -> dict[str, Any]:
        if not isinstance(raw, dict) or "id" not in raw:
            raise ValueError("missing id")
        return raw

    strict = ir.JobHandler(
        w.ahandle,
        key=lambda j: j["id"],
        dead_letters=w.adlq,
        idempotency=w.aguard,
        validate=validate,
    )

    async def scenario() -> ir.RedriveReport:
        for key in ("fixed", "still", "bad-result", "retry"):
            await w.handler.aprocess({"id": key})
        await w.handler.aprocess({"id": "fixed", "x": 1})  # poison: key reused
        await strict.aprocess({"nope": 1})
        return await w.adlq.redrive(strict)

    report = asyncio.run(scenario())
    assert 1 == len(report.redriven)
    assert 5 == len(report.failed)
    assert 5 == w.dlq.count()


def test_an_empty_fingerprint_makes_the_message_invalid() -> None:
    """A fingerprint function must return a non-empty str."""
    w = World(fingerprint=lambda job: "")
    outcome = w.handler.process({"id": "a"})
    assert isinstance(outcome, ir.DeadLettered)
    assert "invalid" == outcome.reason


def test_a_keyboard_interrupt_under_the_heartbeat_releases_the_claim() -> None:
    """The heartbeat stops and the key is freed when the worker is interrupted."""
    w = World()
    guard = ir.Idempotency(w.store, lease=10.0, clock=w.clock, heartbeat=True)
    handler = ir.JobHandler(w.handle, key=lambda j: j["id"], dead_letters=w.dlq, idempotency=guard)
    w.script["k"] = [KeyboardInterrupt()]
    with pytest.raises(KeyboardInterrupt):
        handler.process({"id": "k"})
    assert ir.Done({"done": "k"}) == handler.process({"id": "k"})


def test_redrive_without_idempotency_runs_every_letter() -> None:
    """Without a guard nothing is skipped: each letter's job runs again."""
    w = World(idempotency=None)
    w.script["f"] = [FatalError("bug")]
    w.handler.process({"id": "f"})
    report = w.dlq.redrive(w.handler)
    assert 1 == len(report.redriven)
    assert 0 == w.dlq.count()


def test_aprocess_takes_a_plain_function_and_no_guard() -> None:
    """aprocess calls a def handler directly; without a guard it just runs it."""
    w = World(idempotency=None)
    adlq = w.backend.async_dead_letter_queue("plain")
    handler = ir.JobHandler(w.handle, key=lambda j: j["id"], dead_letters=adlq, fatal=FatalError)
    w.script["f"] = [FatalError("bug")]

    async def scenario() -> tuple[object, object, ir.RedriveReport]:
        done = await handler.aprocess({"id": "a"})
        dead = await handler.aprocess({"id": "f"})
        return done, dead, await adlq.redrive(handler)

    done, dead, report = asyncio.run(scenario())
    assert ir.Done({"done": "a"}) == done
    assert isinstance(dead, ir.DeadLettered)
    assert 1 == len(report.redriven)


def test_async_redrive_skips_done_work_and_records_fatal_failures() -> None:
    """aprocess_letter replays completed keys and classifies new failures."""
    w = AsyncWorld()
    w.script["done"] = [FatalError("bug")]
    w.script["worse"] = [FatalError("bug"), FatalError("still")]

    async def scenario() -> ir.RedriveReport:
        await w.handler.aprocess({"id": "done"})
        await w.handler.aprocess({"id": "worse"})
        await w.aguard.arun_fingerprinted(
            "done", fingerprint(({"id": "done"},)), _async_value, {"done": "elsewhere"}
        )
        return await w.adlq.redrive(w.handler)

    report = asyncio.run(scenario())
    assert (1, 1) == (len(report.skipped), len(report.failed))
    assert "FatalError: still" == report.failed[0][1]


async def _async_value(value: object) -> object:
    return value


# -- found in review -------------------------------------------------------------------------


def test_without_a_guard_two_jobs_sharing_a_key_are_both_kept() -> None:
    """No fingerprint, no shared letter id: a second job with the key is stored, not dropped."""
    w = World(idempotency=None)
    w.script["o-1"] = [FatalError("a"), FatalError("b"), FatalError("c")]
    first = w.handler.process({"id": "o-1", "sku": "A"})
    second = w.handler.process({"id": "o-1", "sku": "B"})
    third = w.handler.process({"id": "o-1", "sku": "C"}, deliveries=2)
    assert isinstance(first, ir.DeadLettered)
    assert isinstance(second, ir.DeadLettered)
    assert isinstance(third, ir.DeadLettered)
    assert not third.duplicate
    assert 3 == len({first.letter_id, second.letter_id, third.letter_id})
    assert [{"id": "o-1", "sku": s} for s in "ABC"] == [w.dlq.decode(x) for x in w.dlq.iter()]


def test_process_refuses_an_async_handler_before_running_anything() -> None:
    """An async def handle cannot be driven by process(): refused, nothing acknowledged."""
    w = World()

    async def handle(job: dict[str, Any]) -> None:
        w.calls.append(job["id"])

    handler = ir.JobHandler(handle, key=lambda j: j["id"], dead_letters=w.dlq, idempotency=w.guard)
    with pytest.raises(ConfigurationError, match="aprocess"):
        handler.process({"id": "a"})
    w.dlq.put({"id": "a"}, reason="fatal", key="a")
    report = w.dlq.redrive(handler)
    assert 1 == len(report.failed)
    assert 1 == w.dlq.count()


def test_a_sync_handler_returning_an_awaitable_is_never_acknowledged() -> None:
    """A def that returns a coroutine did no work: retried later, not Done."""
    w = World(idempotency=None)

    async def work() -> None:
        w.calls.append("ran")

    handler = ir.JobHandler(lambda job: work(), key=lambda j: j["id"], dead_letters=w.dlq)
    outcome = handler.process({"id": "a"})
    assert isinstance(outcome, ir.RetryLater)
    assert isinstance(outcome.error, TypeError)
    assert [] == w.calls


def test_a_redacted_letter_redrives_under_its_recorded_key_and_fingerprint() -> None:
    """The redacted payload's own fingerprint would mismatch the key's record: not used."""
    w = World()
    w.dlq = w.backend.dead_letter_queue("redacted", redact=lambda job: {**job, "card": "****"})
    handler = ir.JobHandler(
        w.handle, key=lambda j: j["id"], dead_letters=w.dlq, idempotency=w.guard, fatal=FatalError
    )
    w.script["p"] = [FatalError("declined"), {"done": "p"}]
    assert isinstance(handler.process({"id": "p", "card": "4111111111111111"}), ir.DeadLettered)
    report = w.dlq.redrive(handler)
    assert 1 == len(report.redriven)
    assert 0 == w.dlq.count()


def test_aprocess_runs_a_plain_def_handler_off_the_event_loop() -> None:
    """A def handle runs in a worker thread, so the loop (and the heartbeat) keep going."""
    import threading

    w = World()
    threads: list[int] = []

    def handle(job: dict[str, Any]) -> str:
        threads.append(threading.get_ident())
        return "ok"

    handler = ir.JobHandler(handle, key=lambda j: j["id"], dead_letters=w.dlq, idempotency=w.guard)
    assert ir.Done("ok") == asyncio.run(handler.aprocess({"id": "a"}))
    assert threading.get_ident() not in threads


@pytest.mark.parametrize(
    "key", ["bad\x00key", "lone \udc80 surrogate", "k" * 513], ids=["nul", "surrogate", "long"]
)
def test_a_key_no_store_can_hold_makes_the_job_invalid(key: str) -> None:
    """Keys with NUL, lone surrogates or over 512 characters are invalid, not a store error."""
    w = World()
    outcome = w.handler.process({"id": key})
    assert isinstance(outcome, ir.DeadLettered)
    assert "invalid" == outcome.reason


def test_a_fingerprint_no_store_can_hold_makes_the_job_invalid() -> None:
    """A fingerprint over 256 characters is refused before the claim."""
    w = World(fingerprint=lambda job: "x" * 257)
    outcome = w.handler.process({"id": "a"})
    assert isinstance(outcome, ir.DeadLettered)
    assert "invalid" == outcome.reason


def test_redrive_decodes_with_the_handlers_own_queue() -> None:
    """A queue opened elsewhere (the CLI's, default codec) redrives with the handler's codec."""

    class Sku:
        def __init__(self, code: str) -> None:
            self.code = code

    codec = ir.JsonCodec(
        default=lambda sku: {"sku": sku.code},
        object_hook=lambda d: Sku(d["sku"]) if set(d) == {"sku"} else d,
    )
    w = World()
    own = w.backend.dead_letter_queue("typed", codec=codec)
    seen: list[object] = []

    def handle(job: dict[str, Any]) -> str:
        seen.append(job["item"])
        return "ok"

    handler = ir.JobHandler(
        handle, key=lambda j: j["id"], dead_letters=own, fingerprint=lambda j: "sha256:x"
    )
    own.put({"id": "a", "item": Sku("A-1")}, reason="fatal", key="a")
    elsewhere = w.backend.dead_letter_queue("typed")
    assert 1 == len(elsewhere.redrive(handler).redriven)
    assert isinstance(seen[0], Sku)


class _Awaitable:
    """An awaitable that is not a coroutine."""

    def __await__(self) -> Any:
        yield from ()
        return "awaited"


def test_awaitables_from_a_plain_def_are_refused_by_process_and_awaited_by_aprocess() -> None:
    """process() never acknowledges an awaitable; aprocess() awaits what a def returns."""
    w = World(idempotency=None)
    handler = ir.JobHandler(lambda job: _Awaitable(), key=lambda j: j["id"], dead_letters=w.dlq)
    outcome = handler.process({"id": "a"})
    assert isinstance(outcome, ir.RetryLater)
    assert isinstance(outcome.error, TypeError)
    assert ir.Done("awaited") == asyncio.run(handler.aprocess({"id": "a"}))


def test_a_stored_result_that_no_longer_decodes_is_replayed_as_bytes() -> None:
    """Done work is acknowledged even when its stored result no longer decodes."""
    w = World()
    fp = fingerprint(({"id": "a"},))
    lease = w.store.claim("a", fp, lease=10.0)
    assert isinstance(lease, ir.typing.Acquired)
    w.store.complete(lease.lease, b"\xff not json")
    assert ir.Replayed(b"\xff not json") == w.handler.process({"id": "a"})
    assert [] == w.calls
