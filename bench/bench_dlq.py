"""Dead-letter queue: put, list and redrive per letter, on every backend, beside the floor.

Per backend (memory, SQLite, Redis, PostgreSQL), all sync, through
``invresilience.open_backend(url).dead_letter_queue(name)`` with its default settings
(JSON codec, ``max_letters=100_000`` with ``when_full="reject"``, no retention):

``<backend>: put``
    ``queue.put(payload, reason="exhausted", error=exc, key=...)`` of a ~300-byte JSON
    payload and a real exception with its traceback (raised and caught once, before the
    timing; the traceback is formatted by every put, as in production). The queue is
    emptied before each timed loop (outside the timing), so it holds from 0 to a few
    thousand letters while it is timed. The floor is one hand-written insert of the same
    columns, the payload already encoded and the traceback already formatted (see
    :data:`PUT_FLOORS`).
    The row ``invresilience (error=None)`` is the same put without an exception: the
    difference is what formatting the traceback costs.
``<backend>: list, pages of 100, per letter`` and ``... list by reason, ...``
    ``queue.list(limit=100, cursor=...)`` paging through a queue of 1,000 letters, oldest
    first, wrapping around at the end; the filtered row asks for one reason, which half
    of the letters have (alternately). The floor reads the same pages by hand.
``<backend>: redrive 100, per letter``
    ``queue.redrive(to=handed_on)`` of a queue of 100 letters, ``handed_on`` a no-op
    callable that counts the letters: each letter read, handed on, deleted. The queues are
    filled before each timed loop, outside the timing, one drained per call. The floor reads
    pages of 100 and deletes each letter by id after handing it on.

The list and redrive figures are per letter (``bench/run.py`` divides by 100). The ratio
(ours ÷ the floor, per repeat) is the figure to quote; the µs are context.

Servers: ``INVRES_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and
``INVRES_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``), as for the
tests; an unreachable server skips its backend (the verdict says so). Every queue, key, row
and table is unique to the run and deleted at the end. Run it through ``bench/run.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from _harness import BASELINE, Case, Gap, Mode, Result

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from contextlib import AbstractContextManager

    from invresilience import DeadLetterQueue
    from invresilience.typing import DeadLetter, Reason

__all__ = [
    "BASELINE_LABELS",
    "BUDGETS",
    "GAPS",
    "LIBRARIES",
    "NOTES",
    "PER_ITEM",
    "TITLE",
    "build_cases",
    "check_cases",
    "teardown",
]

TITLE = "Dead-letter queue: put, list and redrive per letter"
OURS = "invresilience"
LIBRARIES = (OURS, "redis", "psycopg")
MODE: Mode = "sync"

REDIS_URL = os.environ.get("INVRES_REDIS_URL") or "redis://127.0.0.1:6379/0"
POSTGRES_URL = os.environ.get("INVRES_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"

BACKENDS = ("memory", "sqlite", "redis", "postgres")
PAGE = 100
LISTED = 1000  # letters in the queue the list rows page through
REASON: Reason = "exhausted"
OTHER_REASON: Reason = (
    "fatal"  # every other letter of the listed queue; the filtered rows ask for it
)
RUN_ID = secrets.token_hex(4)
PREFIX = f"bench-{RUN_ID}"  # every queue name of the run starts with it
FLOOR_LABEL = "by hand (floor)"
NO_ERROR = f"{OURS} (error=None)"

#: A realistic job: an order adjustment of about 300 bytes of JSON.
PAYLOAD: dict[str, Any] = {
    "type": "order.adjustment",
    "order_id": "ord_01J9Z3K7QW8M4T6V2X5B1N0C9D",
    "customer": {"id": "cus_4821937", "tier": "gold", "country": "FR"},
    "lines": [
        {"sku": "SKU-10442", "quantity": 2, "unit_price": "19.90"},
    ],
    "adjustment": {"amount": "-12.50", "currency": "EUR", "reason": "late delivery"},
    "requested_at": "2026-11-24T10:42:17.513Z",
}
PAYLOAD_BYTES = json.dumps(PAYLOAD, separators=(",", ":")).encode()


class LedgerConflictError(RuntimeError):
    """What the job failed with: raised from a few frames down, as a real failure is."""


def _post(order: dict[str, Any]) -> None:
    _apply(order["adjustment"])


def _apply(adjustment: dict[str, str]) -> None:
    try:
        raise KeyError(adjustment["currency"])
    except KeyError as exc:
        raise LedgerConflictError(
            f"ledger rejected adjustment {adjustment['amount']} {adjustment['currency']}:"
            " the order is already settled"
        ) from exc


def _error() -> LedgerConflictError:
    try:
        _post(PAYLOAD)
    except LedgerConflictError as exc:
        return exc
    raise AssertionError("the job did not fail")  # pragma: no cover


ERROR = _error()

# Every letter of the run, by hand or ours, carries this content (its id, key and times
# vary). The floor's columns are filled from it, already encoded and formatted.
COLUMNS = (
    "queue, id, sequence, reason, key, fingerprint, error_type, error_message, traceback,"
    " attempts, first_failed_at, last_failed_at, dead_lettered_at, headers, payload"
)
#: What a floor's page read returns per letter, in this order: sequence and id first.
SELECTED = (
    "sequence, id, reason, key, fingerprint, error_type, error_message, traceback, attempts,"
    " first_failed_at, last_failed_at, dead_lettered_at, headers, payload"
)

Row = tuple[Any, ...]  # (queue, id, sequence, *content) as COLUMNS orders them


def put_scenario(backend: str) -> str:
    return f"{backend}: put"


def list_scenario(backend: str) -> str:
    return f"{backend}: list, pages of {PAGE}, per letter"


def reason_scenario(backend: str) -> str:
    return f"{backend}: list by reason, pages of {PAGE}, per letter"


def redrive_scenario(backend: str) -> str:
    return f"{backend}: redrive {PAGE}, per letter"


#: What each floor is, exactly: the least the backend's driver must do, written by hand.
PUT_FLOORS = {
    "memory": "a tuple into a dict under a threading.Lock, the sequence from a counter",
    "sqlite": "one autocommit INSERT of the same 15 columns (WAL, synchronous=NORMAL)",
    "redis": "one pipeline of HSET (the letter's fields) + ZADD (the sequence index)",
    "postgres": "one autocommit INSERT of the same 15 columns",
}
LIST_FLOORS = {
    "memory": "a scan of the dict in order under the lock, as tuples",
    "sqlite": "SELECT ... WHERE queue = ? AND sequence > ? ORDER BY sequence LIMIT 100",
    "redis": "ZRANGE BYSCORE LIMIT 100, then a pipeline of 100 HGETALL",
    "postgres": "SELECT ... WHERE queue = %s AND sequence > %s ORDER BY sequence LIMIT 100",
}
REASON_FLOORS = {
    "memory": "the same scan, keeping one reason",
    "sqlite": "the same SELECT with AND reason = ?",
    "redis": "pages of ZRANGE + HGETALL, keeping one reason, until 100",
    "postgres": "the same SELECT with AND reason = %s",
}
REDRIVE_FLOORS = {
    "memory": "read a page, then per letter: hand it on, dict.pop under the lock",
    "sqlite": "read a page, then per letter: hand it on, DELETE ... WHERE queue = ? AND id = ?",
    "redis": "read a page, then per letter: hand it on, one pipeline of DEL + ZREM",
    "postgres": "read a page, then per letter: hand it on, DELETE ... WHERE queue = %s AND id = %s",
}

BASELINE_LABELS = {
    **{put_scenario(b): f"{FLOOR_LABEL}: {PUT_FLOORS[b]}" for b in BACKENDS},
    **{list_scenario(b): f"{FLOOR_LABEL}: {LIST_FLOORS[b]}" for b in BACKENDS},
    **{reason_scenario(b): f"{FLOOR_LABEL}: {REASON_FLOORS[b]}" for b in BACKENDS},
    **{redrive_scenario(b): f"{FLOOR_LABEL}: {REDRIVE_FLOORS[b]}" for b in BACKENDS},
}
#: Scenarios whose timed call handles a page of letters: run.py divides their figures by this.
PER_ITEM = {
    **{list_scenario(b): PAGE for b in BACKENDS},
    **{reason_scenario(b): PAGE for b in BACKENDS},
    **{redrive_scenario(b): PAGE for b in BACKENDS},
}

NOTES = (
    (
        f"Each letter: a {len(PAYLOAD_BYTES)}-byte JSON payload, reason, idempotency key, the"
        " error's type, message and formatted traceback (a chained exception raised three frames"
        " down), attempts, three times, empty headers. Defaults of dead_letter_queue(): JSON"
        " codec, max_letters=100,000 (reject), no retention. All rows are sync."
    ),
    (
        "The floors keep the same columns (SQLite, PostgreSQL: a table with the store's columns"
        " and indexes; Redis: a hash per letter and a sorted set of sequences) but take the"
        " sequence from a counter in the benchmark process, correct for one writer only; they"
        " insert the payload already encoded and the traceback already formatted, check no cap,"
        " and return rows, not DeadLetter values."
    ),
    (
        "list rows page through a queue of 1,000 letters (half of them with reason 'fatal', the"
        " filtered rows' reason, alternately), wrapping around; redrive rows drain a queue of 100"
        " letters per call, filled before the timed loop. put rows start each loop with an empty"
        " queue."
    ),
)

#: Rows that could not be timed (none: every backend is timed or skipped whole).
GAPS: list[Gap] = []

_checks: dict[Case, Callable[[], str | None]] = {}
_teardowns: list[Callable[[], None]] = []
_unreachable: dict[str, str] = {}


def teardown() -> None:
    """Delete every queue, key, row and table of the run, and close the connections."""
    while _teardowns:
        with contextlib.suppress(Exception):
            _teardowns.pop()()


# -- the floor written by hand ----------------------------------------------------------------


@dataclass
class Hand:
    """The floor on one backend's raw driver; page rows start with (sequence, id, reason)."""

    insert: Callable[[Row], None]
    insert_many: Callable[[list[Row]], None]  # filling queues, outside the timing
    page: Callable[[str, int, str | None], list[Row]]  # (queue, after, reason) -> up to PAGE
    delete: Callable[[str, str], None]  # (queue, id)
    count: Callable[[str], int]
    clear: Callable[[str], None]


