"""The SQLite idempotency store: rules, batches, schema, transactions, errors, URLs."""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invresilience._core.idempotency import Acquired, Completed, InProgress, Lease, Mismatch
from invresilience.backends import sqlite as sqlite_backend
from invresilience.backends.memory import MemoryIdempotencyStore
from invresilience.backends.sqlite import (
    SCHEMA_VERSION,
    AsyncSqliteIdempotencyStore,
    SqliteBackend,
    SqliteIdempotencyStore,
    SqliteTransaction,
)
from invresilience.exceptions import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    IdempotencyError,
    LeaseLostError,
)
from invresilience.testing import ManualClock
from invresilience.typing import AsyncIdempotencyStore, IdempotencyStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from invresilience._core.idempotency import Claim

LONG = 60.0
KEEP = 3600.0
T0 = ManualClock().wall()


@pytest.fixture
def clock() -> ManualClock:
    """A clock the test moves."""
    return ManualClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A database file of this test's own."""
    return tmp_path / "idem.db"


@pytest.fixture
def store(path: Path, clock: ManualClock) -> Iterator[SqliteIdempotencyStore]:
    """A store on the test's file and clock."""
    with SqliteIdempotencyStore(path, clock=clock) as opened:
        yield opened


def acquire(
    store: SqliteIdempotencyStore,
    key: str,
    fingerprint: str = "fp",
    *,
    lease: float = LONG,
    ttl: float = KEEP,
) -> Lease:
    claim = store.claim(key, fingerprint, lease=lease, ttl=ttl)
    assert isinstance(claim, Acquired), claim
    return claim.lease


def row(path: Path, key: str, table: str = "invresilience_idempotency") -> tuple[Any, ...] | None:
    """The stored row of *key*, read through a connection of its own."""
    with sqlite3.connect(path) as connection:
        found = connection.execute(
            f'SELECT state, fence, token, lease_until, expires_at, result FROM {table} WHERE "key" = ?',
            (key,),
        ).fetchone()
    connection.close()
    return None if found is None else tuple(found)


