"""RedisMembership, its async twin and RedisBackend's membership factories on a real Redis.

Beyond the contract: the key and its document, leases on the server's ``TIME``, the quiet
period of a group found without its key, WATCH races (retried, and given up after
MEMBERSHIP_ATTEMPTS), eight threads on their own connections, malformed and mistyped keys,
an unreachable server, and ShardAssignment objects splitting keys over one group.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from invresilience import ShardAssignment
from invresilience.backends.redis import (
    MEMBERSHIP_ATTEMPTS,
    AsyncRedisMembership,
    RedisBackend,
    RedisMembership,
)
from invresilience.exceptions import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    MembershipConflictError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from invresilience import MembershipView

#: A lease long enough never to run out during a test.
LONG = 60.0
#: A lease short enough to wait out for real (the server's clock cannot be faked).
SHORT = 0.3


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client of the real Redis that does not retry."""
    with redis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0)) as client:
        yield client


@pytest.fixture
def group(client: redis.Redis, redis_prefix: str) -> RedisMembership:
    """The membership of group ``g`` under the test's prefix."""
    return RedisMembership(client, "g", prefix=redis_prefix)


def document(client: redis.Redis, group: RedisMembership) -> dict[str, Any]:
    """The JSON document the group's key holds."""
    raw = client.get(group.key)
    assert raw is not None
    return json.loads(raw)  # type: ignore[no-any-return]


def summary(view: MembershipView) -> tuple[int, dict[str, float], dict[str, int]]:
    """A view's version, weights and acked versions."""
    return (
        view.version,
        view.weights,
        {name: member.acked for name, member in view.members.items()},
    )


def run_async(redis_url: str, body: Callable[[redis.asyncio.Redis], Awaitable[None]]) -> None:
    """Run *body* with an async client made (and closed) in a fresh event loop."""

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await body(client)
        finally:
            await client.aclose()

    asyncio.run(main())


def refused() -> dict[str, Any]:
    """Client options for a local port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"host": "127.0.0.1", "port": port, "socket_connect_timeout": 1.0}


# -- the key and its document -------------------------------------------------------------------


def test_a_group_is_one_json_key_with_a_hash_tag_and_no_ttl(
    client: redis.Redis, group: RedisMembership, redis_prefix: str
) -> None:
    """Joins, heartbeats and leaves keep one key, <prefix>:{g}:membership, that never expires."""
    assert f"{redis_prefix}:{{g}}:membership" == group.key
    assert (0, {}, {}) == summary(group.view())
    assert 0 == client.exists(group.key)
    assert (1, {"a": 1.0}, {"a": 1}) == summary(group.join("a", "ta", weight=1.0, lease=LONG))
    assert (2, {"a": 1.0, "b": 2.5}, {"a": 1, "b": 2}) == summary(
        group.join("b", "tb", weight=2.5, lease=LONG)
    )
    assert (2, {"a": 1.0, "b": 2.5}, {"a": 2, "b": 2}) == summary(
        group.heartbeat("a", "ta", lease=LONG, acked=2)
    )
    assert (3, {"a": 1.0}, {"a": 2}) == summary(group.leave("b", "tb"))
    assert (3, {"a": 1.0}, {"a": 2}) == summary(group.view())
    stored = document(client, group)
    assert (3, ["a"], "ta") == (
        stored["version"],
        list(stored["members"]),
        stored["members"]["a"][3],
    )
    assert -1 == client.ttl(group.key)
    assert [group.key] == [key.decode() for key in client.scan_iter(match=f"{redis_prefix}:*")]


def test_a_weight_change_bumps_the_version_and_a_renewal_does_not(
    group: RedisMembership,
) -> None:
    """Joining again with the same token renews; with another weight it reweights (one bump)."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    assert (1, {"a": 1.0}, {"a": 1}) == summary(group.join("a", "ta", weight=1.0, lease=LONG))
    assert (2, {"a": 4.0}, {"a": 1}) == summary(group.join("a", "ta", weight=4.0, lease=LONG))
    assert {1: {"a": 1.0}} == group.view().history