_sequences = itertools.count(1)  # the floors' sequence counter (one writer: this process)
_keys = itertools.count()


def _row(queue: str, reason: Reason = REASON, at: float | None = None) -> Row:
    """A letter as the floor stores it: new id, next sequence, the shared content."""
    now = time.time() if at is None else at
    return (
        queue,
        uuid.uuid4().hex,
        next(_sequences),
        reason,
        f"order-{next(_keys)}",
        None,
        _ERROR_TYPE,
        _ERROR_MESSAGE,
        _TRACEBACK,
        1,
        now,
        now,
        now,
        "{}",
        PAYLOAD_BYTES,
    )


def _error_fields() -> tuple[str, str, str]:
    from invresilience.typing import DeadLetter

    letter = DeadLetter.from_exception(
        ERROR, queue="x", payload=PAYLOAD_BYTES, reason="exhausted", now=0.0
    )
    assert letter.error_type is not None
    assert letter.error_message is not None
    assert letter.traceback is not None
    return letter.error_type, letter.error_message, letter.traceback


_ERROR_TYPE, _ERROR_MESSAGE, _TRACEBACK = _error_fields()


def _memory_hand() -> Hand:
    lock = threading.Lock()
    queues: dict[str, dict[str, Row]] = {}

    def insert(row: Row) -> None:
        with lock:
            letters = queues.get(row[0])
            if letters is None:
                letters = queues[row[0]] = {}
            letters[row[1]] = row[2:3] + row[1:2] + row[3:]

    def insert_many(rows: list[Row]) -> None:
        for row in rows:
            insert(row)

    def page(queue: str, after: int, reason: str | None) -> list[Row]:
        found: list[Row] = []
        with lock:
            for row in queues.get(queue, {}).values():
                if row[0] > after and (reason is None or row[2] == reason):
                    found.append(row)
                    if len(found) == PAGE:
                        break
        return found

    def delete(queue: str, letter_id: str) -> None:
        with lock:
            queues[queue].pop(letter_id, None)

    def count(queue: str) -> int:
        with lock:
            return len(queues.get(queue, {}))

    def clear(queue: str) -> None:
        with lock:
            queues.pop(queue, None)

    return Hand(insert, insert_many, page, delete, count, clear)