def refuse_key(path: Path, key: str) -> None:
    """Make every write of *key* fail inside SQLite (a trigger aborts it)."""
    connection = sqlite3.connect(path, isolation_level=None)
    for event in ("INSERT", "UPDATE"):
        connection.execute(
            f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON invresilience_idempotency"
            f" WHEN NEW.\"key\" = '{key}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    connection.close()


# -- the rules ----------------------------------------------------------------------------------


def test_first_claim_acquires_fence_one(store: SqliteIdempotencyStore, path: Path) -> None:
    """The first claim acquires fence 1 with a fresh 32-hex-digit token, stored pending."""
    lease = acquire(store, "k", lease=30.0, ttl=100.0)
    assert ("k", 1, "fp", 30.0) == (lease.key, lease.fence, lease.fingerprint, lease.duration)
    assert 32 == len(lease.token)
    int(lease.token, 16)
    assert ("pending", 1, lease.token, T0 + 30.0, T0 + 100.0, None) == row(path, "k")


def test_expiry_is_at_least_the_lease(store: SqliteIdempotencyStore, path: Path) -> None:
    """A ttl shorter than the lease keeps the record for the whole lease."""
    acquire(store, "k", lease=50.0, ttl=10.0)
    stored = row(path, "k")
    assert stored is not None
    assert T0 + 50.0 == stored[4]


def test_running_lease_is_in_progress(store: SqliteIdempotencyStore, clock: ManualClock) -> None:
    """While the lease runs, a claim is in progress until its exact end."""
    lease = acquire(store, "k", lease=30.0)
    clock.advance(10.0)
    assert InProgress("k", lease.fence, 20.0) == store.claim("k", "fp", lease=LONG)


def test_completed_replays(store: SqliteIdempotencyStore, path: Path) -> None:
    """A completed key replays its bytes, and the record keeps the completion's ttl."""
    lease = acquire(store, "k")
    store.complete(lease, bytearray(b"\x00done"), ttl=500.0)  # type: ignore[arg-type]
    assert Completed("k", "fp", b"\x00done") == store.claim("k", "fp", lease=LONG)
    assert ("completed", 1, lease.token, 0.0, T0 + 500.0, b"\x00done") == row(path, "k")


def test_empty_result_round_trips(store: SqliteIdempotencyStore) -> None:
    """An empty result replays as empty bytes, not None."""
    store.complete(acquire(store, "k"), b"")
    assert Completed("k", "fp", b"") == store.claim("k", "fp", lease=LONG)


@pytest.mark.parametrize("state", ["pending", "completed", "released"])
def test_mismatch_in_every_state(store: SqliteIdempotencyStore, path: Path, state: str) -> None:
    """Another fingerprint on a live key is a mismatch that changes nothing."""
    lease = acquire(store, "k")
    if state == "completed":
        store.complete(lease, b"r")
    elif state == "released":
        store.release(lease)
    before = row(path, "k")
    assert Mismatch("k", "fp") == store.claim("k", "other", lease=LONG)
    assert before == row(path, "k")


def test_expired_lease_is_reclaimed_with_a_higher_fence(
    store: SqliteIdempotencyStore, clock: ManualClock, path: Path
) -> None:
    """After the lease ran out a claim takes over; the stale lease changes nothing."""
    old = acquire(store, "k", lease=5.0)
    clock.advance(5.0)
    new = acquire(store, "k", lease=LONG)
    assert 2 == new.fence
    assert new.token != old.token
    before = row(path, "k")
    for attempt in (
        lambda: store.complete(old, b"late"),
        lambda: store.release(old),
        lambda: store.extend(old, LONG),
    ):
        with pytest.raises(LeaseLostError) as caught:
            attempt()
        assert ("k", 1) == (caught.value.key, caught.value.fence)
    assert [False] == store.complete_many([(old, b"late")])
    assert before == row(path, "k")
    store.complete(new, b"fresh")
    assert Completed("k", "fp", b"fresh") == store.claim("k", "fp", lease=LONG)


def test_expired_lease_nobody_took_over_completes(
    store: SqliteIdempotencyStore, clock: ManualClock
) -> None:
    """A lease past its time still completes while nobody claimed the key."""
    lease = acquire(store, "k", lease=5.0, ttl=KEEP)
    clock.advance(100.0)
    store.complete(lease, b"late")
    assert Completed("k", "fp", b"late") == store.claim("k", "fp", lease=LONG)


def test_release_frees_the_key(store: SqliteIdempotencyStore, path: Path) -> None:
    """After release the record is released and the next claim gets fence 2."""
    lease = acquire(store, "k")
    store.release(lease)
    stored = row(path, "k")
    assert stored is not None
    assert ("released", 1, 0.0) == (stored[0], stored[1], stored[3])
    assert 2 == acquire(store, "k").fence


def test_extend_moves_the_lease_and_the_expiry(
    store: SqliteIdempotencyStore, clock: ManualClock, path: Path
) -> None:
    """extend() runs the lease from now and stretches a shorter expiry to cover it."""
    lease = acquire(store, "k", lease=5.0, ttl=10.0)
    clock.advance(3.0)
    extended = store.extend(lease, 100.0)
    assert Lease("k", 1, lease.token, "fp", 100.0) == extended
    stored = row(path, "k")
    assert stored is not None
    assert (T0 + 103.0, T0 + 103.0) == (stored[3], stored[4])
    clock.advance(50.0)
    assert InProgress("k", 1, 50.0) == store.claim("k", "fp", lease=LONG)


def test_retention_keeps_the_fence_until_purged(
    store: SqliteIdempotencyStore, clock: ManualClock
) -> None:
    """A record past its ttl is free for any payload, with the fence continuing until purged."""
    store.complete(acquire(store, "k"), b"r", ttl=10.0)
    clock.advance(10.0)
    again = acquire(store, "k", "other", lease=1.0, ttl=1.0)
    assert 2 == again.fence
    clock.advance(1.0)
    assert 1 == store.purge_expired()
    assert 1 == acquire(store, "k").fence


def test_purge_respects_limit_and_namespace(
    path: Path, clock: ManualClock, store: SqliteIdempotencyStore
) -> None:
    """purge_expired() deletes at most limit expired rows, only in its namespace."""
    other = SqliteIdempotencyStore(path, namespace="other", clock=clock)
    for key in ("a", "b", "c"):
        store.complete(acquire(store, key), b"r", ttl=1.0)
    store.complete(acquire(store, "live"), b"r", ttl=KEEP)
    other.complete(acquire(other, "a"), b"r", ttl=1.0)
    clock.advance(1.0)
    assert 2 == store.purge_expired(2)
    assert 1 == store.purge_expired(2)
    assert 0 == store.purge_expired()
    assert Completed("live", "fp", b"r") == store.claim("live", "fp", lease=LONG)
    assert 1 == other.purge_expired()
    other.close()


def test_a_memory_database_works(clock: ManualClock) -> None:
    """':memory:' is a private database that follows the same rules."""
    with SqliteIdempotencyStore(":memory:", clock=clock) as private:
        lease = acquire(private, "k")
        private.complete(lease, b"r")
        assert Completed("k", "fp", b"r") == private.claim("k", "fp", lease=LONG)


# -- the same answers as the reference store ------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("claim"), st.sampled_from("ab"), st.sampled_from(["f1", "f2"])),
        st.tuples(st.just("complete"), st.sampled_from("ab"), st.just("")),
        st.tuples(st.just("release"), st.sampled_from("ab"), st.just("")),
        st.tuples(st.just("extend"), st.sampled_from("ab"), st.just("")),
        st.tuples(st.just("advance"), st.sampled_from(["3", "7", "20"]), st.just("")),
        st.tuples(st.just("purge"), st.just(""), st.just("")),
    ),
    max_size=30,
)


