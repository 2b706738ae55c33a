"""The SQLite dead-letter store: schema, many connections and processes, races, the backend."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invresilience import DeadLetterQueue, open_backend
from invresilience._core.dlq import REASONS, DeadLetter, LetterFilter, QueueStats
from invresilience.backends.memory import MemoryDeadLetterStore
from invresilience.backends.sqlite import (
    DEAD_LETTER_SCHEMA_VERSION,
    SCHEMA_VERSION,
    AsyncSqliteDeadLetterStore,
    SqliteBackend,
    SqliteDeadLetterStore,
    SqliteIdempotencyStore,
)
from invresilience.exceptions import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    DeadLetterQueueFullError,
)
from invresilience.testing import ManualClock
from invresilience.typing import AsyncDeadLetterStore, Backend, DeadLetterStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from invresilience._core.dlq import Added

T0 = 1_712_345_678.25
MIB = 1 << 20


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A database file of this test's own."""
    return tmp_path / "letters.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteDeadLetterStore]:
    """A store of queue 'q' on the test's file."""
    with SqliteDeadLetterStore(path, "q") as opened:
        yield opened


def letter(letter_id: str, queue: str = "q", **fields: Any) -> DeadLetter:
    """A letter of *queue* with the given id; *fields* override the defaults."""
    values: dict[str, Any] = {
        "id": letter_id,
        "queue": queue,
        "payload": f"job {letter_id}".encode(),
        "reason": "exhausted",
        "first_failed_at": T0,
        "last_failed_at": T0,
        "dead_lettered_at": T0,
    }
    values.update(fields)
    return DeadLetter(**values)


