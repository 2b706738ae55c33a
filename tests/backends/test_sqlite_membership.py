"""SqliteMembership, its async twin and SqliteBackend's membership factories.

Beyond the contract: the table, its schema row and the row per group, leases on the clock's
``wall()`` (a ManualClock: no waiting), rows left unwritten when nothing changed, eight
threads on their own connections, malformed rows (rolled back), a newer schema, ``:memory:``
sharing and the factories.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import pytest

from invresilience.backends.sqlite import (
    MEMBERSHIP_SCHEMA_VERSION,
    AsyncSqliteMembership,
    SqliteBackend,
    SqliteMembership,
)
from invresilience.exceptions import BackendError, ConfigurationError, MembershipConflictError
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from invresilience import MembershipView

#: The wall clock's reading when a test starts.
WALL = 1_800_000_000.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A database file of this test's own."""
    return tmp_path / "members.db"


@pytest.fixture
def clock() -> ManualClock:
    """The stores' clock: its monotonic reading is far from its wall reading."""
    return ManualClock(5.0, wall_start=WALL)


@pytest.fixture
def group(path: Path, clock: ManualClock) -> Iterator[SqliteMembership]:
    """The membership of group ``g`` on the test's file."""
    with SqliteMembership(path, "g", clock=clock) as store:
        yield store


@pytest.fixture
def inspector(path: Path, group: SqliteMembership) -> Iterator[sqlite3.Connection]:
    """A connection of its own on the file, to read and sabotage rows."""
    connection = sqlite3.connect(path, isolation_level=None)
    yield connection
    connection.close()


def document(inspector: sqlite3.Connection, group: str = "g") -> dict[str, Any]:
    """The group's JSON document."""
    found = inspector.execute(
        "SELECT state FROM invresilience_membership WHERE grp = ?", (group,)
    ).fetchone()
    assert found is not None
    return json.loads(found[0])  # type: ignore[no-any-return]


def data_version(inspector: sqlite3.Connection) -> int:
    """SQLite's count of commits by other connections that changed the file, as *inspector* sees it."""
    return int(inspector.execute("PRAGMA data_version").fetchone()[0])


def summary(view: MembershipView) -> tuple[int, dict[str, float], dict[str, int]]:
    """A view's version, weights and acked versions."""
    return (
        view.version,
        view.weights,
        {name: member.acked for name, member in view.members.items()},
    )


# -- the table and its rows ---------------------------------------------------------------------


def test_a_group_is_one_row_and_the_schema_records_its_version(
    group: SqliteMembership, inspector: sqlite3.Connection
) -> None:
    """Joins, heartbeats and leaves keep one row per group; the schema row says version 1."""
    assert (0, {}, {}) == summary(group.view())
    assert (1, {"a": 1.0}, {"a": 1}) == summary(group.join("a", "ta", weight=1.0, lease=10))
    assert (2, {"a": 1.0, "b": 2.5}, {"a": 1, "b": 2}) == summary(
        group.join("b", "tb", weight=2.5, lease=10)
    )
    assert (2, {"a": 1.0, "b": 2.5}, {"a": 2, "b": 2}) == summary(
        group.heartbeat("a", "ta", lease=10, acked=2)
    )
    assert (3, {"a": 1.0}, {"a": 2}) == summary(group.leave("b", "tb"))
    stored = document(inspector)
    assert (3, {"a": [1.0, 2, WALL + 10, "ta"]}) == (stored["version"], stored["members"])
    schema = inspector.execute("SELECT component, version FROM invresilience_schema").fetchall()
    assert [("membership", MEMBERSHIP_SCHEMA_VERSION)] == schema
    assert ("g", f"SqliteMembership({str(group.path)!r}, group='g')") == (group.group, repr(group))


def test_leases_run_on_the_clocks_wall_reading(
    group: SqliteMembership, clock: ManualClock, inspector: sqlite3.Connection
) -> None:
    """A lease ends at wall() plus the lease, to the instant; then the member drops (one bump)."""
    group.join("a", "ta", weight=1.0, lease=10)
    clock.advance(4)
    assert (2, 6.0, 30.0) == (
        group.join("b", "tb", weight=1.0, lease=30).version,
        group.view().members["a"].expires_in,
        group.view().members["b"].expires_in,
    )
    assert WALL + 10 == document(inspector)["members"]["a"][2]
    with pytest.raises(MembershipConflictError) as info:
        group.join("a", "other", weight=1.0, lease=10)
    assert ("g", "a", 6.0) == (info.value.group, info.value.member, info.value.retry_after)
    clock.advance(5.999)
    assert "a" in group.view()
    clock.advance(0.001)
    assert (3, {"b": 1.0}) == (group.view().version, group.view().weights)
    assert (4, {"a": 1.0, "b": 1.0}) == (
        group.join("a", "other", weight=1.0, lease=10).version,
        group.view().weights,
    )


