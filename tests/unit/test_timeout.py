"""Timeout and remaining(): real cancellation for coroutines, published deadlines for functions."""

from __future__ import annotations

import asyncio
import datetime
import functools
import sys
from typing import TYPE_CHECKING, Any

import pytest

import invresilience as ir
from invresilience._scope import DEADLINE
from invresilience._timeout import Timeout, remaining
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (the project does not use pytest-asyncio)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class SteppedClock:
    """A clock whose ``asleep`` waits until the test moves time past the wake-up."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:  # pragma: no cover - part of the Clock protocol only
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.now + seconds, future))
        await future

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for wake, future in list(self.sleepers):
            if wake <= self.now:
                self.sleepers.remove((wake, future))
                if not future.done():
                    future.set_result(None)


async def settle_loop(rounds: int = 5) -> None:
    """Let the event loop run every ready callback a few times."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class TestSync:
    def test_remaining_inside_the_call(self, clock: ManualClock) -> None:
        """The callee sees the seconds left; outside any deadline there is none."""
        seen: list[float | None] = []

        @Timeout(2.0, clock=clock)
        def fetch(sku: str) -> str:
            seen.append(remaining())
            clock.advance(0.5)
            seen.append(remaining())
            return sku

        assert "A" == fetch("A")
        assert [2.0, 1.5] == seen
        assert remaining() is None
        assert DEADLINE.get() is None

    def test_remaining_is_zero_once_past(self, clock: ManualClock) -> None:
        """After the deadline, remaining() says 0, never a negative number."""

        def overrun() -> float | None:
            clock.advance(3.0)
            return remaining()

        assert 0.0 == Timeout(1.0, clock=clock).call(overrun)

    def test_overrun_returns_unless_strict(self, clock: ManualClock) -> None:
        """A call that overran returns its result, or raises TimeoutError when strict."""

        def slow(seconds: float) -> str:
            clock.advance(seconds)
            return "done"

        assert "done" == Timeout(1.0, clock=clock).call(slow, 2.0)
        strict = Timeout(1.0, strict=True, clock=clock, name="erp")
        assert "done" == strict.call(slow, 1.0)  # finishing on the deadline is in time
        with pytest.raises(TimeoutError, match=r"^erp timed out after 1 s$"):
            strict.call(slow, 1.5)

    def test_inner_timeout_shrinks_never_extends(self, clock: ManualClock) -> None:
        """Nested timeouts publish the earlier deadline of the two."""
        seen: list[float | None] = []
        inner_short, inner_long = Timeout(1.0, clock=clock), Timeout(5.0, clock=clock)
        outer = Timeout(3.0, clock=clock)
        outer.call(inner_short.call, lambda: seen.append(remaining()))
        outer.call(inner_long.call, lambda: seen.append(remaining()))
        assert [1.0, 3.0] == seen

    def test_inside_a_retry_policy(self, clock: ManualClock) -> None:
        """Inside a retried call a Timeout shrinks the policy's deadline but never extends it."""
        seen: list[float | None] = []
        short = ir.RetryPolicy(on=ConnectionError, timeout=1.0, clock=clock)
        long = ir.RetryPolicy(on=ConnectionError, timeout=10.0, clock=clock)
        timeout = Timeout(2.0, clock=clock)
        short.call(timeout.call, lambda: seen.append(remaining()))
        long.call(timeout.call, lambda: seen.append(remaining()))
        assert [1.0, 2.0] == seen

    def test_retry_policy_inside_joins_the_timeout(self, clock: ManualClock) -> None:
        """A retry policy inside a Timeout stops retrying at the Timeout's deadline."""
        attempts: list[float] = []
        policy = ir.RetryPolicy(
            on=ConnectionError,
            attempts=10,
            timeout=30.0,
            backoff=ir.Backoff.constant(0.4),
            clock=clock,
        )

        @Timeout(1.0, clock=clock)
        @policy
        def flaky() -> None:
            attempts.append(clock.monotonic())
            raise ConnectionError

        with pytest.raises(ConnectionError):
            flaky()
        assert [0.0, 0.4, 0.8] == pytest.approx(attempts)

    def test_no_time_left_does_not_start(self, clock: ManualClock) -> None:
        """A call that would start after the deadline raises without running."""
        calls: list[int] = []
        token = DEADLINE.set((clock, clock.monotonic()))
        try:
            with pytest.raises(TimeoutError, match="append timed out"):
                Timeout(5.0, clock=clock).call(calls.append, 1)
        finally:
            DEADLINE.reset(token)
        assert [] == calls

    def test_outer_deadline_on_another_clock(self, clock: ManualClock) -> None:
        """An enclosing deadline on another clock is honoured by the time it leaves."""
        other = ManualClock(start=100.0)
        token = DEADLINE.set((other, 100.5))
        try:
            assert 0.5 == Timeout(2.0, clock=clock).call(remaining)
            assert 0.25 == Timeout(0.25, clock=clock).call(remaining)
        finally:
            DEADLINE.reset(token)

    def test_decorator_keeps_the_function(self, clock: ManualClock) -> None:
        """The decorated function keeps its name and docstring; generators are refused."""

        @Timeout(datetime.timedelta(seconds=1), clock=clock)
        def fetch() -> int:
            """Fetch the stock level."""
            return 3

        assert ("fetch", "Fetch the stock level.", 3) == (fetch.__name__, fetch.__doc__, fetch())

        def rows() -> Any:
            yield 1

        async def arows() -> Any:
            yield 1

        for generator in (rows, arows):
            with pytest.raises(TypeError, match="generator function"):
                Timeout(1.0)(generator)