def _sql_hand(conn: Any, table: str, mark: str, *, sqlite: bool) -> Hand:
    """The floor on a DB-API connection in autocommit mode (sqlite3 ``?``, psycopg ``%s``)."""
    values = ", ".join([mark] * 15)
    if not sqlite:  # PostgreSQL: headers is jsonb
        values = ", ".join([mark] * 13 + [f"{mark}::jsonb", mark])
    insert_sql = f"INSERT INTO {table} ({COLUMNS}) VALUES ({values})"
    page_sql = (
        f"SELECT {SELECTED} FROM {table} WHERE queue = {mark} AND sequence > {mark}"
        f" ORDER BY sequence LIMIT {PAGE}"
    )
    reason_sql = (
        f"SELECT {SELECTED} FROM {table} WHERE queue = {mark} AND reason = {mark}"
        f" AND sequence > {mark} ORDER BY sequence LIMIT {PAGE}"
    )
    delete_sql = f"DELETE FROM {table} WHERE queue = {mark} AND id = {mark}"
    count_sql = f"SELECT COUNT(*) FROM {table} WHERE queue = {mark}"
    clear_sql = f"DELETE FROM {table} WHERE queue = {mark}"
    execute = conn.execute

    def insert(row: Row) -> None:
        execute(insert_sql, row)

    def insert_many(rows: list[Row]) -> None:
        if sqlite:
            execute("BEGIN IMMEDIATE")
            conn.executemany(insert_sql, rows)
            execute("COMMIT")
        else:
            with conn.cursor() as cur:
                cur.executemany(insert_sql, rows)

    def page(queue: str, after: int, reason: str | None) -> list[Row]:
        if reason is None:
            rows: list[Row] = execute(page_sql, (queue, after)).fetchall()
        else:
            rows = execute(reason_sql, (queue, reason, after)).fetchall()
        return rows

    def delete(queue: str, letter_id: str) -> None:
        execute(delete_sql, (queue, letter_id))

    def count(queue: str) -> int:
        return int(execute(count_sql, (queue,)).fetchone()[0])

    def clear(queue: str) -> None:
        execute(clear_sql, (queue,))

    return Hand(insert, insert_many, page, delete, count, clear)


