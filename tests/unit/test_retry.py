"""RetryPolicy: attempts, classification, deadlines, hints, budgets and every call shape."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import random
from typing import TYPE_CHECKING, Any

import pytest

import invresilience as ir
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


class Flaky:
    """A callable that raises *error* for its first *failures* calls, then returns *value*."""

    def __init__(self, failures: int, error: Exception | None = None, value: Any = "ok") -> None:
        self.failures = failures
        self.error = error if error is not None else ConnectionError("refused")
        self.value = value
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.value


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def policy(clock: ManualClock, **kwargs: Any) -> ir.RetryPolicy:
    kwargs.setdefault("on", ConnectionError)
    return ir.RetryPolicy(clock=clock, random=random.Random(0), **kwargs)


class TestCall:
    def test_success_first_time(self, clock: ManualClock) -> None:
        """A call that succeeds at once runs once and never sleeps."""
        fn = Flaky(0)
        assert "ok" == policy(clock).call(fn)
        assert 1 == fn.calls
        assert [] == clock.sleeps

    def test_retries_then_succeeds(self, clock: ManualClock) -> None:
        """Retryable failures are retried, sleeping once between each pair of attempts."""
        fn = Flaky(2)
        assert "ok" == policy(clock, attempts=3).call(fn)
        assert 3 == fn.calls
        assert 2 == len(clock.sleeps)

    def test_arguments_are_passed(self, clock: ManualClock) -> None:
        """Positional and keyword arguments reach every attempt."""
        seen: list[tuple[Any, ...]] = []

        def fn(a: int, *, b: str) -> str:
            seen.append((a, b))
            if len(seen) < 2:
                raise ConnectionError
            return f"{a}{b}"

        assert "1x" == policy(clock).call(fn, 1, b="x")
        assert [(1, "x"), (1, "x")] == seen

    def test_exhaustion_reraises_the_original_with_a_note(self, clock: ManualClock) -> None:
        """Giving up re-raises the very exception of the last attempt, with the history noted."""
        error = ConnectionError("refused")
        fn = Flaky(10, error)
        with pytest.raises(ConnectionError) as info:
            policy(clock, attempts=3, name="erp").call(fn)
        assert info.value is error
        assert 3 == fn.calls
        (note,) = info.value.__notes__
        assert note.startswith("invresilience: erp gave up after 3 attempts")
        assert "attempts exhausted" in note
        assert 3 == note.count("ConnectionError: refused")

    def test_long_history_note_is_abridged(self, clock: ManualClock) -> None:
        """A note over many attempts lists the first and last five and counts the rest."""
        with pytest.raises(ConnectionError) as info:
            policy(clock, attempts=30, backoff=ir.Backoff.constant(0)).call(Flaky(99))
        note = info.value.__notes__[0]
        assert "... 20 more attempts ..." in note
        assert 11 == len(note.splitlines()) - 1

    def test_not_retryable_propagates_at_once(self, clock: ManualClock) -> None:
        """An exception outside ``on`` is raised from the first attempt, untouched."""
        fn = Flaky(5, KeyError("sku"))
        with pytest.raises(KeyError) as info:
            policy(clock).call(fn)
        assert 1 == fn.calls
        assert not hasattr(info.value, "__notes__")

    def test_tuple_of_exception_types(self, clock: ManualClock) -> None:
        """``on`` accepts a tuple and retries each member (and subclasses)."""
        fn = Flaky(1, TimeoutError())
        assert "ok" == policy(clock, on=(ConnectionError, OSError)).call(fn)
        assert 2 == fn.calls

    def test_base_exceptions_are_never_retried(self, clock: ManualClock) -> None:
        """KeyboardInterrupt and friends escape even a policy on ``Exception``."""
        fn = Flaky(5, KeyboardInterrupt())  # type: ignore[arg-type]
        with pytest.raises(KeyboardInterrupt):
            policy(clock, on=Exception).call(fn)
        assert 1 == fn.calls

    def test_classifier_over_exceptions(self, clock: ManualClock) -> None:
        """A classifier chooses which exceptions to retry by their content."""

        class HTTPError(Exception):
            def __init__(self, status: int) -> None:
                self.status = status

        def transient(outcome: ir.Outcome) -> bool:
            return isinstance(outcome.exception, HTTPError) and outcome.exception.status >= 500

        assert "ok" == policy(clock, on=transient).call(Flaky(2, HTTPError(503)))
        fatal = Flaky(2, HTTPError(404))
        with pytest.raises(HTTPError):
            policy(clock, on=transient).call(fatal)
        assert 1 == fatal.calls

    def test_classifier_over_results(self, clock: ManualClock) -> None:
        """A classifier can retry on a returned value, and stops when the value is good."""
        answers = iter([None, None, 7])
        p = policy(clock, on=lambda o: o.exception is None and o.result is None)
        assert 7 == p.call(lambda: next(answers))

    def test_result_exhaustion_raises_retries_exhausted(self, clock: ManualClock) -> None:
        """Giving up on results raises RetriesExhaustedError carrying the last result."""
        results = iter(range(10))
        p = policy(clock, attempts=3, on=lambda o: not o.failed)
        with pytest.raises(ir.RetriesExhaustedError) as info:
            p.call(lambda: next(results))
        assert 2 == info.value.last_result
        assert 3 == info.value.attempts
        assert "returned 2" in str(info.value)

    def test_backoff_delays_are_slept(self, clock: ManualClock) -> None:
        """The delays slept are exactly the backoff's, without jitter."""
        p = policy(clock, attempts=4, backoff=ir.Backoff(initial=1, maximum=3, jitter="none"))
        with pytest.raises(ConnectionError):
            p.call(Flaky(10))
        assert [1.0, 2.0, 3.0] == clock.sleeps

    def test_zero_delay_does_not_sleep(self, clock: ManualClock) -> None:
        """A zero delay skips the sleep call altogether."""
        p = policy(clock, backoff=ir.Backoff.constant(0))
        assert "ok" == p.call(Flaky(2))
        assert [] == clock.sleeps