def rows(path: Path, statement: str, parameters: tuple[object, ...] = ()) -> list[Any]:
    """What *statement* returns on a connection of its own."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(statement, parameters).fetchall()
    finally:
        connection.close()


def run_threads(workers: int, work: Callable[[int], None]) -> None:
    """Run ``work(index)`` in *workers* threads released together, and wait for them."""
    barrier = threading.Barrier(workers)

    def body(index: int) -> None:
        barrier.wait()
        work(index)

    threads = [threading.Thread(target=body, args=(index,)) for index in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# -- the schema -----------------------------------------------------------------------------------


def test_schema_is_created_and_versioned(store: SqliteDeadLetterStore, path: Path) -> None:
    """A dead-letter store records its own component and creates its tables and indexes."""
    names = {name for (name,) in rows(path, "SELECT name FROM sqlite_master")}
    assert [("dead_letters", DEAD_LETTER_SCHEMA_VERSION)] == rows(
        path, "SELECT component, version FROM invresilience_schema"
    )
    assert {
        "invresilience_dead_letters",
        "invresilience_dead_letter_queues",
        "invresilience_dead_letters_sequence",
        "invresilience_dead_letters_key",
        "invresilience_dead_letters_time",
    } <= names
    assert "invresilience_idempotency" not in names


# The tables and rows an invresilience without dead letters wrote (schema version 1).
_IDEMPOTENCY_ONLY = (
    "CREATE TABLE invresilience_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
    "INSERT INTO invresilience_schema VALUES ('idempotency', 1)",
    """CREATE TABLE "invresilience_idempotency" (
        namespace TEXT NOT NULL, "key" TEXT NOT NULL, fingerprint TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'completed', 'released')),
        fence INTEGER NOT NULL, token TEXT NOT NULL, lease_until REAL NOT NULL,
        expires_at REAL NOT NULL, result BLOB, PRIMARY KEY (namespace, "key"))""",
    """CREATE INDEX "invresilience_idempotency_expires"
        ON "invresilience_idempotency" (namespace, expires_at)""",
    (
        "INSERT INTO invresilience_idempotency VALUES"
        " ('default', 'k', 'fp', 'completed', 1, 't', 0.0, 1e12, x'6f6c64')"
    ),
)


def test_an_idempotency_only_file_gains_the_dead_letter_tables(path: Path) -> None:
    """A file from before dead letters gets their tables and keeps its idempotency records."""
    connection = sqlite3.connect(path, isolation_level=None)
    for statement in _IDEMPOTENCY_ONLY:
        connection.execute(statement)
    connection.close()
    with SqliteDeadLetterStore(path, "q") as upgraded:
        stored = upgraded.add(letter("a")).letter
        assert stored == upgraded.get("a")
    assert [("dead_letters", DEAD_LETTER_SCHEMA_VERSION), ("idempotency", SCHEMA_VERSION)] == rows(
        path, "SELECT component, version FROM invresilience_schema ORDER BY component"
    )
    with SqliteIdempotencyStore(path) as idempotency:
        claim = idempotency.claim("k", "fp", lease=60.0)
    assert b"old" == getattr(claim, "result", None)
    # Opening again migrates nothing and finds the letter.
    with SqliteDeadLetterStore(path, "q") as again:
        assert stored == again.get("a")


def test_both_components_share_one_file(path: Path) -> None:
    """Idempotency and dead-letter stores opened on one file, in either order, both work."""
    with SqliteDeadLetterStore(path, "q") as letters, SqliteIdempotencyStore(path) as records:
        letters.add(letter("a"))
        records.claim("k", "fp", lease=60.0)
    assert [("dead_letters", 1), ("idempotency", 1)] == rows(
        path, "SELECT component, version FROM invresilience_schema ORDER BY component"
    )


def test_a_future_dead_letter_schema_is_refused(path: Path) -> None:
    """A file recording a newer dead-letter schema is refused; idempotency stores still open."""
    SqliteDeadLetterStore(path, "q").close()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(
        "UPDATE invresilience_schema SET version = ? WHERE component = 'dead_letters'",
        (DEAD_LETTER_SCHEMA_VERSION + 1,),
    )
    connection.close()
    with pytest.raises(BackendError, match=f"dead_letters schema version {2}.*upgrade"):
        SqliteDeadLetterStore(path, "q")
    SqliteIdempotencyStore(path).close()
    with SqliteDeadLetterStore(path, "q", table_prefix="other") as separate:
        assert separate.add(letter("a")).created


# -- durability, connections and processes --------------------------------------------------------


def test_letters_survive_reopening_and_sequences_are_never_reused(path: Path) -> None:
    """Letters outlive their store; after a purge and a reopen the counter still moves on."""
    with SqliteDeadLetterStore(path, "q", durability="full") as first:
        kept = first.add(letter("a", headers={"tenant": "t1"}, key="k1")).letter
        first.add(letter("b"))
        assert 2 == first.purge(LetterFilter())
        last = first.add(letter("c")).letter
    with SqliteDeadLetterStore(path, "q") as second:
        assert [last] == second.list(LetterFilter())
        assert None is second.get(kept.id)
        assert 4 == second.add(letter("a")).letter.sequence
    assert (1, 3) == (kept.sequence, last.sequence)


def test_two_connections_see_each_others_letters(path: Path) -> None:
    """Two stores of one queue on one file share letters, ids and the sequence."""
    with SqliteDeadLetterStore(path, "q") as one, SqliteDeadLetterStore(path, "q") as two:
        first = one.add(letter("a")).letter
        assert first == two.get("a")
        again = two.add(letter("a", payload=b"other"))
        second = two.add(letter("b")).letter
        assert (False, first) == (again.created, again.letter)
        assert [first, second] == one.list(LetterFilter())
        assert True is one.replace(attrs.evolve(second, attempts=5))
        assert 5 == getattr(two.get("b"), "attempts", None)


_ADD_IN_A_PROCESS = """
import sys
from invresilience._core.dlq import DeadLetter
from invresilience.backends.sqlite import SqliteDeadLetterStore
with SqliteDeadLetterStore(sys.argv[1], "q") as store:
    seen = ",".join(letter.id for letter in store.list(__import__(
        "invresilience._core.dlq", fromlist=["LetterFilter"]).LetterFilter()))
    letter = DeadLetter(id=sys.argv[2], queue="q", payload=b"\\x00\\xff", reason="fatal",
                        first_failed_at=1.5, last_failed_at=2.5, dead_lettered_at=3.5)
    print(store.add(letter).letter.sequence, seen)
