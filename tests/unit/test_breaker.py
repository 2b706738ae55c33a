"""CircuitBreaker: transitions, classification, windows, probes, shapes, stores, registry."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import functools
import inspect
import logging
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import pytest

import invresilience as ir
from invresilience import _events
from invresilience._core.breaker import SharedBreakerState
from invresilience.backends.memory import AsyncMemoryBreakerStore, MemoryBreakerStore
from invresilience.exceptions import (
    BackendUnavailableError,
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    RateLimitedError,
)
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from invresilience._core.breaker import BreakerSpec

CLOSED = ir.BreakerState.CLOSED
OPEN = ir.BreakerState.OPEN
HALF_OPEN = ir.BreakerState.HALF_OPEN
ISOLATED = ir.BreakerState.ISOLATED


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make(clock: ManualClock, **kwargs: Any) -> ir.CircuitBreaker:
    """A small breaker: trips at 50 % failures once 2 of the last 4 calls are in."""
    kwargs.setdefault("minimum_calls", 2)
    kwargs.setdefault("window", ir.CountWindow(4))
    kwargs.setdefault("open_for", 10.0)
    return ir.CircuitBreaker(kwargs.pop("name", "erp"), clock=clock, **kwargs)


def ok() -> str:
    return "ok"


def refuse() -> NoReturn:
    raise ConnectionError("refused")


def fail(breaker: ir.CircuitBreaker, times: int = 1) -> None:
    """Make *times* failing calls through *breaker*."""
    for _ in range(times):
        with pytest.raises(ConnectionError):
            breaker.call(refuse)


def rejection(breaker: ir.CircuitBreaker, fn: Callable[[], Any] = ok) -> CircuitOpenError:
    """The CircuitOpenError a call through *breaker* is rejected with."""
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(fn)
    return info.value


def enter(breaker: ir.CircuitBreaker) -> contextvars.Context:
    """Enter ``with breaker:`` in a context of its own and leave the call running."""
    context = contextvars.copy_context()
    context.run(breaker.__enter__)
    return context


def leave(
    breaker: ir.CircuitBreaker, context: contextvars.Context, exc: BaseException | None = None
) -> None:
    """End a call started with :func:`enter`, raising *exc* inside it (or not)."""
    context.run(breaker.__exit__, None if exc is None else type(exc), exc, None)


@pytest.fixture
def events() -> Iterator[list[ir.Event]]:
    seen: list[ir.Event] = []
    with _events.scoped_listener(seen.append):
        yield seen


def breaker_events(seen: list[ir.Event], kind: str) -> list[ir.BreakerEvent]:
    return [e for e in seen if isinstance(e, ir.BreakerEvent) and e.kind == kind]


# -- transitions -------------------------------------------------------------------------------


class TestTransitions:
    def test_closed_passes_calls_and_arguments(self, clock: ManualClock) -> None:
        """A closed breaker runs the call with its arguments and returns its value."""
        breaker = make(clock)
        assert "a-1" == breaker.call(lambda a, *, b: f"{a}-{b}", "a", b=1)
        assert CLOSED == breaker.state
        assert 0 == breaker.generation

    def test_no_trip_before_minimum_calls(self, clock: ManualClock) -> None:
        """Failures below minimum_calls never trip, whatever the rate."""
        breaker = make(clock, minimum_calls=3)
        fail(breaker, 2)
        assert CLOSED == breaker.state
        fail(breaker)
        assert OPEN == breaker.state

    def test_trips_when_the_failure_rate_is_reached(self, clock: ManualClock) -> None:
        """With enough calls, reaching failure_rate (not just passing it) trips the breaker."""
        breaker = make(clock, failure_rate=0.5, minimum_calls=4)
        breaker.call(ok)
        breaker.call(ok)
        fail(breaker)
        assert CLOSED == breaker.state  # 1 of 3, below minimum_calls
        fail(breaker)  # 2 of 4: exactly 50 %
        assert OPEN == breaker.state
        assert 1 == breaker.generation

    def test_rate_is_compared_exactly(self, clock: ManualClock) -> None:
        """7 failures in 100 calls trip a 0.07 breaker, although 0.07 * 100 > 7 in floats."""
        breaker = make(clock, failure_rate=0.07, minimum_calls=100, window=ir.CountWindow(100))
        for _ in range(93):
            breaker.call(ok)
        fail(breaker, 7)
        assert OPEN == breaker.state

    def test_open_rejects_without_calling(self, clock: ManualClock) -> None:
        """An open breaker raises CircuitOpenError at once; the dependency is not called."""
        breaker = make(clock)
        fail(breaker, 2)
        calls: list[int] = []
        clock.advance(4.0)
        error = rejection(breaker, lambda: calls.append(1))
        assert [] == calls
        assert "erp" == error.name
        assert 6.0 == error.retry_after
        assert "circuit 'erp' is open; retry in 6 s" == str(error)

    def test_half_open_after_open_for(self, clock: ManualClock) -> None:
        """Once open_for has passed the breaker reads half-open, before any call."""
        breaker = make(clock)
        fail(breaker, 2)
        clock.advance(9.5)
        assert OPEN == breaker.state
        clock.advance(0.5)
        assert HALF_OPEN == breaker.state
        assert 1 == breaker.generation  # the store moves on the first probe

    def test_successful_probe_closes(self, clock: ManualClock) -> None:
        """A successful probe closes the breaker with an empty window."""
        breaker = make(clock)
        fail(breaker, 2)
        clock.advance(10.0)
        assert "ok" == breaker.call(ok)
        assert CLOSED == breaker.state
        assert 3 == breaker.generation  # open, half-open, closed
        assert 0 == breaker.metrics().calls

    def test_failed_probe_reopens(self, clock: ManualClock) -> None:
        """A failed probe re-opens the breaker for open_for again."""
        breaker = make(clock)
        fail(breaker, 2)
        clock.advance(10.0)
        fail(breaker)
        assert OPEN == breaker.state
        assert 10.0 == rejection(breaker).retry_after

    def test_every_probe_must_succeed(self, clock: ManualClock) -> None:
        """With 2 probe permits, 2 probes run at once, a 3rd is rejected, 2 successes close."""
        breaker = make(clock, half_open_probes=2, probe_timeout=5.0)
        fail(breaker, 2)
        clock.advance(10.0)
        first, second = enter(breaker), enter(breaker)
        clock.advance(1.0)
        assert 4.0 == rejection(breaker).retry_after  # until the first lease runs out
        leave(breaker, first)
        assert HALF_OPEN == breaker.state
        leave(breaker, second)
        assert CLOSED == breaker.state

    def test_a_freed_permit_is_handed_out_again(self, clock: ManualClock) -> None:
        """A probe that succeeds frees its permit for the next caller; closing needs 2 in all."""
        breaker = make(clock, half_open_probes=2)
        fail(breaker, 2)
        clock.advance(10.0)
        first, second = enter(breaker), enter(breaker)
        leave(breaker, first)
        third = enter(breaker)
        leave(breaker, third)
        assert CLOSED == breaker.state
        leave(breaker, second)  # late: the half-open generation is over
        assert CLOSED == breaker.state
        assert 3 == breaker.generation

    def test_repr(self, clock: ManualClock) -> None:
        """The repr names the breaker and its state."""
        breaker = make(clock)
        assert "<CircuitBreaker 'erp' closed>" == repr(breaker)
        breaker.isolate()
        assert "<CircuitBreaker 'erp' isolated>" == repr(breaker)


class TestLateResults:
    def test_late_failure_of_a_closed_call_changes_nothing(self, clock: ManualClock) -> None:
        """A call admitted before a trip and a reset cannot count in the new closed state."""
        breaker = make(clock, minimum_calls=1)
        slow = enter(breaker)
        fail(breaker)
        breaker.reset()
        leave(breaker, slow, ConnectionError("late"))
        assert CLOSED == breaker.state
        assert 0 == breaker.metrics().calls

    def test_late_success_cannot_close_an_open_breaker(self, clock: ManualClock) -> None:
        """A probe admitted before isolate() succeeds late: the breaker stays isolated."""
        breaker = make(clock)
        fail(breaker, 2)
        clock.advance(10.0)
        probe = enter(breaker)
        breaker.isolate()
        leave(breaker, probe)
        assert ISOLATED == breaker.state

    def test_late_failure_cannot_reopen(self, clock: ManualClock) -> None:
        """A probe whose generation ended (closed by another probe) fails late: still closed."""
        breaker = make(clock, half_open_probes=2)
        fail(breaker, 2)
        clock.advance(10.0)
        first, second = enter(breaker), enter(breaker)
        leave(breaker, first)
        third = enter(breaker)
        leave(breaker, third)
        leave(breaker, second, ConnectionError("late"))
        assert CLOSED == breaker.state

    def test_successes_in_flight_across_the_first_flush_count(self, clock: ManualClock) -> None:
        """A success that ends after the breaker's first recorded failure still counts."""
        breaker = make(clock, failure_rate=0.75, minimum_calls=3, window=ir.CountWindow(3))
        running = enter(breaker)
        fail(breaker)
        leave(breaker, running)
        fail(breaker, 2)  # S F F, with the earlier F pushed out: 2 of 3 < 75 %
        assert CLOSED == breaker.state