# The same columns and indexes as SqliteDeadLetterStore's table.
_SQLITE_FLOOR = """\
CREATE TABLE {t} (
    queue TEXT NOT NULL, id TEXT NOT NULL, sequence INTEGER NOT NULL, reason TEXT NOT NULL,
    "key" TEXT, fingerprint TEXT, error_type TEXT, error_message TEXT, traceback TEXT,
    attempts INTEGER NOT NULL, first_failed_at REAL NOT NULL, last_failed_at REAL NOT NULL,
    dead_lettered_at REAL NOT NULL, headers TEXT NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (queue, id)
);
CREATE UNIQUE INDEX {t}_sequence ON {t} (queue, sequence);
CREATE INDEX {t}_key ON {t} (queue, "key");
CREATE INDEX {t}_time ON {t} (queue, dead_lettered_at);
"""

# The same columns and indexes as PostgresDeadLetterStore's table.
_POSTGRES_FLOOR = """\
CREATE TABLE {t} (
    queue text NOT NULL, id text NOT NULL, sequence bigint NOT NULL, reason text NOT NULL,
    key text, fingerprint text, error_type text, error_message text, traceback text,
    attempts bigint NOT NULL, first_failed_at double precision NOT NULL,
    last_failed_at double precision NOT NULL, dead_lettered_at double precision NOT NULL,
    headers jsonb NOT NULL, payload bytea NOT NULL,
    PRIMARY KEY (queue, id), UNIQUE (queue, sequence)
);
CREATE INDEX {t}_key ON {t} (queue, key);
CREATE INDEX {t}_at ON {t} (queue, dead_lettered_at);
"""


@dataclass
class Backend:
    name: str
    queue: Callable[[str], DeadLetterQueue]  # a queue of the backend by name
    hand: Hand


def _open(url: str) -> Any:
    import invresilience as ir

    backend = ir.open_backend(url)
    _teardowns.append(backend.close)
    return backend


def _queues(backend: Any) -> Callable[[str], DeadLetterQueue]:
    def queue(name: str) -> DeadLetterQueue:
        dlq: DeadLetterQueue = backend.dead_letter_queue(name)
        _teardowns.append(dlq.close)
        return dlq

    return queue


def _memory() -> Backend:
    return Backend("memory", _queues(_open("memory://")), _memory_hand())


def _sqlite() -> Backend:
    directory = tempfile.mkdtemp(prefix="invres-bench-dlq-")
    _teardowns.append(lambda: shutil.rmtree(directory, ignore_errors=True))
    path = os.path.join(directory, "bench.db")
    backend = _open(f"sqlite:///{path}")
    # The store's settings: autocommit (explicit BEGIN), WAL, synchronous=NORMAL.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    _teardowns.append(conn.close)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(_SQLITE_FLOOR.format(t="bench_floor"))
    return Backend("sqlite", _queues(backend), _sql_hand(conn, "bench_floor", "?", sqlite=True))


