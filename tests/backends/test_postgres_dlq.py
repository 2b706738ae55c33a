"""PostgresDeadLetterStore and its async twin, beyond the contract: the tables and their
creation, races between stores on separate connections (ids, sequences, the cap, a reader
paging while writers add), large binary payloads, broken connections, and the dead-letter
factories of PostgresBackend.

Races use one store (one connection) per thread, so they race in the server, not on a
store's lock.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import attrs
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from invresilience import open_backend
from invresilience._core.dlq import DeadLetter, LetterFilter
from invresilience._dlq import AsyncDeadLetterQueue, DeadLetterQueue
from invresilience.backends.memory import MemoryDeadLetterStore
from invresilience.backends.postgres import (
    DEAD_LETTER_SCHEMA_VERSION,
    AsyncPostgresDeadLetterStore,
    PostgresBackend,
    PostgresDeadLetterStore,
    _content,
    _dead_letter_statements,
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

    from invresilience._core.dlq import Added, Reason

#: Everything.
ALL = LetterFilter()
#: The tables a dead-letter store creates, after its prefix.
TABLES = ("dead_letters", "dead_letter_queues", "schema")
#: The functions (and triggers, of the same names) keeping each queue's count, after its prefix.
COUNT_TRIGGERS = (
    "dead_letters_added",
    "dead_letters_removed",
    "dead_letters_moved",
    "dead_letters_emptied",
)
#: Seconds a test waits for another session to reach a state before failing.
PATIENCE = 10.0


def _drop(url: str, prefix: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            name = sql.Identifier(f"{prefix}_{table}")
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        for function in COUNT_TRIGGERS:
            name = sql.Identifier(f"{prefix}_{function}")
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(name))


@pytest.fixture
def prefix(postgres_url: str) -> Iterator[str]:
    """A table prefix of this test's own, whose tables are dropped afterwards."""
    prefix = f"invres_dlq_{uuid.uuid4().hex[:16]}"
    yield prefix
    _drop(postgres_url, prefix)


@pytest.fixture
def app() -> str:
    """A unique application_name, to find (and terminate) a store's server session."""
    return f"invres-dlq-{uuid.uuid4().hex[:12]}"


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
def store(conninfo: str, prefix: str) -> Iterator[PostgresDeadLetterStore]:
    """A sync store of queue ``q`` on its own tables, closed afterwards."""
    store = PostgresDeadLetterStore(conninfo, "q", table_prefix=prefix)
    yield store
    store.close()


def _letter(
    letter_id: str,
    *,
    queue: str = "q",
    at: float = 1000.0,
    reason: Reason = "fatal",
    payload: bytes = b"{}",
    key: str | None = None,
) -> DeadLetter:
    return DeadLetter(
        id=letter_id,
        queue=queue,
        payload=payload,
        reason=reason,
        key=key,
        error_type="builtins.ValueError",
        error_message="bad",
        traceback="Traceback ...",
        attempts=3,
        first_failed_at=at - 10.0,
        last_failed_at=at - 1.0,
        dead_lettered_at=at,
        headers={"tenant": "t1"},
    )


def _terminate(admin: psycopg.Connection[Any], app: str) -> int:
    """Terminate every session named *app*, waiting until they are gone; how many there were."""
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
        [app],
    ).fetchall()
    return len(rows)


def _wait_for_lock_wait(admin: psycopg.Connection[Any], app: str) -> None:
    """Return once a session named *app* waits for a lock."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'",
            [app],
        ).fetchone()
        if row is not None and row[0]:
            return
        time.sleep(0.01)
    pytest.fail(f"no session of {app} waited for a lock within {PATIENCE} s")


def _in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(0)`` ... ``work(count - 1)`` in threads released together; their answers."""
    barrier = threading.Barrier(count)

    def run(index: int) -> Any:
        barrier.wait()
        return work(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))  # re-raises any error


# -- the store -------------------------------------------------------------------------------------


def test_stores_satisfy_the_protocols(conninfo: str, prefix: str) -> None:
    """Both stores are instances of their runtime-checkable Protocols; the backend has a url."""
    sync_store: DeadLetterStore = PostgresDeadLetterStore(conninfo, "q", table_prefix=prefix)
    async_store: AsyncDeadLetterStore = AsyncPostgresDeadLetterStore(conninfo, table_prefix=prefix)
    assert isinstance(sync_store, DeadLetterStore)
    assert isinstance(async_store, AsyncDeadLetterStore)
    assert ("q", "default") == (sync_store.queue, async_store.queue)
    backend: Backend = PostgresBackend(conninfo, table_prefix=prefix)  # checked by mypy
    assert conninfo == backend.url