class TestHungProbe:
    def test_a_hung_probe_lease_expires(self, clock: ManualClock) -> None:
        """A probe that never finishes blocks others only for probe_timeout; its result is ignored."""
        breaker = make(clock, probe_timeout=5.0)
        fail(breaker, 2)
        clock.advance(10.0)
        hung = enter(breaker)
        clock.advance(3.0)
        assert 2.0 == rejection(breaker).retry_after
        clock.advance(2.0)
        second = enter(breaker)  # the lease ran out: a new probe is admitted
        leave(breaker, hung, ConnectionError("too late"))
        assert HALF_OPEN == breaker.state
        leave(breaker, second)
        assert CLOSED == breaker.state

    def test_a_hung_probe_finishing_after_its_lease_counts_for_nothing(
        self, clock: ManualClock
    ) -> None:
        """A probe that ends after its lease, with nobody else probing, neither closes nor opens."""
        breaker = make(clock, probe_timeout=5.0)
        fail(breaker, 2)
        clock.advance(10.0)
        hung = enter(breaker)
        clock.advance(6.0)
        leave(breaker, hung)
        assert HALF_OPEN == breaker.state
        assert 2 == breaker.generation
        assert "ok" == breaker.call(ok)  # the permit is free at once
        assert CLOSED == breaker.state

    def test_a_slow_probe_is_a_failed_probe(self, clock: ManualClock) -> None:
        """With slow calls counted, a probe that succeeds slowly re-opens the breaker."""
        breaker = make(clock, slow_call_rate=1.0, slow_call_duration=2.0)
        fail(breaker, 2)
        clock.advance(10.0)
        breaker.call(lambda: clock.advance(2.0))
        assert OPEN == breaker.state


# -- classification ----------------------------------------------------------------------------


class InconclusiveError(Exception):
    pass


class TestClassification:
    def test_exceptions_outside_failure_on_are_successes(self, clock: ManualClock) -> None:
        """An exception not in failure_on means the dependency answered: a success."""
        breaker = make(clock, failure_on=ConnectionError, minimum_calls=1)
        for _ in range(4):
            with pytest.raises(KeyError):
                breaker.call(functools.partial(dict[str, int]().__getitem__, "x"))
        metrics = breaker.metrics()
        assert (CLOSED, 4, 0) == (metrics.state, metrics.calls, metrics.failures)

    def test_failure_on_accepts_a_tuple(self, clock: ManualClock) -> None:
        """Every type of a failure_on tuple is a failure."""
        breaker = make(clock, failure_on=(TimeoutError, ConnectionError), minimum_calls=2)
        with pytest.raises(TimeoutError):
            breaker.call(functools.partial(_raise, TimeoutError()))
        fail(breaker)
        assert OPEN == breaker.state

    def test_ignore_on_counts_for_nothing(self, clock: ManualClock) -> None:
        """An exception of an ignore_on type is neither a failure nor a success."""
        breaker = make(clock, ignore_on=InconclusiveError, minimum_calls=1)
        with pytest.raises(InconclusiveError):
            breaker.call(functools.partial(_raise, InconclusiveError()))
        assert 0 == breaker.metrics().calls

    @pytest.mark.parametrize(
        "error",
        [
            BulkheadFullError("full"),
            RateLimitedError(1.0),
            CircuitOpenError("inner", 3.0),
            asyncio.CancelledError(),
            KeyboardInterrupt(),
        ],
        ids=lambda e: type(e).__name__,
    )
    def test_local_causes_are_inconclusive(self, clock: ManualClock, error: BaseException) -> None:
        """Our own rejections and cancellation say nothing about the dependency."""
        seen: list[ir.Outcome] = []

        def classify(outcome: ir.Outcome) -> ir.Verdict | None:
            seen.append(outcome)
            return "failure"

        breaker = make(clock, failure_on=BaseException, classify=classify, minimum_calls=1)
        with pytest.raises(type(error)):
            breaker.call(functools.partial(_raise, error))
        assert 0 == breaker.metrics().calls
        assert [] == seen  # not even the classifier is asked

    def test_an_inconclusive_probe_frees_its_permit(self, clock: ManualClock) -> None:
        """A cancelled probe neither closes nor re-opens; the next caller probes at once."""
        breaker = make(clock)
        fail(breaker, 2)
        clock.advance(10.0)
        with pytest.raises(asyncio.CancelledError):
            breaker.call(functools.partial(_raise, asyncio.CancelledError()))
        assert HALF_OPEN == breaker.state
        assert "ok" == breaker.call(ok)
        assert CLOSED == breaker.state

    @pytest.mark.parametrize("verdict", ["failure", "success", "ignore", None])
    def test_classify_on_results(self, clock: ManualClock, verdict: ir.Verdict | None) -> None:
        """classify sees returned values: each verdict counts so; None means a success."""
        seen: list[ir.Outcome] = []

        def classify(outcome: ir.Outcome) -> ir.Verdict | None:
            seen.append(outcome)
            return verdict

        breaker = make(clock, classify=classify, minimum_calls=3, window=ir.CountWindow(10))
        assert "body" == breaker.call(lambda: "body")
        assert "body" == breaker(lambda: "body")()
        assert [ir.Outcome(None, "body")] * 2 == seen
        metrics = breaker.metrics()
        expected = {"failure": (2, 2), "success": (2, 0), "ignore": (0, 0), None: (2, 0)}
        assert expected[verdict] == (metrics.calls, metrics.failures)

    def test_a_result_classified_as_failure_trips(self, clock: ManualClock) -> None:
        """Results classified as failures trip the breaker like exceptions do."""
        breaker = make(
            clock, classify=lambda o: "failure" if o.result is None else None, minimum_calls=2
        )
        assert None is breaker.call(lambda: None)
        assert 1 == breaker(lambda: 1)()
        assert None is breaker(lambda: None)()
        assert OPEN == breaker.state

    @pytest.mark.parametrize("verdict", ["failure", "success", "ignore", None])
    def test_classify_on_exceptions(self, clock: ManualClock, verdict: ir.Verdict | None) -> None:
        """classify overrules the type rules for exceptions; None falls back to them."""
        breaker = make(clock, classify=lambda o: verdict, ignore_on=KeyError, minimum_calls=3)
        with pytest.raises(ConnectionError):
            breaker.call(refuse)
        with pytest.raises(KeyError):
            breaker.call(functools.partial(_raise, KeyError("x")))
        metrics = breaker.metrics()
        expected = {
            "failure": (2, 2),
            "success": (2, 0),
            "ignore": (0, 0),
            None: (1, 1),  # ConnectionError by the default failure_on; KeyError by ignore_on
        }
        assert expected[verdict] == (metrics.calls, metrics.failures)

    @pytest.mark.parametrize("junk", ["fail", True, 0])
    def test_classify_returning_junk_is_a_configuration_error(
        self, clock: ManualClock, junk: object
    ) -> None:
        """A classifier answering something else than a verdict or None is a ConfigurationError."""
        breaker = make(clock, classify=lambda o: junk)
        with pytest.raises(ConfigurationError) as info:
            breaker.call(ok)
        assert "CircuitBreaker.classify" == info.value.field
        assert junk == info.value.value
        with pytest.raises(ConfigurationError):
            breaker(ok)()


def _raise(error: BaseException) -> NoReturn:
    raise error


# -- slow calls and windows ---------------------------------------------------------------------