class TestDeadline:
    def test_no_sleep_that_would_end_past_the_deadline(self, clock: ManualClock) -> None:
        """Retrying stops when the next delay would end at or after the deadline."""
        p = policy(
            clock,
            attempts=100,
            timeout=10,
            backoff=ir.Backoff(initial=1, maximum=100, jitter="none"),
        )
        with pytest.raises(ConnectionError) as info:
            p.call(Flaky(1000))
        assert [1.0, 2.0, 4.0] == clock.sleeps  # 1 + 2 + 4 = 7; 7 + 8 would pass 10
        assert "before the deadline" in info.value.__notes__[0]

    def test_attempt_time_counts_against_the_deadline(self, clock: ManualClock) -> None:
        """Time spent inside attempts is part of the deadline too."""
        calls = 0

        def slow() -> None:
            nonlocal calls
            calls += 1
            clock.advance(4)
            raise ConnectionError

        p = policy(clock, attempts=100, timeout=10, backoff=ir.Backoff.constant(0.5))
        with pytest.raises(ConnectionError):
            p.call(slow)
        assert 3 == calls  # starts at 0, 4.5, 9; a fourth would start at 13.5
        assert clock.monotonic() <= 10 + 4

    def test_timedelta_timeout(self, clock: ManualClock) -> None:
        """Durations may be given as timedelta."""
        p = policy(clock, timeout=datetime.timedelta(milliseconds=1500))
        assert 1.5 == p.timeout

    def test_no_timeout(self, clock: ManualClock) -> None:
        """``timeout=None`` leaves only the attempt count as the bound."""
        p = policy(clock, attempts=5, timeout=None, backoff=ir.Backoff(initial=100, maximum=1000))
        with pytest.raises(ConnectionError):
            p.call(Flaky(10))
        assert 4 == len(clock.sleeps)

    def test_nested_calls_share_the_outer_deadline(self, clock: ManualClock) -> None:
        """An inner retried call inside an outer one stops at the outer deadline."""
        inner = policy(
            clock, attempts=1000, timeout=1000, backoff=ir.Backoff.constant(1), name="inner"
        )
        outer = policy(
            clock, attempts=1000, timeout=10, backoff=ir.Backoff.constant(1), name="outer"
        )
        inner_calls = Flaky(10_000)

        with pytest.raises(ConnectionError) as info:
            outer.call(inner.call, inner_calls)
        assert clock.monotonic() < 10
        assert 10 == inner_calls.calls  # 0..9 within the shared 10 s deadline
        assert any("inner gave up" in note for note in info.value.__notes__)

    def test_inner_tighter_deadline_is_kept(self, clock: ManualClock) -> None:
        """An inner policy with a shorter timeout keeps its own, shorter deadline."""
        inner = policy(clock, attempts=1000, timeout=3, backoff=ir.Backoff.constant(1))
        outer = policy(clock, attempts=2, timeout=100, backoff=ir.Backoff.constant(1))
        fn = Flaky(10_000)
        with pytest.raises(ConnectionError):
            outer.call(inner.call, fn)
        assert 6 == fn.calls  # 3 per inner call, two outer attempts

    def test_other_clocks_do_not_share(self, clock: ManualClock) -> None:
        """Deadlines on a different clock are not comparable, so they are not shared."""
        inner = ir.RetryPolicy(
            on=ConnectionError, clock=ManualClock(), attempts=5, backoff=ir.Backoff.constant(1)
        )
        outer = policy(clock, attempts=1, timeout=0.5)
        fn = Flaky(10_000)
        with pytest.raises(ConnectionError):
            outer.call(inner.call, fn)
        assert 5 == fn.calls

    def test_deadline_is_restored_after_a_call(self, clock: ManualClock) -> None:
        """A finished call leaves no deadline behind for later, unrelated calls."""
        policy(clock, timeout=1).call(Flaky(0))
        later = policy(clock, attempts=5, timeout=100, backoff=ir.Backoff.constant(10))
        fn = Flaky(4)
        assert "ok" == later.call(fn)
        assert 5 == fn.calls


