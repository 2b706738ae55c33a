"""RedisIdempotencyStore, its async twin and RedisBackend against a real Redis.

Beyond the contract: the keys the script leaves, the server's clock, round trips per
operation and batch, NOSCRIPT recovery, ``decode_responses`` clients, driver errors, a
thread race, and the backend's factories. Leases that must run out are short and real
(0.2 to 0.3 s); everything else uses leases no test waits out.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from invresilience._core.idempotency import Acquired, Completed, InProgress, Lease, Mismatch
from invresilience.backends.redis import (
    IDEMPOTENCY_SHA,
    AsyncRedisBreakerStore,
    AsyncRedisIdempotencyStore,
    AsyncRedisRateLimitStore,
    RedisBackend,
    RedisBreakerStore,
    RedisIdempotencyStore,
    RedisRateLimitStore,
)
from invresilience.exceptions import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    LeaseLostError,
)
from invresilience.typing import AsyncIdempotencyStore, IdempotencyStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

LONG = 60.0
BINARY = bytes(range(256)) * 4 + b"\x00\xff\xfe\x80"


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
    """A sync client of the real Redis that does not retry."""
    with redis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0)) as client:
        yield client


@pytest.fixture
def store(client: redis.Redis, prefix: str) -> RedisIdempotencyStore:
    """A sync store under the test's prefix."""
    return RedisIdempotencyStore(client, prefix=prefix)


def acquire(
    store: RedisIdempotencyStore,
    key: str,
    fp: str = "fp",
    lease: float = LONG,
    ttl: float = 86400.0,
) -> Lease:
    claim = store.claim(key, fp, lease=lease, ttl=ttl)
    assert isinstance(claim, Acquired), claim
    return claim.lease


def server_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


class Sends:
    """Counts the packets a client sends: one per round trip (a pipeline is one)."""

    def __init__(self) -> None:
        self.count = 0

    def sync_class(self) -> type[redis.connection.Connection]:
        sends = self

        class Counting(redis.connection.Connection):
            def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                sends.count += 1
                super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

        return Counting

    def async_class(self) -> type[redis.asyncio.connection.Connection]:
        sends = self

        class Counting(redis.asyncio.connection.Connection):
            async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                sends.count += 1
                await super().send_packed_command(command, check_health)

        return Counting


