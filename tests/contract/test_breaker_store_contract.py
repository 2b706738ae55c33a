"""The breaker-store conformance suite, run against every backend, sync and async.

The memory stores run on a ManualClock; the Redis stores keep the server's time, so their
suite waits out short real durations (see :mod:`invresilience.contract`).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio

from invresilience.backends.memory import AsyncMemoryBreakerStore, MemoryBreakerStore
from invresilience.backends.redis import AsyncRedisBreakerStore, RedisBreakerStore
from invresilience.contract import AsyncBreakerStoreContract, BreakerStoreContract
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator


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


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, whose keys are deleted afterwards."""
    prefix = f"invresilience-test:{uuid.uuid4().hex}"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)


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