class TestRetryAfter:
    class ThrottledError(Exception):
        def __init__(self, retry_after: object) -> None:
            self.retry_after = retry_after

    def test_hint_attribute_replaces_the_backoff(self, clock: ManualClock) -> None:
        """An exception's ``retry_after`` attribute is the delay used."""
        p = policy(clock, on=self.ThrottledError, backoff=ir.Backoff.constant(0.1))
        assert "ok" == p.call(Flaky(1, self.ThrottledError(2.5)))
        assert [2.5] == clock.sleeps

    def test_timedelta_hint(self, clock: ManualClock) -> None:
        """A timedelta hint is honoured."""
        hint = datetime.timedelta(seconds=3)
        assert "ok" == policy(clock, on=self.ThrottledError).call(
            Flaky(1, self.ThrottledError(hint))
        )
        assert [3.0] == clock.sleeps

    def test_negative_hint_is_clamped_to_zero(self, clock: ManualClock) -> None:
        """A hint in the past means retry now."""
        assert "ok" == policy(clock, on=self.ThrottledError).call(Flaky(1, self.ThrottledError(-5)))
        assert [] == clock.sleeps

    def test_hint_past_the_deadline_stops(self, clock: ManualClock) -> None:
        """A hint that would end past the deadline ends retrying without sleeping."""
        fn = Flaky(1, self.ThrottledError(60))
        with pytest.raises(self.ThrottledError):
            policy(clock, on=self.ThrottledError, timeout=30).call(fn)
        assert [] == clock.sleeps
        assert 1 == fn.calls

    def test_non_numeric_hint_is_ignored(self, clock: ManualClock) -> None:
        """A hint the default extractor cannot read falls back to the backoff."""
        p = policy(clock, on=self.ThrottledError, backoff=ir.Backoff.constant(0.25))
        assert "ok" == p.call(Flaky(1, self.ThrottledError("soon")))
        assert [0.25] == clock.sleeps

    def test_custom_extractor_over_results(self, clock: ManualClock) -> None:
        """An extractor can read a hint from a returned value, such as a 429 response."""
        responses = iter([(429, 7.0), (200, None)])
        p = policy(
            clock,
            on=lambda o: not o.failed and o.result[0] == 429,
            retry_after=lambda o: None if o.failed else o.result[1],
        )
        assert (200, None) == p.call(lambda: next(responses))
        assert [7.0] == clock.sleeps