class TestSlowCalls:
    def test_slow_successes_trip(self, clock: ManualClock) -> None:
        """Successes slower than slow_call_duration trip the breaker at slow_call_rate."""
        breaker = make(clock, slow_call_rate=0.5, slow_call_duration=1.0, minimum_calls=4)
        slow = breaker(lambda: clock.advance(1.5))
        fast = breaker(lambda: clock.advance(0.5))
        fast()
        fast()
        slow()
        assert CLOSED == breaker.state
        metrics = breaker.metrics()
        assert (3, 0, 1) == (metrics.calls, metrics.failures, metrics.slow)
        assert 1 / 3 == metrics.slow_call_rate
        slow()
        assert OPEN == breaker.state

    def test_exactly_slow_call_duration_is_slow(self, clock: ManualClock) -> None:
        """A call lasting exactly slow_call_duration counts as slow."""
        breaker = make(clock, slow_call_rate=1.0, slow_call_duration=2.0, minimum_calls=1)
        breaker.call(lambda: clock.advance(2.0))
        assert OPEN == breaker.state

    def test_slow_failures_count_twice(self, clock: ManualClock) -> None:
        """A slow failure is a failure and a slow call."""
        breaker = make(
            clock, failure_rate=1.0, slow_call_rate=1.0, slow_call_duration=1.0, minimum_calls=2
        )

        def slow_failure() -> NoReturn:
            clock.advance(1.0)
            raise ConnectionError

        breaker.call(ok)
        with pytest.raises(ConnectionError):
            breaker.call(slow_failure)
        metrics = breaker.metrics()
        assert (2, 1, 1) == (metrics.calls, metrics.failures, metrics.slow)

    def test_count_window_forgets_slow_calls(self, clock: ManualClock) -> None:
        """Slow calls pushed out of a count window no longer count as slow."""
        breaker = make(
            clock,
            slow_call_rate=1.0,
            slow_call_duration=1.0,
            minimum_calls=3,
            window=ir.CountWindow(3),
        )
        slow = breaker(lambda: clock.advance(1.0))
        fast = breaker(ok)
        slow()
        slow()
        fast()
        slow()  # slow, fast, slow: the first one is out
        metrics = breaker.metrics()
        assert (CLOSED, 3, 2) == (metrics.state, metrics.calls, metrics.slow)
        fast()
        fast()  # slow, fast, fast
        metrics = breaker.metrics()
        assert (CLOSED, 3, 1) == (metrics.state, metrics.calls, metrics.slow)

    def test_async_decorated_slow_calls(self, clock: ManualClock) -> None:
        """The async decorator times calls: fast ones pass, slow ones trip, classify still runs."""
        breaker = make(
            clock,
            slow_call_rate=0.5,
            slow_call_duration=1.0,
            minimum_calls=3,
            failure_on=ConnectionError,
            classify=lambda o: None,
        )

        @breaker
        async def fetch(seconds: float) -> float:
            clock.advance(seconds)
            if seconds < 0.5:
                raise KeyError(seconds)  # not a failure: the dependency answered
            return seconds

        async def scenario() -> None:
            assert 0.5 == await fetch(0.5)
            with pytest.raises(KeyError):
                await fetch(0.0)
            assert 2.0 == await fetch(2.0)
            assert CLOSED == breaker.state
            assert 1.0 == await fetch(1.0)

        asyncio.run(scenario())
        assert OPEN == breaker.state

    def test_slow_calls_in_with_blocks(self, clock: ManualClock) -> None:
        """A ``with`` block is timed from enter to exit."""
        breaker = make(clock, slow_call_rate=1.0, slow_call_duration=1.0, minimum_calls=1)
        with breaker:
            clock.advance(1.0)
        assert OPEN == breaker.state

    def test_duration_without_rate_counts_nothing_slow(self, clock: ManualClock) -> None:
        """slow_call_duration alone (no slow_call_rate) does not count slow calls."""
        breaker = make(clock, slow_call_duration=1.0, minimum_calls=1)
        breaker.call(lambda: clock.advance(5.0))
        assert (CLOSED, 0) == (breaker.state, breaker.metrics().slow)

    def test_timedelta_durations(self, clock: ManualClock) -> None:
        """Durations may be timedeltas."""
        breaker = make(
            clock,
            slow_call_rate=1.0,
            slow_call_duration=datetime.timedelta(milliseconds=1500),
            open_for=datetime.timedelta(minutes=1),
            minimum_calls=1,
        )
        assert 1.5 == breaker.slow_call_duration
        breaker.call(lambda: clock.advance(1.5))
        assert 60.0 == rejection(breaker).retry_after


class TestWindows:
    def test_count_window_forgets_old_outcomes(self, clock: ManualClock) -> None:
        """Only the last size calls count: old failures are pushed out by successes."""
        breaker = make(clock, failure_rate=0.5, minimum_calls=4, window=ir.CountWindow(4))
        breaker.call(ok)
        fail(breaker)
        breaker.call(ok)
        breaker.call(ok)
        breaker.call(ok)
        breaker.call(ok)  # pushes the failure out: S S S S
        assert (4, 0) == (breaker.metrics().calls, breaker.metrics().failures)
        fail(breaker)  # S S S F
        assert CLOSED == breaker.state
        fail(breaker)  # S S F F
        assert OPEN == breaker.state

    def test_time_window_ages_buckets_out(self, clock: ManualClock) -> None:
        """Outcomes leave a time window bucket by bucket once its span has passed."""
        breaker = make(clock, minimum_calls=3, window=ir.TimeWindow(10.0, buckets=5))
        fail(breaker)  # bucket [0, 2)
        clock.advance(2.0)
        fail(breaker)  # bucket [2, 4)
        clock.advance(8.0)  # t = 10: the first bucket is out
        assert (1, 1) == (breaker.metrics().calls, breaker.metrics().failures)
        fail(breaker)
        assert CLOSED == breaker.state  # 2 calls: below minimum_calls
        clock.advance(1.9)  # t = 11.9: the second bucket is still in
        fail(breaker)
        assert OPEN == breaker.state

    def test_time_window_forgets_successes_of_an_idle_past(self, clock: ManualClock) -> None:
        """Successes from before a quiet spell longer than the window do not dilute new failures."""
        breaker = make(clock, minimum_calls=4, window=ir.TimeWindow(10.0, buckets=5))
        for _ in range(50):
            breaker.call(ok)
        clock.advance(600.0)
        fail(breaker, 4)
        assert OPEN == breaker.state

    def test_successes_folded_late_keep_their_bucket(self, clock: ManualClock) -> None:
        """Successes counted in one bucket and folded in a later one age out with their bucket."""
        breaker = make(clock, minimum_calls=2, window=ir.TimeWindow(4.0, buckets=2))
        breaker.call(ok)  # t = 0, bucket [0, 2)
        breaker.call(ok)
        clock.advance(3.0)
        fail(breaker)  # t = 3: S S | F, 1 of 3
        assert (3, 1) == (breaker.metrics().calls, breaker.metrics().failures)
        clock.advance(1.0)  # t = 4: the successes' bucket is out
        assert (1, 1) == (breaker.metrics().calls, breaker.metrics().failures)
        fail(breaker)
        assert OPEN == breaker.state

    def test_metrics_between_calls_do_not_move_successes(self, clock: ManualClock) -> None:
        """Reading metrics in a later bucket files pending successes where they were counted."""
        breaker = make(clock, minimum_calls=2, window=ir.TimeWindow(4.0, buckets=2))
        breaker.call(ok)
        clock.advance(2.0)
        assert 1 == breaker.metrics().calls
        clock.advance(2.0)
        assert 0 == breaker.metrics().calls

    def test_time_window_slow_calls_through_decorators(self, clock: ManualClock) -> None:
        """Decorated calls fill a time window across bucket boundaries; slow ones age out too."""
        breaker = make(
            clock,
            slow_call_rate=0.5,
            slow_call_duration=0.5,
            minimum_calls=4,
            window=ir.TimeWindow(4.0, buckets=2),
        )

        @breaker
        def fetch(seconds: float) -> None:
            clock.advance(seconds)

        @breaker
        async def afetch(seconds: float) -> None:
            clock.advance(seconds)

        fetch(0.5)  # t 0 -> 0.5: slow
        fetch(0.0)
        clock.advance(1.75)
        fetch(0.0)  # the first call of the bucket [2, 4)
        asyncio.run(afetch(0.25))
        metrics = breaker.metrics()
        assert (CLOSED, 4, 1) == (metrics.state, metrics.calls, metrics.slow)
        clock.advance(1.5)  # t = 4: the bucket [0, 2) is out
        assert (2, 0) == (breaker.metrics().calls, breaker.metrics().slow)
        asyncio.run(afetch(0.5))  # the first call of the bucket [4, 6), slow
        assert CLOSED == breaker.state  # 3 calls: below minimum_calls
        fetch(0.5)
        assert OPEN == breaker.state  # 2 slow of 4

    def test_windows_are_frozen_values(self) -> None:
        """Windows have defaults, compare by value and are immutable."""
        assert ir.CountWindow(100) == ir.CountWindow()
        assert ir.TimeWindow(60.0, 10) == ir.TimeWindow()
        assert 90.0 == ir.TimeWindow(datetime.timedelta(seconds=90)).seconds
        with pytest.raises(AttributeError):
            ir.CountWindow().size = 3  # type: ignore[misc]


