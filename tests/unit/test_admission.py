"""Admission control: rate limits (GCRA), bulkheads and adaptive concurrency limits."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import heapq
import inspect
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

import invresilience as ir
from invresilience._admission import (
    AIMD,
    AdaptiveLimiter,
    Bulkhead,
    Gradient2,
    MemoryRateLimitStore,
    RateLimiter,
    _Pool,
    _SlotPermit,
    _TaskWaiter,
    _ThreadWaiter,
)
from invresilience._core.admission import (
    AdaptiveCore,
    AimdLimit,
    GcraTable,
    Gradient2Limit,
    SampleWindow,
    Slots,
    WindowSummary,
    gcra,
)
from invresilience._scope import DEADLINE
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from invresilience.typing import Permit, Release

SECOND = 1_000_000_000


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def admitted(limiter: RateLimiter, count: int, **kwargs: Any) -> list[bool]:
    """Whether each of *count* immediate try_acquire() calls was admitted."""
    return [limiter.try_acquire(**kwargs) is not None for _ in range(count)]


def wait_until(predicate: Callable[[], bool]) -> None:
    """Spin (yielding the GIL) until another thread has made *predicate* true."""
    for _ in range(100_000):
        if predicate():
            return
        time.sleep(0.0001)
    raise AssertionError("condition never became true")  # pragma: no cover


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (the project does not use pytest-asyncio)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


async def settle_loop(rounds: int = 5) -> None:
    """Let the event loop run every ready callback a few times."""
    for _ in range(rounds):
        await asyncio.sleep(0)


# -- the GCRA core ---------------------------------------------------------------------------


class TestGcra:
    def test_rested_bucket_admits_burst_then_refuses(self) -> None:
        """From a rested bucket, capacity / interval requests pass at once and the next waits."""
        tat, results = 0, []
        for _ in range(4):
            tat, wait = gcra(tat, 1000, 10, 30, 1)
            results.append(wait)
        assert [0, 0, 0, 10] == results
        assert 1030 == tat

    def test_weight_counts_as_many_requests(self) -> None:
        """A request of weight w moves the bucket by w intervals."""
        assert (1030, 0) == gcra(0, 1000, 10, 30, 3)
        assert (1000, 20) == gcra(1000, 1000, 10, 30, 5)

    def test_table_forgets_rested_buckets(self) -> None:
        """Sweeps keep only buckets still ahead of now, and happen when the table doubles."""
        table = GcraTable(minimum=4)
        for index in range(5):
            assert 0 == table.acquire(f"k{index}", 0, 10, 10, 1)
        # The fifth key went past sweep_at (4) and swept at now=0: every bucket is busy.
        assert 5 == len(table)
        assert 10 == table.sweep_at
        assert 0 == table.acquire("late", 100, 10, 10, 1)
        table.sweep(100)
        assert ["late"] == list(table.buckets)
        assert 4 == table.sweep_at

    def test_table_refusal_changes_nothing(self) -> None:
        """A refused request leaves its bucket as it was."""
        table = GcraTable()
        assert 0 == table.acquire("k", 0, 10, 10, 1)
        assert 10 == table.acquire("k", 0, 10, 10, 1)
        assert {"k": 10} == table.buckets


# -- RateLimiter ---------------------------------------------------------------------------


class TestRateLimiter:
    def test_burst_then_one_per_interval(self, clock: ManualClock) -> None:
        """burst=b admits exactly b at once from rest, then one per per/rate."""
        limiter = RateLimiter(10, burst=4, clock=clock)
        assert [True, True, True, True, False] == admitted(limiter, 5)
        clock.advance(0.1)
        assert [True, False] == admitted(limiter, 2)
        clock.advance(0.05)
        assert [False] == admitted(limiter, 1)
        clock.advance(0.05)
        assert [True, False] == admitted(limiter, 2)

    def test_exact_boundary_is_admitted(self, clock: ManualClock) -> None:
        """A request exactly one interval later is admitted, even where float sums drift."""
        limiter = RateLimiter(10, burst=1, clock=clock)
        for _ in range(30):
            assert limiter.try_acquire() is not None
            clock.advance(0.1)  # 0.1 + 0.1 + 0.1 != 0.3 in floats

    def test_exact_boundary_with_an_inexact_interval(self, clock: ManualClock) -> None:
        """Three per second on a third-of-a-second clock never loses a request."""
        limiter = RateLimiter(3, per=1.0, burst=1, clock=clock)
        for _ in range(30):
            assert limiter.try_acquire() is not None
            clock.advance(1 / 3)

    def test_rests_back_to_a_full_burst(self, clock: ManualClock) -> None:
        """After burst intervals of silence the whole burst is available again."""
        limiter = RateLimiter(5, per=datetime.timedelta(seconds=1), burst=3, clock=clock)
        assert [True, True, True, False] == admitted(limiter, 4)
        clock.advance(0.6)
        assert [True, True, True, False] == admitted(limiter, 4)

    def test_weights(self, clock: ManualClock) -> None:
        """A weight counts as that many calls; the refusal says when it would fit."""
        limiter = RateLimiter(10, burst=5, clock=clock)
        assert limiter.try_acquire(3) is not None
        assert limiter.try_acquire(3) is None
        assert limiter.try_acquire(2) is not None
        with pytest.raises(ir.RateLimitedError) as caught:
            limiter.acquire(2)
        assert 0.2 == pytest.approx(caught.value.retry_after)

    @pytest.mark.parametrize("weight", [0, -1, 6, 2.0, "1"])
    def test_weight_out_of_range_is_rejected(self, clock: ManualClock, weight: Any) -> None:
        """A weight that could never be admitted (or is not an int) is a ValueError naming it."""
        limiter = RateLimiter(10, burst=5, clock=clock)
        with pytest.raises(ir.ConfigurationError) as caught:
            limiter.try_acquire(weight)
        assert isinstance(caught.value, ValueError)
        assert "weight" == caught.value.field
        assert weight == caught.value.value

    def test_keys_are_independent(self, clock: ManualClock) -> None:
        """Each key has its own bucket, separate from the default one."""
        limiter = RateLimiter(1, burst=2, clock=clock)
        assert [True, True, False] == admitted(limiter, 3, key="WH-1")
        assert [True, True, False] == admitted(limiter, 3, key="WH-2")
        assert [True, True, False] == admitted(limiter, 3)

    def test_retry_after_is_the_wait(self, clock: ManualClock) -> None:
        """A rejection's retry_after is the exact time until a permit is due."""
        limiter = RateLimiter(4, burst=2, clock=clock)
        admitted(limiter, 2)
        clock.advance(0.1)
        with pytest.raises(ir.RateLimitedError) as caught:
            limiter.acquire()
        assert 0.15 == pytest.approx(caught.value.retry_after, abs=1e-9)
        assert "rate limited; retry in 0.15 s" == str(caught.value)

    def test_named_limiter_message(self, clock: ManualClock) -> None:
        """A named limiter says which limit was exceeded."""
        limiter = RateLimiter(1, burst=1, clock=clock, name="erp")
        limiter.acquire()
        with pytest.raises(ir.RateLimitedError, match=r"rate limit 'erp' exceeded; retry in 1 s"):
            limiter.acquire()

    def test_memory_buckets_stay_bounded(self, clock: ManualClock) -> None:
        """Rested buckets are forgotten, so many distinct keys do not leak memory."""
        limiter = RateLimiter(100, burst=1, clock=clock)
        for index in range(50_000):
            assert limiter.try_acquire(key=f"sku-{index}") is not None
            clock.advance(0.001)
        # A bucket stays busy for 10 ms = 10 keys; the table holds at most ~2 sweeps' worth.
        assert len(limiter._bucket.table) <= 2048  # type: ignore[union-attr]

    def test_acquire_sleeps_exactly_the_wait(self, clock: ManualClock) -> None:
        """acquire(timeout) sleeps the wait on the clock when it fits in the timeout."""
        limiter = RateLimiter(10, burst=1, clock=clock)
        limiter.acquire()
        clock.advance(0.03)
        permit = limiter.acquire(timeout=0.07)
        assert [pytest.approx(0.07)] == clock.sleeps
        with permit:
            pass
        permit.release("dropped")

    def test_acquire_refuses_a_wait_longer_than_timeout(self, clock: ManualClock) -> None:
        """A wait beyond the timeout is not slept: the error comes at once."""
        limiter = RateLimiter(10, burst=1, clock=clock)
        limiter.acquire()
        with pytest.raises(ir.RateLimitedError) as caught:
            limiter.acquire(timeout=0.05)
        assert 0.1 == pytest.approx(caught.value.retry_after)
        assert [] == clock.sleeps

    def test_acquire_waits_again_when_overtaken(self, clock: ManualClock) -> None:
        """If another caller took the permit during the sleep, the waiter sleeps again."""
        limiter = RateLimiter(10, burst=1, clock=clock)
        limiter.acquire()
        real_sleep = clock.sleep

        def overtaken(seconds: float) -> None:
            real_sleep(seconds)
            if len(clock.sleeps) == 1:
                assert limiter.try_acquire() is not None

        clock.sleep = overtaken  # type: ignore[method-assign]
        limiter.acquire(timeout=1.0)
        assert [pytest.approx(0.1), pytest.approx(0.1)] == clock.sleeps

    def test_acquire_stops_at_an_enclosing_deadline(self, clock: ManualClock) -> None:
        """A published deadline cuts the time a caller is willing to wait."""
        limiter = RateLimiter(1, burst=1, clock=clock)
        limiter.acquire()
        token = DEADLINE.set((clock, clock.monotonic() + 0.5))
        try:
            with pytest.raises(ir.RateLimitedError):
                limiter.acquire(timeout=5.0)
        finally:
            DEADLINE.reset(token)
        assert [] == clock.sleeps

    @pytest.mark.parametrize("timeout", [-1.0, float("nan"), "1"])
    def test_bad_timeout(self, clock: ManualClock, timeout: Any) -> None:
        """A negative or non-numeric timeout is refused."""
        limiter = RateLimiter(1, burst=1, clock=clock)
        limiter.acquire()
        with pytest.raises(ir.ConfigurationError, match="timeout"):
            limiter.acquire(timeout=timeout)

    @in_loop
    async def test_aacquire_sleeps_on_the_clock(self, clock: ManualClock) -> None:
        """The async twin waits with clock.asleep, and refuses waits beyond the timeout."""
        limiter = RateLimiter(10, burst=1, clock=clock)
        assert limiter.try_acquire() is not None
        await limiter.aacquire(timeout=0.1)
        assert [pytest.approx(0.1)] == clock.sleeps
        with pytest.raises(ir.RateLimitedError):
            await limiter.aacquire(timeout=0.01)
        real_asleep = clock.asleep

        async def overtaken(seconds: float) -> None:
            await real_asleep(seconds)
            if len(clock.sleeps) == 2:
                assert limiter.try_acquire() is not None

        clock.asleep = overtaken  # type: ignore[method-assign]
        await limiter.aacquire(timeout=1.0)
        assert 3 == len(clock.sleeps)

    def test_decorator_waits_up_to_max_wait(self, clock: ManualClock) -> None:
        """A decorated function waits up to max_wait for a permit, then raises."""
        limiter = RateLimiter(10, burst=1, max_wait=0.1, clock=clock)

        @limiter
        def push(adjustment: int) -> int:
            """Push a stock adjustment."""
            return adjustment * 2

        assert "push" == push.__name__
        assert "Push a stock adjustment." == push.__doc__
        assert [2, 4] == [push(1), push(2)]
        assert [pytest.approx(0.1)] == clock.sleeps
        strict = RateLimiter(10, burst=1, clock=clock)
        assert 3 == strict.call(lambda: 3)
        with pytest.raises(ir.RateLimitedError):
            strict.call(lambda: 3)

    @in_loop
    async def test_async_decorator_and_acall(self, clock: ManualClock) -> None:
        """Decorated coroutines and acall take a permit first, waiting up to max_wait."""
        limiter = RateLimiter(10, burst=1, max_wait=0.1, clock=clock)

        @limiter
        async def push(adjustment: int) -> int:
            return adjustment * 2

        assert inspect.iscoroutinefunction(push)
        assert [2, 4] == [await push(1), await push(2)]
        assert [pytest.approx(0.1)] == clock.sleeps

        async def double(value: int) -> int:
            return value * 2

        strict = RateLimiter(10, burst=1, clock=clock)
        assert 6 == await strict.acall(double, 3)
        with pytest.raises(ir.RateLimitedError):
            await strict.acall(double, 3)

    def test_generators_are_refused(self, clock: ManualClock) -> None:
        """A permit covers one call, so generator functions cannot be decorated."""

        def rows() -> Any:
            yield 1

        with pytest.raises(TypeError, match="generator function"):
            RateLimiter(1, burst=1, clock=clock)(rows)

    def test_permit_is_a_no_op(self, clock: ManualClock) -> None:
        """A rate-limit permit has nothing to give back; releasing it is harmless."""
        permit = RateLimiter(1, burst=1, clock=clock).acquire()
        permit.release()
        permit.release("ignored", 0.5)
        with pytest.raises(KeyError), permit:
            raise KeyError("x")
        assert "<rate limit permit>" == repr(permit)