def refused() -> dict[str, Any]:
    """Client options for a local port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"host": "127.0.0.1", "port": port, "socket_connect_timeout": 1.0}


# -- the rules and the keys ---------------------------------------------------------------------


def test_the_stores_satisfy_the_protocols(client: redis.Redis, prefix: str) -> None:
    """Both stores are instances of the runtime-checkable store Protocols."""
    assert isinstance(RedisIdempotencyStore(client, prefix=prefix), IdempotencyStore)
    aclient = redis.asyncio.Redis()
    assert isinstance(AsyncRedisIdempotencyStore(aclient, prefix=prefix), AsyncIdempotencyStore)


def test_a_record_is_one_hash_under_prefix_namespace_key(client: redis.Redis, prefix: str) -> None:
    """A claim writes the hash <prefix>:<namespace>:<key> with the documented fields."""
    store = RedisIdempotencyStore(client, prefix=prefix, namespace="orders")
    before = server_now(client)
    lease = acquire(store, "job:1", "fp-1", lease=30.0)
    assert [f"{prefix}:orders:job:1".encode()] == list(client.scan_iter(match=f"{prefix}:*"))
    record = client.hgetall(f"{prefix}:orders:job:1")
    assert {b"fingerprint", b"state", b"fence", b"token", b"lease_until", b"expires_at"} == set(
        record
    )
    assert (b"fp-1", b"pending", b"1") == (
        record[b"fingerprint"],
        record[b"state"],
        record[b"fence"],
    )
    assert lease.token.encode() == record[b"token"]
    lease_until = int(record[b"lease_until"]) / 1e6
    expires_at = int(record[b"expires_at"]) / 1e6
    assert before + 30.0 <= lease_until < before + 31.0
    assert before + 86400.0 <= expires_at < before + 86401.0
    # Redis drops the record itself at expires_at, to the millisecond.
    assert abs(client.pexpiretime(f"{prefix}:orders:job:1") - expires_at * 1000) <= 1


def test_namespaces_and_prefixes_keep_records_apart(client: redis.Redis, prefix: str) -> None:
    """The same key in two namespaces, or under two prefixes, is two records."""
    one = RedisIdempotencyStore(client, prefix=prefix, namespace="one")
    two = RedisIdempotencyStore(client, prefix=prefix, namespace="two")
    other = RedisIdempotencyStore(client, prefix=prefix + ":other", namespace="one")
    for store in (one, two, other):
        assert 1 == acquire(store, "k", "fp").fence
    assert isinstance(one.claim("k", "fp", lease=LONG), InProgress)


def test_every_claim_of_a_key_gets_a_larger_fence(store: RedisIdempotencyStore) -> None:
    """Release and claim again, five times: fences 1 to 5, tokens all different."""
    leases = []
    for _ in range(5):
        lease = acquire(store, "k")
        store.release(lease)
        leases.append(lease)
    assert [1, 2, 3, 4, 5] == [lease.fence for lease in leases]
    assert 5 == len({lease.token for lease in leases})


def test_in_progress_answers_the_running_fence_and_the_time_left(
    store: RedisIdempotencyStore,
) -> None:
    """A claim while a lease runs is in progress, with that fence and the lease's time left."""
    lease = acquire(store, "k", lease=30.0)
    busy = store.claim("k", "fp", lease=LONG)
    assert isinstance(busy, InProgress)
    assert ("k", lease.fence) == (busy.key, busy.fence)
    assert 29.0 < busy.retry_after <= 30.0


