"""The rate-limit-store conformance suite, run against every backend, sync and async.

The memory store runs on a ManualClock; the Redis stores keep the server's time, so their
suite waits out short real durations (see :mod:`invresilience.contract`).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio

from invresilience.backends.redis import AsyncRedisRateLimitStore, RedisRateLimitStore
from invresilience.contract import AsyncRateLimitStoreContract, RateLimitStoreContract
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator

try:
    from invresilience._admission import MemoryRateLimitStore
except ImportError:  # pragma: no cover - until the admission module lands
    MemoryRateLimitStore = None

needs_memory_store = pytest.mark.skipif(
    MemoryRateLimitStore is None, reason="invresilience._admission.MemoryRateLimitStore missing"
)


class _AsyncMemoryRateLimitStore:
    """MemoryRateLimitStore seen through the async Protocol (there is no async twin)."""

    def __init__(self, store: MemoryRateLimitStore) -> None:
        self.sync = store

    async def acquire(self, key: str, *, interval_ns: int, capacity_ns: int, weight: int) -> int:
        return self.sync.acquire(
            key, interval_ns=interval_ns, capacity_ns=capacity_ns, weight=weight
        )


@needs_memory_store
class TestMemoryRateLimitStore(RateLimitStoreContract):
    """MemoryRateLimitStore on a ManualClock."""

    exact_clock = True

    def make_store(self) -> MemoryRateLimitStore:
        self.clock = ManualClock()
        return MemoryRateLimitStore(clock=self.clock)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


@needs_memory_store
class TestAsyncMemoryRateLimitStore(AsyncRateLimitStoreContract):
    """MemoryRateLimitStore on a ManualClock, driven through the async suite."""

    exact_clock = True

    async def make_store(self) -> _AsyncMemoryRateLimitStore:
        self.clock = ManualClock()
        return _AsyncMemoryRateLimitStore(MemoryRateLimitStore(clock=self.clock))

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, whose keys are deleted afterwards."""
    prefix = f"invresilience-test:{uuid.uuid4().hex}"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)


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
