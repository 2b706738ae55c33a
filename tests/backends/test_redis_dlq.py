"""RedisDeadLetterStore, its async twin and RedisBackend's dead-letter factories on a real Redis.

Beyond the contract: the keys a queue leaves, ``decode_responses`` clients, a 1 MiB binary
payload, NOSCRIPT recovery, bounded scans, thread races (distinct ids, one id, the cap),
an unreachable server, two processes on one queue, a random walk compared with the
memory reference store, and a DeadLetterQueue from ``open_backend`` end to end.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

import invresilience.backends.redis as redis_backend
from invresilience import DeadLetterQueue, open_backend
from invresilience._core.dlq import REASONS, Added, DeadLetter, LetterFilter, QueueStats
from invresilience.backends.memory import MemoryDeadLetterStore
from invresilience.backends.redis import (
    DEAD_LETTER_SHA,
    SCAN_CHUNK,
    AsyncRedisDeadLetterStore,
    RedisBackend,
    RedisDeadLetterStore,
)
from invresilience.exceptions import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    DeadLetterQueueFullError,
)
from invresilience.testing import ManualClock
from invresilience.typing import AsyncDeadLetterStore, DeadLetterStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from invresilience.typing import Reason

T0 = 1712345678.1234567
EVERYTHING = LetterFilter()
MIB = 1 << 20


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
def store(client: redis.Redis, prefix: str) -> RedisDeadLetterStore:
    """A sync store of queue ``q`` under the test's prefix."""
    return RedisDeadLetterStore(client, "q", prefix=prefix)


def letter(
    letter_id: str,
    *,
    queue: str = "q",
    payload: bytes = b"{}",
    reason: Reason = "fatal",
    key: str | None = None,
    at: float = T0,
    **fields: Any,
) -> DeadLetter:
    """A letter of *queue* dead-lettered at *at*."""
    return DeadLetter(
        id=letter_id,
        queue=queue,
        payload=payload,
        reason=reason,
        key=key,
        first_failed_at=at,
        last_failed_at=at,
        dead_lettered_at=at,
        **fields,
    )


def keys_of(client: redis.Redis, prefix: str) -> set[str]:
    """Every key under *prefix*, as text."""
    return {key.decode() for key in client.scan_iter(match=f"{prefix}:*", count=1000)}


class Spy:
    """Counts the scripts a client's ``execute_command`` runs; may act after the first.

    Only ``EVALSHA`` calls that ran count: a ``NOSCRIPT`` refusal and the ``SCRIPT LOAD``
    after it do not, so a SCRIPT FLUSH by another test process cannot change the count.
    """

    def __init__(self, client: redis.Redis, after_first: Callable[[], object] | None = None):
        self.calls = 0
        self.refused = 0
        self._real: Callable[..., Any] = client.execute_command
        self._after_first = after_first

    def __call__(self, *args: Any, **options: Any) -> Any:
        try:
            reply = self._real(*args, **options)
        except redis.exceptions.NoScriptError:
            self.refused += 1
            raise
        if args[0] == "EVALSHA":
            self.calls += 1
            if self.calls == 1 and self._after_first is not None:
                self._after_first()
        return reply