def _redis() -> Backend:
    import redis

    raw: Any = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    _teardowns.append(raw.close)
    raw.ping()
    backend = _open(REDIS_URL)
    _teardowns.append(lambda: _redis_cleanup(raw))
    base = f"invres-bench:{RUN_ID}:dlq:"
    names = ("reason", "key", "error_type", "error_message", "traceback", "attempts")
    times = ("first_failed_at", "last_failed_at", "dead_lettered_at")

    def insert_into(pipe: Any, row: Row) -> None:
        queue, letter_id, sequence = row[0], row[1], row[2]
        fields: dict[str, Any] = {"id": letter_id, "sequence": sequence}
        fields.update(zip(names, (row[3], row[4], row[6], row[7], row[8], row[9]), strict=True))
        fields.update(zip(times, (repr(row[10]), repr(row[11]), repr(row[12])), strict=True))
        fields["headers"] = row[13]
        fields["payload"] = row[14]
        pipe.hset(f"{base}{{{queue}}}:letter:{letter_id}", mapping=fields)
        pipe.zadd(f"{base}{{{queue}}}:ids", {letter_id: sequence})

    def insert(row: Row) -> None:
        with raw.pipeline(transaction=False) as pipe:
            insert_into(pipe, row)
            pipe.execute()

    def insert_many(rows: list[Row]) -> None:
        with raw.pipeline(transaction=False) as pipe:
            for row in rows:
                insert_into(pipe, row)
            pipe.execute()

    zrange = raw.zrange

    def read(queue: str, after: int) -> list[Row]:
        index = f"{base}{{{queue}}}:ids"
        ids: list[tuple[bytes, float]] = zrange(
            index, f"({after}", "+inf", byscore=True, offset=0, num=PAGE, withscores=True
        )
        if not ids:
            return []
        with raw.pipeline(transaction=False) as pipe:
            for letter_id, _ in ids:
                pipe.hgetall(f"{base}{{{queue}}}:letter:{letter_id.decode()}")
            letters = pipe.execute()
        return [
            (int(score), letter_id.decode(), fields[b"reason"].decode(), fields)
            for (letter_id, score), fields in zip(ids, letters, strict=True)
        ]

    def page(queue: str, after: int, reason: str | None) -> list[Row]:
        if reason is None:
            return read(queue, after)
        found: list[Row] = []
        while len(found) < PAGE:
            rows = read(queue, after)
            found.extend(row for row in rows if row[2] == reason)
            if len(rows) < PAGE:
                break
            after = rows[-1][0]
        return found[:PAGE]

    def delete(queue: str, letter_id: str) -> None:
        with raw.pipeline(transaction=False) as pipe:
            pipe.delete(f"{base}{{{queue}}}:letter:{letter_id}")
            pipe.zrem(f"{base}{{{queue}}}:ids", letter_id)
            pipe.execute()

    def count(queue: str) -> int:
        return int(raw.zcard(f"{base}{{{queue}}}:ids"))

    def clear(queue: str) -> None:
        ids = raw.zrange(f"{base}{{{queue}}}:ids", 0, -1)
        with raw.pipeline(transaction=False) as pipe:
            for letter_id in ids:
                pipe.delete(f"{base}{{{queue}}}:letter:{letter_id.decode()}")
            pipe.delete(f"{base}{{{queue}}}:ids")
            pipe.execute()

    hand = Hand(insert, insert_many, page, delete, count, clear)
    return Backend("redis", _queues(backend), hand)


def _redis_cleanup(raw: Any) -> None:
    """Delete every key of this run: the floor's and our queues' (their names hold RUN_ID)."""
    for pattern in (f"invres-bench:{RUN_ID}:*", f"*{{{PREFIX}-*"):
        doomed: list[bytes] = []
        for key in raw.scan_iter(match=pattern, count=1000):
            doomed.append(key)
            if len(doomed) >= 1000:
                raw.delete(*doomed)
                doomed.clear()
        if doomed:
            raw.delete(*doomed)


def _postgres() -> Backend:
    import psycopg

    conn = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    _teardowns.append(conn.close)
    backend = _open(POSTGRES_URL)
    table = f"invres_bench_dlq_{RUN_ID}"
    conn.execute(_POSTGRES_FLOOR.format(t=table))

    def cleanup() -> None:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        # Our queues' rows: the default table prefix, this run's queue names.
        pattern = f"{PREFIX}-%"
        for ours in ("invresilience_dead_letters", "invresilience_dead_letter_queues"):
            with contextlib.suppress(psycopg.Error):
                conn.execute(f"DELETE FROM {ours} WHERE queue LIKE %s", (pattern,))

    _teardowns.append(cleanup)
    return Backend("postgres", _queues(backend), _sql_hand(conn, table, "%s", sqlite=False))


FACTORIES: dict[str, Callable[[], Backend]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "postgres": _postgres,
}


# -- queues filled before the timing -------------------------------------------------------

T = TypeVar("T")