def _plain(value: object) -> object:
    """*value* with tokens left out, which differ between any two stores."""
    if isinstance(value, Acquired):
        value = value.lease
    if isinstance(value, Lease):
        return ("lease", value.key, value.fence, value.fingerprint, value.duration)
    return value


def _step(target: IdempotencyStore, leases: dict[str, Lease], op: str, key: str, fp: str) -> object:
    try:
        if op == "claim":
            claim = target.claim(key, fp, lease=5.0, ttl=10.0)
            if isinstance(claim, Acquired):
                leases[key] = claim.lease
            return _plain(claim)
        if op == "purge":
            return target.purge_expired()
        lease = leases.get(key)
        if lease is None:
            return None
        if op == "complete":
            return target.complete_many([(lease, b"r:" + key.encode())], ttl=10.0)
        if op == "release":
            target.release(lease)
            return None
        return _plain(target.extend(lease, 8.0))
    except LeaseLostError as exc:
        return ("lost", exc.key, exc.fence)


@given(_OPS)
def test_answers_like_the_memory_store(ops: list[tuple[str, str, str]]) -> None:
    """Any sequence of calls gets the memory store's answers, tokens aside."""
    clock = ManualClock()
    reference = MemoryIdempotencyStore(clock=clock)
    with SqliteIdempotencyStore(":memory:", clock=clock) as subject:
        mine: dict[str, Lease] = {}
        theirs: dict[str, Lease] = {}
        for op, key, fp in ops:
            if op == "advance":
                clock.advance(float(key))
                continue
            assert _step(reference, theirs, op, key, fp) == _step(subject, mine, op, key, fp)


# -- batches --------------------------------------------------------------------------------------


def test_claim_many_answers_in_order(store: SqliteIdempotencyStore) -> None:
    """claim_many() answers like claim(), in order; a repeated key is then in progress."""
    done = acquire(store, "done")
    store.complete(done, b"r")
    acquire(store, "other", "fp-other")
    claims = store.claim_many(
        [("new", "fp"), ("done", "fp"), ("other", "fp"), ("twice", "fp"), ("twice", "fp")],
        lease=LONG,
    )
    assert isinstance(claims[0], Acquired)
    assert Completed("done", "fp", b"r") == claims[1]
    assert Mismatch("other", "fp-other") == claims[2]
    assert isinstance(claims[3], Acquired)
    assert InProgress("twice", claims[3].lease.fence, LONG) == claims[4]
    assert [] == store.claim_many([], lease=LONG)


def test_claim_many_is_one_transaction(store: SqliteIdempotencyStore, path: Path) -> None:
    """When one write of a batch fails, none of the batch is kept."""
    refuse_key(path, "bad")
    with pytest.raises(BackendError, match="refused") as caught:
        store.claim_many([("good", "fp"), ("bad", "fp")], lease=LONG)
    assert not isinstance(caught.value, BackendUnavailableError)
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert row(path, "good") is None
    assert 1 == acquire(store, "good").fence


def test_complete_many_reports_and_rolls_back(store: SqliteIdempotencyStore, path: Path) -> None:
    """complete_many() reports lost leases as False, and a failed write undoes the batch."""
    first, gone = acquire(store, "a"), acquire(store, "gone")
    store.release(gone)
    assert [True, False, False] == store.complete_many([(first, b"1"), (gone, b"x"), (first, b"2")])
    assert Completed("a", "fp", b"1") == store.claim("a", "fp", lease=LONG)
    second, bad = acquire(store, "b"), acquire(store, "bad")
    refuse_key(path, "bad")
    with pytest.raises(BackendError):
        store.complete_many([(second, b"2"), (bad, b"x")])
    stored = row(path, "b")
    assert stored is not None
    assert "pending" == stored[0]
    assert [] == store.complete_many([])


# -- arguments ------------------------------------------------------------------------------------


