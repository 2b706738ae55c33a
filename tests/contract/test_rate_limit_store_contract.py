"""The rate-limit-store conformance suite, run against every backend, sync and async.

The memory store runs on a ManualClock; the Redis stores keep the server's time, so their
suite waits out short real durations (see :mod:`invresilience.contract`).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio

from invresilience._admission import MemoryRateLimitStore
from invresilience.backends.redis import AsyncRedisRateLimitStore, RedisRateLimitStore
from invresilience.contract import AsyncRateLimitStoreContract, RateLimitStoreContract
from invresilience.testing import ManualClock


class _AsyncMemoryRateLimitStore:
    """MemoryRateLimitStore seen through the async Protocol (there is no async twin)."""

    def __init__(self, store: MemoryRateLimitStore) -> None:
        self.sync = store

    async def acquire(self, key: str, *, interval_ns: int, capacity_ns: int, weight: int) -> int:
        return self.sync.acquire(
            key, interval_ns=interval_ns, capacity_ns=capacity_ns, weight=weight
        )


class TestMemoryRateLimitStore(RateLimitStoreContract):
    """MemoryRateLimitStore on a ManualClock."""

    exact_clock = True

    def make_store(self) -> MemoryRateLimitStore:
        self.clock = ManualClock()
        return MemoryRateLimitStore(clock=self.clock)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestAsyncMemoryRateLimitStore(AsyncRateLimitStoreContract):
    """MemoryRateLimitStore on a ManualClock, driven through the async suite."""

    exact_clock = True

    async def make_store(self) -> _AsyncMemoryRateLimitStore:
        self.clock = ManualClock()
        return _AsyncMemoryRateLimitStore(MemoryRateLimitStore(clock=self.clock))

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestRedisRateLimitStore(RateLimitStoreContract):
    """RedisRateLimitStore on the real Redis."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> None:
        self.url, self.prefix = redis_url, redis_prefix

    def make_store(self) -> RedisRateLimitStore:
        self.client = redis.Redis.from_url(self.url)
        return RedisRateLimitStore(self.client, prefix=self.prefix)

    def close_store(self, store: RedisRateLimitStore) -> None:
        self.client.close()


class TestAsyncRedisRateLimitStore(AsyncRateLimitStoreContract):
    """AsyncRedisRateLimitStore on the real Redis."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> None:
        self.url, self.prefix = redis_url, redis_prefix

    async def make_store(self) -> AsyncRedisRateLimitStore:
        self.client = redis.asyncio.Redis.from_url(self.url)
        return AsyncRedisRateLimitStore(self.client, prefix=self.prefix)

    async def close_store(self, store: AsyncRedisRateLimitStore) -> None:
        await self.client.aclose()


# -- the suite catches a store that breaks the rules ---------------------------------------------


class _GenerousStore:
    """A rate-limit store that admits one request more than the burst."""

    def __init__(self, clock: ManualClock) -> None:
        self.store = MemoryRateLimitStore(clock=clock)

    def acquire(self, key: str, *, interval_ns: int, capacity_ns: int, weight: int) -> int:
        return self.store.acquire(
            key, interval_ns=interval_ns, capacity_ns=capacity_ns + interval_ns, weight=weight
        )


class _LateByOneStore:
    """A rate-limit store whose waits are one nanosecond too long."""

    def __init__(self, clock: ManualClock) -> None:
        self.store = MemoryRateLimitStore(clock=clock)

    def acquire(self, key: str, *, interval_ns: int, capacity_ns: int, weight: int) -> int:
        wait = self.store.acquire(
            key, interval_ns=interval_ns, capacity_ns=capacity_ns, weight=weight
        )
        return wait + 1 if wait else 0


class _Broken(RateLimitStoreContract):
    def __init__(self, wrapper: Any, *, exact: bool) -> None:
        self.wrapper = wrapper
        self.exact_clock = exact  # type: ignore[misc]

    def make_store(self) -> Any:
        self.clock = ManualClock()
        return self.wrapper(self.clock)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


def test_suite_catches_an_extra_admission() -> None:
    """A store admitting burst + 1 requests fails the burst check."""
    suite = _Broken(_GenerousStore, exact=True)
    with pytest.raises(AssertionError, match="request 4 of a burst of 3"):
        suite.test_burst_is_admitted_then_rejected()


@pytest.mark.parametrize("exact", [True, False])
def test_suite_catches_a_wrong_wait(exact: bool) -> None:
    """A wait one nanosecond too long fails, on exact and real clocks alike."""
    suite = _Broken(_LateByOneStore, exact=exact)
    with pytest.raises(AssertionError, match="request 4 of a burst of 3"):
        suite.test_burst_is_admitted_then_rejected()


def test_unimplemented_hooks_raise() -> None:
    """The base suites need make_store."""
    with pytest.raises(NotImplementedError):
        RateLimitStoreContract().test_keys_are_independent()
    with pytest.raises(NotImplementedError):
        AsyncRateLimitStoreContract().test_keys_are_independent()


def test_redis_store_repr(redis_url: str) -> None:
    """The repr names the prefix."""
    with redis.Redis.from_url(redis_url) as client:
        assert "RedisRateLimitStore(prefix='p')" == repr(RedisRateLimitStore(client, prefix="p"))