def test_retry_after_is_computed_on_the_servers_clock(
    store: RedisIdempotencyStore, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local clock a day off changes nothing: retry_after is lease_until - TIME on the server."""
    acquire(store, "k", lease=30.0)
    monkeypatch.setattr(time, "time", lambda: 0.0)
    monkeypatch.setattr(time, "monotonic", lambda: 86400.0)
    busy = store.claim("k", "fp", lease=LONG)
    monkeypatch.undo()
    lease_until = int(client.hget(f"{store.prefix}:default:k", "lease_until") or 0) / 1e6
    assert isinstance(busy, InProgress)
    assert lease_until - server_now(client) <= busy.retry_after <= 30.0


def test_a_different_fingerprint_is_a_mismatch_and_changes_nothing(
    store: RedisIdempotencyStore, client: redis.Redis
) -> None:
    """Another payload on a completed key is a mismatch naming the stored fingerprint."""
    store.complete(acquire(store, "k", "fp-1"), b"r")
    before = client.hgetall(f"{store.prefix}:default:k")
    assert Mismatch("k", "fp-1") == store.claim("k", "fp-2", lease=LONG)
    assert before == client.hgetall(f"{store.prefix}:default:k")


def test_complete_stores_the_result_and_the_ttl(
    store: RedisIdempotencyStore, client: redis.Redis
) -> None:
    """complete() sets the state, the result and the key's expiry to now + ttl."""
    store.complete(acquire(store, "k"), b"done", ttl=120.0)
    record = client.hgetall(f"{store.prefix}:default:k")
    assert (b"completed", b"done", b"0") == (
        record[b"state"],
        record[b"result"],
        record[b"lease_until"],
    )
    assert 119_000 < client.pttl(f"{store.prefix}:default:k") <= 120_001
    assert Completed("k", "fp", b"done") == store.claim("k", "fp", lease=LONG)


@pytest.mark.parametrize("decode", [False, True], ids=["bytes", "decode_responses"])
def test_binary_results_round_trip_whatever_the_client_decodes(
    redis_url: str, prefix: str, decode: bool
) -> None:
    """Invalid UTF-8, NULs and every byte replay exactly, decode_responses or not."""
    with redis.Redis.from_url(redis_url, decode_responses=decode) as client:
        store = RedisIdempotencyStore(client, prefix=prefix)
        store.complete(acquire(store, "k", "fp-é"), BINARY)
        assert Completed("k", "fp-é", BINARY) == store.claim("k", "fp-é", lease=LONG)
        assert Mismatch("k", "fp-é") == store.claim("k", "fp-other", lease=LONG)
        assert [Completed("k", "fp-é", BINARY)] == store.claim_many([("k", "fp-é")], lease=LONG)


def test_a_stale_lease_changes_nothing(store: RedisIdempotencyStore, client: redis.Redis) -> None:
    """After a takeover the old lease's complete, release and extend raise and write nothing."""
    old = acquire(store, "k", lease=0.2)
    time.sleep(0.25)
    new = acquire(store, "k")
    assert new.fence == old.fence + 1
    before = client.hgetall(f"{store.prefix}:default:k")
    for attempt in (
        lambda: store.complete(old, b"late"),
        lambda: store.release(old),
        lambda: store.extend(old, LONG),
    ):
        with pytest.raises(LeaseLostError) as info:
            attempt()
        assert (old.key, old.fence) == (info.value.key, info.value.fence)
    assert before == client.hgetall(f"{store.prefix}:default:k")
    assert [False] == store.complete_many([(old, b"late")])
    assert before == client.hgetall(f"{store.prefix}:default:k")


def test_a_forged_token_is_a_lost_lease(store: RedisIdempotencyStore) -> None:
    """The right fence with another token does not hold the key."""
    lease = acquire(store, "k")
    forged = Lease(lease.key, lease.fence, "not-the-token", lease.fingerprint, lease.duration)
    with pytest.raises(LeaseLostError):
        store.complete(forged, b"r")
    store.complete(lease, b"r")


def test_a_run_out_lease_nobody_took_over_still_completes(store: RedisIdempotencyStore) -> None:
    """A lease past its time completes while nobody claimed the key since."""
    lease = acquire(store, "k", lease=0.2)
    time.sleep(0.25)
    store.complete(lease, b"late")
    assert Completed("k", "fp", b"late") == store.claim("k", "fp", lease=LONG)


def test_extend_moves_the_lease_and_the_expiry_when_needed(
    store: RedisIdempotencyStore, client: redis.Redis
) -> None:
    """extend() past the record's expiry pushes the expiry; a shorter one leaves it."""
    lease = acquire(store, "k")
    expires = client.hget(f"{store.prefix}:default:k", "expires_at")
    extended = store.extend(lease, 10.0)
    assert (lease.fence, lease.token, 10.0) == (extended.fence, extended.token, extended.duration)
    assert expires == client.hget(f"{store.prefix}:default:k", "expires_at")
    busy = store.claim("k", "fp", lease=LONG)
    assert isinstance(busy, InProgress)
    assert 9.0 < busy.retry_after <= 10.0
    # A record that lives only as long as its lease lives as long as the extended lease.
    brief = acquire(store, "j", lease=0.5, ttl=0.5)
    store.extend(brief, 5.0)
    assert 4_000 < client.pttl(f"{store.prefix}:default:j") <= 5_001


def test_records_expire_in_redis_and_purge_has_nothing_to_do(
    store: RedisIdempotencyStore, client: redis.Redis
) -> None:
    """Redis drops a record at its expiry; purge_expired() returns 0 and deletes nothing."""
    store.complete(acquire(store, "gone"), b"r", ttl=0.2)
    store.complete(acquire(store, "kept"), b"r")
    time.sleep(0.25)
    assert 0 == client.exists(f"{store.prefix}:default:gone")
    assert 0 == store.purge_expired()
    assert 1 == client.exists(f"{store.prefix}:default:kept")
    assert 1 == acquire(store, "gone", "fp-new").fence
    with pytest.raises(ConfigurationError):
        store.purge_expired(0)


def test_an_expired_record_still_held_continues_its_fence(
    store: RedisIdempotencyStore, client: redis.Redis
) -> None:
    """A record past expires_at that Redis still holds is free, keeps counting, drops its result."""
    key = f"{store.prefix}:default:k"
    past = int((server_now(client) - 10) * 1e6)
    client.hset(
        key,
        mapping={
            "fingerprint": "fp-old",
            "state": "completed",
            "fence": "41",
            "token": "t",
            "lease_until": "0",
            "expires_at": str(past),
            "result": b"old",
        },
    )
    lease = acquire(store, "k", "fp-new")
    assert 42 == lease.fence
    assert client.hget(key, "result") is None
    assert client.pttl(key) > 0


def test_bad_arguments_are_refused_before_any_io(client: redis.Redis, prefix: str) -> None:
    """Bad prefixes, namespaces, keys and leases raise ConfigurationError."""
    with pytest.raises(ConfigurationError):
        RedisIdempotencyStore(client, prefix="")
    with pytest.raises(ConfigurationError):
        RedisIdempotencyStore(client, namespace="no spaces")
    with pytest.raises(ConfigurationError):
        AsyncRedisIdempotencyStore(redis.asyncio.Redis(), namespace="")
    store = RedisIdempotencyStore(client, prefix=prefix)
    with pytest.raises(ConfigurationError):
        store.claim_many([("ok", "fp"), ("", "fp")], lease=LONG)
    with pytest.raises(ConfigurationError):
        store.complete("not a lease", b"r")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        store.complete_many([("not a lease", b"r")])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError):
        store.release(None)  # type: ignore[arg-type]
    assert [] == list(client.scan_iter(match=f"{prefix}:*"))