def test_bad_operation_arguments(store: SqliteIdempotencyStore) -> None:
    """Bad keys, payloads, durations, leases and limits are refused, naming the field."""
    lease = acquire(store, "k")
    not_a_lease: Any = "not a lease"
    cases: list[tuple[str, Any]] = [
        ("key", lambda: store.claim("", "fp", lease=LONG)),
        ("key", lambda: store.claim("k\ud800", "fp", lease=LONG)),
        ("fingerprint", lambda: store.claim("k", "fp\udfff", lease=LONG)),
        ("key", lambda: store.claim_many([("k\ud800", "fp")], lease=LONG)),
        ("fingerprint", lambda: store.claim_many([("k", "f\ud800")], lease=LONG)),
        ("lease", lambda: store.claim("k", "fp", lease=0)),
        ("ttl", lambda: store.complete(lease, b"r", ttl=math.nan)),
        ("seconds", lambda: store.extend(lease, math.inf)),
        ("lease", lambda: store.release(not_a_lease)),
        ("lease", lambda: store.complete_many([(not_a_lease, b"r")])),
        ("lease", lambda: store.transaction(not_a_lease)),
        ("limit", lambda: store.purge_expired(0)),
    ]
    for field, call in cases:
        with pytest.raises(ConfigurationError) as caught:
            call()
        assert field == caught.value.field
    store.complete(lease, b"r")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"path": ""}, "path"),
        ({"path": b"idem.db"}, "path"),
        ({"path": None}, "path"),
        ({"path": "a\x00b"}, "path"),
        ({"namespace": "has space"}, "namespace"),
        ({"table_prefix": "1abc"}, "table_prefix"),
        ({"table_prefix": "a-b"}, "table_prefix"),
        ({"table_prefix": 'x"; DROP TABLE t; --'}, "table_prefix"),
        ({"table_prefix": "x" * 42}, "table_prefix"),
        ({"table_prefix": "sqlite"}, "table_prefix"),
        ({"table_prefix": "SQLite_mine"}, "table_prefix"),
        ({"table_prefix": 7}, "table_prefix"),
        ({"durability": "extra"}, "durability"),
        ({"busy_timeout": -1.0}, "busy_timeout"),
        ({"busy_timeout": math.nan}, "busy_timeout"),
        ({"busy_timeout": True}, "busy_timeout"),
    ],
)
def test_bad_constructor_arguments(tmp_path: Path, kwargs: dict[str, Any], field: str) -> None:
    """Invalid constructor arguments raise ConfigurationError naming the field."""
    arguments: dict[str, Any] = {"path": tmp_path / "x.db", **kwargs}
    with pytest.raises(ConfigurationError) as caught:
        SqliteIdempotencyStore(**arguments)
    assert f"SqliteIdempotencyStore.{field}" == caught.value.field


def test_prefix_edge_cases_are_accepted(tmp_path: Path) -> None:
    """An underscore start, 41 characters and 'sqlitex' are valid prefixes."""
    for prefix in ("_p", "p" * 41, "sqlitex"):
        SqliteIdempotencyStore(tmp_path / "x.db", table_prefix=prefix, busy_timeout=0).close()


# -- the schema -----------------------------------------------------------------------------------


def test_schema_is_created_and_versioned(store: SqliteIdempotencyStore, path: Path) -> None:
    """The first store writes the schema version and the expiry index."""
    with sqlite3.connect(path) as connection:
        version = connection.execute(
            "SELECT component, version FROM invresilience_schema"
        ).fetchall()
        names = {
            name for (name,) in connection.execute("SELECT name FROM sqlite_master").fetchall()
        }
    connection.close()
    assert [("idempotency", SCHEMA_VERSION)] == version
    assert {"invresilience_idempotency_expires", "invresilience_idempotency"} <= names


def test_a_future_schema_is_refused(path: Path, clock: ManualClock) -> None:
    """A database recorded at a newer schema version raises BackendError, naming it."""
    SqliteIdempotencyStore(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE invresilience_schema SET version = ? WHERE component = 'idempotency'",
            (SCHEMA_VERSION + 1,),
        )
    connection.close()
    with pytest.raises(BackendError, match=f"version {SCHEMA_VERSION + 1}.*upgrade"):
        SqliteIdempotencyStore(path, clock=clock)
    # Another prefix is a separate schema, and works.
    with SqliteIdempotencyStore(path, table_prefix="v2", clock=clock) as separate:
        acquire(separate, "k")


def test_records_survive_reopening(path: Path, clock: ManualClock) -> None:
    """A store opened later on the file finds the records, and leaves the schema alone."""
    with SqliteIdempotencyStore(path, clock=clock) as first:
        first.complete(acquire(first, "k"), b"kept")
    with SqliteIdempotencyStore(path, clock=clock) as second:
        assert Completed("k", "fp", b"kept") == second.claim("k", "fp", lease=LONG)