"""


def _add_in_a_process(path: Path, letter_id: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", _ADD_IN_A_PROCESS, str(path), letter_id],
        stdout=subprocess.PIPE,
        env=environment,
        text=True,
    )


def test_processes_see_each_others_letters(store: SqliteDeadLetterStore, path: Path) -> None:
    """Letters added by other processes are seen here, and theirs see ours; sequences stay unique."""
    store.add(letter("here"))
    assert "2 here" == _add_in_a_process(path, "there").communicate(timeout=120)[0].strip()
    there = store.get("there")
    assert there is not None
    assert (b"\x00\xff", "fatal", 2) == (there.payload, there.reason, there.sequence)
    processes = [_add_in_a_process(path, f"p{index}") for index in range(4)]
    sequences = sorted(int(p.communicate(timeout=120)[0].split()[0]) for p in processes)
    assert [3, 4, 5, 6] == sequences
    assert 6 == store.count(LetterFilter())


# -- races ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False], ids=["one store", "a store each"])
def test_racing_adds_of_distinct_ids_all_land(path: Path, shared: bool) -> None:
    """8 threads x 200 adds: every letter is stored, with a sequence of its own, in order."""
    workers, each = 8, 200
    stores = [SqliteDeadLetterStore(path, "q")]
    stores += [stores[0] if shared else SqliteDeadLetterStore(path, "q") for _ in range(7)]
    added: list[Added] = []

    def work(index: int) -> None:
        added.extend(stores[index].add(letter(f"w{index}-{number}")) for number in range(each))

    run_threads(workers, work)
    listed = stores[0].list(LetterFilter(), limit=10_000)
    for opened in stores:
        opened.close()
    sequences = [result.letter.sequence for result in added]
    assert workers * each == len(added) == len(listed) == len(set(sequences))
    assert all(result.created for result in added)
    assert sorted(sequences) == [stored.sequence for stored in listed]
    assert {result.letter.id for result in added} == {stored.id for stored in listed}


def test_racing_adds_of_one_id_create_one(path: Path) -> None:
    """8 threads (8 connections) adding one id: one creates it, all get the same letter."""
    stores = [SqliteDeadLetterStore(path, "q") for _ in range(8)]
    added: list[Added] = []
    run_threads(8, lambda index: added.append(stores[index].add(letter("same", attempts=index))))
    for opened in stores:
        opened.close()
    created = [result for result in added if result.created]
    assert 1 == len(created)
    assert {created[0].letter} == {result.letter for result in added}
    assert 1 == created[0].letter.sequence


def test_the_cap_holds_exactly_under_a_race(path: Path) -> None:
    """8 connections x 20 adds into a cap of 50 (reject): exactly 50 stored, 110 refused."""
    stores = [SqliteDeadLetterStore(path, "q") for _ in range(8)]
    created: list[str] = []
    refused: list[DeadLetterQueueFullError] = []

    def work(index: int) -> None:
        for number in range(20):
            try:
                stores[index].add(letter(f"w{index}-{number}"), max_letters=50)
                created.append(f"w{index}-{number}")
            except DeadLetterQueueFullError as exc:
                refused.append(exc)

    run_threads(8, work)
    stored = stores[0].list(LetterFilter(), limit=1000)
    for opened in stores:
        opened.close()
    assert (50, 110) == (len(created), len(refused))
    assert sorted(created) == sorted(stored_letter.id for stored_letter in stored)


def test_eviction_keeps_the_cap_exact_under_a_race(path: Path) -> None:
    """8 connections x 20 adds into a cap of 50 (evict): 50 newest stay, 110 evicted once each."""
    stores = [SqliteDeadLetterStore(path, "q") for _ in range(8)]
    added: list[Added] = []

    def work(index: int) -> None:
        added.extend(
            stores[index].add(letter(f"w{index}-{number}"), max_letters=50, evict_oldest=True)
            for number in range(20)
        )

    run_threads(8, work)
    stored = stores[0].list(LetterFilter(), limit=1000)
    for opened in stores:
        opened.close()
    evicted = [old for result in added for old in result.evicted]
    by_sequence = sorted(added, key=lambda result: result.letter.sequence)
    assert 50 == len(stored)
    assert 110 == len(evicted) == len(set(evicted))
    assert [result.letter.id for result in by_sequence[-50:]] == [s.id for s in stored]
    assert {result.letter.id for result in by_sequence[:-50]} == set(evicted)


# -- values ---------------------------------------------------------------------------------------


def test_a_one_mib_binary_payload_round_trips(store: SqliteDeadLetterStore) -> None:
    """A 1 MiB payload of every byte value comes back byte for byte."""
    payload = bytes(range(256)) * (MIB // 256)
    stored = store.add(letter("big", payload=payload)).letter
    fetched = store.get("big")
    assert fetched is not None
    assert (MIB, payload) == (len(fetched.payload), fetched.payload)
    assert stored == fetched


def test_text_utf8_cannot_carry_round_trips_and_filters(store: SqliteDeadLetterStore) -> None:
    """Lone surrogates and NULs in keys, errors and headers come back as given and filter exactly."""
    odd = letter(
        "odd",
        key="k\udc80",
        fingerprint="f\x00p",
        error_type="builtins.OSError",
        error_message="no such file: b'\\xff' -> '\udcff'",
        traceback="Traceback\udcfe",
        headers={"h\udc80": "v\x00\udc81"},
    )
    plain = letter("plain", key="k")
    stored = [store.add(odd).letter, store.add(plain).letter]
    assert stored == store.list(LetterFilter())
    assert [stored[0]] == store.list(LetterFilter(key="k\udc80"))
    assert [stored[1]] == store.list(LetterFilter(key="k"))
    assert 0 == store.count(LetterFilter(key="k\udc81"))


def test_whole_second_and_extreme_times_round_trip(store: SqliteDeadLetterStore) -> None:
    """Integer times and times near the range's ends are stored as the floats they equal."""
    stored = store.add(
        letter(
            "t", first_failed_at=0, last_failed_at=-1e300, dead_lettered_at=1.7976931348623157e308
        )
    ).letter
    fetched = store.get("t")
    assert stored == fetched
    assert fetched is not None
    assert (0.0, -1e300) == (fetched.first_failed_at, fetched.last_failed_at)