class TestOpenForBackoff:
    def test_consecutive_openings_grow_and_reset(self, clock: ManualClock) -> None:
        """Each failed probe opens longer (Backoff without jitter); a recovery starts over."""
        breaker = make(
            clock, open_for=ir.Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter="none")
        )
        fail(breaker, 2)
        durations = []
        for _ in range(5):
            durations.append(rejection(breaker).retry_after)
            clock.advance(durations[-1] or 0.0)
            fail(breaker)  # the probe fails
        assert [1.0, 2.0, 4.0, 8.0, 8.0] == durations
        assert 6 == breaker.metrics().opens
        clock.advance(8.0)
        breaker.call(ok)  # recovered
        assert 0 == breaker.metrics().opens
        fail(breaker, 2)
        assert 1.0 == rejection(breaker).retry_after

    def test_linear_and_constant_backoffs(self, clock: ManualClock) -> None:
        """Any jitter-free Backoff shape gives the open durations."""
        breaker = make(clock, open_for=ir.Backoff.linear(2.0, 3.0, 6.0))
        fail(breaker, 2)
        assert 2.0 == rejection(breaker).retry_after
        clock.advance(2.0)
        fail(breaker)
        assert 5.0 == rejection(breaker).retry_after
        constant = make(clock, name="other", open_for=ir.Backoff.constant(4.0))
        fail(constant, 2)
        assert 4.0 == rejection(constant).retry_after


# -- call shapes --------------------------------------------------------------------------------


class TestShapes:
    def test_decorator_keeps_the_function(self, clock: ManualClock) -> None:
        """A decorated def keeps its name, doc and signature, and wraps the original."""
        breaker = make(clock)

        def fetch_stock(sku: str, *, warehouse: int = 1) -> int:
            """Fetch the stock of a SKU."""
            return len(sku) * warehouse

        decorated = breaker(fetch_stock)
        assert fetch_stock is decorated.__wrapped__  # type: ignore[attr-defined]
        assert "fetch_stock" == decorated.__name__
        assert "Fetch the stock of a SKU." == decorated.__doc__
        assert inspect.signature(fetch_stock) == inspect.signature(decorated)
        assert 6 == decorated("abc", warehouse=2)

    def test_async_decorator_keeps_the_coroutine_function(self, clock: ManualClock) -> None:
        """A decorated async def stays a coroutine function, with its name and signature."""
        breaker = make(clock)

        async def fetch_stock(sku: str) -> int:
            return len(sku)

        decorated = breaker(fetch_stock)
        assert inspect.iscoroutinefunction(decorated)
        assert fetch_stock is decorated.__wrapped__  # type: ignore[attr-defined]
        assert "fetch_stock" == decorated.__name__
        assert 3 == asyncio.run(decorated("abc"))

    def test_generator_functions_are_rejected(self, clock: ManualClock) -> None:
        """Decorating a generator function (sync or async) is a TypeError."""
        breaker = make(clock)

        def rows() -> Iterator[int]:
            yield 1

        async def arows() -> AsyncIterator[int]:
            yield 1

        with pytest.raises(TypeError, match="generator function"):
            breaker(rows)
        with pytest.raises(TypeError, match="generator function"):
            breaker(arows)

    @pytest.mark.parametrize("listening", [False, True])
    @pytest.mark.parametrize("timed", [False, True])
    def test_decorated_calls_trip_and_reject(
        self, clock: ManualClock, timed: bool, listening: bool
    ) -> None:
        """Through the decorator (untimed and timed paths): failures trip, then calls are rejected."""
        extra: dict[str, Any] = {"slow_call_rate": 1.0, "slow_call_duration": 60.0} if timed else {}
        breaker = make(clock, minimum_calls=3, **extra)
        seen: list[ir.Event] = []
        stack = contextlib.ExitStack()
        if listening:
            stack.enter_context(_events.scoped_listener(seen.append))
        calls: list[str] = []

        @breaker
        def fetch(sku: str) -> str:
            calls.append(sku)
            if sku == "bad":
                raise ConnectionError(sku)
            return sku

        assert "a" == fetch("a")
        for _ in range(2):
            with pytest.raises(ConnectionError):
                fetch("bad")
        assert OPEN == breaker.state
        clock.advance(1.0)
        with pytest.raises(CircuitOpenError) as info:
            fetch("b")
        assert 9.0 == info.value.retry_after
        assert ["a", "bad", "bad"] == calls
        clock.advance(9.0)
        assert "c" == fetch("c")  # the probe
        stack.close()
        assert CLOSED == breaker.state
        assert 1 == breaker.metrics().rejected
        assert (1 if listening else 0) == len(breaker_events(seen, "rejected"))

    @pytest.mark.parametrize("listening", [False, True])
    @pytest.mark.parametrize("timed", [False, True])
    def test_async_decorated_calls_trip_and_reject(
        self, clock: ManualClock, timed: bool, listening: bool
    ) -> None:
        """The async decorator behaves as the sync one."""
        extra: dict[str, Any] = {"slow_call_rate": 1.0, "slow_call_duration": 60.0} if timed else {}
        breaker = make(clock, minimum_calls=3, **extra)
        seen: list[ir.Event] = []
        stack = contextlib.ExitStack()
        if listening:
            stack.enter_context(_events.scoped_listener(seen.append))

        @breaker
        async def fetch(sku: str) -> str:
            await asyncio.sleep(0)
            if sku == "bad":
                raise ConnectionError(sku)
            return sku

        async def scenario() -> None:
            assert "a" == await fetch("a")
            for _ in range(2):
                with pytest.raises(ConnectionError):
                    await fetch("bad")
            with pytest.raises(CircuitOpenError):
                await fetch("b")
            clock.advance(10.0)
            assert "c" == await fetch("c")

        asyncio.run(scenario())
        stack.close()
        assert CLOSED == breaker.state
        assert 1 == breaker.metrics().rejected
        assert (1 if listening else 0) == len(breaker_events(seen, "rejected"))

    @pytest.mark.parametrize("timed", [False, True])
    def test_decorated_classification(self, clock: ManualClock, timed: bool) -> None:
        """The decorator's fast path classifies like call(): successes, ignores, results."""
        extra: dict[str, Any] = {"slow_call_rate": 1.0, "slow_call_duration": 60.0} if timed else {}
        breaker = make(
            clock,
            failure_on=ConnectionError,
            ignore_on=KeyError,
            classify=lambda o: "failure" if o.result == "bad" else None,
            minimum_calls=10,
            window=ir.CountWindow(10),
            **extra,
        )

        @breaker
        def fetch(what: str) -> str:
            if what in ("ConnectionError", "KeyError", "ValueError"):
                raise {"ConnectionError": ConnectionError, "KeyError": KeyError}.get(
                    what, ValueError
                )(what)
            return what

        for what in ("ok", "bad", "ConnectionError", "KeyError", "ValueError"):
            with contextlib.suppress(ConnectionError, KeyError, ValueError):
                fetch(what)
        metrics = breaker.metrics()
        assert (4, 2) == (metrics.calls, metrics.failures)  # ok, bad, Conn, Value; KeyError ignored

    def test_async_decorated_classification(self, clock: ManualClock) -> None:
        """The async decorator's fast path classifies like acall()."""
        breaker = make(
            clock,
            ignore_on=KeyError,
            classify=lambda o: {"bad": "failure", "skip": "ignore"}.get(o.result),  # type: ignore[return-value]
            minimum_calls=10,
            window=ir.CountWindow(10),
        )

        @breaker
        async def fetch(what: str) -> str:
            if what == "KeyError":
                raise KeyError(what)
            if what == "other":
                raise ConnectionError(what)
            return what

        async def scenario() -> None:
            for what in ("ok", "bad", "skip", "KeyError", "other"):
                with contextlib.suppress(KeyError, ConnectionError):
                    await fetch(what)

        asyncio.run(scenario())
        metrics = breaker.metrics()
        assert (3, 2) == (metrics.calls, metrics.failures)

    def test_async_decorated_rejections_with_a_listener(
        self, clock: ManualClock, events: list[ir.Event]
    ) -> None:
        """The async decorator reports rejections to listeners; other errors count as successes."""
        breaker = make(clock, failure_rate=0.75, failure_on=ConnectionError, minimum_calls=3)

        @breaker
        async def fetch(error: Exception | None) -> None:
            if error is not None:
                raise error

        async def scenario() -> None:
            with pytest.raises(ValueError, match="answered"):
                await fetch(ValueError("answered"))
            for _ in range(2):
                with pytest.raises(ConnectionError):
                    await fetch(ConnectionError())
            assert CLOSED == breaker.state  # 2 of 3 failed
            with pytest.raises(ConnectionError):
                await fetch(ConnectionError())
            with pytest.raises(CircuitOpenError):
                await fetch(None)

        asyncio.run(scenario())
        assert [10.0] == [e.retry_after for e in breaker_events(events, "rejected")]

    def test_call_and_acall(self, clock: ManualClock) -> None:
        """call and acall pass arguments and return values."""
        breaker = make(clock)

        async def add(a: int, b: int = 0) -> int:
            await asyncio.sleep(0)
            return a + b

        assert 3 == breaker.call(lambda a, b: a + b, 1, b=2)
        assert 5 == asyncio.run(breaker.acall(add, 2, b=3))

    def test_acall_trips_rejects_and_probes(self, clock: ManualClock) -> None:
        """acall records failures, rejects while open and probes after open_for."""
        breaker = make(clock)

        async def arefuse() -> NoReturn:
            raise ConnectionError

        async def scenario() -> None:
            for _ in range(2):
                with pytest.raises(ConnectionError):
                    await breaker.acall(arefuse)
            with pytest.raises(CircuitOpenError):
                await breaker.acall(asyncio.sleep, 0)
            clock.advance(10.0)
            assert None is await breaker.acall(asyncio.sleep, 0)

        asyncio.run(scenario())
        assert CLOSED == breaker.state

    def test_with_blocks_nest(self, clock: ManualClock) -> None:
        """Nested ``with breaker:`` blocks are each one call, finished in order."""
        breaker = make(clock, failure_rate=0.75, minimum_calls=2)
        ran: list[str] = []

        def blocks(inner_fails: bool) -> None:
            with breaker as entered:
                assert breaker is entered
                with breaker:
                    if inner_fails:
                        raise ConnectionError
                raise ConnectionError

        with pytest.raises(ConnectionError):
            blocks(inner_fails=False)
        metrics = breaker.metrics()
        assert (2, 1) == (metrics.calls, metrics.failures)
        with pytest.raises(ConnectionError):
            blocks(inner_fails=True)
        assert OPEN == breaker.state

        def block() -> None:
            with breaker:
                ran.append("block")

        with pytest.raises(CircuitOpenError):
            block()
        assert [] == ran

    def test_async_with_blocks_nest(self, clock: ManualClock) -> None:
        """``async with`` works like ``with``, nested too, and per task."""
        breaker = make(clock, minimum_calls=3, window=ir.CountWindow(10))

        async def one(fail_it: bool) -> None:
            async with breaker:
                async with breaker:
                    await asyncio.sleep(0)
                if fail_it:
                    raise ConnectionError

        async def scenario() -> None:
            results = await asyncio.gather(one(False), one(True), return_exceptions=True)
            assert [None, ConnectionError] == [r if r is None else type(r) for r in results]

        asyncio.run(scenario())
        metrics = breaker.metrics()
        assert (4, 1) == (metrics.calls, metrics.failures)

    def test_isolate_and_reset(self, clock: ManualClock) -> None:
        """isolate() rejects everything (retry_after None) until reset() closes it, emptied."""
        breaker = make(clock, minimum_calls=3)
        fail(breaker, 2)
        breaker.isolate()
        assert ISOLATED == breaker.state
        clock.advance(1e6)
        error = rejection(breaker)
        assert None is error.retry_after
        assert "circuit 'erp' is open" == str(error)
        with pytest.raises(CircuitOpenError):
            breaker(ok)()
        breaker.reset()
        assert CLOSED == breaker.state
        fail(breaker, 2)
        assert CLOSED == breaker.state  # the window was emptied by the reset
        assert 2 == breaker.generation

    def test_reset_ends_an_open_breaker(self, clock: ManualClock) -> None:
        """reset() closes an open breaker at once and forgets the opening count."""
        breaker = make(clock, open_for=ir.Backoff(initial=1.0, maximum=8.0, jitter="none"))
        fail(breaker, 2)
        clock.advance(1.0)
        fail(breaker)
        assert 2.0 == rejection(breaker).retry_after
        breaker.reset()
        assert "ok" == breaker.call(ok)
        breaker.reset()
        fail(breaker, 2)
        assert 1.0 == rejection(breaker).retry_after


