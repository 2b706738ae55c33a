"""The membership contract against Redis (a real server), sync and async.

Leases are kept on the server's clock, so the suite waits out short real leases (0.3 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio

from invresilience.backends.redis import AsyncRedisMembership, RedisMembership
from invresilience.contract import AsyncMembershipContract, MembershipContract

if TYPE_CHECKING:
    from collections.abc import Iterator

    from invresilience.typing import AsyncMembership


class TestRedisMembership(MembershipContract):
    """The sync Redis store; the groups of one test share a client and a prefix."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> Iterator[None]:
        self.prefix = redis_prefix
        with redis.Redis.from_url(redis_url) as self.client:
            yield

    def make_membership(self, group: str) -> RedisMembership:
        return RedisMembership(self.client, group, prefix=self.prefix)


class TestRedisMembershipDecodedResponses(MembershipContract):
    """The sync Redis store over a client made with decode_responses=True."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> Iterator[None]:
        self.prefix = redis_prefix
        with redis.Redis.from_url(redis_url, decode_responses=True) as self.client:
            yield

    def make_membership(self, group: str) -> RedisMembership:
        return RedisMembership(self.client, group, prefix=self.prefix)


class TestAsyncRedisMembership(AsyncMembershipContract):
    """The async Redis store, each with a client made in the test's event loop."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str, redis_prefix: str) -> None:
        self.url, self.prefix = redis_url, redis_prefix

    async def make_membership(self, group: str) -> AsyncRedisMembership:
        client = redis.asyncio.Redis.from_url(self.url)
        return AsyncRedisMembership(client, group, prefix=self.prefix)

    async def close_membership(self, membership: AsyncMembership) -> None:
        await membership.close()
        assert isinstance(membership, AsyncRedisMembership)
        await membership.client.aclose()