class Batches(Generic[T]):
    """Queues of :data:`PAGE` letters, filled before each timed loop; each call drains one.

    A timed loop needs one full queue per call. Once calibrated, the loop count is known
    (``case.loops``); while the harness calibrates it is not, so the next loop's need is
    guessed from the last one the way the harness grows its loops (at most 10× while a
    loop is under a millisecond, else to half the ~0.12 s target). A guess that falls
    short fills the missing queue inside the timing: calibration only, never a repeat.
    """

    MAX_GUESS = 200

    def __init__(self, make: Callable[[int], T], fill: Callable[[T], None]) -> None:
        self.make = make
        self.fill = fill
        self.made = 0
        self.ready: list[T] = []
        self.empty: list[T] = []
        self.guess = 1
        self.taken = 0

    def _filled(self) -> T:
        if self.empty:
            slot = self.empty.pop()
        else:
            slot = self.make(self.made)
            self.made += 1
        self.fill(slot)
        return slot

    def take(self) -> T:
        """A full queue (the caller drains it)."""
        self.taken += 1
        slot = self.ready.pop() if self.ready else self._filled()
        self.empty.append(slot)
        return slot

    def peek(self) -> T:
        """The queue :meth:`take` hands out next, filled."""
        if not self.ready:
            self.ready.append(self._filled())
        return self.ready[-1]

    def context(self, case: Case) -> Callable[[], AbstractContextManager[object]]:
        @contextlib.contextmanager
        def fill() -> Iterator[None]:
            need = case.loops or self.guess
            while len(self.ready) < need:
                self.ready.append(self._filled())
            self.taken = 0
            start = time.perf_counter()
            yield
            elapsed = max(time.perf_counter() - start, 1e-9)
            if not case.loops and self.taken:
                grow = 10.0 if elapsed < 1e-3 else 0.06 / elapsed
                guess = max(self.taken + 1, math.ceil(self.taken * grow)) + 1
                self.guess = min(self.MAX_GUESS, guess)

        return fill


# -- the cases -----------------------------------------------------------------------------


def _add(
    cases: list[Case],
    scenario: str,
    library: str,
    fn: Callable[[], Any],
    check: Callable[[], str | None],
    context: Callable[[Case], Callable[[], AbstractContextManager[object]]] | None = None,
) -> None:
    case = Case(scenario, MODE, library, fn, fn.__code__)
    if context is not None:
        case.context = context(case)
    _checks[case] = check
    cases.append(case)


def _emptied(clear: Callable[[], object]) -> Callable[[Case], Callable[[], Any]]:
    """A context that empties a queue before each timed loop (outside the timing)."""

    def context(case: Case) -> Callable[[], AbstractContextManager[object]]:
        @contextlib.contextmanager
        def empty() -> Iterator[None]:
            clear()
            yield

        return empty

    return context