def test_a_second_token_under_a_live_name_conflicts_until_the_lease_ends(
    client: redis.Redis, group: RedisMembership
) -> None:
    """Another token raises MembershipConflictError with the lease left, and changes nothing."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    before = client.get(group.key)
    with pytest.raises(MembershipConflictError) as info:
        group.join("a", "other", weight=1.0, lease=LONG)
    assert ("g", "a") == (info.value.group, info.value.member)
    assert LONG - 5 < info.value.retry_after <= LONG
    assert before == client.get(group.key)


def test_a_stale_token_neither_renews_nor_removes(
    client: redis.Redis, group: RedisMembership
) -> None:
    """Heartbeat and leave with a stale token change nothing: the key is not even written."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    group.join("b", "tb", weight=1.0, lease=LONG)
    before = client.get(group.key)
    assert (2, {"a": 1.0, "b": 1.0}, {"a": 1, "b": 2}) == summary(
        group.heartbeat("a", "stale", lease=LONG, acked=2)
    )
    assert (2, {"a": 1.0, "b": 1.0}, {"a": 1, "b": 2}) == summary(group.leave("a", "stale"))
    assert before == client.get(group.key)


def test_leases_are_measured_on_the_servers_time(
    client: redis.Redis, group: RedisMembership
) -> None:
    """A lease ends at the server's TIME plus the lease; once past, the member drops out (one bump)."""
    before = client.time()
    group.join("a", "ta", weight=1.0, lease=SHORT)
    after = client.time()
    group.join("b", "tb", weight=1.0, lease=LONG)
    expires_at = document(client, group)["members"]["a"][2]
    assert before[0] + before[1] / 1e6 + SHORT <= expires_at <= after[0] + after[1] / 1e6 + SHORT
    assert "a" in group.view()
    time.sleep(SHORT + 0.05)
    view = group.view()
    assert (3, {"b": 1.0}) == (view.version, view.weights)
    assert (3, {"b": 1.0}) == (group.view().version, group.view().weights)


def test_a_group_found_without_its_key_is_quiet_for_one_lease(
    client: redis.Redis, group: RedisMembership
) -> None:
    """The first join of a group (or after the key was lost) grants ownership to nobody for a lease."""
    assert 0.0 == group.view().quiet_for
    assert LONG - 5 < group.join("a", "ta", weight=1.0, lease=LONG).quiet_for <= LONG
    assert LONG - 5 < group.view().quiet_for <= LONG
    client.delete(group.key)
    view = group.heartbeat("a", "ta", lease=SHORT, acked=1)
    # "a" is no member of the lost group; the version it acted on is never handed out again.
    assert (2, {}) == (view.version, view.weights)
    assert SHORT - 0.1 < view.quiet_for <= SHORT


def test_the_history_is_trimmed_to_the_oldest_acked_version(
    client: redis.Redis, group: RedisMembership
) -> None:
    """Versions no live member may act on leave the stored history."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    group.join("b", "tb", weight=1.0, lease=LONG)
    view = group.join("c", "tc", weight=1.0, lease=LONG)
    assert [1, 2] == sorted(view.history)
    assert [2] == sorted(group.heartbeat("a", "ta", lease=LONG, acked=2).history)
    group.heartbeat("b", "tb", lease=LONG, acked=3)
    assert {} == dict(group.heartbeat("a", "ta", lease=LONG, acked=3).history)
    assert ["3"] == list(document(client, group)["history"])


# -- connections and races ----------------------------------------------------------------------


def test_two_connections_and_a_decoding_client_see_one_group(
    redis_url: str, group: RedisMembership, redis_prefix: str
) -> None:
    """A store on another connection, even one with decode_responses, shares the group."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    with redis.Redis.from_url(redis_url, decode_responses=True) as other_client:
        other = RedisMembership(other_client, "g", prefix=redis_prefix)
        assert (2, {"a": 1.0, "b": 1.0}, {"a": 1, "b": 2}) == summary(
            other.join("b", "tb", weight=1.0, lease=LONG)
        )
        assert summary(group.view()) == summary(other.view())


def test_eight_threads_joining_at_once_each_bump_the_version_once(
    redis_url: str, group: RedisMembership, redis_prefix: str
) -> None:
    """Eight threads, each on its own connection, join: versions 1..8 once each, nobody lost."""
    start = threading.Barrier(8)
    versions: dict[str, int] = {}

    def worker(i: int) -> None:
        with redis.Redis.from_url(redis_url) as own:
            store = RedisMembership(own, "g", prefix=redis_prefix)
            start.wait()
            view = store.join(f"m{i}", f"t{i}", weight=1.0, lease=LONG)
            versions[f"m{i}"] = view.version
            for _ in range(5):
                store.heartbeat(f"m{i}", f"t{i}", lease=LONG, acked=view.version)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert list(range(1, 9)) == sorted(versions.values())
    final = group.view()
    assert (8, sorted(versions)) == (final.version, sorted(final.members))
    assert all(final.members[name].acked >= versions[name] for name in versions)