def test_close_leaves_the_client_open(store: RedisIdempotencyStore, client: redis.Redis) -> None:
    """The store does not own its client: close() leaves it usable."""
    store.close()
    assert client.ping()
    assert "RedisIdempotencyStore(prefix=" in repr(store)


def test_durations_past_the_cap_are_capped(
    store: RedisIdempotencyStore, client: redis.Redis
) -> None:
    """A huge ttl is held to 10**9 s, so the server's arithmetic stays exact."""
    store.complete(acquire(store, "k", lease=1e300), b"r", ttl=1e300)
    assert 10**12 - 60_000 < client.pttl(f"{store.prefix}:default:k") <= 10**12 + 1


# -- round trips, batches and NOSCRIPT ----------------------------------------------------------


@pytest.fixture
def counted(redis_url: str) -> Iterator[tuple[redis.Redis, Sends]]:
    """A client whose round trips are counted (its connection already made)."""
    sends = Sends()
    with redis.Redis.from_url(
        redis_url, connection_class=sends.sync_class(), retry=Retry(NoBackoff(), 0)
    ) as client:
        client.ping()
        sends.count = 0
        yield client, sends


def test_every_operation_is_one_round_trip(counted: tuple[redis.Redis, Sends], prefix: str) -> None:
    """claim, complete, release and extend cost one round trip each (the script is cached)."""
    client, sends = counted
    store = RedisIdempotencyStore(client, prefix=prefix)
    client.script_load(store_lua())
    sends.count = 0
    lease = acquire(store, "a")
    store.extend(lease, LONG)
    store.complete(lease, b"r")
    store.release(acquire(store, "b"))
    assert 5 == sends.count


def store_lua() -> str:
    from invresilience.backends.redis import IDEMPOTENCY_LUA

    return IDEMPOTENCY_LUA


def test_batches_are_one_round_trip(counted: tuple[redis.Redis, Sends], prefix: str) -> None:
    """claim_many and complete_many of 200 items cost one round trip each; empty ones none."""
    client, sends = counted
    store = RedisIdempotencyStore(client, prefix=prefix)
    client.script_load(store_lua())
    sends.count = 0
    claims = store.claim_many([(f"k{i}", "fp") for i in range(200)], lease=LONG)
    assert 1 == sends.count
    leases = [claim.lease for claim in claims if isinstance(claim, Acquired)]
    assert 200 == len(leases)
    assert [True] * 200 == store.complete_many([(lease, b"r") for lease in leases])
    assert 2 == sends.count
    assert [] == store.claim_many([], lease=LONG)
    assert [] == store.complete_many([])
    assert 2 == sends.count
    assert all(
        isinstance(c, Completed)
        for c in store.claim_many([(f"k{i}", "fp") for i in range(200)], lease=LONG)
    )