def test_prefixes_and_namespaces_are_separate(path: Path, clock: ManualClock) -> None:
    """Another table prefix or namespace on one file sees none of the records."""
    with (
        SqliteIdempotencyStore(path, clock=clock) as base,
        SqliteIdempotencyStore(path, table_prefix="other", clock=clock) as prefixed,
        SqliteIdempotencyStore(path, namespace="tenant-2", clock=clock) as spaced,
    ):
        acquire(base, "k")
        assert 1 == acquire(prefixed, "k").fence
        assert 1 == acquire(spaced, "k").fence
        assert row(path, "k", table="other_idempotency") is not None


def test_connection_settings(path: Path) -> None:
    """File stores run in WAL mode with synchronous NORMAL, or FULL when durable."""
    for durability, expected in (("normal", 1), ("full", 2)):
        with SqliteIdempotencyStore(path, durability=durability) as opened:  # type: ignore[arg-type]
            lease = acquire(opened, f"k-{durability}")
            with opened.transaction(lease) as tx:
                assert ("wal",) == tx.connection.execute("PRAGMA journal_mode").fetchone()
                assert (expected,) == tx.connection.execute("PRAGMA synchronous").fetchone()
                tx.complete(b"r")


# -- many stores, many threads --------------------------------------------------------------------


def test_two_stores_share_one_file(path: Path, clock: ManualClock) -> None:
    """Two store objects on one file see each other's claims and completions."""
    with (
        SqliteIdempotencyStore(path, clock=clock) as one,
        SqliteIdempotencyStore(path, clock=clock) as two,
    ):
        lease = acquire(one, "k")
        assert InProgress("k", 1, LONG) == two.claim("k", "fp", lease=LONG)
        two.complete(lease, b"by two")
        assert Completed("k", "fp", b"by two") == one.claim("k", "fp", lease=LONG)


@pytest.mark.parametrize("shared", [True, False])
def test_concurrent_claims_acquire_once(path: Path, clock: ManualClock, shared: bool) -> None:
    """Threads racing to claim one key, on one store or one store each: one acquires."""
    workers = 8
    stores = [SqliteIdempotencyStore(path, clock=clock)]
    stores += [
        stores[0] if shared else SqliteIdempotencyStore(path, clock=clock)
        for _ in range(workers - 1)
    ]
    barrier = threading.Barrier(workers)
    answers: list[Claim] = []

    def claim(target: SqliteIdempotencyStore) -> None:
        barrier.wait()
        answers.append(target.claim("race", "fp", lease=LONG))

    threads = [threading.Thread(target=claim, args=(target,)) for target in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for target in stores:
        target.close()
    assert 1 == sum(isinstance(answer, Acquired) for answer in answers)
    assert workers - 1 == sum(isinstance(answer, InProgress) for answer in answers)


_CLAIM_IN_A_PROCESS = """
import sys
from invresilience.backends.sqlite import SqliteIdempotencyStore
with SqliteIdempotencyStore(sys.argv[1]) as store:
    print(type(store.claim("race", "fp", lease=600.0)).__name__)
"""


def test_processes_share_one_file(path: Path) -> None:
    """Processes racing to claim one key on one file: exactly one acquires."""
    SqliteIdempotencyStore(path).close()  # the schema exists before the race
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIM_IN_A_PROCESS, str(path)],
            stdout=subprocess.PIPE,
            env=environment,
            text=True,
        )
        for _ in range(4)
    ]
    answers = sorted(process.communicate(timeout=120)[0].strip() for process in processes)
    assert ["Acquired", "InProgress", "InProgress", "InProgress"] == answers


# -- transaction() --------------------------------------------------------------------------------


def _stock(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, qty INTEGER)")
    connection.execute("INSERT OR REPLACE INTO stock VALUES ('WH-1', 10)")
    return connection


def _qty(connection: sqlite3.Connection) -> int:
    value: int = connection.execute("SELECT qty FROM stock WHERE sku = 'WH-1'").fetchone()[0]
    return value


def test_transaction_commits_the_effect_and_the_completion(
    store: SqliteIdempotencyStore, path: Path
) -> None:
    """The caller's write and the completion commit together."""
    stock = _stock(path)
    lease = acquire(store, "k")
    with store.transaction(lease) as tx:
        assert isinstance(tx, SqliteTransaction)
        assert "SqliteTransaction(key='k', fence=1, active)" == repr(tx)
        tx.connection.execute("UPDATE stock SET qty = qty - 3 WHERE sku = 'WH-1'")
        tx.complete(b"reserved", ttl=100.0)
    assert "SqliteTransaction(key='k', fence=1, ended)" == repr(tx)
    assert 7 == _qty(stock)
    assert Completed("k", "fp", b"reserved") == store.claim("k", "fp", lease=LONG)
    stored = row(path, "k")
    assert stored is not None
    assert T0 + 100.0 == stored[4]
    stock.close()