class Meddler:
    """A client whose transactions see another client rewrite *key* (as it was) after TIME."""

    def __init__(self, client: redis.Redis, other: redis.Redis, key: str, times: int) -> None:
        self.client = client
        self.other = other
        self.key = key
        self.times = times

    def pipeline(self, transaction: bool = True) -> Any:
        """The client's pipeline, whose ``time()`` rewrites the key the first *times* times."""
        pipe: Any = self.client.pipeline(transaction=transaction)
        real_time = pipe.time

        def time_then_meddle() -> Any:
            reply = real_time()
            if self.times > 0:
                self.times -= 1
                self.other.set(self.key, self.other.get(self.key) or b"")
            return reply

        pipe.time = time_then_meddle
        return pipe


def test_a_write_between_read_and_exec_is_retried_even_for_a_read(
    redis_url: str, group: RedisMembership, client: redis.Redis, redis_prefix: str
) -> None:
    """EXEC fails when another client wrote the key; the operation starts over and succeeds."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    with redis.Redis.from_url(redis_url) as own:
        meddler = Meddler(own, client, group.key, times=3)
        store = RedisMembership(meddler, "g", prefix=redis_prefix)  # type: ignore[arg-type]
        assert (1, {"a": 1.0}, {"a": 1}) == summary(store.view())
        assert 0 == meddler.times
        assert (1, {"a": 1.0}, {"a": 1}) == summary(store.heartbeat("a", "ta", lease=1, acked=1))


def test_a_group_written_during_every_attempt_gives_up_with_a_backend_error(
    redis_url: str, group: RedisMembership, client: redis.Redis, redis_prefix: str
) -> None:
    """After MEMBERSHIP_ATTEMPTS lost races the operation raises BackendError naming the group."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    before = client.get(group.key)
    with redis.Redis.from_url(redis_url) as own:
        meddler = Meddler(own, client, group.key, times=MEMBERSHIP_ATTEMPTS)
        store = RedisMembership(meddler, "g", prefix=redis_prefix)  # type: ignore[arg-type]
        with pytest.raises(BackendError, match=rf"group 'g' .* {MEMBERSHIP_ATTEMPTS} attempts"):
            store.heartbeat("a", "ta", lease=1, acked=1)
        assert 0 == meddler.times
    assert before == client.get(group.key)


# -- errors -------------------------------------------------------------------------------------


def test_a_malformed_document_is_a_backend_error_naming_the_group(
    client: redis.Redis, group: RedisMembership
) -> None:
    """A key holding something else than a membership document raises BackendError, chained."""
    client.set(group.key, b'{"version": "x"}')
    with pytest.raises(
        BackendError, match=r"RedisMembership\.view: .*group 'g'.*malformed"
    ) as info:
        group.view()
    assert isinstance(info.value.__cause__, ValueError)
    client.set(group.key, b"\xff\xfe")
    with pytest.raises(BackendError, match="malformed"):
        group.join("a", "ta", weight=1.0, lease=LONG)


def test_a_key_of_another_type_is_a_backend_error_not_unavailable(
    client: redis.Redis, group: RedisMembership
) -> None:
    """A hash where the document should be raises BackendError chained to WRONGTYPE."""
    client.hset(group.key, "f", "v")
    with pytest.raises(BackendError, match=r"RedisMembership\.leave") as info:
        group.leave("a", "ta")
    assert not isinstance(info.value, BackendUnavailableError)
    assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)


def test_unreachable_redis_is_backend_unavailable(redis_prefix: str) -> None:
    """Connection refused raises BackendUnavailableError naming the operation, chained."""
    store = RedisMembership(
        redis.Redis(**refused(), retry=Retry(NoBackoff(), 0)), prefix=redis_prefix
    )
    with pytest.raises(BackendUnavailableError, match=r"RedisMembership\.join:") as info:
        store.join("a", "ta", weight=1.0, lease=LONG)
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)

    async def main() -> None:
        aclient = redis.asyncio.Redis(**refused(), retry=AsyncRetry(NoBackoff(), 0))
        try:
            with pytest.raises(BackendUnavailableError, match=r"AsyncRedisMembership\.view:"):
                await AsyncRedisMembership(aclient, prefix=redis_prefix).view()
        finally:
            await aclient.aclose()

    asyncio.run(main())