def test_answers_equal_the_memory_store(store: PostgresDeadLetterStore) -> None:
    """The same calls on the memory reference and on PostgreSQL give equal answers."""
    reference = MemoryDeadLetterStore("q")
    filters = [
        ALL,
        LetterFilter(reasons=frozenset({"poison", "manual"})),
        LetterFilter(reasons=frozenset()),
        LetterFilter(key="k1", since=1003.0),
        LetterFilter(since=1002.0, before=1005.0),
        LetterFilter(since=float("nan")),
        LetterFilter(before=float("nan")),
        LetterFilter(since=float("-inf"), before=float("inf")),
        LetterFilter(since=-(10**400), before=10**400),
        LetterFilter(since=10**400),
    ]

    def session(target: DeadLetterStore) -> list[object]:
        answers: list[object] = []
        reasons: list[Reason] = ["fatal", "poison", "manual"]
        for i in range(8):
            letter = _letter(f"l{i}", at=1000.0 + i, reason=reasons[i % 3], key=f"k{i % 2}")
            answers.append(target.add(letter))
        answers.append(target.add(_letter("l3", at=5.0)))
        with pytest.raises(DeadLetterQueueFullError) as info:
            target.add(_letter("full"), max_letters=8)
        answers.append((info.value.queue, info.value.limit))
        answers.append(target.add(_letter("l8", at=1008.0), max_letters=6, evict_oldest=True))
        answers.extend(target.list(where, after=3, limit=3) for where in filters)
        answers.extend(target.count(where) for where in filters)
        answers.append(target.stats())
        answers.append(target.replace(_letter("l5", at=2000.0, reason="manual", key=None)))
        answers.append(target.replace(_letter("gone")))
        answers.append(target.get("l5"))
        answers.append(target.get("not an id!"))
        answers.append(target.delete(["l5", "l5", "absent", "not an id!"]))
        answers.append(target.delete([]))
        answers.append(target.purge(LetterFilter(before=1007.0)))
        answers.append(target.list(ALL, after=0, limit=100))
        answers.append(target.stats())
        return answers

    assert session(reference) == session(store)