def refused() -> dict[str, Any]:
    """Client options for a local port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"host": "127.0.0.1", "port": port, "socket_connect_timeout": 1.0}


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


# -- the keys -----------------------------------------------------------------------------------


def test_the_stores_satisfy_the_protocols(client: redis.Redis, prefix: str) -> None:
    """Both stores are instances of the runtime-checkable dead-letter store Protocols."""
    assert isinstance(RedisDeadLetterStore(client, "q", prefix=prefix), DeadLetterStore)
    aclient = redis.asyncio.Redis()
    assert isinstance(AsyncRedisDeadLetterStore(aclient, "q", prefix=prefix), AsyncDeadLetterStore)


def test_a_queue_is_a_counter_two_indexes_a_reason_hash_and_a_hash_per_letter(
    store: RedisDeadLetterStore, client: redis.Redis, prefix: str
) -> None:
    """Two letters leave exactly the documented keys, all tagged {q}, with the documented fields."""
    store.add(letter("a", reason="fatal", key="k-a", at=T0, headers={"h": "v"}))
    store.add(letter("b", reason="poison", at=T0 + 1))
    base = f"{prefix}:{{q}}:"
    expected = {base + name for name in ("seq", "ids", "at", "reasons", "letter:a", "letter:b")}
    assert expected == keys_of(client, prefix)
    assert b"2" == client.get(base + "seq")
    assert [(b"a", 1.0), (b"b", 2.0)] == client.zrange(base + "ids", 0, -1, withscores=True)
    assert [(b"a", T0), (b"b", T0 + 1)] == client.zrange(base + "at", 0, -1, withscores=True)
    assert {b"fatal": b"1", b"poison": b"1"} == client.hgetall(base + "reasons")
    assert {
        b"id": b"a",
        b"reason": b"fatal",
        b"key": b"k-a",
        b"attempts": b"1",
        b"first_failed_at": repr(T0).encode(),
        b"last_failed_at": repr(T0).encode(),
        b"dead_lettered_at": repr(T0).encode(),
        b"headers": b'{"h":"v"}',
        b"payload": b"{}",
        b"sequence": b"1",
    } == client.hgetall(base + "letter:a")


def test_purging_everything_leaves_only_the_counter(
    store: RedisDeadLetterStore, client: redis.Redis, prefix: str
) -> None:
    """After purge(everything) only <prefix>:{q}:seq remains, and sequences go on from it."""
    for i in range(7):
        store.add(letter(f"l{i}", reason=REASONS[i % len(REASONS)]))
    assert 7 == store.purge(EVERYTHING)
    assert {f"{prefix}:{{q}}:seq"} == keys_of(client, prefix)
    assert QueueStats(total=0) == store.stats()
    assert 8 == store.add(letter("again")).letter.sequence


def test_deleting_every_letter_by_id_leaves_only_the_counter(
    store: RedisDeadLetterStore, client: redis.Redis, prefix: str
) -> None:
    """delete() of every id (and some unknown or invalid ones) removes the indexes too."""
    for i in range(3):
        store.add(letter(f"l{i}"))
    assert 3 == store.delete(["l0", "l1", "l2", "l2", "nope", "bad id!"])
    assert {f"{prefix}:{{q}}:seq"} == keys_of(client, prefix)


def test_queues_and_prefixes_keep_letters_apart(client: redis.Redis, prefix: str) -> None:
    """The same id in two queues, or under two prefixes, is two letters with their own sequences."""
    one = RedisDeadLetterStore(client, "one", prefix=prefix)
    two = RedisDeadLetterStore(client, "one:two", prefix=prefix)
    other = RedisDeadLetterStore(client, "one", prefix=prefix + ":other")
    for store in (one, two, other):
        added = store.add(letter("x", queue=store.queue))
        assert (True, 1) == (added.created, added.letter.sequence)
    assert [1, 1, 1] == [s.count(EVERYTHING) for s in (one, two, other)]


def test_replace_moves_the_reason_count_and_the_time_index(
    store: RedisDeadLetterStore, client: redis.Redis, prefix: str
) -> None:
    """Replacing a letter with another reason and time updates by_reason, oldest and the at index."""
    store.add(letter("a", reason="fatal", at=T0))
    store.add(letter("b", reason="fatal", at=T0 + 10))
    assert store.replace(letter("a", reason="exhausted", at=T0 + 20, attempts=3, key="k"))
    assert (
        QueueStats(total=2, by_reason={"fatal": 1, "exhausted": 1}, oldest=T0 + 10, newest=T0 + 20)
        == store.stats()
    )
    got = store.get("a")
    assert got is not None
    assert (1, 3, "k", "exhausted") == (got.sequence, got.attempts, got.key, got.reason)
    assert T0 + 20 == client.zscore(f"{prefix}:{{q}}:at", "a")
    assert not store.replace(letter("gone"))
    assert store.get("gone") is None


def test_int_times_stay_ints_and_floats_stay_exact(store: RedisDeadLetterStore) -> None:
    """A time given as an int comes back an int; a float needing 17 digits comes back exact."""
    store.add(letter("i", at=1_700_000_000))
    store.add(letter("f", at=T0))
    got = store.get("i")
    assert got is not None
    assert (int, 1_700_000_000) == (type(got.dead_lettered_at), got.dead_lettered_at)
    exact = store.get("f")
    assert exact is not None
    assert T0 == exact.dead_lettered_at
    assert 1_700_000_000 == store.stats().oldest


# -- encodings ----------------------------------------------------------------------------------


def test_decode_responses_clients_read_letters_as_bytes(redis_url: str, prefix: str) -> None:
    """A decode_responses=True client round-trips binary payloads, odd text and stats."""
    payload = bytes(range(256)) + b"\xff\xfe"
    odd = letter(
        "odd",
        payload=payload,
        key="clé-\udcff",
        error_message="bad byte \udcff and é",
        traceback="",
        headers={"tenant": "ü"},
    )
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        store = RedisDeadLetterStore(client, "q", prefix=prefix)
        assert store.add(odd).created
        assert attrs.evolve(odd, sequence=1) == store.get("odd")
        assert [odd.id] == [one.id for one in store.list(LetterFilter(key="clé-\udcff"))]
        assert QueueStats(total=1, by_reason={"fatal": 1}, oldest=T0, newest=T0) == store.stats()
        assert not store.add(odd).created

    async def body(aclient: redis.asyncio.Redis) -> None:
        astore = AsyncRedisDeadLetterStore(aclient, "q", prefix=prefix)
        assert attrs.evolve(odd, sequence=1) == await astore.get("odd")
        assert 1 == await astore.count(LetterFilter(key="clé-\udcff"))

    run_async(redis_url, body, decode_responses=True)


def test_a_binary_payload_of_one_mib_round_trips_byte_for_byte(
    store: RedisDeadLetterStore,
) -> None:
    """1 MiB of random bytes comes back identical from add, get, list and after replace."""
    payload = random.Random(7).randbytes(MIB)
    added = store.add(letter("big", payload=payload))
    assert payload == added.letter.payload
    got = store.get("big")
    assert got is not None
    assert payload == got.payload
    assert [payload] == [one.payload for one in store.list(EVERYTHING)]
    other = payload[::-1]
    assert store.replace(letter("big", payload=other))
    again = store.get("big")
    assert again is not None
    assert (other, 1) == (again.payload, again.sequence)


def test_a_listing_of_large_payloads_takes_several_calls(
    store: RedisDeadLetterStore, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six 1 MiB letters are listed whole, in order, over more than one script call."""
    for i in range(6):
        store.add(letter(f"big{i}", payload=bytes([i]) * MIB))
    spy = Spy(client)
    monkeypatch.setattr(client, "execute_command", spy)
    listed = store.list(EVERYTHING, limit=10)
    assert [bytes([i]) * MIB for i in range(6)] == [one.payload for one in listed]
    assert spy.calls >= 2


