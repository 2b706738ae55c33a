"""PostgresIdempotencyStore and its async twin, beyond the contract: the SQL against the
rules, the server's clock, the schema and its version, transactions, broken connections,
races, and PostgresBackend.

The server's clock cannot be moved, so the few tests that must see a lease or a record
expire use leases of a few tenths of a second and sleep them out for real.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from invresilience._core.idempotency import Acquired, Completed, InProgress, Lease, Mismatch
from invresilience.backends import postgres
from invresilience.backends.postgres import (
    SCHEMA_VERSION,
    AsyncPostgresIdempotencyStore,
    AsyncPostgresTransaction,
    PostgresBackend,
    PostgresIdempotencyStore,
    PostgresTransaction,
)
from invresilience.exceptions import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    IdempotencyError,
    LeaseLostError,
)
from invresilience.typing import AsyncIdempotencyStore, IdempotencyStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from invresilience._core.idempotency import Claim

#: A lease the tests never wait out.
LONG = 60.0
#: A lease the tests wait out, and the sleep that does it.
SHORT = 0.25
PAST_SHORT = SHORT + 0.05


def _drop(url: str, prefix: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("idempotency", "schema", "stock"):
            name = sql.Identifier(f"{prefix}_{table}")
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))


@pytest.fixture
def prefix(postgres_url: str) -> Iterator[str]:
    """A table prefix of this test's own, whose tables are dropped afterwards."""
    prefix = f"invres_t_{uuid.uuid4().hex[:16]}"
    yield prefix
    _drop(postgres_url, prefix)


@pytest.fixture
def app() -> str:
    """A unique application_name, to find (and terminate) a store's server session."""
    return f"invres-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def conninfo(postgres_url: str, app: str) -> str:
    """The server's conninfo, tagged with this test's application_name."""
    return make_conninfo(postgres_url, application_name=app)


@pytest.fixture
def admin(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A separate autocommit connection to inspect and sabotage the server."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def store(conninfo: str, prefix: str) -> Iterator[PostgresIdempotencyStore]:
    """A sync store on its own tables, closed afterwards."""
    store = PostgresIdempotencyStore(conninfo, table_prefix=prefix)
    yield store
    store.close()


def _terminate(admin: psycopg.Connection[Any], app: str) -> int:
    """Terminate every session named *app*, waiting until they are gone; how many there were."""
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
        [app],
    ).fetchall()
    return len(rows)


def _row(admin: psycopg.Connection[Any], prefix: str, key: str) -> tuple[Any, ...] | None:
    query = sql.SQL(
        "SELECT fingerprint, state, fence, token, lease_until, expires_at, result"
        " FROM {} WHERE key = %s"
    ).format(sql.Identifier(f"{prefix}_idempotency"))
    return admin.execute(query, [key]).fetchone()


def _server_now(admin: psycopg.Connection[Any]) -> float:
    row = admin.execute("SELECT date_part('epoch', clock_timestamp())").fetchone()
    assert row is not None
    return float(row[0])


def _acquire(store: IdempotencyStore, key: str, fp: str = "fp", lease: float = LONG) -> Lease:
    claim = store.claim(key, fp, lease=lease)
    assert isinstance(claim, Acquired), claim
    return claim.lease


# -- the rules -----------------------------------------------------------------------------------


def test_stores_satisfy_the_protocols(conninfo: str, prefix: str) -> None:
    """Both stores are instances of their runtime-checkable Protocols."""
    assert isinstance(PostgresIdempotencyStore(conninfo, table_prefix=prefix), IdempotencyStore)
    assert isinstance(
        AsyncPostgresIdempotencyStore(conninfo, table_prefix=prefix), AsyncIdempotencyStore
    )