def test_noscript_is_recovered_by_loading_the_script(
    counted: tuple[redis.Redis, Sends], prefix: str
) -> None:
    """After SCRIPT FLUSH a call loads the script and runs: three round trips, once."""
    client, sends = counted
    store = RedisIdempotencyStore(client, prefix=prefix)
    client.script_flush()
    sends.count = 0
    lease = acquire(store, "k")
    assert 3 == sends.count  # EVALSHA (NOSCRIPT), SCRIPT LOAD, EVALSHA
    assert [True] == client.script_exists(IDEMPOTENCY_SHA)
    sends.count = 0
    store.complete(lease, b"r")
    assert 1 == sends.count


def test_noscript_in_a_batch_reruns_only_what_did_not_run(
    counted: tuple[redis.Redis, Sends], prefix: str
) -> None:
    """After SCRIPT FLUSH a batch loads the script and sends its items again, in order."""
    client, sends = counted
    store = RedisIdempotencyStore(client, prefix=prefix)
    client.script_flush()
    sends.count = 0
    claims = store.claim_many([("a", "fp"), ("b", "fp")], lease=LONG)
    assert 3 == sends.count  # pipeline (all NOSCRIPT), SCRIPT LOAD, pipeline
    assert [1, 1] == [c.lease.fence for c in claims if isinstance(c, Acquired)]
    client.script_flush()
    leases = [c.lease for c in claims if isinstance(c, Acquired)]
    assert [True, True] == store.complete_many([(lease, b"r") for lease in leases])


# -- errors -------------------------------------------------------------------------------------


def test_unreachable_redis_is_backend_unavailable() -> None:
    """Connection refused raises BackendUnavailableError naming the operation, chained."""
    client = redis.Redis(**refused(), retry=Retry(NoBackoff(), 0))
    store = RedisIdempotencyStore(client)
    with pytest.raises(BackendUnavailableError, match=r"RedisIdempotencyStore\.claim:") as info:
        store.claim("k", "fp", lease=LONG)
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    with pytest.raises(BackendUnavailableError, match=r"RedisIdempotencyStore\.claim_many"):
        store.claim_many([("k", "fp")], lease=LONG)
    lease = Lease("k", 1, "t", "fp", LONG)
    with pytest.raises(BackendUnavailableError, match=r"RedisIdempotencyStore\.complete_many"):
        store.complete_many([(lease, b"r")])


def test_other_redis_errors_are_backend_errors(
    store: RedisIdempotencyStore, client: redis.Redis
) -> None:
    """A key of the wrong type raises BackendError (not unavailable), single or batched."""
    client.set(f"{store.prefix}:default:bad", "a string")
    with pytest.raises(BackendError) as info:
        store.claim("bad", "fp", lease=LONG)
    assert not isinstance(info.value, BackendUnavailableError)
    assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)
    with pytest.raises(BackendError, match=r"claim_many") as batch:
        store.claim_many([("good", "fp"), ("bad", "fp")], lease=LONG)
    assert isinstance(batch.value.__cause__, redis.exceptions.ResponseError)


# -- concurrency --------------------------------------------------------------------------------


