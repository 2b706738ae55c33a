"""Events: listeners, their cost when absent, failure isolation and the logging listener."""

from __future__ import annotations

import asyncio
import logging

import pytest

import invresilience as ir
from invresilience import _events
from invresilience.testing import ManualClock


def flaky(failures: int) -> object:
    calls = 0

    def fn() -> str:
        nonlocal calls
        calls += 1
        if calls <= failures:
            raise ConnectionError(f"fail {calls}")
        return "ok"

    return fn


def test_no_listener_means_inactive() -> None:
    """With nothing attached, the shells see ``active`` false and build no events."""
    assert not _events.active


def test_one_event_per_attempt() -> None:
    """A listener sees every attempt: number, delay, exception and decision."""
    events: list[ir.Event] = []
    remove = ir.add_listener(events.append)
    assert _events.active
    try:
        p = ir.RetryPolicy(on=ConnectionError, clock=ManualClock(), name="erp")
        assert "ok" == p.call(flaky(2))  # type: ignore[arg-type]
    finally:
        remove()
    assert not _events.active
    retries = [e for e in events if isinstance(e, ir.RetryEvent)]
    assert [1, 2, 3] == [e.attempt for e in retries]
    assert [ir.RetryDecision.RETRY, ir.RetryDecision.RETRY, ir.RetryDecision.SUCCESS] == [
        e.decision for e in retries
    ]
    assert ["fail 1", "fail 2"] == [str(e.exception) for e in retries[:2]]
    assert all(e.delay > 0 for e in retries[:2])
    assert {"erp"} == {e.source for e in retries}
    assert retries[0].target.endswith("flaky.<locals>.fn")


def test_removing_twice_is_harmless() -> None:
    """remove_listener ignores listeners that are not attached."""
    remove = ir.add_listener(print)
    remove()
    ir.remove_listener(print)
    assert not _events.active


def test_a_raising_listener_does_not_break_the_call(caplog: pytest.LogCaptureFixture) -> None:
    """A listener's exception is logged and swallowed; the call goes on."""

    def broken(event: ir.Event) -> None:
        raise RuntimeError("listener bug")

    remove = ir.add_listener(broken)
    try:
        p = ir.RetryPolicy(on=ConnectionError, clock=ManualClock())
        with caplog.at_level(logging.ERROR, logger="invresilience"):
            assert "ok" == p.call(flaky(1))  # type: ignore[arg-type]
    finally:
        remove()
    assert "listener" in caplog.text
    assert "listener bug" in caplog.text


def test_logging_listener_levels(caplog: pytest.LogCaptureFixture) -> None:
    """Retries log at WARNING, giving up at ERROR, success at DEBUG."""
    remove = ir.add_listener(ir.LoggingListener())
    try:
        p = ir.RetryPolicy(on=ConnectionError, clock=ManualClock(), attempts=2, name="erp")
        with caplog.at_level(logging.DEBUG, logger="invresilience"):
            p.call(flaky(1))  # type: ignore[arg-type]
            with pytest.raises(ConnectionError):
                p.call(flaky(5))  # type: ignore[arg-type]
    finally:
        remove()
    levels = [
        (r.levelname, r.getMessage().split(" attempt ")[1].split(" (")[0]) for r in caplog.records
    ]
    assert [
        ("WARNING", "1 retry"),
        ("DEBUG", "2 success"),
        ("WARNING", "1 retry"),
        ("ERROR", "2 attempts_exhausted"),
    ] == levels
    assert all(isinstance(r.invresilience_event, ir.RetryEvent) for r in caplog.records)  # type: ignore[attr-defined]


def test_logging_listener_quiet_when_disabled(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing is formatted when the level is disabled; other events log at INFO."""
    logger = logging.getLogger("invresilience.test.quiet")
    logger.setLevel(logging.CRITICAL)
    listener = ir.LoggingListener(logger)
    event = ir.RetryEvent(
        source="s", target="t", attempt=1, decision=ir.RetryDecision.RETRY, delay=0, elapsed=0
    )
    listener(event)
    listener(ir.Event(source="other"))
    assert [] == caplog.records
    logger.setLevel(logging.INFO)
    with caplog.at_level(logging.INFO, logger="invresilience.test.quiet"):
        listener(ir.Event(source="other"))
        listener(
            ir.RetryEvent(
                source="s",
                target="t",
                attempt=1,
                decision=ir.RetryDecision.SUCCESS,
                delay=0,
                elapsed=0,
                result=3,
            )
        )
    assert ["INFO"] == [r.levelname for r in caplog.records]


def test_final_events_carry_result_or_exception() -> None:
    """A success reports its result; an exception outside ``on`` is reported as NOT_RETRYABLE."""
    clock = ManualClock()
    p = ir.RetryPolicy(on=ConnectionError, clock=clock)

    def missing() -> None:
        raise KeyError("sku")

    with ir.testing.testing() as timeline:
        assert "ok" == p.call(flaky(1))  # type: ignore[arg-type]
        with pytest.raises(KeyError):
            p.call(missing)
        with pytest.raises(TypeError):
            p.call(flaky(1), "unexpected")  # type: ignore[arg-type]
    retries = timeline.retries
    assert "ok" == retries[1].result
    assert [
        ir.RetryDecision.RETRY,
        ir.RetryDecision.SUCCESS,
        ir.RetryDecision.NOT_RETRYABLE,
        ir.RetryDecision.NOT_RETRYABLE,
    ] == timeline.decisions
    assert isinstance(retries[2].exception, KeyError)


def test_exception_outside_on_after_a_retry_is_reported() -> None:
    """A later attempt failing with an unlisted exception is reported with its number."""
    errors = iter([ConnectionError(), KeyError("late")])

    def fn() -> None:
        raise next(errors)

    async def afn() -> None:
        fn()

    p = ir.RetryPolicy(on=ConnectionError, clock=ManualClock())
    with ir.testing.testing() as timeline:
        with pytest.raises(KeyError):
            p.call(fn)
        errors = iter([ConnectionError(), KeyError("late")])
        with pytest.raises(KeyError):
            asyncio.run(p.acall(afn))
    assert [(1, "retry"), (2, "not_retryable")] * 2 == [
        (e.attempt, e.decision.value) for e in timeline.retries
    ]


def test_loop_events_name_the_loop() -> None:
    """Events from a retrying() loop name it, and unlisted exceptions are reported."""
    p = ir.RetryPolicy(on=ConnectionError, clock=ManualClock())
    with ir.testing.testing() as timeline, pytest.raises(KeyError):  # noqa: PT012 - the loop is what raises
        for attempt in p.retrying():
            with attempt:
                raise KeyError
    (event,) = timeline.retries
    assert ("retrying() loop", ir.RetryDecision.NOT_RETRYABLE) == (event.target, event.decision)


def test_integer_durations_become_floats() -> None:
    """Durations given as ints are stored as float seconds."""
    assert 10.0 == ir.RetryBudget(ttl=10).ttl
    assert isinstance(ir.Backoff(initial=1).initial, float)
    assert isinstance(ir.RetryPolicy(on=ValueError, timeout=5).timeout, float)
    assert "_window" not in repr(ir.RetryBudget())