def test_claim_times_come_from_the_server_clock(
    store: PostgresIdempotencyStore, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """lease_until and expires_at are server epoch seconds; retry_after is measured on them."""
    before = _server_now(admin)
    lease = _acquire(store, "k", lease=30.0)
    after = _server_now(admin)
    row = _row(admin, prefix, "k")
    assert row is not None
    assert ("fp", "pending", 1, lease.token) == row[:4]
    assert before + 30.0 <= row[4] <= after + 30.0
    assert before + 86400.0 <= row[5] <= after + 86400.0
    busy = store.claim("k", "fp", lease=30.0)
    assert isinstance(busy, InProgress)
    assert 1 == busy.fence
    now = _server_now(admin)
    assert row[4] - now - 0.001 <= busy.retry_after <= row[4] - after + 0.001


def test_mismatch_in_every_live_state(store: PostgresIdempotencyStore) -> None:
    """A different fingerprint is a Mismatch whether the record is pending, completed or released."""
    pending = _acquire(store, "pending")
    done = _acquire(store, "completed")
    store.complete(done, b"r")
    released = _acquire(store, "released")
    store.release(released)
    for key in ("pending", "completed", "released"):
        assert Mismatch(key, "fp") == store.claim(key, "other", lease=LONG)
    assert isinstance(store.claim("pending", "fp", lease=LONG), InProgress)
    assert pending.fence == 1


def test_completed_replays_the_bytes(store: PostgresIdempotencyStore) -> None:
    """A completed record replays its exact bytes, NUL and invalid UTF-8 included."""
    payload = bytes(range(256)) * 4
    lease = _acquire(store, "k")
    store.complete(lease, payload)
    assert Completed("k", "fp", payload) == store.claim("k", "fp", lease=LONG)


def test_release_then_claim_gets_a_higher_fence(store: PostgresIdempotencyStore) -> None:
    """Every new claim of a key gets a larger fence; the released lease is used up."""
    fences = []
    for _ in range(5):
        lease = _acquire(store, "k")
        fences.append(lease.fence)
        store.release(lease)
    assert [1, 2, 3, 4, 5] == fences
    with pytest.raises(LeaseLostError):
        store.release(lease)


def test_a_stale_lease_changes_nothing(
    store: PostgresIdempotencyStore, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """After a takeover, the old lease's complete, release and extend raise and leave the row."""
    old = _acquire(store, "k", lease=SHORT)
    time.sleep(PAST_SHORT)
    new = _acquire(store, "k")
    assert new.fence == old.fence + 1
    row = _row(admin, prefix, "k")
    with pytest.raises(LeaseLostError) as info:
        store.complete(old, b"stale")
    assert ("k", old.fence) == (info.value.key, info.value.fence)
    with pytest.raises(LeaseLostError):
        store.release(old)
    with pytest.raises(LeaseLostError):
        store.extend(old, LONG)
    assert row == _row(admin, prefix, "k")
    store.complete(new, b"fresh")
    assert Completed("k", "fp", b"fresh") == store.claim("k", "fp", lease=LONG)


def test_an_expired_lease_nobody_took_over_still_completes(store: PostgresIdempotencyStore) -> None:
    """A lease past its time still holds while nobody claimed the key again."""
    lease = _acquire(store, "k", lease=SHORT)
    time.sleep(PAST_SHORT)
    store.complete(lease, b"late")
    assert Completed("k", "fp", b"late") == store.claim("k", "fp", lease=LONG)


def test_an_expired_record_is_as_good_as_absent(store: PostgresIdempotencyStore) -> None:
    """After its ttl, a completed record is claimable with any fingerprint, its fence continued."""
    lease = _acquire(store, "k")
    store.complete(lease, b"r", ttl=SHORT)
    time.sleep(PAST_SHORT)
    with pytest.raises(LeaseLostError):
        store.extend(lease, LONG)
    again = _acquire(store, "k", fp="another")
    assert 2 == again.fence


def test_extend_keeps_the_lease_and_the_record(
    store: PostgresIdempotencyStore, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """extend runs the lease from now and keeps the record at least that long."""
    claim = store.claim("k", "fp", lease=SHORT, ttl=SHORT)
    assert isinstance(claim, Acquired)
    extended = store.extend(claim.lease, 30.0)
    assert Lease("k", 1, claim.lease.token, "fp", 30.0) == extended
    time.sleep(PAST_SHORT)
    busy = store.claim("k", "fp", lease=LONG)
    assert isinstance(busy, InProgress)
    assert 29.0 < busy.retry_after <= 30.0
    row = _row(admin, prefix, "k")
    assert row is not None
    assert row[5] >= row[4]
    store.complete(extended, b"r")


def test_claim_many_and_complete_many(store: PostgresIdempotencyStore) -> None:
    """Batches answer in order, a repeated key seeing the earlier item, lost leases reported."""
    done = _acquire(store, "done")
    store.complete(done, b"d")
    items = [("b", "fp"), ("a", "fp"), ("b", "fp"), ("done", "fp"), ("a", "x")]
    claims = store.claim_many(items, lease=LONG)
    assert isinstance(claims[0], Acquired)
    assert isinstance(claims[1], Acquired)
    assert isinstance(claims[2], InProgress)
    assert Completed("done", "fp", b"d") == claims[3]
    assert Mismatch("a", "fp") == claims[4]
    b, a = claims[0].lease, claims[1].lease
    assert [True, True, False, False] == store.complete_many(
        [(b, b"B"), (a, b"A"), (a, b"again"), (done, b"old")]
    )
    assert [Completed("a", "fp", b"A"), Completed("b", "fp", b"B")] == store.claim_many(
        [("a", "fp"), ("b", "fp")], lease=LONG
    )
    assert [] == store.claim_many([], lease=LONG)
    assert [] == store.complete_many([])


def test_batches_are_checked_before_any_io(store: PostgresIdempotencyStore) -> None:
    """A bad item refuses the whole batch with ConfigurationError."""
    with pytest.raises(ConfigurationError):
        store.claim_many([("ok", "fp"), ("", "fp")], lease=LONG)
    with pytest.raises(ConfigurationError):
        store.complete_many([("not a lease", b"")])  # type: ignore[list-item]
    assert isinstance(store.claim("ok", "fp", lease=LONG), Acquired)


def test_purge_expired_respects_limit_and_namespace(conninfo: str, prefix: str) -> None:
    """purge_expired deletes only this namespace's expired records, at most limit of them."""
    one = PostgresIdempotencyStore(conninfo, table_prefix=prefix, namespace="one")
    two = PostgresIdempotencyStore(conninfo, table_prefix=prefix, namespace="two")
    try:
        for store in (one, two):
            for i in range(3):
                lease = _acquire(store, f"gone{i}")
                store.complete(lease, b"", ttl=SHORT)
            store.complete(_acquire(store, "live"), b"kept")
        time.sleep(PAST_SHORT)
        assert 2 == one.purge_expired(limit=2)
        assert 1 == one.purge_expired()
        assert 0 == one.purge_expired()
        assert 3 == two.purge_expired()
        assert Completed("live", "fp", b"kept") == one.claim("live", "fp", lease=LONG)
        assert 1 == _acquire(one, "gone0").fence  # purged: the fence starts over
    finally:
        one.close()
        two.close()


def test_namespaces_share_tables_but_not_keys(conninfo: str, prefix: str) -> None:
    """The same key in two namespaces is two records."""
    one = PostgresIdempotencyStore(conninfo, table_prefix=prefix, namespace="one")
    two = PostgresIdempotencyStore(conninfo, table_prefix=prefix, namespace="two")
    try:
        _acquire(one, "k")
        assert isinstance(two.claim("k", "other", lease=LONG), Acquired)
    finally:
        one.close()
        two.close()


# -- schema, validation, lifecycle ---------------------------------------------------------------


def test_schema_is_created_once_and_versioned(
    store: PostgresIdempotencyStore, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """The first call creates both tables and records the schema version."""
    _acquire(store, "k")
    schema = sql.Identifier(f"{prefix}_schema")
    rows = admin.execute(sql.SQL("SELECT component, version FROM {}").format(schema)).fetchall()
    assert [("idempotency", SCHEMA_VERSION)] == rows
    index = admin.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = %s", [f"{prefix}_idempotency_expires"]
    ).fetchone()
    assert index is not None
    assert "(expires_at)" in index[0]


def test_a_newer_schema_version_is_refused(
    conninfo: str, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """Tables recorded with a newer version make every call a BackendError naming it."""
    PostgresIdempotencyStore(conninfo, table_prefix=prefix).purge_expired()
    schema = sql.Identifier(f"{prefix}_schema")
    admin.execute(sql.SQL("UPDATE {} SET version = %s").format(schema), [SCHEMA_VERSION + 1])
    store = PostgresIdempotencyStore(conninfo, table_prefix=prefix)
    for _ in range(2):
        with pytest.raises(BackendError, match=f"schema version {SCHEMA_VERSION + 1}") as info:
            store.claim("k", "fp", lease=LONG)
        assert not isinstance(info.value, BackendUnavailableError)
    store.close()


def test_concurrent_first_use_creates_the_schema_once(conninfo: str, prefix: str) -> None:
    """Stores starting together on fresh tables all succeed (the advisory lock serialises them)."""
    stores = [PostgresIdempotencyStore(conninfo, table_prefix=prefix) for _ in range(6)]
    barrier = threading.Barrier(len(stores))

    def work(store: PostgresIdempotencyStore) -> Claim:
        barrier.wait()
        return store.claim("k", "fp", lease=LONG)

    with ThreadPoolExecutor(len(stores)) as pool:
        answers = list(pool.map(work, stores))  # re-raises any error
    for store in stores:
        store.close()
    assert 1 == sum(isinstance(answer, Acquired) for answer in answers)


@pytest.mark.parametrize(
    "bad", ["", "1abc", "a-b", "a b", 'x"; DROP TABLE t; --', "a" * 42, "é", None, 12]
)
def test_table_prefix_must_be_an_identifier(bad: object) -> None:
    """table_prefix is validated as an SQL identifier of at most 41 characters."""
    with pytest.raises(ConfigurationError) as info:
        PostgresIdempotencyStore("", table_prefix=bad)  # type: ignore[arg-type]
    assert "table_prefix" == info.value.field
    with pytest.raises(ConfigurationError):
        AsyncPostgresIdempotencyStore("", table_prefix=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        PostgresBackend("", table_prefix=bad)  # type: ignore[arg-type]


def test_longest_prefix_and_quoting_work(conninfo: str, postgres_url: str) -> None:
    """A 41-character prefix in mixed case names real tables (quoted identifiers)."""
    prefix = "Mixed_" + (uuid.uuid4().hex * 2)[:35]
    assert 41 == len(prefix)
    store = PostgresIdempotencyStore(conninfo, table_prefix=prefix)
    try:
        assert isinstance(store.claim("k", "fp", lease=LONG), Acquired)
    finally:
        store.close()
        _drop(postgres_url, prefix)


def test_namespace_is_validated() -> None:
    """A namespace outside 1 to 100 of letters, digits and _.:- is refused."""
    with pytest.raises(ConfigurationError):
        PostgresIdempotencyStore("", namespace="")
    with pytest.raises(ConfigurationError):
        AsyncPostgresIdempotencyStore("", namespace="a b")


def test_arguments_are_checked(store: PostgresIdempotencyStore) -> None:
    """Bad keys, leases, ttls and limits raise ConfigurationError naming the field."""
    cases: list[tuple[str, Callable[[], object]]] = [
        ("key", lambda: store.claim("", "fp", lease=LONG)),
        ("lease", lambda: store.claim("k", "fp", lease=0)),
        ("ttl", lambda: store.complete(_acquire(store, "k1"), b"", ttl=float("inf"))),
        ("seconds", lambda: store.extend(_acquire(store, "k2"), -1)),
        ("lease", lambda: store.release("x")),  # type: ignore[arg-type]
        ("limit", lambda: store.purge_expired(0)),
    ]
    for field, call in cases:
        with pytest.raises(ConfigurationError) as info:
            call()
        assert field == info.value.field


def test_a_borrowed_connection_must_autocommit_and_stays_open(
    postgres_url: str, prefix: str
) -> None:
    """A borrowed connection must be in autocommit mode, and close() leaves it open."""
    with (
        psycopg.connect(postgres_url) as conn,
        pytest.raises(ConfigurationError, match="autocommit"),
    ):
        PostgresIdempotencyStore(conn, table_prefix=prefix)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        store = PostgresIdempotencyStore(conn, table_prefix=prefix)
        _acquire(store, "k")
        store.close()
        assert not conn.closed
        assert (1,) == conn.execute("SELECT 1").fetchone()


def test_a_closed_store_refuses_calls(store: PostgresIdempotencyStore) -> None:
    """After close(), calls raise BackendError; closing twice is harmless."""
    _acquire(store, "k")
    store.close()
    store.close()
    with pytest.raises(BackendError, match="closed"):
        store.claim("k", "fp", lease=LONG)
    assert "PostgresIdempotencyStore(namespace='default'" in repr(store)


# -- driver errors and reconnection --------------------------------------------------------------


def test_a_killed_connection_fails_one_call_then_reconnects(
    store: PostgresIdempotencyStore, admin: psycopg.Connection[Any], app: str
) -> None:
    """The call after the server dropped the session is BackendUnavailableError; the next works."""
    lease = _acquire(store, "k")
    assert 1 == _terminate(admin, app)
    with pytest.raises(BackendUnavailableError) as info:
        store.claim("k", "fp", lease=LONG)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert isinstance(store.claim("k", "fp", lease=LONG), InProgress)
    store.complete(lease, b"after the restart")
    assert 1 == _terminate(admin, app)


def test_a_broken_borrowed_connection_is_replaced(
    conninfo: str, admin: psycopg.Connection[Any], app: str, prefix: str
) -> None:
    """A store borrowing a connection that broke opens its own from the same parameters."""
    # Trust authentication ignores a password; the replacement must still be given it.
    password = conninfo_to_dict(conninfo).get("password") or "ignored-by-trust"
    with psycopg.connect(conninfo, autocommit=True, password=password) as conn:
        store = PostgresIdempotencyStore(conn, table_prefix=prefix)
        _acquire(store, "k")
        _terminate(admin, app)
        with pytest.raises(BackendUnavailableError):
            store.claim("k", "fp", lease=LONG)
        assert isinstance(store.claim("k", "fp", lease=LONG), InProgress)
        assert 1 == _terminate(admin, app)  # the store's new session, same application_name
        store.close()


def test_an_unreachable_server_is_backend_unavailable(prefix: str) -> None:
    """Nothing listening: BackendUnavailableError, chained to the driver's error."""
    store = PostgresIdempotencyStore(
        "host=127.0.0.1 port=1 connect_timeout=2 user=postgres", table_prefix=prefix
    )
    with pytest.raises(BackendUnavailableError, match="unreachable") as info:
        store.purge_expired()
    assert isinstance(info.value.__cause__, psycopg.OperationalError)


def test_other_driver_errors_are_backend_errors(
    store: PostgresIdempotencyStore, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """A missing table is a BackendError, not BackendUnavailableError."""
    _acquire(store, "k")
    admin.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(f"{prefix}_idempotency")))
    with pytest.raises(BackendError) as info:
        store.claim("k", "fp", lease=LONG)
    assert not isinstance(info.value, BackendUnavailableError)
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)


# -- races ------------------------------------------------------------------------------------------


def test_two_threads_claim_each_key_exactly_once(store: PostgresIdempotencyStore) -> None:
    """2 threads x 200 keys on one store: every key is acquired by exactly one of them."""
    keys = [f"key-{i}" for i in range(200)]
    acquired: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def work(n: int) -> None:
        barrier.wait()
        for key in keys if n == 0 else reversed(keys):
            if isinstance(store.claim(key, "fp", lease=LONG), Acquired):
                acquired[n].append(key)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(keys) == sorted(acquired[0] + acquired[1])


def test_stores_on_separate_connections_claim_each_key_once(conninfo: str, prefix: str) -> None:
    """4 stores (4 sessions) racing on 100 keys, singly and in batches: one winner per key."""
    stores = [PostgresIdempotencyStore(conninfo, table_prefix=prefix) for _ in range(4)]
    keys = [f"key-{i}" for i in range(100)]
    wins: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(stores))

    def work(n: int) -> None:
        store = stores[n]
        barrier.wait()
        mine = keys[n::2] + keys if n % 2 else list(reversed(keys))
        if n < 2:
            answers = [store.claim(key, "fp", lease=LONG) for key in mine]
        else:
            answers = store.claim_many([(key, "fp") for key in mine], lease=LONG)
        with lock:
            wins.extend(a.lease.key for a in answers if isinstance(a, Acquired))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert sorted(keys) == sorted(wins)


def _wait_for_lock_wait(admin: psycopg.Connection[Any], app: str) -> None:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'",
            [app],
        ).fetchone()
        if row is not None and row[0]:
            return
        time.sleep(0.01)
    pytest.fail("the claim never waited for the other transaction")


def _claim_in_thread(store: PostgresIdempotencyStore, key: str) -> Callable[[], Claim]:
    box: list[Claim] = []
    thread = threading.Thread(target=lambda: box.append(store.claim(key, "fp", lease=LONG)))
    thread.start()

    def result() -> Claim:
        thread.join(10)
        return box[0]

    return result


def test_a_claim_racing_an_uncommitted_insert_asks_again(
    store: PostgresIdempotencyStore, postgres_url: str, admin: psycopg.Connection[Any], app: str
) -> None:
    """An insert committed while the claim waited leaves the snapshot empty: the claim runs again."""
    store.purge_expired()  # the tables exist
    table = sql.Identifier(f"{store.table_prefix}_idempotency")
    with psycopg.connect(postgres_url) as other:
        other.execute(
            sql.SQL(
                "INSERT INTO {} VALUES ('default', 'k', 'fp', 'pending', 7, 'theirs',"
                " date_part('epoch', now()) + 60, date_part('epoch', now()) + 600, NULL)"
            ).format(table)
        )
        result = _claim_in_thread(store, "k")
        _wait_for_lock_wait(admin, app)
        other.commit()
        answer = result()
    assert isinstance(answer, InProgress)
    assert 7 == answer.fence


def test_a_claim_racing_a_takeover_asks_again(
    store: PostgresIdempotencyStore, postgres_url: str, admin: psycopg.Connection[Any], app: str
) -> None:
    """A takeover committed while the claim waited makes its snapshot stale: the claim runs again."""
    lease = _acquire(store, "k", lease=SHORT)
    time.sleep(PAST_SHORT)
    table = sql.Identifier(f"{store.table_prefix}_idempotency")
    with psycopg.connect(postgres_url) as other:
        other.execute(
            sql.SQL(
                "UPDATE {} SET token = 'theirs', fence = fence + 1,"
                " lease_until = date_part('epoch', now()) + 60 WHERE key = 'k'"
            ).format(table)
        )
        result = _claim_in_thread(store, "k")
        _wait_for_lock_wait(admin, app)
        other.commit()
        answer = result()
    assert isinstance(answer, InProgress)
    assert lease.fence + 1 == answer.fence


def test_a_claim_that_keeps_losing_races_gives_up(
    store: PostgresIdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a bounded number of stale answers the claim raises BackendError."""
    monkeypatch.setattr(postgres, "_decode_claim", lambda *args: None)
    with pytest.raises(BackendError, match="races"):
        store.claim("k", "fp", lease=LONG)
    with pytest.raises(BackendError, match="races"):
        store.claim_many([("k", "fp")], lease=LONG)


# -- transactions -----------------------------------------------------------------------------------


@pytest.fixture
def stock(admin: psycopg.Connection[Any], prefix: str) -> sql.Composed:
    """An application table ``{prefix}_stock`` holding one row, sku 'A' with qty 10."""
    table = sql.Identifier(f"{prefix}_stock")
    admin.execute(sql.SQL("CREATE TABLE {} (sku text PRIMARY KEY, qty int)").format(table))
    admin.execute(sql.SQL("INSERT INTO {} VALUES ('A', 10)").format(table))
    return sql.SQL("UPDATE {} SET qty = qty - 1 WHERE sku = 'A'").format(table)


def _qty(admin: psycopg.Connection[Any], prefix: str) -> int:
    table = sql.Identifier(f"{prefix}_stock")
    row = admin.execute(sql.SQL("SELECT qty FROM {}").format(table)).fetchone()
    assert row is not None
    return int(row[0])


def test_transaction_commits_the_write_and_the_completion_together(
    store: PostgresIdempotencyStore,
    admin: psycopg.Connection[Any],
    prefix: str,
    stock: sql.Composed,
) -> None:
    """Inside the block nothing is visible to others; after it, both the write and the result."""
    lease = _acquire(store, "k")
    with store.transaction(lease) as tx:
        assert isinstance(tx, PostgresTransaction)
        tx.connection.execute(stock)
        tx.complete(b"reserved", ttl=600)
        assert tx.completed
        assert 10 == _qty(admin, prefix)
        assert "completed=True" in repr(tx)
        with pytest.raises(IdempotencyError, match="already"):
            tx.complete(b"twice")
        with pytest.raises(IdempotencyError, match="already in a transaction"):  # noqa: SIM117
            with store.transaction(lease):
                pytest.fail("transactions do not nest")
        # A call on the store from inside the block joins the transaction.
        assert Completed("k", "fp", b"reserved") == store.claim("k", "fp", lease=LONG)
    assert 9 == _qty(admin, prefix)
    assert Completed("k", "fp", b"reserved") == store.claim("k", "fp", lease=LONG)


def test_transaction_rolls_back_on_an_exception(
    store: PostgresIdempotencyStore,
    admin: psycopg.Connection[Any],
    prefix: str,
    stock: sql.Composed,
) -> None:
    """An exception rolls back the write and the completion, and is re-raised as it was."""
    lease = _acquire(store, "k")
    with pytest.raises(ZeroDivisionError), store.transaction(lease) as tx:  # noqa: PT012 - the block is what raises
        tx.connection.execute(stock)
        tx.complete(b"r")
        _ = 1 / 0
    assert 10 == _qty(admin, prefix)
    assert isinstance(store.claim("k", "fp", lease=LONG), InProgress)
    store.complete(lease, b"done after all")  # the lease still holds


def test_transaction_without_complete_rolls_back_and_raises(
    store: PostgresIdempotencyStore,
    admin: psycopg.Connection[Any],
    prefix: str,
    stock: sql.Composed,
) -> None:
    """A block that ends without complete() is rolled back and raises IdempotencyError."""
    lease = _acquire(store, "k")
    with pytest.raises(IdempotencyError, match="without complete"), store.transaction(lease) as tx:
        tx.connection.execute(stock)
    assert 10 == _qty(admin, prefix)
    store.release(lease)


def test_transaction_on_a_lost_lease_raises_on_entry(store: PostgresIdempotencyStore) -> None:
    """A lease taken over, used up or never stored raises LeaseLostError before the block runs."""
    old = _acquire(store, "k", lease=SHORT)
    time.sleep(PAST_SHORT)
    new = _acquire(store, "k")
    store.complete(new, b"r")
    ghost = Lease("nobody", 1, "t", "fp", 1.0)
    for lease in (old, new, ghost):
        with pytest.raises(LeaseLostError), store.transaction(lease):
            pytest.fail("the block must not run")
    assert Completed("k", "fp", b"r") == store.claim("k", "fp", lease=LONG)


def test_transaction_survives_a_killed_connection(
    store: PostgresIdempotencyStore, admin: psycopg.Connection[Any], app: str
) -> None:
    """A session killed inside the block fails the completion or commit; the next call reconnects."""
    lease = _acquire(store, "k")
    with pytest.raises(BackendUnavailableError), store.transaction(lease) as tx:  # noqa: PT012 - the block is what raises
        _terminate(admin, app)
        tx.complete(b"r")
    with pytest.raises(BackendUnavailableError), store.transaction(lease) as tx:  # noqa: PT012 - the block is what raises
        tx.complete(b"r")
        _terminate(admin, app)
    store.purge_expired()  # reconnects
    _terminate(admin, app)
    with pytest.raises(BackendUnavailableError), store.transaction(lease):
        pytest.fail("the block must not run")
    with store.transaction(lease) as tx:
        tx.complete(b"r")
    assert Completed("k", "fp", b"r") == store.claim("k", "fp", lease=LONG)


# -- the async store ----------------------------------------------------------------------------------


def test_async_store_follows_the_rules(conninfo: str, prefix: str) -> None:
    """The async twin: claim, replay, mismatch, release, extend, batches, purge, close."""

    async def main() -> None:
        store = AsyncPostgresIdempotencyStore(conninfo, table_prefix=prefix)
        assert "AsyncPostgresIdempotencyStore(namespace='default'" in repr(store)
        claim = await store.claim("k", "fp", lease=LONG)
        assert isinstance(claim, Acquired)
        assert isinstance(await store.claim("k", "fp", lease=LONG), InProgress)
        assert Mismatch("k", "fp") == await store.claim("k", "x", lease=LONG)
        extended = await store.extend(claim.lease, 30.0)
        assert 30.0 == extended.duration
        await store.release(extended)
        with pytest.raises(LeaseLostError):
            await store.complete(extended, b"")
        lease = (await store.claim("k", "fp", lease=LONG)).lease  # type: ignore[union-attr]
        assert 2 == lease.fence
        await store.complete(lease, b"r", ttl=SHORT)
        claims = await store.claim_many([("b", "fp"), ("a", "fp"), ("b", "fp")], lease=LONG)
        assert [Acquired, Acquired, InProgress] == [type(c) for c in claims]
        leases = [c.lease for c in claims if isinstance(c, Acquired)]
        assert [True, True] == await store.complete_many([(lease, b"") for lease in leases])
        assert [] == await store.claim_many([], lease=LONG)
        assert [] == await store.complete_many([])
        await asyncio.sleep(PAST_SHORT)
        assert 1 == await store.purge_expired()
        with pytest.raises(ConfigurationError):
            await store.purge_expired(0)
        await store.close()
        await store.close()
        with pytest.raises(BackendError, match="closed"):
            await store.claim("k", "fp", lease=LONG)

    asyncio.run(main())


def test_async_transaction(conninfo: str, prefix: str, admin: psycopg.Connection[Any]) -> None:
    """The async transaction commits, rolls back on errors or without complete(), checks the lease."""
    table = sql.Identifier(f"{prefix}_stock")
    admin.execute(sql.SQL("CREATE TABLE {} (sku text PRIMARY KEY, qty int)").format(table))
    admin.execute(sql.SQL("INSERT INTO {} VALUES ('A', 10)").format(table))
    take = sql.SQL("UPDATE {} SET qty = qty - 1 WHERE sku = 'A'").format(table)

    async def main() -> None:
        store = AsyncPostgresIdempotencyStore(conninfo, table_prefix=prefix)
        claim = await store.claim("k", "fp", lease=LONG)
        assert isinstance(claim, Acquired)
        lease = claim.lease
        with pytest.raises(ZeroDivisionError):  # noqa: PT012 - the block is what raises
            async with store.transaction(lease) as tx:
                await tx.connection.execute(take)
                _ = 1 / 0
        with pytest.raises(IdempotencyError, match="without complete"):
            async with store.transaction(lease) as tx:
                await tx.connection.execute(take)
        assert 10 == _qty(admin, prefix)
        async with store.transaction(lease) as tx:
            assert isinstance(tx, AsyncPostgresTransaction)
            assert "AsyncPostgresTransaction(key='k'" in repr(tx)
            await tx.connection.execute(take)
            # The task holding the transaction may call the store: it joins the transaction.
            assert isinstance(await store.claim("k", "fp", lease=LONG), InProgress)
            await tx.complete(b"reserved")
            with pytest.raises(IdempotencyError, match="already"):
                await tx.complete(b"twice")
            assert 10 == _qty(admin, prefix)
        assert 9 == _qty(admin, prefix)
        assert Completed("k", "fp", b"reserved") == await store.claim("k", "fp", lease=LONG)
        with pytest.raises(LeaseLostError):
            async with store.transaction(lease):
                pytest.fail("the block must not run")
        await store.close()

    asyncio.run(main())


def test_async_tasks_share_one_store(conninfo: str, prefix: str) -> None:
    """Concurrent tasks on one async store each get their answer; one wins each key."""

    async def main() -> None:
        store = AsyncPostgresIdempotencyStore(conninfo, table_prefix=prefix)
        keys = [f"key-{i}" for i in range(50)]
        answers = await asyncio.gather(*(store.claim(key, "fp", lease=LONG) for key in keys + keys))
        assert sorted(keys) == sorted(a.lease.key for a in answers if isinstance(a, Acquired))
        await store.close()

    asyncio.run(main())


def test_async_killed_connection_and_borrowed_connections(
    conninfo: str, prefix: str, admin: psycopg.Connection[Any], app: str
) -> None:
    """Async: a killed session fails one call, the next reconnects; borrowed ones stay open."""

    async def main() -> None:
        conn = await psycopg.AsyncConnection.connect(conninfo)
        with pytest.raises(ConfigurationError, match="autocommit"):
            AsyncPostgresIdempotencyStore(conn, table_prefix=prefix)
        await conn.set_autocommit(True)
        store = AsyncPostgresIdempotencyStore(conn, table_prefix=prefix)
        claim = await store.claim("k", "fp", lease=LONG)
        assert isinstance(claim, Acquired)
        await store.close()
        assert not conn.closed
        await conn.close()

        store = AsyncPostgresIdempotencyStore(conninfo, table_prefix=prefix)
        lease = (await store.claim("j", "fp", lease=LONG)).lease  # type: ignore[union-attr]
        _terminate(admin, app)
        with pytest.raises(BackendUnavailableError):
            await store.claim("j", "fp", lease=LONG)
        assert isinstance(await store.claim("j", "fp", lease=LONG), InProgress)
        with pytest.raises(BackendUnavailableError):  # noqa: PT012 - the block is what raises
            async with store.transaction(lease) as tx:
                _terminate(admin, app)
                await tx.complete(b"r")
        with pytest.raises(BackendUnavailableError):  # noqa: PT012 - the block is what raises
            async with store.transaction(lease) as tx:
                await tx.complete(b"r")
                _terminate(admin, app)
        await store.purge_expired()  # reconnects
        _terminate(admin, app)
        with pytest.raises(BackendUnavailableError):
            async with store.transaction(lease):
                pytest.fail("the block must not run")
        await store.complete(lease, b"r")
        await store.close()

    asyncio.run(main())


# -- the backend ------------------------------------------------------------------------------------


def test_backend_from_url_makes_and_closes_stores(postgres_url: str, prefix: str) -> None:
    """from_url accepts postgresql:// and postgres://; close() and aclose() close what it made."""
    alias = "postgres://" + postgres_url.partition("://")[2]
    for url in (postgres_url, alias):
        with PostgresBackend.from_url(url, table_prefix=prefix) as backend:
            store = backend.idempotency_store("ns")
            assert ("ns", prefix) == (store.namespace, store.table_prefix)
            assert isinstance(store.claim(url, "fp", lease=LONG), Acquired)
        with pytest.raises(BackendError, match="closed"):
            store.claim(url, "fp", lease=LONG)

    async def main() -> None:
        backend = PostgresBackend(postgres_url, table_prefix=prefix)
        astore = backend.async_idempotency_store()
        sync_store = backend.idempotency_store()
        assert isinstance(await astore.claim("a", "fp", lease=LONG), Acquired)
        await backend.aclose()
        with pytest.raises(BackendError, match="closed"):
            await astore.claim("a", "fp", lease=LONG)
        with pytest.raises(BackendError, match="closed"):
            sync_store.claim("a", "fp", lease=LONG)

    asyncio.run(main())


@pytest.mark.parametrize("url", ["redis://localhost", "http://x", "localhost:5432"])
def test_backend_from_url_refuses_other_schemes(url: str) -> None:
    """A URL that is not postgresql:// or postgres:// is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        PostgresBackend.from_url(url)


def test_backend_refuses_a_non_string() -> None:
    """The conninfo must be a string."""
    with pytest.raises(ConfigurationError):
        PostgresBackend(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("conninfo", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
        (
            "postgresql://db/x?password=s3cret&sslmode=require",
            "postgresql://db/x?password=***&sslmode=require",
        ),
        ("postgresql://db/x?sslmode=require", "postgresql://db/x?sslmode=require"),
        ("host=db password=s3cret user=app", "host=db password=*** user=app"),
        ("host=db password = 'it\\'s s3cret' user=app", "host=db password = *** user=app"),
    ],
)
def test_backend_repr_redacts_the_password(conninfo: str, shown: str) -> None:
    """repr shows the conninfo with any password replaced by ***."""
    assert f"PostgresBackend({shown!r})" == repr(PostgresBackend(conninfo))