class TestRateLimitStore:
    def test_store_decides(self, clock: ManualClock) -> None:
        """With a store, every acquire is one store call on the limiter's bucket key."""
        calls: list[tuple[str, int, int, int]] = []

        class Recording:
            def acquire(self, key: str, *, interval_ns: int, capacity_ns: int, weight: int) -> int:
                calls.append((key, interval_ns, capacity_ns, weight))
                return 0 if len(calls) % 2 else SECOND // 4

        limiter = RateLimiter(2, burst=3, store=Recording(), clock=clock, name="erp")
        assert limiter.try_acquire() is not None
        assert limiter.try_acquire(2, key="WH-1") is None
        limiter.acquire()  # odd call: admitted
        with pytest.raises(ir.RateLimitedError) as caught:
            limiter.acquire()
        assert 0.25 == caught.value.retry_after
        interval = SECOND // 2
        assert [
            ("erp", interval, 3 * interval, 1),
            ("erp:WH-1", interval, 3 * interval, 2),
            ("erp", interval, 3 * interval, 1),
            ("erp", interval, 3 * interval, 1),
        ] == calls

    def test_unnamed_keys(self, clock: ManualClock) -> None:
        """Unnamed limiters use the key as is and "default" for the default bucket."""
        store = MemoryRateLimitStore(clock)
        limiter = RateLimiter(1, burst=1, store=store, clock=clock)
        limiter.acquire()
        limiter.acquire(key="WH-1")
        assert {"default", "WH-1"} == set(store._table.buckets)

    def test_limiters_share_a_store(self, clock: ManualClock) -> None:
        """Two limiters on one store draw from the same buckets."""
        store = MemoryRateLimitStore(clock)
        first = RateLimiter(1, burst=2, store=store, name="erp")
        second = RateLimiter(1, burst=2, store=store, name="erp")
        assert first.try_acquire() is not None
        assert second.try_acquire() is not None
        assert first.try_acquire() is None
        assert 1 == len(store)
        assert "MemoryRateLimitStore(buckets=1)" == repr(store)

    def test_memory_store_validates(self, clock: ManualClock) -> None:
        """The reference store refuses arguments no limiter would send."""
        store = MemoryRateLimitStore(clock)
        with pytest.raises(ValueError, match="interval_ns"):
            store.acquire("k", interval_ns=0, capacity_ns=10, weight=1)
        with pytest.raises(ValueError, match="capacity_ns"):
            store.acquire("k", interval_ns=10, capacity_ns=5, weight=1)
        with pytest.raises(ValueError, match="weight"):
            store.acquire("k", interval_ns=10, capacity_ns=10, weight=0)

    def test_memory_store_rule(self, clock: ManualClock) -> None:
        """The memory store answers 0 or the exact nanoseconds to wait, on its clock."""
        store = MemoryRateLimitStore(clock)
        args = {"interval_ns": 100, "capacity_ns": 200, "weight": 1}
        assert [0, 0, 100] == [store.acquire("k", **args) for _ in range(3)]
        clock.advance(40e-9)
        assert 60 == store.acquire("k", **args)

    @in_loop
    async def test_async_store(self, clock: ManualClock) -> None:
        """Async calls go to the async store; sync ones to the sync store."""
        sync_store = MemoryRateLimitStore(clock)
        awaited: list[str] = []

        class AsyncStore:
            async def acquire(
                self, key: str, *, interval_ns: int, capacity_ns: int, weight: int
            ) -> int:
                awaited.append(key)
                return sync_store.acquire(
                    key, interval_ns=interval_ns, capacity_ns=capacity_ns, weight=weight
                )

        limiter = RateLimiter(
            10, burst=1, store=sync_store, async_store=AsyncStore(), clock=clock, max_wait=1.0
        )

        @limiter
        async def push() -> str:
            return "ok"

        assert "ok" == await push()
        assert "ok" == await push()
        assert [pytest.approx(0.1)] == clock.sleeps
        await limiter.aacquire(key="WH-1")
        with pytest.raises(ir.ConfigurationError, match="weight"):
            await limiter.aacquire(2)
        # One store call per attempt: admitted, refused, admitted after the sleep.
        assert ["default", "default", "default", "WH-1"] == awaited
        assert limiter.try_acquire(key="WH-2") is not None
        assert ["default", "default", "default", "WH-1"] == awaited

    @in_loop
    async def test_sync_store_serves_async_calls(self, clock: ManualClock) -> None:
        """Without an async store, async calls use the sync one."""
        store = MemoryRateLimitStore(clock)
        limiter = RateLimiter(10, burst=1, store=store, clock=clock)
        await limiter.aacquire()
        with pytest.raises(ir.RateLimitedError):
            await limiter.aacquire()