class TestBudget:
    def test_spent_budget_reraises_and_emits(self, clock: ManualClock) -> None:
        """With the budget spent, the original error is raised and an event says why."""
        budget = ir.RetryBudget(ratio=0.0, minimum_per_second=0.0, clock=clock)
        events: list[ir.Event] = []
        remove = ir.add_listener(events.append)
        try:
            fn = Flaky(5)
            with pytest.raises(ConnectionError) as info:
                policy(clock, budget=budget).call(fn)
        finally:
            remove()
        assert 1 == fn.calls
        assert "retry budget is exhausted" in info.value.__notes__[0]
        assert [ir.RetryDecision.BUDGET_EXHAUSTED] == [
            e.decision for e in events if isinstance(e, ir.RetryEvent)
        ]

    def test_thousand_failing_calls_retry_at_most_ratio_plus_floor(
        self, clock: ManualClock
    ) -> None:
        """1,000 failing calls through ratio 0.1 retry at most 100 plus the floor."""
        budget = ir.RetryBudget(ratio=0.1, minimum_per_second=1.0, ttl=10, clock=clock)
        p = policy(clock, attempts=3, budget=budget, backoff=ir.Backoff.constant(0))
        calls = 0

        def fail() -> None:
            nonlocal calls
            calls += 1
            raise ConnectionError

        for _ in range(1000):
            with pytest.raises(ConnectionError):
                p.call(fail)
        retries = calls - 1000
        assert retries <= 100 + 10
        assert retries >= 100  # the budget is used, not just refused

    def test_only_retryable_failures_spend(self, clock: ManualClock) -> None:
        """Failures the policy does not retry leave the budget untouched."""
        budget = ir.RetryBudget(ratio=0.0, minimum_per_second=0.1, ttl=10, clock=clock)
        p = policy(clock, budget=budget)
        for _ in range(5):
            with pytest.raises(KeyError):
                p.call(Flaky(1, KeyError("x")))
        assert 1.0 == budget.available
        assert "ok" == p.call(Flaky(1))
        assert 0.0 == budget.available

    def test_budget_shared_by_policies(self, clock: ManualClock) -> None:
        """Two policies drawing on one budget spend it together."""
        budget = ir.RetryBudget(ratio=0.0, minimum_per_second=0.2, ttl=10, clock=clock)
        first, second = policy(clock, budget=budget), policy(clock, budget=budget)
        assert "ok" == first.call(Flaky(1))
        assert "ok" == second.call(Flaky(1))
        with pytest.raises(ConnectionError):
            second.call(Flaky(1))

    def test_window_slides(self, clock: ManualClock) -> None:
        """Calls and retries older than the TTL no longer count."""
        budget = ir.RetryBudget(ratio=0.5, minimum_per_second=0.0, ttl=10, clock=clock)
        for _ in range(4):
            budget.deposit()
        assert budget.try_withdraw()
        assert budget.try_withdraw()
        assert not budget.try_withdraw()
        clock.advance(5)
        budget.deposit()
        budget.deposit()
        assert budget.try_withdraw()  # 6 calls, 2 retries: one more fits
        clock.advance(6)  # the first four calls and two retries expired
        assert 0.0 == budget.available  # 2 calls × 0.5 - 1 retry
        clock.advance(100)
        assert 0.0 == budget.available
        budget.deposit()
        budget.deposit()
        assert 1.0 == budget.available


class TestAsync:
    def test_acall_retries(self, clock: ManualClock) -> None:
        """``acall`` retries a coroutine function with async sleeps."""
        fn = Flaky(2)

        async def fetch(sku: str) -> str:
            return f"{fn()}:{sku}"

        assert "ok:A" == asyncio.run(policy(clock).acall(fetch, "A"))
        assert 3 == fn.calls
        assert 2 == len(clock.sleeps)

    def test_acall_gives_up_with_the_original(self, clock: ManualClock) -> None:
        """The async path re-raises the original with the note too."""
        error = ConnectionError("down")

        async def fetch() -> None:
            raise error

        with pytest.raises(ConnectionError) as info:
            asyncio.run(policy(clock, attempts=2).acall(fetch))
        assert info.value is error
        assert "gave up after 2 attempts" in info.value.__notes__[0]

    def test_acall_result_classifier(self, clock: ManualClock) -> None:
        """The async path judges results and raises RetriesExhaustedError too."""

        async def empty() -> list[int]:
            return []

        p = policy(clock, attempts=2, on=lambda o: o.result == [])
        with pytest.raises(ir.RetriesExhaustedError):
            asyncio.run(p.acall(empty))

        answers = iter([[], [1]])

        async def eventually() -> list[int]:
            return next(answers)

        assert [1] == asyncio.run(p.acall(eventually))

    def test_cancellation_is_not_retried(self, clock: ManualClock) -> None:
        """CancelledError propagates at once even from a policy on ``Exception``."""
        calls = 0

        async def cancelled() -> None:
            nonlocal calls
            calls += 1
            raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            asyncio.run(policy(clock, on=Exception).acall(cancelled))
        assert 1 == calls