def test_four_threads_racing_for_300_keys_acquire_each_once(
    store: RedisIdempotencyStore,
) -> None:
    """4 threads claim the same 300 keys at once: every key is acquired exactly once."""
    keys = [f"race-{i}" for i in range(300)]
    wins: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(4)

    def worker() -> None:
        start.wait()
        mine = [key for key in keys if isinstance(store.claim(key, "fp", lease=LONG), Acquired)]
        with lock:
            wins.update(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert dict.fromkeys(keys, 1) == dict(wins)


# -- async --------------------------------------------------------------------------------------


def run_async(
    redis_url: str, body: Callable[[redis.asyncio.Redis], Awaitable[None]], **options: Any
) -> None:
    """Run *body* with an async client made (and closed) in a fresh event loop."""

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url, **options)
        try:
            await body(client)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_async_store_follows_the_rules(redis_url: str, prefix: str) -> None:
    """The async twin acquires, reports in progress, replays, mismatches and loses leases."""

    async def body(client: redis.asyncio.Redis) -> None:
        store = AsyncRedisIdempotencyStore(client, prefix=prefix, namespace="a")
        assert "AsyncRedisIdempotencyStore(prefix=" in repr(store)
        claim = await store.claim("k", "fp", lease=LONG)
        assert isinstance(claim, Acquired)
        lease = await store.extend(claim.lease, 30.0)
        busy = await store.claim("k", "fp", lease=LONG)
        assert isinstance(busy, InProgress)
        assert 29.0 < busy.retry_after <= 30.0
        await store.complete(lease, BINARY)
        assert Completed("k", "fp", BINARY) == await store.claim("k", "fp", lease=LONG)
        assert Mismatch("k", "fp") == await store.claim("k", "other", lease=LONG)
        for attempt in (store.complete(lease, b"x"), store.release(lease), store.extend(lease, 1)):
            with pytest.raises(LeaseLostError):
                await attempt
        again = await store.claim("j", "fp", lease=LONG)
        assert isinstance(again, Acquired)
        await store.release(again.lease)
        assert 2 == (await acquire_async(store, "j")).fence
        assert 0 == await store.purge_expired()
        await store.close()
        assert await client.ping()

    run_async(redis_url, body)


async def acquire_async(store: AsyncRedisIdempotencyStore, key: str) -> Lease:
    claim = await store.claim(key, "fp", lease=LONG)
    assert isinstance(claim, Acquired), claim
    return claim.lease


def test_async_batches_are_one_round_trip_and_survive_noscript(redis_url: str, prefix: str) -> None:
    """Async claim_many / complete_many cost one round trip, three after a SCRIPT FLUSH."""
    sends = Sends()

    async def body(client: redis.asyncio.Redis) -> None:
        store = AsyncRedisIdempotencyStore(client, prefix=prefix)
        await client.script_flush()
        sends.count = 0
        claims = await store.claim_many([(f"k{i}", "fp") for i in range(50)], lease=LONG)
        assert 3 == sends.count
        leases = [c.lease for c in claims if isinstance(c, Acquired)]
        assert 50 == len(leases)
        sends.count = 0
        assert [True] * 50 == await store.complete_many([(lease, b"r") for lease in leases])
        assert 1 == sends.count
        assert [] == await store.claim_many([], lease=LONG)
        await client.script_flush()
        sends.count = 0
        assert isinstance(await store.claim("single", "fp", lease=LONG), Acquired)
        assert 3 == sends.count

    run_async(redis_url, body, connection_class=sends.async_class(), decode_responses=True)


def test_async_unreachable_redis_is_backend_unavailable() -> None:
    """Connection refused raises BackendUnavailableError in the async twin too."""

    async def main() -> None:
        client = redis.asyncio.Redis(**refused(), retry=AsyncRetry(NoBackoff(), 0))
        store = AsyncRedisIdempotencyStore(client)
        try:
            with pytest.raises(BackendUnavailableError, match=r"AsyncRedisIdempotencyStore\.claim"):
                await store.claim("k", "fp", lease=LONG)
            with pytest.raises(BackendUnavailableError, match=r"\.claim_many"):
                await store.claim_many([("k", "fp")], lease=LONG)
        finally:
            await client.aclose()

    asyncio.run(main())


# -- RedisBackend -------------------------------------------------------------------------------