# -- the slots core ------------------------------------------------------------------------


class Token:
    """A queued waiter for the Slots core."""

    def __init__(self, weight: int = 1) -> None:
        self.weight = weight


class TestSlots:
    def test_take_until_full(self) -> None:
        """Slots are taken while they fit; then nothing more is admitted."""
        slots: Slots[Token] = Slots(3, 2)
        assert [True, True, False] == [slots.try_take(1), slots.try_take(2), slots.try_take(1)]
        assert 3 == slots.in_flight

    def test_fifo_and_no_overtaking(self) -> None:
        """Queued waiters are granted in order, and newcomers never overtake them."""
        slots: Slots[Token] = Slots(3, 5)
        assert slots.try_take(3)
        big, small = Token(2), Token(1)
        assert slots.enqueue(big)
        assert slots.enqueue(small)
        assert [] == slots.give_back(1)  # one slot free, but the head needs two
        assert not slots.try_take(1)  # a newcomer may not overtake the queue
        assert [big, small] == slots.give_back(2)
        assert 3 == slots.in_flight

    def test_queue_bound_and_withdraw(self) -> None:
        """The queue holds max_queue waiters; withdrawing tells queued from granted."""
        slots: Slots[Token] = Slots(1, 1)
        slots.try_take(1)
        first, second = Token(), Token()
        assert slots.enqueue(first)
        assert not slots.enqueue(second)
        assert [] == slots.withdraw(first)
        assert slots.withdraw(first) is None

    def test_leaving_head_unblocks_the_queue(self) -> None:
        """When a heavy waiter at the head gives up, lighter ones behind it get the free slots."""
        slots: Slots[Token] = Slots(3, 5)
        slots.try_take(2)
        heavy, light = Token(2), Token(1)
        slots.enqueue(heavy)
        slots.enqueue(light)
        assert [light] == slots.withdraw(heavy)
        assert 3 == slots.in_flight

    def test_heavy_request_admitted_alone(self) -> None:
        """A request heavier than the limit passes when nothing else is in flight."""
        slots: Slots[Token] = Slots(2, 1)
        assert slots.try_take(5)
        assert not slots.try_take(1)
        heavy = Token(4)
        slots.enqueue(heavy)
        assert [heavy] == slots.give_back(5)

    def test_set_limit_grants(self) -> None:
        """Raising the limit admits queued waiters at once."""
        slots: Slots[Token] = Slots(1, 3)
        slots.try_take(1)
        waiters = [Token(), Token(), Token()]
        for waiter in waiters:
            slots.enqueue(waiter)
        assert waiters[:2] == slots.set_limit(3)
        assert 3 == slots.in_flight


# -- Bulkhead ------------------------------------------------------------------------------


