"""Checked by mypy, never run: the memory and Redis stores satisfy the store Protocols."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
import redis.asyncio

from invresilience._admission import MemoryRateLimitStore
from invresilience.backends.memory import AsyncMemoryBreakerStore, MemoryBreakerStore
from invresilience.backends.redis import (
    AsyncRedisBreakerStore,
    AsyncRedisRateLimitStore,
    RedisBreakerStore,
    RedisRateLimitStore,
)
from invresilience.contract import (
    AsyncBreakerStoreContract,
    AsyncRateLimitStoreContract,
    BreakerStoreContract,
    RateLimitStoreContract,
)

if TYPE_CHECKING:
    from invresilience.typing import (
        AsyncBreakerStore,
        AsyncRateLimitStore,
        BreakerStore,
        RateLimitStore,
    )

client = redis.Redis()
aclient = redis.asyncio.Redis()

breakers: list[BreakerStore] = [MemoryBreakerStore(), RedisBreakerStore(client, prefix="p")]
abreakers: list[AsyncBreakerStore] = [
    AsyncMemoryBreakerStore(),
    AsyncRedisBreakerStore(aclient, idle_ttl=60.0),
]
limits: list[RateLimitStore] = [MemoryRateLimitStore(), RedisRateLimitStore(client)]
alimits: list[AsyncRateLimitStore] = [AsyncRedisRateLimitStore(aclient)]

# The twins are not interchangeable.
wrong: BreakerStore = AsyncRedisBreakerStore(aclient)  # type: ignore[assignment]
awrong: AsyncRateLimitStore = RedisRateLimitStore(client)  # type: ignore[assignment]
RedisBreakerStore(aclient)  # type: ignore[arg-type]
RedisBreakerStore(client, "prefix")  # type: ignore[call-arg]


def use(store: RateLimitStore) -> int:
    wait: int = store.acquire("k", interval_ns=1, capacity_ns=1, weight=1)
    store.acquire("k", 1, 1, 1)  # type: ignore[call-arg]
    return wait


class TestMine(BreakerStoreContract):
    def make_store(self) -> BreakerStore:
        return RedisBreakerStore(client)


class TestMineAsync(AsyncBreakerStoreContract):
    exact_clock = True

    async def make_store(self) -> AsyncBreakerStore:
        return AsyncRedisBreakerStore(aclient)


class TestLimits(RateLimitStoreContract):
    def make_store(self) -> RateLimitStore:
        return RedisRateLimitStore(client)


class TestLimitsAsync(AsyncRateLimitStoreContract):
    async def make_store(self) -> AsyncRateLimitStore:
        return AsyncRedisRateLimitStore(aclient)


class TestWrong(BreakerStoreContract):
    async def make_store(self) -> BreakerStore:  # type: ignore[override]
        return RedisBreakerStore(client)
