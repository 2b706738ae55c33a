"""Checked by mypy, never run: the stores satisfy the store Protocols, the backends `Backend`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
import redis.asyncio

from invresilience._admission import MemoryRateLimitStore
from invresilience.backends.memory import AsyncMemoryBreakerStore, MemoryBackend, MemoryBreakerStore
from invresilience.backends.postgres import (
    AsyncPostgresDeadLetterStore,
    PostgresBackend,
    PostgresDeadLetterStore,
)
from invresilience.backends.redis import (
    AsyncRedisBreakerStore,
    AsyncRedisDeadLetterStore,
    AsyncRedisRateLimitStore,
    RedisBackend,
    RedisBreakerStore,
    RedisDeadLetterStore,
    RedisRateLimitStore,
)
from invresilience.backends.sqlite import (
    AsyncSqliteDeadLetterStore,
    SqliteBackend,
    SqliteDeadLetterStore,
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
        AsyncDeadLetterStore,
        AsyncRateLimitStore,
        Backend,
        BreakerStore,
        DeadLetterStore,
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


# -- dead letters: every backend's stores satisfy the Protocols, and every backend is one ---------

letter_stores: list[DeadLetterStore] = [
    SqliteDeadLetterStore("dlq.db", "orders"),
    RedisDeadLetterStore(client, "orders"),
    PostgresDeadLetterStore("postgresql://localhost/db", "orders"),
]
async_letter_stores: list[AsyncDeadLetterStore] = [
    AsyncSqliteDeadLetterStore("dlq.db", "orders"),
    AsyncRedisDeadLetterStore(aclient, "orders"),
    AsyncPostgresDeadLetterStore("postgresql://localhost/db", "orders"),
]
backends: list[Backend] = [
    MemoryBackend(),
    SqliteBackend.from_url("sqlite:///dlq.db"),
    RedisBackend.from_url("redis://localhost"),
    PostgresBackend.from_url("postgresql://localhost/db"),
]
letter_wrong: DeadLetterStore = AsyncRedisDeadLetterStore(aclient)  # type: ignore[assignment]
