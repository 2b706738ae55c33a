"""The idempotency store contract against Redis (a real server, real time), sync and async."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio

from invresilience.backends.redis import AsyncRedisIdempotencyStore, RedisIdempotencyStore
from invresilience.contract import AsyncIdempotencyStoreContract, IdempotencyStoreContract

if TYPE_CHECKING:
    from collections.abc import Iterator

    from invresilience.typing import AsyncIdempotencyStore


class TestRedisIdempotencyStore(IdempotencyStoreContract):
    """The sync Redis store on the server's clock."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> Iterator[None]:
        self.url, self.prefix = redis_url, redis_prefix
        with redis.Redis.from_url(redis_url) as self.client:
            yield

    def make_store(self) -> RedisIdempotencyStore:
        return RedisIdempotencyStore(self.client, prefix=self.prefix)


class TestRedisIdempotencyStoreDecodedResponses(IdempotencyStoreContract):
    """The sync Redis store over a client made with decode_responses=True."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> Iterator[None]:
        self.prefix = redis_prefix
        with redis.Redis.from_url(redis_url, decode_responses=True) as self.client:
            yield

    def make_store(self) -> RedisIdempotencyStore:
        return RedisIdempotencyStore(self.client, prefix=self.prefix, namespace="decoded")


class TestAsyncRedisIdempotencyStore(AsyncIdempotencyStoreContract):
    """The async Redis store, with a client made in each test's event loop."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> None:
        self.url, self.prefix = redis_url, redis_prefix

    async def make_store(self) -> AsyncRedisIdempotencyStore:
        self.client = redis.asyncio.Redis.from_url(self.url)
        return AsyncRedisIdempotencyStore(self.client, prefix=self.prefix)

    async def close_store(self, store: AsyncIdempotencyStore) -> None:
        await store.close()
        await self.client.aclose()