# -- metrics, errors and events -----------------------------------------------------------------


class TestMetrics:
    def test_metrics_snapshot(self, clock: ManualClock) -> None:
        """metrics() reports the window counts and rates, openings, retry_after and rejections."""
        breaker = make(clock, minimum_calls=4, window=ir.CountWindow(10))
        breaker.call(ok)
        breaker(ok)()
        breaker.call(ok)
        fail(breaker)
        assert (
            ir.BreakerMetrics(
                name="erp",
                state=CLOSED,
                generation=0,
                calls=4,
                failures=1,
                slow=0,
                failure_rate=0.25,
                slow_call_rate=0.0,
                opens=0,
                retry_after=0.0,
                rejected=0,
            )
            == breaker.metrics()
        )
        fail(breaker, 2)  # 3 of 6
        clock.advance(3.0)
        rejection(breaker)
        rejection(breaker)
        with pytest.raises(CircuitOpenError):
            breaker(ok)()
        assert (
            ir.BreakerMetrics(
                name="erp",
                state=OPEN,
                generation=1,
                calls=0,
                failures=0,
                slow=0,
                failure_rate=0.0,
                slow_call_rate=0.0,
                opens=1,
                retry_after=7.0,
                rejected=3,
            )
            == breaker.metrics()
        )
        assert 3 == breaker.metrics().rejected  # reading does not count

    def test_metrics_of_a_half_open_breaker(self, clock: ManualClock) -> None:
        """A breaker past its open time reads half-open, with nothing to wait for."""
        breaker = make(clock)
        fail(breaker, 2)
        clock.advance(10.0)
        metrics = breaker.metrics()
        assert (HALF_OPEN, 0.0, 1) == (metrics.state, metrics.retry_after, metrics.opens)


class TestCircuitOpenError:
    def test_a_fresh_error_every_time(self, clock: ManualClock) -> None:
        """Every rejection raises a new CircuitOpenError: tracebacks never pile up."""
        breaker = make(clock)
        fail(breaker, 2)
        decorated = breaker(ok)
        errors = []
        for call in [lambda: breaker.call(ok), decorated] * 3:
            with pytest.raises(CircuitOpenError) as info:
                call()
            errors.append(info.value)
        assert 6 == len({id(e) for e in errors})
        for error in errors:
            assert "erp" == error.name
            assert 10.0 == error.retry_after
            assert None is error.__context__
            depth = 0
            tb = error.__traceback__
            while tb is not None:
                depth, tb = depth + 1, tb.tb_next
            assert depth <= 4

    def test_with_events_too(self, clock: ManualClock, events: list[ir.Event]) -> None:
        """With a listener attached rejections are fresh errors as well."""
        breaker = make(clock)
        fail(breaker, 2)
        first, second = rejection(breaker), rejection(breaker)
        assert first is not second
        assert (first.name, first.retry_after) == (second.name, second.retry_after)