def test_a_weight_change_bumps_the_version_and_a_renewal_does_not(
    group: SqliteMembership,
) -> None:
    """Joining again with the same token renews; with another weight it reweights (one bump)."""
    group.join("a", "ta", weight=1.0, lease=10)
    assert (1, {"a": 1.0}, {"a": 1}) == summary(group.join("a", "ta", weight=1.0, lease=10))
    assert (2, {"a": 4.0}, {"a": 1}) == summary(group.join("a", "ta", weight=4.0, lease=10))
    assert {1: {"a": 1.0}} == group.view().history


def test_stale_tokens_conflicts_and_reads_write_nothing(
    group: SqliteMembership, inspector: sqlite3.Connection
) -> None:
    """A stale heartbeat or leave, a clash and a view commit no change to the file."""
    group.join("a", "ta", weight=1.0, lease=10)
    group.join("b", "tb", weight=1.0, lease=10)
    before = (data_version(inspector), document(inspector))
    assert (2, {"a": 1.0, "b": 1.0}, {"a": 1, "b": 2}) == summary(
        group.heartbeat("a", "stale", lease=10, acked=2)
    )
    assert (2, {"a": 1.0, "b": 1.0}, {"a": 1, "b": 2}) == summary(group.leave("a", "stale"))
    with pytest.raises(MembershipConflictError):
        group.join("a", "other", weight=1.0, lease=10)
    group.view()
    assert before == (data_version(inspector), document(inspector))
    group.heartbeat("a", "ta", lease=10, acked=2)
    assert before[0] != data_version(inspector)


def test_the_history_is_trimmed_to_the_oldest_acked_version(
    group: SqliteMembership, inspector: sqlite3.Connection
) -> None:
    """Versions no live member may act on leave the stored history."""
    group.join("a", "ta", weight=1.0, lease=10)
    group.join("b", "tb", weight=1.0, lease=10)
    assert [1, 2] == sorted(group.join("c", "tc", weight=1.0, lease=10).history)
    assert [2] == sorted(group.heartbeat("a", "ta", lease=10, acked=2).history)
    group.heartbeat("b", "tb", lease=10, acked=3)
    assert {} == dict(group.heartbeat("a", "ta", lease=10, acked=3).history)
    assert ["3"] == list(document(inspector)["history"])


# -- connections and races ----------------------------------------------------------------------


def test_stores_on_other_connections_share_the_group(
    group: SqliteMembership, path: Path, clock: ManualClock
) -> None:
    """A second store on the file (its own connection) sees and changes the same group."""
    group.join("a", "ta", weight=1.0, lease=10)
    with SqliteMembership(path, "g", clock=clock) as other:
        assert (2, {"a": 1.0, "b": 1.0}, {"a": 1, "b": 2}) == summary(
            other.join("b", "tb", weight=1.0, lease=10)
        )
        assert summary(group.view()) == summary(other.view())
        with SqliteMembership(path, "h", clock=clock) as elsewhere:
            assert (0, {}, {}) == summary(elsewhere.view())


def test_eight_threads_joining_at_once_each_bump_the_version_once(
    group: SqliteMembership, path: Path, clock: ManualClock
) -> None:
    """Eight threads, each with its own store and connection: versions 1..8 once each."""
    start = threading.Barrier(8)
    versions: dict[str, int] = {}

    def worker(i: int) -> None:
        with SqliteMembership(path, "g", clock=clock) as store:
            start.wait()
            view = store.join(f"m{i}", f"t{i}", weight=1.0, lease=10)
            versions[f"m{i}"] = view.version
            for _ in range(3):
                store.heartbeat(f"m{i}", f"t{i}", lease=10, acked=view.version)

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
    group: SqliteMembership, inspector: sqlite3.Connection
) -> None:
    """A row holding something else raises BackendError naming the group; nothing is left open."""
    group.join("a", "ta", weight=1.0, lease=10)
    good = json.dumps(document(inspector))
    inspector.execute("UPDATE invresilience_membership SET state = '{\"version\": 1}'")
    with pytest.raises(BackendError, match=r"\.join: .*group 'g'.*malformed") as info:
        group.join("b", "tb", weight=1.0, lease=10)
    assert isinstance(info.value.__cause__, ValueError)
    inspector.execute("UPDATE invresilience_membership SET state = ?", (good,))
    assert (2, {"a": 1.0, "b": 1.0}, {"a": 1, "b": 2}) == summary(
        group.join("b", "tb", weight=1.0, lease=10)
    )