class TestDecorator:
    def test_keeps_metadata_and_signature(self, clock: ManualClock) -> None:
        """The wrapper keeps name, docstring, signature and ``__wrapped__``."""

        def fetch_stock(sku: str, *, warehouse: int = 1) -> int:
            """Fetch."""
            return 3

        wrapped = policy(clock)(fetch_stock)
        assert "fetch_stock" == wrapped.__name__
        assert "Fetch." == wrapped.__doc__
        assert fetch_stock is wrapped.__wrapped__  # type: ignore[attr-defined]
        assert inspect.signature(fetch_stock) == inspect.signature(wrapped)
        assert 3 == wrapped("A")

    def test_keeps_the_function_kind(self, clock: ManualClock) -> None:
        """Coroutine, generator and async generator functions stay what they were."""
        p = policy(clock)

        async def coro() -> None: ...

        def gen() -> Iterator[int]:
            yield 1

        async def agen() -> AsyncIterator[int]:
            yield 1

        assert inspect.iscoroutinefunction(p(coro))
        assert inspect.isgeneratorfunction(p(gen))
        assert inspect.isasyncgenfunction(p(agen))

    def test_methods(self, clock: ManualClock) -> None:
        """Decorated methods bind ``self`` as usual."""
        p = policy(clock)

        class Client:
            def __init__(self) -> None:
                self.flaky = Flaky(1, value=5)

            @p
            def get(self, extra: int) -> int:
                return int(self.flaky()) + extra

            @p
            async def aget(self) -> int:
                return int(self.flaky())

        client = Client()
        assert 6 == client.get(1)
        assert 5 == asyncio.run(client.aget())

    def test_async_function(self, clock: ManualClock) -> None:
        """An ``async def`` is retried with the async shell."""
        fn = Flaky(1)

        @policy(clock)
        async def fetch() -> str:
            return str(fn())

        assert "ok" == asyncio.run(fetch())
        assert 2 == fn.calls

    def test_each_call_gets_its_own_attempts(self, clock: ManualClock) -> None:
        """A decorated function's calls do not share attempt counts."""
        fn = Flaky(2)
        wrapped = policy(clock, attempts=3)(fn)
        assert "ok" == wrapped()
        fn.calls, fn.failures = 0, 2
        assert "ok" == wrapped()


