"""SQLite stores through the standard library's :mod:`sqlite3`: no server, no extra.

- :class:`SqliteIdempotencyStore` / :class:`AsyncSqliteIdempotencyStore` -- idempotency
  records, an :class:`~invresilience.typing.IdempotencyStore` /
  :class:`~invresilience.typing.AsyncIdempotencyStore`, plus
  :meth:`SqliteIdempotencyStore.transaction` for exactly-once effects on local state.
- :class:`SqliteDeadLetterStore` / :class:`AsyncSqliteDeadLetterStore` -- the letters of
  a dead-letter queue, a :class:`~invresilience.typing.DeadLetterStore` /
  :class:`~invresilience.typing.AsyncDeadLetterStore`.
- :class:`SqliteMembership` / :class:`AsyncSqliteMembership` -- a group's members,
  leases and versioned view, a :class:`~invresilience.typing.Membership` /
  :class:`~invresilience.typing.AsyncMembership` for the processes of one host.
- :class:`SqliteBackend` -- one database file, its URL and the stores (and dead-letter
  queues) made on it.

Idempotency: every operation but ``complete`` is one ``BEGIN IMMEDIATE`` transaction: it
reads the key's row, applies the rule of :mod:`invresilience._core.idempotency` (the same
functions the memory store calls) and writes the row back before ``COMMIT``. ``complete``
is a single ``UPDATE`` whose ``WHERE`` is that module's ``holds`` rule (pending, same
fence and token, not expired), atomic by itself. A claim first tries a plain ``INSERT OR
IGNORE`` of the record a never-seen key gets, and reads the row only if one was there.
``claim_many`` and ``complete_many`` do a whole batch in one transaction. Records are
timed on the store clock's ``wall()`` (seconds since the epoch), so processes on one
host agree on when a lease runs out.

Dead letters: ``add`` is one ``BEGIN IMMEDIATE`` transaction (the id check, the cap and
its eviction, the next sequence, the insert); ``list``, ``count``, ``stats``,
``replace`` and ``purge`` are one statement each, their ``WHERE`` built from the
:class:`~invresilience.typing.LetterFilter` with parameters only.

Membership: a group is one row holding the JSON document of ``GroupState.dumps()``;
each operation is one ``BEGIN IMMEDIATE`` transaction that reads it, applies the operation with
:class:`~invresilience._core.membership.GroupState` (the rules the memory store runs) and
writes it back when it changed. Leases are timed on the store clock's ``wall()``: a
monotonic clock is not shared between processes.

Schema
------

Tables named after *table_prefix* (``invresilience`` by default)::

    <prefix>_schema         component TEXT PRIMARY KEY, version INTEGER
    <prefix>_idempotency    namespace, key, fingerprint, state, fence, token,
                            lease_until REAL, expires_at REAL, result BLOB,
                            PRIMARY KEY (namespace, key)
    <prefix>_dead_letters   queue, id, sequence INTEGER, reason, key, fingerprint,
                            error_type, error_message, traceback, attempts INTEGER,
                            first_failed_at REAL, last_failed_at REAL,
                            dead_lettered_at REAL, headers (JSON text), payload BLOB,
                            PRIMARY KEY (queue, id)
    <prefix>_dead_letter_queues
                            queue TEXT PRIMARY KEY, last INTEGER, held INTEGER
    <prefix>_membership     grp TEXT PRIMARY KEY, state TEXT (JSON)

with the index ``<prefix>_idempotency_expires`` on ``(namespace, expires_at)`` for
:meth:`~SqliteIdempotencyStore.purge_expired`, and on the letters a unique index on
``(queue, sequence)`` and indexes on ``(queue, key)`` and ``(queue, dead_lettered_at)``.
A letter's sequence comes from its queue's counter ``last`` in
``<prefix>_dead_letter_queues``, which deleting letters never winds back; ``held``, the
number of letters the queue holds (what the cap is checked against, without counting
rows), is kept by triggers on every insert and delete, whoever makes them. Text that
UTF-8 cannot carry (lone surrogates, as in the message of an error about an undecodable
file name) is kept as its ``surrogatepass`` encoding, in a BLOB, and read back as it was.

Each kind of store is a *component* of the schema, versioned in its own
``<prefix>_schema`` row: ``idempotency`` at :data:`SCHEMA_VERSION`,
``dead_letters`` at :data:`DEAD_LETTER_SCHEMA_VERSION`, ``membership`` at
:data:`MEMBERSHIP_SCHEMA_VERSION`. The first store of a kind to
open a database creates (or brings up to date) that component's tables, so a file
written before dead letters existed gains their tables when a dead-letter store first
opens it. A database recording a component at a version newer than this code knows is
refused with a :exc:`~invresilience.exceptions.BackendError` rather than misread.
Several namespaces (queues) share one table, each seeing only its own rows.

Durability and many processes
-----------------------------

Each store opens its own connection, in WAL mode: readers never block the writer, and
any number of processes (and threads) on one host may use one file. Writers take turns;
a store waits up to *busy_timeout* seconds for its turn, then raises
:exc:`~invresilience.exceptions.BackendUnavailableError`. WAL needs shared memory, so the
file must be on a local disk, not a network share. ``durability="normal"``
(``synchronous=NORMAL``) survives a crash of the process; a power loss may drop the last
commits. ``durability="full"`` (``synchronous=FULL``) syncs every commit to disk.
``":memory:"`` is a private database of one connection: the store's own records, gone
when it closes.

Errors: a database that stayed locked past *busy_timeout* raises
:exc:`~invresilience.exceptions.BackendUnavailableError`, any other :exc:`sqlite3.Error` a
:exc:`~invresilience.exceptions.BackendError`, with the driver's exception as
``__cause__``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import sqlite3
import threading
import weakref
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
from typing_extensions import final

from .._clock import SYSTEM_CLOCK
from .._core import idempotency as rules
from .._core.dlq import REASONS, Added, DeadLetter, QueueStats, check_letter_id
from .._core.membership import MembershipOp
from .._dlq import AsyncDeadLetterQueue, DeadLetterQueue
from ..exceptions import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    DeadLetterQueueFullError,
    IdempotencyError,
)
from ..typing import DEFAULT_TTL
from ._common import (
    check_claim_args,
    check_lease,
    check_letter,
    check_limit,
    check_max_letters,
    check_membership_op,
    check_namespace,
    check_ttl,
    lost,
    membership_result,
    membership_step,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import TracebackType

    from .._core.dlq import LetterFilter
    from .._core.idempotency import Claim, Lease, Record
    from .._core.membership import MembershipView
    from ..typing import Clock

__all__ = [
    "DEAD_LETTER_SCHEMA_VERSION",
    "MEMBERSHIP_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "AsyncSqliteDeadLetterStore",
    "AsyncSqliteIdempotencyStore",
    "AsyncSqliteMembership",
    "SqliteBackend",
    "SqliteDeadLetterStore",
    "SqliteIdempotencyStore",
    "SqliteMembership",
    "SqliteTransaction",
]

#: The version of the idempotency tables this code writes (``<prefix>_schema`` row
#: ``idempotency``).
SCHEMA_VERSION: Final = 1
#: The version of the dead-letter tables this code writes (``<prefix>_schema`` row
#: ``dead_letters``).
DEAD_LETTER_SCHEMA_VERSION: Final = 1
#: The version of the membership table this code writes (``<prefix>_schema`` row
#: ``membership``).
MEMBERSHIP_SCHEMA_VERSION: Final = 1

_Durability = Literal["normal", "full"]

_IDEMPOTENCY: Final = "idempotency"
_DEAD_LETTERS: Final = "dead_letters"
_MEMBERSHIP: Final = "membership"
_MEMORY: Final = ":memory:"
_URL_PREFIX: Final = "sqlite:///"
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}\Z")
# Primary result codes (the low byte of an extended code) of a database another
# connection holds: SQLITE_BUSY and SQLITE_LOCKED.
_BUSY_CODES: Final = (5, 6)
# The largest value of an SQLite INTEGER.
_INT64_MAX: Final = (1 << 63) - 1
# Ids per DELETE ... IN (...) (SQLite before 3.32 allows 999 parameters a statement).
_DELETE_BATCH: Final = 500

# Each component of the schema (a store kind) is versioned on its own, in its own row of
# <prefix>_schema, so a store creates only its own tables and an older invresilience that
# knows one component keeps working on a file another store added a component to.
# Statements that bring a component's tables from version N - 1 to N, at index N - 1.
# ``{p}`` is the table prefix, already checked to be a plain identifier.
_MIGRATIONS: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    _IDEMPOTENCY: (
        (
            """CREATE TABLE IF NOT EXISTS "{p}_idempotency" (
                namespace TEXT NOT NULL,
                "key" TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('pending', 'completed', 'released')),
                fence INTEGER NOT NULL,
                token TEXT NOT NULL,
                lease_until REAL NOT NULL,
                expires_at REAL NOT NULL,
                result BLOB,
                PRIMARY KEY (namespace, "key")
            )""",
            """CREATE INDEX IF NOT EXISTS "{p}_idempotency_expires"
                ON "{p}_idempotency" (namespace, expires_at)""",
        ),
    ),
    _DEAD_LETTERS: (
        (
            # Text columns hold TEXT, or (for text with lone surrogates, which UTF-8
            # cannot carry) its "surrogatepass" encoding as a BLOB: see _text_in.
            """CREATE TABLE IF NOT EXISTS "{p}_dead_letters" (
                queue TEXT NOT NULL,
                id TEXT NOT NULL,
                sequence INTEGER NOT NULL,
                reason TEXT NOT NULL,
                "key" TEXT,
                fingerprint TEXT,
                error_type TEXT,
                error_message TEXT,
                traceback TEXT,
                attempts INTEGER NOT NULL,
                first_failed_at REAL NOT NULL,
                last_failed_at REAL NOT NULL,
                dead_lettered_at REAL NOT NULL,
                headers TEXT NOT NULL,
                payload BLOB NOT NULL,
                PRIMARY KEY (queue, id)
            )""",
            """CREATE UNIQUE INDEX IF NOT EXISTS "{p}_dead_letters_sequence"
                ON "{p}_dead_letters" (queue, sequence)""",
            """CREATE INDEX IF NOT EXISTS "{p}_dead_letters_key"
                ON "{p}_dead_letters" (queue, "key")""",
            """CREATE INDEX IF NOT EXISTS "{p}_dead_letters_time"
                ON "{p}_dead_letters" (queue, dead_lettered_at)""",
            # Per queue: the last sequence handed out (kept when its letters are deleted,
            # so a sequence is never reused), and how many letters it holds, which the
            # triggers keep equal to its rows so add() checks the cap without a COUNT.
            """CREATE TABLE IF NOT EXISTS "{p}_dead_letter_queues" (
                queue TEXT PRIMARY KEY,
                last INTEGER NOT NULL,
                held INTEGER NOT NULL
            )""",
            """CREATE TRIGGER IF NOT EXISTS "{p}_dead_letters_inserted"
                AFTER INSERT ON "{p}_dead_letters" BEGIN
                    UPDATE "{p}_dead_letter_queues" SET held = held + 1
                        WHERE queue = NEW.queue;
                END""",
            """CREATE TRIGGER IF NOT EXISTS "{p}_dead_letters_deleted"
                AFTER DELETE ON "{p}_dead_letters" BEGIN
                    UPDATE "{p}_dead_letter_queues" SET held = held - 1
                        WHERE queue = OLD.queue;
                END""",
        ),
    ),
    _MEMBERSHIP: (
        (
            # One row per group: its GroupState as JSON (ASCII: json.dumps escapes the rest).
            """CREATE TABLE IF NOT EXISTS "{p}_membership" (
                grp TEXT PRIMARY KEY,
                state TEXT NOT NULL
            )""",
        ),
    ),
}
_VERSIONS: Final = {
    _IDEMPOTENCY: SCHEMA_VERSION,
    _DEAD_LETTERS: DEAD_LETTER_SCHEMA_VERSION,
    _MEMBERSHIP: MEMBERSHIP_SCHEMA_VERSION,
}


# -- argument checks ----------------------------------------------------------------------------


def _check_path(field: str, path: object) -> str:
    try:
        value = os.fspath(path)  # type: ignore[call-overload]
    except TypeError:
        value = None
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ConfigurationError(
            field, path, "must be a file path (str or os.PathLike) or ':memory:'"
        )
    return value


def _check_durability(field: str, durability: object) -> _Durability:
    if durability in ("normal", "full"):
        return durability
    raise ConfigurationError(field, durability, "must be 'normal' or 'full'")


def _check_prefix(field: str, prefix: object) -> str:
    # The prefix is spliced into SQL as an identifier: it must be one, and not one of the
    # names SQLite reserves for itself (sqlite_*).
    if (
        not isinstance(prefix, str)
        or not _PREFIX.match(prefix)
        or f"{prefix}_".lower().startswith("sqlite_")
    ):
        raise ConfigurationError(
            field,
            prefix,
            "must be an SQL identifier: a letter or '_', then up to 40 letters, digits or '_',"
            " not starting with 'sqlite_'",
        )
    return prefix


def _check_busy_timeout(field: str, seconds: object) -> float:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ConfigurationError(field, seconds, "must be a finite number of seconds >= 0")
    return float(seconds)


def _check_text(field: str, value: str) -> None:
    # SQLite stores text as UTF-8, which has no lone surrogates.
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ConfigurationError(field, value, "must be encodable as UTF-8") from None


# -- the driver ---------------------------------------------------------------------------------


def _error(where: str, exc: sqlite3.Error) -> BackendError:
    """The invresilience error for a driver error (the caller chains *exc*)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    message = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and (
        (code is not None and code & 0xFF in _BUSY_CODES) or "is locked" in message
    ):
        return BackendUnavailableError(
            f"{where}: the SQLite database stayed locked by another connection for longer "
            f"than busy_timeout: {message}; try again later, or raise busy_timeout"
        )
    return BackendError(f"{where}: SQLite failed: {message}")