def test_a_newer_schema_version_is_refused(path: Path, inspector: sqlite3.Connection) -> None:
    """A schema row recording a newer membership layout makes a new store refuse to open."""
    inspector.execute("UPDATE invresilience_schema SET version = 2 WHERE component = 'membership'")
    with pytest.raises(BackendError, match="membership schema version 2"):
        SqliteMembership(path, "g")


def test_bad_group_names_and_arguments_are_refused(
    group: SqliteMembership, path: Path, inspector: sqlite3.Connection
) -> None:
    """Invalid groups raise ConfigurationError at construction; bad operations before any I/O."""
    for bad in ("", "no spaces", "x" * 101, "a;drop", 7):
        with pytest.raises(ConfigurationError, match="group"):
            SqliteMembership(path, bad)  # type: ignore[arg-type]
    with SqliteBackend(path) as backend:
        with pytest.raises(ConfigurationError, match="group"):
            backend.membership("a b")
        with pytest.raises(ConfigurationError, match="group"):
            backend.async_membership("")
    with pytest.raises(ConfigurationError, match="lease"):
        group.join("a", "ta", weight=1.0, lease=float("inf"))
    with pytest.raises(ConfigurationError, match="member"):
        group.heartbeat("", "ta", lease=10, acked=0)
    assert [] == inspector.execute("SELECT * FROM invresilience_membership").fetchall()
    group.close()
    with pytest.raises(BackendError, match="closed"):
        group.view()


# -- async and the backend ----------------------------------------------------------------------


def test_the_async_twin_shares_the_group(
    group: SqliteMembership, path: Path, clock: ManualClock
) -> None:
    """AsyncSqliteMembership, over a path or a store, applies the same rules to the same row."""
    group.join("a", "ta", weight=1.0, lease=10)
    with pytest.raises(ConfigurationError, match="exactly one"):
        AsyncSqliteMembership()
    with pytest.raises(ConfigurationError, match="exactly one"):
        AsyncSqliteMembership(path, store=group)

    async def main() -> None:
        async with AsyncSqliteMembership(path, "g", clock=clock) as store:
            assert ("g", f"AsyncSqliteMembership({store.store!r})") == (store.group, repr(store))
            assert (2, {"a": 1.0, "b": 2.0}, {"a": 1, "b": 2}) == summary(
                await store.join("b", "tb", weight=2.0, lease=10)
            )
            with pytest.raises(MembershipConflictError):
                await store.join("a", "other", weight=1.0, lease=10)
            assert (2, {"a": 1.0, "b": 2.0}, {"a": 1, "b": 2}) == summary(
                await store.heartbeat("a", "stale", lease=10, acked=2)
            )
            assert (3, {"a": 1.0}, {"a": 1}) == summary(await store.leave("b", "tb"))
            joined = await asyncio.gather(
                *(store.join(f"m{i}", f"t{i}", weight=1.0, lease=10) for i in range(4))
            )
            assert [4, 5, 6, 7] == sorted(view.version for view in joined)
            clock.advance(10)
            assert (8, {}) == ((await store.view()).version, (await store.view()).weights)
        assert store.store.closed
        shared = AsyncSqliteMembership(store=group)
        assert 8 == (await shared.view()).version

    asyncio.run(main())


def test_backend_factories_use_its_clock_and_close_their_stores(
    path: Path, clock: ManualClock
) -> None:
    """File stores are one per call on the backend's clock; :memory: shares one per group."""
    with SqliteBackend(path, clock=clock) as backend:
        store = backend.membership("orders")
        assert (clock, "orders") == (store.clock, store.group)
        store.join("a", "ta", weight=1.0, lease=10)
        other = backend.async_membership("orders")
        assert other.store is not store
        assert ["a"] == list(asyncio.run(other.view()).members)
    assert (store.closed, other.store.closed) == (True, True)
    with pytest.raises(BackendError, match="closed"):
        backend.membership("orders")
    with SqliteBackend(":memory:", clock=clock) as memory:
        first = memory.membership("g")
        assert first is memory.membership("g")
        assert first is memory.async_membership("g").store
        assert first is not memory.membership("h")
        first.join("a", "ta", weight=1.0, lease=10)
        first.close()
        assert (0, False) == (memory.membership("g").view().version, memory.membership("g").closed)