def test_transaction_rolls_back_on_error(store: SqliteIdempotencyStore, path: Path) -> None:
    """An exception inside undoes the caller's write, keeps the lease and propagates."""
    stock = _stock(path)
    lease = acquire(store, "k")

    def reserve() -> None:
        with store.transaction(lease) as tx:
            tx.connection.execute("UPDATE stock SET qty = 0")
            tx.complete(b"never")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        reserve()
    assert 10 == _qty(stock)
    store.complete(lease, b"later")  # the lease still holds
    stock.close()


def test_transaction_without_complete_rolls_back(store: SqliteIdempotencyStore, path: Path) -> None:
    """A block that never calls complete() rolls back and says so."""
    stock = _stock(path)
    lease = acquire(store, "k")

    def forget() -> None:
        with store.transaction(lease) as tx:
            tx.connection.execute("UPDATE stock SET qty = 0")

    with pytest.raises(IdempotencyError, match="without complete") as caught:
        forget()
    assert "k" == caught.value.key
    assert 10 == _qty(stock)
    store.release(lease)
    stock.close()


def test_transaction_on_a_lost_lease(store: SqliteIdempotencyStore, clock: ManualClock) -> None:
    """A lease taken over is refused on entering, before the block runs."""
    old = acquire(store, "k", lease=1.0)
    clock.advance(1.0)
    acquire(store, "k")
    entered = False
    with pytest.raises(LeaseLostError), store.transaction(old):
        entered = True
    assert not entered
    acquire(store, "free")  # the store is usable: nothing was left open


def test_transaction_when_the_record_expires_inside(
    store: SqliteIdempotencyStore, clock: ManualClock, path: Path
) -> None:
    """A record that expired during the block loses the lease at the end; all rolls back."""
    stock = _stock(path)
    lease = acquire(store, "k", lease=1.0, ttl=1.0)

    def slow() -> None:
        with store.transaction(lease) as tx:
            tx.connection.execute("UPDATE stock SET qty = 0")
            tx.complete(b"r")
            clock.advance(2.0)

    with pytest.raises(LeaseLostError):
        slow()
    assert 10 == _qty(stock)
    stock.close()


def test_transaction_misuse(store: SqliteIdempotencyStore) -> None:
    """Completing twice, after the end, or ending the transaction inside are errors."""
    lease = acquire(store, "k")
    with store.transaction(lease) as tx:
        with pytest.raises(ConfigurationError):
            tx.complete(b"r", ttl=-1.0)
        tx.complete(b"r")
        with pytest.raises(IdempotencyError, match="already called"):
            tx.complete(b"again")
    with pytest.raises(IdempotencyError, match="ended"):
        tx.complete(b"late")
    with pytest.raises(IdempotencyError, match="ended"):
        _ = tx.connection
    committed = acquire(store, "committed")

    def commit_inside() -> None:
        with store.transaction(committed) as tx:
            tx.complete(b"r")
            tx.connection.execute("COMMIT")

    with pytest.raises(IdempotencyError, match="ended inside"):
        commit_inside()
    store.release(committed)  # the completion was not recorded


def test_store_calls_inside_its_own_transaction(store: SqliteIdempotencyStore) -> None:
    """A store call or close() inside the store's own transaction is an error, not a deadlock."""
    lease = acquire(store, "k")
    with store.transaction(lease) as tx:
        with pytest.raises(BackendError, match="inside this store's transaction"):
            store.claim("other", "fp", lease=LONG)
        with pytest.raises(BackendError, match="inside this store's transaction"):
            store.close()
        tx.complete(b"r")
    assert Completed("k", "fp", b"r") == store.claim("k", "fp", lease=LONG)


def test_transaction_write_failure(store: SqliteIdempotencyStore, path: Path) -> None:
    """A failing completion write raises BackendError and rolls the caller's write back."""
    stock = _stock(path)
    lease = acquire(store, "bad")
    refuse_key(path, "bad")

    def reserve() -> None:
        with store.transaction(lease) as tx:
            tx.connection.execute("UPDATE stock SET qty = 0")
            tx.complete(b"r")

    with pytest.raises(BackendError, match="refused"):
        reserve()
    assert 10 == _qty(stock)
    stock.close()


def test_transaction_on_a_locked_database(store: SqliteIdempotencyStore, path: Path) -> None:
    """Entering while another connection writes, past busy_timeout, is unavailability."""
    impatient = SqliteIdempotencyStore(path, busy_timeout=0)
    lease = acquire(impatient, "k")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(BackendUnavailableError), impatient.transaction(lease):
        pass
    blocker.execute("ROLLBACK")
    blocker.close()
    impatient.release(lease)
    impatient.close()


# -- errors ---------------------------------------------------------------------------------------


