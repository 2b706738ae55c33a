"""RedisRateLimitStore and its async twin, beyond the contract: nanosecond exactness far
past what a Lua double holds, the key's expiry, validation and driver errors.

The server's clock cannot be set, so exactness is checked through what the script
stores: ``TIME`` is a whole number of microseconds, so the stored ``tat`` minus the
requests' nanoseconds must be a multiple of 1000 and lie between two ``TIME`` readings
taken around the call. A double near 1.8e18 is a multiple of 256: any rounding shows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

from invresilience.backends.redis import AsyncRedisRateLimitStore, RedisRateLimitStore
from invresilience.exceptions import BackendError, BackendUnavailableError, ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, whose keys are deleted afterwards."""
    prefix = f"invresilience-test:{uuid.uuid4().hex}"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client of the real Redis."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


def server_ns(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1_000_000_000 + micros * 1000


def test_tat_is_exact_to_the_nanosecond(client: redis.Redis, prefix: str) -> None:
    """An admitted request stores now + weight * interval exactly, down to 1 ns."""
    store = RedisRateLimitStore(client, prefix=prefix)
    before = server_ns(client)
    # 1 s + 1 ns: the key lives long enough to be read.
    interval = 1_000_000_001
    assert 0 == store.acquire("k", interval_ns=interval, capacity_ns=interval, weight=1)
    after = server_ns(client)
    tat = int(client.get(f"{prefix}:k"))
    assert 1 == tat % 1000
    assert before <= tat - interval <= after


@settings(max_examples=50)
@given(
    # At least 1 s, so that the keys (which expire when the bucket rests) can be read back.
    interval=st.integers(10**9, 10**15),
    burst=st.integers(1, 5),
    weight=st.integers(1, 5),
    huge=st.booleans(),
)
def test_every_answer_is_exact(
    redis_url: str, interval: int, burst: int, weight: int, huge: bool
) -> None:
    """Admissions store exact tats and rejections return exact waits, at any magnitude."""
    if huge:
        interval *= 10**7  # up to 10^22 ns
    cost, capacity = weight * interval, burst * interval
    key = f"invresilience-test:gcra:{uuid.uuid4().hex}"
    with redis.Redis.from_url(redis_url) as client:
        store = RedisRateLimitStore(client, prefix="invresilience-test:gcra")
        tat: int | None = None
        try:
            for _ in range(burst + 2):
                before = server_ns(client)
                wait = store.acquire(
                    key.rpartition(":")[2],
                    interval_ns=interval,
                    capacity_ns=capacity,
                    weight=weight,
                )
                after = server_ns(client)
                stored = client.get(key)
                # With now a whole microsecond in [before, after]:
                if wait == 0:
                    # ... the new tat is max(tat, now) + cost.
                    start = int(stored) - cost
                    assert start == tat or (start % 1000 == 0 and before <= start <= after)
                    tat = int(stored)
                else:
                    # ... the wait is max(tat, now) + cost - now - capacity, the bucket unchanged.
                    assert (None if tat is None else str(tat).encode()) == stored
                    if wait != cost - capacity:
                        assert tat is not None
                        now = tat + cost - capacity - wait
                        assert now % 1000 == 0
                        assert before <= now <= after
        finally:
            client.delete(key)


def test_key_expires_when_the_bucket_has_rested(client: redis.Redis, prefix: str) -> None:
    """The key's TTL ends when tat is reached (rounded up to the millisecond)."""
    store = RedisRateLimitStore(client, prefix=prefix)
    second = 1_000_000_000
    for _ in range(3):
        store.acquire("k", interval_ns=second, capacity_ns=10 * second, weight=1)
    assert 2_900 < client.pttl(f"{prefix}:k") <= 3_000
    store.acquire("brief", interval_ns=1_000_000, capacity_ns=1_000_000, weight=1)
    time.sleep(0.02)
    assert 0 == client.exists(f"{prefix}:brief")


def test_rejection_leaves_the_key_alone(client: redis.Redis, prefix: str) -> None:
    """A rejected request writes nothing: not the tat, not the TTL."""
    store = RedisRateLimitStore(client, prefix=prefix)
    second = 1_000_000_000
    store.acquire("k", interval_ns=second, capacity_ns=second, weight=1)
    stored = client.get(f"{prefix}:k")
    client.pexpire(f"{prefix}:k", 50_000)
    assert store.acquire("k", interval_ns=second, capacity_ns=second, weight=1) > 0
    assert stored == client.get(f"{prefix}:k")
    assert client.pttl(f"{prefix}:k") > 40_000


def test_largest_accepted_values(client: redis.Redis, prefix: str) -> None:
    """Values just below 10^24 ns work; at 10^24 they are refused before reaching Redis."""
    store = RedisRateLimitStore(client, prefix=prefix)
    interval = 10**23
    assert 0 == store.acquire("k", interval_ns=interval, capacity_ns=9 * interval - 1, weight=1)
    assert 0 < client.pttl(f"{prefix}:k")
    with pytest.raises(ValueError, match="10\\*\\*24"):
        store.acquire("k", interval_ns=interval, capacity_ns=9 * interval, weight=1)


def test_decode_responses_client(redis_url: str, prefix: str) -> None:
    """A client that decodes replies to str gets int waits all the same."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        store = RedisRateLimitStore(client, prefix=prefix)
        assert 0 == store.acquire("k", interval_ns=10**10, capacity_ns=10**10, weight=1)
        wait = store.acquire("k", interval_ns=10**10, capacity_ns=10**10, weight=1)
    assert isinstance(wait, int)
    assert 9 * 10**9 < wait <= 10**10


def test_async_store(redis_url: str, prefix: str) -> None:
    """The async store shares the script and the keys."""

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            store = AsyncRedisRateLimitStore(client, prefix=prefix)
            assert "AsyncRedisRateLimitStore(prefix=" in repr(store)
            assert 0 == await store.acquire("k", interval_ns=10**10, capacity_ns=10**10, weight=1)
            assert await client.exists(f"{prefix}:k")
            with pytest.raises(ValueError, match="weight >= 1"):
                await store.acquire("k", interval_ns=10**10, capacity_ns=10**10, weight=0)
        finally:
            await client.aclose()

    asyncio.run(main())


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "capacity", "weight"),
    [(0, 10, 1), (10, 9, 1), (10, 10, 0), (-1, 10, 1)],
)
def test_bad_gcra_values_are_rejected(
    client: redis.Redis, prefix: str, interval: int, capacity: int, weight: int
) -> None:
    """The same rule as MemoryRateLimitStore: interval >= 1, capacity >= interval, weight >= 1."""
    store = RedisRateLimitStore(client, prefix=prefix)
    with pytest.raises(ValueError, match="interval_ns >= 1"):
        store.acquire("k", interval_ns=interval, capacity_ns=capacity, weight=weight)


def test_non_int_values_and_keys_are_rejected(client: redis.Redis, prefix: str) -> None:
    """Floats are not nanoseconds, and a key is a str of at most 1024 characters."""
    store = RedisRateLimitStore(client, prefix=prefix)
    with pytest.raises(TypeError):
        store.acquire("k", interval_ns=1.5, capacity_ns=10, weight=1)  # type: ignore[arg-type]
    for key in ("x" * 1025, b"bytes"):
        with pytest.raises(ValueError, match="at most 1024"):
            store.acquire(key, interval_ns=1, capacity_ns=1, weight=1)  # type: ignore[arg-type]
    assert 0 == store.acquire("", interval_ns=1, capacity_ns=1, weight=1)


@pytest.mark.parametrize("bad", ["", "x" * 201, "new\nline", None])
def test_bad_prefix_is_rejected(client: redis.Redis, bad: Any) -> None:
    """The prefix must be a non-empty printable str of at most 200 characters."""
    with pytest.raises(ConfigurationError, match=r"RedisRateLimitStore\.prefix"):
        RedisRateLimitStore(client, prefix=bad)


# -- driver errors -------------------------------------------------------------------------------


def _refused() -> dict[str, Any]:
    # Nothing listens on port 1; no retries, so the error comes at once.
    return {"host": "127.0.0.1", "port": 1, "socket_connect_timeout": 1.0}


def test_unreachable_redis_is_backend_unavailable() -> None:
    """Connection refused raises BackendUnavailableError, chaining the driver's error."""
    store = RedisRateLimitStore(redis.Redis(**_refused(), retry=Retry(NoBackoff(), 0)))
    with pytest.raises(BackendUnavailableError, match=r"RedisRateLimitStore\.acquire") as info:
        store.acquire("k", interval_ns=1, capacity_ns=1, weight=1)
    assert isinstance(info.value.__cause__, redis.ConnectionError)


def test_unreachable_redis_is_backend_unavailable_async() -> None:
    """The async store raises BackendUnavailableError too."""
    from redis.asyncio.retry import Retry as AsyncRetry

    async def main() -> None:
        client = redis.asyncio.Redis(**_refused(), retry=AsyncRetry(NoBackoff(), 0))
        try:
            store = AsyncRedisRateLimitStore(client)
            with pytest.raises(
                BackendUnavailableError, match=r"AsyncRedisRateLimitStore\.acquire"
            ) as info:
                await store.acquire("k", interval_ns=1, capacity_ns=1, weight=1)
            assert isinstance(info.value.__cause__, redis.ConnectionError)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_timeout_is_backend_unavailable(client: redis.Redis, prefix: str) -> None:
    """A driver timeout is BackendUnavailableError as well."""

    class TimingOut:
        sha = "0" * 40

        def __call__(self, **kwargs: Any) -> Any:
            raise redis.TimeoutError("Timeout reading from socket")

    store = RedisRateLimitStore(client, prefix=prefix)
    object.__setattr__(store, "_script", TimingOut())
    with pytest.raises(BackendUnavailableError, match="Timeout reading"):
        store.acquire("k", interval_ns=1, capacity_ns=1, weight=1)


def test_other_redis_errors_are_backend_errors(client: redis.Redis, prefix: str) -> None:
    """A key of the wrong type raises BackendError (not Unavailable), chaining the cause."""
    client.rpush(f"{prefix}:k", "not a tat")
    store = RedisRateLimitStore(client, prefix=prefix)
    with pytest.raises(BackendError, match=r"RedisRateLimitStore\.acquire") as info:
        store.acquire("k", interval_ns=1, capacity_ns=1, weight=1)
    assert not isinstance(info.value, BackendUnavailableError)
    assert isinstance(info.value.__cause__, redis.ResponseError)


def test_other_redis_errors_are_backend_errors_async(redis_url: str, prefix: str) -> None:
    """The async store maps other driver errors to BackendError as well."""

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.rpush(f"{prefix}:k", "not a tat")
            store = AsyncRedisRateLimitStore(client, prefix=prefix)
            with pytest.raises(BackendError) as info:
                await store.acquire("k", interval_ns=1, capacity_ns=1, weight=1)
            assert not isinstance(info.value, BackendUnavailableError)
        finally:
            await client.aclose()

    asyncio.run(main())