class TestAsync:
    @in_loop
    async def test_cancels_the_callee(self) -> None:
        """When time is up the callee is cancelled and the caller gets the builtin TimeoutError."""
        clock = SteppedClock()
        seen: list[str] = []

        @Timeout(1.0, clock=clock)
        async def fetch() -> str:
            seen.append(f"remaining {remaining()}")
            try:
                await clock.asleep(10.0)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            return "late"  # pragma: no cover - cancelled first

        task = asyncio.create_task(fetch())
        await settle_loop()
        clock.advance(1.0)
        with pytest.raises(TimeoutError) as caught:
            await task
        assert type(caught.value) is TimeoutError
        assert ["remaining 1.0", "cancelled"] == seen
        assert "fetch timed out after 1 s" in str(caught.value)
        if sys.version_info >= (3, 11):
            assert 0 == task.cancelling()

    @in_loop
    async def test_system_clock_uses_a_loop_timer(self) -> None:
        """On the system clock a loop timer cancels the call (a real 1 ms wait)."""
        seen: list[str] = []

        async def stuck() -> None:
            try:
                await asyncio.sleep(30.0)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        tasks_before = len(asyncio.all_tasks())
        with pytest.raises(TimeoutError):
            await Timeout(0.001).acall(stuck)
        assert ["cancelled"] == seen
        assert tasks_before == len(asyncio.all_tasks())

    @in_loop
    async def test_success_in_time(self) -> None:
        """A call that finishes in time returns its result and leaves no timer behind."""
        clock = SteppedClock()

        async def quick(value: int) -> int:
            await asyncio.sleep(0)
            return value

        assert 5 == await Timeout(1.0, clock=clock).acall(quick, 5)
        assert 7 == await Timeout(1.0).acall(quick, 7)
        await settle_loop()
        assert all(future.cancelled() for _, future in clock.sleepers)  # the watchdog ended
        assert DEADLINE.get() is None

    @in_loop
    async def test_outside_cancellation_stays_cancellation(self) -> None:
        """Cancelling the caller from outside propagates as CancelledError, not TimeoutError."""
        clock = SteppedClock()
        task = asyncio.create_task(Timeout(5.0, clock=clock).acall(clock.asleep, 30.0))
        await settle_loop()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    @pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 cannot tell two cancellations")
    @in_loop
    async def test_outside_cancellation_wins_a_tie(self) -> None:
        """An outside cancellation arriving with the timeout still propagates as cancellation."""
        clock = SteppedClock()
        task = asyncio.create_task(Timeout(1.0, clock=clock).acall(clock.asleep, 30.0))
        await settle_loop()
        clock.advance(1.0)
        await asyncio.sleep(0)  # the watchdog wakes and cancels
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    @pytest.mark.parametrize("strict", [False, True])
    @in_loop
    async def test_callee_swallowing_cancellation(self, strict: bool) -> None:
        """A callee that swallows our cancellation returns; strict turns that into TimeoutError."""
        clock = SteppedClock()

        async def stubborn() -> str:
            try:
                await clock.asleep(30.0)
            except asyncio.CancelledError:
                return "stubborn"
            return "slept"  # pragma: no cover - cancelled first

        task = asyncio.create_task(Timeout(1.0, strict=strict, clock=clock).acall(stubborn))
        await settle_loop()
        clock.advance(1.0)
        if strict:
            with pytest.raises(TimeoutError):
                await task
        else:
            assert "stubborn" == await task
        if sys.version_info >= (3, 11):
            assert 0 == task.cancelling()

    @in_loop
    async def test_strict_overrun_without_an_await(self, clock: ManualClock) -> None:
        """A coroutine that overran without yielding is caught after the fact when strict."""

        async def busy() -> str:
            clock.sleep(2.0)
            return "done"

        assert "done" == await Timeout(1.0, clock=clock).acall(busy)
        with pytest.raises(TimeoutError):
            await Timeout(1.0, strict=True, clock=clock).acall(busy)
        assert "done" == await Timeout(5.0, strict=True, clock=clock).acall(busy)

    @in_loop
    async def test_no_time_left(self, clock: ManualClock) -> None:
        """A coroutine is not started when the enclosing deadline has passed."""
        started: list[int] = []

        async def work() -> None:  # pragma: no cover - never started
            started.append(1)

        token = DEADLINE.set((clock, clock.monotonic()))
        try:
            with pytest.raises(TimeoutError):
                await Timeout(1.0, clock=clock).acall(work)
        finally:
            DEADLINE.reset(token)
        assert [] == started

    @in_loop
    async def test_nested_timeouts(self) -> None:
        """An inner timeout inside a shorter outer one times out at the outer deadline."""
        clock = SteppedClock()
        inner = Timeout(5.0, clock=clock)
        outer = Timeout(1.0, clock=clock)
        seen: list[float | None] = []

        async def work() -> None:
            seen.append(remaining())
            await clock.asleep(30.0)

        task = asyncio.create_task(outer.acall(inner.acall, work))
        await settle_loop()
        clock.advance(1.0)
        with pytest.raises(TimeoutError):
            await task
        assert [1.0] == seen
        if sys.version_info >= (3, 11):
            assert 0 == task.cancelling()

    @in_loop
    async def test_decorated_coroutine(self, clock: ManualClock) -> None:
        """The decorator works on async def and keeps it a coroutine function."""

        @Timeout(1.0, clock=clock)
        async def fetch(sku: str) -> str:
            return sku

        assert asyncio.iscoroutinefunction(fetch)
        assert "A" == await fetch("A")


class NotAClock:
    def monotonic(self) -> float:  # pragma: no cover - never called
        return 0.0


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"seconds": 0}, "Timeout.seconds", 0.0),
        ({"seconds": -1}, "Timeout.seconds", -1.0),
        ({"seconds": float("inf")}, "Timeout.seconds", float("inf")),
        ({"seconds": "1"}, "Timeout.seconds", "1"),
        ({"seconds": 1, "clock": NotAClock()}, "Timeout.clock", ...),
        ({"seconds": 1, "name": ""}, "Timeout.name", ""),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], field: str, value: object) -> None:
    """Bad values are rejected at construction, naming the field and the value."""
    with pytest.raises(ir.ConfigurationError) as caught:
        Timeout(**kwargs)
    assert field == caught.value.field
    if value is not ...:
        assert value == caught.value.value