def _store_cases(cases: list[Case], b: Backend) -> None:
    """Our rows and the floors of the four scenarios on one backend."""
    import attrs

    from invresilience.typing import DeadLetter

    name, hand = b.name, b.hand

    # put -----------------------------------------------------------------------------
    scenario = put_scenario(name)
    floor_queue = f"{PREFIX}-{name}-put-floor"
    hand_insert = hand.insert

    def put_by_hand() -> None:
        hand_insert(_row(floor_queue))

    def check_put_by_hand() -> str | None:
        before = hand.count(floor_queue)
        put_by_hand()
        rows = hand.page(floor_queue, 0, None)
        if hand.count(floor_queue) != before + 1 or not rows or rows[-1][2] != REASON:
            return "the hand-written insert did not store one letter"
        return None

    _add(
        cases,
        scenario,
        BASELINE,
        put_by_hand,
        check_put_by_hand,
        _emptied(lambda: hand.clear(floor_queue)),
    )

    dlq = b.queue(f"{PREFIX}-{name}-put")
    put = dlq.put
    keys = itertools.count()

    def put_ours() -> DeadLetter:
        return put(PAYLOAD, reason=REASON, error=ERROR, key=f"order-{next(keys)}")

    def check_put_ours() -> str | None:
        before = dlq.count()
        letter = put_ours()
        stored = dlq.get(letter.id)
        if dlq.count() != before + 1 or stored is None or stored.sequence < 1:
            return f"put did not store one letter ({dlq.count() - before} more, {stored!r})"
        if dlq.decode(stored) != PAYLOAD or stored.traceback != letter.traceback:
            return "the stored letter does not hold the payload and traceback"
        if stored.error_type is None or not (stored.traceback or "").startswith("Traceback"):
            return f"the letter does not record the error: {stored.error_type!r}"
        return None

    _add(
        cases,
        scenario,
        OURS,
        put_ours,
        check_put_ours,
        _emptied(lambda: dlq.purge(everything=True)),
    )

    # The same put without an exception (a crash-loop letter has none): what formatting
    # the traceback costs, by difference.
    bare = b.queue(f"{PREFIX}-{name}-put-bare")
    put_bare_ = bare.put

    def put_bare() -> DeadLetter:
        return put_bare_(PAYLOAD, reason=REASON, key=f"order-{next(keys)}")

    def check_put_bare() -> str | None:
        before = bare.count()
        letter = put_bare()
        stored = bare.get(letter.id)
        if bare.count() != before + 1 or stored is None or bare.decode(stored) != PAYLOAD:
            return f"put did not store one letter ({bare.count() - before} more, {stored!r})"
        return None

    _add(
        cases,
        scenario,
        NO_ERROR,
        put_bare,
        check_put_bare,
        _emptied(lambda: bare.purge(everything=True)),
    )

    # list, unfiltered and by reason ---------------------------------------------------
    listed_floor = f"{PREFIX}-{name}-list-floor"
    listed = b.queue(f"{PREFIX}-{name}-list")
    start = time.time()
    rows = [
        _row(listed_floor, (REASON, OTHER_REASON)[i % 2], start - LISTED + i) for i in range(LISTED)
    ]
    hand.insert_many(rows)
    template = DeadLetter.from_exception(
        ERROR, queue=listed.name, payload=PAYLOAD_BYTES, reason=REASON, now=start
    )
    add = listed.store.add
    for row in rows:
        at = row[12]
        add(
            attrs.evolve(
                template,
                id=uuid.uuid4().hex,
                key=row[4],
                reason=row[3],
                first_failed_at=at,
                last_failed_at=at,
                dead_lettered_at=at,
            )
        )
    if listed.count() != LISTED or hand.count(listed_floor) != LISTED:
        raise RuntimeError(f"{name}: the listed queues do not hold {LISTED} letters")

    filters: tuple[tuple[str, Reason | None], ...] = (
        (list_scenario(name), None),
        (reason_scenario(name), OTHER_REASON),
    )
    for scenario, reason in filters:
        # The floor wraps around after the last full page, as our cursor does.
        after, last = 0, 0
        while True:
            page_rows = hand.page(listed_floor, after, reason)
            if len(page_rows) < PAGE:
                break
            after = last = page_rows[-1][0]
        _list_cases(cases, scenario, hand, listed_floor, listed, reason, last)

    # redrive ------------------------------------------------------------------------------
    scenario = redrive_scenario(name)
    handed = [0]

    def handed_on(letter: object) -> None:
        handed[0] += 1

    def fill_floor(queue: str) -> None:
        hand.insert_many([_row(queue) for _ in range(PAGE)])

    floors = Batches(lambda i: f"{PREFIX}-{name}-redrive-floor-{i}", fill_floor)
    page, delete = hand.page, hand.delete

    def redrive_by_hand() -> int:
        queue = floors.take()
        after = done = 0
        while True:
            page_rows = page(queue, after, None)
            for row in page_rows:
                handed_on(row)
                delete(queue, row[1])
                done += 1
            if len(page_rows) < PAGE:
                return done
            after = page_rows[-1][0]

    def check_redrive_by_hand() -> str | None:
        queue = floors.peek()
        before = handed[0]
        done = redrive_by_hand()
        if done != PAGE or handed[0] - before != PAGE or hand.count(queue) != 0:
            return f"the hand-written redrive handed on {handed[0] - before} of {PAGE} letters"
        return None

    _add(cases, scenario, BASELINE, redrive_by_hand, check_redrive_by_hand, floors.context)

    def fill_ours(queue: DeadLetterQueue) -> None:
        now = time.time()
        add = queue.store.add
        for _ in range(PAGE):
            add(
                attrs.evolve(
                    template,
                    queue=queue.name,
                    id=uuid.uuid4().hex,
                    key=f"order-{next(_keys)}",
                    first_failed_at=now,
                    last_failed_at=now,
                    dead_lettered_at=now,
                )
            )

    ours = Batches(lambda i: b.queue(f"{PREFIX}-{name}-redrive-{i}"), fill_ours)

    def redrive_ours() -> int:
        return len(ours.take().redrive(to=handed_on).redriven)

    def check_redrive_ours() -> str | None:
        queue = ours.peek()
        before = handed[0]
        done = redrive_ours()
        if done != PAGE or handed[0] - before != PAGE or queue.count() != 0:
            return f"redrive handed on {handed[0] - before} of {PAGE} letters ({done} reported)"
        return None

    _add(cases, scenario, OURS, redrive_ours, check_redrive_ours, ours.context)