class TestEvents:
    def test_state_changes_and_rejections(self, clock: ManualClock, events: list[ir.Event]) -> None:
        """Every transition emits state_changed (previous, state, generation); rejections too."""
        breaker = make(clock)
        breaker.call(ok)
        fail(breaker)
        clock.advance(4.0)
        rejection(breaker)
        with pytest.raises(CircuitOpenError):
            breaker(ok)()
        clock.advance(6.0)
        breaker.call(ok)
        breaker.isolate()
        rejection(breaker)
        breaker.reset()
        changes = [
            (e.previous, e.state, e.generation) for e in breaker_events(events, "state_changed")
        ]
        assert [
            (CLOSED, OPEN, 1),
            (OPEN, HALF_OPEN, 2),
            (HALF_OPEN, CLOSED, 3),
            (CLOSED, ISOLATED, 4),
            (ISOLATED, CLOSED, 5),
        ] == changes
        rejected = breaker_events(events, "rejected")
        assert [(OPEN, 6.0, 1), (OPEN, 6.0, 1), (ISOLATED, None, 4)] == [
            (e.state, e.retry_after, e.generation) for e in rejected
        ]
        assert {"erp"} == {e.source for e in events}
        assert 3 == breaker.metrics().rejected

    def test_global_listener(self, clock: ManualClock) -> None:
        """ir.add_listener sees breaker events until removed."""
        seen: list[ir.Event] = []
        remove = ir.add_listener(seen.append)
        try:
            breaker = make(clock)
            fail(breaker, 2)
        finally:
            remove()
        fail(make(clock, name="after"), 2)
        assert [OPEN] == [e.state for e in breaker_events(seen, "state_changed")]

    def test_logging_listener(self, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
        """LoggingListener logs opening at WARNING, other changes at INFO, rejections at DEBUG."""
        with _events.scoped_listener(ir.LoggingListener()):
            breaker = make(clock)
            with caplog.at_level(logging.DEBUG, logger="invresilience"):
                fail(breaker, 2)
                rejection(breaker)
                clock.advance(10.0)
                breaker.call(ok)
        records = [(r.levelname, r.getMessage()) for r in caplog.records]
        assert [
            ("WARNING", "circuit 'erp' state changed: closed -> open (generation 1)"),
            ("DEBUG", records[1][1]),
            ("INFO", "circuit 'erp' state changed: open -> half_open (generation 2)"),
            ("INFO", "circuit 'erp' state changed: half_open -> closed (generation 3)"),
        ] == records
        assert "kind='rejected'" in records[1][1]
        assert all(
            isinstance(r.invresilience_event, ir.BreakerEvent)  # type: ignore[attr-defined]
            for r in caplog.records
        )


# -- shared stores and their failures -----------------------------------------------------------


class FlakyStore:
    """A MemoryBreakerStore that raises BackendUnavailableError while ``down``."""

    def __init__(self, clock: ManualClock) -> None:
        self.inner = MemoryBreakerStore(clock=clock)
        self.down = False
        self.calls: list[str] = []

    def _check(self, operation: str) -> None:
        self.calls.append(operation)
        if self.down:
            raise BackendUnavailableError("store unreachable")

    def record(
        self,
        name: str,
        spec: BreakerSpec,
        generation: int,
        *,
        successes: int = 0,
        failures: int = 0,
        slow_successes: int = 0,
        slow_failures: int = 0,
    ) -> SharedBreakerState:
        self._check("record")
        return self.inner.record(
            name,
            spec,
            generation,
            successes=successes,
            failures=failures,
            slow_successes=slow_successes,
            slow_failures=slow_failures,
        )

    def probe(self, name: str, spec: BreakerSpec, owner: str) -> tuple[SharedBreakerState, bool]:
        self._check("probe")
        return self.inner.probe(name, spec, owner)

    def settle(
        self, name: str, spec: BreakerSpec, owner: str, generation: int, success: bool | None
    ) -> SharedBreakerState:
        self._check("settle")
        return self.inner.settle(name, spec, owner, generation, success)

    def force(
        self, name: str, spec: BreakerSpec, state: Literal["isolated", "closed"]
    ) -> SharedBreakerState:
        self._check("force")
        return self.inner.force(name, spec, state)

    def read(self, name: str, spec: BreakerSpec) -> SharedBreakerState:
        self._check("read")
        return self.inner.read(name, spec)


class AsyncFlakyStore:
    """The async twin of FlakyStore, over the same sync store."""

    def __init__(self, sync: FlakyStore) -> None:
        self.sync = sync
        self.calls = 0

    async def record(self, *args: Any, **kwargs: Any) -> SharedBreakerState:
        self.calls += 1
        return self.sync.record(*args, **kwargs)

    async def probe(self, *args: Any) -> tuple[SharedBreakerState, bool]:
        self.calls += 1
        return self.sync.probe(*args)

    async def settle(self, *args: Any) -> SharedBreakerState:
        self.calls += 1
        return self.sync.settle(*args)

    async def force(self, *args: Any) -> SharedBreakerState:
        self.calls += 1
        return self.sync.force(*args)

    async def read(self, *args: Any) -> SharedBreakerState:
        self.calls += 1
        return self.sync.read(*args)


class TestSharedStore:
    def test_two_breakers_of_one_name_are_one(self, clock: ManualClock) -> None:
        """Failures through either of two same-named breakers on one store trip both."""
        store = MemoryBreakerStore(clock=clock)
        a = make(clock, store=store, minimum_calls=4, flush_interval=1.0)
        b = make(clock, store=store, minimum_calls=4, flush_interval=1.0)
        fail(a)
        fail(b)
        fail(a)
        assert CLOSED == a.state
        fail(b)  # the 4th failure, through b
        assert OPEN == b.state
        clock.advance(1.0)  # a checks in before its next call once flush_interval has passed
        with pytest.raises(CircuitOpenError) as info:
            a.call(ok)
        assert 9.0 == info.value.retry_after
        assert OPEN == a.state

    def test_one_probe_across_breakers(self, clock: ManualClock) -> None:
        """In half-open, one permit is shared: a probe through one rejects the other."""
        store = MemoryBreakerStore(clock=clock)
        a = make(clock, store=store)
        b = make(clock, store=store)
        fail(a, 2)
        fail(b)  # b learns the state from the store
        assert OPEN == b.state
        clock.advance(10.0)
        probe = enter(a)
        assert 1.0 == rejection(b).retry_after  # a shared breaker asks again soon
        leave(a, probe)
        assert CLOSED == a.state
        clock.advance(1.0)  # flush_interval: b asks the store again
        assert "ok" == b.call(ok)
        assert CLOSED == b.state

    def test_successes_are_batched(self, clock: ManualClock) -> None:
        """A healthy shared breaker asks the store at most once per flush_interval."""
        store = FlakyStore(clock)
        breaker = make(clock, store=store, flush_interval=1.0, window=ir.CountWindow(1000))
        store.calls.clear()
        for _ in range(100):
            breaker.call(ok)
            breaker(ok)()
            clock.advance(0.02)
        assert ["record"] == store.calls  # once, when flush_interval had passed
        assert 200 == breaker.metrics().calls

    def test_async_store_is_used_by_async_calls(self, clock: ManualClock) -> None:
        """With an async_store, acall, async decorators and async with await it."""
        sync = FlakyStore(clock)
        astore = AsyncFlakyStore(sync)
        breaker = make(clock, store=sync, async_store=astore)

        async def arefuse() -> NoReturn:
            raise ConnectionError

        async def scenario() -> None:
            for _ in range(2):
                with pytest.raises(ConnectionError):
                    await breaker.acall(arefuse)
            assert OPEN == breaker.state
            clock.advance(10.0)
            async with breaker:
                pass

        asyncio.run(scenario())
        assert CLOSED == breaker.state
        assert 4 == astore.calls  # record, record, probe, settle

    def test_async_memory_store_shares_the_sync_one(self, clock: ManualClock) -> None:
        """AsyncMemoryBreakerStore is the same state as the MemoryBreakerStore it wraps."""
        store = MemoryBreakerStore(clock=clock)
        breaker = make(clock, store=store, async_store=AsyncMemoryBreakerStore(store))
        other = make(clock, store=store)

        async def arefuse() -> NoReturn:
            raise ConnectionError

        async def scenario() -> None:
            for _ in range(2):
                with pytest.raises(ConnectionError):
                    await breaker.acall(arefuse)

        asyncio.run(scenario())
        assert OPEN == other.metrics().state
        assert "AsyncMemoryBreakerStore(MemoryBreakerStore(1 breakers))" == repr(
            AsyncMemoryBreakerStore(store)
        )

    def test_a_peer_reset_ends_isolation_everywhere(self, clock: ManualClock) -> None:
        """isolate() through one breaker isolates its peers; reset() through one frees them all."""
        store = MemoryBreakerStore(clock=clock)
        a = make(clock, store=store, flush_interval=1.0)
        b = make(clock, store=store, flush_interval=1.0)
        a.isolate()
        clock.advance(1.0)
        assert None is rejection(b).retry_after  # b checked in and found it isolated
        a.reset()
        clock.advance(0.5)
        rejection(b)  # b does not know yet
        clock.advance(0.5)
        assert "ok" == b.call(ok)  # b asked the store again and found it closed
        assert CLOSED == b.state

    def test_decorated_calls_check_in_with_the_store(self, clock: ManualClock) -> None:
        """A decorated call after flush_interval asks the store first: a peer's trip stops it."""
        store = MemoryBreakerStore(clock=clock)
        a = make(clock, store=store, flush_interval=1.0)
        b = make(clock, store=store, flush_interval=1.0)
        calls: list[str] = []

        @b
        def fetch() -> str:
            calls.append("fetch")
            return "ok"

        @b
        async def afetch() -> str:
            calls.append("afetch")
            return "ok"

        assert "ok" == fetch()
        fail(a, 2)
        clock.advance(1.0)
        with pytest.raises(CircuitOpenError):
            fetch()
        a.reset()
        clock.advance(10.0)
        assert "ok" == asyncio.run(afetch())  # b probes (the store is closed: a plain call)
        fail(a, 2)
        clock.advance(1.0)
        with pytest.raises(CircuitOpenError):
            asyncio.run(afetch())
        assert ["fetch", "afetch"] == calls

    def test_acall_checks_in_with_the_store(self, clock: ManualClock) -> None:
        """acall on a shared breaker after flush_interval asks the store before calling."""
        store = MemoryBreakerStore(clock=clock)
        a = make(clock, store=store, flush_interval=1.0)
        b = make(clock, store=store, async_store=AsyncMemoryBreakerStore(store))

        async def scenario() -> None:
            assert None is await b.acall(asyncio.sleep, 0)
            clock.advance(1.0)
            assert None is await b.acall(asyncio.sleep, 0)  # checked in: still closed
            a.isolate()
            clock.advance(1.0)
            with pytest.raises(CircuitOpenError):
                await b.acall(asyncio.sleep, 0)
            a.reset()
            clock.advance(10.0)
            assert None is await b.acall(asyncio.sleep, 0)  # b re-checks: closed

        asyncio.run(scenario())
        assert CLOSED == b.state

    def test_shared_time_window_drops_successes_older_than_the_window(
        self, clock: ManualClock
    ) -> None:
        """A shared breaker does not send the store a batch of successes that aged out."""
        store = MemoryBreakerStore(clock=clock)
        breaker = make(
            clock, store=store, minimum_calls=4, window=ir.TimeWindow(10.0), flush_interval=1.0
        )
        with breaker:  # through ``with``: no check-in before the call
            clock.advance(0.5)
        for _ in range(20):
            with breaker:
                pass
        clock.advance(600.0)
        with breaker:  # flushed 600 s late: those 20 successes are long gone
            pass
        assert 1 == breaker.metrics().calls
        for _ in range(5):
            with breaker:
                pass
        clock.advance(5.0)
        with breaker:  # flushed 4 s late: those 5 successes are still in the window
            pass
        assert 7 == breaker.metrics().calls

    def test_a_store_that_gives_no_lease_time(self, clock: ManualClock) -> None:
        """A store saying half-open and busy without a time is asked again after a second."""

        class Busy(FlakyStore):
            def probe(
                self, name: str, spec: BreakerSpec, owner: str
            ) -> tuple[SharedBreakerState, bool]:
                shared, _ = super().probe(name, spec, owner)
                return SharedBreakerState(state=HALF_OPEN, generation=shared.generation), False

        store = Busy(clock)
        breaker = make(clock, store=store, probe_timeout=30.0)
        fail(breaker, 2)
        clock.advance(10.0)
        assert 1.0 == rejection(breaker).retry_after
        store.calls.clear()
        clock.advance(0.5)
        rejection(breaker)
        assert [] == store.calls  # not asked again within that second
        clock.advance(0.5)
        rejection(breaker)
        assert ["probe"] == store.calls

    def test_async_memory_store_operations(self, clock: ManualClock) -> None:
        """Every operation of the async memory store acts on the shared sync store."""
        sync = MemoryBreakerStore(clock=clock)
        astore = AsyncMemoryBreakerStore(sync)
        spec = make(clock)._spec

        async def scenario() -> None:
            assert CLOSED == (await astore.read("n", spec)).state
            shared = await astore.record("n", spec, 0, failures=2)
            assert (OPEN, 1) == (shared.state, shared.generation)
            clock.advance(10.0)
            shared, granted = await astore.probe("n", spec, "me")
            assert (HALF_OPEN, True) == (shared.state, granted)
            shared = await astore.settle("n", spec, "me", shared.generation, True)
            assert CLOSED == shared.state
            assert ISOLATED == (await astore.force("n", spec, "isolated")).state

        asyncio.run(scenario())
        assert ISOLATED == sync.read("n", spec).state
        assert isinstance(AsyncMemoryBreakerStore().sync, MemoryBreakerStore)

    def test_a_reconfigured_name_starts_afresh(self, clock: ManualClock) -> None:
        """A store asked with another configuration for a name starts it closed, a generation on."""
        store = MemoryBreakerStore(clock=clock)
        old = make(clock, store=store)
        fail(old, 2)
        assert OPEN == old.state
        new = make(clock, store=store, minimum_calls=5)
        assert (CLOSED, 2) == (new.state, new.generation)


class TestStoreFailure:
    def test_fail_open_admits_everything_while_down(
        self, clock: ManualClock, events: list[ir.Event]
    ) -> None:
        """fail_open: while the store is down every call passes, failures trip nothing."""
        store = FlakyStore(clock)
        breaker = make(clock, store=store, on_store_error="fail_open", store_retry=5.0)
        store.down = True
        fail(breaker, 10)
        assert CLOSED == breaker.state
        assert "ok" == breaker.call(ok)
        assert 1 == len(breaker_events(events, "store_error"))
        error = breaker_events(events, "store_error")[0].exception
        assert isinstance(error, BackendUnavailableError)

    def test_fail_closed_rejects_everything_while_down(self, clock: ManualClock) -> None:
        """fail_closed: while the store is down every call is rejected until store_retry."""
        store = FlakyStore(clock)
        breaker = make(clock, store=store, on_store_error="fail_closed", store_retry=5.0)
        store.down = True
        fail(breaker)  # the failure meets the dead store
        clock.advance(2.0)
        assert 3.0 == rejection(breaker).retry_after
        assert OPEN == breaker.state
        clock.advance(3.0)
        store.down = False
        assert "ok" == breaker.call(ok)  # the store is asked again and answers: closed
        assert CLOSED == breaker.state

    def test_fail_closed_stays_closed_if_the_store_is_still_down(self, clock: ManualClock) -> None:
        """fail_closed: a store still down after store_retry keeps rejecting for another round."""
        store = FlakyStore(clock)
        breaker = make(clock, store=store, on_store_error="fail_closed", store_retry=5.0)
        store.down = True
        fail(breaker)
        clock.advance(5.0)
        assert 5.0 == rejection(breaker).retry_after

    def test_local_carries_on_with_local_state(self, clock: ManualClock) -> None:
        """local: while the store is down, this breaker trips, rejects and probes on its own."""
        store = FlakyStore(clock)
        breaker = make(clock, store=store, store_retry=60.0)
        store.down = True
        fail(breaker, 2)
        assert OPEN == breaker.state
        assert 10.0 == rejection(breaker).retry_after
        clock.advance(10.0)
        assert "ok" == breaker.call(ok)
        assert CLOSED == breaker.state

    def test_local_keeps_the_open_time_of_the_shared_state(self, clock: ManualClock) -> None:
        """local: a store found down when the open time is over lets this process probe at once."""
        store = FlakyStore(clock)
        breaker = make(clock, store=store, open_for=30.0)
        fail(breaker, 2)
        clock.advance(30.0)
        store.down = True
        assert "ok" == breaker.call(ok)
        assert CLOSED == breaker.state

    def test_local_keeps_the_remaining_open_time(self, clock: ManualClock) -> None:
        """local: failing over mid-opening keeps the opening's end, not a new full open_for."""
        store = FlakyStore(clock)
        breaker = make(clock, store=store, open_for=30.0)
        fail(breaker, 2)
        clock.advance(20.0)
        store.down = True
        breaker.metrics()  # asks the store, finds it down
        assert 10.0 == rejection(breaker).retry_after

    def test_the_store_state_is_adopted_when_it_is_back(
        self, clock: ManualClock, events: list[ir.Event]
    ) -> None:
        """After store_retry the store is asked again and its state wins over the local one."""
        store = FlakyStore(clock)
        breaker = make(clock, store=store, store_retry=5.0, flush_interval=1.0)
        other = make(clock, store=store)
        store.down = True
        fail(breaker, 2)  # tripped locally
        assert OPEN == breaker.state
        store.down = False
        fail(other, 2)  # ... and in the store, by someone else
        other.reset()  # ... who then reset it
        clock.advance(10.0)
        assert "ok" == breaker.call(ok)  # asks the store: closed
        assert CLOSED == breaker.state
        assert 0 == breaker.metrics().opens
        assert 1 == len(breaker_events(events, "store_error"))

    def test_a_store_down_at_construction(self, clock: ManualClock) -> None:
        """A breaker whose store is down when it is built starts closed, on its local state."""
        store = FlakyStore(clock)
        store.down = True
        breaker = make(clock, store=store)
        assert CLOSED == breaker.state
        assert "ok" == breaker.call(ok)

    def test_async_store_failure(self, clock: ManualClock) -> None:
        """An async store that fails is handled like the sync one (here: fail_closed)."""
        sync = FlakyStore(clock)
        breaker = make(
            clock, store=sync, async_store=AsyncFlakyStore(sync), on_store_error="fail_closed"
        )
        sync.down = True

        async def arefuse() -> NoReturn:
            raise ConnectionError

        async def scenario() -> None:
            with pytest.raises(ConnectionError):
                await breaker.acall(arefuse)
            with pytest.raises(CircuitOpenError):
                await breaker.acall(asyncio.sleep, 0)

        asyncio.run(scenario())


class TestProbeRace:
    def test_a_permit_from_an_older_generation_is_no_permit(self, clock: ManualClock) -> None:
        """A probe permit granted before transitions that came back after them is not honoured."""
        hooks: list[Callable[[], None]] = []

        class SlowAnswers(FlakyStore):
            def probe(
                self, name: str, spec: BreakerSpec, owner: str
            ) -> tuple[SharedBreakerState, bool]:
                answer = super().probe(name, spec, owner)
                if hooks:
                    hooks.pop()()  # other callers move on while this answer travels
                return answer

        breaker = make(clock, store=SlowAnswers(clock), half_open_probes=2)
        fail(breaker, 2)
        clock.advance(10.0)
        admitted: list[str] = []

        def meanwhile() -> None:
            leave(breaker, enter(breaker), ConnectionError())  # a probe fails: open again
            clock.advance(10.0)
            enter(breaker)  # the next half-open generation: its first probe, still running
            admitted.append("first")

        hooks.append(meanwhile)
        for name in ("late", "second", "third"):
            try:
                enter(breaker)
                admitted.append(name)
            except CircuitOpenError:
                pass
        assert ["first", "second"] == admitted


# -- the registry -------------------------------------------------------------------------------


class TestRegistry:
    def test_one_breaker_per_key(self, clock: ManualClock) -> None:
        """The factory runs once per key; the same key gives the same breaker."""
        made: list[str] = []

        def factory(key: str) -> ir.CircuitBreaker:
            made.append(key)
            return make(clock, name=f"erp:{key}")

        registry = ir.CircuitBreakerRegistry(factory)
        assert registry.get("a") is registry.get("a")
        assert registry["b"] is not registry["a"]
        assert ["a", "b"] == made
        assert 2 == len(registry)
        assert "a" in registry
        assert "c" not in registry
        assert "CircuitBreakerRegistry(2/1024 breakers)" == repr(registry)

    def test_bounded_with_lru_eviction(self, clock: ManualClock) -> None:
        """Beyond maximum, the least recently used breaker is dropped and made afresh later."""
        registry = ir.CircuitBreakerRegistry(lambda key: make(clock, name=key), maximum=2)
        a = registry.get("a")
        registry.get("b")
        assert a is registry.get("a")  # a is now the most recent
        registry.get("c")  # evicts b
        assert ("a" in registry, "b" in registry, "c" in registry) == (True, False, True)
        fail(registry.get("c"), 2)
        registry.get("b")  # evicts a
        assert 2 == len(registry)
        assert a is not registry.get("a")

    def test_call_acall_and_metrics(self, clock: ManualClock) -> None:
        """call and acall go through the key's breaker; metrics covers every breaker held."""
        registry = ir.CircuitBreakerRegistry(
            lambda key: make(clock, name=f"erp:{key}", minimum_calls=3)
        )

        async def twice(x: int) -> int:
            return 2 * x

        assert 3 == registry.call("a", lambda x: x + 1, 2)
        assert 8 == asyncio.run(registry.acall("b", twice, 4))
        for _ in range(2):
            with pytest.raises(ConnectionError):
                registry.call("a", refuse)
        with pytest.raises(CircuitOpenError) as info:
            registry.call("a", ok)
        assert "erp:a" == info.value.name
        assert [("erp:b", CLOSED), ("erp:a", OPEN)] == [  # least recently used first
            (m.name, m.state) for m in registry.metrics()
        ]

    def test_factory_must_make_breakers(self) -> None:
        """A factory returning something else than a CircuitBreaker is a TypeError."""
        registry = ir.CircuitBreakerRegistry(lambda key: object())  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match="not a CircuitBreaker"):
            registry.get("a")
        assert 0 == len(registry)

    @pytest.mark.parametrize(
        ("kwargs", "field", "value"),
        [
            ({"factory": "nope"}, "CircuitBreakerRegistry.factory", "nope"),
            ({"maximum": 0}, "CircuitBreakerRegistry.maximum", 0),
            ({"maximum": True}, "CircuitBreakerRegistry.maximum", True),
            ({"maximum": 2.0}, "CircuitBreakerRegistry.maximum", 2.0),
        ],
    )
    def test_bad_configuration(self, kwargs: dict[str, Any], field: str, value: object) -> None:
        """A non-callable factory or a maximum that is not an int >= 1 is rejected."""
        kwargs.setdefault("factory", lambda key: ir.CircuitBreaker(key))
        factory = kwargs.pop("factory")
        with pytest.raises(ConfigurationError) as info:
            ir.CircuitBreakerRegistry(factory, **kwargs)
        assert (field, value) == (info.value.field, info.value.value)