# -- scripts and scans --------------------------------------------------------------------------


def test_noscript_is_recovered_even_in_the_middle_of_a_scan(
    store: RedisDeadLetterStore, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SCRIPT FLUSH before an add, and another between two chunks of a count, changes no answer."""
    client.script_flush()
    assert store.add(letter("first")).created
    assert [True] == client.script_exists(DEAD_LETTER_SHA)
    for i in range(SCAN_CHUNK + 10):
        store.add(letter(f"l{i}", key="k" if i % 100 == 0 else None))
    spy = Spy(client, after_first=client.script_flush)
    monkeypatch.setattr(client, "execute_command", spy)
    assert 6 == store.count(LetterFilter(key="k"))
    assert [True] == client.script_exists(DEAD_LETTER_SHA)
    assert (2, True) == (spy.calls, spy.refused >= 1)  # two chunks ran, after a refusal


def test_a_filter_matching_one_letter_in_5000_is_answered_chunk_by_chunk(
    store: RedisDeadLetterStore, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """count/list/purge by key over 5,000 letters find the one needle, each call examining <= 500."""
    total = 5000
    for i in range(total):
        store.add(letter(f"l{i}", key="needle" if i == 4321 else f"k{i}"))
    needle = LetterFilter(key="needle")
    spy = Spy(client)
    monkeypatch.setattr(client, "execute_command", spy)
    assert 1 == store.count(needle)
    chunks = -(-total // SCAN_CHUNK)
    assert chunks <= spy.calls <= chunks + 1
    spy.calls = 0
    assert ["l4321"] == [one.id for one in store.list(needle)]
    assert chunks <= spy.calls <= chunks + 1
    # A listing stops as soon as it has its limit: the first 3 letters cost one call.
    spy.calls = 0
    assert ["l0", "l1", "l2"] == [one.id for one in store.list(EVERYTHING, limit=3)]
    assert 1 == spy.calls
    spy.calls = 0
    assert 1 == store.purge(needle)
    assert chunks <= spy.calls <= chunks + 1
    assert total - 1 == store.count(EVERYTHING)


def test_a_listing_pages_through_the_chunks_in_sequence_order(
    store: RedisDeadLetterStore, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """list(limit=1200) over 1,300 letters returns 1200 in order, from three chunked calls."""
    for i in range(1300):
        store.add(letter(f"l{i}", reason="poison" if i % 2 else "fatal"))
    spy = Spy(client)
    monkeypatch.setattr(client, "execute_command", spy)
    listed = store.list(EVERYTHING, limit=1200)
    assert list(range(1, 1201)) == [one.sequence for one in listed]
    assert 3 == spy.calls
    poison = store.list(LetterFilter(reasons=frozenset({"poison"})), after=600, limit=400)
    assert list(range(602, 1301, 2)) == [one.sequence for one in poison]


def test_counts_by_reason_or_by_time_alone_cost_one_call(
    store: RedisDeadLetterStore, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything, reasons alone and a time range alone are counted from the indexes, one call each."""
    for i in range(1200):
        store.add(letter(f"l{i}", reason=REASONS[i % 3], at=T0 + i))
    spy = Spy(client)
    monkeypatch.setattr(client, "execute_command", spy)
    assert 1200 == store.count(EVERYTHING)
    assert 800 == store.count(LetterFilter(reasons=frozenset({REASONS[0], REASONS[1]})))
    assert 100 == store.count(LetterFilter(since=T0 + 100, before=T0 + 200))
    assert 3 == spy.calls
    assert 0 == store.count(LetterFilter(reasons=frozenset()))
    assert 3 == spy.calls
    spy.calls = 0
    assert 1100 == store.purge(LetterFilter(before=T0 + 1100))
    assert 3 == spy.calls  # 500, 500, then 100: the last short chunk ends it
    assert 100 == store.count(EVERYTHING)


def test_answers_equal_the_memory_store_with_tiny_chunks(
    client: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,500 random operations, scanned 3 letters per call, answer exactly as the memory store."""
    monkeypatch.setattr(redis_backend, "SCAN_CHUNK", 3)
    monkeypatch.setattr(redis_backend, "_LIST_BYTES", 4)
    rnd = random.Random(2024)
    times = [T0, T0 + 0.5, 1_700_000_000, T0 + 2]

    def some_letter() -> DeadLetter:
        at = rnd.choice(times)
        return letter(
            f"id{rnd.randrange(30)}",
            payload=rnd.randbytes(rnd.randrange(6)),
            reason=rnd.choice(REASONS),
            key=rnd.choice([None, "k1", "k2", ""]),
            fingerprint=rnd.choice([None, "fp"]),
            attempts=rnd.randrange(4),
            at=at,
            headers=rnd.choice([{}, {"a": "b"}]),
        )

    def some_filter() -> LetterFilter:
        reasons = rnd.choice([None, frozenset(), frozenset(rnd.sample(REASONS, 2))])
        return LetterFilter(
            reasons=reasons,
            key=rnd.choice([None, None, "k1", ""]),
            since=rnd.choice([None, T0 + 0.5]),
            before=rnd.choice([None, T0 + 2, 1_700_000_001]),
        )

    memory = MemoryDeadLetterStore("q")
    redis_store = RedisDeadLetterStore(client, "q", prefix=prefix)

    def some_operation() -> tuple[str, tuple[Any, ...]]:
        kind = rnd.choice(["add", "add", "add", "get", "list", "count", "stats", "replace"])
        kind = rnd.choice([kind, kind, kind, "delete", "purge"])
        if kind == "add":
            return kind, (some_letter(), rnd.choice([None, 8, 15]), rnd.random() < 0.5)
        if kind in ("get", "delete"):
            ids = [f"id{rnd.randrange(30)}" for _ in range(3)]
            return kind, (ids[0],) if kind == "get" else (ids,)
        if kind in ("list", "count", "purge"):
            return kind, (some_filter(), rnd.randrange(40), rnd.randrange(1, 8))
        return kind, (some_letter(),) if kind == "replace" else ()

    def answer(store: Any, kind: str, args: tuple[Any, ...]) -> Any:
        try:
            if kind == "add":
                return store.add(args[0], max_letters=args[1], evict_oldest=args[2])
            if kind == "list":
                return store.list(args[0], after=args[1], limit=args[2])
            if kind in ("count", "purge"):
                return getattr(store, kind)(args[0])
            return getattr(store, kind)(*args)
        except DeadLetterQueueFullError as exc:
            return ("full", exc.limit)

    for step in range(1500):
        kind, args = some_operation()
        if kind == "purge" and rnd.random() < 0.6:
            continue
        expected = answer(memory, kind, args)
        assert expected == answer(redis_store, kind, args), f"step {step}: {kind}{args}"
    assert memory.stats() == redis_store.stats()


def test_extreme_time_bounds_select_what_the_memory_store_selects(
    store: RedisDeadLetterStore,
) -> None:
    """Infinite, NaN, huge-int and tiny bounds answer list, count and purge exactly as memory does."""
    memory = MemoryDeadLetterStore("q")
    for i, at in enumerate((-1e308, 0, T0, 1e308)):
        for target in (store, memory):
            target.add(letter(f"l{i}", at=at, reason="poison" if i % 2 else "fatal"))
    bounds = (None, math.inf, -math.inf, math.nan, 10**400, -(10**400), 1e308, -1e308, 0, T0)
    for since in bounds:
        for before in bounds:
            for reasons in (None, frozenset({"poison"})):
                where = LetterFilter(reasons=reasons, since=since, before=before)  # type: ignore[arg-type]
                assert memory.list(where) == store.list(where), where
                assert memory.count(where) == store.count(where), where
    where = LetterFilter(since=-math.inf, before=10**400)
    assert (4, 4) == (memory.purge(where), store.purge(where))


# -- races --------------------------------------------------------------------------------------


def race(threads: int, work: Callable[[int], None]) -> None:
    """Run *work(index)* in *threads* threads released together; re-raise the first failure."""
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def run(index: int) -> None:
        start.wait()
        try:
            work(index)
        except BaseException as exc:  # noqa: BLE001 -- reported below
            failures.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if failures:
        raise failures[0]


def test_eight_threads_adding_200_distinct_letters_each_store_all(
    store: RedisDeadLetterStore,
) -> None:
    """8 threads x 200 distinct ids: 1,600 letters, sequences exactly 1..1600, none shared."""
    results: list[Added] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        mine = [store.add(letter(f"t{index}-{i}")) for i in range(200)]
        with lock:
            results.extend(mine)

    race(8, work)
    assert all(added.created for added in results)
    assert list(range(1, 1601)) == sorted(added.letter.sequence for added in results)
    assert 1600 == store.count(EVERYTHING)
    assert list(range(1, 1601)) == [one.sequence for one in store.list(EVERYTHING, limit=2000)]


def test_eight_threads_adding_one_id_create_it_once(store: RedisDeadLetterStore) -> None:
    """The same id from 8 threads at once: one created, seven told it exists, one letter stored."""
    results: list[Added] = []

    def work(index: int) -> None:
        results.append(store.add(letter("same", payload=f"thread {index}".encode())))

    race(8, work)
    created = [added for added in results if added.created]
    assert 1 == len(created)
    assert [created[0].letter] * 8 == [added.letter for added in results]
    assert 1 == store.count(EVERYTHING)


def test_the_cap_is_exact_under_a_race(client: redis.Redis, prefix: str) -> None:
    """8 threads x 20 adds against max_letters=50: 50 stored, 110 refused; evicting keeps the newest 50."""
    reject = RedisDeadLetterStore(client, "reject", prefix=prefix)
    refusals: list[int] = []

    def refuse(index: int) -> None:
        for i in range(20):
            try:
                reject.add(letter(f"t{index}-{i}", queue="reject"), max_letters=50)
            except DeadLetterQueueFullError as exc:
                refusals.append(exc.limit)

    race(8, refuse)
    assert ([50] * 110, 50) == (refusals, reject.count(EVERYTHING))

    evict = RedisDeadLetterStore(client, "evict", prefix=prefix)
    evicted: list[str] = []

    def crowd(index: int) -> None:
        for i in range(20):
            added = evict.add(
                letter(f"t{index}-{i}", queue="evict"), max_letters=50, evict_oldest=True
            )
            evicted.extend(added.evicted)

    race(8, crowd)
    kept = evict.list(EVERYTHING, limit=1000)
    assert list(range(111, 161)) == [one.sequence for one in kept]
    assert 110 == len(set(evicted))
    assert set() == set(evicted) & {one.id for one in kept}


# -- errors -------------------------------------------------------------------------------------


def test_bad_arguments_are_refused_before_any_io(client: redis.Redis, prefix: str) -> None:
    """Bad queues, prefixes, letters, caps and limits raise ConfigurationError without a command."""
    for bad_queue in ("", "has space", "x" * 101, None):
        with pytest.raises(ConfigurationError, match="queue"):
            RedisDeadLetterStore(client, bad_queue, prefix=prefix)  # type: ignore[arg-type]
    for bad_prefix in ("", "a{}b", "x" * 201, "new\nline"):
        with pytest.raises(ConfigurationError, match="prefix"):
            RedisDeadLetterStore(client, "q", prefix=bad_prefix)
    offline = RedisDeadLetterStore(redis.Redis(**refused()), "q", prefix=prefix)
    with pytest.raises(ConfigurationError, match=r"letter\.queue"):
        offline.add(letter("a", queue="other"))
    with pytest.raises(ConfigurationError, match="max_letters"):
        offline.add(letter("a"), max_letters=0)
    with pytest.raises(ConfigurationError, match="limit"):
        offline.list(EVERYTHING, limit=0)
    assert offline.get("not a valid id") is None
    assert 0 == offline.delete(["not a valid id"])
    assert [] == offline.list(LetterFilter(reasons=frozenset()))


def test_unreachable_redis_is_backend_unavailable_quickly(prefix: str) -> None:
    """Connection refused raises BackendUnavailableError naming the operation, chained, within 2 s."""
    store = RedisDeadLetterStore(
        redis.Redis(**refused(), retry=Retry(NoBackoff(), 0)), "q", prefix=prefix
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=r"RedisDeadLetterStore\.add:") as info:
        store.add(letter("a"))
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    for name, call in (
        ("list", lambda: store.list(LetterFilter(key="k"))),
        ("count", lambda: store.count(EVERYTHING)),
        ("stats", store.stats),
        ("purge", lambda: store.purge(EVERYTHING)),
    ):
        with pytest.raises(BackendUnavailableError, match=rf"\.{name}:"):
            call()
    assert time.monotonic() - started < 2.0


def test_async_unreachable_redis_is_backend_unavailable(prefix: str) -> None:
    """The async twin raises BackendUnavailableError too, chained to the driver's error."""

    async def main() -> None:
        client = redis.asyncio.Redis(**refused(), retry=AsyncRetry(NoBackoff(), 0))
        store = AsyncRedisDeadLetterStore(client, "q", prefix=prefix)
        try:
            with pytest.raises(BackendUnavailableError, match=r"AsyncRedisDeadLetterStore\.get"):
                await store.get("a")
            with pytest.raises(BackendUnavailableError) as info:
                await store.list(LetterFilter(key="k"))
            assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_other_redis_errors_are_backend_errors(
    store: RedisDeadLetterStore, client: redis.Redis, prefix: str
) -> None:
    """An index key of the wrong type raises BackendError (not unavailable), chained."""
    client.set(f"{prefix}:{{q}}:ids", "a string")
    with pytest.raises(BackendError, match=r"RedisDeadLetterStore\.add") as info:
        store.add(letter("a"))
    assert not isinstance(info.value, BackendUnavailableError)
    assert isinstance(info.value.__cause__, redis.exceptions.ResponseError)


def test_a_malformed_letter_hash_is_a_backend_error(
    store: RedisDeadLetterStore, client: redis.Redis, prefix: str
) -> None:
    """A letter hash missing its fields (written by hand) raises BackendError on read."""
    store.add(letter("a"))
    client.hdel(f"{prefix}:{{q}}:letter:a", "attempts")
    with pytest.raises(BackendError, match="malformed"):
        store.get("a")


# -- async ------------------------------------------------------------------------------------


def test_async_store_shares_the_letters_and_recovers_noscript(
    redis_url: str, store: RedisDeadLetterStore, prefix: str
) -> None:
    """The async twin sees the sync store's letters, survives SCRIPT FLUSH, and chunks its scans."""
    for i in range(SCAN_CHUNK + 5):
        store.add(letter(f"l{i}", key="k" if i == SCAN_CHUNK + 2 else None))

    async def body(client: redis.asyncio.Redis) -> None:
        astore = AsyncRedisDeadLetterStore(client, "q", prefix=prefix)
        assert "AsyncRedisDeadLetterStore('q', prefix=" in repr(astore)
        await client.script_flush()
        assert [f"l{SCAN_CHUNK + 2}"] == [
            one.id for one in await astore.list(LetterFilter(key="k"))
        ]
        added = await astore.add(letter("async"))
        assert (True, SCAN_CHUNK + 6) == (added.created, added.letter.sequence)
        assert SCAN_CHUNK + 6 == (await astore.stats()).total
        assert await astore.replace(letter("async", reason="manual"))
        assert 1 == await astore.delete(["async"])
        assert SCAN_CHUNK + 5 == await astore.purge(EVERYTHING)
        await astore.close()
        assert await client.ping()

    run_async(redis_url, body)
    assert 0 == store.count(EVERYTHING)


# -- processes and the backend ------------------------------------------------------------------

CHILD = """
import json, sys
import redis
from invresilience._core.dlq import DeadLetter
from invresilience.backends.redis import RedisDeadLetterStore

url, prefix = sys.argv[1], sys.argv[2]
with redis.Redis.from_url(url) as client:
    store = RedisDeadLetterStore(client, "shared", prefix=prefix)
    seen = store.get("parent")
    added = store.add(DeadLetter(id="child", queue="shared", payload=b"\\x00child", reason="poison",
                                 first_failed_at=1.0, last_failed_at=1.0, dead_lettered_at=1.0))
    print(json.dumps({"payload": seen.payload.hex(), "sequence": seen.sequence,
                      "child": added.letter.sequence}))
"""


def test_two_processes_see_one_queue(redis_url: str, client: redis.Redis, prefix: str) -> None:
    """A letter added here is read by another Python process, and the one it adds is read here."""
    store = RedisDeadLetterStore(client, "shared", prefix=prefix)
    store.add(letter("parent", queue="shared", payload=b"\xffparent"))
    src = os.path.join(os.path.dirname(redis_backend.__file__), "..", "..")
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, redis_url, prefix],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert {"payload": b"\xffparent".hex(), "sequence": 1, "child": 2} == json.loads(done.stdout)
    child = store.get("child")
    assert child is not None
    assert (b"\x00child", "poison", 2) == (child.payload, child.reason, child.sequence)


def test_a_dead_letter_queue_from_open_backend_end_to_end(redis_url: str) -> None:
    """open_backend(url).dead_letter_queue: put, list, count, stats, redrive, purge on real Redis."""
    queue = f"e2e-{uuid.uuid4().hex}"
    clock = ManualClock(wall_start=1_700_000_000.0)
    backend = open_backend(redis_url)
    assert isinstance(backend, RedisBackend)
    try:
        dlq = backend.dead_letter_queue(queue, clock=clock, max_letters=10)
        assert isinstance(dlq, DeadLetterQueue)
        assert isinstance(dlq.store, RedisDeadLetterStore)
        assert "invresilience:dlq" == dlq.store.prefix
        first = dlq.put({"order": 1}, reason="fatal", error=ValueError("boom"), key="order-1")
        clock.advance(5.0)
        second = dlq.put({"order": 2}, reason="exhausted", attempts=3)
        assert (1, 2) == (first.sequence, second.sequence)
        assert first == dlq.put({"order": 1}, reason="fatal", id=first.id)
        page = dlq.list(limit=1)
        assert ((first,), page.cursor is not None) == (page.letters, True)
        assert (second,) == dlq.list(cursor=page.cursor).letters
        assert {"order": 1} == dlq.decode(first)
        assert "builtins.ValueError" == first.error_type
        assert 1 == dlq.count(reason="exhausted")
        assert (
            QueueStats(
                total=2,
                by_reason={"fatal": 1, "exhausted": 1},
                oldest=1_700_000_000.0,
                newest=1_700_000_005.0,
            )
            == dlq.stats()
        )
        handled: list[Any] = []
        report = dlq.redrive(lambda one: handled.append(dlq.decode(one)), reason="fatal")
        assert ((first.id,), [{"order": 1}]) == (report.redriven, handled)
        assert 1 == dlq.purge(everything=True)
        assert 0 == dlq.count()
        for i in range(10):
            dlq.put({"n": i})
        with pytest.raises(DeadLetterQueueFullError):
            dlq.put({"n": 10})
        assert 10 == dlq.purge(everything=True)
    finally:
        for key in backend.client.scan_iter(match=f"invresilience:dlq:{{{queue}}}:*"):
            backend.client.delete(key)
        backend.close()


def test_backend_factories_share_the_letters(redis_url: str, prefix: str) -> None:
    """The four dead-letter factories use the backend's clients and <prefix>:dlq."""

    async def main() -> None:
        async with RedisBackend(redis_url, prefix=prefix) as backend:
            store = backend.dead_letter_store("orders")
            assert (f"{prefix}:dlq", "orders", backend.client) == (
                store.prefix,
                store.queue,
                store.client,
            )
            store.add(letter("a", queue="orders"))
            astore = backend.async_dead_letter_store("orders")
            assert astore.client is backend.async_client
            assert ["a"] == [one.id for one in await astore.list(EVERYTHING)]
            aqueue = backend.async_dead_letter_queue("orders", max_letters=None)
            assert 1 == await aqueue.count()
            queue = backend.dead_letter_queue("orders")
            assert queue.get("a") == store.get("a")
            assert {
                f"{prefix}:dlq:{{orders}}:{name}" for name in ("seq", "ids", "at", "reasons")
            } | {f"{prefix}:dlq:{{orders}}:letter:a"} == keys_of(backend.client, prefix)
            with pytest.raises(ConfigurationError, match="queue"):
                backend.dead_letter_store("no spaces")

    asyncio.run(main())