def test_odd_filter_and_cursor_values(store: SqliteDeadLetterStore) -> None:
    """Huge cursors and bounds, empty reason sets and non-str keys select as matches() does."""
    stored = store.add(letter("a", dead_lettered_at=5.0)).letter
    assert [] == store.list(LetterFilter(), after=2**70)
    assert [stored] == store.list(LetterFilter(), after=-(2**70), limit=2**70)
    assert [stored] == store.list(LetterFilter(before=10**400, since=-(10**400)))
    assert 0 == store.count(LetterFilter(since=10**400))
    assert 0 == store.count(LetterFilter(reasons=frozenset()))
    assert 0 == store.count(LetterFilter(key=5))  # type: ignore[arg-type]
    assert 0 == store.count(LetterFilter(since=float("nan")))
    assert [stored] == store.list(LetterFilter(), after=0.5)  # type: ignore[arg-type]


@st.composite
def _letters(draw: st.DrawFn) -> list[DeadLetter]:
    count = draw(st.integers(0, 12))
    return [
        letter(
            f"l{index}",
            reason=draw(st.sampled_from(REASONS)),
            key=draw(st.sampled_from([None, "k1", "k2"])),
            dead_lettered_at=float(draw(st.integers(0, 6))),
        )
        for index in range(count)
    ]


_FILTERS = st.builds(
    LetterFilter,
    reasons=st.none() | st.frozensets(st.sampled_from(REASONS), max_size=3),
    key=st.sampled_from([None, "k1", "k2", "k3"]),
    since=st.none() | st.integers(0, 7).map(float),
    before=st.none() | st.integers(0, 7).map(float),
)