class TestBulkhead:
    def test_threads_never_exceed_the_limit(self) -> None:
        """20 threads through a 3-slot bulkhead: never more than 3 inside, all complete."""
        bulkhead = Bulkhead(3, max_queue=20, queue_timeout=30.0)
        lock = threading.Lock()
        gate = threading.Event()
        inside, peak, done = 0, 0, []

        @bulkhead
        def work(index: int) -> None:
            nonlocal inside, peak
            with lock:
                inside += 1
                peak = max(peak, inside)
            gate.wait(30.0)
            with lock:
                inside -= 1
            done.append(index)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        wait_until(lambda: bulkhead.queued == 17)
        assert 3 == bulkhead.in_flight
        gate.set()
        for thread in threads:
            thread.join(30.0)
        assert 3 == peak
        assert list(range(20)) == sorted(done)
        assert (0, 0) == (bulkhead.in_flight, bulkhead.queued)

    def test_queue_overflow_raises_at_once(self) -> None:
        """With every slot taken and the queue full, the next caller is rejected at once."""
        bulkhead = Bulkhead(1, max_queue=1, queue_timeout=30.0, name="erp")
        held = bulkhead.acquire()
        waiter = threading.Thread(target=lambda: bulkhead.acquire(timeout=30.0).release())
        waiter.start()
        wait_until(lambda: bulkhead.queued == 1)
        with pytest.raises(ir.BulkheadFullError, match=r"bulkhead 'erp' has no free slot"):
            bulkhead.acquire(timeout=30.0)
        with pytest.raises(ir.BulkheadFullError):
            bulkhead.call(lambda: None)
        held.release()
        waiter.join(30.0)
        assert (0, 0) == (bulkhead.in_flight, bulkhead.queued)

    def test_no_queue_rejects(self) -> None:
        """max_queue=0 (the default) means no waiting at all."""
        bulkhead = Bulkhead(1)
        with bulkhead.acquire():
            assert bulkhead.try_acquire() is None
            with pytest.raises(ir.BulkheadFullError, match=r"^bulkhead has no free slot"):
                bulkhead.acquire(timeout=5.0)
        assert bulkhead.try_acquire() is not None

    def test_queue_timeout(self) -> None:
        """A queued caller gives up after its timeout and leaves the queue."""
        bulkhead = Bulkhead(1, max_queue=1, queue_timeout=0.002)
        with bulkhead.acquire(), pytest.raises(ir.BulkheadFullError):
            bulkhead.call(lambda: None)
        assert (0, 0) == (bulkhead.in_flight, bulkhead.queued)

    def test_release_hands_the_slot_to_a_waiter(self) -> None:
        """A released slot goes to the waiting thread, not back to the pool."""
        bulkhead = Bulkhead(1, max_queue=1)
        held = bulkhead.acquire()
        got: list[Permit] = []
        waiter = threading.Thread(target=lambda: got.append(bulkhead.acquire(timeout=30.0)))
        waiter.start()
        wait_until(lambda: bulkhead.queued == 1)
        held.release()
        assert bulkhead.try_acquire() is None  # already the waiter's
        waiter.join(30.0)
        assert 1 == bulkhead.in_flight
        got[0].release()
        assert 0 == bulkhead.in_flight

    def test_release_is_idempotent(self) -> None:
        """Releasing a permit twice gives its slot back once."""
        bulkhead = Bulkhead(2)
        first, second = bulkhead.acquire(), bulkhead.acquire()
        first.release()
        first.release()
        assert 1 == bulkhead.in_flight
        assert "<permit for 1 slot(s), released>" == repr(first)
        assert "<permit for 1 slot(s)>" == repr(second)
        second.release()

    def test_release_rejects_unknown_outcomes(self) -> None:
        """Only the three Release values are accepted."""
        permit = Bulkhead(1).acquire()
        with pytest.raises(ValueError, match="outcome"):
            permit.release("failed")  # type: ignore[arg-type]
        permit.release()

    def test_weights(self) -> None:
        """A weight takes that many slots; more than max_concurrent is refused."""
        bulkhead = Bulkhead(3)
        permit = bulkhead.acquire(2)
        assert bulkhead.try_acquire(2) is None
        assert 2 == bulkhead.in_flight
        permit.release()
        for weight in (0, 4, 1.5):
            with pytest.raises(ir.ConfigurationError, match="weight"):
                bulkhead.try_acquire(weight)  # type: ignore[arg-type]

    def test_decorator_and_call(self) -> None:
        """Decorated functions and call() run in a slot and give it back, even on errors."""
        bulkhead = Bulkhead(1)

        @bulkhead
        def work(value: int) -> int:
            assert 1 == bulkhead.in_flight
            if value < 0:
                raise ValueError(value)
            return value

        assert 3 == work(3)
        assert 4 == bulkhead.call(abs, -4)
        with pytest.raises(ValueError, match="-1"):
            work(-1)
        assert 0 == bulkhead.in_flight
        with pytest.raises(TypeError, match="generator"):
            bulkhead(lambda: (yield))

    def test_context_manager(self) -> None:
        """A permit used as a context manager gives its slot back however the block ends."""
        bulkhead = Bulkhead(1)
        with bulkhead.acquire():
            assert 1 == bulkhead.in_flight
        with pytest.raises(KeyError), bulkhead.acquire():
            raise KeyError("sku")
        assert 0 == bulkhead.in_flight

    @in_loop
    async def test_tasks_never_exceed_the_limit(self) -> None:
        """20 tasks through a 3-slot bulkhead: never more than 3 inside, all complete."""
        bulkhead = Bulkhead(3, max_queue=20, queue_timeout=30.0)
        gate = asyncio.Event()
        inside, peak = 0, 0

        @bulkhead
        async def work(index: int) -> int:
            nonlocal inside, peak
            inside += 1
            peak = max(peak, inside)
            await gate.wait()
            inside -= 1
            return index

        tasks = [asyncio.create_task(work(i)) for i in range(20)]
        await settle_loop()
        assert (3, 17) == (bulkhead.in_flight, bulkhead.queued)
        gate.set()
        assert list(range(20)) == await asyncio.gather(*tasks)
        assert 3 == peak
        assert (0, 0) == (bulkhead.in_flight, bulkhead.queued)

    @in_loop
    async def test_async_overflow_and_timeout(self) -> None:
        """Async callers are rejected when the queue is full, and give up after the timeout."""
        bulkhead = Bulkhead(1, max_queue=1, queue_timeout=0.002)
        held = await bulkhead.aacquire()
        waiter = asyncio.create_task(bulkhead.aacquire(timeout=30.0))
        await settle_loop()
        with pytest.raises(ir.BulkheadFullError):
            await bulkhead.aacquire(timeout=30.0)
        held.release()
        (await waiter).release()
        held = await bulkhead.aacquire()
        with pytest.raises(ir.BulkheadFullError):
            await bulkhead.acall(asyncio.sleep, 0)
        held.release()
        await bulkhead.acall(asyncio.sleep, 0)
        assert (0, 0) == (bulkhead.in_flight, bulkhead.queued)

    @in_loop
    async def test_cancelled_waiter_leaves_no_slot(self) -> None:
        """Cancelling a queued task removes it from the queue and leaks nothing."""
        bulkhead = Bulkhead(1, max_queue=1)
        held = await bulkhead.aacquire()
        waiter = asyncio.create_task(bulkhead.aacquire(timeout=30.0))
        await settle_loop()
        assert 1 == bulkhead.queued
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert (1, 0) == (bulkhead.in_flight, bulkhead.queued)
        held.release()
        assert 0 == bulkhead.in_flight

    @in_loop
    async def test_cancelled_after_grant_gives_the_slot_back(self) -> None:
        """A waiter cancelled after being granted, before it woke, hands its slot on."""
        bulkhead = Bulkhead(1, max_queue=2)
        held = await bulkhead.aacquire()
        first = asyncio.create_task(bulkhead.aacquire(timeout=30.0))
        second = asyncio.create_task(bulkhead.aacquire(timeout=30.0))
        await settle_loop()
        held.release()  # grants `first`; its wake-up is only scheduled
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        permit = await second
        assert (1, 0) == (bulkhead.in_flight, bulkhead.queued)
        permit.release()
        assert 0 == bulkhead.in_flight

    @in_loop
    async def test_thread_release_wakes_a_task(self) -> None:
        """A slot freed in another thread wakes a task waiting in this event loop."""
        bulkhead = Bulkhead(1, max_queue=1)
        held = bulkhead.acquire()
        waiter = asyncio.create_task(bulkhead.aacquire(timeout=30.0))
        await settle_loop()
        releaser = threading.Thread(target=held.release)
        releaser.start()
        permit = await waiter
        releaser.join(30.0)
        assert 1 == bulkhead.in_flight
        permit.release()

    def test_interrupted_thread_waiter(self) -> None:
        """A thread interrupted while queued leaves the queue, or hands back a granted slot."""
        pool = Bulkhead(1, max_queue=2)._pool
        held = pool.take(1)
        assert held is not None
        queued = _ThreadWaiter(1)
        assert pool._queue(queued, 1.0) is None
        pool._abandon(queued)
        assert 0 == len(pool.slots.waiters)
        granted, behind = _ThreadWaiter(1), _ThreadWaiter(1)
        pool._queue(granted, 1.0)
        pool._queue(behind, 1.0)
        held.release()  # grants `granted`
        pool._abandon(granted)  # ... which was interrupted: `behind` gets the slot
        assert not behind.lock.locked()
        assert 1 == pool.slots.in_flight

    def test_interrupted_wait_cleans_up(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An exception raised while a thread blocks in the queue leaves nothing behind."""
        bulkhead = Bulkhead(1, max_queue=1)
        held = bulkhead.acquire()

        class Interrupted(BaseException):
            pass

        def interrupt(self: _ThreadWaiter, timeout: float) -> bool:
            raise Interrupted

        class Lock:
            acquire = interrupt

            def release(self) -> None:  # pragma: no cover - never granted
                pass

        monkeypatch.setattr(_ThreadWaiter, "__init__", _fake_waiter_init(Lock))
        with pytest.raises(Interrupted):
            bulkhead.acquire(timeout=5.0)
        assert (1, 0) == (bulkhead.in_flight, bulkhead.queued)
        held.release()

    def test_timed_out_head_wakes_the_next_waiter(self) -> None:
        """A heavy waiter that times out lets a lighter one behind it take the free slot."""
        bulkhead = Bulkhead(2, max_queue=2)
        held = bulkhead.acquire()
        got: list[Permit] = []
        heavy = threading.Thread(
            # Long enough for the light waiter to queue behind it on a loaded machine.
            target=lambda: _swallow(lambda: bulkhead.acquire(2, timeout=0.25))
        )
        heavy.start()
        wait_until(lambda: bulkhead.queued == 1)
        light = threading.Thread(target=lambda: got.append(bulkhead.acquire(timeout=30.0)))
        light.start()
        heavy.join(30.0)
        light.join(30.0)
        assert 2 == bulkhead.in_flight
        got[0].release()
        held.release()

    def test_waiter_on_a_closed_loop_is_skipped(self) -> None:
        """A slot granted to a task whose loop has closed goes to the next waiter."""
        pool = Bulkhead(1, max_queue=2)._pool
        held = pool.take(1)
        assert held is not None
        loop = asyncio.new_event_loop()
        dead = _TaskWaiter(1, loop)
        loop.close()
        alive = _ThreadWaiter(1)
        pool._queue(dead, 1.0)
        pool._queue(alive, 1.0)
        held.release()
        assert not alive.lock.locked()
        assert 1 == pool.slots.in_flight
        assert 0 == len(pool.slots.waiters)

    @in_loop
    async def test_slot_freed_before_queueing(self) -> None:
        """A caller that finds a slot free by the time it would queue takes it at once."""
        pool = Bulkhead(1, max_queue=1)._pool
        permit = pool.wait(1, 1.0)
        assert 0 == len(pool.slots.waiters)
        permit.release()
        permit = await pool.await_slots(1, 1.0)
        assert 1 == pool.slots.in_flight
        permit.release()

    def test_waits_stop_at_an_enclosing_deadline(self, clock: ManualClock) -> None:
        """A published deadline that has passed turns a queued wait into a rejection."""
        bulkhead = Bulkhead(1, max_queue=1)
        held = bulkhead.acquire()
        token = DEADLINE.set((clock, clock.monotonic()))
        try:
            with pytest.raises(ir.BulkheadFullError):
                bulkhead.acquire(timeout=30.0)
        finally:
            DEADLINE.reset(token)
        held.release()


def _swallow(fn: Callable[[], object]) -> None:
    """Call *fn*, ignoring a BulkheadFullError (for threads expected to give up)."""
    with contextlib.suppress(ir.BulkheadFullError):
        fn()


def _fake_waiter_init(lock_class: type) -> Callable[[_ThreadWaiter, int], None]:
    def init(self: _ThreadWaiter, weight: int) -> None:
        self.weight = weight
        self.lock = lock_class()

    return init


# -- the adaptive cores ----------------------------------------------------------------------


def summary(
    *, mean: float = 0.1, drops: int = 0, in_flight: int = 10, latencies: tuple[float, ...] = ()
) -> WindowSummary:
    return WindowSummary(10, drops, mean, latencies or (mean,), in_flight)


class TestAdaptiveCores:
    def test_window_closes_on_time_and_samples(self) -> None:
        """A window closes at the first sample after its length with enough samples."""
        window = SampleWindow(1.0, 3, now=0.0, capacity=2)
        assert window.add(0.5, 0.1, False, 1) is None
        assert window.add(1.0, 3.0, True, 4) is None  # two samples: not enough
        closed = window.add(1.2, 0.2, False, 2)
        # The drop counts, but its latency says nothing about service time.
        assert closed is not None
        assert 0.15 == pytest.approx(closed.mean)
        assert WindowSummary(3, 1, closed.mean, (0.1, 0.2), 4) == closed
        assert window.add(1.3, 0.125, False, 1) is None
        assert window.add(1.4, 0.125, False, 1) is None
        assert WindowSummary(3, 0, 0.125, (0.125, 0.125), 1) == window.add(2.2, 0.125, False, 1)
        for now in (3.3, 3.4, 3.5):
            closed = window.add(now, 5.0, True, 1)
        assert WindowSummary(3, 3, 0.0, (), 1) == closed
        assert 0.0 == closed.percentile(0.95)

    def test_percentile(self) -> None:
        """Percentiles are nearest-rank over the kept latencies."""
        window = summary(latencies=tuple(float(i) for i in range(1, 21)))
        assert (19.0, 20.0, 10.0, 1.0) == (
            window.percentile(0.95),
            window.percentile(1.0),
            window.percentile(0.5),
            window.percentile(0.01),
        )

    def test_aimd(self) -> None:
        """AIMD: +1 when used and healthy, x ratio (at least -1) on trouble, else unchanged."""
        aimd = AimdLimit(0.9, latency_target=0.2, percentile=0.95)
        assert 11.0 == aimd.update(10.0, summary(in_flight=5))
        assert 10.0 == aimd.update(10.0, summary(in_flight=4))
        assert 9.0 == aimd.update(10.0, summary(drops=1))
        assert 18.0 == aimd.update(20.0, summary(latencies=(0.1,) * 18 + (0.3,) * 2))
        assert 21.0 == aimd.update(20.0, summary(latencies=(0.1,) * 19 + (0.3,)))
        assert 1.0 == aimd.update(2.0, summary(drops=3))

    def test_gradient2(self) -> None:
        """Gradient2 grows by smoothing x queue at gradient 1 and shrinks with queueing."""
        gradient = Gradient2Limit(1.5, 0.2, lambda limit: 4.0, long_window=10, minimum=1, warmup=2)
        assert 10.8 == pytest.approx(gradient.update(10.0, summary(mean=0.1)))
        assert 10.8 == pytest.approx(gradient.update(10.0, summary(mean=0.1)))
        assert 0.1 == pytest.approx(gradient.long)
        # 3x the baseline: gradient max(0.5, 1.5 / 3) = 0.5, and the baseline does not learn.
        assert 9.0 == pytest.approx(gradient.update(10.0, summary(mean=0.3)))
        assert 0.1 == pytest.approx(gradient.long)
        # A drop is the steepest gradient.
        assert 9.0 == pytest.approx(gradient.update(10.0, summary(mean=0.1, drops=1)))
        # Too little in flight: the limit stays, but the baseline learns.
        assert 10.0 == gradient.update(10.0, summary(mean=0.3, in_flight=4))
        assert 0.1 + (0.3 - 0.1) * 2 / 11 == pytest.approx(gradient.long)

    def test_gradient2_recovers_a_stale_baseline(self) -> None:
        """A baseline over twice the current latency decays faster than the average alone."""
        gradient = Gradient2Limit(1.5, 0.2, lambda limit: 4.0, long_window=10, minimum=1, warmup=1)
        gradient.update(10.0, summary(mean=1.0))
        gradient.update(10.0, summary(mean=0.1))
        assert (1.0 + (0.1 - 1.0) * 2 / 11) * 0.95 == pytest.approx(gradient.long)

    def test_gradient2_all_dropped(self) -> None:
        """A window in which every call dropped teaches the baseline nothing, and shrinks."""
        gradient = Gradient2Limit(1.5, 0.2, lambda limit: 4.0, long_window=10, minimum=1, warmup=1)
        gradient.update(10.0, summary(mean=0.1))
        everything_dropped = WindowSummary(10, 10, 0.0, (), 10)
        assert 9.0 == pytest.approx(gradient.update(10.0, everything_dropped))
        assert 0.1 == pytest.approx(gradient.long)

    def test_gradient2_zero_latency_and_floor(self) -> None:
        """Zero latencies count as no queueing; at the floor the baseline always learns."""
        gradient = Gradient2Limit(1.0, 1.0, lambda limit: 1.0, long_window=1, minimum=5, warmup=0)
        assert 11.0 == gradient.update(10.0, summary(mean=0.0))
        gradient.long = 0.1
        gradient.update(5.0, summary(mean=0.4, in_flight=5))
        assert 0.4 == pytest.approx(gradient.long)

    def test_core_clamps_and_reports_moves(self) -> None:
        """The core keeps the limit within its bounds and reports only real moves."""

        class Fixed:
            def __init__(self) -> None:
                self.next = [100.0, float("nan"), 4.5, 4.9]

            def update(self, limit: float, window: WindowSummary) -> float:
                return self.next.pop(0)

        core = AdaptiveCore(Fixed(), SampleWindow(1.0, 1, 0.0), initial=5, minimum=2, maximum=8)
        moves = [core.sample(float(second), 0.1, False, 1) for second in range(1, 5)]
        assert [8, 2, 4, None] == moves
        assert 4 == core.limit


# -- AdaptiveLimiter -------------------------------------------------------------------------


def simulate(
    algorithm: AIMD | Gradient2,
    capacity: int,
    *,
    grows: bool = True,
    drop_above: float = 2.0,
    base: float = 0.1,
    horizon: float = 120.0,
) -> list[tuple[float, float, int]]:
    """Drive a limiter against a dependency of *capacity* calls on a ManualClock.

    Demand is unbounded: every free slot is used at once. A call's latency is *base*
    up to *capacity* calls in flight; past it, it grows in proportion (the dependency
    queues) when *grows*, and calls beyond ``drop_above * capacity`` are shed at once
    (a 503: dropped). Returns ``(time, duration, limit)`` steps.
    """
    clock = ManualClock()
    limiter = AdaptiveLimiter(algorithm, initial_limit=5, min_limit=1, max_limit=1000, clock=clock)
    running: list[tuple[float, int, Permit, bool]] = []
    steps: list[tuple[float, float, int]] = []
    sequence = 0
    while clock.monotonic() < horizon:
        while (permit := limiter.try_acquire()) is not None:
            in_flight = limiter.in_flight
            dropped = in_flight > drop_above * capacity
            latency = base * max(1.0, in_flight / capacity) if grows else base
            end = clock.monotonic() + (base / 10 if dropped else latency)
            heapq.heappush(running, (end, sequence, permit, dropped))
            sequence += 1
        end, _, permit, dropped = heapq.heappop(running)
        steps.append((clock.monotonic(), end - clock.monotonic(), limiter.limit))
        clock.advance(end - clock.monotonic())
        permit.release("dropped" if dropped else "success")
    return steps


def settled(steps: list[tuple[float, float, int]], capacity: int) -> tuple[float, float, float]:
    """The time-weighted mean, minimum and maximum limit over the second half, per capacity."""
    late = [(duration, limit) for start, duration, limit in steps if start >= steps[-1][0] / 2]
    mean = sum(duration * limit for duration, limit in late) / sum(d for d, _ in late)
    return (
        mean / capacity,
        min(limit for _, limit in late) / capacity,
        max(limit for _, limit in late) / capacity,
    )


def spy_on_releases(monkeypatch: pytest.MonkeyPatch) -> list[Release]:
    """Record the outcome of every slot permit released from now on."""
    releases: list[Release] = []
    real_release = _SlotPermit.release

    def spy(self: _SlotPermit, outcome: Release = "success", latency: float | None = None) -> None:
        releases.append(outcome)
        real_release(self, outcome, latency)

    monkeypatch.setattr(_SlotPermit, "release", spy)
    return releases


class TestAdaptiveLimiter:
    @pytest.mark.parametrize("capacity", [10, 30])
    @pytest.mark.parametrize(
        "algorithm",
        # AIMD needs a latency objective: 20 % above the unloaded 0.1 s. Gradient2 accepts
        # latency up to `tolerance` x its baseline, so it settles near tolerance x capacity.
        [AIMD(latency_target=0.12), Gradient2(tolerance=1.2)],
        ids=["aimd", "gradient2"],
    )
    def test_settles_near_capacity_on_latency(
        self, algorithm: AIMD | Gradient2, capacity: int
    ) -> None:
        """Against a dependency that queues past its capacity C, the limit settles in [0.7 C, 1.3 C]."""
        mean, low, high = settled(simulate(algorithm, capacity), capacity)
        assert 0.7 <= mean <= 1.3
        assert 0.7 <= low
        assert high <= 1.3

    @pytest.mark.parametrize("capacity", [10, 30])
    @pytest.mark.parametrize("algorithm", [AIMD(), Gradient2()], ids=["aimd", "gradient2"])
    def test_settles_near_capacity_on_drops(
        self, algorithm: AIMD | Gradient2, capacity: int
    ) -> None:
        """Against a dependency that sheds load past C with flat latency, defaults settle near C."""
        steps = simulate(algorithm, capacity, grows=False, drop_above=1.0)
        mean, low, high = settled(steps, capacity)
        assert 0.7 <= mean <= 1.3
        assert 0.7 <= low
        assert high <= 1.3

    def test_properties_and_repr(self, clock: ManualClock) -> None:
        """limit, in_flight and queued describe the limiter."""
        limiter = AdaptiveLimiter(AIMD(), initial_limit=2, clock=clock, name="erp")
        permit = limiter.acquire()
        assert (2, 1, 0) == (limiter.limit, limiter.in_flight, limiter.queued)
        assert repr(limiter).startswith("AdaptiveLimiter(algorithm=AIMD(backoff_ratio=0.9")
        permit.release()
        assert 0 == limiter.in_flight

    def test_outcomes_feed_the_algorithm(self, clock: ManualClock) -> None:
        """A drop shrinks the limit; an ignored release is not a sample; latency is measured."""
        limiter = AdaptiveLimiter(
            AIMD(latency_target=0.5), initial_limit=10, min_samples=1, clock=clock
        )
        window = limiter._pool.core.window  # type: ignore[union-attr]
        permit = limiter.acquire()
        clock.advance(1.0)
        permit.release("ignored")
        assert (10, 0) == (limiter.limit, window.count)
        permit = limiter.acquire()
        clock.advance(1.0)  # measured latency 1.0 > target: trouble
        permit.release()
        assert 9 == limiter.limit
        permit = limiter.acquire()
        clock.advance(1.0)
        permit.release("success", latency=0.1)  # a given latency wins; 1 of 9 in flight
        assert 9 == limiter.limit
        permit = limiter.acquire()
        clock.advance(1.0)
        permit.release("dropped", latency=0.1)
        assert 8 == limiter.limit
        clock.advance(1.0)
        permit.release("dropped")  # a second release does nothing
        assert (8, 0) == (limiter.limit, limiter.in_flight)

    def test_growing_limit_admits_waiters(self, clock: ManualClock) -> None:
        """When the limit grows, queued callers are admitted at once."""
        limiter = AdaptiveLimiter(
            AIMD(), initial_limit=1, max_limit=5, min_samples=1, max_queue=1, clock=clock
        )
        held = limiter.acquire()
        got: list[Permit] = []
        waiter = threading.Thread(target=lambda: got.append(limiter.acquire(timeout=30.0)))
        waiter.start()
        wait_until(lambda: limiter.queued == 1)
        clock.advance(1.0)
        held.release()  # in flight 1 of limit 1: healthy and used, so the limit grows
        waiter.join(30.0)
        assert (2, 1) == (limiter.limit, limiter.in_flight)
        got[0].release()

    def test_decorator_classifies_outcomes(
        self, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Exceptions drop; local rejections and cancellation are ignored; returns succeed."""
        limiter = AdaptiveLimiter(AIMD(), initial_limit=10, min_samples=1, clock=clock)
        releases = spy_on_releases(monkeypatch)

        @limiter
        def work(error: BaseException | None) -> str:
            if error is not None:
                raise error
            return "ok"

        assert "ok" == work(None)
        for error in (
            ConnectionError(),
            ir.RateLimitedError(1.0),
            ir.BulkheadFullError(),
            ir.CircuitOpenError("erp"),
            KeyboardInterrupt(),
        ):
            with pytest.raises(type(error)):
                work(error)
        assert ["success", "dropped", "ignored", "ignored", "ignored", "ignored"] == releases
        assert "ok" == limiter.call(work, None)
        with pytest.raises(TypeError, match="generator"):
            limiter(lambda: (yield))

    @in_loop
    async def test_drop_on_classifies_results(
        self, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """drop_on turns a returned 503 into a drop, and may excuse an exception."""
        releases = spy_on_releases(monkeypatch)

        def overloaded(outcome: ir.Outcome) -> bool:
            if outcome.failed:
                return not isinstance(outcome.exception, LookupError)
            return bool(outcome.result == 503)

        limiter = AdaptiveLimiter(AIMD(), drop_on=overloaded, clock=clock)

        async def get(status: int) -> int:
            if status == 404:
                raise LookupError(status)
            if status == 500:
                raise ConnectionError(status)
            return status

        fetch = limiter(get)
        assert [200, 503] == [await fetch(200), await fetch(503)]
        for status in (404, 500):
            with pytest.raises((LookupError, ConnectionError)):
                await fetch(status)
        assert 200 == await limiter.acall(get, 200)
        assert ["success", "dropped", "success", "dropped", "success"] == releases

    def test_failing_classifier_leaks_no_slot(self, clock: ManualClock) -> None:
        """A drop_on that raises releases the slot as ignored and lets its error through."""

        def broken(outcome: ir.Outcome) -> bool:
            raise LookupError("classifier bug")

        limiter = AdaptiveLimiter(initial_limit=1, drop_on=broken, clock=clock)
        with pytest.raises(LookupError, match="classifier bug"):
            limiter.call(lambda: 503)
        assert 0 == limiter.in_flight

    @in_loop
    async def test_async_acquire(self, clock: ManualClock) -> None:
        """aacquire takes a slot at once or queues; weights above max_limit are refused."""
        limiter = AdaptiveLimiter(AIMD(), initial_limit=1, max_limit=3, max_queue=1, clock=clock)
        held = await limiter.aacquire()
        waiter = asyncio.create_task(limiter.aacquire(timeout=30.0))
        await settle_loop()
        assert 1 == limiter.queued
        held.release()
        (await waiter).release()
        held = limiter.acquire()
        with pytest.raises(ir.BulkheadFullError, match="adaptive limiter has no free slot"):
            limiter.acquire()
        held.release()
        assert limiter.try_acquire(3) is not None
        with pytest.raises(ir.ConfigurationError, match="weight"):
            await limiter.aacquire(4)

    def test_named_rejection(self, clock: ManualClock) -> None:
        """A named limiter says which one rejected the call."""
        limiter = AdaptiveLimiter(initial_limit=1, clock=clock, name="erp")
        with limiter.acquire(), pytest.raises(ir.BulkheadFullError, match="'erp'"):
            limiter.acquire()


# -- configuration -------------------------------------------------------------------------


class NotAClock:
    def monotonic(self) -> float:  # pragma: no cover - never called
        return 0.0


@pytest.mark.parametrize(
    ("build", "field", "value"),
    [
        (lambda: RateLimiter(0, burst=1), "RateLimiter.rate", 0),
        (lambda: RateLimiter(-1, burst=1), "RateLimiter.rate", -1),
        (lambda: RateLimiter(1e10, burst=1), "RateLimiter.rate", 1e10),
        (lambda: RateLimiter(1, per=0, burst=1), "RateLimiter.per", 0.0),
        (lambda: RateLimiter(1, burst=0), "RateLimiter.burst", 0),
        (lambda: RateLimiter(1, burst=1, max_wait=-1), "RateLimiter.max_wait", -1.0),
        (lambda: RateLimiter(1, burst=1, store=object()), "RateLimiter.store", ...),  # type: ignore[arg-type]
        (
            lambda: RateLimiter(1, burst=1, async_store=MemoryRateLimitStore()),  # type: ignore[arg-type]
            "RateLimiter.async_store",
            ...,
        ),
        (lambda: RateLimiter(1, burst=1, clock=NotAClock()), "RateLimiter.clock", ...),  # type: ignore[arg-type]
        (lambda: RateLimiter(1, burst=1, name=""), "RateLimiter.name", ""),
        (lambda: MemoryRateLimitStore(NotAClock()), "MemoryRateLimitStore.clock", ...),  # type: ignore[arg-type]
        (lambda: Bulkhead(0), "Bulkhead.max_concurrent", 0),
        (lambda: Bulkhead(1, max_queue=-1), "Bulkhead.max_queue", -1),
        (lambda: Bulkhead(1, queue_timeout=-0.5), "Bulkhead.queue_timeout", -0.5),
        (lambda: Bulkhead(1, name=3), "Bulkhead.name", 3),  # type: ignore[arg-type]
        (lambda: AIMD(backoff_ratio=1.0), "AIMD.backoff_ratio", 1.0),
        (lambda: AIMD(backoff_ratio=0.4), "AIMD.backoff_ratio", 0.4),
        (lambda: AIMD(latency_target=0), "AIMD.latency_target", 0.0),
        (lambda: AIMD(percentile=0), "AIMD.percentile", 0),
        (lambda: AIMD(percentile=1.5), "AIMD.percentile", 1.5),
        (lambda: Gradient2(tolerance=0.9), "Gradient2.tolerance", 0.9),
        (lambda: Gradient2(smoothing=0), "Gradient2.smoothing", 0),
        (lambda: Gradient2(queue_size=-1), "Gradient2.queue_size", -1),
        (lambda: Gradient2(queue_size=2.5), "Gradient2.queue_size", 2.5),  # type: ignore[arg-type]
        (lambda: Gradient2(long_window=0), "Gradient2.long_window", 0),
        (lambda: AdaptiveLimiter("aimd"), "AdaptiveLimiter.algorithm", "aimd"),  # type: ignore[arg-type]
        (lambda: AdaptiveLimiter(min_limit=0), "AdaptiveLimiter.min_limit", 0),
        (
            lambda: AdaptiveLimiter(min_limit=5, max_limit=4, initial_limit=4),
            "AdaptiveLimiter.max_limit",
            4,
        ),
        (lambda: AdaptiveLimiter(initial_limit=300), "AdaptiveLimiter.initial_limit", 300),
        (lambda: AdaptiveLimiter(min_limit=2, initial_limit=1), "AdaptiveLimiter.initial_limit", 1),
        (lambda: AdaptiveLimiter(window=0), "AdaptiveLimiter.window", 0.0),
        (lambda: AdaptiveLimiter(min_samples=0), "AdaptiveLimiter.min_samples", 0),
        (lambda: AdaptiveLimiter(queue_timeout=-1), "AdaptiveLimiter.queue_timeout", -1.0),
        (lambda: AdaptiveLimiter(drop_on=503), "AdaptiveLimiter.drop_on", 503),  # type: ignore[arg-type]
    ],
)
def test_bad_configuration(build: Callable[[], object], field: str, value: object) -> None:
    """Bad values are rejected at construction, naming the field and the value."""
    with pytest.raises(ir.ConfigurationError) as caught:
        build()
    assert field == caught.value.field
    if value is not ...:
        assert value == caught.value.value


def test_durations_accept_timedeltas() -> None:
    """Durations take seconds or timedeltas and store seconds."""
    limiter = AdaptiveLimiter(
        AIMD(latency_target=datetime.timedelta(milliseconds=250)),
        window=datetime.timedelta(seconds=2),
    )
    assert (0.25, 2.0) == (limiter.algorithm.latency_target, limiter.window)  # type: ignore[union-attr]
    assert 0.5 == Bulkhead(1, queue_timeout=datetime.timedelta(seconds=0.5)).queue_timeout


def test_gradient2_queue_size_callable() -> None:
    """queue_size may be a function of the limit."""
    calls: list[int] = []

    def queue(limit: int) -> float:
        calls.append(limit)
        return 2.0

    algorithm = Gradient2(queue_size=queue)._build(1)
    algorithm.update(10.0, summary())
    assert [10] == calls


def test_configuration_is_frozen() -> None:
    """Limiters' configuration cannot be changed after construction."""
    import attrs

    for limiter in (RateLimiter(1, burst=1), Bulkhead(1), AdaptiveLimiter(), AIMD()):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            limiter.name = "x"  # type: ignore[misc,union-attr]


def test_slot_pool_permit_start_times() -> None:
    """Bulkhead permits do not read a clock; adaptive ones record admission time."""
    permit = Bulkhead(1).acquire()
    assert isinstance(permit, _SlotPermit)
    assert 0.0 == permit.start
    clock = ManualClock(start=7.0)
    adaptive = AdaptiveLimiter(clock=clock).acquire()
    assert isinstance(adaptive, _SlotPermit)
    assert 7.0 == adaptive.start
    assert isinstance(permit.pool, _Pool)


def test_every_rejection_reaches_the_events_site(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a listener attached, each rejection passes through the limiter's _refused once."""
    from invresilience import _events

    seen: list[tuple[str, object]] = []
    for cls in (RateLimiter, Bulkhead, AdaptiveLimiter):
        monkeypatch.setattr(
            cls, "_refused", lambda self, *args: seen.append((type(self).__name__, args))
        )
    limiter = RateLimiter(10, burst=1, clock=clock)
    bulkhead = Bulkhead(1)
    adaptive = AdaptiveLimiter(initial_limit=1, clock=clock)
    limiter.acquire()
    bulkhead.acquire()
    adaptive.acquire()
    assert limiter.try_acquire() is None  # no listener: nothing reported
    with _events.scoped_listener(lambda event: None):
        assert limiter.try_acquire() is None
        assert limiter.try_acquire(key="WH-1") is not None
        assert limiter.try_acquire(key="WH-1") is None
        with pytest.raises(ir.RateLimitedError):
            limiter.acquire()
        assert bulkhead.try_acquire() is None
        with pytest.raises(ir.BulkheadFullError):
            bulkhead.acquire()
        assert adaptive.try_acquire() is None
        with pytest.raises(ir.BulkheadFullError):
            adaptive.acquire()
    assert [
        ("RateLimiter", (pytest.approx(0.1),)),
        ("RateLimiter", (pytest.approx(0.1),)),
        ("RateLimiter", (pytest.approx(0.1),)),
        ("Bulkhead", ()),
        ("Bulkhead", ()),
        ("AdaptiveLimiter", ()),
        ("AdaptiveLimiter", ()),
    ] == seen
