"""The breaker-store conformance suite, run against every backend, sync and async.

The memory stores run on a ManualClock; the Redis stores keep the server's time, so their
suite waits out short real durations (see :mod:`invresilience.contract`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import redis
import redis.asyncio

from invresilience.backends.memory import AsyncMemoryBreakerStore, MemoryBreakerStore
from invresilience.backends.redis import AsyncRedisBreakerStore, RedisBreakerStore
from invresilience.contract import AsyncBreakerStoreContract, BreakerStoreContract
from invresilience.contract.breaker import _run_now
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from invresilience._core.breaker import BreakerSpec, SharedBreakerState


class TestMemoryBreakerStore(BreakerStoreContract):
    """MemoryBreakerStore on a ManualClock."""

    exact_clock = True

    def make_store(self) -> MemoryBreakerStore:
        self.clock = ManualClock()
        return MemoryBreakerStore(clock=self.clock)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestAsyncMemoryBreakerStore(AsyncBreakerStoreContract):
    """AsyncMemoryBreakerStore on a ManualClock."""

    exact_clock = True

    async def make_store(self) -> AsyncMemoryBreakerStore:
        self.clock = ManualClock()
        return AsyncMemoryBreakerStore(MemoryBreakerStore(clock=self.clock))

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestRedisBreakerStore(BreakerStoreContract):
    """RedisBreakerStore on the real Redis."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> None:
        self.url, self.prefix = redis_url, redis_prefix

    def make_store(self) -> RedisBreakerStore:
        self.client = redis.Redis.from_url(self.url)
        return RedisBreakerStore(self.client, prefix=self.prefix)

    def close_store(self, store: RedisBreakerStore) -> None:
        self.client.close()


class TestAsyncRedisBreakerStore(AsyncBreakerStoreContract):
    """AsyncRedisBreakerStore on the real Redis."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> None:
        self.url, self.prefix = redis_url, redis_prefix

    async def make_store(self) -> AsyncRedisBreakerStore:
        self.client = redis.asyncio.Redis.from_url(self.url)
        return AsyncRedisBreakerStore(self.client, prefix=self.prefix)

    async def close_store(self, store: AsyncRedisBreakerStore) -> None:
        await self.client.aclose()


# -- the suite catches a store that breaks the rules ---------------------------------------------


class _OffByOneGeneration:
    """A breaker store whose reads report the wrong generation."""

    def __init__(self, store: MemoryBreakerStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def read(self, name: str, spec: BreakerSpec) -> SharedBreakerState:
        shared = self.store.read(name, spec)
        return attrs.evolve(shared, generation=shared.generation + 1)


class _SlowToReopen:
    """A breaker store that re-opens for the first open_for again, not the next one."""

    def __init__(self, store: MemoryBreakerStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def settle(
        self, name: str, spec: BreakerSpec, owner: str, generation: int, success: bool | None
    ) -> SharedBreakerState:
        shared = self.store.settle(name, spec, owner, generation, success)
        return attrs.evolve(shared, retry_after=spec.open_for[0])


class _Broken(BreakerStoreContract):
    exact_clock = True

    def __init__(self, wrapper: Any, *, exact: bool = True) -> None:
        self.wrapper = wrapper
        self.exact_clock = exact  # type: ignore[misc]

    def make_store(self) -> Any:
        self.clock = ManualClock()
        return self.wrapper(MemoryBreakerStore(clock=self.clock))

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


def test_suite_reports_a_wrong_field() -> None:
    """A store that answers a wrong generation fails with a message naming the field."""
    suite = _Broken(_OffByOneGeneration)
    with pytest.raises(AssertionError, match="read of an unknown name: generation: expected 0"):
        suite.test_unknown_name_reads_closed()


@pytest.mark.parametrize("exact", [True, False])
def test_suite_reports_a_wrong_duration(exact: bool) -> None:
    """A store that re-opens for the wrong time fails, on exact and real clocks alike."""
    suite = _Broken(_SlowToReopen, exact=exact)
    with pytest.raises(AssertionError, match=r"failed probe: retry_after: expected 60\.0 s"):
        suite.test_failed_probe_reopens_with_the_next_open_for()


def test_sync_check_that_suspends_is_an_error() -> None:
    """A sync store that awaits something cannot be driven without an event loop."""
    coroutine = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="must not await"):
        _run_now(coroutine)


def test_unimplemented_hooks_raise() -> None:
    """The base suites need make_store."""
    with pytest.raises(NotImplementedError):
        BreakerStoreContract().test_names_are_independent()
    with pytest.raises(NotImplementedError):
        AsyncBreakerStoreContract().test_names_are_independent()


def test_redis_store_repr(redis_url: str) -> None:
    """The repr names the prefix."""
    with redis.Redis.from_url(redis_url) as client:
        assert "RedisBreakerStore(prefix='p')" == repr(RedisBreakerStore(client, prefix="p"))