@settings(max_examples=150, deadline=None)
@given(
    letters=_letters(),
    deleted=st.sets(st.integers(0, 12)),
    where=_FILTERS,
    after=st.integers(0, 14),
)
def test_answers_like_the_memory_store(
    letters: list[DeadLetter], deleted: set[int], where: LetterFilter, after: int
) -> None:
    """list, count, stats and purge agree with the reference store for any filter."""
    reference = MemoryDeadLetterStore("q")
    with SqliteDeadLetterStore(":memory:", "q") as sqlite_store:
        for one in letters:
            assert reference.add(one) == sqlite_store.add(one)
        ids = [f"l{index}" for index in deleted]
        assert reference.delete(ids) == sqlite_store.delete(ids)
        for limit in (1, 3, 100):
            expected = reference.list(where, after=after, limit=limit)
            assert expected == sqlite_store.list(where, after=after, limit=limit)
        assert reference.count(where) == sqlite_store.count(where)
        assert reference.stats() == sqlite_store.stats()
        assert reference.purge(where) == sqlite_store.purge(where)
        assert reference.list(LetterFilter()) == sqlite_store.list(LetterFilter())


def test_stats_come_from_one_query(store: SqliteDeadLetterStore) -> None:
    """stats() totals per reason, in REASONS order, with the oldest and newest times."""
    store.add(letter("a", reason="manual", dead_lettered_at=9.0))
    store.add(letter("b", reason="fatal", dead_lettered_at=3.0))
    store.add(letter("c", reason="manual", dead_lettered_at=1.5))
    stats = store.stats()
    assert QueueStats(total=3, by_reason={"fatal": 1, "manual": 2}, oldest=1.5, newest=9.0) == stats
    assert ["fatal", "manual"] == list(stats.by_reason)
    store.purge(LetterFilter())
    assert QueueStats(total=0) == store.stats()


def test_delete_many_ids_in_one_call(store: SqliteDeadLetterStore) -> None:
    """Deleting 1200 ids (more than one statement's worth), repeats and unknowns, counts right."""
    for index in range(1200):
        store.add(letter(f"d{index}"))
    ids = [f"d{index}" for index in range(1200)] + ["d0", "absent", "not an id!", ""]
    assert 1200 == store.delete(ids)
    assert 0 == store.count(LetterFilter())
    assert 0 == store.delete([])


def test_add_is_one_transaction(store: SqliteDeadLetterStore, path: Path) -> None:
    """An insert SQLite refuses rolls back the eviction before it: the oldest letter stays."""
    kept = store.add(letter("old")).letter
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON invresilience_dead_letters"
        " WHEN NEW.id = 'bad' BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    connection.close()
    with pytest.raises(BackendError, match="refused") as info:
        store.add(letter("bad"), max_letters=1, evict_oldest=True)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert [kept] == store.list(LetterFilter())
    # The counter moved back too: the next letter takes the next sequence.
    assert 2 == store.add(letter("good"), max_letters=2).letter.sequence


def test_a_full_queue_rejects_before_anything_changes(store: SqliteDeadLetterStore) -> None:
    """At the cap, reject raises naming the queue and limit; an existing id is still found."""
    first = store.add(letter("a")).letter
    with pytest.raises(DeadLetterQueueFullError) as info:
        store.add(letter("b"), max_letters=1)
    assert ("q", 1) == (info.value.queue, info.value.limit)
    existing = store.add(letter("a"), max_letters=1)
    assert (False, first) == (existing.created, existing.letter)
    assert [first] == store.list(LetterFilter())


def test_the_cap_counts_rows_whoever_changes_them(store: SqliteDeadLetterStore, path: Path) -> None:
    """Letters deleted or inserted by plain SQL (or purged) count for the cap like any others."""
    for letter_id in ("a", "b", "c"):
        store.add(letter(letter_id))
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("DELETE FROM invresilience_dead_letters WHERE id = 'a'")
    assert store.add(letter("d"), max_letters=3).created
    connection.execute(
        "INSERT INTO invresilience_dead_letters SELECT queue, 'e', 99, reason, \"key\","
        " fingerprint, error_type, error_message, traceback, attempts, first_failed_at,"
        " last_failed_at, dead_lettered_at, headers, payload"
        " FROM invresilience_dead_letters WHERE id = 'b'"
    )
    connection.close()
    with pytest.raises(DeadLetterQueueFullError):
        store.add(letter("f"), max_letters=4)
    assert ("b",) == store.add(letter("f"), max_letters=4, evict_oldest=True).evicted
    assert ["c", "d", "f", "e"] == [one.id for one in store.list(LetterFilter())]  # e is 99
    assert 4 == store.purge(LetterFilter())
    assert [(0,)] == rows(path, "SELECT held FROM invresilience_dead_letter_queues")