def test_letters_keep_their_own_times_and_every_byte(
    store: PostgresDeadLetterStore, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """Times are the letter's to the last digit (not the server's); a 1 MiB binary payload
    round-trips."""
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value, NULs included
    letter = _letter("big", at=1712345678.1234567, payload=payload)
    stored = attrs.evolve(letter, sequence=1)
    assert stored == store.add(letter).letter
    assert stored == store.get("big")
    assert [stored] == store.list(ALL)
    changed = _letter("big", at=5.0, payload=payload[::-1])
    assert store.replace(changed)
    assert attrs.evolve(changed, sequence=1) == store.get("big")
    row = admin.execute(
        sql.SQL(
            "SELECT first_failed_at, last_failed_at, dead_lettered_at, length(payload), headers"
            " FROM {} WHERE id = 'big'"
        ).format(sql.Identifier(f"{prefix}_dead_letters"))
    ).fetchone()
    assert (-5.0, 4.0, 5.0, 1 << 20, {"tenant": "t1"}) == row


def test_the_tables_and_their_version(
    store: PostgresDeadLetterStore, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """The first call creates the letter and counter tables with their keys and indexes, records
    the version, and creates no idempotency table."""
    store.stats()
    schema = sql.Identifier(f"{prefix}_schema")
    rows = admin.execute(sql.SQL("SELECT component, version FROM {}").format(schema)).fetchall()
    assert [("dead_letters", DEAD_LETTER_SCHEMA_VERSION)] == rows
    indexes = dict(
        admin.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s",
            [f"{prefix}_dead_letters"],
        ).fetchall()
    )
    assert "(queue, key)" in indexes[f"{prefix}_dead_letters_key"]
    assert "(queue, dead_lettered_at)" in indexes[f"{prefix}_dead_letters_at"]
    definitions = sorted(indexes.values())
    assert any("UNIQUE" in d and "(queue, id)" in d for d in definitions)
    assert any("UNIQUE" in d and "(queue, sequence)" in d for d in definitions)
    tables = admin.execute(
        "SELECT tablename FROM pg_tables WHERE tablename LIKE %s ORDER BY tablename",
        [f"{prefix}%"],
    ).fetchall()
    assert sorted((f"{prefix}_{table}",) for table in TABLES) == tables


def test_concurrent_first_use_creates_the_schema_once(
    conninfo: str, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    """4 stores starting together on fresh tables all succeed, under the advisory lock."""
    stores = [PostgresDeadLetterStore(conninfo, "q", table_prefix=prefix) for _ in range(4)]
    added = _in_threads(4, lambda i: stores[i].add(_letter(f"first-{i}")))
    for store in stores:
        store.close()
    assert [1, 2, 3, 4] == sorted(a.letter.sequence for a in added)
    schema = sql.Identifier(f"{prefix}_schema")
    rows = admin.execute(sql.SQL("SELECT component, version FROM {}").format(schema)).fetchall()
    assert [("dead_letters", DEAD_LETTER_SCHEMA_VERSION)] == rows


def test_a_newer_schema_version_is_refused(
    store: PostgresDeadLetterStore, conninfo: str, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """Tables recorded with a newer version make every call a BackendError naming it."""
    store.stats()
    schema = sql.Identifier(f"{prefix}_schema")
    admin.execute(
        sql.SQL("UPDATE {} SET version = %s").format(schema), [DEAD_LETTER_SCHEMA_VERSION + 1]
    )
    newer = PostgresDeadLetterStore(conninfo, "q", table_prefix=prefix)
    for _ in range(2):
        with pytest.raises(
            BackendError, match=f"schema version {DEAD_LETTER_SCHEMA_VERSION + 1}"
        ) as info:
            newer.add(_letter("x"))
        assert not isinstance(info.value, BackendUnavailableError)
    newer.close()


def test_queues_share_the_tables_but_not_their_letters_or_sequences(
    conninfo: str, prefix: str
) -> None:
    """Two queues hold the same id apart, each numbered from 1, and purge touches one."""
    a = PostgresDeadLetterStore(conninfo, "a", table_prefix=prefix)
    b = PostgresDeadLetterStore(conninfo, "b", table_prefix=prefix)
    assert 1 == a.add(_letter("same", queue="a")).letter.sequence
    assert 1 == b.add(_letter("same", queue="b")).letter.sequence
    assert 2 == b.add(_letter("other", queue="b")).letter.sequence
    assert 1 == a.purge(ALL)
    assert (0, 2) == (a.count(ALL), b.count(ALL))
    assert 2 == a.add(_letter("again", queue="a")).letter.sequence  # never reused
    a.close()
    b.close()


@pytest.mark.parametrize("bad", ["", "a b", "x" * 101, "q/1", 7])
def test_the_queue_is_validated(bad: object) -> None:
    """A queue name outside 1-100 of [A-Za-z0-9_.:-] is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="queue"):
        PostgresDeadLetterStore("host=unused", bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="queue"):
        AsyncPostgresDeadLetterStore("host=unused", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "1abc", "a-b", "a;drop", "x" * 42, None])
def test_table_prefix_must_be_an_identifier(bad: object) -> None:
    """A prefix that is not a short SQL identifier is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="table_prefix"):
        PostgresDeadLetterStore("host=unused", table_prefix=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="table_prefix"):
        AsyncPostgresDeadLetterStore("host=unused", table_prefix=bad)  # type: ignore[arg-type]


def test_arguments_are_checked_before_any_io(prefix: str) -> None:
    """Bad letters, caps and limits are ConfigurationErrors even with no server to reach."""
    store = PostgresDeadLetterStore(
        "host=127.0.0.1 port=1 connect_timeout=2 user=postgres", "q", table_prefix=prefix
    )
    with pytest.raises(ConfigurationError, match=r"letter\.queue"):
        store.add(_letter("x", queue="other"))
    with pytest.raises(ConfigurationError, match="letter"):
        store.add("not a letter")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_letters"):
        store.add(_letter("x"), max_letters=0)
    with pytest.raises(ConfigurationError, match=r"letter\.queue"):
        store.replace(_letter("x", queue="other"))
    with pytest.raises(ConfigurationError, match="limit"):
        store.list(ALL, limit=0)
    assert store.get("not an id!") is None
    assert 0 == store.delete(["not an id!"])


# -- connections and errors -----------------------------------------------------------------------


def test_a_killed_connection_fails_one_call_then_reconnects(
    store: PostgresDeadLetterStore, admin: psycopg.Connection[Any], app: str
) -> None:
    """The call after the server dropped the session is BackendUnavailableError; the next works."""
    store.add(_letter("before"))
    assert 1 == _terminate(admin, app)
    with pytest.raises(BackendUnavailableError) as info:
        store.add(_letter("lost"))
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert 2 == store.add(_letter("after")).letter.sequence
    assert ["before", "after"] == [letter.id for letter in store.list(ALL)]
    assert 1 == _terminate(admin, app)  # the store's new session, same application_name


def test_an_add_waits_for_the_queue_row_and_dies_without_a_trace(
    store: PostgresDeadLetterStore, admin: psycopg.Connection[Any], app: str, prefix: str
) -> None:
    """An add waits while another transaction holds its queue's row; killed there, it leaves
    nothing behind, and the store works again."""
    store.add(_letter("first"))
    queues = sql.Identifier(f"{prefix}_dead_letter_queues")
    failures: list[BaseException] = []

    def add() -> None:
        try:
            store.add(_letter("blocked"))
        except BackendUnavailableError as exc:
            failures.append(exc)

    with admin.transaction():
        admin.execute(sql.SQL("SELECT 1 FROM {} WHERE queue = 'q' FOR UPDATE").format(queues))
        thread = threading.Thread(target=add)
        thread.start()
        _wait_for_lock_wait(admin, app)
        assert 1 == _terminate(admin, app)
        thread.join(PATIENCE)
    assert 1 == len(failures)
    assert ["first"] == [letter.id for letter in store.list(ALL)]
    assert 2 == store.add(_letter("blocked")).letter.sequence


def test_an_unreachable_server_is_backend_unavailable(prefix: str) -> None:
    """Nothing listening: BackendUnavailableError, chained to the driver's error."""
    store = PostgresDeadLetterStore(
        "host=127.0.0.1 port=1 connect_timeout=2 user=postgres", table_prefix=prefix
    )
    with pytest.raises(BackendUnavailableError, match="unreachable") as info:
        store.add(_letter("x", queue="default"))
    assert isinstance(info.value.__cause__, psycopg.OperationalError)


def test_other_driver_errors_are_backend_errors(
    store: PostgresDeadLetterStore, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """A missing table is a BackendError, not BackendUnavailableError; the store stays usable."""
    store.add(_letter("x"))
    admin.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(f"{prefix}_dead_letters")))
    with pytest.raises(BackendError) as info:
        store.add(_letter("y"))
    assert not isinstance(info.value, BackendUnavailableError)
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)
    with pytest.raises(BackendError):  # the failed transaction was rolled back
        store.count(ALL)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("error_message", "a\x00b"),
        ("traceback", "lone \udc80 surrogate"),
        ("key", "k\x00"),
        ("headers", {"h": "\x00"}),
    ],
)
def test_text_postgresql_cannot_hold_is_a_backend_error(
    store: PostgresDeadLetterStore, field: str, value: Any
) -> None:
    """A NUL character or a lone surrogate is a BackendError (chained, not "unavailable");
    nothing is stored and the store keeps working."""
    bad = attrs.evolve(_letter("bad"), **{field: value})
    with pytest.raises(BackendError) as info:
        store.add(bad)
    assert not isinstance(info.value, BackendUnavailableError)
    assert isinstance(info.value.__cause__, (psycopg.Error, UnicodeEncodeError))
    assert 1 == store.add(_letter("good")).letter.sequence
    with pytest.raises(BackendError):
        store.replace(attrs.evolve(_letter("good"), **{field: value}))
    assert [_letter("good")] == [attrs.evolve(x, sequence=0) for x in store.list(ALL)]


