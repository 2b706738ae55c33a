"""The dead-letter store contract against Redis (a real server), sync and async."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio

from invresilience.backends.redis import AsyncRedisDeadLetterStore, RedisDeadLetterStore
from invresilience.contract import AsyncDeadLetterStoreContract, DeadLetterStoreContract

if TYPE_CHECKING:
    from collections.abc import Iterator

    from invresilience.typing import AsyncDeadLetterStore


class TestRedisDeadLetterStore(DeadLetterStoreContract):
    """The sync Redis store; the queues of one test share a client and a prefix."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> Iterator[None]:
        self.prefix = redis_prefix
        with redis.Redis.from_url(redis_url) as self.client:
            yield

    def make_store(self, queue: str) -> RedisDeadLetterStore:
        return RedisDeadLetterStore(self.client, queue, prefix=self.prefix)


class TestRedisDeadLetterStoreDecodedResponses(DeadLetterStoreContract):
    """The sync Redis store over a client made with decode_responses=True."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> Iterator[None]:
        self.prefix = redis_prefix
        with redis.Redis.from_url(redis_url, decode_responses=True) as self.client:
            yield

    def make_store(self, queue: str) -> RedisDeadLetterStore:
        return RedisDeadLetterStore(self.client, queue, prefix=self.prefix)


class TestAsyncRedisDeadLetterStore(AsyncDeadLetterStoreContract):
    """The async Redis store, each with a client made in the test's event loop."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> None:
        self.url, self.prefix = redis_url, redis_prefix

    async def make_store(self, queue: str) -> AsyncRedisDeadLetterStore:
        client = redis.asyncio.Redis.from_url(self.url)
        return AsyncRedisDeadLetterStore(client, queue, prefix=self.prefix)

    async def close_store(self, store: AsyncDeadLetterStore) -> None:
        await store.close()
        assert isinstance(store, AsyncRedisDeadLetterStore)
        await store.client.aclose()


class TestAsyncRedisDeadLetterStoreDecodedResponses(AsyncDeadLetterStoreContract):
    """The async Redis store over clients made with decode_responses=True."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> None:
        self.url, self.prefix = redis_url, redis_prefix

    async def make_store(self, queue: str) -> AsyncRedisDeadLetterStore:
        client = redis.asyncio.Redis.from_url(self.url, decode_responses=True)
        return AsyncRedisDeadLetterStore(client, queue, prefix=self.prefix)

    async def close_store(self, store: AsyncDeadLetterStore) -> None:
        await store.close()
        assert isinstance(store, AsyncRedisDeadLetterStore)
        await store.client.aclose()