# -- errors and arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("queue", ["", "has space", "x" * 101, "é", None, 5])
def test_bad_queue_names_are_refused(path: Path, queue: Any) -> None:
    """Queue names outside 1 to 100 of [A-Za-z0-9_.:-] are ConfigurationErrors everywhere."""
    with pytest.raises(ConfigurationError, match=r"SqliteDeadLetterStore\.queue"):
        SqliteDeadLetterStore(path, queue)
    with pytest.raises(ConfigurationError, match=r"SqliteDeadLetterStore\.queue"):
        AsyncSqliteDeadLetterStore(path, queue)
    with SqliteBackend(path) as backend, pytest.raises(ConfigurationError):
        backend.dead_letter_queue(queue)
    assert not path.exists()


@pytest.mark.parametrize(
    "prefix", ["", "1abc", "a-b", 'a"; DROP TABLE x; --', "sqlite_x", "SQLITE_", "p" * 42, None]
)
def test_bad_table_prefixes_are_refused(path: Path, prefix: Any) -> None:
    """A prefix that is not a plain SQL identifier (or is SQLite's own) is refused."""
    with pytest.raises(ConfigurationError, match=r"SqliteDeadLetterStore\.table_prefix"):
        SqliteDeadLetterStore(path, "q", table_prefix=prefix)
    assert not path.exists()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"path": ""}, "path"),
        ({"path": "a\x00b"}, "path"),
        ({"durability": "fast"}, "durability"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"busy_timeout": float("inf")}, "busy_timeout"),
    ],
)
def test_bad_constructor_arguments(tmp_path: Path, kwargs: dict[str, Any], field: str) -> None:
    """Each bad constructor argument is a ConfigurationError naming it."""
    arguments: dict[str, Any] = {"path": tmp_path / "x.db", **kwargs}
    with pytest.raises(ConfigurationError, match=rf"SqliteDeadLetterStore\.{field}"):
        SqliteDeadLetterStore(**arguments)


def test_bad_operation_arguments(store: SqliteDeadLetterStore) -> None:
    """Letters of other queues, bad ids, limits and caps are ConfigurationErrors; nothing stored."""
    with pytest.raises(ConfigurationError, match=r"letter\.queue"):
        store.add(letter("a", queue="other"))
    with pytest.raises(ConfigurationError, match=r"letter\.id"):
        store.add(attrs.evolve(letter("a"), id="bad id"))
    with pytest.raises(ConfigurationError, match="letter"):
        store.add("not a letter")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_letters"):
        store.add(letter("a"), max_letters=0)
    with pytest.raises(ConfigurationError, match=r"letter\.key"):
        store.add(letter("a", key=5))
    with pytest.raises(ConfigurationError, match=r"letter\.attempts"):
        store.add(letter("a", attempts=2**63))
    with pytest.raises(ConfigurationError, match="limit"):
        store.list(LetterFilter(), limit=0)
    with pytest.raises(ConfigurationError, match="after"):
        store.list(LetterFilter(), after="s1")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="since"):
        store.count(LetterFilter(since="yesterday"))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"letter\.queue"):
        store.replace(letter("a", queue="other"))
    assert 0 == store.count(LetterFilter())
    assert None is store.get("bad id")


def test_a_locked_database_is_unavailable(store: SqliteDeadLetterStore, path: Path) -> None:
    """A write lock held past busy_timeout makes add a BackendUnavailableError, chained."""
    with SqliteDeadLetterStore(path, "q", busy_timeout=0) as impatient:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(BackendUnavailableError) as info:
            impatient.add(letter("a"))
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert [] == impatient.list(LetterFilter())  # WAL readers do not wait for writers
    blocker.execute("ROLLBACK")
    blocker.close()
    assert store.add(letter("a")).created


def test_a_malformed_row_is_a_backend_error(store: SqliteDeadLetterStore, path: Path) -> None:
    """A row this code cannot read (an unknown reason) raises BackendError naming the letter."""
    store.add(letter("a"))
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("UPDATE invresilience_dead_letters SET reason = 'bogus'")
    connection.close()
    with pytest.raises(BackendError, match=r"'a'.*reason") as info:
        store.get("a")
    assert isinstance(info.value.__cause__, ValueError)