def _rollback(connection: sqlite3.Connection) -> None:
    # Called while another error propagates: that error is the one to report.
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


def _connect(path: str, durability: _Durability, busy_timeout: float) -> sqlite3.Connection:
    # isolation_level=None: the module never opens transactions on its own; every
    # operation says BEGIN IMMEDIATE (take the write lock first, so two claims of one key
    # serialize instead of both reading "absent").
    connection = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        _enable_wal(connection, busy_timeout)
        connection.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
    except BaseException:
        connection.close()
        raise
    return connection


def _enable_wal(connection: sqlite3.Connection, busy_timeout: float) -> None:
    """Put the database in WAL mode, waiting out processes that open it at the same moment.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is
    locked" at once, without its busy handler, when another connection holds a lock: so
    processes starting together on a fresh file retry here, for up to *busy_timeout*.
    """
    waited = 0.0
    pause = 0.005
    while True:
        try:
            (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or waited >= busy_timeout:
                raise
        SYSTEM_CLOCK.sleep(pause)
        waited += pause
        pause = min(pause * 2, 0.1)


class _Database:
    """One store's connection to its database file: what every SQLite store shares.

    Opens the connection (WAL, durability, busy timeout), brings the store's component
    of the schema up to date, and runs the store's operations under one lock: a
    ``BEGIN IMMEDIATE`` transaction (:meth:`immediate`) or a statement atomic by itself
    (:meth:`autocommit`), with driver errors mapped and chained.

    Args:
        owner: The store's ``repr``, for error messages.
        component: The schema component the store uses (a key of ``_MIGRATIONS``).
    """

    def __init__(
        self,
        owner: str,
        path: str,
        table_prefix: str,
        durability: _Durability,
        busy_timeout: float,
        component: str,
    ) -> None:
        self.owner = owner
        # Re-entrant, so that a store call inside the idempotency store's own
        # transaction() gets a clear error rather than a deadlock.
        self.lock = threading.RLock()
        self.connection: sqlite3.Connection | None = None
        try:
            self.connection = _connect(path, durability, busy_timeout)
        except sqlite3.Error as exc:
            raise _error(f"{owner}: opening", exc) from exc
        # A store dropped without close() (a queue made and used in one expression) still
        # closes its connection when it is collected, rather than leaking it.
        self._finalizer = weakref.finalize(self, self.connection.close)
        try:
            self._migrate(table_prefix, component)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self.connection is None

    def open(self, operation: str) -> sqlite3.Connection:
        """The connection, outside any transaction; call under :attr:`lock`."""
        connection = self.connection
        if connection is None:
            raise BackendError(f"{self.owner}.{operation}: the store is closed")
        if connection.in_transaction:
            raise BackendError(
                f"{self.owner}.{operation}: called inside this store's transaction(); "
                "complete through the transaction's complete(), or use another store"
            )
        return connection

    @contextlib.contextmanager
    def immediate(self, operation: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` under the lock, rolled back on any error."""
        with self.lock:
            connection = self.open(operation)
            try:
                connection.execute("BEGIN IMMEDIATE")
                yield connection
                connection.execute("COMMIT")
            except BaseException as exc:
                _rollback(connection)
                if isinstance(exc, sqlite3.Error):
                    raise _error(f"{self.owner}.{operation}", exc) from exc
                raise

    @contextlib.contextmanager
    def autocommit(self, operation: str) -> Iterator[sqlite3.Connection]:
        """The connection for one statement that is atomic by itself, under the lock."""
        with self.lock:
            connection = self.open(operation)
            try:
                yield connection
            except sqlite3.Error as exc:
                raise _error(f"{self.owner}.{operation}", exc) from exc

    def _migrate(self, prefix: str, component: str) -> None:
        latest = _VERSIONS[component]
        with self.immediate("open") as connection:
            connection.execute(
                f'CREATE TABLE IF NOT EXISTS "{prefix}_schema"'
                " (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            row = connection.execute(
                f'SELECT version FROM "{prefix}_schema" WHERE component = ?', (component,)
            ).fetchone()
            current = 0 if row is None else row[0]
            if not (isinstance(current, int) and 0 <= current <= latest):
                raise BackendError(
                    f"{self.owner}: table {prefix}_schema records {component} schema version "
                    f"{current!r}, but this invresilience knows versions up to "
                    f"{latest}: upgrade invresilience, or use another table_prefix"
                )
            for version in range(current + 1, latest + 1):
                for statement in _MIGRATIONS[component][version - 1]:
                    connection.execute(statement.format(p=prefix))
                connection.execute(
                    f'INSERT OR REPLACE INTO "{prefix}_schema" (component, version) VALUES (?, ?)',
                    (component, version),
                )

    def close(self) -> None:
        """Close the connection (waiting for a running operation); again is a no-op."""
        with self.lock:
            connection = self.connection
            if connection is None:
                return
            if connection.in_transaction:
                # Only this thread can be inside a transaction while holding the lock.
                raise BackendError(
                    f"{self.owner}.close: called inside this store's transaction(); "
                    "close the store after the with block"
                )
            self.connection = None
            self._finalizer.detach()
            connection.close()


# -- the sync store -----------------------------------------------------------------------------


@final
class SqliteIdempotencyStore:
    """An :class:`~invresilience.typing.IdempotencyStore` in an SQLite database file.

    Each operation is one ``BEGIN IMMEDIATE`` transaction applying the rules of the
    Protocol; the module documentation describes the schema. The store holds one
    connection, shared by its threads under a lock; any number of stores, in any number
    of processes on one host, may open the same file.

    Use it as a context manager to close it at the end of a block.

    Args:
        path: The database file, created if missing (its directory must exist), or
            ``":memory:"`` for a private database that lives as long as this store.
        namespace: Whose records these are: stores with different namespaces share the
            file but never see each other's keys (1 to 100 letters, digits or ``_.:-``).
        table_prefix: Prepended to the table names (an SQL identifier of at most 41
            characters).
        durability: ``"normal"`` (``synchronous=NORMAL``: safe from process crashes) or
            ``"full"`` (``synchronous=FULL``: every commit synced to disk).
        busy_timeout: Seconds to wait for another connection's write to finish before
            raising :exc:`~invresilience.exceptions.BackendUnavailableError`.
        clock: The store's clock; records are timed on its ``wall()``.

    Raises:
        ConfigurationError: An argument is invalid.
        BackendUnavailableError: The database stayed locked while the store opened it.
        BackendError: The database could not be opened, or records a newer schema.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = "default",
        table_prefix: str = "invresilience",
        durability: _Durability = "normal",
        busy_timeout: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        name = type(self).__name__
        self.path = _check_path(f"{name}.path", path)
        self.namespace = check_namespace(f"{name}.namespace", namespace)
        self.table_prefix = _check_prefix(f"{name}.table_prefix", table_prefix)
        self.durability = _check_durability(f"{name}.durability", durability)
        self.busy_timeout = _check_busy_timeout(f"{name}.busy_timeout", busy_timeout)
        self.clock = clock
        table = f'"{self.table_prefix}_idempotency"'
        self._select = (
            "SELECT fingerprint, state, fence, token, lease_until, expires_at, result"
            f' FROM {table} WHERE namespace = ? AND "key" = ?'
        )
        self._insert = (
            f'INSERT OR IGNORE INTO {table} (namespace, "key", fingerprint, state, fence,'
            " token, lease_until, expires_at, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._upsert = (
            f'INSERT OR REPLACE INTO {table} (namespace, "key", fingerprint, state, fence,'
            " token, lease_until, expires_at, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        # The rule `holds` of _core.idempotency, as one statement: a complete is then a
        # single autocommit UPDATE, which is what a hand-written fenced completion costs.
        self._finish = (
            f"UPDATE {table} SET state = 'completed', result = ?, lease_until = 0.0,"
            " expires_at = ? WHERE namespace = ? AND \"key\" = ? AND state = 'pending'"
            " AND fence = ? AND token = ? AND expires_at > ?"
        )
        self._purge = (
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}"
            " WHERE namespace = ? AND expires_at <= ? LIMIT ?)"
        )
        self._db = _Database(
            repr(self),
            self.path,
            self.table_prefix,
            self.durability,
            self.busy_timeout,
            _IDEMPOTENCY,
        )

    def __repr__(self) -> str:
        return f"SqliteIdempotencyStore({self.path!r}, namespace={self.namespace!r})"

    def __enter__(self) -> SqliteIdempotencyStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called.

        .. versionadded:: 0.1.0
        """
        return self._db.closed

    # -- plumbing ---------------------------------------------------------------------------

    def _read(self, connection: sqlite3.Connection, key: str) -> Record | None:
        row = connection.execute(self._select, (self.namespace, key)).fetchone()
        if row is None:
            return None
        fingerprint, state, fence, token, lease_until, expires_at, result = row
        return rules.Record(
            fingerprint=fingerprint,
            state=state,
            fence=fence,
            token=token,
            lease_until=lease_until,
            expires_at=expires_at,
            result=result,
        )

    def _row(self, key: str, record: Record) -> tuple[object, ...]:
        return (
            self.namespace,
            key,
            record.fingerprint,
            record.state,
            record.fence,
            record.token,
            record.lease_until,
            record.expires_at,
            record.result,
        )

    def _write(self, connection: sqlite3.Connection, key: str, record: Record) -> None:
        connection.execute(self._upsert, self._row(key, record))

    def _claim(
        self,
        connection: sqlite3.Connection,
        key: str,
        fingerprint: str,
        now: float,
        lease: float,
        ttl: float,
    ) -> Claim:
        token = secrets.token_hex(16)
        # A key seen for the first time is the common case: the rule for "no record"
        # applied blind, and an INSERT that does nothing if a record exists, spare the
        # SELECT. Only when the row is there is it read and the full rule applied.
        new, answer = rules.claim(None, key, fingerprint, token, now=now, lease=lease, ttl=ttl)
        assert new is not None
        if connection.execute(self._insert, self._row(key, new)).rowcount == 1:
            return answer
        new, answer = rules.claim(
            self._read(connection, key), key, fingerprint, token, now=now, lease=lease, ttl=ttl
        )
        if new is not None:
            self._write(connection, key, new)
        return answer

    def _complete(
        self, connection: sqlite3.Connection, lease: Lease, result: bytes, now: float, ttl: float
    ) -> bool:
        cursor = connection.execute(
            self._finish,
            (result, now + ttl, self.namespace, lease.key, lease.fence, lease.token, now),
        )
        return cursor.rowcount == 1

    # -- the Protocol -----------------------------------------------------------------------

    def claim(self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL) -> Claim:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim`.

        Raises:
            ConfigurationError: An argument is invalid.
            BackendUnavailableError: The database stayed locked past *busy_timeout*.
            BackendError: SQLite failed otherwise, or the store is closed.
        """
        check_claim_args(key, fingerprint, lease, ttl)
        _check_text("key", key)
        _check_text("fingerprint", fingerprint)
        with self._db.immediate("claim") as connection:
            return self._claim(connection, key, fingerprint, self.clock.wall(), lease, ttl)

    def claim_many(
        self, items: Sequence[tuple[str, str]], *, lease: float, ttl: float = DEFAULT_TTL
    ) -> list[Claim]:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim_many`.

        The whole batch is one transaction, at one instant: a key that appears twice is
        acquired by the first item and in progress for the second.
        """
        for key, fingerprint in items:
            check_claim_args(key, fingerprint, lease, ttl)
            _check_text("key", key)
            _check_text("fingerprint", fingerprint)
        if not items:
            return []
        with self._db.immediate("claim_many") as connection:
            now = self.clock.wall()
            return [
                self._claim(connection, key, fingerprint, now, lease, ttl)
                for key, fingerprint in items
            ]

    def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete`.

        Raises:
            LeaseLostError: The lease no longer holds the key; nothing changed.
        """
        check_lease(lease)
        check_ttl(ttl)
        with self._db.autocommit("complete") as connection:
            stored = self._complete(connection, lease, bytes(result), self.clock.wall(), ttl)
        if not stored:
            raise lost(lease)

    def complete_many(
        self, items: Sequence[tuple[Lease, bytes]], *, ttl: float = DEFAULT_TTL
    ) -> list[bool]:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete_many`.

        The whole batch is one transaction.
        """
        check_ttl(ttl)
        for lease, _ in items:
            check_lease(lease)
        if not items:
            return []
        with self._db.immediate("complete_many") as connection:
            now = self.clock.wall()
            return [
                self._complete(connection, lease, bytes(result), now, ttl)
                for lease, result in items
            ]

    def release(self, lease: Lease) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.release`.

        Raises:
            LeaseLostError: The lease no longer holds the key; nothing changed.
        """
        check_lease(lease)
        with self._db.immediate("release") as connection:
            new = rules.release(self._read(connection, lease.key), lease, now=self.clock.wall())
            if new is not None:
                self._write(connection, lease.key, new)
        if new is None:
            raise lost(lease)

    def extend(self, lease: Lease, seconds: float) -> Lease:
        """See :meth:`~invresilience.typing.IdempotencyStore.extend`.

        Raises:
            LeaseLostError: The lease no longer holds the key; nothing changed.
        """
        check_lease(lease)
        check_ttl(seconds, field="seconds")
        with self._db.immediate("extend") as connection:
            new = rules.extend(
                self._read(connection, lease.key), lease, seconds, now=self.clock.wall()
            )
            if new is not None:
                self._write(connection, lease.key, new)
        if new is None:
            raise lost(lease)
        return rules.Lease(lease.key, lease.fence, lease.token, lease.fingerprint, seconds)

    def purge_expired(self, limit: int = 1000) -> int:
        """See :meth:`~invresilience.typing.IdempotencyStore.purge_expired`.

        Only this store's namespace is purged.
        """
        check_limit(limit)
        with self._db.immediate("purge_expired") as connection:
            cursor = connection.execute(self._purge, (self.namespace, self.clock.wall(), limit))
            return cursor.rowcount

    def close(self) -> None:
        """Close the connection (waiting for a running operation); calling it again is a no-op.

        .. versionadded:: 0.1.0
        """
        self._db.close()

    # -- exactly-once local effects ---------------------------------------------------------

    def transaction(self, lease: Lease) -> contextlib.AbstractContextManager[SqliteTransaction]:
        """A transaction in which the caller's own writes and the completion commit together.

        ::

            with store.transaction(lease) as tx:
                tx.connection.execute("UPDATE stock SET qty = qty - ? WHERE sku = ?", (2, sku))
                tx.complete(b"reserved")

        Entering opens a ``BEGIN IMMEDIATE`` transaction on the store's connection and
        checks that *lease* still holds its key. Inside, write through
        :attr:`SqliteTransaction.connection` (your tables may live in the same file) and
        call :meth:`SqliteTransaction.complete` once. On a normal exit the completion is
        written and everything commits at once: either the effect happened and the key
        replays its result, or neither. If the block raises, everything rolls back, the
        lease still holds the key (release or retry it), and the exception propagates.

        The store's lock is held for the whole block: keep it short, and do not call
        this store's other methods inside it.

        Args:
            lease: The lease of a claim on this store.

        Raises:
            LeaseLostError: On entering or at the final write, the lease no longer held
                its key; everything was rolled back.
            IdempotencyError: The block ended without calling ``complete()``, or ended
                the transaction itself (``COMMIT`` / ``ROLLBACK`` on the connection).
            BackendUnavailableError: The database stayed locked past *busy_timeout*.
            BackendError: SQLite failed otherwise, or the store is closed.

        .. versionadded:: 0.1.0
        """
        check_lease(lease)
        return self._transaction(lease)

    @contextlib.contextmanager
    def _transaction(self, lease: Lease) -> Iterator[SqliteTransaction]:
        where = f"{self!r}.transaction"
        with self._db.lock:
            connection = self._db.open("transaction")
            try:
                connection.execute("BEGIN IMMEDIATE")
                holding = rules.holds(self._read(connection, lease.key), lease, self.clock.wall())
            except sqlite3.Error as exc:
                _rollback(connection)
                raise _error(where, exc) from exc
            if not holding:
                _rollback(connection)
                raise lost(lease)
            tx = SqliteTransaction(connection, lease)
            try:
                yield tx
            except BaseException:
                tx._active = False
                _rollback(connection)
                raise
            tx._active = False
            if not connection.in_transaction:
                raise IdempotencyError(
                    lease.key,
                    f"the transaction on {lease.key!r} was ended inside the with block "
                    "(COMMIT or ROLLBACK on tx.connection): the completion was not recorded",
                )
            if tx._completion is None:
                _rollback(connection)
                raise IdempotencyError(
                    lease.key,
                    f"the transaction on {lease.key!r} ended without complete(): "
                    "rolled back; call tx.complete(result) inside the block",
                )
            result, ttl = tx._completion
            try:
                if not self._complete(connection, lease, result, self.clock.wall(), ttl):
                    # Only expiry can get here: the write lock kept every other claim out.
                    _rollback(connection)
                    raise lost(lease)
                connection.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(connection)
                raise _error(where, exc) from exc


@final
class SqliteTransaction:
    """The open transaction of :meth:`SqliteIdempotencyStore.transaction`.

    Made by the store, not directly. Valid only inside its ``with`` block.

    Attributes:
        lease: The lease being completed.

    .. versionadded:: 0.1.0
    """

    def __init__(self, connection: sqlite3.Connection, lease: Lease) -> None:
        self._connection = connection
        self.lease = lease
        self._completion: tuple[bytes, float] | None = None
        self._active = True

    def __repr__(self) -> str:
        state = "active" if self._active else "ended"
        return f"SqliteTransaction(key={self.lease.key!r}, fence={self.lease.fence}, {state})"

    def _check_active(self, what: str) -> None:
        if not self._active:
            raise IdempotencyError(
                self.lease.key, f"{what} after the transaction on {self.lease.key!r} ended"
            )

    @property
    def connection(self) -> sqlite3.Connection:
        """The store's connection, inside the open transaction: do your writes on it.

        Do not commit or roll back on it: the end of the ``with`` block does.

        Raises:
            IdempotencyError: The transaction has ended.

        .. versionadded:: 0.1.0
        """
        self._check_active("tx.connection")
        return self._connection

    def complete(self, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """Record the work's *result*, written and committed when the block ends normally.

        Args:
            result: The bytes to replay for the key.
            ttl: Seconds to keep the completed record.

        Raises:
            ConfigurationError: *ttl* is invalid.
            IdempotencyError: ``complete()`` was already called, or the transaction ended.

        .. versionadded:: 0.1.0
        """
        check_ttl(ttl)
        self._check_active("complete()")
        if self._completion is not None:
            raise IdempotencyError(
                self.lease.key,
                f"complete() was already called in the transaction on {self.lease.key!r}",
            )
        self._completion = (bytes(result), ttl)


# -- the async store ----------------------------------------------------------------------------


@final
class AsyncSqliteIdempotencyStore:
    """The async twin of :class:`SqliteIdempotencyStore`: its calls run in worker threads.

    Each method runs the sync store's method through :func:`asyncio.to_thread`, so the
    event loop never waits on the disk or on another process's lock.

    It has no ``transaction()``: the caller's writes must run on the store's connection
    while the transaction is open, which would mean running the caller's code in the
    worker thread too. Use the sync store's
    :meth:`~SqliteIdempotencyStore.transaction` inside ``asyncio.to_thread`` instead.

    Args:
        path: As for :class:`SqliteIdempotencyStore`; opens a new store (the constructor
            opens the database, a short blocking call).
        store: An open sync store to run instead of *path*; the other arguments are then
            not used.
        namespace: As for :class:`SqliteIdempotencyStore`.
        table_prefix: As for :class:`SqliteIdempotencyStore`.
        durability: As for :class:`SqliteIdempotencyStore`.
        busy_timeout: As for :class:`SqliteIdempotencyStore`.
        clock: As for :class:`SqliteIdempotencyStore`.

    Raises:
        ConfigurationError: Neither or both of *path* and *store* were given, or an
            argument is invalid.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        store: SqliteIdempotencyStore | None = None,
        namespace: str = "default",
        table_prefix: str = "invresilience",
        durability: _Durability = "normal",
        busy_timeout: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if (path is None) == (store is None):
            raise ConfigurationError(
                "AsyncSqliteIdempotencyStore.path", path, "and store: give exactly one of them"
            )
        if store is None:
            assert path is not None
            store = SqliteIdempotencyStore(
                path,
                namespace=namespace,
                table_prefix=table_prefix,
                durability=durability,
                busy_timeout=busy_timeout,
                clock=clock,
            )
        #: The sync store doing the work.
        self.store = store

    def __repr__(self) -> str:
        return f"AsyncSqliteIdempotencyStore({self.store!r})"

    async def __aenter__(self) -> AsyncSqliteIdempotencyStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def claim(
        self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL
    ) -> Claim:
        """See :meth:`SqliteIdempotencyStore.claim`."""
        return await asyncio.to_thread(self.store.claim, key, fingerprint, lease=lease, ttl=ttl)

    async def claim_many(
        self, items: Sequence[tuple[str, str]], *, lease: float, ttl: float = DEFAULT_TTL
    ) -> list[Claim]:
        """See :meth:`SqliteIdempotencyStore.claim_many`."""
        return await asyncio.to_thread(self.store.claim_many, items, lease=lease, ttl=ttl)

    async def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """See :meth:`SqliteIdempotencyStore.complete`."""
        await asyncio.to_thread(self.store.complete, lease, result, ttl=ttl)

    async def complete_many(
        self, items: Sequence[tuple[Lease, bytes]], *, ttl: float = DEFAULT_TTL
    ) -> list[bool]:
        """See :meth:`SqliteIdempotencyStore.complete_many`."""
        return await asyncio.to_thread(self.store.complete_many, items, ttl=ttl)

    async def release(self, lease: Lease) -> None:
        """See :meth:`SqliteIdempotencyStore.release`."""
        await asyncio.to_thread(self.store.release, lease)

    async def extend(self, lease: Lease, seconds: float) -> Lease:
        """See :meth:`SqliteIdempotencyStore.extend`."""
        return await asyncio.to_thread(self.store.extend, lease, seconds)

    async def purge_expired(self, limit: int = 1000) -> int:
        """See :meth:`SqliteIdempotencyStore.purge_expired`."""
        return await asyncio.to_thread(self.store.purge_expired, limit)

    async def close(self) -> None:
        """Close the sync store (whether this object opened it or was given it)."""
        await asyncio.to_thread(self.store.close)


# -- dead letters -------------------------------------------------------------------------------


def _text_in(value: str | None) -> str | bytes | None:
    """*value* as SQLite keeps it: text, or the ``surrogatepass`` UTF-8 of text that has
    lone surrogates (an exception message about an undecodable file name), as a BLOB.

    The choice depends on the value alone, so equal texts are stored (and compared in a
    ``WHERE``) alike.
    """
    if value is None:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")
    return value


def _text_out(value: object) -> str | None:
    """The text :func:`_text_in` stored."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogatepass")
    return value  # type: ignore[return-value]  # str or None: DeadLetter checks the rest


def _check_stored_letter(letter: DeadLetter, queue: str) -> None:
    """:func:`check_letter`, and what a row needs besides: text fields and a 64-bit count."""
    check_letter(letter, queue)
    for field in ("key", "fingerprint", "error_type", "error_message", "traceback"):
        value = getattr(letter, field)
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"letter.{field}", value, "must be a str or None")
    if letter.attempts > _INT64_MAX:
        raise ConfigurationError("letter.attempts", letter.attempts, f"must be <= {_INT64_MAX}")


def _bound(field: str, value: object) -> float:
    """A time bound of a :class:`LetterFilter` as a float (huge ints become infinities)."""
    if not isinstance(value, (int, float)):
        raise ConfigurationError(field, value, "must be a number of seconds since the epoch")
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


# The columns of a letter, in the order _letter reads them and _values writes them.
_LETTER_COLUMNS: Final = (
    'id, sequence, reason, "key", fingerprint, error_type, error_message, traceback,'
    " attempts, first_failed_at, last_failed_at, dead_lettered_at, headers, payload"
)
# The columns replace() overwrites and add() writes after queue, id and sequence.
_LETTER_FIELDS: Final = (
    "reason",
    '"key"',
    "fingerprint",
    "error_type",
    "error_message",
    "traceback",
    "attempts",
    "first_failed_at",
    "last_failed_at",
    "dead_lettered_at",
    "headers",
    "payload",
)


@final
class SqliteDeadLetterStore:
    """A :class:`~invresilience.typing.DeadLetterStore` in an SQLite database file.

    The letters of every queue share the table ``<prefix>_dead_letters``, each store
    seeing only its own queue's. :meth:`add` is one ``BEGIN IMMEDIATE`` transaction
    (the id check, the cap, the eviction and the insert); every other operation is one
    statement. Sequences come from a per-queue counter in ``<prefix>_dead_letter_queues``
    that deleting letters never winds back, so they strictly increase and are never
    reused; the cap is checked against that table's count of the queue's letters, kept
    by triggers, so a full queue costs no more to add to than an empty one. The store holds one connection, shared by its threads under a lock; any
    number of stores, in any number of processes on one host, may open the same file.

    Use it as a context manager to close it at the end of a block.

    Args:
        path: The database file, created if missing (its directory must exist), or
            ``":memory:"`` for a private database that lives as long as this store.
        queue: The queue's name (1 to 100 letters, digits or ``_.:-``).
        table_prefix: Prepended to the table names (an SQL identifier of at most 41
            characters).
        durability: ``"normal"`` (``synchronous=NORMAL``: safe from process crashes) or
            ``"full"`` (``synchronous=FULL``: every commit synced to disk).
        busy_timeout: Seconds to wait for another connection's write to finish before
            raising :exc:`~invresilience.exceptions.BackendUnavailableError`.

    Raises:
        ConfigurationError: An argument is invalid.
        BackendUnavailableError: The database stayed locked while the store opened it.
        BackendError: The database could not be opened, or records a newer schema.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        queue: str = "default",
        *,
        table_prefix: str = "invresilience",
        durability: _Durability = "normal",
        busy_timeout: float = 30.0,
    ) -> None:
        name = type(self).__name__
        self.path = _check_path(f"{name}.path", path)
        self.queue = check_namespace(f"{name}.queue", queue)
        self.table_prefix = _check_prefix(f"{name}.table_prefix", table_prefix)
        self.durability = _check_durability(f"{name}.durability", durability)
        self.busy_timeout = _check_busy_timeout(f"{name}.busy_timeout", busy_timeout)
        table = f'"{self.table_prefix}_dead_letters"'
        queues = f'"{self.table_prefix}_dead_letter_queues"'
        self._table = table
        self._get = f"SELECT {_LETTER_COLUMNS} FROM {table} WHERE queue = ? AND id = ?"
        self._oldest = f"SELECT id, sequence FROM {table} WHERE queue = ? ORDER BY sequence LIMIT ?"
        self._evict = f"DELETE FROM {table} WHERE queue = ? AND sequence <= ?"
        self._counters = f"SELECT last, held FROM {queues} WHERE queue = ?"
        self._first = f"INSERT INTO {queues} (queue, last, held) VALUES (?, ?, 0)"
        self._next = f"UPDATE {queues} SET last = ? WHERE queue = ?"
        self._insert = (
            f"INSERT INTO {table} (queue, id, sequence, {', '.join(_LETTER_FIELDS)})"
            f" VALUES (?, ?, ?, {', '.join('?' * len(_LETTER_FIELDS))})"
        )
        self._replace = (
            f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in _LETTER_FIELDS)}"
            " WHERE queue = ? AND id = ?"
        )
        self._stats = (
            "SELECT reason, COUNT(*), MIN(dead_lettered_at), MAX(dead_lettered_at)"
            f" FROM {table} WHERE queue = ? GROUP BY reason"
        )
        self._db = _Database(
            repr(self),
            self.path,
            self.table_prefix,
            self.durability,
            self.busy_timeout,
            _DEAD_LETTERS,
        )

    def __repr__(self) -> str:
        return f"SqliteDeadLetterStore({self.path!r}, queue={self.queue!r})"

    def __enter__(self) -> SqliteDeadLetterStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called.

        .. versionadded:: 0.1.0
        """
        return self._db.closed

    # -- rows -------------------------------------------------------------------------------

    def _letter(self, row: Sequence[object]) -> DeadLetter:
        (
            letter_id,
            sequence,
            reason,
            key,
            fingerprint,
            error_type,
            error_message,
            traceback,
            attempts,
            first_failed_at,
            last_failed_at,
            dead_lettered_at,
            headers,
            payload,
        ) = row
        try:
            return DeadLetter(
                id=letter_id,  # type: ignore[arg-type]
                queue=self.queue,
                payload=payload,  # type: ignore[arg-type]
                reason=reason,  # type: ignore[arg-type]
                key=_text_out(key),
                fingerprint=_text_out(fingerprint),
                error_type=_text_out(error_type),
                error_message=_text_out(error_message),
                traceback=_text_out(traceback),
                attempts=attempts,  # type: ignore[arg-type]
                first_failed_at=first_failed_at,  # type: ignore[arg-type]
                last_failed_at=last_failed_at,  # type: ignore[arg-type]
                dead_lettered_at=dead_lettered_at,  # type: ignore[arg-type]
                headers=json.loads(headers),  # type: ignore[arg-type]
                sequence=sequence,  # type: ignore[arg-type]
            )
        except (TypeError, ValueError) as exc:
            raise BackendError(
                f"{self!r}: the row of letter {letter_id!r} in {self._table} is not a letter "
                f"this invresilience can read: {exc}"
            ) from exc

    @staticmethod
    def _values(letter: DeadLetter) -> tuple[object, ...]:
        """The values of :data:`_LETTER_FIELDS` for *letter*."""
        return (
            letter.reason,
            _text_in(letter.key),
            _text_in(letter.fingerprint),
            _text_in(letter.error_type),
            _text_in(letter.error_message),
            _text_in(letter.traceback),
            letter.attempts,
            float(letter.first_failed_at),
            float(letter.last_failed_at),
            float(letter.dead_lettered_at),
            # ensure_ascii (the default) escapes lone surrogates, which loads() restores.
            json.dumps(dict(letter.headers), separators=(",", ":")),
            letter.payload,
        )

    def _where(self, where: LetterFilter) -> tuple[str, list[object]]:
        """The ``WHERE`` of *where* in this queue, and its parameters."""
        clauses = ["queue = ?"]
        parameters: list[object] = [self.queue]
        if where.reasons is not None:
            # Stored reasons are always in REASONS: other values select nothing.
            reasons = [reason for reason in REASONS if reason in where.reasons]
            clauses.append(f"reason IN ({', '.join('?' * len(reasons))})" if reasons else "0")
            parameters.extend(reasons)
        key: object = where.key
        if key is not None:
            # A stored key is a str: any other value selects nothing (as in matches()).
            clauses.append('"key" = ?' if isinstance(key, str) else "0")
            if isinstance(key, str):
                parameters.append(_text_in(key))
        if where.since is not None:
            clauses.append("dead_lettered_at >= ?")
            parameters.append(_bound("since", where.since))
        if where.before is not None:
            clauses.append("dead_lettered_at < ?")
            parameters.append(_bound("before", where.before))
        return " AND ".join(clauses), parameters

    # -- the Protocol -----------------------------------------------------------------------

    def add(
        self, letter: DeadLetter, *, max_letters: int | None = None, evict_oldest: bool = False
    ) -> Added:
        """See :meth:`~invresilience.typing.DeadLetterStore.add`.

        One ``BEGIN IMMEDIATE`` transaction: two stores adding at once take turns, so
        the id check and the cap hold across threads and processes.

        Raises:
            ConfigurationError: *letter* is not a letter of this queue, or *max_letters*
                is invalid.
            DeadLetterQueueFullError: The queue holds *max_letters* letters and
                *evict_oldest* is false; nothing changed.
            BackendUnavailableError: The database stayed locked past *busy_timeout*.
            BackendError: SQLite failed otherwise, or the store is closed.
        """
        _check_stored_letter(letter, self.queue)
        check_max_letters(max_letters)
        values = self._values(letter)
        with self._db.immediate("add") as connection:
            row = connection.execute(self._get, (self.queue, letter.id)).fetchone()
            if row is not None:
                return Added(letter=self._letter(row), created=False)
            counters = connection.execute(self._counters, (self.queue,)).fetchone()
            last, held = (0, 0) if counters is None else counters
            evicted: tuple[str, ...] = ()
            if max_letters is not None and held >= max_letters:
                if not evict_oldest:
                    raise DeadLetterQueueFullError(self.queue, max_letters)
                oldest = connection.execute(
                    self._oldest, (self.queue, held - max_letters + 1)
                ).fetchall()
                if oldest:
                    connection.execute(self._evict, (self.queue, oldest[-1][1]))
                evicted = tuple(old_id for old_id, _ in oldest)
            sequence = last + 1
            if counters is None:
                connection.execute(self._first, (self.queue, sequence))
            else:
                connection.execute(self._next, (sequence, self.queue))
            # The insert trigger counts the letter in `held`.
            connection.execute(self._insert, (self.queue, letter.id, sequence, *values))
        return Added(letter=attrs.evolve(letter, sequence=sequence), created=True, evicted=evicted)

    def get(self, letter_id: str) -> DeadLetter | None:
        """See :meth:`~invresilience.typing.DeadLetterStore.get`.

        Raises:
            BackendUnavailableError: The database stayed locked past *busy_timeout*.
            BackendError: SQLite failed otherwise, or the store is closed.
        """
        if check_letter_id(letter_id) is not None:
            return None  # never stored under such an id
        with self._db.autocommit("get") as connection:
            row = connection.execute(self._get, (self.queue, letter_id)).fetchone()
        return None if row is None else self._letter(row)

    def list(self, where: LetterFilter, *, after: int = 0, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`~invresilience.typing.DeadLetterStore.list`.

        Raises:
            ConfigurationError: *after* or *limit* is invalid.
            BackendUnavailableError: The database stayed locked past *busy_timeout*.
            BackendError: SQLite failed otherwise, or the store is closed.
        """
        check_limit(limit)
        given: object = after
        if isinstance(given, int):
            # Sequences are 64-bit: a bound beyond that range is the range's end.
            given = max(min(given, _INT64_MAX), -_INT64_MAX - 1)
        elif not isinstance(given, float):
            raise ConfigurationError("after", after, "must be an int: a letter's sequence")
        condition, parameters = self._where(where)
        statement = (
            f"SELECT {_LETTER_COLUMNS} FROM {self._table}"
            f" WHERE {condition} AND sequence > ? ORDER BY sequence LIMIT ?"
        )
        with self._db.autocommit("list") as connection:
            rows = connection.execute(
                statement, (*parameters, given, min(limit, _INT64_MAX))
            ).fetchall()
        return [self._letter(row) for row in rows]

    def count(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.count`.

        Raises:
            BackendUnavailableError: The database stayed locked past *busy_timeout*.
            BackendError: SQLite failed otherwise, or the store is closed.
        """
        condition, parameters = self._where(where)
        statement = f"SELECT COUNT(*) FROM {self._table} WHERE {condition}"
        with self._db.autocommit("count") as connection:
            (total,) = connection.execute(statement, parameters).fetchone()
        return int(total)

    def stats(self) -> QueueStats:
        """See :meth:`~invresilience.typing.DeadLetterStore.stats`.

        One ``GROUP BY reason`` query.

        Raises:
            BackendUnavailableError: The database stayed locked past *busy_timeout*.
            BackendError: SQLite failed otherwise, or the store is closed.
        """
        with self._db.autocommit("stats") as connection:
            rows = connection.execute(self._stats, (self.queue,)).fetchall()
        if not rows:
            return QueueStats(total=0)
        counts = {reason: count for reason, count, _, _ in rows}
        by_reason: dict[str, int] = {r: counts[r] for r in REASONS if r in counts}
        return QueueStats(
            total=sum(counts.values()),
            by_reason=by_reason,
            oldest=min(oldest for _, _, oldest, _ in rows),
            newest=max(newest for _, _, _, newest in rows),
        )

    def replace(self, letter: DeadLetter) -> bool:
        """See :meth:`~invresilience.typing.DeadLetterStore.replace`.

        One ``UPDATE`` of every column but the queue, the id and the sequence.

        Raises:
            ConfigurationError: *letter* is not a letter of this queue.
            BackendUnavailableError: The database stayed locked past *busy_timeout*.
            BackendError: SQLite failed otherwise, or the store is closed.
        """
        _check_stored_letter(letter, self.queue)
        values = self._values(letter)
        with self._db.autocommit("replace") as connection:
            cursor = connection.execute(self._replace, (*values, self.queue, letter.id))
        return cursor.rowcount == 1

    def delete(self, letter_ids: Sequence[str]) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.delete`.

        One transaction, however many ids.

        Raises:
            BackendUnavailableError: The database stayed locked past *busy_timeout*.
            BackendError: SQLite failed otherwise, or the store is closed.
        """
        # Ids no letter can have are left out: deleting an absent id is not an error.
        ids = [*dict.fromkeys(i for i in letter_ids if check_letter_id(i) is None)]
        if not ids:
            return 0
        deleted = 0
        with self._db.immediate("delete") as connection:
            for start in range(0, len(ids), _DELETE_BATCH):
                batch = ids[start : start + _DELETE_BATCH]
                cursor = connection.execute(
                    f"DELETE FROM {self._table} WHERE queue = ?"
                    f" AND id IN ({', '.join('?' * len(batch))})",
                    (self.queue, *batch),
                )
                deleted += cursor.rowcount
        return deleted

    def purge(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.purge`.

        One ``DELETE`` statement.

        Raises:
            BackendUnavailableError: The database stayed locked past *busy_timeout*.
            BackendError: SQLite failed otherwise, or the store is closed.
        """
        condition, parameters = self._where(where)
        with self._db.autocommit("purge") as connection:
            cursor = connection.execute(f"DELETE FROM {self._table} WHERE {condition}", parameters)
        return cursor.rowcount

    def close(self) -> None:
        """Close the connection (waiting for a running operation); calling it again is a no-op.

        .. versionadded:: 0.1.0
        """
        self._db.close()


@final
class AsyncSqliteDeadLetterStore:
    """The async twin of :class:`SqliteDeadLetterStore`: its calls run in worker threads.

    Each method runs the sync store's method through :func:`asyncio.to_thread`, so the
    event loop never waits on the disk or on another process's lock.

    Args:
        path: As for :class:`SqliteDeadLetterStore`; opens a new store (the constructor
            opens the database, a short blocking call).
        queue: As for :class:`SqliteDeadLetterStore`.
        store: An open sync store to run instead of *path*; the other arguments are then
            not used.
        table_prefix: As for :class:`SqliteDeadLetterStore`.
        durability: As for :class:`SqliteDeadLetterStore`.
        busy_timeout: As for :class:`SqliteDeadLetterStore`.

    Raises:
        ConfigurationError: Neither or both of *path* and *store* were given, or an
            argument is invalid.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        queue: str = "default",
        *,
        store: SqliteDeadLetterStore | None = None,
        table_prefix: str = "invresilience",
        durability: _Durability = "normal",
        busy_timeout: float = 30.0,
    ) -> None:
        if (path is None) == (store is None):
            raise ConfigurationError(
                "AsyncSqliteDeadLetterStore.path", path, "and store: give exactly one of them"
            )
        if store is None:
            assert path is not None
            store = SqliteDeadLetterStore(
                path,
                queue,
                table_prefix=table_prefix,
                durability=durability,
                busy_timeout=busy_timeout,
            )
        #: The sync store doing the work.
        self.store = store
        #: The queue's name.
        self.queue = store.queue

    def __repr__(self) -> str:
        return f"AsyncSqliteDeadLetterStore({self.store!r})"

    async def __aenter__(self) -> AsyncSqliteDeadLetterStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def add(
        self, letter: DeadLetter, *, max_letters: int | None = None, evict_oldest: bool = False
    ) -> Added:
        """See :meth:`SqliteDeadLetterStore.add`."""
        return await asyncio.to_thread(
            self.store.add, letter, max_letters=max_letters, evict_oldest=evict_oldest
        )

    async def get(self, letter_id: str) -> DeadLetter | None:
        """See :meth:`SqliteDeadLetterStore.get`."""
        return await asyncio.to_thread(self.store.get, letter_id)

    async def list(
        self, where: LetterFilter, *, after: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """See :meth:`SqliteDeadLetterStore.list`."""
        return await asyncio.to_thread(self.store.list, where, after=after, limit=limit)

    async def count(self, where: LetterFilter) -> int:
        """See :meth:`SqliteDeadLetterStore.count`."""
        return await asyncio.to_thread(self.store.count, where)

    async def stats(self) -> QueueStats:
        """See :meth:`SqliteDeadLetterStore.stats`."""
        return await asyncio.to_thread(self.store.stats)

    async def replace(self, letter: DeadLetter) -> bool:
        """See :meth:`SqliteDeadLetterStore.replace`."""
        return await asyncio.to_thread(self.store.replace, letter)

    async def delete(self, letter_ids: Sequence[str]) -> int:
        """See :meth:`SqliteDeadLetterStore.delete`."""
        return await asyncio.to_thread(self.store.delete, letter_ids)

    async def purge(self, where: LetterFilter) -> int:
        """See :meth:`SqliteDeadLetterStore.purge`."""
        return await asyncio.to_thread(self.store.purge, where)

    async def close(self) -> None:
        """Close the sync store (whether this object opened it or was given it)."""
        await asyncio.to_thread(self.store.close)


# -- membership ---------------------------------------------------------------------------------


@final
class SqliteMembership:
    """A :class:`~invresilience.typing.Membership` in an SQLite database file.

    The group is a row of ``<prefix>_membership`` holding its
    :class:`~invresilience._core.membership.GroupState` as JSON; each operation is one
    ``BEGIN IMMEDIATE`` transaction that reads the row, applies the operation at the
    clock's ``wall()`` and writes the row back. Any number of stores, in any number of
    processes on one host, may share a group: their operations take turns on the
    database's write lock. The store holds one connection, shared by its threads under a
    lock.

    Use it as a context manager to close it at the end of a block.

    Args:
        path: The database file, created if missing (its directory must exist), or
            ``":memory:"`` for a private database that lives as long as this store.
        group: The group's name (1 to 100 letters, digits or ``_.:-``).
        table_prefix: Prepended to the table names (an SQL identifier of at most 41
            characters).
        durability: ``"normal"`` (``synchronous=NORMAL``: safe from process crashes) or
            ``"full"`` (``synchronous=FULL``: every commit synced to disk).
        busy_timeout: Seconds to wait for another connection's write to finish before
            raising :exc:`~invresilience.exceptions.BackendUnavailableError`.
        clock: Times the leases, on its ``wall()`` (seconds since the epoch, which every
            process on the host shares).

    Raises:
        ConfigurationError: An argument is invalid.
        BackendUnavailableError: The database stayed locked while the store opened it.
        BackendError: The database could not be opened, or records a newer schema.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        group: str = "default",
        *,
        table_prefix: str = "invresilience",
        durability: _Durability = "normal",
        busy_timeout: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        name = type(self).__name__
        self.path = _check_path(f"{name}.path", path)
        self._group = check_namespace("group", group)
        self.table_prefix = _check_prefix(f"{name}.table_prefix", table_prefix)
        self.durability = _check_durability(f"{name}.durability", durability)
        self.busy_timeout = _check_busy_timeout(f"{name}.busy_timeout", busy_timeout)
        self.clock = clock
        table = f'"{self.table_prefix}_membership"'
        self._select = f"SELECT state FROM {table} WHERE grp = ?"
        self._write = f"INSERT OR REPLACE INTO {table} (grp, state) VALUES (?, ?)"
        self._db = _Database(
            repr(self),
            self.path,
            self.table_prefix,
            self.durability,
            self.busy_timeout,
            _MEMBERSHIP,
        )

    def __repr__(self) -> str:
        return f"SqliteMembership({self.path!r}, group={self._group!r})"

    def __enter__(self) -> SqliteMembership:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def group(self) -> str:
        """The group's name."""
        return self._group

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called.

        .. versionadded:: 0.1.0
        """
        return self._db.closed

    def _apply(self, operation: str, op: MembershipOp) -> MembershipView:
        check_membership_op(op)
        with self._db.immediate(operation) as connection:
            row = connection.execute(self._select, (self._group,)).fetchone()
            stored = None if row is None else row[0]
            result, write = membership_step(
                f"{self!r}.{operation}", self._group, op, stored, self.clock.wall()
            )
            if write is not None:
                connection.execute(self._write, (self._group, write))
        return membership_result(self._group, op, result)

    def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.join`.

        Raises:
            MembershipConflictError: *member* is live under another token.
            ConfigurationError: An argument is invalid.
            BackendUnavailableError: The database stayed locked past *busy_timeout*.
            BackendError: SQLite failed otherwise, the stored document is malformed, or
                the store is closed.
        """
        return self._apply(
            "join",
            MembershipOp(kind="join", member=member, token=token, weight=weight, lease=lease),
        )

    def heartbeat(self, member: str, token: str, *, lease: float, acked: int) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.heartbeat`."""
        return self._apply(
            "heartbeat",
            MembershipOp(kind="heartbeat", member=member, token=token, lease=lease, acked=acked),
        )

    def leave(self, member: str, token: str) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.leave`."""
        return self._apply("leave", MembershipOp(kind="leave", member=member, token=token))

    def view(self) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.view`."""
        return self._apply("view", MembershipOp(kind="view"))

    def close(self) -> None:
        """Close the connection (waiting for a running operation); calling it again is a no-op.

        .. versionadded:: 0.1.0
        """
        self._db.close()


@final
class AsyncSqliteMembership:
    """The async twin of :class:`SqliteMembership`: its calls run in worker threads.

    Each method runs the sync store's method through :func:`asyncio.to_thread`, so the
    event loop never waits on the disk or on another process's lock.

    Args:
        path: As for :class:`SqliteMembership`; opens a new store (the constructor opens
            the database, a short blocking call).
        group: As for :class:`SqliteMembership`.
        store: An open sync store to run instead of *path*; the other arguments are then
            not used.
        table_prefix: As for :class:`SqliteMembership`.
        durability: As for :class:`SqliteMembership`.
        busy_timeout: As for :class:`SqliteMembership`.
        clock: As for :class:`SqliteMembership`.

    Raises:
        ConfigurationError: Neither or both of *path* and *store* were given, or an
            argument is invalid.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        group: str = "default",
        *,
        store: SqliteMembership | None = None,
        table_prefix: str = "invresilience",
        durability: _Durability = "normal",
        busy_timeout: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if (path is None) == (store is None):
            raise ConfigurationError(
                "AsyncSqliteMembership.path", path, "and store: give exactly one of them"
            )
        if store is None:
            assert path is not None
            store = SqliteMembership(
                path,
                group,
                table_prefix=table_prefix,
                durability=durability,
                busy_timeout=busy_timeout,
                clock=clock,
            )
        #: The sync store doing the work.
        self.store = store

    def __repr__(self) -> str:
        return f"AsyncSqliteMembership({self.store!r})"

    async def __aenter__(self) -> AsyncSqliteMembership:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def group(self) -> str:
        """The group's name."""
        return self.store.group

    async def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """See :meth:`SqliteMembership.join`."""
        return await asyncio.to_thread(self.store.join, member, token, weight=weight, lease=lease)

    async def heartbeat(
        self, member: str, token: str, *, lease: float, acked: int
    ) -> MembershipView:
        """See :meth:`SqliteMembership.heartbeat`."""
        return await asyncio.to_thread(
            self.store.heartbeat, member, token, lease=lease, acked=acked
        )

    async def leave(self, member: str, token: str) -> MembershipView:
        """See :meth:`SqliteMembership.leave`."""
        return await asyncio.to_thread(self.store.leave, member, token)

    async def view(self) -> MembershipView:
        """See :meth:`SqliteMembership.view`."""
        return await asyncio.to_thread(self.store.view)

    async def close(self) -> None:
        """Close the sync store (whether this object opened it or was given it)."""
        await asyncio.to_thread(self.store.close)


# -- the backend --------------------------------------------------------------------------------


@final
class SqliteBackend:
    """One SQLite database file and the stores made on it.

    Each :meth:`idempotency_store`, :meth:`dead_letter_store` or :meth:`membership` call
    opens a new store (a new connection) on the file, except on ``":memory:"``, where a
    connection *is* the database: there each namespace's (queue's, group's) store is made
    once and shared, by the sync and async views alike (closing it, or a dead-letter queue
    over it, drops its records: the next call starts an empty one). :meth:`close` closes
    every store this backend made.

    Args:
        path: The database file, or ``":memory:"``.
        durability: ``"normal"`` or ``"full"``; see the module documentation.
        clock: The stores' clock.

    Attributes:
        url: The URL that :meth:`from_url` reads back to this backend.

    Raises:
        ConfigurationError: An argument is invalid.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: _Durability = "normal",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.path = _check_path("SqliteBackend.path", path)
        self.durability = _check_durability("SqliteBackend.durability", durability)
        self.clock = clock
        query = "?durability=full" if self.durability == "full" else ""
        self.url = f"{_URL_PREFIX}{self.path}{query}"
        self._lock = threading.Lock()
        self._closed = False
        self._stores: weakref.WeakSet[
            SqliteIdempotencyStore | SqliteDeadLetterStore | SqliteMembership
        ] = weakref.WeakSet()
        self._shared: dict[str, SqliteIdempotencyStore] = {}
        self._shared_letters: dict[str, SqliteDeadLetterStore] = {}
        self._shared_groups: dict[str, SqliteMembership] = {}

    @classmethod
    def from_url(cls, url: str, *, clock: Clock = SYSTEM_CLOCK) -> SqliteBackend:
        """The backend a ``sqlite:///`` URL names.

        ``sqlite:///relative/path.db`` (relative to the working directory),
        ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``, optionally with the
        query ``?durability=full`` (or ``normal``, the default).

        Args:
            url: The URL.
            clock: The stores' clock.

        Raises:
            ConfigurationError: The URL is not of that form, or has an unknown query
                parameter.

        .. versionadded:: 0.1.0
        """
        field = "SqliteBackend.url"
        given: object = url
        if not isinstance(given, str) or not given.startswith(_URL_PREFIX):
            raise ConfigurationError(
                field,
                url,
                "must be sqlite:///relative.db, sqlite:////absolute/path.db or sqlite:///:memory:",
            )
        path, has_query, query = url[len(_URL_PREFIX) :].partition("?")
        if not path or "#" in url:
            raise ConfigurationError(field, url, "must name a database file and no fragment")
        options: dict[str, str] = {}
        for parameter in query.split("&") if has_query else ():
            name, _, value = parameter.partition("=")
            if name != "durability":
                raise ConfigurationError(
                    field, url, f"has an unknown query parameter {name!r} (known: durability)"
                )
            options[name] = value
        durability: object = options.get("durability", "normal")
        return cls(path, durability=durability, clock=clock)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"SqliteBackend({self.url!r})"

    def __enter__(self) -> SqliteBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def idempotency_store(self, namespace: str = "default") -> SqliteIdempotencyStore:
        """An idempotency store on this database, for *namespace*.

        Raises:
            ConfigurationError: *namespace* is invalid.
            BackendUnavailableError: The database stayed locked while opening it.
            BackendError: The database could not be opened, or the backend is closed.

        .. versionadded:: 0.1.0
        """
        with self._lock:
            if self._closed:
                raise BackendError(f"{self!r} is closed")
            if self.path != _MEMORY:
                store = self._open(namespace)
                self._stores.add(store)
                return store
            shared = self._shared.get(namespace)
            if shared is None or shared.closed:
                shared = self._shared[namespace] = self._open(namespace)
            return shared

    def _open(self, namespace: str) -> SqliteIdempotencyStore:
        return SqliteIdempotencyStore(
            self.path, namespace=namespace, durability=self.durability, clock=self.clock
        )

    def async_idempotency_store(self, namespace: str = "default") -> AsyncSqliteIdempotencyStore:
        """An async idempotency store on this database, for *namespace*.

        Raises:
            ConfigurationError: *namespace* is invalid.
            BackendUnavailableError: The database stayed locked while opening it.
            BackendError: The database could not be opened, or the backend is closed.

        .. versionadded:: 0.1.0
        """
        return AsyncSqliteIdempotencyStore(store=self.idempotency_store(namespace))

    def dead_letter_store(self, queue: str) -> SqliteDeadLetterStore:
        """The store of dead-letter queue *queue* on this database.

        Raises:
            ConfigurationError: *queue* is invalid.
            BackendUnavailableError: The database stayed locked while opening it.
            BackendError: The database could not be opened, or the backend is closed.

        .. versionadded:: 0.1.0
        """
        with self._lock:
            if self._closed:
                raise BackendError(f"{self!r} is closed")
            if self.path != _MEMORY:
                store = SqliteDeadLetterStore(self.path, queue, durability=self.durability)
                self._stores.add(store)
                return store
            shared = self._shared_letters.get(queue)
            if shared is None or shared.closed:
                shared = SqliteDeadLetterStore(self.path, queue, durability=self.durability)
                self._shared_letters[queue] = shared
            return shared

    def async_dead_letter_store(self, queue: str) -> AsyncSqliteDeadLetterStore:
        """The async store of dead-letter queue *queue*, over :meth:`dead_letter_store`.

        Raises:
            ConfigurationError: *queue* is invalid.
            BackendUnavailableError: The database stayed locked while opening it.
            BackendError: The database could not be opened, or the backend is closed.

        .. versionadded:: 0.1.0
        """
        return AsyncSqliteDeadLetterStore(store=self.dead_letter_store(queue))

    def membership(self, group: str) -> SqliteMembership:
        """The membership store of *group* on this database, leases on the backend's clock.

        Every store of one group (in any process on the host) sees the same members.

        Raises:
            ConfigurationError: *group* is not 1 to 100 letters, digits or ``_.:-``.
            BackendUnavailableError: The database stayed locked while opening it.
            BackendError: The database could not be opened, or the backend is closed.

        .. versionadded:: 0.1.0
        """
        check_namespace("group", group)
        with self._lock:
            if self._closed:
                raise BackendError(f"{self!r} is closed")
            if self.path != _MEMORY:
                store = SqliteMembership(
                    self.path, group, durability=self.durability, clock=self.clock
                )
                self._stores.add(store)
                return store
            shared = self._shared_groups.get(group)
            if shared is None or shared.closed:
                shared = SqliteMembership(
                    self.path, group, durability=self.durability, clock=self.clock
                )
                self._shared_groups[group] = shared
            return shared

    def async_membership(self, group: str) -> AsyncSqliteMembership:
        """The async membership store of *group*, over :meth:`membership`.

        Raises:
            ConfigurationError: *group* is invalid.
            BackendUnavailableError: The database stayed locked while opening it.
            BackendError: The database could not be opened, or the backend is closed.

        .. versionadded:: 0.1.0
        """
        return AsyncSqliteMembership(store=self.membership(group))

    def dead_letter_queue(self, queue: str, **options: Any) -> DeadLetterQueue:
        """A :class:`~invresilience.DeadLetterQueue` over :meth:`dead_letter_store`.

        *options* (``codec``, ``redact``, ``max_letters``, ...) go to its constructor;
        the queue's clock defaults to this backend's. Closing the queue closes its store.

        Raises:
            ConfigurationError: *queue* or an option is invalid.
            BackendUnavailableError: The database stayed locked while opening it.
            BackendError: The database could not be opened, or the backend is closed.

        .. versionadded:: 0.1.0
        """
        options.setdefault("clock", self.clock)
        return DeadLetterQueue(self.dead_letter_store(queue), **options)

    def async_dead_letter_queue(self, queue: str, **options: Any) -> AsyncDeadLetterQueue:
        """An :class:`~invresilience.AsyncDeadLetterQueue` over :meth:`async_dead_letter_store`.

        *options* go to its constructor; the queue's clock defaults to this backend's.

        Raises:
            ConfigurationError: *queue* or an option is invalid.
            BackendUnavailableError: The database stayed locked while opening it.
            BackendError: The database could not be opened, or the backend is closed.

        .. versionadded:: 0.1.0
        """
        options.setdefault("clock", self.clock)
        return AsyncDeadLetterQueue(self.async_dead_letter_store(queue), **options)

    def close(self) -> None:
        """Close every store this backend made; calling it again is a no-op.

        .. versionadded:: 0.1.0
        """
        with self._lock:
            self._closed = True
            stores = [
                *self._stores,
                *self._shared.values(),
                *self._shared_letters.values(),
                *self._shared_groups.values(),
            ]
            self._stores.clear()
            self._shared.clear()
            self._shared_letters.clear()
            self._shared_groups.clear()
        for store in stores:
            store.close()