def _list_cases(
    cases: list[Case],
    scenario: str,
    hand: Hand,
    floor_queue: str,
    listed: DeadLetterQueue,
    reason: Reason | None,
    last: int,
) -> None:
    page = hand.page
    after = [0]

    def list_by_hand() -> int:
        rows = page(floor_queue, after[0], reason)
        after[0] = 0 if rows[-1][0] >= last else rows[-1][0]
        return len(rows)

    def check_list_by_hand() -> str | None:
        before = after[0]
        rows = page(floor_queue, before, reason)
        sequences = [row[0] for row in rows]
        if list_by_hand() != PAGE or sequences != sorted(sequences) or sequences[0] <= before:
            return f"the hand-written page is not {PAGE} letters oldest first"
        if reason is not None and any(row[2] != reason for row in rows):
            return "the hand-written page holds letters of another reason"
        return None

    _add(cases, scenario, BASELINE, list_by_hand, check_list_by_hand)

    list_ = listed.list
    cursor: list[str | None] = [None]

    def list_ours() -> int:
        letters_page = list_(reason=reason, limit=PAGE, cursor=cursor[0])
        cursor[0] = letters_page.cursor
        return len(letters_page.letters)

    def check_list_ours() -> str | None:
        letters_page = listed.list(reason=reason, limit=PAGE, cursor=cursor[0])
        letters = letters_page.letters
        sequences = [letter.sequence for letter in letters]
        if list_ours() != PAGE or sequences != sorted(sequences):
            return f"the page is not {PAGE} letters oldest first"
        if reason is not None and any(letter.reason != reason for letter in letters):
            return "the page holds letters of another reason"
        return None

    _add(cases, scenario, OURS, list_ours, check_list_ours)


def build_cases(
    run: Callable[[Awaitable[Any]], Any], backends: tuple[str, ...] = BACKENDS
) -> tuple[list[Case], list[str]]:
    """Every case, each scenario's floor first; and the libraries skipped (none here).

    A backend whose server cannot be reached, or that has no dead-letter store, is left
    out (its verdicts say so).
    """
    cases: list[Case] = []
    for name in backends:
        try:
            backend = FACTORIES[name]()
            _store_cases(cases, backend)
        except Exception as exc:
            if name == "memory":
                raise
            _unreachable[name] = f"{type(exc).__name__}: {exc}".strip()
            print(f"note: {name} skipped: {_unreachable[name]}", file=sys.stderr)
            for scenario in BASELINE_LABELS:
                if scenario.startswith(f"{name}:"):
                    for case in [c for c in cases if c.scenario == scenario]:
                        cases.remove(case)
            continue
    return cases, []


def check_cases(cases: list[Case], run: Callable[[Awaitable[Any]], Any]) -> list[str]:
    """Problems found by running every case's check once (an empty list when all is well).

    A put must store one letter holding the payload and the error; a page must hold 100
    letters oldest first, of the reason asked for; a redrive must hand on and delete the
    100 letters of its queue. The floors are checked the same way.
    """
    problems = []
    for case in cases:
        check = _checks.get(case)
        if check is None:
            continue
        try:
            with case.context():
                problem = check()
        except Exception as exc:  # noqa: BLE001 - reported, not handled
            problem = f"raised {exc!r}"
        if problem is not None:
            problems.append(f"{case.label}: {problem}")
    return problems


# -- verdicts (no budget is set for the dead-letter queue: they only report) ---------------------


@dataclass(frozen=True)
class Ratio:
    """Reports invresilience's row as a ratio to the floor; never fails the run (``INFO``)."""

    backend: str
    scenario: str
    floor: str

    def verdict(self, results: list[Result]) -> tuple[bool, str]:
        rows = {r.library: r for r in results if r.scenario == self.scenario}
        if OURS not in rows:
            why = _unreachable.get(self.backend, "not timed")
            return True, f"SKIP  {self.scenario}: {self.backend} was not timed ({why})"
        ours, base = rows[OURS], rows[BASELINE]
        per = PER_ITEM.get(self.scenario, 1)
        us, floor_us = ours.us_per_call / per, base.us_per_call / per
        line = (
            f"INFO  {self.scenario}: {ours.ratio:.2f}× the floor ({self.floor});"
            f" {us:.1f} µs per letter, {1e6 / us:,.0f} letters/s"
            f" (floor {floor_us:.1f} µs, {1e6 / floor_us:,.0f} letters/s)"
        )
        extras = [
            f"{name.removeprefix(OURS).strip(' ()')} {row.ratio:.2f}×"
            for name, row in rows.items()
            if name.startswith(OURS) and name != OURS
        ]
        if extras:
            line += "; " + ", ".join(extras)
        return True, line


BUDGETS = tuple(
    Ratio(b, scenario(b), floors[b])
    for scenario, floors in (
        (put_scenario, PUT_FLOORS),
        (list_scenario, LIST_FLOORS),
        (reason_scenario, REASON_FLOORS),
        (redrive_scenario, REDRIVE_FLOORS),
    )
    for b in BACKENDS
)