def test_a_borrowed_connection(conninfo: str, prefix: str) -> None:
    """A borrowed connection must autocommit, must be outside a transaction to add, and stays
    open after close()."""
    with psycopg.connect(conninfo) as conn, pytest.raises(ConfigurationError, match="autocommit"):
        PostgresDeadLetterStore(conn, "q", table_prefix=prefix)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        store = PostgresDeadLetterStore(conn, "q", table_prefix=prefix)
        assert store.add(_letter("x")).created
        with conn.transaction():
            with pytest.raises(BackendError, match="inside a transaction"):
                store.add(_letter("y"))
            assert 1 == store.count(ALL)
        store.close()
        assert not conn.closed
        assert ["x"] == [
            row[0]
            for row in conn.execute(
                sql.SQL("SELECT id FROM {}").format(sql.Identifier(f"{prefix}_dead_letters"))
            )
        ]


def test_a_closed_store_refuses_calls(store: PostgresDeadLetterStore) -> None:
    """After close() every call is a BackendError saying so."""
    store.add(_letter("x"))
    store.close()
    with pytest.raises(BackendError, match="closed"):
        store.get("x")


# -- races ------------------------------------------------------------------------------------------


def _stores(conninfo: str, prefix: str, count: int) -> list[PostgresDeadLetterStore]:
    return [PostgresDeadLetterStore(conninfo, "q", table_prefix=prefix) for _ in range(count)]


def test_distinct_adds_from_8_threads_all_land_in_order(conninfo: str, prefix: str) -> None:
    """8 threads x 200 distinct letters, each thread on its own connection: all 1600 are stored
    with sequences 1 to 1600, each thread's growing in its own order."""
    stores = _stores(conninfo, prefix, 8)

    def work(i: int) -> list[int]:
        return [stores[i].add(_letter(f"t{i}-{n}")).letter.sequence for n in range(200)]

    sequences = _in_threads(8, work)
    stored = stores[0].list(ALL, limit=10_000)
    for store in stores:
        store.close()
    assert list(range(1, 1601)) == [letter.sequence for letter in stored]
    assert {f"t{i}-{n}" for i in range(8) for n in range(200)} == {x.id for x in stored}
    assert all(mine == sorted(mine) for mine in sequences)
    assert sorted(s for mine in sequences for s in mine) == list(range(1, 1601))


def test_one_id_from_8_threads_is_created_once(conninfo: str, prefix: str) -> None:
    """8 threads adding the same id: exactly one creates it, all get the same stored letter."""
    stores = _stores(conninfo, prefix, 8)
    answers: list[Added] = _in_threads(8, lambda i: stores[i].add(_letter("same", at=float(i))))
    for store in stores:
        store.close()
    assert 1 == sum(answer.created for answer in answers)
    assert 1 == len({answer.letter for answer in answers})
    assert 1 == answers[0].letter.sequence


def test_the_cap_is_exact_under_a_race(conninfo: str, prefix: str) -> None:
    """8 threads x 20 adds against max_letters=50: exactly 50 stored, the other 110 refused."""
    stores = _stores(conninfo, prefix, 8)

    def work(i: int) -> list[int | None]:
        limits: list[int | None] = []  # None: stored; else the limit the refusal named
        for n in range(20):
            try:
                stores[i].add(_letter(f"t{i}-{n}"), max_letters=50)
                limits.append(None)
            except DeadLetterQueueFullError as exc:
                limits.append(exc.limit)
        return limits

    limits = [limit for mine in _in_threads(8, work) for limit in mine]
    count = stores[0].count(ALL)
    for store in stores:
        store.close()
    assert (50, [50] * 110) == (limits.count(None), [x for x in limits if x is not None])
    assert 50 == count