def test_backend_from_url_hands_out_every_store(redis_url: str, prefix: str) -> None:
    """from_url() makes a backend whose factories share one client and one key prefix."""
    with RedisBackend.from_url(redis_url, prefix=prefix) as backend:
        assert redis_url == backend.url
        idem = backend.idempotency_store("ns")
        assert isinstance(idem, RedisIdempotencyStore)
        assert (f"{prefix}:idem", "ns", backend.client) == (
            idem.prefix,
            idem.namespace,
            idem.client,
        )
        assert 1 == acquire(idem, "k").fence
        assert [f"{prefix}:idem:ns:k".encode()] == list(
            backend.client.scan_iter(match=f"{prefix}:*")
        )
        breaker = backend.breaker_store()
        assert isinstance(breaker, RedisBreakerStore)
        assert f"{prefix}:breaker" == breaker.prefix
        limits = backend.rate_limit_store()
        assert isinstance(limits, RedisRateLimitStore)
        assert f"{prefix}:ratelimit" == limits.prefix
        assert 0 == limits.acquire("b", interval_ns=10**9, capacity_ns=10**9, weight=1)
        closed: list[bool] = []
        backend.client.close = lambda: closed.append(True)  # type: ignore[method-assign]
    assert [True] == closed


def test_backend_async_stores_share_the_records(redis_url: str, prefix: str) -> None:
    """The async factories use a client made on first use; aclose() closes it."""

    async def main() -> None:
        async with RedisBackend(redis_url, prefix=prefix) as backend:
            sync = backend.idempotency_store()
            lease = acquire(sync, "k")
            store = backend.async_idempotency_store()
            assert store.client is backend.async_client
            busy = await store.claim("k", "fp", lease=LONG)
            assert isinstance(busy, InProgress)
            assert lease.fence == busy.fence
            assert isinstance(backend.async_breaker_store(), AsyncRedisBreakerStore)
            limits = backend.async_rate_limit_store()
            assert isinstance(limits, AsyncRedisRateLimitStore)
            assert f"{prefix}:ratelimit" == limits.prefix
            assert 0 == await limits.acquire("b", interval_ns=10**9, capacity_ns=10**9, weight=1)

    asyncio.run(main())


def test_backend_around_clients_owns_nothing(redis_url: str, prefix: str) -> None:
    """Built around a client it closes nothing, names the server, and needs an async client."""
    with redis.Redis.from_url(redis_url) as client:
        backend = RedisBackend(client, prefix=prefix)
        assert backend.url.startswith("redis://")
        with pytest.raises(ConfigurationError, match="async_client"):
            backend.async_idempotency_store()
        backend.close()
        assert client.ping()
        aclient = redis.asyncio.Redis.from_url(redis_url)
        with_async = RedisBackend(client, async_client=aclient, prefix=prefix)
        assert aclient is with_async.async_idempotency_store().client

        async def main() -> None:
            await with_async.aclose()
            assert await aclient.ping()
            await aclient.aclose()

        asyncio.run(main())
        assert client.ping()


def test_backend_urls(redis_url: str) -> None:
    """rediss:// makes a TLS client, the repr hides passwords, other schemes are refused."""
    secure = RedisBackend.from_url("rediss://user:s3cret@example.invalid:6380/2")
    assert "SSL" in secure.client.connection_pool.connection_class.__name__
    assert "s3cret" not in repr(secure)
    assert "RedisBackend(url='rediss://user:***@example.invalid:6380/2'" in repr(secure)
    assert "rediss://localhost:6379/0" == RedisBackend(redis.Redis(ssl=True)).url
    assert (
        "unix:///tmp/r.sock?db=3"
        == RedisBackend(redis.Redis(unix_socket_path="/tmp/r.sock", db=3)).url
    )
    assert redis_url in repr(RedisBackend.from_url(redis_url))
    for bad in ("http://example.invalid", "memory://", "postgresql://u:pw@h/db"):
        with pytest.raises(ConfigurationError) as info:
            RedisBackend.from_url(bad)
        assert "pw" not in str(info.value)
    with pytest.raises(ConfigurationError):
        RedisBackend.from_url(redis_url, prefix="")