class TestGenerators:
    def test_retried_before_the_first_yield(self, clock: ManualClock) -> None:
        """A generator failing before its first value is restarted."""
        starts = 0

        @policy(clock)
        def rows() -> Iterator[int]:
            nonlocal starts
            starts += 1
            if starts < 3:
                raise ConnectionError
            yield from (1, 2, 3)

        assert [1, 2, 3] == list(rows())
        assert 3 == starts

    def test_not_retried_after_the_first_yield(self, clock: ManualClock) -> None:
        """Once a value was handed out, a failure reaches the consumer as is."""
        starts = 0

        @policy(clock)
        def rows() -> Iterator[int]:
            nonlocal starts
            starts += 1
            yield 1
            raise ConnectionError

        got: list[int] = []
        with pytest.raises(ConnectionError):
            got.extend(rows())
        assert [1] == got
        assert 1 == starts

    def test_send_throw_close_and_return_are_forwarded(self, clock: ManualClock) -> None:
        """The wrapper is transparent to send, throw, close and the return value."""
        closed = False

        @policy(clock)
        def echo() -> Any:
            nonlocal closed
            try:
                received = yield "ready"
                while received != "stop":
                    try:
                        received = yield received * 2
                    except ValueError:
                        received = yield "caught"
                return "finished"
            finally:
                closed = True

        gen = echo()
        assert "ready" == next(gen)
        assert 4 == gen.send(2)
        assert "caught" == gen.throw(ValueError())
        with pytest.raises(StopIteration) as stop:
            gen.send("stop")
        assert "finished" == stop.value.value

        gen = echo()
        next(gen)
        gen.close()
        assert closed

    def test_empty_generator(self, clock: ManualClock) -> None:
        """A generator that returns before yielding just returns."""

        @policy(clock)
        def nothing() -> Iterator[int]:
            return
            yield  # pragma: no cover

        assert [] == list(nothing())

    def test_throw_that_ends_the_generator(self, clock: ManualClock) -> None:
        """An exception thrown in and not caught ends the generator."""

        @policy(clock)
        def one() -> Iterator[int]:
            yield 1

        gen = one()
        next(gen)
        with pytest.raises(KeyError):
            gen.throw(KeyError())

    def test_async_generator(self, clock: ManualClock) -> None:
        """Async generators are retried before their first value only, and stay transparent."""
        starts = 0

        @policy(clock)
        async def rows() -> AsyncIterator[int]:
            nonlocal starts
            starts += 1
            if starts < 2:
                raise ConnectionError
            try:
                received = yield 1
                yield received
            except ValueError:
                yield -1

        async def main() -> list[Any]:
            out: list[Any] = []
            gen = rows()
            out.append(await gen.__anext__())
            out.append(await gen.asend(5))
            gen2 = rows()
            out.append(await gen2.__anext__())
            out.append(await gen2.athrow(ValueError()))
            with pytest.raises(StopAsyncIteration):
                await gen2.__anext__()
            gen3 = rows()
            await gen3.__anext__()
            await gen3.aclose()
            with pytest.raises(StopAsyncIteration):
                await gen3.asend(None)
            return out

        assert [1, 5, 1, -1] == asyncio.run(main())
        assert 4 == starts  # the first generator was started twice, the others once

    def test_async_generator_errors(self, clock: ManualClock) -> None:
        """An empty async generator ends; a failure after the first value is not retried."""

        @policy(clock)
        async def empty() -> AsyncIterator[int]:
            return
            yield  # pragma: no cover

        @policy(clock)
        async def breaks() -> AsyncIterator[int]:
            yield 1
            raise ConnectionError

        async def main() -> list[int]:
            assert [] == [x async for x in empty()]
            got: list[int] = []
            with pytest.raises(ConnectionError):  # noqa: PT012 - the loop is what raises
                async for x in breaks():
                    got.append(x)  # noqa: PERF401 - keep what arrived before the error
            return got

        assert [1] == asyncio.run(main())


class TestRetryingLoop:
    def test_retries_inside_the_loop(self, clock: ManualClock) -> None:
        """A failing block is retried and the loop ends after a success."""
        fn = Flaky(2)
        numbers = []
        for attempt in policy(clock).retrying():
            with attempt:
                numbers.append(attempt.number)
                fn()
        assert [1, 2, 3] == numbers
        assert 2 == len(clock.sleeps)
        assert "<Attempt 3>" == repr(attempt)

    def test_gives_up_from_the_block(self, clock: ManualClock) -> None:
        """When the policy gives up, the original exception leaves the ``with`` block."""
        error = ConnectionError("x")
        with pytest.raises(ConnectionError) as info:  # noqa: PT012 - the loop is what raises
            for attempt in policy(clock, attempts=2).retrying():
                with attempt:
                    raise error
        assert info.value is error
        assert "gave up after 2 attempts" in info.value.__notes__[0]

    def test_not_retryable_in_the_loop(self, clock: ManualClock) -> None:
        """An exception outside ``on`` propagates from the first block."""
        runs = 0
        with pytest.raises(KeyError):  # noqa: PT012 - the loop is what raises
            for attempt in policy(clock).retrying():
                with attempt:
                    runs += 1
                    raise KeyError
        assert 1 == runs

    def test_unused_attempt_ends_the_loop(self, clock: ManualClock) -> None:
        """An attempt not used as a block counts as done."""
        assert 1 == len(list(policy(clock).retrying()))

    def test_async_for(self, clock: ManualClock) -> None:
        """``async for`` retries with async sleeps."""
        fn = Flaky(1)

        async def main() -> int:
            count = 0
            async for attempt in policy(clock).retrying():
                with attempt:
                    count += 1
                    fn()
            return count

        assert 2 == asyncio.run(main())
        assert 1 == len(clock.sleeps)

    def test_block_publishes_the_deadline(self, clock: ManualClock) -> None:
        """A retried call inside a loop block shares the loop's deadline."""
        inner = policy(clock, attempts=1000, timeout=1000, backoff=ir.Backoff.constant(1))
        fn = Flaky(10_000)
        with pytest.raises(ConnectionError):  # noqa: PT012 - the loop is what raises
            outer = policy(clock, attempts=5, timeout=4, backoff=ir.Backoff.constant(1))
            for attempt in outer.retrying():
                with attempt:
                    inner.call(fn)
        assert clock.monotonic() < 4
        assert 4 == fn.calls

    def test_loop_without_timeout(self, clock: ManualClock) -> None:
        """A loop with no timeout leaves no deadline to publish."""
        fn = Flaky(1)
        for attempt in policy(clock, timeout=None).retrying():
            with attempt:
                fn()
        assert 2 == fn.calls