# -- configuration ------------------------------------------------------------------------------


class NoMethods:
    pass


JITTERED = ir.Backoff(initial=1.0, maximum=8.0)
STARTS_AT_ZERO = ir.Backoff(initial=0.0, maximum=8.0, jitter="none")
BAD_STORE = NoMethods()
CLOCKLESS = NoMethods()


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"failure_rate": 0}, "failure_rate", 0),
        ({"failure_rate": 1.5}, "failure_rate", 1.5),
        ({"failure_rate": "x"}, "failure_rate", "x"),
        ({"failure_rate": float("nan")}, "failure_rate", None),
        ({"slow_call_rate": 0.5}, "slow_call_duration", None),
        ({"slow_call_rate": 0, "slow_call_duration": 1.0}, "slow_call_rate", 0),
        ({"slow_call_rate": 1.5, "slow_call_duration": 1.0}, "slow_call_rate", 1.5),
        ({"slow_call_rate": "x", "slow_call_duration": 1.0}, "slow_call_rate", "x"),
        ({"slow_call_rate": 0.5, "slow_call_duration": 0}, "slow_call_duration", 0),
        ({"slow_call_rate": 0.5, "slow_call_duration": -1.0}, "slow_call_duration", -1.0),
        ({"minimum_calls": 0}, "minimum_calls", 0),
        ({"minimum_calls": 2.5}, "minimum_calls", 2.5),
        ({"window": 100}, "window", 100),
        ({"open_for": 0}, "open_for", 0.0),
        ({"open_for": -1.0}, "open_for", -1.0),
        ({"open_for": float("inf")}, "open_for", float("inf")),
        ({"open_for": "30"}, "open_for", "30"),
        ({"open_for": JITTERED}, "open_for", JITTERED),
        ({"open_for": STARTS_AT_ZERO}, "open_for", STARTS_AT_ZERO),
        ({"half_open_probes": 0}, "half_open_probes", 0),
        ({"probe_timeout": 0}, "probe_timeout", 0.0),
        ({"failure_on": "ConnectionError"}, "failure_on", "ConnectionError"),
        ({"failure_on": (ConnectionError, 3)}, "failure_on", (ConnectionError, 3)),
        ({"failure_on": int}, "failure_on", int),
        ({"ignore_on": [KeyError]}, "ignore_on", [KeyError]),
        ({"classify": "failure"}, "classify", "failure"),
        ({"on_store_error": "x"}, "on_store_error", "x"),
        ({"store_retry": 0}, "store_retry", 0.0),
        ({"flush_interval": -1}, "flush_interval", -1.0),
        ({"name": ""}, "name", ""),
        ({"name": 3}, "name", 3),
        ({"name": "a\nb"}, "name", "a\nb"),
        ({"name": "x" * 201}, "name", "x" * 201),
        ({"store": BAD_STORE}, "store", BAD_STORE),
        ({"async_store": AsyncMemoryBreakerStore()}, "async_store", None),
        ({"clock": CLOCKLESS}, "clock", CLOCKLESS),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], field: str, value: object) -> None:
    """Every bad value is a ConfigurationError naming the field and the value."""
    name = kwargs.pop("name", "erp")
    with pytest.raises(ConfigurationError) as info:
        ir.CircuitBreaker(name, **kwargs)
    assert f"CircuitBreaker.{field}" == info.value.field
    if value is not None:
        assert value == info.value.value
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("make_window", "field", "value"),
    [
        (lambda: ir.CountWindow(0), "CountWindow.size", 0),
        (lambda: ir.CountWindow(2.0), "CountWindow.size", 2.0),
        (lambda: ir.TimeWindow(0), "TimeWindow.seconds", 0.0),
        (lambda: ir.TimeWindow(-5.0), "TimeWindow.seconds", -5.0),
        (lambda: ir.TimeWindow(60.0, buckets=0), "TimeWindow.buckets", 0),
    ],
)
def test_bad_windows(make_window: Callable[[], object], field: str, value: object) -> None:
    """A window of no size is a ConfigurationError naming the field and the value."""
    with pytest.raises(ConfigurationError) as info:
        make_window()
    assert (field, value) == (info.value.field, info.value.value)


def test_good_configuration_is_kept() -> None:
    """Valid values are kept as given (durations as float seconds)."""
    breaker = ir.CircuitBreaker(
        "erp",
        failure_rate=1,
        slow_call_rate=1.0,
        slow_call_duration=2,
        minimum_calls=1,
        window=ir.TimeWindow(30),
        open_for=datetime.timedelta(seconds=5),
        half_open_probes=3,
        probe_timeout=datetime.timedelta(seconds=2),
        failure_on=(ConnectionError, TimeoutError),
        ignore_on=KeyError,
        on_store_error="fail_closed",
    )
    assert (1, 2.0, 5.0, 2.0) == (
        breaker.failure_rate,
        breaker.slow_call_duration,
        breaker.open_for,
        breaker.probe_timeout,
    )
    assert CLOSED == breaker.state