def test_a_closed_store_refuses_work(path: Path) -> None:
    """After close(), operations raise BackendError; closing again is a no-op."""
    store = SqliteDeadLetterStore(path, "q")
    store.add(letter("a"))
    store.close()
    store.close()
    assert store.closed
    for call in (
        lambda: store.add(letter("b")),
        lambda: store.get("a"),
        lambda: store.list(LetterFilter()),
        lambda: store.count(LetterFilter()),
        store.stats,
        lambda: store.replace(letter("a")),
        lambda: store.delete(["a"]),
        lambda: store.purge(LetterFilter()),
    ):
        with pytest.raises(BackendError, match="closed"):
            call()


def test_unopenable_path(tmp_path: Path) -> None:
    """A file in a missing directory is a BackendError, chained to SQLite's."""
    with pytest.raises(BackendError) as info:
        SqliteDeadLetterStore(tmp_path / "missing" / "x.db", "q")
    assert isinstance(info.value.__cause__, sqlite3.Error)


# -- the async store ------------------------------------------------------------------------------


def test_async_store_over_a_file_and_over_a_sync_store(
    store: SqliteDeadLetterStore, path: Path
) -> None:
    """The async store does every operation in worker threads, sharing the sync store's letters."""

    async def main() -> None:
        async with AsyncSqliteDeadLetterStore(path, "q") as opened:
            assert "q" == opened.queue
            first = (await opened.add(letter("a", reason="fatal"))).letter
            assert first == store.get("a")
            shared = AsyncSqliteDeadLetterStore(store=store)
            assert first == await shared.get("a")
            second = (await shared.add(letter("b"), max_letters=2)).letter
            assert [first, second] == await opened.list(LetterFilter(), after=0, limit=5)
            assert 1 == await opened.count(LetterFilter(reasons=frozenset({"fatal"})))
            assert 2 == (await opened.stats()).total
            assert await opened.replace(attrs.evolve(first, attempts=3))
            assert 1 == await opened.delete(["a"])
            assert 1 == await opened.purge(LetterFilter())
        assert opened.store.closed
        assert not store.closed

    asyncio.run(main())


def test_async_store_needs_a_path_or_a_store(store: SqliteDeadLetterStore, path: Path) -> None:
    """Neither or both of path and store is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="exactly one"):
        AsyncSqliteDeadLetterStore()
    with pytest.raises(ConfigurationError, match="exactly one"):
        AsyncSqliteDeadLetterStore(path, store=store)


def test_stores_satisfy_the_protocols(store: SqliteDeadLetterStore, path: Path) -> None:
    """The sync store is a DeadLetterStore, the async one an AsyncDeadLetterStore, the backend a Backend."""
    sync: DeadLetterStore = store
    asynchronous: AsyncDeadLetterStore = AsyncSqliteDeadLetterStore(store=store)
    backend: Backend = SqliteBackend(path)
    assert isinstance(sync, DeadLetterStore)
    assert isinstance(asynchronous, AsyncDeadLetterStore)
    backend.close()


# -- the backend and DeadLetterQueue --------------------------------------------------------------


def test_a_queue_from_open_backend_end_to_end(path: Path) -> None:
    """put, list pages, redrive (some fail again), purge and stats through open_backend's queue."""
    clock = ManualClock()
    with open_backend(f"sqlite:///{path}") as backend:
        queue = backend.dead_letter_queue("orders", clock=clock, max_letters=100)
        assert isinstance(queue, DeadLetterQueue)
        for number in range(7):
            queue.put(
                {"order": number},
                reason="fatal" if number % 2 else "exhausted",
                error=ValueError(f"bad order {number}"),
                key=f"order-{number}",
                headers={"tenant": "acme"},
            )
            clock.advance(10.0)
        pages: list[list[Any]] = []
        cursor = None
        while True:
            page = queue.list(limit=3, cursor=cursor)
            pages.append([queue.decode(one)["order"] for one in page.letters])
            cursor = page.cursor
            if cursor is None:
                break
        assert [[0, 1, 2], [3, 4, 5], [6]] == pages
        first = queue.get(queue.list(limit=1).letters[0].id)
        assert first is not None
        assert ("builtins.ValueError", "bad order 0", {"tenant": "acme"}) == (
            first.error_type,
            first.error_message,
            {k: v for k, v in first.headers.items() if k == "tenant"},
        )

        handled: list[int] = []

        def target(one: DeadLetter) -> None:
            order = queue.decode(one)["order"]
            if order == 3:
                raise RuntimeError("still broken")
            handled.append(order)

        report = queue.redrive(target, reason="fatal")
        assert [1, 5] == handled
        assert 2 == len(report.redriven)
        assert [True] == [("still broken" in text) for _, text in report.failed]
        retried = queue.list(key="order-3").letters
        assert [2] == [one.attempts for one in retried]
        assert 5 == queue.count()
        assert 2 == queue.purge(older_than=45.0)  # orders 0 and 2 (at +0 s and +20 s)
        assert {"exhausted": 2, "fatal": 1} == dict(queue.stats().by_reason)
        assert 3 == queue.purge(everything=True)
    with SqliteDeadLetterStore(path, "orders") as reopened:
        assert 0 == reopened.count(LetterFilter())