class TestAsyncShellsMatchSync:
    def test_async_events_budget_and_shared_deadline(self, clock: ManualClock) -> None:
        """The async shell emits events, spends budgets and joins outer deadlines like sync."""
        budget = ir.RetryBudget(ratio=1.0, clock=clock)
        events: list[ir.Event] = []
        remove = ir.add_listener(events.append)
        inner = policy(clock, attempts=100, timeout=100, backoff=ir.Backoff.constant(1))
        outer = policy(clock, attempts=1, timeout=5, budget=budget)
        fn = Flaky(1000)

        async def leaf() -> str:
            return str(fn())

        async def middle() -> str:
            return await inner.acall(leaf)

        first = Flaky(1)

        async def once_flaky() -> str:
            return str(first())

        try:
            assert "ok" == asyncio.run(policy(clock, budget=budget).acall(once_flaky))
            with pytest.raises(ConnectionError):
                asyncio.run(outer.acall(middle))
        finally:
            remove()
        assert 5 == fn.calls  # the inner policy stopped at the outer 5 s deadline
        decisions = [e.decision for e in events if isinstance(e, ir.RetryEvent)]
        assert [ir.RetryDecision.RETRY, ir.RetryDecision.SUCCESS] == decisions[:2]

    def test_loop_spends_budget_and_joins_outer_deadline(self, clock: ManualClock) -> None:
        """The retrying() loop deposits into its budget and honours an outer deadline."""
        budget = ir.RetryBudget(ratio=0.0, minimum_per_second=0.0, clock=clock)
        loop_policy = policy(clock, budget=budget, attempts=5)
        runs = 0

        def body() -> None:
            nonlocal runs
            for attempt in loop_policy.retrying():
                with attempt:
                    runs += 1
                    raise ConnectionError

        outer = policy(clock, attempts=1, timeout=5)
        with pytest.raises(ConnectionError) as info:
            outer.call(body)
        assert 1 == runs  # the budget allows no retry at all
        assert "retry budget" in info.value.__notes__[0]

    def test_decorrelated_previous_below_initial(self) -> None:
        """A previous delay below initial / 3 still draws no less than initial."""
        b = ir.Backoff(initial=1, maximum=10, jitter="decorrelated")
        assert 1.0 == b.delay(2, previous=0.1, rng=random.Random(0))

    def test_generator_return_after_throw(self, clock: ManualClock) -> None:
        """A generator that returns after catching a thrown exception hands back its value."""

        @policy(clock)
        def gen() -> Any:
            try:
                yield 1
            except ValueError:
                return "handled"

        g = gen()
        next(g)
        with pytest.raises(StopIteration) as stop:
            g.throw(ValueError())
        assert "handled" == stop.value.value

    def test_async_generator_ends_after_throw(self, clock: ManualClock) -> None:
        """An async generator that swallows a thrown exception and ends stops iteration."""

        @policy(clock)
        async def agen() -> AsyncIterator[int]:
            try:
                yield 1
            except ValueError:
                return

        async def main() -> None:
            g = agen()
            await g.__anext__()
            with pytest.raises(StopAsyncIteration):
                await g.athrow(ValueError())

        asyncio.run(main())

    def test_async_success_after_retry_is_reported(self, clock: ManualClock) -> None:
        """A success after async retries is reported with its attempt number."""
        fn = Flaky(1)

        async def fetch() -> str:
            return str(fn())

        with ir.testing.testing() as timeline:
            asyncio.run(policy(clock).acall(fetch))
        assert [2] == [
            e.attempt for e in timeline.retries if e.decision is ir.RetryDecision.SUCCESS
        ]
