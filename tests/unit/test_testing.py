"""The testing helpers: ManualClock and the scoped testing() context."""

from __future__ import annotations

import asyncio
import threading

import pytest

import invresilience as ir
from invresilience.testing import ManualClock, testing


def always_fails() -> None:
    raise ConnectionError


class TestManualClock:
    def test_sleep_advances_and_records(self) -> None:
        """Sleeping moves time at once and is recorded."""
        clock = ManualClock(start=5)
        clock.sleep(1.5)
        clock.advance(2)
        assert 8.5 == clock.monotonic()
        assert [1.5] == clock.sleeps
        assert 1_700_000_003.5 == clock.wall()

    def test_async_sleep(self) -> None:
        """asleep advances, records and lets other tasks run."""
        clock = ManualClock()
        order: list[str] = []

        async def sleeper() -> None:
            await clock.asleep(10)
            order.append("sleeper")

        async def other() -> None:
            order.append("other")

        async def main() -> None:
            await asyncio.gather(sleeper(), other())

        asyncio.run(main())
        assert ["other", "sleeper"] == order
        assert 10 == clock.monotonic()

    def test_no_going_back(self) -> None:
        """Negative sleeps and advances are refused."""
        clock = ManualClock()
        with pytest.raises(ValueError, match="non-negative"):
            clock.sleep(-1)
        with pytest.raises(ValueError, match="backwards"):
            clock.advance(-1)
        assert "ManualClock(now=0.0)" == repr(clock)

    def test_is_a_clock(self) -> None:
        """ManualClock and SystemClock satisfy the Clock protocol."""
        assert isinstance(ManualClock(), ir.Clock)
        assert isinstance(ir.SystemClock(), ir.Clock)


def test_system_clock() -> None:
    """The system clock reads real time and its async sleep returns."""
    clock = ir.SystemClock()
    first = clock.monotonic()
    assert clock.monotonic() >= first
    assert clock.wall() > 1_600_000_000
    asyncio.run(clock.asleep(0))
    clock.sleep(0)
    assert "SystemClock()" == repr(clock)


class TestTestingScope:
    def test_zeroes_waits_and_records(self) -> None:
        """Inside testing() delays are computed and recorded but not slept."""
        clock = ManualClock()
        p = ir.RetryPolicy(on=ConnectionError, attempts=4, clock=clock)
        with testing() as timeline, pytest.raises(ConnectionError):
            p.call(always_fails)
        assert [] == clock.sleeps
        assert 4 == timeline.attempts
        assert 3 == len(timeline.delays)
        assert [ir.RetryDecision.RETRY] * 3 + [
            ir.RetryDecision.ATTEMPTS_EXHAUSTED
        ] == timeline.decisions
        assert 4 == len(timeline.events)

    def test_caps_attempts(self) -> None:
        """``attempts`` caps every policy, but never raises a policy's own limit."""
        p = ir.RetryPolicy(on=ConnectionError, attempts=10, clock=ManualClock())
        small = ir.RetryPolicy(on=ConnectionError, attempts=1, clock=ManualClock())
        with testing(attempts=2) as timeline:
            with pytest.raises(ConnectionError):
                p.call(always_fails)
            with pytest.raises(ConnectionError):
                small.call(always_fails)
        assert 3 == timeline.attempts

    def test_real_waits_on_request(self) -> None:
        """``wait=True`` keeps the sleeps."""
        clock = ManualClock()
        p = ir.RetryPolicy(on=ConnectionError, attempts=3, clock=clock)
        with testing(wait=True), pytest.raises(ConnectionError):
            p.call(always_fails)
        assert 2 == len(clock.sleeps)

    def test_scoped_to_the_context(self) -> None:
        """Another thread is not affected by a testing() block in this one."""
        clock = ManualClock()
        p = ir.RetryPolicy(on=ConnectionError, attempts=3, clock=clock)
        with testing(attempts=1) as timeline:

            def other_thread() -> None:
                with pytest.raises(ConnectionError):
                    p.call(always_fails)

            worker = threading.Thread(target=other_thread)
            worker.start()
            worker.join()
        assert 2 == len(clock.sleeps)  # the thread retried with real (virtual) sleeps
        assert 0 == timeline.attempts

    def test_restored_after_the_block(self) -> None:
        """Leaving the block restores normal behaviour."""
        clock = ManualClock()
        p = ir.RetryPolicy(on=ConnectionError, attempts=2, clock=clock)
        with testing():
            pass
        with pytest.raises(ConnectionError):
            p.call(always_fails)
        assert 1 == len(clock.sleeps)

    def test_tasks_inherit_the_scope(self) -> None:
        """asyncio tasks created inside the block inherit it."""
        p = ir.RetryPolicy(on=ConnectionError, attempts=5, clock=ManualClock())

        async def failing() -> None:
            raise ConnectionError

        async def main() -> int:
            with testing(attempts=2) as timeline:
                results = await asyncio.gather(
                    *(p.acall(failing) for _ in range(3)), return_exceptions=True
                )
                assert all(isinstance(r, ConnectionError) for r in results)
            return timeline.attempts

        assert 6 == asyncio.run(main())

    def test_records_loop_attempts(self) -> None:
        """The retrying() loop reports to the timeline too."""
        calls = 0
        with testing() as timeline:
            for attempt in ir.RetryPolicy(on=ConnectionError, clock=ManualClock()).retrying():
                with attempt:
                    calls += 1
                    if calls < 2:
                        raise ConnectionError
        assert [ir.RetryDecision.RETRY, ir.RetryDecision.SUCCESS] == timeline.decisions