def test_a_locked_database_is_unavailable(path: Path) -> None:
    """A database locked past busy_timeout raises BackendUnavailableError, chained."""
    impatient = SqliteIdempotencyStore(path, busy_timeout=0)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(BackendUnavailableError, match="busy_timeout") as caught:
        impatient.claim("k", "fp", lease=LONG)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(BackendUnavailableError):
        SqliteIdempotencyStore(path, busy_timeout=0)
    blocker.execute("ROLLBACK")
    blocker.close()
    acquire(impatient, "k")
    impatient.close()


def test_locked_without_an_error_code() -> None:
    """A 'locked' message alone (Python 3.10 has no error codes) is unavailability too."""
    locked = sqlite3.OperationalError("database is locked")
    assert isinstance(sqlite_backend._error("x", locked), BackendUnavailableError)
    other = sqlite_backend._error("x", sqlite3.OperationalError("disk I/O error"))
    assert not isinstance(other, BackendUnavailableError)


def test_other_sqlite_errors_are_backend_errors(store: SqliteIdempotencyStore, path: Path) -> None:
    """A broken database raises BackendError, not unavailability, and rolls back."""
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE invresilience_idempotency")
    connection.close()
    with pytest.raises(BackendError, match="no such table") as caught:
        store.claim("k", "fp", lease=LONG)
    assert not isinstance(caught.value, BackendUnavailableError)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


def test_unopenable_path(tmp_path: Path) -> None:
    """A file in a missing directory cannot be opened: BackendError."""
    with pytest.raises(BackendError, match="opening"):
        SqliteIdempotencyStore(tmp_path / "missing" / "idem.db")


def test_a_closed_store_refuses_work(path: Path) -> None:
    """After close() every operation raises BackendError; closing again is harmless."""
    with SqliteIdempotencyStore(path) as opened:
        lease = acquire(opened, "k")
    assert opened.closed
    opened.close()
    with pytest.raises(BackendError, match="closed"):
        opened.claim("k", "fp", lease=LONG)
    with pytest.raises(BackendError, match="closed"), opened.transaction(lease):
        pass
    assert "SqliteIdempotencyStore(" in repr(opened)


# -- the async store ------------------------------------------------------------------------------


def test_async_store(path: Path, clock: ManualClock) -> None:
    """The async store runs every operation of the sync one, in worker threads."""

    async def main() -> None:
        async with AsyncSqliteIdempotencyStore(path, clock=clock) as astore:
            assert isinstance(astore, AsyncIdempotencyStore)
            assert repr(astore).startswith("AsyncSqliteIdempotencyStore(SqliteIdempotencyStore(")
            claim = await astore.claim("k", "fp", lease=5.0, ttl=1.0)
            assert isinstance(claim, Acquired)
            lease = await astore.extend(claim.lease, 10.0)
            assert [True] == await astore.complete_many([(lease, b"r")], ttl=1.0)
            claims = await astore.claim_many([("k", "fp"), ("j", "fp")], lease=5.0)
            assert Completed("k", "fp", b"r") == claims[0]
            assert isinstance(claims[1], Acquired)
            await astore.release(claims[1].lease)
            again = await astore.claim("j", "fp", lease=5.0, ttl=1.0)
            assert isinstance(again, Acquired)
            await astore.complete(again.lease, b"j", ttl=1.0)
            clock.advance(1.0)
            assert 2 == await astore.purge_expired(10)
        assert astore.store.closed

    asyncio.run(main())


def test_async_store_over_a_sync_one(store: SqliteIdempotencyStore) -> None:
    """store= shares the sync store's records; exactly one of path and store is needed."""
    acquire(store, "k")

    async def main() -> None:
        astore = AsyncSqliteIdempotencyStore(store=store)
        assert InProgress("k", 1, LONG) == await astore.claim("k", "fp", lease=LONG)
        with pytest.raises(LeaseLostError):
            await astore.complete(Lease("k", 9, "x", "fp", 1.0), b"r")
        await astore.close()

    asyncio.run(main())
    assert store.closed
    with pytest.raises(ConfigurationError, match="exactly one"):
        AsyncSqliteIdempotencyStore()
    with pytest.raises(ConfigurationError, match="exactly one"):
        AsyncSqliteIdempotencyStore(":memory:", store=store)


