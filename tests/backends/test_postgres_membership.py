"""PostgresMembership, its async twin and PostgresBackend's membership factories on a real server.

Beyond the contract: the table, its schema row and the row per group, leases on the server's
``clock_timestamp()`` read once the row is locked, rows left unwritten when nothing changed,
eight threads on their own connections, borrowed connections, malformed rows (rolled back),
a newer schema, an unreachable server and the factories.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql

from invresilience.backends.postgres import (
    MEMBERSHIP_SCHEMA_VERSION,
    AsyncPostgresMembership,
    PostgresBackend,
    PostgresMembership,
)
from invresilience.exceptions import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    MembershipConflictError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from invresilience import MembershipView

#: A lease long enough never to run out during a test.
LONG = 60.0
#: A lease short enough to wait out for real (the server's clock cannot be faked).
SHORT = 0.3


@pytest.fixture
def prefix(postgres_url: str) -> Iterator[str]:
    """A table prefix of this test's own, whose tables are dropped afterwards."""
    prefix = f"invres_mem_{uuid.uuid4().hex[:16]}"
    yield prefix
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for table in ("membership", "schema"):
            name = sql.Identifier(f"{prefix}_{table}")
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))


@pytest.fixture
def admin(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A separate autocommit connection to inspect and sabotage the server."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def group(postgres_url: str, prefix: str) -> Iterator[PostgresMembership]:
    """The membership of group ``g`` on the test's tables, closed afterwards."""
    store = PostgresMembership(postgres_url, "g", table_prefix=prefix)
    yield store
    store.close()


def row(admin: psycopg.Connection[Any], prefix: str, group: str = "g") -> tuple[str, str]:
    """The group's row version (``xmin``) and document."""
    table = sql.Identifier(f"{prefix}_membership")
    query = sql.SQL("SELECT xmin::text, state FROM {} WHERE grp = %s").format(table)
    found = admin.execute(query, (group,)).fetchone()
    assert found is not None
    return found[0], found[1]


def document(admin: psycopg.Connection[Any], prefix: str) -> dict[str, Any]:
    """The group's JSON document."""
    return json.loads(row(admin, prefix)[1])  # type: ignore[no-any-return]


def server_time(admin: psycopg.Connection[Any]) -> float:
    """The server's clock now, in seconds since the epoch."""
    found = admin.execute("SELECT date_part('epoch', clock_timestamp())").fetchone()
    assert found is not None
    return float(found[0])


def summary(view: MembershipView) -> tuple[int, dict[str, float], dict[str, int]]:
    """A view's version, weights and acked versions."""
    return (
        view.version,
        view.weights,
        {name: member.acked for name, member in view.members.items()},
    )


def set_state(admin: psycopg.Connection[Any], prefix: str, state: str) -> None:
    """Overwrite group ``g``'s document by hand."""
    table = sql.Identifier(f"{prefix}_membership")
    admin.execute(sql.SQL("UPDATE {} SET state = %s WHERE grp = 'g'").format(table), (state,))


# -- the table and its rows ---------------------------------------------------------------------


def test_a_group_is_one_row_and_the_schema_records_its_version(
    group: PostgresMembership, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """Joins, heartbeats and leaves keep one row per group; the schema row says version 1."""
    assert (0, {}, {}) == summary(group.view())
    assert (1, {"a": 1.0}, {"a": 1}) == summary(group.join("a", "ta", weight=1.0, lease=LONG))
    assert (2, {"a": 1.0, "b": 2.5}, {"a": 1, "b": 2}) == summary(
        group.join("b", "tb", weight=2.5, lease=LONG)
    )
    assert (2, {"a": 1.0, "b": 2.5}, {"a": 2, "b": 2}) == summary(
        group.heartbeat("a", "ta", lease=LONG, acked=2)
    )
    assert (3, {"a": 1.0}, {"a": 2}) == summary(group.leave("b", "tb"))
    stored = document(admin, prefix)
    assert (3, ["a"], "ta") == (
        stored["version"],
        list(stored["members"]),
        stored["members"]["a"][3],
    )
    schema = sql.Identifier(f"{prefix}_schema")
    versions = admin.execute(sql.SQL("SELECT component, version FROM {}").format(schema))
    assert [("membership", MEMBERSHIP_SCHEMA_VERSION)] == versions.fetchall()
    assert "PostgresMembership('g', table_prefix=" in repr(group)


def test_a_weight_change_bumps_the_version_and_a_renewal_does_not(
    group: PostgresMembership,
) -> None:
    """Joining again with the same token renews; with another weight it reweights (one bump)."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    assert (1, {"a": 1.0}, {"a": 1}) == summary(group.join("a", "ta", weight=1.0, lease=LONG))
    assert (2, {"a": 4.0}, {"a": 1}) == summary(group.join("a", "ta", weight=4.0, lease=LONG))
    assert {1: {"a": 1.0}} == group.view().history


def test_a_second_token_under_a_live_name_conflicts_and_writes_nothing(
    group: PostgresMembership, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """Another token raises MembershipConflictError with the lease left; the row is untouched."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    before = row(admin, prefix)
    with pytest.raises(MembershipConflictError) as info:
        group.join("a", "other", weight=1.0, lease=LONG)
    assert ("g", "a") == (info.value.group, info.value.member)
    assert LONG - 5 < info.value.retry_after <= LONG
    assert before == row(admin, prefix)


def test_stale_tokens_and_reads_leave_the_row_unwritten(
    group: PostgresMembership, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """Heartbeat and leave with a stale token, and views, change nothing: no new row version."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    group.join("b", "tb", weight=1.0, lease=LONG)
    before = row(admin, prefix)
    assert (2, {"a": 1.0, "b": 1.0}, {"a": 1, "b": 2}) == summary(
        group.heartbeat("a", "stale", lease=LONG, acked=2)
    )
    assert (2, {"a": 1.0, "b": 1.0}, {"a": 1, "b": 2}) == summary(group.leave("a", "stale"))
    group.view()
    assert before == row(admin, prefix)


def test_leases_are_measured_on_the_servers_clock(
    group: PostgresMembership, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """A lease ends at the server's clock plus the lease; once past, the member drops out."""
    group.view()  # create the tables first, so the timing below covers one operation
    before = server_time(admin)
    group.join("a", "ta", weight=1.0, lease=SHORT)
    after = server_time(admin)
    group.join("b", "tb", weight=1.0, lease=LONG)
    assert before + SHORT <= document(admin, prefix)["members"]["a"][2] <= after + SHORT
    assert "a" in group.view()
    time.sleep(SHORT + 0.05)
    assert (3, {"b": 1.0}) == (group.view().version, group.view().weights)


def test_the_time_is_read_once_the_row_is_locked(
    group: PostgresMembership, postgres_url: str, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """A join waiting for another transaction's row lock times its lease from after the wait."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    table = sql.Identifier(f"{prefix}_membership")
    joined: list[MembershipView] = []
    with psycopg.connect(postgres_url) as blocker:
        blocker.execute(sql.SQL("SELECT 1 FROM {} WHERE grp = 'g' FOR UPDATE").format(table))
        thread = threading.Thread(
            target=lambda: joined.append(group.join("b", "tb", weight=1.0, lease=SHORT))
        )
        thread.start()
        time.sleep(0.3)
        assert [] == joined
        released = server_time(admin)
        blocker.commit()
    thread.join()
    assert document(admin, prefix)["members"]["b"][2] >= released + SHORT


def test_the_history_is_trimmed_to_the_oldest_acked_version(
    group: PostgresMembership, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """Versions no live member may act on leave the stored history."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    group.join("b", "tb", weight=1.0, lease=LONG)
    assert [1, 2] == sorted(group.join("c", "tc", weight=1.0, lease=LONG).history)
    assert [2] == sorted(group.heartbeat("a", "ta", lease=LONG, acked=2).history)
    group.heartbeat("b", "tb", lease=LONG, acked=3)
    assert {} == dict(group.heartbeat("a", "ta", lease=LONG, acked=3).history)
    assert ["3"] == list(document(admin, prefix)["history"])


# -- connections and races ----------------------------------------------------------------------


def test_stores_on_other_connections_share_the_group(
    group: PostgresMembership, postgres_url: str, prefix: str
) -> None:
    """A store on a borrowed connection sees the group, and close() leaves that connection open."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        other = PostgresMembership(conn, "g", table_prefix=prefix)
        assert (2, {"a": 1.0, "b": 1.0}, {"a": 1, "b": 2}) == summary(
            other.join("b", "tb", weight=1.0, lease=LONG)
        )
        assert summary(group.view()) == summary(other.view())
        other.close()
        assert not conn.closed
        conn.execute("BEGIN")
        inside = PostgresMembership(conn, "g", table_prefix=prefix)
        with pytest.raises(BackendError, match="inside a transaction: a membership store"):
            inside.view()
        conn.execute("ROLLBACK")
    with pytest.raises(BackendError, match="closed"):
        other.view()


def test_eight_threads_joining_at_once_each_bump_the_version_once(
    group: PostgresMembership, postgres_url: str, prefix: str
) -> None:
    """Eight threads, each with its own store and connection: versions 1..8 once each."""
    group.view()  # create the tables before the race
    start = threading.Barrier(8)
    versions: dict[str, int] = {}

    def worker(i: int) -> None:
        store = PostgresMembership(postgres_url, "g", table_prefix=prefix)
        try:
            store.view()
            start.wait()
            view = store.join(f"m{i}", f"t{i}", weight=1.0, lease=LONG)
            versions[f"m{i}"] = view.version
            for _ in range(3):
                store.heartbeat(f"m{i}", f"t{i}", lease=LONG, acked=view.version)
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert list(range(1, 9)) == sorted(versions.values())
    final = group.view()
    assert (8, sorted(versions)) == (final.version, sorted(final.members))
    assert all(final.members[name].acked >= versions[name] for name in versions)


# -- errors -------------------------------------------------------------------------------------


def test_a_malformed_row_is_a_backend_error_and_rolls_back(
    group: PostgresMembership, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """A row holding something else raises BackendError naming the group; nothing is left open."""
    group.join("a", "ta", weight=1.0, lease=LONG)
    good = row(admin, prefix)[1]
    set_state(admin, prefix, '{"version": "x"}')
    with pytest.raises(BackendError, match=r"\.join: .*group 'g'.*malformed") as info:
        group.join("b", "tb", weight=1.0, lease=LONG)
    assert isinstance(info.value.__cause__, ValueError)
    assert '{"version": "x"}' == row(admin, prefix)[1]
    set_state(admin, prefix, good)
    assert (2, {"a": 1.0, "b": 1.0}, {"a": 1, "b": 2}) == summary(
        group.join("b", "tb", weight=1.0, lease=LONG)
    )


def test_a_newer_schema_version_is_refused(
    postgres_url: str, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """A schema row recording a newer membership layout makes the store refuse to run."""
    with PostgresBackend(postgres_url, table_prefix=prefix) as backend:
        backend.membership("g").view()
    schema = sql.Identifier(f"{prefix}_schema")
    admin.execute(
        sql.SQL("UPDATE {} SET version = 2 WHERE component = 'membership'").format(schema)
    )
    store = PostgresMembership(postgres_url, "g", table_prefix=prefix)
    with pytest.raises(BackendError, match=f"{prefix}_membership has schema version 2"):
        store.view()
    store.close()


def test_unreachable_postgres_is_backend_unavailable() -> None:
    """Connection refused raises BackendUnavailableError naming the operation, chained."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/test?connect_timeout=2"
    store = PostgresMembership(url, "g")
    with pytest.raises(BackendUnavailableError, match=r"\.join: PostgreSQL is unreachable") as info:
        store.join("a", "ta", weight=1.0, lease=LONG)
    assert isinstance(info.value.__cause__, psycopg.OperationalError)

    async def main() -> None:
        astore = AsyncPostgresMembership(url, "g")
        with pytest.raises(BackendUnavailableError, match=r"\.view: "):
            await astore.view()
        await astore.close()

    asyncio.run(main())


def test_bad_group_names_and_arguments_are_refused(
    postgres_url: str, group: PostgresMembership, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """Invalid groups raise ConfigurationError at construction; bad operations before any I/O."""
    for bad in ("", "no spaces", "x" * 101, "a;drop", 7):
        with pytest.raises(ConfigurationError, match="group"):
            PostgresMembership(postgres_url, bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="table_prefix"):
        PostgresMembership(postgres_url, "g", table_prefix="bad-prefix")
    with PostgresBackend(postgres_url, table_prefix=prefix) as backend:
        with pytest.raises(ConfigurationError, match="group"):
            backend.membership("a b")
        with pytest.raises(ConfigurationError, match="group"):
            backend.async_membership("")
    with pytest.raises(ConfigurationError, match="weight"):
        group.join("a", "ta", weight=0.0, lease=LONG)
    with pytest.raises(ConfigurationError, match="acked"):
        group.heartbeat("a", "ta", lease=LONG, acked=-1)
    tables = admin.execute(
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE %s", (f"{prefix}%",)
    )
    assert (0,) == tables.fetchone()


# -- async and the backend ----------------------------------------------------------------------


def test_the_async_twin_shares_the_group(
    group: PostgresMembership, postgres_url: str, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """AsyncPostgresMembership reads and writes the sync store's row with the same rules."""
    group.join("a", "ta", weight=1.0, lease=LONG)

    async def main() -> None:
        store = AsyncPostgresMembership(postgres_url, "g", table_prefix=prefix)
        assert "g" == store.group
        assert "AsyncPostgresMembership('g', table_prefix=" in repr(store)
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
        set_state(admin, prefix, "[]")
        with pytest.raises(BackendError, match=r"AsyncPostgresMembership.*\.view: .*'g'"):
            await store.view()
        await store.close()

    asyncio.run(main())


def test_backend_factories_make_stores_it_closes(postgres_url: str, prefix: str) -> None:
    """membership() and async_membership() share one group; close() / aclose() close them."""

    async def main() -> None:
        backend = PostgresBackend(postgres_url, table_prefix=prefix)
        store = backend.membership("orders")
        astore = backend.async_membership("orders")
        assert ("orders", "orders", prefix) == (store.group, astore.group, store.table_prefix)
        store.join("a", "ta", weight=1.0, lease=LONG)
        assert ["a"] == list((await astore.view()).members)
        await backend.aclose()
        with pytest.raises(BackendError, match="closed"):
            store.view()
        with pytest.raises(BackendError, match="closed"):
            await astore.view()

    asyncio.run(main())