def test_eviction_is_exact_under_a_race(conninfo: str, prefix: str) -> None:
    """8 threads x 20 adds evicting beyond 50: the 50 newest stay, each other one is evicted
    exactly once."""
    stores = _stores(conninfo, prefix, 8)

    def work(i: int) -> list[Added]:
        return [
            stores[i].add(_letter(f"t{i}-{n}"), max_letters=50, evict_oldest=True)
            for n in range(20)
        ]

    answers = [a for mine in _in_threads(8, work) for a in mine]
    stored = stores[0].list(ALL, limit=1000)
    for store in stores:
        store.close()
    evicted = [letter_id for a in answers for letter_id in a.evicted]
    by_sequence = sorted(answers, key=lambda a: a.letter.sequence)
    assert list(range(111, 161)) == [letter.sequence for letter in stored]
    assert sorted(evicted) == sorted(a.letter.id for a in by_sequence[:110])


def test_a_paging_reader_never_misses_a_letter(conninfo: str, prefix: str) -> None:
    """A reader paging with after= while 4 writers add sees every letter once, in order."""
    writers = _stores(conninfo, prefix, 4)
    reader = PostgresDeadLetterStore(conninfo, "q", table_prefix=prefix)
    reader.stats()  # the tables exist before the race starts
    done = threading.Event()
    seen: list[DeadLetter] = []

    def read() -> None:
        after = 0
        while True:
            finished = done.is_set()  # read before the page: a page after it is final
            page = reader.list(ALL, after=after, limit=7)
            seen.extend(page)
            if page:
                after = page[-1].sequence
            elif finished:
                return

    def write(i: int) -> None:
        for n in range(150):
            writers[i].add(_letter(f"w{i}-{n}"))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        _in_threads(4, write)
    finally:
        done.set()
        thread.join(PATIENCE * 6)
    for store in [*writers, reader]:
        store.close()
    assert list(range(1, 601)) == [letter.sequence for letter in seen]
    assert {f"w{i}-{n}" for i in range(4) for n in range(150)} == {x.id for x in seen}


# -- the per-queue letter count ----------------------------------------------------------------------

#: The version-1 layout, as the stores of that version created it, for the upgrade tests.
V1_SETUP = """\
CREATE TABLE {schema} (component text PRIMARY KEY, version integer NOT NULL);
CREATE TABLE {letters} (
    queue text NOT NULL, id text NOT NULL, sequence bigint NOT NULL, reason text NOT NULL,
    key text, fingerprint text, error_type text, error_message text, traceback text,
    attempts bigint NOT NULL, first_failed_at double precision NOT NULL,
    last_failed_at double precision NOT NULL, dead_lettered_at double precision NOT NULL,
    headers jsonb NOT NULL, payload bytea NOT NULL,
    PRIMARY KEY (queue, id), UNIQUE (queue, sequence)
);
CREATE TABLE {queues} (queue text PRIMARY KEY, last_sequence bigint NOT NULL);
INSERT INTO {schema} VALUES ('dead_letters', 1)"""

#: An INSERT of letter rows by hand: (queue, id, sequence) from %s arrays, the rest fixed.
HAND_INSERT = """\
INSERT INTO {letters} (queue, id, sequence, reason, attempts, first_failed_at,
                       last_failed_at, dead_lettered_at, headers, payload)
SELECT queue, id, sequence, 'fatal', 1, 1.0, 1.0, 1.0, '{{}}', '\\x00'
FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS t(queue, id, sequence)"""


def _names(prefix: str) -> dict[str, sql.Identifier]:
    return {
        "schema": sql.Identifier(f"{prefix}_schema"),
        "letters": sql.Identifier(f"{prefix}_dead_letters"),
        "queues": sql.Identifier(f"{prefix}_dead_letter_queues"),
    }


def _run(admin: psycopg.Connection[Any], prefix: str, text: str, params: Any = None) -> Any:
    """Run *text*, its {schema}, {letters} and {queues} named after *prefix*; the cursor."""
    return admin.execute(sql.SQL(text).format(**_names(prefix)), params)


def _hand_insert(
    admin: psycopg.Connection[Any], prefix: str, rows: list[tuple[str, str, int]]
) -> None:
    queues, ids, sequences = (list(column) for column in zip(*rows, strict=True))
    _run(admin, prefix, HAND_INSERT, [queues, ids, sequences])


def _counts(admin: psycopg.Connection[Any], prefix: str) -> tuple[dict[str, int], dict[str, int]]:
    """Each queue's kept count (queues with a row) and its real count of rows (queues with letters)."""
    kept = dict(_run(admin, prefix, "SELECT queue, letters FROM {queues}").fetchall())
    real = dict(
        _run(admin, prefix, "SELECT queue, count(*) FROM {letters} GROUP BY queue").fetchall()
    )
    return kept, real


def _assert_exact(admin: psycopg.Connection[Any], prefix: str, expected: dict[str, int]) -> None:
    """The kept counts are *expected* (queues not named: 0), and so are the real ones."""
    kept, real = _counts(admin, prefix)
    assert expected == {queue: n for queue, n in kept.items() if n}
    assert expected == real