# -- the backend ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path", "durability"),
    [
        ("sqlite:///relative/idem.db", "relative/idem.db", "normal"),
        ("sqlite:////abs/path/idem.db", "/abs/path/idem.db", "normal"),
        ("sqlite:///:memory:", ":memory:", "normal"),
        ("sqlite:///idem.db?durability=full", "idem.db", "full"),
        ("sqlite:///idem.db?durability=normal", "idem.db", "normal"),
    ],
)
def test_from_url(url: str, path: str, durability: str) -> None:
    """sqlite:/// URLs name relative, absolute and in-memory databases, and durability."""
    backend = SqliteBackend.from_url(url)
    assert (path, durability) == (backend.path, backend.durability)
    assert backend.url.split("?durability=normal")[0] == backend.url
    assert backend.url == SqliteBackend.from_url(backend.url).url
    assert f"SqliteBackend({backend.url!r})" == repr(backend)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://host/db", "must be sqlite:///"),
        ("sqlite://host/idem.db", "must be sqlite:///"),
        (None, "must be sqlite:///"),
        ("sqlite:///", "must name a database file"),
        ("sqlite:///?durability=full", "must name a database file"),
        ("sqlite:///idem.db#frag", "no fragment"),
        ("sqlite:///idem.db?timeout=5", "unknown query parameter 'timeout'"),
        ("sqlite:///idem.db?", "unknown query parameter ''"),
        ("sqlite:///idem.db?durability=extra", "must be 'normal' or 'full'"),
    ],
)
def test_from_url_errors(url: Any, message: str) -> None:
    """Other URLs, unknown parameters and bad durabilities are refused, saying why."""
    with pytest.raises(ConfigurationError, match=message):
        SqliteBackend.from_url(url)


def test_backend_stores_share_the_file(path: Path, clock: ManualClock) -> None:
    """Stores of one backend share the file; close() closes them all."""
    with SqliteBackend(path, durability="full", clock=clock) as backend:
        assert backend.url.endswith("idem.db?durability=full")
        one = backend.idempotency_store()
        two = backend.idempotency_store()
        assert one is not two
        lease = acquire(one, "k")
        assert InProgress("k", 1, LONG) == two.claim("k", "fp", lease=LONG)
        astore = backend.async_idempotency_store("tenant")
        assert "tenant" == astore.store.namespace
    assert [True, True, True] == [one.closed, two.closed, astore.store.closed]
    with pytest.raises(BackendError, match="closed"):
        backend.idempotency_store()
    backend.close()
    with SqliteIdempotencyStore(path, clock=clock) as reopened:
        reopened.complete(lease, b"r")


def test_memory_backend_shares_a_store_per_namespace(clock: ManualClock) -> None:
    """On ':memory:' each namespace's store is made once, shared by sync and async."""
    backend = SqliteBackend(":memory:", clock=clock)
    store = backend.idempotency_store()
    assert store is backend.idempotency_store()
    assert store is backend.async_idempotency_store().store
    assert store is not backend.idempotency_store("other")
    store.close()
    fresh = backend.idempotency_store()
    assert fresh is not store
    assert not fresh.closed
    backend.close()
    assert fresh.closed


def test_backend_rejects_bad_arguments(tmp_path: Path) -> None:
    """Bad paths, durabilities and namespaces are ConfigurationErrors."""
    with pytest.raises(ConfigurationError, match=r"SqliteBackend\.path"):
        SqliteBackend("")
    with pytest.raises(ConfigurationError, match=r"SqliteBackend\.durability"):
        SqliteBackend(tmp_path / "x.db", durability="fast")  # type: ignore[arg-type]
    with SqliteBackend(tmp_path / "x.db") as backend, pytest.raises(ConfigurationError):
        backend.idempotency_store("bad namespace")


def test_stores_satisfy_the_protocols(store: SqliteIdempotencyStore) -> None:
    """The sync store is an IdempotencyStore (checked by mypy), the async one at run time."""
    sync: IdempotencyStore = store
    assert sync is store
    assert isinstance(AsyncSqliteIdempotencyStore(store=store), AsyncIdempotencyStore)


def test_switching_a_locked_file_to_wal(path: Path) -> None:
    """Opening a rollback-journal file that another connection writes is unavailability."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("CREATE TABLE other (x)")
    blocker.execute("BEGIN EXCLUSIVE")
    blocker.execute("INSERT INTO other VALUES (1)")
    with pytest.raises(BackendUnavailableError):
        SqliteIdempotencyStore(path, busy_timeout=0)
    blocker.execute("ROLLBACK")
    blocker.close()
    SqliteIdempotencyStore(path, busy_timeout=0).close()


def test_a_failed_complete_is_a_backend_error(store: SqliteIdempotencyStore, path: Path) -> None:
    """A completion SQLite refuses raises BackendError, chained, and leaves the key pending."""
    lease = acquire(store, "bad")
    refuse_key(path, "bad")
    with pytest.raises(BackendError) as info:
        store.complete(lease, b"x")
    assert isinstance(info.value.__cause__, sqlite3.Error)
    stored = row(path, "bad")
    assert stored is not None
    assert "pending" == stored[0]
