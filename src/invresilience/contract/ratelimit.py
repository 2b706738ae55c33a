"""The conformance suite for :class:`~invresilience.typing.RateLimitStore` and its async twin.

Subclass :class:`RateLimitStoreContract` (or :class:`AsyncRateLimitStoreContract`) in a
test module under a name pytest collects (``Test...``) and say how to make your store; the
inherited ``test_*`` methods check the GCRA rule of the Protocol. See
:mod:`invresilience.contract` for a worked example.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from .._clock import SYSTEM_CLOCK
from .breaker import _expect, _run_now, _unique

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from ..typing import AsyncRateLimitStore, RateLimitStore

__all__ = ["AsyncRateLimitStoreContract", "RateLimitStoreContract"]

_NS = 1_000_000_000
#: An interval the suite never waits out: real time passing is small beside it.
LONG_NS = 10 * _NS


class _Harness:
    """What a check gets: the store (async view), a way to let time pass, and the knobs."""

    __slots__ = ("advance", "exact", "short", "store")

    def __init__(
        self,
        store: AsyncRateLimitStore,
        advance: Callable[[float], Awaitable[None]],
        *,
        exact: bool,
        short: float,
    ) -> None:
        self.store = store
        self.advance = advance
        self.exact = exact
        self.short = short

    async def acquire(self, key: str, interval: int, burst: int, weight: int = 1) -> int:
        return await self.store.acquire(
            key, interval_ns=interval, capacity_ns=burst * interval, weight=weight
        )

    def expect_wait(self, expected: int, actual: int, what: str) -> None:
        """*actual* is *expected* ns, less the real time that passed (none on exact clocks)."""
        if self.exact:
            _expect(expected, actual, what)
        elif not expected - 5 * _NS < actual <= expected:
            msg = f"{what}: expected a wait of {expected} ns or a little less, got {actual}"
            raise AssertionError(msg)


if TYPE_CHECKING:
    _Check = Callable[[_Harness], Coroutine[Any, Any, None]]


# -- the checks ---------------------------------------------------------------------------------


async def _burst_is_admitted_then_rejected(h: _Harness) -> None:
    key = _unique("bucket")
    for number in (1, 2, 3):
        _expect(0, await h.acquire(key, LONG_NS, 3), f"request {number} of a burst of 3")
    wait = await h.acquire(key, LONG_NS, 3)
    h.expect_wait(LONG_NS, wait, "request 4 of a burst of 3")
    # A rejection takes nothing: the wait only shrinks as time passes.
    again = await h.acquire(key, LONG_NS, 3)
    h.expect_wait(wait, again, "request 5, after a rejection")


async def _heavier_than_the_burst_waits_exactly(h: _Harness) -> None:
    # From a rested bucket the wait is w * interval - capacity, whatever the clock says.
    key = _unique("bucket")
    _expect(LONG_NS, await h.acquire(key, LONG_NS, 2, 3), "weight 3 on a rested burst of 2")
    _expect(3 * LONG_NS, await h.acquire(key, LONG_NS, 2, 5), "weight 5 on a rested burst of 2")
    _expect(0, await h.acquire(key, LONG_NS, 2, 2), "weight 2 after the rejections")


async def _weights_take_their_share(h: _Harness) -> None:
    key = _unique("bucket")
    _expect(0, await h.acquire(key, LONG_NS, 5, 3), "weight 3 of a burst of 5")
    wait = await h.acquire(key, LONG_NS, 5, 3)
    h.expect_wait(LONG_NS, wait, "weight 3 with 2 left")
    _expect(0, await h.acquire(key, LONG_NS, 5, 2), "weight 2 with 2 left")
    wait = await h.acquire(key, LONG_NS, 5, 1)
    h.expect_wait(LONG_NS, wait, "weight 1 with nothing left")


async def _keys_are_independent(h: _Harness) -> None:
    first, second = _unique("bucket"), _unique("bucket")
    _expect(0, await h.acquire(first, LONG_NS, 1), "first key")
    h.expect_wait(LONG_NS, await h.acquire(first, LONG_NS, 1), "first key again")
    _expect(0, await h.acquire(second, LONG_NS, 1), "second key")


async def _admitted_once_the_wait_has_passed(h: _Harness) -> None:
    key = _unique("bucket")
    interval = round(h.short * _NS)
    _expect(0, await h.acquire(key, interval, 1), "first request")
    wait = await h.acquire(key, interval, 1)
    h.expect_wait(interval, wait, "second request")
    if h.exact:
        await h.advance(h.short / 2)
        _expect(interval - interval // 2, await h.acquire(key, interval, 1), "half-way")
        await h.advance(h.short / 2)
        # Exactly on the boundary: admitted, not lost to rounding.
        _expect(0, await h.acquire(key, interval, 1), "exactly one interval later")
        _expect(interval, await h.acquire(key, interval, 1), "right after the boundary")
    else:
        await h.advance(wait / _NS)
        _expect(0, await h.acquire(key, interval, 1), "after the wait")


async def _rested_bucket_admits_a_full_burst_again(h: _Harness) -> None:
    key = _unique("bucket")
    interval = round(h.short * _NS)
    for _ in range(2):
        _expect(0, await h.acquire(key, interval, 2), "a burst of 2 (1st)")
        _expect(0, await h.acquire(key, interval, 2), "a burst of 2 (2nd)")
        wait = await h.acquire(key, interval, 2)
        h.expect_wait(interval, wait, "a burst of 2 (3rd)")
        await h.advance(2 * h.short)


# -- the test classes ---------------------------------------------------------------------------


class _RateLimitChecks:
    """The ``test_*`` methods, written once for both suites."""

    def _check(self, check: _Check) -> None:
        raise NotImplementedError

    def test_burst_is_admitted_then_rejected(self) -> None:
        """Exactly burst requests pass at once, then the next waits one interval."""
        self._check(_burst_is_admitted_then_rejected)

    def test_heavier_than_the_burst_waits_exactly(self) -> None:
        """From a rested bucket a too-heavy request waits exactly w * interval - capacity."""
        self._check(_heavier_than_the_burst_waits_exactly)

    def test_weights_take_their_share(self) -> None:
        """A request of weight w takes w intervals of the bucket."""
        self._check(_weights_take_their_share)

    def test_keys_are_independent(self) -> None:
        """Buckets of different keys share nothing."""
        self._check(_keys_are_independent)

    def test_admitted_once_the_wait_has_passed(self) -> None:
        """A rejected request is admitted once its wait has passed, exactly on the boundary."""
        self._check(_admitted_once_the_wait_has_passed)

    def test_rested_bucket_admits_a_full_burst_again(self) -> None:
        """After burst intervals of rest the bucket admits a whole burst again."""
        self._check(_rested_bucket_admits_a_full_burst_again)


class _SyncRateLimitView:
    """A sync store seen through the async Protocol; its coroutine never suspends."""

    __slots__ = ("sync",)

    def __init__(self, store: RateLimitStore) -> None:
        self.sync = store

    async def acquire(self, key: str, *, interval_ns: int, capacity_ns: int, weight: int) -> int:
        return self.sync.acquire(
            key, interval_ns=interval_ns, capacity_ns=capacity_ns, weight=weight
        )


class RateLimitStoreContract(_RateLimitChecks):
    """The conformance suite for a :class:`~invresilience.typing.RateLimitStore`.

    Subclass it as ``Test...`` and implement :meth:`make_store`; pytest runs the
    inherited ``test_*`` methods, each on a fresh store (and fresh bucket keys).

    Attributes:
        exact_clock: ``True`` when :meth:`advance` moves the store's clock exactly (a
            :class:`~invresilience.testing.ManualClock`): waits are then checked to the
            nanosecond, and a request exactly on the boundary must be admitted.
        short: The interval the suite waits out, in seconds (about 6 of them on a real
            clock). The default, 0.125, is a binary fraction: exact in nanoseconds.

    .. versionadded:: 0.1.0
    """

    exact_clock: ClassVar[bool] = False
    short: ClassVar[float] = 0.125

    def make_store(self) -> RateLimitStore:
        """A store for one test. Use an autouse fixture to hand it what it needs."""
        raise NotImplementedError

    def close_store(self, store: RateLimitStore) -> None:
        """Release *store* after its test (close a client); does nothing by default."""

    def advance(self, seconds: float) -> None:
        """Let at least *seconds* pass on the store's clock; by default sleeps (plus 10 ms)."""
        SYSTEM_CLOCK.sleep(seconds + 0.01)

    def _check(self, check: _Check) -> None:
        store = self.make_store()
        try:

            async def advance(seconds: float) -> None:
                self.advance(seconds)

            harness = _Harness(
                _SyncRateLimitView(store), advance, exact=self.exact_clock, short=self.short
            )
            _run_now(check(harness))
        finally:
            self.close_store(store)


class AsyncRateLimitStoreContract(_RateLimitChecks):
    """The conformance suite for an :class:`~invresilience.typing.AsyncRateLimitStore`.

    Like :class:`RateLimitStoreContract`, with coroutine hooks; each test runs in its own
    event loop (``asyncio.run``), inside which :meth:`make_store` is awaited.

    .. versionadded:: 0.1.0
    """

    exact_clock: ClassVar[bool] = False
    short: ClassVar[float] = 0.125

    async def make_store(self) -> AsyncRateLimitStore:
        """A store for one test, made inside the test's event loop."""
        raise NotImplementedError

    async def close_store(self, store: AsyncRateLimitStore) -> None:
        """Release *store* after its test; does nothing by default."""

    async def advance(self, seconds: float) -> None:
        """Let at least *seconds* pass on the store's clock; by default sleeps (plus 10 ms)."""
        await asyncio.sleep(seconds + 0.01)

    def _check(self, check: _Check) -> None:
        async def main() -> None:
            store = await self.make_store()
            try:
                harness = _Harness(store, self.advance, exact=self.exact_clock, short=self.short)
                await check(harness)
            finally:
                await self.close_store(store)

        asyncio.run(main())
