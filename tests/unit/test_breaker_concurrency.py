"""One breaker, many threads and tasks: probe permits are exact, the lock is never held across a call."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

import invresilience as ir
from invresilience.backends.memory import MemoryBreakerStore
from invresilience.exceptions import CircuitOpenError
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable

#: A safety net for waits on events, never reached when the code is right.
GIVE_UP = 10.0
SHAPES = ["decorated", "call", "with"]


def through(breaker: ir.CircuitBreaker, shape: str, fn: Callable[[], Any]) -> Any:
    """Call *fn* through *breaker* in one of its shapes."""
    if shape == "decorated":
        return breaker(fn)()
    if shape == "call":
        return breaker.call(fn)
    with breaker:
        return fn()


def tripped(clock: ManualClock, **kwargs: Any) -> ir.CircuitBreaker:
    """A breaker that just became half-open (its open time is over, no probe yet)."""
    breaker = ir.CircuitBreaker("erp", minimum_calls=1, open_for=10.0, clock=clock, **kwargs)
    with pytest.raises(ConnectionError):
        breaker.call(_refuse)
    clock.advance(10.0)
    assert ir.BreakerState.HALF_OPEN == breaker.state
    return breaker


def _refuse() -> NoReturn:
    raise ConnectionError("still down")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("probes", [1, 3])
@pytest.mark.parametrize("shared", [False, True], ids=["local", "shared"])
def test_half_open_lets_exactly_the_permitted_threads_through(
    shape: str, probes: int, shared: bool
) -> None:
    """20 threads meet a half-open breaker at once: exactly half_open_probes reach the dependency."""
    clock = ManualClock()
    store = MemoryBreakerStore(clock=clock) if shared else None
    breaker = tripped(clock, half_open_probes=probes, store=store)
    barrier = threading.Barrier(20)
    lock = threading.Lock()
    reached: list[int] = []
    rejected: list[int] = []
    others_rejected = threading.Event()

    def dependency() -> NoReturn:
        with lock:
            reached.append(1)
        # Stay in flight until every other caller has been turned away (or given up on).
        others_rejected.wait(GIVE_UP)
        raise ConnectionError("still down")

    def caller() -> None:
        barrier.wait()
        try:
            through(breaker, shape, dependency)
        except CircuitOpenError:
            with lock:
                rejected.append(1)
                if len(rejected) == 20 - probes:
                    others_rejected.set()
        except ConnectionError:
            pass

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GIVE_UP)
    assert (probes, 20 - probes) == (len(reached), len(rejected))
    assert ir.BreakerState.OPEN == breaker.state


@pytest.mark.parametrize("shape", ["decorated", "acall", "async_with"])
@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_lets_exactly_the_permitted_tasks_through(shape: str, probes: int) -> None:
    """20 asyncio tasks meet a half-open breaker at once: exactly half_open_probes get through."""
    clock = ManualClock()
    breaker = tripped(clock, half_open_probes=probes)
    reached: list[int] = []
    rejected: list[int] = []

    async def scenario() -> None:
        others_rejected = asyncio.Event()

        async def dependency() -> NoReturn:
            reached.append(1)
            await asyncio.wait_for(others_rejected.wait(), GIVE_UP)
            raise ConnectionError("still down")

        decorated = breaker(dependency)

        async def caller() -> None:
            try:
                if shape == "decorated":
                    await decorated()
                elif shape == "acall":
                    await breaker.acall(dependency)
                else:
                    async with breaker:
                        await dependency()
            except CircuitOpenError:
                rejected.append(1)
                if len(rejected) == 20 - probes:
                    others_rejected.set()
            except ConnectionError:
                pass

        await asyncio.gather(*(caller() for _ in range(20)))

    asyncio.run(scenario())
    assert (probes, 20 - probes) == (len(reached), len(rejected))
    assert ir.BreakerState.OPEN == breaker.state


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("outcome", ["success", "failure", "slow"])
@pytest.mark.parametrize("shared", [False, True], ids=["local", "shared"])
def test_calls_run_concurrently_through_one_breaker(shape: str, outcome: str, shared: bool) -> None:
    """8 threads calling a 20 ms dependency overlap inside it: no lock is held across the call."""
    clock = ManualClock()
    breaker = ir.CircuitBreaker(
        "erp",
        failure_rate=1.0,
        minimum_calls=1000,  # record everything, trip on nothing
        slow_call_rate=1.0,
        slow_call_duration=0.01,
        store=MemoryBreakerStore(clock=clock) if shared else None,
        clock=clock,
    )
    barrier = threading.Barrier(8)
    lock = threading.Lock()
    inside = 0
    most = 0

    def dependency() -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        if outcome == "slow":
            clock.advance(0.01)  # slow for the breaker, which then takes its lock to record
        time.sleep(0.02)  # the dependency's own work
        with lock:
            inside -= 1
        if outcome == "failure":
            raise ConnectionError("refused")

    def caller() -> None:
        barrier.wait()
        for _ in range(2):
            with contextlib.suppress(ConnectionError):
                through(breaker, shape, dependency)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GIVE_UP)
    assert most > 1
    metrics = breaker.metrics()
    assert ir.BreakerState.CLOSED == metrics.state
    assert 16 == metrics.calls
    assert (16 if outcome == "failure" else 0) == metrics.failures


@pytest.mark.parametrize("shape", SHAPES)
def test_no_outcome_is_lost_under_contention(shape: str) -> None:
    """8 threads x 500 mixed calls: the window ends up holding every one of them."""
    clock = ManualClock()
    breaker = ir.CircuitBreaker(
        "erp", failure_rate=1.0, minimum_calls=10_000, window=ir.CountWindow(10_000), clock=clock
    )
    barrier = threading.Barrier(8)

    def caller(index: int) -> None:
        barrier.wait()
        for call in range(500):
            with contextlib.suppress(ConnectionError):
                through(breaker, shape, _refuse if (index + call) % 7 == 0 else _ok)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GIVE_UP)
    expected_failures = sum(1 for i in range(8) for c in range(500) if (i + c) % 7 == 0)
    metrics = breaker.metrics()
    assert (4000, expected_failures) == (metrics.calls, metrics.failures)


def test_no_outcome_is_lost_across_tasks() -> None:
    """200 interleaved asyncio tasks: every success and failure is counted once."""
    clock = ManualClock()
    breaker = ir.CircuitBreaker(
        "erp", failure_rate=1.0, minimum_calls=10_000, window=ir.CountWindow(10_000), clock=clock
    )

    @breaker
    async def dependency(index: int) -> int:
        await asyncio.sleep(0)
        if index % 5 == 0:
            raise ConnectionError(index)
        return index

    async def scenario() -> None:
        results = await asyncio.gather(*(dependency(i) for i in range(200)), return_exceptions=True)
        assert 40 == sum(isinstance(r, ConnectionError) for r in results)

    asyncio.run(scenario())
    metrics = breaker.metrics()
    assert (200, 40) == (metrics.calls, metrics.failures)


def _ok() -> str:
    return "ok"


def test_threads_share_the_trip() -> None:
    """Failures from many threads trip the breaker once; later callers are all rejected."""
    clock = ManualClock()
    breaker = ir.CircuitBreaker(
        "erp", minimum_calls=20, window=ir.CountWindow(20), open_for=60.0, clock=clock
    )
    events: list[ir.Event] = []
    remove = ir.add_listener(events.append)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def caller() -> None:
        barrier.wait()
        for _ in range(10):
            try:
                breaker.call(_refuse)
            except ConnectionError:
                result = "failed"
            except CircuitOpenError:
                result = "rejected"
            with lock:
                outcomes.append(result)

    try:
        threads = [threading.Thread(target=caller) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(GIVE_UP)
    finally:
        remove()
    opened = [e for e in events if isinstance(e, ir.BreakerEvent) and e.kind == "state_changed"]
    assert [(ir.BreakerState.CLOSED, ir.BreakerState.OPEN)] == [
        (e.previous, e.state) for e in opened
    ]
    assert 80 == len(outcomes)
    # The 20th failure trips it; calls already admitted may still fail, the rest are rejected.
    assert 20 <= outcomes.count("failed") <= 27
    assert ir.BreakerState.OPEN == breaker.state