def test_bad_group_names_prefixes_and_arguments_are_refused(
    client: redis.Redis, redis_url: str, group: RedisMembership
) -> None:
    """Invalid groups and prefixes raise ConfigurationError at construction; bad ops before I/O."""
    for bad in ("", "no spaces", "x" * 101, "{g}", 7):
        with pytest.raises(ConfigurationError, match="group"):
            RedisMembership(client, bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisMembership(client, "g", prefix="a{}b")
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisMembership(client, "g", prefix="")
    with RedisBackend(redis_url) as backend:
        with pytest.raises(ConfigurationError, match="group"):
            backend.membership("a b")
        with pytest.raises(ConfigurationError, match="group"):
            backend.async_membership("")
    with pytest.raises(ConfigurationError, match="lease"):
        group.join("a", "ta", weight=1.0, lease=0)
    with pytest.raises(ConfigurationError, match="token"):
        group.leave("a", "")
    assert 0 == client.exists(group.key)


# -- async and the backend ----------------------------------------------------------------------


def test_the_async_twin_shares_the_group(
    redis_url: str, client: redis.Redis, group: RedisMembership, redis_prefix: str
) -> None:
    """AsyncRedisMembership reads and writes the sync store's key with the same rules."""
    group.join("a", "ta", weight=1.0, lease=LONG)

    async def body(aclient: redis.asyncio.Redis) -> None:
        store = AsyncRedisMembership(aclient, "g", prefix=redis_prefix)
        assert ("g", group.key) == (store.group, store.key)
        assert "AsyncRedisMembership('g', prefix=" in repr(store)
        assert (2, {"a": 1.0, "b": 2.0}, {"a": 1, "b": 2}) == summary(
            await store.join("b", "tb", weight=2.0, lease=LONG)
        )
        with pytest.raises(MembershipConflictError):
            await store.join("a", "other", weight=1.0, lease=LONG)
        assert (2, {"a": 1.0, "b": 2.0}, {"a": 1, "b": 2}) == summary(
            await store.heartbeat("a", "stale", lease=LONG, acked=2)
        )
        assert (2, {"a": 1.0, "b": 2.0}, {"a": 2, "b": 2}) == summary(
            await store.heartbeat("a", "ta", lease=LONG, acked=2)
        )
        assert (3, {"a": 1.0}, {"a": 2}) == summary(await store.leave("b", "tb"))
        joined = await asyncio.gather(
            *(store.join(f"m{i}", f"t{i}", weight=1.0, lease=LONG) for i in range(4))
        )
        assert [4, 5, 6, 7] == sorted(view.version for view in joined)
        client.set(group.key, "[]")
        with pytest.raises(BackendError, match=r"AsyncRedisMembership\.view: .*'g'"):
            await store.view()
        await store.close()
        assert await aclient.ping()

    run_async(redis_url, body)


def test_backend_factories_use_its_clients_and_prefix(redis_url: str, redis_prefix: str) -> None:
    """membership() and async_membership() share one key under the backend's prefix."""

    async def main() -> None:
        async with RedisBackend(redis_url, prefix=redis_prefix) as backend:
            store = backend.membership("orders")
            assert (f"{redis_prefix}:{{orders}}:membership", backend.client) == (
                store.key,
                store.client,
            )
            store.join("a", "ta", weight=1.0, lease=LONG)
            astore = backend.async_membership("orders")
            assert astore.client is backend.async_client
            assert ["a"] == list((await astore.view()).members)
            store.close()
            assert backend.client.ping()

    asyncio.run(main())


def test_shard_assignments_over_redis_split_the_keys_and_take_over_on_leave(
    client: redis.Redis, redis_prefix: str
) -> None:
    """Two workers own every key exactly once when settled, never one key together, and the
    survivor owns everything once the other leaves."""
    lease = 0.5
    keys = range(200)
    a = ShardAssignment(RedisMembership(client, "w", prefix=redis_prefix), "a", lease=lease)
    b = ShardAssignment(RedisMembership(client, "w", prefix=redis_prefix), "b", lease=lease)
    a.join()
    b.join()
    assert not any(a.owns(key) or b.owns(key) for key in keys)  # the fresh group is quiet
    time.sleep(lease + 0.05)
    seen: list[tuple[int, int]] = []
    for worker in (a, b, a, b):
        worker.heartbeat()
        both = [key for key in keys if a.owns(key) and b.owns(key)]
        assert [] == both
        seen.append((sum(a.owns(key) for key in keys), sum(b.owns(key) for key in keys)))
    owned_a, owned_b = seen[-1]
    assert (200, True, True) == (owned_a + owned_b, 60 < owned_a < 140, a.version == b.version)
    assert all(a.owns(key) != b.owns(key) for key in keys)
    b.leave()
    assert not any(b.owns(key) for key in keys)
    a.heartbeat()
    assert all(a.owns(key) for key in keys)
    a.leave()
    assert {} == RedisMembership(client, "w", prefix=redis_prefix).view().members