def test_a_queue_stores_a_one_mib_payload(path: Path) -> None:
    """A raw 1 MiB bytes payload goes through DeadLetterQueue.put and comes back as it was."""
    payload = bytes(range(256)) * (MIB // 256)
    with SqliteBackend(path) as backend:
        queue = backend.dead_letter_queue("raw")
        stored = queue.put(payload, reason="invalid")
        fetched = queue.get(stored.id)
        assert fetched is not None
        assert payload == queue.decode(fetched)


def test_the_async_queue_of_a_backend(path: Path) -> None:
    """async_dead_letter_queue stores through worker threads, timed on the backend's clock."""
    clock = ManualClock()

    async def main(backend: SqliteBackend) -> list[tuple[str, float]]:
        queue = backend.async_dead_letter_queue("jobs")
        await queue.put({"job": 1}, reason="poison")
        page = await queue.list()
        return [(one.reason, one.dead_lettered_at) for one in page.letters]

    with SqliteBackend(path, clock=clock) as backend:
        assert [("poison", clock.wall())] == asyncio.run(main(backend))
        assert 1 == backend.dead_letter_store("jobs").count(LetterFilter())


def test_backend_stores_share_the_file_and_close_together(path: Path) -> None:
    """Dead-letter stores of one backend share the file; close() closes them and refuses more."""
    backend = SqliteBackend(path)
    one = backend.dead_letter_store("q")
    two = backend.dead_letter_store("q")
    other = backend.async_dead_letter_store("other")
    assert one is not two
    added = one.add(letter("a")).letter
    assert added == two.get("a")
    assert None is other.store.get("a")
    backend.close()
    assert [True, True, True] == [one.closed, two.closed, other.store.closed]
    with pytest.raises(BackendError, match="closed"):
        backend.dead_letter_store("q")
    with pytest.raises(BackendError, match="closed"):
        backend.dead_letter_queue("q")


def test_memory_backend_shares_a_store_per_queue() -> None:
    """On ':memory:' each queue's store is made once, shared by sync and async and queues."""
    backend = SqliteBackend(":memory:")
    store = backend.dead_letter_store("q")
    assert store is backend.dead_letter_store("q")
    assert store is backend.async_dead_letter_store("q").store
    assert store is backend.dead_letter_queue("q").store
    assert store is not backend.dead_letter_store("other")
    store.add(letter("a"))
    assert 1 == backend.dead_letter_store("q").count(LetterFilter())
    backend.close()
    assert store.closed


def test_a_store_dropped_without_close_closes_its_connection(tmp_path: Path) -> None:
    """A queue made and used in one expression does not leak its SQLite connection."""
    import gc
    import sqlite3

    store = SqliteDeadLetterStore(tmp_path / "dropped.db", "orders")
    connection = store._db.connection
    assert connection is not None
    del store
    gc.collect()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        connection.execute("SELECT 1")