def test_the_count_stays_exact_whoever_writes(
    conninfo: str, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    """The kept count equals the rows after adds, evictions, deletes (one id, several), purges,
    replaces, and plain SQL inserts, deletes across queues, moves between queues and TRUNCATE."""
    a = PostgresDeadLetterStore(conninfo, "a", table_prefix=prefix)
    b = PostgresDeadLetterStore(conninfo, "b", table_prefix=prefix)
    for n in range(6):
        a.add(_letter(f"a{n}", queue="a", reason="poison" if n % 2 else "fatal"))
    b.add(_letter("b0", queue="b"))
    _assert_exact(admin, prefix, {"a": 6, "b": 1})
    assert ("a0",) == a.add(_letter("a6", queue="a"), max_letters=6, evict_oldest=True).evicted
    assert ("a1", "a2") == a.add(_letter("a7", queue="a"), max_letters=5, evict_oldest=True).evicted
    _assert_exact(admin, prefix, {"a": 5, "b": 1})
    assert 1 == a.delete(["a3"])
    assert 2 == a.delete(["a4", "a5", "absent"])
    assert 0 == a.delete(["a3"])
    _assert_exact(admin, prefix, {"a": 2, "b": 1})
    assert a.replace(_letter("a6", queue="a", reason="manual"))
    assert 1 == a.purge(LetterFilter(reasons=frozenset({"manual"})))
    _assert_exact(admin, prefix, {"a": 1, "b": 1})
    _hand_insert(
        admin, prefix, [("a", "x1", 100), ("b", "x2", 100), ("c", "x3", 7), ("c", "x4", 9)]
    )
    _assert_exact(admin, prefix, {"a": 2, "b": 2, "c": 2})
    c = PostgresDeadLetterStore(conninfo, "c", table_prefix=prefix)
    assert 10 == c.add(_letter("c-own", queue="c")).letter.sequence  # past the hand-made ones
    with pytest.raises(DeadLetterQueueFullError):
        c.add(_letter("c-full", queue="c"), max_letters=3)
    assert (
        2
        == _run(
            admin, prefix, "DELETE FROM {letters} WHERE id LIKE 'x%%' AND queue <> 'c'"
        ).rowcount
    )
    _assert_exact(admin, prefix, {"a": 1, "b": 1, "c": 3})
    _run(admin, prefix, "UPDATE {letters} SET queue = 'b' WHERE queue = 'c' AND id <> 'c-own'")
    _run(admin, prefix, "UPDATE {letters} SET attempts = attempts + 1")  # no queue changes
    _assert_exact(admin, prefix, {"a": 1, "b": 3, "c": 1})
    assert 3 == b.purge(ALL)
    _assert_exact(admin, prefix, {"a": 1, "c": 1})
    _run(admin, prefix, "TRUNCATE {letters}")
    _assert_exact(admin, prefix, {})
    assert 101 == a.add(_letter("again", queue="a"), max_letters=1).letter.sequence
    for store in (a, b, c):
        store.close()


def test_an_add_reads_the_count_not_the_letters(
    store: PostgresDeadLetterStore, admin: psycopg.Connection[Any], prefix: str
) -> None:
    """Adding to a queue of 20,000 letters (under a cap, evicting) reads no letter row beyond
    the id it looks up and the one it evicts, by EXPLAIN ANALYZE; a count(*) reads all 20,000."""
    store.add(_letter("first"))
    n = 20_000
    _hand_insert(admin, prefix, [("q", f"h{i}", i + 2) for i in range(n - 1)])
    q = _dead_letter_statements(prefix)
    params = {
        "queue": "q",
        "id": "new",
        "max_letters": n,
        "evict": True,
        **_content(_letter("new")),
    }

    def rows_read(plan: dict[str, Any]) -> int:
        """Rows the plan's nodes produced from the letters table, over all loops."""
        own = 0
        if plan.get("Relation Name") == f"{prefix}_dead_letters" and "Scan" in plan["Node Type"]:
            own = plan["Actual Rows"] * plan["Actual Loops"]
        return own + sum(rows_read(child) for child in plan.get("Plans", []))

    explain = sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ")
    with admin.transaction(force_rollback=True):
        admin.execute(q.lock_queue, {"queue": "q"})
        ((plans,),) = admin.execute(explain + q.add, params).fetchall()
        ((counted,),) = admin.execute(
            explain + sql.SQL("SELECT count(*) FROM {} WHERE queue = 'q'").format(q.letters)
        ).fetchall()
    assert 1 <= rows_read(plans[0]["Plan"]) <= 2
    assert n == rows_read(counted[0]["Plan"])
    added = store.add(_letter("new"), max_letters=n, evict_oldest=True)
    assert (n, ("first",)) == (added.letter.sequence - 1, added.evicted)
    assert n == store.count(ALL)


def test_a_version_1_schema_is_upgraded_in_place(
    conninfo: str, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    """Stores finding version-1 tables (4 at once) add the count, filled from the letters, and
    the triggers, record version 2, and keep every letter and sequence."""
    _run(admin, prefix, V1_SETUP)
    _run(admin, prefix, "INSERT INTO {queues} VALUES ('a', 5), ('b', 2)")
    _hand_insert(admin, prefix, [("a", "a3", 3), ("a", "a4", 4), ("a", "a5", 5)])
    stores = _stores(conninfo, prefix, 4)
    counted = _in_threads(4, lambda i: stores[i].count(ALL))
    assert [0, 0, 0, 0] == counted
    rows = _run(admin, prefix, "SELECT component, version FROM {schema}").fetchall()
    assert [("dead_letters", DEAD_LETTER_SCHEMA_VERSION)] == rows
    assert [("a", 5, 3), ("b", 2, 0)] == _run(
        admin, prefix, "SELECT queue, last_sequence, letters FROM {queues} ORDER BY queue"
    ).fetchall()
    triggers = admin.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal"
        " ORDER BY tgname",
        [f'"{prefix}_dead_letters"'],
    ).fetchall()
    assert sorted((f"{prefix}_{name}",) for name in COUNT_TRIGGERS) == triggers
    a = PostgresDeadLetterStore(conninfo, "a", table_prefix=prefix)
    assert 6 == a.add(_letter("a6", queue="a"), max_letters=4).letter.sequence
    with pytest.raises(DeadLetterQueueFullError):
        a.add(_letter("a7", queue="a"), max_letters=4)
    assert 1 == a.delete(["a3"])
    _assert_exact(admin, prefix, {"a": 3})
    for store in [*stores, a]:
        store.close()


def test_purges_and_deletes_racing_evicting_adds_never_deadlock(
    conninfo: str, prefix: str, admin: psycopg.Connection[Any]
) -> None:
    """4 threads adding with eviction while one purges and one deletes what it lists: no
    deadlock or other error, and the kept count ends equal to the rows."""
    stores = _stores(conninfo, prefix, 6)
    stores[0].stats()
    done = threading.Event()

    def work(i: int) -> int:
        """An adder (0-3): how many letters its adds evicted; else how many it removed."""
        store = stores[i]
        if i < 4:
            try:
                return sum(
                    len(store.add(_letter(f"t{i}-{n}"), max_letters=20, evict_oldest=True).evicted)
                    for n in range(150)
                )
            finally:
                done.set()
        removed = 0
        while not done.is_set():
            if i == 4:
                removed += store.purge(LetterFilter(before=2000.0))
            else:
                removed += store.delete([x.id for x in store.list(ALL, limit=5)])
        return removed

    gone = _in_threads(6, work)
    for store in stores:
        store.close()
    kept, real = _counts(admin, prefix)
    assert real.get("q", 0) == kept["q"]
    assert 600 == sum(gone) + kept["q"]


# -- async -------------------------------------------------------------------------------------------


def test_async_store_answers_like_the_sync_one(conninfo: str, prefix: str) -> None:
    """The async store sees the sync store's letters and follows the same rules."""
    sync_store = PostgresDeadLetterStore(conninfo, "q", table_prefix=prefix)
    sync_store.add(_letter("s"))

    async def main() -> list[object]:
        store = AsyncPostgresDeadLetterStore(conninfo, "q", table_prefix=prefix)
        answers: list[object] = [
            (await store.add(_letter("s"))).created,
            (await store.add(_letter("a", reason="poison", key="k"))).letter.sequence,
        ]
        with pytest.raises(DeadLetterQueueFullError):
            await store.add(_letter("b"), max_letters=2)
        evicting = await store.add(_letter("c"), max_letters=2, evict_oldest=True)
        answers.append(evicting.evicted)
        answers.append([x.id for x in await store.list(ALL)])
        answers.append(await store.count(LetterFilter(key="k")))
        answers.append((await store.stats()).by_reason)
        answers.append(await store.replace(_letter("a", reason="manual")))
        answers.append(await store.get("a"))
        answers.append(await store.delete(["a", "zzz"]))
        answers.append(await store.purge(ALL))
        await store.close()
        return answers

    answers = asyncio.run(main())
    sync_store.close()
    assert [
        False,
        2,
        ("s",),
        ["a", "c"],
        1,
        {"fatal": 1, "poison": 1},
        True,
        attrs.evolve(_letter("a", reason="manual"), sequence=2),
        1,
        1,
    ] == answers


def test_async_tasks_race_on_one_id_and_the_cap(conninfo: str, prefix: str) -> None:
    """Async stores on separate connections: one id from 8 tasks is created once, and 40 adds
    against max_letters=10 store exactly 10."""

    async def main() -> tuple[int, int, int]:
        stores = [
            AsyncPostgresDeadLetterStore(conninfo, "q", table_prefix=prefix) for _ in range(8)
        ]
        same = await asyncio.gather(*(s.add(_letter("same")) for s in stores))

        async def capped(store: AsyncPostgresDeadLetterStore, i: int) -> int:
            stored = 0
            for n in range(5):
                try:
                    await store.add(_letter(f"t{i}-{n}"), max_letters=11)
                    stored += 1
                except DeadLetterQueueFullError:
                    pass
            return stored

        tallies = await asyncio.gather(*(capped(s, i) for i, s in enumerate(stores)))
        count = await stores[0].count(ALL)
        for store in stores:
            await store.close()
        return sum(a.created for a in same), sum(tallies), count

    assert (1, 10, 11) == asyncio.run(main())


def test_async_killed_connection_fails_one_call_then_reconnects(
    conninfo: str, prefix: str, admin: psycopg.Connection[Any], app: str
) -> None:
    """Async: the call after the session died is BackendUnavailableError; the next reconnects."""

    async def main() -> list[str]:
        store = AsyncPostgresDeadLetterStore(conninfo, "q", table_prefix=prefix)
        await store.add(_letter("before"))
        assert 1 == _terminate(admin, app)
        with pytest.raises(BackendUnavailableError) as info:
            await store.add(_letter("lost"))
        assert isinstance(info.value.__cause__, psycopg.OperationalError)
        await store.add(_letter("after"))
        ids = [letter.id for letter in await store.list(ALL)]
        await store.close()
        return ids

    assert ["before", "after"] == asyncio.run(main())


# -- the backend ------------------------------------------------------------------------------------


def test_backend_hands_out_dead_letter_stores_and_queues(postgres_url: str, prefix: str) -> None:
    """The backend's four dead-letter factories share the tables; close() and aclose() close
    what they made."""
    with PostgresBackend(postgres_url, table_prefix=prefix) as backend:
        store = backend.dead_letter_store("orders")
        queue = backend.dead_letter_queue("orders", max_letters=1, when_full="reject")
        assert isinstance(queue, DeadLetterQueue)
        assert ("orders", prefix) == (store.queue, store.table_prefix)
        queue.put({"order": 1}, id="one")
        assert ["one"] == [letter.id for letter in store.list(ALL)]
        with pytest.raises(DeadLetterQueueFullError):
            queue.put({"order": 2})
    with pytest.raises(BackendError, match="closed"):
        store.count(ALL)

    async def main() -> list[str]:
        backend = PostgresBackend(postgres_url, table_prefix=prefix)
        astore = backend.async_dead_letter_store("orders")
        aqueue = backend.async_dead_letter_queue("orders")
        assert isinstance(aqueue, AsyncDeadLetterQueue)
        await aqueue.put({"order": 3}, id="three")
        ids = [letter.id for letter in await astore.list(ALL)]
        await backend.aclose()
        with pytest.raises(BackendError, match="closed"):
            await astore.count(ALL)
        return ids

    assert ["one", "three"] == asyncio.run(main())


@pytest.fixture
def default_queue(postgres_url: str) -> Iterator[str]:
    """A queue of its own in the default-prefix tables, its rows deleted afterwards.

    ``open_backend`` takes no table prefix, so this test shares the default tables with
    whatever else uses them and removes only its own rows (never the tables).
    """
    queue = f"e2e-{uuid.uuid4().hex}"
    yield queue
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for table in ("dead_letters", "dead_letter_queues"):
            name = sql.Identifier(f"invresilience_{table}")
            conn.execute(sql.SQL("DELETE FROM {} WHERE queue = %s").format(name), [queue])


def test_a_dead_letter_queue_from_open_backend_end_to_end(
    postgres_url: str, default_queue: str
) -> None:
    """open_backend(url).dead_letter_queue: put with an error, list by pages, stats, redrive
    one to a callable, fail one again, purge the rest."""
    clock = ManualClock(wall_start=1_700_000_000.0)
    with open_backend(postgres_url) as backend:
        queue = backend.dead_letter_queue(default_queue, clock=clock)
        try:
            raise ValueError("card declined")
        except ValueError as exc:
            first = queue.put({"order": 1}, reason="fatal", error=exc, key="order-1")
        clock.advance(60.0)
        queue.put({"order": 2}, reason="exhausted", attempts=5, headers={"tenant": "t"})
        clock.advance(60.0)
        queue.put(b"\x00raw", reason="invalid", id="raw")
        assert first == queue.put({"order": 1}, reason="fatal", id=first.id)  # stored once

        page = queue.list(limit=2)
        rest = queue.list(limit=2, cursor=page.cursor)
        assert ([1, 2], [3], None) == (
            [x.sequence for x in page.letters],
            [x.sequence for x in rest.letters],
            rest.cursor,
        )
        assert ("builtins.ValueError", "card declined") == (first.error_type, first.error_message)
        assert {"order": 1} == queue.decode(first)
        stats = queue.stats()
        assert (3, {"exhausted": 1, "fatal": 1, "invalid": 1}) == (stats.total, stats.by_reason)
        assert (1_700_000_000.0, 1_700_000_120.0) == (stats.oldest, stats.newest)

        handled: list[str] = []

        def target(letter: DeadLetter) -> None:
            if letter.reason == "exhausted":
                raise RuntimeError("still down")
            handled.append(letter.id)

        report = queue.redrive(target, reason=["fatal", "exhausted"])
        assert ((first.id,), [first.id]) == (report.redriven, handled)
        assert 1 == len(report.failed)
        again = queue.list(reason="exhausted").letters[0]
        assert (6, 2) == (again.attempts, again.sequence)
        assert 2 == queue.purge(everything=True)
        assert 0 == queue.count()


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (psycopg.errors.DeadlockDetected("deadlock detected"), False),
        (psycopg.errors.SerializationFailure("could not serialize access"), False),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
        (psycopg.OperationalError("connection refused"), True),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
    ],
)
def test_only_a_lost_connection_reads_as_unreachable(
    error: psycopg.Error, unavailable: bool
) -> None:
    """A deadlock or a timeout is a BackendError: the server answered, it is not down."""
    from invresilience.backends.postgres import _error
    from invresilience.exceptions import BackendError, BackendUnavailableError

    mapped = _error("add", error)
    assert isinstance(mapped, BackendError)
    assert unavailable == isinstance(mapped, BackendUnavailableError)
