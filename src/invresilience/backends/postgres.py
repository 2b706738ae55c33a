"""PostgreSQL stores through psycopg 3 (extra ``[postgres]``): idempotency and dead letters.

- :class:`PostgresIdempotencyStore` / :class:`AsyncPostgresIdempotencyStore` -- an
  :class:`~invresilience.typing.IdempotencyStore` / :class:`~invresilience.typing.AsyncIdempotencyStore`
  in two tables, with :meth:`~PostgresIdempotencyStore.transaction` for exactly-once
  local effects.
- :class:`PostgresDeadLetterStore` / :class:`AsyncPostgresDeadLetterStore` -- a
  :class:`~invresilience.typing.DeadLetterStore` / :class:`~invresilience.typing.AsyncDeadLetterStore`
  holding the letters of one dead-letter queue.
- :class:`PostgresMembership` / :class:`AsyncPostgresMembership` -- a
  :class:`~invresilience.typing.Membership` / :class:`~invresilience.typing.AsyncMembership`:
  a group's members, leases and versioned view, one row per group.
- :class:`PostgresBackend` -- makes stores (and dead-letter queues) from one connection
  string and closes them.

Tables
------

Created on first use, with ``CREATE ... IF NOT EXISTS`` under a transaction-level advisory
lock (so processes starting together do not race), and versioned::

    {prefix}_schema       (component text PRIMARY KEY, version integer)
    {prefix}_idempotency  (namespace text, key text, fingerprint text, state text,
                           fence bigint, token text, lease_until float8, expires_at float8,
                           result bytea, PRIMARY KEY (namespace, key))
    {prefix}_idempotency_expires   index on expires_at

    {prefix}_dead_letters (queue text, id text, sequence bigint, reason text, key text,
                           fingerprint text, error_type text, error_message text,
                           traceback text, attempts bigint, first_failed_at float8,
                           last_failed_at float8, dead_lettered_at float8, headers jsonb,
                           payload bytea, PRIMARY KEY (queue, id), UNIQUE (queue, sequence))
    {prefix}_dead_letters_key      index on (queue, key)
    {prefix}_dead_letters_at       index on (queue, dead_lettered_at)
    {prefix}_dead_letter_queues    (queue text PRIMARY KEY, last_sequence bigint,
                                    letters bigint)

    {prefix}_membership   (grp text PRIMARY KEY, state text)

Each kind of store creates its own tables only. The rows ``('idempotency', 1)``,
``('dead_letters', 2)`` and ``('membership', 1)`` of ``{prefix}_schema`` record the layouts
(:data:`SCHEMA_VERSION`, :data:`DEAD_LETTER_SCHEMA_VERSION`,
:data:`MEMBERSHIP_SCHEMA_VERSION`); a store that finds a
newer version refuses to run (:exc:`~invresilience.exceptions.BackendError`) rather than
misread rows. A dead-letter store that finds version 1 (no ``letters`` column) upgrades the
tables in place, once, under the advisory lock: it adds the column, fills it from the
letters and creates the triggers below.

A queue's row in ``{prefix}_dead_letter_queues`` holds the last sequence handed out (never
wound back, so a sequence is never reused) and ``letters``, how many letters the queue
holds, which ``add`` checks ``max_letters`` against instead of counting the queue's rows.
Triggers on ``{prefix}_dead_letters`` keep that count exact whoever writes, the stores or
plain SQL: after each ``INSERT`` and ``DELETE`` statement (``FOR EACH STATEMENT``, from its
transition table, so a purge of 100,000 letters updates each queue's row once), after an
``UPDATE`` that moves a letter to another queue, and after ``TRUNCATE``; they are
``{prefix}_dead_letters_added``, ``_removed``, ``_moved`` and ``_emptied``, each with a
PL/pgSQL function of the same name (dropping the tables leaves the functions). A letter
inserted by hand into a queue with no row makes its row. Every write to a queue's letters
takes the queue's row lock (an add first of all; a delete or purge before touching any letter, then
in its trigger), so deleting letters by hand while stores add with ``evict_oldest`` should
lock the row first too (``SELECT ... FOR UPDATE``): otherwise the two can deadlock, and
PostgreSQL aborts one of them. *prefix* is an identifier (``[A-Za-z_][A-Za-z0-9_]{0,40}``) quoted with
:class:`psycopg.sql.Identifier`; every value is a bound parameter. Namespaces (and
dead-letter queues) share the tables; each is a store of its own.

Clock
-----

Idempotency times are the **server's**: ``date_part('epoch', statement_timestamp())``, in
seconds since the epoch as ``double precision`` (a resolution of about a microsecond).
Every reading in one statement is the same instant, and ``InProgress.retry_after`` is the
stored ``lease_until`` minus that instant, so processes whose clocks disagree still agree.
A dead letter's times are the ones the letter carries (its queue's clock): the server's
clock plays no part. Membership leases are the server's too, read with ``clock_timestamp()``
once the group's row is locked.

Round trips and atomicity
-------------------------

Every operation is one statement in autocommit mode, atomic on its own. :meth:`PostgresIdempotencyStore.claim` is
one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <claimable>`` in a CTE, with a ``UNION ALL``
that reads the record it did not take; the client tells :class:`~invresilience.typing.Acquired`
from the rest by the token it sent. Under ``READ COMMITTED`` that read sees the snapshot
from the start of the statement, so when a concurrent claim commits in between, the answer
can be missing or stale; the client recognises both (the rules of
:mod:`invresilience._core.idempotency` would have taken the record) and runs the statement
again, a bounded number of times. ``complete`` / ``release`` / ``extend`` are one
``UPDATE ... WHERE state = 'pending' AND fence = ... AND token = ... RETURNING``.
``claim_many`` and ``complete_many`` send one statement per item in a single pipeline
(:meth:`psycopg.Cursor.executemany` with ``returning=True``): one round trip, one implicit
transaction, items taken in key order so concurrent batches cannot deadlock.

:meth:`PostgresDeadLetterStore.add` is one transaction sent as one pipeline (one round
trip): an ``INSERT ... ON CONFLICT DO UPDATE`` on the queue's row of
``{prefix}_dead_letter_queues`` locks it until the commit, so the adds to one queue run one
after the other: they commit in sequence order (a reader paging with ``after=`` never
misses a letter committed later with a lower sequence) and the ``max_letters`` cap is
exact. A second statement, whose snapshot sees every add committed before it, then looks
for the id, reads the queue's letter count from its row (the same time at 100 letters as at
100,000), deletes the lowest sequences to make room, takes the next sequence from the
queue's row and inserts the letter. ``list``, ``count``, ``stats``, ``replace``, ``delete``
and ``purge`` are one statement each; ``delete`` and ``purge`` lock the queue's row before
any letter, the order an add takes them in, so they never deadlock with one (and an add
waits for a purge of its queue to finish).

A membership group is one row of ``{prefix}_membership`` holding the JSON document of
``GroupState.dumps()``. Each operation is one transaction of two round trips: ``INSERT ... ON CONFLICT DO NOTHING`` (a
group's first operation makes its row) and ``SELECT ... FOR UPDATE`` with the server's time,
pipelined; the client applies the operation with
:class:`~invresilience._core.membership.GroupState` (the rules the memory store runs);
then ``UPDATE`` (when the document changed) and ``COMMIT``. The row lock makes the
operations on one group take turns, whichever process runs them.

Connections and errors
----------------------

A store keeps one connection, in autocommit mode, guarded by a lock (a :class:`threading.RLock`
in the sync store, an :class:`asyncio.Lock` in the async one). It connects on first use.
:exc:`psycopg.OperationalError` becomes :exc:`~invresilience.exceptions.BackendUnavailableError`
(except a deadlock, a serialization failure or a statement timeout: the server answered),
any other :exc:`psycopg.Error` a :exc:`~invresilience.exceptions.BackendError`, the driver's
exception chained; so is a string PostgreSQL cannot hold (a NUL character, a lone
surrogate), refused before anything changes. When the connection breaks (the server restarted, the backend was
terminated) the failing call raises; the next call opens a new connection, so work
resumes once the server is back. A store given a connection borrows it (``close()``
leaves it open); if it breaks, the store reconnects with the same parameters and owns the
new connection.

The sync and async classes share the SQL, the parameters and the decoding: each operation
is a generator that yields statements and receives their rows, driven by a few lines of
I/O in one sync and one async base class, which also keep the connection, reconnect and
create the tables, for every kind of store.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import secrets
import threading
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
from typing_extensions import final

from .._core import idempotency as rules
from .._core.dlq import REASONS, Added, DeadLetter, QueueStats, check_letter_id
from .._core.membership import GroupState, MembershipOp
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

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo
    from psycopg.rows import tuple_row
    from psycopg.types.json import Jsonb
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "invresilience.backends.postgres needs psycopg 3: pip install 'invresilience[postgres]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator, Iterator, Sequence
    from typing import TypeAlias

    from typing_extensions import Self

    from .._core.dlq import LetterFilter
    from .._core.idempotency import Claim, Lease
    from .._core.membership import MembershipView

__all__ = [
    "DEAD_LETTER_SCHEMA_VERSION",
    "MEMBERSHIP_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "AsyncPostgresDeadLetterStore",
    "AsyncPostgresIdempotencyStore",
    "AsyncPostgresMembership",
    "AsyncPostgresTransaction",
    "PostgresBackend",
    "PostgresDeadLetterStore",
    "PostgresIdempotencyStore",
    "PostgresMembership",
    "PostgresTransaction",
]

_T = TypeVar("_T")

#: The version of the idempotency tables this module reads and writes (``{prefix}_schema``
#: row ``idempotency``).
SCHEMA_VERSION: Final = 1
#: The version of the dead-letter tables this module reads and writes (``{prefix}_schema``
#: row ``dead_letters``): 2 keeps each queue's letter count in ``{prefix}_dead_letter_queues``;
#: a store finding version 1 upgrades the tables in place.
DEAD_LETTER_SCHEMA_VERSION: Final = 2
#: The version of the membership table this module reads and writes (``{prefix}_schema``
#: row ``membership``).
MEMBERSHIP_SCHEMA_VERSION: Final = 1
#: How many times a claim runs again when a concurrent claim made its answer stale.
_CLAIM_ATTEMPTS: Final = 5
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}\Z")
_COMPONENT: Final = "idempotency"
_DEAD_LETTERS: Final = "dead_letters"
_MEMBERSHIP: Final = "membership"
#: The triggers (and their functions) keeping a queue's letter count: ``{prefix}_dead_letters_<name>``.
_COUNT_TRIGGERS: Final = ("added", "removed", "moved", "emptied")

# -- SQL ----------------------------------------------------------------------------------------

#: The server's clock, one instant per statement.
_NOW = "date_part('epoch', statement_timestamp())"

# Every setup runs under the prefix's advisory lock, creates the schema table, its own
# tables, then records its component's version.
_SETUP_BEGIN = """\
SELECT pg_advisory_xact_lock({lock});
CREATE TABLE IF NOT EXISTS {schema} (
    component text PRIMARY KEY,
    version integer NOT NULL
);
"""

_SETUP_END = """
INSERT INTO {schema} (component, version) VALUES ({component}, {version})
    ON CONFLICT (component) DO NOTHING"""

_SETUP = f"""\
{_SETUP_BEGIN}CREATE TABLE IF NOT EXISTS {{table}} (
    namespace text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'completed', 'released')),
    fence bigint NOT NULL,
    token text NOT NULL,
    lease_until double precision NOT NULL,
    expires_at double precision NOT NULL,
    result bytea,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS {{index}} ON {{table}} (expires_at);{_SETUP_END}"""

_VERSION = "SELECT version FROM {schema} WHERE component = {component}"

_RECORD = "fence, token, fingerprint, state, lease_until, expires_at, result"

# The WHERE of the DO UPDATE is the rule "claim acquires": the record expired, or it has
# the same fingerprint and is released or pending with its lease run out.
_CLAIM = f"""\
WITH claimed AS (
    INSERT INTO {{table}} AS r
        (namespace, key, fingerprint, state, fence, token, lease_until, expires_at, result)
    VALUES (%(namespace)s, %(key)s, %(fingerprint)s, 'pending', 1, %(token)s,
            {_NOW} + %(lease)s::float8,
            {_NOW} + greatest(%(ttl)s::float8, %(lease)s::float8),
            NULL)
    ON CONFLICT (namespace, key) DO UPDATE SET
        fingerprint = excluded.fingerprint,
        state = 'pending',
        fence = r.fence + 1,
        token = excluded.token,
        lease_until = excluded.lease_until,
        expires_at = excluded.expires_at,
        result = NULL
    WHERE r.expires_at <= {_NOW}
       OR (r.fingerprint = excluded.fingerprint
           AND (r.state = 'released' OR (r.state = 'pending' AND r.lease_until <= {_NOW})))
    RETURNING {_RECORD}
)
SELECT {_RECORD}, {_NOW} FROM claimed
UNION ALL
SELECT {_RECORD}, {_NOW} FROM {{table}}
WHERE namespace = %(namespace)s AND key = %(key)s AND NOT EXISTS (SELECT 1 FROM claimed)"""

# The lease holds: pending, same fence and token, not expired (rules.holds).
_HOLDS = f"""\
WHERE namespace = %(namespace)s AND key = %(key)s AND state = 'pending'
  AND fence = %(fence)s AND token = %(token)s AND expires_at > {_NOW}
RETURNING fence"""

_COMPLETE = f"""\
UPDATE {{table}} SET state = 'completed', result = %(result)s, lease_until = 0,
    expires_at = {_NOW} + %(ttl)s::float8
{_HOLDS}"""

_RELEASE = f"""\
UPDATE {{table}} SET state = 'released', lease_until = 0
{_HOLDS}"""

_EXTEND = f"""\
UPDATE {{table}} SET lease_until = {_NOW} + %(seconds)s::float8,
    expires_at = greatest(expires_at, {_NOW} + %(seconds)s::float8)
{_HOLDS}"""

_PURGE = f"""\
WITH doomed AS (
    DELETE FROM {{table}} WHERE (namespace, key) IN (
        SELECT namespace, key FROM {{table}}
        WHERE namespace = %(namespace)s AND expires_at <= {_NOW}
        LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) AND expires_at <= {_NOW}
    RETURNING 1
)
SELECT count(*) FROM doomed"""

_LOCK = f"""\
SELECT {_RECORD}, {_NOW} FROM {{table}}
WHERE namespace = %(namespace)s AND key = %(key)s FOR UPDATE"""


# -- SQL: dead letters ----------------------------------------------------------------------------

# The dead-letter tables, then (under the same advisory lock, in the same transaction) the
# version-dependent part in a DO block: on fresh tables or version-1 ones, the letter count of
# each queue (its column, filled from the letters) and the triggers that keep it, then the
# version. The DO block locks the queue table before the letters, as every add and delete does,
# so an upgrade racing old stores' adds cannot deadlock with them, and no letter is written
# between the count and the triggers. At the current version, or a newer one (which _setup
# refuses), it changes nothing.
_DLQ_SETUP = f"""\
{_SETUP_BEGIN}CREATE TABLE IF NOT EXISTS {{letters}} (
    queue text NOT NULL,
    id text NOT NULL,
    sequence bigint NOT NULL,
    reason text NOT NULL,
    key text,
    fingerprint text,
    error_type text,
    error_message text,
    traceback text,
    attempts bigint NOT NULL,
    first_failed_at double precision NOT NULL,
    last_failed_at double precision NOT NULL,
    dead_lettered_at double precision NOT NULL,
    headers jsonb NOT NULL,
    payload bytea NOT NULL,
    PRIMARY KEY (queue, id),
    UNIQUE (queue, sequence)
);
CREATE TABLE IF NOT EXISTS {{queues}} (
    queue text PRIMARY KEY,
    last_sequence bigint NOT NULL,
    letters bigint NOT NULL DEFAULT 0
);
DO $setup$
DECLARE
    recorded integer;
BEGIN
    SELECT version INTO recorded FROM {{schema}} WHERE component = {{component}};
    IF recorded IS NOT NULL AND recorded <> 1 THEN
        RETURN;
    END IF;
    LOCK TABLE {{queues}} IN ACCESS EXCLUSIVE MODE;
    LOCK TABLE {{letters}} IN SHARE ROW EXCLUSIVE MODE;
    ALTER TABLE {{queues}} ADD COLUMN IF NOT EXISTS letters bigint NOT NULL DEFAULT 0;
    UPDATE {{queues}} SET letters = 0 WHERE letters <> 0;
    INSERT INTO {{queues}} AS q (queue, last_sequence, letters)
    SELECT queue, max(sequence), count(*) FROM {{letters}} GROUP BY queue ORDER BY queue
    ON CONFLICT (queue) DO UPDATE
        SET letters = excluded.letters,
            last_sequence = greatest(q.last_sequence, excluded.last_sequence);

    -- Letters inserted, by queue: counted, and the queue's row made if there was none (with
    -- a counter past their sequences, so the store never hands one of them out again).
    CREATE OR REPLACE FUNCTION {{added}}() RETURNS trigger LANGUAGE plpgsql AS $added$
    BEGIN
        INSERT INTO {{queues}} AS q (queue, last_sequence, letters)
        SELECT queue, max(sequence), count(*) FROM added_letters GROUP BY queue ORDER BY queue
        ON CONFLICT (queue) DO UPDATE
            SET letters = q.letters + excluded.letters,
                last_sequence = greatest(q.last_sequence, excluded.last_sequence);
        RETURN NULL;
    END
    $added$;
    DROP TRIGGER IF EXISTS {{added}} ON {{letters}};
    CREATE TRIGGER {{added}} AFTER INSERT ON {{letters}}
        REFERENCING NEW TABLE AS added_letters
        FOR EACH STATEMENT EXECUTE FUNCTION {{added}}();

    -- Letters deleted, by queue: one update of each queue's row per statement.
    CREATE OR REPLACE FUNCTION {{removed}}() RETURNS trigger LANGUAGE plpgsql AS $removed$
    BEGIN
        UPDATE {{queues}} AS q SET letters = q.letters - gone.n
        FROM (SELECT queue, count(*) AS n FROM removed_letters GROUP BY queue) AS gone
        WHERE q.queue = gone.queue;
        RETURN NULL;
    END
    $removed$;
    DROP TRIGGER IF EXISTS {{removed}} ON {{letters}};
    CREATE TRIGGER {{removed}} AFTER DELETE ON {{letters}}
        REFERENCING OLD TABLE AS removed_letters
        FOR EACH STATEMENT EXECUTE FUNCTION {{removed}}();

    -- A letter moved to another queue by hand (the stores never do): a row trigger, which
    -- fires only for an UPDATE that sets queue, so a replace() costs nothing more.
    CREATE OR REPLACE FUNCTION {{moved}}() RETURNS trigger LANGUAGE plpgsql AS $moved$
    BEGIN
        UPDATE {{queues}} SET letters = letters - 1 WHERE queue = OLD.queue;
        INSERT INTO {{queues}} AS q (queue, last_sequence, letters)
        VALUES (NEW.queue, NEW.sequence, 1)
        ON CONFLICT (queue) DO UPDATE
            SET letters = q.letters + 1,
                last_sequence = greatest(q.last_sequence, excluded.last_sequence);
        RETURN NULL;
    END
    $moved$;
    DROP TRIGGER IF EXISTS {{moved}} ON {{letters}};
    CREATE TRIGGER {{moved}} AFTER UPDATE OF queue ON {{letters}}
        FOR EACH ROW WHEN (OLD.queue IS DISTINCT FROM NEW.queue)
        EXECUTE FUNCTION {{moved}}();

    CREATE OR REPLACE FUNCTION {{emptied}}() RETURNS trigger LANGUAGE plpgsql AS $emptied$
    BEGIN
        UPDATE {{queues}} SET letters = 0 WHERE letters <> 0;
        RETURN NULL;
    END
    $emptied$;
    DROP TRIGGER IF EXISTS {{emptied}} ON {{letters}};
    CREATE TRIGGER {{emptied}} AFTER TRUNCATE ON {{letters}}
        FOR EACH STATEMENT EXECUTE FUNCTION {{emptied}}();

    INSERT INTO {{schema}} (component, version) VALUES ({{component}}, {{version}})
        ON CONFLICT (component) DO UPDATE SET version = excluded.version;
END
$setup$;
CREATE INDEX IF NOT EXISTS {{letters_key}} ON {{letters}} (queue, key);
CREATE INDEX IF NOT EXISTS {{letters_at}} ON {{letters}} (queue, dead_lettered_at);"""

#: A stored letter, as every query returns it (see :func:`_letter`).
_LETTER = (
    "id, sequence, reason, key, fingerprint, error_type, error_message, traceback, attempts, "
    "first_failed_at, last_failed_at, dead_lettered_at, headers, payload"
)
#: The columns a letter's content fills (all but queue, id and sequence), with their types.
_CONTENT = (
    ("reason", "text"),
    ("key", "text"),
    ("fingerprint", "text"),
    ("error_type", "text"),
    ("error_message", "text"),
    ("traceback", "text"),
    ("attempts", "bigint"),
    ("first_failed_at", "float8"),
    ("last_failed_at", "float8"),
    ("dead_lettered_at", "float8"),
    ("headers", "jsonb"),
    ("payload", "bytea"),
)
_CONTENT_COLUMNS = ", ".join(column for column, _ in _CONTENT)
_CONTENT_VALUES = ", ".join(f"%({column})s::{kind}" for column, kind in _CONTENT)
_CONTENT_SET = ", ".join(f"{column} = %({column})s::{kind}" for column, kind in _CONTENT)
#: NULLs for every column of _LETTER after id and sequence.
_NULLS = ", ".join(["NULL"] * (len(_CONTENT)))

# The first statement of an add: lock the queue's row (made on the queue's first add) until
# the transaction ends, so adds to one queue take turns and commit in sequence order.
_LOCK_QUEUE = """\
INSERT INTO {queues} AS q (queue, last_sequence) VALUES (%(queue)s, 0)
ON CONFLICT (queue) DO UPDATE SET last_sequence = q.last_sequence
RETURNING last_sequence"""

# The second: its snapshot, taken once the lock is held, sees every add before it. The
# letter already stored under the id, else (room permitting, or after deleting the
# lowest sequences) the new letter under the queue's next sequence. The rows say which:
# 'stored' with the stored letter, or 'created' and one 'evicted' per deleted letter; none
# when the queue is full.
_ADD = f"""\
WITH existing AS (
    SELECT {_LETTER} FROM {{letters}} WHERE queue = %(queue)s AND id = %(id)s
), size AS (
    SELECT letters AS n FROM {{queues}} WHERE queue = %(queue)s
), verdict AS (
    SELECT NOT EXISTS (SELECT 1 FROM existing)
           AND (%(max_letters)s::bigint IS NULL OR n < %(max_letters)s::bigint
                OR %(evict)s::boolean) AS ok,
           n
    FROM size
), evicted AS (
    DELETE FROM {{letters}} WHERE queue = %(queue)s AND sequence IN (
        SELECT sequence FROM {{letters}} WHERE queue = %(queue)s ORDER BY sequence
        LIMIT (SELECT CASE WHEN ok AND %(max_letters)s::bigint IS NOT NULL
                           THEN greatest(n - %(max_letters)s::bigint + 1, 0) ELSE 0 END
               FROM verdict)
    )
    RETURNING id, sequence
), numbered AS (
    UPDATE {{queues}} SET last_sequence = last_sequence + 1
    WHERE queue = %(queue)s AND (SELECT ok FROM verdict)
    RETURNING last_sequence
), inserted AS (
    INSERT INTO {{letters}} (queue, id, sequence, {_CONTENT_COLUMNS})
    SELECT %(queue)s, %(id)s, last_sequence, {_CONTENT_VALUES} FROM numbered
    RETURNING sequence
)
SELECT 'stored', {_LETTER} FROM existing
UNION ALL
SELECT 'created', NULL, sequence, {_NULLS} FROM inserted
UNION ALL
SELECT 'evicted', id, sequence, {_NULLS} FROM evicted"""

_GET = f"SELECT {_LETTER} FROM {{letters}} WHERE queue = %(queue)s AND id = %(id)s"

# {where} is composed from a LetterFilter by _where(): conditions with bound parameters.
_LIST = f"""\
SELECT {_LETTER} FROM {{letters}}
WHERE {{where}} AND sequence > %(after)s
ORDER BY sequence LIMIT %(limit)s"""

_COUNT = "SELECT count(*) FROM {letters} WHERE {where}"

_STATS = """\
SELECT reason, count(*), min(dead_lettered_at), max(dead_lettered_at)
FROM {letters} WHERE queue = %(queue)s GROUP BY reason"""

_REPLACE = f"""\
UPDATE {{letters}} SET {_CONTENT_SET}
WHERE queue = %(queue)s AND id = %(id)s
RETURNING sequence"""

# Deletes lock the queue's row before any letter: as an add does (which may delete the oldest
# letters), so the two cannot deadlock, whereas a delete taking the letters first would then wait
# for the row in its count trigger while an add holding the row waited for those letters. The
# lock is a one-time filter (it holds whether or not the row exists), run before the scan.
_QUEUE_LOCKED = "coalesce((SELECT true FROM {queues} WHERE queue = %(queue)s FOR UPDATE), true)"

# One id with `=`, several with `= ANY`: PostgreSQL runs the array form's index scan
# measurably slower, and a redrive deletes one letter at a time.
_DELETE_ONE = f"""\
WITH gone AS (
    DELETE FROM {{letters}} WHERE queue = %(queue)s AND id = %(id)s AND {_QUEUE_LOCKED}
    RETURNING 1
)
SELECT count(*) FROM gone"""

_DELETE = f"""\
WITH gone AS (
    DELETE FROM {{letters}}
    WHERE queue = %(queue)s AND id = ANY(%(ids)s::text[]) AND {_QUEUE_LOCKED}
    RETURNING 1
)
SELECT count(*) FROM gone"""

_PURGE_LETTERS = f"""\
WITH gone AS (DELETE FROM {{letters}} WHERE {{where}} AND {_QUEUE_LOCKED} RETURNING 1)
SELECT count(*) FROM gone"""


# -- SQL: membership ------------------------------------------------------------------------------

_MEMBERSHIP_SETUP = f"""\
{_SETUP_BEGIN}CREATE TABLE IF NOT EXISTS {{table}} (
    grp text PRIMARY KEY,
    state text NOT NULL
);{_SETUP_END}"""

_GROUP_INSERT = """\
INSERT INTO {table} (grp, state) VALUES (%(group)s, %(state)s) ON CONFLICT (grp) DO NOTHING"""

# The time is read above the locking subquery, so once the row is locked: a call that
# waited for another one's commit reads a time after that one's.
_GROUP_LOCK = """\
SELECT g.state, date_part('epoch', clock_timestamp())
FROM (SELECT state FROM {table} WHERE grp = %(group)s FOR UPDATE) AS g"""

_GROUP_WRITE = "UPDATE {table} SET state = %(state)s WHERE grp = %(group)s"


class _Statements(NamedTuple):
    """The statements of one table prefix, composed once."""

    setup: sql.Composed
    version: sql.Composed
    claim: sql.Composed
    complete: sql.Composed
    release: sql.Composed
    extend: sql.Composed
    purge: sql.Composed
    lock: sql.Composed


def _check_prefix(value: object) -> str:
    """*value* if it is a valid table prefix, else raise :exc:`ConfigurationError`."""
    if not isinstance(value, str) or not _PREFIX.match(value):
        raise ConfigurationError(
            "table_prefix",
            value,
            "must be a letter or '_' then up to 40 letters, digits or '_' (an SQL identifier)",
        )
    return value


def _statements(prefix: str) -> _Statements:
    """Every statement for the tables named after *prefix* (already checked)."""
    names = {
        "schema": sql.Identifier(f"{prefix}_schema"),
        "table": sql.Identifier(f"{prefix}_idempotency"),
        "index": sql.Identifier(f"{prefix}_idempotency_expires"),
        "component": sql.Literal(_COMPONENT),
        "version": sql.Literal(SCHEMA_VERSION),
        "lock": sql.Literal(_lock_id(prefix)),
    }

    def compose(text: str) -> sql.Composed:
        return sql.SQL(text).format(**names)

    return _Statements(
        setup=compose(_SETUP),
        version=compose(_VERSION),
        claim=compose(_CLAIM),
        complete=compose(_COMPLETE),
        release=compose(_RELEASE),
        extend=compose(_EXTEND),
        purge=compose(_PURGE),
        lock=compose(_LOCK),
    )


class _DeadLetterStatements(NamedTuple):
    """The dead-letter statements of one table prefix, composed once (but the filtered ones)."""

    setup: sql.Composed
    version: sql.Composed
    lock_queue: sql.Composed
    add: sql.Composed
    get: sql.Composed
    stats: sql.Composed
    replace: sql.Composed
    delete_one: sql.Composed
    delete: sql.Composed
    letters: sql.Identifier
    queues: sql.Identifier

    def filtered(self, text: str, where: sql.Composable) -> sql.Composed:
        """The statement *text* (``_LIST``, ``_COUNT``, ``_PURGE_LETTERS``) with *where*."""
        return sql.SQL(text).format(letters=self.letters, queues=self.queues, where=where)


def _dead_letter_statements(prefix: str) -> _DeadLetterStatements:
    """Every dead-letter statement for the tables named after *prefix* (already checked)."""
    letters = sql.Identifier(f"{prefix}_dead_letters")
    queues = sql.Identifier(f"{prefix}_dead_letter_queues")
    names = {
        "schema": sql.Identifier(f"{prefix}_schema"),
        "letters": letters,
        "letters_key": sql.Identifier(f"{prefix}_dead_letters_key"),
        "letters_at": sql.Identifier(f"{prefix}_dead_letters_at"),
        "queues": queues,
        # The count triggers and their functions (at most 63 characters with a 41-character
        # prefix, PostgreSQL's limit on a name).
        **{
            trigger: sql.Identifier(f"{prefix}_dead_letters_{trigger}")
            for trigger in _COUNT_TRIGGERS
        },
        "component": sql.Literal(_DEAD_LETTERS),
        "version": sql.Literal(DEAD_LETTER_SCHEMA_VERSION),
        "lock": sql.Literal(_lock_id(prefix)),
    }

    def compose(text: str) -> sql.Composed:
        return sql.SQL(text).format(**names)

    return _DeadLetterStatements(
        setup=compose(_DLQ_SETUP),
        version=compose(_VERSION),
        lock_queue=compose(_LOCK_QUEUE),
        add=compose(_ADD),
        get=compose(_GET),
        stats=compose(_STATS),
        replace=compose(_REPLACE),
        delete_one=compose(_DELETE_ONE),
        delete=compose(_DELETE),
        letters=letters,
        queues=queues,
    )


class _MembershipStatements(NamedTuple):
    """The membership statements of one table prefix, composed once."""

    setup: sql.Composed
    version: sql.Composed
    insert: sql.Composed
    lock: sql.Composed
    write: sql.Composed


def _membership_statements(prefix: str) -> _MembershipStatements:
    """Every membership statement for the tables named after *prefix* (already checked)."""
    names = {
        "schema": sql.Identifier(f"{prefix}_schema"),
        "table": sql.Identifier(f"{prefix}_membership"),
        "component": sql.Literal(_MEMBERSHIP),
        "version": sql.Literal(MEMBERSHIP_SCHEMA_VERSION),
        "lock": sql.Literal(_lock_id(prefix)),
    }

    def compose(text: str) -> sql.Composed:
        return sql.SQL(text).format(**names)

    return _MembershipStatements(
        setup=compose(_MEMBERSHIP_SETUP),
        version=compose(_VERSION),
        insert=compose(_GROUP_INSERT),
        lock=compose(_GROUP_LOCK),
        write=compose(_GROUP_WRITE),
    )


def _lock_id(prefix: str) -> int:
    """The advisory lock (a signed 64-bit int) serialising schema creation for *prefix*."""
    digest = hashlib.sha256(f"invresilience.schema:{prefix}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# -- the operations, as generators of statements ----------------------------------------------


class _One(NamedTuple):
    """Run *query* once; the answer is its rows."""

    query: sql.Composed
    params: dict[str, Any] | None


class _Many(NamedTuple):
    """Run *query* once per parameter set in one pipeline; the answer is each one's rows."""

    query: sql.Composed
    params: list[dict[str, Any]]


class _Tx(NamedTuple):
    """Run *steps* in one transaction, pipelined (one round trip); the answer is each one's rows."""

    steps: tuple[_One, ...]


if TYPE_CHECKING:
    _Op: TypeAlias = Generator["_One | _Many | _Tx", Any, _T]


def _setup(
    setup: sql.Composed, version_query: sql.Composed, table: str, expected: int
) -> _Op[None]:
    """Create (or upgrade) the tables if needed and check the recorded schema version."""
    yield _One(setup, None)
    rows = yield _One(version_query, None)
    version = rows[0][0] if rows else None
    if version != expected:
        msg = (
            f"table {table} has schema version {version}, this invresilience knows "
            f"version {expected}: upgrade invresilience, or use another table_prefix"
        )
        raise BackendError(msg)


def _record(row: Sequence[Any]) -> tuple[rules.Record, float]:
    """A row of ``_RECORD, now`` as a :class:`~rules.Record` and the server's time."""
    fence, token, fingerprint, state, lease_until, expires_at, result, now = row
    record = rules.Record(
        fingerprint=fingerprint,
        state=state,
        fence=fence,
        token=token,
        lease_until=lease_until,
        expires_at=expires_at,
        result=None if result is None else bytes(result),
    )
    return record, now


def _claim_params(
    namespace: str, key: str, fingerprint: str, token: str, lease: float, ttl: float
) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "key": key,
        "fingerprint": fingerprint,
        "token": token,
        "lease": float(lease),
        "ttl": float(ttl),
    }


def _decode_claim(
    rows: Sequence[Sequence[Any]], key: str, fingerprint: str, token: str, lease: float, ttl: float
) -> Claim | None:
    """The answer to a claim sent with *token*, or ``None`` when it must run again.

    The rows are the claimed record (our token) or the record as the statement's snapshot
    saw it. A missing row, or one the rules would have taken, means a concurrent claim
    committed during the statement: the answer is not known yet.
    """
    if not rows:
        return None
    record, now = _record(rows[0])
    if record.token == token:
        return rules.Acquired(rules.Lease(key, record.fence, token, fingerprint, lease))
    new, answer = rules.claim(record, key, fingerprint, token, now=now, lease=lease, ttl=ttl)
    return None if new is not None else answer


def _claim(
    q: _Statements, namespace: str, key: str, fingerprint: str, lease: float, ttl: float
) -> _Op[Claim]:
    for _ in range(_CLAIM_ATTEMPTS):
        token = secrets.token_hex(16)
        rows = yield _One(q.claim, _claim_params(namespace, key, fingerprint, token, lease, ttl))
        answer = _decode_claim(rows, key, fingerprint, token, lease, ttl)
        if answer is not None:
            return answer
    msg = f"claim of {key!r} lost {_CLAIM_ATTEMPTS} races with concurrent claims in a row"
    raise BackendError(msg)


def _key_order(keys: Sequence[str]) -> list[int]:
    """Indexes of *keys* in key order, stable: every batch locks rows in the same order."""
    return sorted(range(len(keys)), key=keys.__getitem__)


def _claim_many(
    q: _Statements, namespace: str, items: Sequence[tuple[str, str]], lease: float, ttl: float
) -> _Op[list[Claim]]:
    order = _key_order([key for key, _ in items])
    tokens = [secrets.token_hex(16) for _ in items]
    params = [_claim_params(namespace, *items[i], tokens[i], lease, ttl) for i in order]
    results = yield _Many(q.claim, params)
    answers: list[Claim | None] = [None] * len(items)
    for i, rows in zip(order, results, strict=True):
        answers[i] = _decode_claim(rows, *items[i], tokens[i], lease, ttl)
    claims: list[Claim] = []
    for i, answer in enumerate(answers):
        if answer is None:  # a concurrent claim raced this one: ask again, on its own
            answer = yield from _claim(q, namespace, *items[i], lease, ttl)
        claims.append(answer)
    return claims


def _lease_params(namespace: str, lease: Lease, **extra: Any) -> dict[str, Any]:
    return {
        "namespace": namespace,
        "key": lease.key,
        "fence": lease.fence,
        "token": lease.token,
        **extra,
    }


def _complete_params(namespace: str, lease: Lease, result: bytes, ttl: float) -> dict[str, Any]:
    return _lease_params(namespace, lease, result=bytes(result), ttl=float(ttl))


def _on_lease(query: sql.Composed, params: dict[str, Any], lease: Lease) -> _Op[None]:
    """Run a ``complete`` / ``release`` / ``extend`` statement; lost if it changed nothing."""
    rows = yield _One(query, params)
    if not rows:
        raise lost(lease)


def _complete_many(
    q: _Statements, namespace: str, items: Sequence[tuple[Lease, bytes]], ttl: float
) -> _Op[list[bool]]:
    order = _key_order([lease.key for lease, _ in items])
    params = [_complete_params(namespace, *items[i], ttl) for i in order]
    results = yield _Many(q.complete, params)
    done = [False] * len(items)
    for i, rows in zip(order, results, strict=True):
        done[i] = bool(rows)
    return done


def _purge(q: _Statements, namespace: str, limit: int) -> _Op[int]:
    rows = yield _One(q.purge, {"namespace": namespace, "limit": limit})
    return int(rows[0][0])


def _lock(q: _Statements, namespace: str, lease: Lease) -> _Op[None]:
    """Lock the lease's record for the rest of the transaction; lost if it does not hold."""
    rows = yield _One(q.lock, {"namespace": namespace, "key": lease.key})
    if not rows:
        raise lost(lease)
    record, now = _record(rows[0])
    if not rules.holds(record, lease, now):
        raise lost(lease)


# -- the dead-letter operations -------------------------------------------------------------------

#: The range of a bigint: ``after`` and ``limit`` are clamped to it (sequences fit in it).
_BIGINT_MIN: Final = -(1 << 63)
_BIGINT_MAX: Final = (1 << 63) - 1


def _bigint(value: int) -> int:
    return min(max(value, _BIGINT_MIN), _BIGINT_MAX)


def _content(letter: DeadLetter) -> dict[str, Any]:
    """The parameters of ``_CONTENT``: everything in *letter* but its queue, id and sequence."""
    return {
        "reason": letter.reason,
        "key": letter.key,
        "fingerprint": letter.fingerprint,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "traceback": letter.traceback,
        "attempts": letter.attempts,
        "first_failed_at": float(letter.first_failed_at),
        "last_failed_at": float(letter.last_failed_at),
        "dead_lettered_at": float(letter.dead_lettered_at),
        "headers": Jsonb(dict(letter.headers)),
        "payload": bytes(letter.payload),
    }


def _letter(queue: str, row: Sequence[Any]) -> DeadLetter:
    """A row of ``_LETTER`` as the :class:`DeadLetter` of *queue*."""
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
    return DeadLetter(
        id=letter_id,
        queue=queue,
        payload=bytes(payload),
        reason=reason,
        key=key,
        fingerprint=fingerprint,
        error_type=error_type,
        error_message=error_message,
        traceback=traceback,
        attempts=attempts,
        first_failed_at=first_failed_at,
        last_failed_at=last_failed_at,
        dead_lettered_at=dead_lettered_at,
        headers=headers,
        sequence=sequence,
    )


def _where(queue: str, where: LetterFilter) -> tuple[sql.Composed, dict[str, Any]]:
    """The SQL condition selecting what *where* selects in *queue*, and its parameters.

    A bound like ``NaN`` selects nothing, as in :meth:`LetterFilter.matches`.
    """
    parts: list[sql.Composable] = [sql.SQL("queue = %(queue)s")]
    params: dict[str, Any] = {"queue": queue}
    if where.reasons is not None:
        parts.append(sql.SQL("reason = ANY(%(reasons)s::text[])"))
        params["reasons"] = sorted(where.reasons)
    if where.key is not None:
        parts.append(sql.SQL("key = %(key)s::text"))
        params["key"] = where.key
    for name, operator in (("since", ">="), ("before", "<")):
        bound = getattr(where, name)
        if bound is None:
            continue
        value = _float_bound(bound)
        if math.isnan(value):
            parts.append(sql.SQL("FALSE"))
        else:
            parts.append(sql.SQL(f"dead_lettered_at {operator} %({name})s::float8"))
            params[name] = value
    return sql.SQL(" AND ").join(parts), params


def _float_bound(bound: float) -> float:
    """*bound* as a float8 that compares with every stored time as *bound* does.

    Times are finite floats, so an int beyond the float range compares like an infinity.
    """
    try:
        return float(bound)
    except OverflowError:
        return math.inf if bound > 0 else -math.inf


def _add(
    q: _DeadLetterStatements,
    letter: DeadLetter,
    max_letters: int | None,
    evict_oldest: bool,
) -> _Op[Added]:
    queue = letter.queue
    params = {
        "queue": queue,
        "id": letter.id,
        "max_letters": max_letters,
        "evict": bool(evict_oldest),
        **_content(letter),
    }
    _, rows = yield _Tx((_One(q.lock_queue, {"queue": queue}), _One(q.add, params)))
    sequence: int | None = None
    evicted: list[tuple[int, str]] = []
    for outcome, *row in rows:
        if outcome == "stored":
            return Added(letter=_letter(queue, row), created=False)
        if outcome == "created":
            sequence = row[1]
        else:
            evicted.append((row[1], row[0]))
    if sequence is None:
        if max_letters is None:  # pragma: no cover - the statement always stores or finds one
            msg = f"add of {letter.id!r} to {queue!r} neither stored nor found a letter"
            raise BackendError(msg)
        raise DeadLetterQueueFullError(queue, max_letters)
    return Added(
        letter=attrs.evolve(letter, sequence=sequence),
        created=True,
        evicted=tuple(letter_id for _, letter_id in sorted(evicted)),
    )


def _get(q: _DeadLetterStatements, queue: str, letter_id: str) -> _Op[DeadLetter | None]:
    rows = yield _One(q.get, {"queue": queue, "id": letter_id})
    return _letter(queue, rows[0]) if rows else None


def _list(
    q: _DeadLetterStatements, queue: str, where: LetterFilter, after: int, limit: int
) -> _Op[list[DeadLetter]]:
    condition, params = _where(queue, where)
    params.update(after=_bigint(after), limit=_bigint(limit))
    rows = yield _One(q.filtered(_LIST, condition), params)
    return [_letter(queue, row) for row in rows]


def _count(q: _DeadLetterStatements, queue: str, where: LetterFilter, text: str) -> _Op[int]:
    """Run ``_COUNT`` or ``_PURGE_LETTERS`` (both answer one count) for *where*."""
    condition, params = _where(queue, where)
    rows = yield _One(q.filtered(text, condition), params)
    return int(rows[0][0])


def _stats(q: _DeadLetterStatements, queue: str) -> _Op[QueueStats]:
    rows = yield _One(q.stats, {"queue": queue})
    found = {reason: (int(n), oldest, newest) for reason, n, oldest, newest in rows}
    if not found:
        return QueueStats(total=0)
    return QueueStats(
        total=sum(n for n, _, _ in found.values()),
        by_reason={reason: found[reason][0] for reason in REASONS if reason in found},
        oldest=min(oldest for _, oldest, _ in found.values()),
        newest=max(newest for _, _, newest in found.values()),
    )


def _replace(q: _DeadLetterStatements, letter: DeadLetter) -> _Op[bool]:
    params = {"queue": letter.queue, "id": letter.id, **_content(letter)}
    rows = yield _One(q.replace, params)
    return bool(rows)


def _delete(q: _DeadLetterStatements, queue: str, letter_ids: list[str]) -> _Op[int]:
    if len(letter_ids) == 1:
        rows = yield _One(q.delete_one, {"queue": queue, "id": letter_ids[0]})
    else:
        rows = yield _One(q.delete, {"queue": queue, "ids": letter_ids})
    return int(rows[0][0])


def _storable_ids(letter_ids: Sequence[str]) -> list[str]:
    """The distinct ids in *letter_ids* a letter can have (no other id is ever stored)."""
    return sorted({i for i in letter_ids if check_letter_id(i) is None})


#: What a call can raise from the driver: its errors, and the UTF-8 encoding of a ``str``
#: PostgreSQL cannot hold (a lone surrogate) when psycopg sends it.
_DRIVER_ERRORS: Final = (psycopg.Error, UnicodeEncodeError)


def _error(where: str, exc: psycopg.Error | UnicodeEncodeError) -> BackendError:
    """The invresilience error for a driver error (the caller chains *exc*)."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith("40") or state == "57014":
        # A deadlock, a serialization failure or a statement timeout: the server answered.
        return BackendError(f"{where}: PostgreSQL rolled the statement back: {message}")
    if isinstance(exc, psycopg.OperationalError):
        return BackendUnavailableError(f"{where}: PostgreSQL is unreachable: {message}")
    if isinstance(exc, UnicodeEncodeError):
        return BackendError(f"{where}: PostgreSQL cannot store a value: {message}")
    return BackendError(f"{where}: PostgreSQL failed: {message}")


def _closed(where: str) -> BackendError:
    return BackendError(f"{where}: the store is closed")


def _no_complete(lease: Lease) -> IdempotencyError:
    return IdempotencyError(
        lease.key,
        f"transaction on {lease.key!r} ended without complete(): rolled back, "
        "call tx.complete(result) before the block ends",
    )


def _reconnect_args(connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> str:
    """The conninfo of a borrowed *connection*, password included, to replace it."""
    info = connection.info
    params = info.get_parameters()
    if info.password:
        params["password"] = info.password
    return make_conninfo(**params)


def _check_autocommit(connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    if not connection.autocommit:
        raise ConfigurationError(
            "connection", connection, "must be in autocommit mode (connect(..., autocommit=True))"
        )


def _check_idle(
    connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any], lease: Lease
) -> None:
    """Refuse to nest transactions: an inner COMMIT would commit the outer block's writes."""
    if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise IdempotencyError(
            lease.key, f"transaction on {lease.key!r}: the store is already in a transaction"
        )


def _check_outside_transaction(
    connection: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
    store: str = "a dead-letter store",
) -> None:
    """Refuse to run a transaction of the store's inside one already open on its connection."""
    if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        msg = (
            f"the store's connection is inside a transaction: {store} runs its "
            "own; give it a connection of its own, or a conninfo string"
        )
        raise BackendError(msg)


def _has_rows(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    """Whether *cursor*'s statement returned rows (``cursor.description`` says so too, but
    builds a column object per column to say it: 14 for a letter, on every call)."""
    result = cursor.pgresult
    return result is not None and result.status == psycopg.pq.ExecStatus.TUPLES_OK


#: Whether libpq can pipeline (version 14 and later); without, a transaction's statements
#: take a round trip each.
_PIPELINE: Final = psycopg.Pipeline.is_supported()


def _extended_lease(lease: Lease, seconds: float) -> Lease:
    return rules.Lease(lease.key, lease.fence, lease.token, lease.fingerprint, seconds)


# -- the sync store -------------------------------------------------------------------------------


def _transact(conn: psycopg.Connection[Any], step: _Tx) -> list[list[Any]]:
    """Run *step*'s statements between ``BEGIN`` and ``COMMIT`` in one pipeline; their rows."""
    _check_outside_transaction(conn)
    cursors: list[psycopg.Cursor[Any]] = []
    try:
        try:
            with conn.pipeline() if _PIPELINE else contextlib.nullcontext():
                conn.execute("BEGIN")
                for one in step.steps:
                    cursor = conn.cursor(row_factory=tuple_row)
                    cursors.append(cursor)
                    cursor.execute(one.query, one.params)
                conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return [cur.fetchall() if _has_rows(cur) else [] for cur in cursors]
    finally:
        for cursor in cursors:
            cursor.close()


class _SyncStore:
    """What the sync stores share: one connection, opened on first use and after a break.

    The connection is in autocommit mode and guarded by a :class:`threading.RLock`; the
    subclass's tables are created (and their version checked) once, on the first call.
    Operations are generators of statements (:data:`_Op`) that :meth:`_run` drives.
    """

    def __init__(self, connection: str | psycopg.Connection[Any], table_prefix: str) -> None:
        self.table_prefix = _check_prefix(table_prefix)
        self._lock = threading.RLock()
        self._ready = False
        self._closed = False
        self._conn: psycopg.Connection[Any] | None
        if isinstance(connection, str):
            self._conninfo = connection
            self._conn, self._owned = None, True
        else:
            _check_autocommit(connection)
            self._conninfo = _reconnect_args(connection)
            self._conn, self._owned = connection, False

    def _schema(self) -> _Op[None]:
        """Create the store's tables if needed and check their version."""
        raise NotImplementedError

    def _connection(self) -> psycopg.Connection[Any]:
        """The live connection: a new one after a break; the schema checked once."""
        if self._closed:
            raise _closed(repr(self))
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None and self._owned:
                conn.close()
            self._conn = None
            conn = psycopg.Connection.connect(self._conninfo, autocommit=True)
            self._conn, self._owned = conn, True
        if not self._ready:
            self._drive(conn, self._schema())
            self._ready = True
        return conn

    @staticmethod
    def _drive(conn: psycopg.Connection[Any], op: _Op[_T]) -> _T:
        """Run the statements *op* yields on *conn*, feeding each one's rows back."""
        answer: Any = None
        try:
            while True:
                step = op.send(answer)
                if isinstance(step, _Tx):
                    answer = _transact(conn, step)
                    continue
                with conn.cursor(row_factory=tuple_row) as cur:
                    if isinstance(step, _One):
                        cur.execute(step.query, step.params)
                        answer = cur.fetchall() if _has_rows(cur) else []
                    else:
                        cur.executemany(step.query, step.params, returning=True)
                        answer = [cur.fetchall()]
                        while cur.nextset():
                            answer.append(cur.fetchall())
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _run(self, operation: str, op: _Op[_T]) -> _T:
        with self._lock:
            try:
                return self._drive(self._connection(), op)
            except _DRIVER_ERRORS as exc:
                raise _error(f"{self!r}.{operation}", exc) from exc

    def close(self) -> None:
        """Close the store's own connection (not a borrowed one); the store is done."""
        with self._lock:
            self._closed = True
            if self._conn is not None and self._owned:
                self._conn.close()
            self._conn = None


@final
class PostgresIdempotencyStore(_SyncStore):
    """An :class:`~invresilience.typing.IdempotencyStore` in PostgreSQL.

    Thread-safe: one connection, one call at a time. The module documentation describes the
    tables, the clock and what happens when the connection breaks.

    Args:
        connection: A conninfo string or URL (the store connects on first use and owns the
            connection), or a :class:`psycopg.Connection` in autocommit mode (borrowed:
            :meth:`close` leaves it open).
        namespace: Keeps this store's keys apart from other namespaces in the same table
            (1 to 100 letters, digits or ``_.:-``).
        table_prefix: Names the tables (``{prefix}_idempotency``, ``{prefix}_schema``):
            an SQL identifier of at most 41 characters.

    Raises:
        ConfigurationError: An argument is invalid, or *connection* is not in autocommit mode.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        connection: str | psycopg.Connection[Any],
        /,
        *,
        namespace: str = "default",
        table_prefix: str = "invresilience",
    ) -> None:
        self.namespace = check_namespace("namespace", namespace)
        super().__init__(connection, table_prefix)
        self._q = _statements(table_prefix)

    def __repr__(self) -> str:
        return (
            f"PostgresIdempotencyStore(namespace={self.namespace!r}, "
            f"table_prefix={self.table_prefix!r})"
        )

    def _schema(self) -> _Op[None]:
        return _setup(
            self._q.setup, self._q.version, f"{self.table_prefix}_idempotency", SCHEMA_VERSION
        )

    def claim(self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL) -> Claim:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim`; one round trip."""
        check_claim_args(key, fingerprint, lease, ttl)
        return self._run("claim", _claim(self._q, self.namespace, key, fingerprint, lease, ttl))

    def claim_many(
        self, items: Sequence[tuple[str, str]], *, lease: float, ttl: float = DEFAULT_TTL
    ) -> list[Claim]:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim_many`; one pipeline."""
        for key, fingerprint in items:
            check_claim_args(key, fingerprint, lease, ttl)
        if not items:
            return []
        return self._run("claim_many", _claim_many(self._q, self.namespace, items, lease, ttl))

    def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete`."""
        check_lease(lease)
        check_ttl(ttl)
        params = _complete_params(self.namespace, lease, result, ttl)
        self._run("complete", _on_lease(self._q.complete, params, lease))

    def complete_many(
        self, items: Sequence[tuple[Lease, bytes]], *, ttl: float = DEFAULT_TTL
    ) -> list[bool]:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete_many`; one pipeline."""
        check_ttl(ttl)
        for lease, _ in items:
            check_lease(lease)
        if not items:
            return []
        return self._run("complete_many", _complete_many(self._q, self.namespace, items, ttl))

    def release(self, lease: Lease) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.release`."""
        check_lease(lease)
        params = _lease_params(self.namespace, lease)
        self._run("release", _on_lease(self._q.release, params, lease))

    def extend(self, lease: Lease, seconds: float) -> Lease:
        """See :meth:`~invresilience.typing.IdempotencyStore.extend`."""
        check_lease(lease)
        check_ttl(seconds, field="seconds")
        params = _lease_params(self.namespace, lease, seconds=float(seconds))
        self._run("extend", _on_lease(self._q.extend, params, lease))
        return _extended_lease(lease, seconds)

    def purge_expired(self, limit: int = 1000) -> int:
        """See :meth:`~invresilience.typing.IdempotencyStore.purge_expired`; this namespace only."""
        check_limit(limit)
        return self._run("purge_expired", _purge(self._q, self.namespace, limit))

    @contextlib.contextmanager
    def transaction(self, lease: Lease) -> Iterator[PostgresTransaction]:
        """A database transaction that commits your writes and the completion together.

        Begins a transaction on the store's connection and locks the lease's record
        (``SELECT ... FOR UPDATE``) until it ends, so no claim can take it over meanwhile.
        Write through :attr:`PostgresTransaction.connection` and call
        :meth:`PostgresTransaction.complete`; when the block ends normally, both commit
        at once::

            with store.transaction(lease) as tx:
                tx.connection.execute("UPDATE stock SET qty = qty - 1 WHERE sku = %s", [sku])
                tx.complete(b"reserved")

        The store is held for the whole block: other threads' calls wait, and calls on
        the store from inside the block join the transaction. Transactions do not nest.

        Args:
            lease: The lease a claim returned.

        Raises:
            LeaseLostError: On entry, when the lease no longer holds.
            IdempotencyError: The block ended without ``complete()`` (everything was rolled
                back), or the store is already in a transaction.
            BackendError: The transaction could not begin or commit.

        .. versionadded:: 0.1.0
        """
        check_lease(lease)
        where = f"{self!r}.transaction"
        with self._lock:
            try:
                conn = self._connection()
                _check_idle(conn, lease)
                conn.execute("BEGIN")
                try:
                    self._drive(conn, _lock(self._q, self.namespace, lease))
                except BaseException:
                    _rollback(conn)
                    raise
            except psycopg.Error as exc:
                raise _error(where, exc) from exc
            tx = PostgresTransaction(self, conn, lease)
            try:
                yield tx
            except BaseException:
                _rollback(conn)
                raise
            if not tx.completed:
                _rollback(conn)
                raise _no_complete(lease)
            try:
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                _rollback(conn)
                raise _error(where, exc) from exc


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """Roll back, quietly when the connection is already gone (the server rolls it back)."""
    with contextlib.suppress(psycopg.Error):
        conn.execute("ROLLBACK")


@final
class PostgresTransaction:
    """The transaction :meth:`PostgresIdempotencyStore.transaction` opened for one lease.

    Attributes:
        connection: The store's connection, inside the transaction: run your writes on it.
        lease: The lease being completed.
        completed: Whether :meth:`complete` was called.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, store: PostgresIdempotencyStore, connection: psycopg.Connection[Any], lease: Lease
    ) -> None:
        self._store = store
        self.connection = connection
        self.lease = lease
        self.completed = False

    def __repr__(self) -> str:
        return f"PostgresTransaction(key={self.lease.key!r}, completed={self.completed})"

    def complete(self, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """Write the completion in the transaction; it commits with the block.

        Args:
            result: The work's result, as stored bytes.
            ttl: Seconds to keep the completed record.

        Raises:
            IdempotencyError: ``complete()`` was already called.
            LeaseLostError: The record expired meanwhile.
            BackendError: The write failed.

        .. versionadded:: 0.1.0
        """
        check_ttl(ttl)
        if self.completed:
            raise IdempotencyError(self.lease.key, "complete() was already called")
        store = self._store
        params = _complete_params(store.namespace, self.lease, result, ttl)
        try:
            store._drive(self.connection, _on_lease(store._q.complete, params, self.lease))
        except psycopg.Error as exc:
            raise _error(f"{store!r}.transaction.complete", exc) from exc
        self.completed = True


# -- the async store ------------------------------------------------------------------------------


async def _atransact(conn: psycopg.AsyncConnection[Any], step: _Tx) -> list[list[Any]]:
    """The async twin of :func:`_transact`."""
    _check_outside_transaction(conn)
    cursors: list[psycopg.AsyncCursor[Any]] = []
    try:
        try:
            async with conn.pipeline() if _PIPELINE else contextlib.nullcontext():
                await conn.execute("BEGIN")
                for one in step.steps:
                    cursor = conn.cursor(row_factory=tuple_row)
                    cursors.append(cursor)
                    await cursor.execute(one.query, one.params)
                await conn.execute("COMMIT")
        except BaseException:
            await _arollback(conn)
            raise
        return [await cur.fetchall() if _has_rows(cur) else [] for cur in cursors]
    finally:
        for cursor in cursors:
            await cursor.close()


class _AsyncStore:
    """The async twin of :class:`_SyncStore`: an :class:`asyncio.Lock`, held by one task at a
    time (re-entered by the task holding it, inside a transaction)."""

    def __init__(self, connection: str | psycopg.AsyncConnection[Any], table_prefix: str) -> None:
        self.table_prefix = _check_prefix(table_prefix)
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._ready = False
        self._closed = False
        self._conn: psycopg.AsyncConnection[Any] | None
        if isinstance(connection, str):
            self._conninfo = connection
            self._conn, self._owned = None, True
        else:
            _check_autocommit(connection)
            self._conninfo = _reconnect_args(connection)
            self._conn, self._owned = connection, False

    def _schema(self) -> _Op[None]:
        """Create the store's tables if needed and check their version."""
        raise NotImplementedError

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        """The live connection: a new one after a break; the schema checked once."""
        if self._closed:
            raise _closed(repr(self))
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None and self._owned:
                await conn.close()
            self._conn = None
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            self._conn, self._owned = conn, True
        if not self._ready:
            await self._drive(conn, self._schema())
            self._ready = True
        return conn

    @staticmethod
    async def _drive(conn: psycopg.AsyncConnection[Any], op: _Op[_T]) -> _T:
        """Run the statements *op* yields on *conn*, feeding each one's rows back."""
        answer: Any = None
        try:
            while True:
                step = op.send(answer)
                if isinstance(step, _Tx):
                    answer = await _atransact(conn, step)
                    continue
                async with conn.cursor(row_factory=tuple_row) as cur:
                    if isinstance(step, _One):
                        await cur.execute(step.query, step.params)
                        answer = await cur.fetchall() if _has_rows(cur) else []
                    else:
                        await cur.executemany(step.query, step.params, returning=True)
                        answer = [await cur.fetchall()]
                        while cur.nextset():
                            answer.append(await cur.fetchall())
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """Hold the store, unless this task already does (inside a transaction)."""
        task = asyncio.current_task()
        if task is not None and task is self._owner:
            yield
            return
        async with self._lock:
            self._owner = task
            try:
                yield
            finally:
                self._owner = None

    async def _run(self, operation: str, op: _Op[_T]) -> _T:
        async with self._locked():
            try:
                return await self._drive(await self._connection(), op)
            except _DRIVER_ERRORS as exc:
                raise _error(f"{self!r}.{operation}", exc) from exc

    async def close(self) -> None:
        """Close the store's own connection (not a borrowed one); the store is done."""
        async with self._locked():
            self._closed = True
            if self._conn is not None and self._owned:
                await self._conn.close()
            self._conn = None


@final
class AsyncPostgresIdempotencyStore(_AsyncStore):
    """An :class:`~invresilience.typing.AsyncIdempotencyStore` in PostgreSQL.

    The async twin of :class:`PostgresIdempotencyStore`: the same tables, SQL and rules.
    Safe for concurrent tasks of one event loop (one call at a time on its connection).

    Args:
        connection: A conninfo string or URL (the store connects on its first call and
            owns the connection), or a :class:`psycopg.AsyncConnection` in autocommit mode
            (borrowed: :meth:`close` leaves it open).
        namespace: See :class:`PostgresIdempotencyStore`.
        table_prefix: See :class:`PostgresIdempotencyStore`.

    Raises:
        ConfigurationError: An argument is invalid, or *connection* is not in autocommit mode.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        connection: str | psycopg.AsyncConnection[Any],
        /,
        *,
        namespace: str = "default",
        table_prefix: str = "invresilience",
    ) -> None:
        self.namespace = check_namespace("namespace", namespace)
        super().__init__(connection, table_prefix)
        self._q = _statements(table_prefix)

    def __repr__(self) -> str:
        return (
            f"AsyncPostgresIdempotencyStore(namespace={self.namespace!r}, "
            f"table_prefix={self.table_prefix!r})"
        )

    def _schema(self) -> _Op[None]:
        return _setup(
            self._q.setup, self._q.version, f"{self.table_prefix}_idempotency", SCHEMA_VERSION
        )

    async def claim(
        self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL
    ) -> Claim:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim`; one round trip."""
        check_claim_args(key, fingerprint, lease, ttl)
        return await self._run(
            "claim", _claim(self._q, self.namespace, key, fingerprint, lease, ttl)
        )

    async def claim_many(
        self, items: Sequence[tuple[str, str]], *, lease: float, ttl: float = DEFAULT_TTL
    ) -> list[Claim]:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim_many`; one pipeline."""
        for key, fingerprint in items:
            check_claim_args(key, fingerprint, lease, ttl)
        if not items:
            return []
        return await self._run(
            "claim_many", _claim_many(self._q, self.namespace, items, lease, ttl)
        )

    async def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete`."""
        check_lease(lease)
        check_ttl(ttl)
        params = _complete_params(self.namespace, lease, result, ttl)
        await self._run("complete", _on_lease(self._q.complete, params, lease))

    async def complete_many(
        self, items: Sequence[tuple[Lease, bytes]], *, ttl: float = DEFAULT_TTL
    ) -> list[bool]:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete_many`; one pipeline."""
        check_ttl(ttl)
        for lease, _ in items:
            check_lease(lease)
        if not items:
            return []
        return await self._run("complete_many", _complete_many(self._q, self.namespace, items, ttl))

    async def release(self, lease: Lease) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.release`."""
        check_lease(lease)
        params = _lease_params(self.namespace, lease)
        await self._run("release", _on_lease(self._q.release, params, lease))

    async def extend(self, lease: Lease, seconds: float) -> Lease:
        """See :meth:`~invresilience.typing.IdempotencyStore.extend`."""
        check_lease(lease)
        check_ttl(seconds, field="seconds")
        params = _lease_params(self.namespace, lease, seconds=float(seconds))
        await self._run("extend", _on_lease(self._q.extend, params, lease))
        return _extended_lease(lease, seconds)

    async def purge_expired(self, limit: int = 1000) -> int:
        """See :meth:`~invresilience.typing.IdempotencyStore.purge_expired`; this namespace only."""
        check_limit(limit)
        return await self._run("purge_expired", _purge(self._q, self.namespace, limit))

    @contextlib.asynccontextmanager
    async def transaction(self, lease: Lease) -> AsyncIterator[AsyncPostgresTransaction]:
        """The async twin of :meth:`PostgresIdempotencyStore.transaction`.

        ::

            async with store.transaction(lease) as tx:
                await tx.connection.execute("UPDATE stock SET qty = qty - 1 WHERE sku = %s", [sku])
                await tx.complete(b"reserved")

        Other tasks' calls on the store wait for the block; the task running it may call
        the store, joining the transaction. Transactions do not nest.

        Raises:
            LeaseLostError: On entry, when the lease no longer holds.
            IdempotencyError: The block ended without ``complete()`` (everything was rolled
                back), or the store is already in a transaction.
            BackendError: The transaction could not begin or commit.

        .. versionadded:: 0.1.0
        """
        check_lease(lease)
        where = f"{self!r}.transaction"
        async with self._locked():
            try:
                conn = await self._connection()
                _check_idle(conn, lease)
                await conn.execute("BEGIN")
                try:
                    await self._drive(conn, _lock(self._q, self.namespace, lease))
                except BaseException:
                    await _arollback(conn)
                    raise
            except psycopg.Error as exc:
                raise _error(where, exc) from exc
            tx = AsyncPostgresTransaction(self, conn, lease)
            try:
                yield tx
            except BaseException:
                await _arollback(conn)
                raise
            if not tx.completed:
                await _arollback(conn)
                raise _no_complete(lease)
            try:
                await conn.execute("COMMIT")
            except psycopg.Error as exc:
                await _arollback(conn)
                raise _error(where, exc) from exc


async def _arollback(conn: psycopg.AsyncConnection[Any]) -> None:
    """Roll back, quietly when the connection is already gone (the server rolls it back)."""
    with contextlib.suppress(psycopg.Error):
        await conn.execute("ROLLBACK")


@final
class AsyncPostgresTransaction:
    """The transaction :meth:`AsyncPostgresIdempotencyStore.transaction` opened for one lease.

    Attributes:
        connection: The store's connection, inside the transaction: run your writes on it.
        lease: The lease being completed.
        completed: Whether :meth:`complete` was called.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        store: AsyncPostgresIdempotencyStore,
        connection: psycopg.AsyncConnection[Any],
        lease: Lease,
    ) -> None:
        self._store = store
        self.connection = connection
        self.lease = lease
        self.completed = False

    def __repr__(self) -> str:
        return f"AsyncPostgresTransaction(key={self.lease.key!r}, completed={self.completed})"

    async def complete(self, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """See :meth:`PostgresTransaction.complete`.

        .. versionadded:: 0.1.0
        """
        check_ttl(ttl)
        if self.completed:
            raise IdempotencyError(self.lease.key, "complete() was already called")
        store = self._store
        params = _complete_params(store.namespace, self.lease, result, ttl)
        try:
            await store._drive(self.connection, _on_lease(store._q.complete, params, self.lease))
        except psycopg.Error as exc:
            raise _error(f"{store!r}.transaction.complete", exc) from exc
        self.completed = True


# -- the dead-letter stores -----------------------------------------------------------------------


@final
class PostgresDeadLetterStore(_SyncStore):
    """A :class:`~invresilience.typing.DeadLetterStore` in PostgreSQL: the letters of one queue.

    Thread-safe: one connection, one call at a time. Any number of stores, in any number of
    processes, may share a queue: adds to it take turns on the queue's row, so sequences
    follow the commit order and ``max_letters`` holds exactly. The module documentation
    describes the tables and what happens when the connection breaks.

    Usually made by :meth:`PostgresBackend.dead_letter_queue`.

    Args:
        connection: A conninfo string or URL (the store connects on first use and owns the
            connection), or a :class:`psycopg.Connection` in autocommit mode, outside any
            transaction (borrowed: :meth:`close` leaves it open).
        queue: The queue's name (1 to 100 letters, digits or ``_.:-``).
        table_prefix: Names the tables (``{prefix}_dead_letters``,
            ``{prefix}_dead_letter_queues``, ``{prefix}_schema``): an SQL identifier of at
            most 41 characters.

    Raises:
        ConfigurationError: An argument is invalid, or *connection* is not in autocommit mode.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        connection: str | psycopg.Connection[Any],
        /,
        queue: str = "default",
        *,
        table_prefix: str = "invresilience",
    ) -> None:
        self.queue = check_namespace("queue", queue)
        super().__init__(connection, table_prefix)
        self._q = _dead_letter_statements(table_prefix)

    def __repr__(self) -> str:
        return f"PostgresDeadLetterStore({self.queue!r}, table_prefix={self.table_prefix!r})"

    def _schema(self) -> _Op[None]:
        return _setup(
            self._q.setup,
            self._q.version,
            f"{self.table_prefix}_dead_letters",
            DEAD_LETTER_SCHEMA_VERSION,
        )

    def add(
        self, letter: DeadLetter, *, max_letters: int | None = None, evict_oldest: bool = False
    ) -> Added:
        """See :meth:`~invresilience.typing.DeadLetterStore.add`; one transaction, one round trip.

        Raises:
            DeadLetterQueueFullError: The queue holds *max_letters* letters and
                *evict_oldest* is false.
            ConfigurationError: *letter* is not a letter of this queue, or *max_letters*
                is invalid.
            BackendError: PostgreSQL failed (:exc:`~invresilience.exceptions.BackendUnavailableError`
                when unreachable).

        .. versionadded:: 0.1.0
        """
        check_letter(letter, self.queue)
        check_max_letters(max_letters)
        return self._run("add", _add(self._q, letter, max_letters, evict_oldest))

    def get(self, letter_id: str) -> DeadLetter | None:
        """See :meth:`~invresilience.typing.DeadLetterStore.get`.

        .. versionadded:: 0.1.0
        """
        if check_letter_id(letter_id) is not None:
            return None
        return self._run("get", _get(self._q, self.queue, letter_id))

    def list(self, where: LetterFilter, *, after: int = 0, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`~invresilience.typing.DeadLetterStore.list`.

        .. versionadded:: 0.1.0
        """
        check_limit(limit)
        return self._run("list", _list(self._q, self.queue, where, after, limit))

    def count(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.count`.

        .. versionadded:: 0.1.0
        """
        return self._run("count", _count(self._q, self.queue, where, _COUNT))

    def stats(self) -> QueueStats:
        """See :meth:`~invresilience.typing.DeadLetterStore.stats`; one query.

        .. versionadded:: 0.1.0
        """
        return self._run("stats", _stats(self._q, self.queue))

    def replace(self, letter: DeadLetter) -> bool:
        """See :meth:`~invresilience.typing.DeadLetterStore.replace`.

        .. versionadded:: 0.1.0
        """
        check_letter(letter, self.queue)
        return self._run("replace", _replace(self._q, letter))

    def delete(self, letter_ids: Sequence[str]) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.delete`.

        .. versionadded:: 0.1.0
        """
        ids = _storable_ids(letter_ids)
        if not ids:
            return 0
        return self._run("delete", _delete(self._q, self.queue, ids))

    def purge(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.purge`; one statement.

        .. versionadded:: 0.1.0
        """
        return self._run("purge", _count(self._q, self.queue, where, _PURGE_LETTERS))


@final
class AsyncPostgresDeadLetterStore(_AsyncStore):
    """An :class:`~invresilience.typing.AsyncDeadLetterStore` in PostgreSQL.

    The async twin of :class:`PostgresDeadLetterStore`: the same tables, SQL and rules.
    Safe for concurrent tasks of one event loop (one call at a time on its connection).

    Args:
        connection: A conninfo string or URL (the store connects on its first call and
            owns the connection), or a :class:`psycopg.AsyncConnection` in autocommit mode,
            outside any transaction (borrowed: :meth:`close` leaves it open).
        queue: See :class:`PostgresDeadLetterStore`.
        table_prefix: See :class:`PostgresDeadLetterStore`.

    Raises:
        ConfigurationError: An argument is invalid, or *connection* is not in autocommit mode.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        connection: str | psycopg.AsyncConnection[Any],
        /,
        queue: str = "default",
        *,
        table_prefix: str = "invresilience",
    ) -> None:
        self.queue = check_namespace("queue", queue)
        super().__init__(connection, table_prefix)
        self._q = _dead_letter_statements(table_prefix)

    def __repr__(self) -> str:
        return f"AsyncPostgresDeadLetterStore({self.queue!r}, table_prefix={self.table_prefix!r})"

    def _schema(self) -> _Op[None]:
        return _setup(
            self._q.setup,
            self._q.version,
            f"{self.table_prefix}_dead_letters",
            DEAD_LETTER_SCHEMA_VERSION,
        )

    async def add(
        self, letter: DeadLetter, *, max_letters: int | None = None, evict_oldest: bool = False
    ) -> Added:
        """See :meth:`PostgresDeadLetterStore.add`.

        .. versionadded:: 0.1.0
        """
        check_letter(letter, self.queue)
        check_max_letters(max_letters)
        return await self._run("add", _add(self._q, letter, max_letters, evict_oldest))

    async def get(self, letter_id: str) -> DeadLetter | None:
        """See :meth:`~invresilience.typing.DeadLetterStore.get`.

        .. versionadded:: 0.1.0
        """
        if check_letter_id(letter_id) is not None:
            return None
        return await self._run("get", _get(self._q, self.queue, letter_id))

    async def list(
        self, where: LetterFilter, *, after: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """See :meth:`~invresilience.typing.DeadLetterStore.list`.

        .. versionadded:: 0.1.0
        """
        check_limit(limit)
        return await self._run("list", _list(self._q, self.queue, where, after, limit))

    async def count(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.count`.

        .. versionadded:: 0.1.0
        """
        return await self._run("count", _count(self._q, self.queue, where, _COUNT))

    async def stats(self) -> QueueStats:
        """See :meth:`~invresilience.typing.DeadLetterStore.stats`; one query.

        .. versionadded:: 0.1.0
        """
        return await self._run("stats", _stats(self._q, self.queue))

    async def replace(self, letter: DeadLetter) -> bool:
        """See :meth:`~invresilience.typing.DeadLetterStore.replace`.

        .. versionadded:: 0.1.0
        """
        check_letter(letter, self.queue)
        return await self._run("replace", _replace(self._q, letter))

    async def delete(self, letter_ids: Sequence[str]) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.delete`.

        .. versionadded:: 0.1.0
        """
        ids = _storable_ids(letter_ids)
        if not ids:
            return 0
        return await self._run("delete", _delete(self._q, self.queue, ids))

    async def purge(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.purge`; one statement.

        .. versionadded:: 0.1.0
        """
        return await self._run("purge", _count(self._q, self.queue, where, _PURGE_LETTERS))


# -- the backend ----------------------------------------------------------------------------------

# -- membership -----------------------------------------------------------------------------------


def _membership_step(
    where: str, group: str, op: MembershipOp, row: Sequence[Any]
) -> tuple[MembershipView | float, str | None]:
    """Apply *op* to the locked row's document at its server time."""
    stored, now = row
    return membership_step(where, group, op, stored, float(now))


def _membership_transact(
    conn: psycopg.Connection[Any],
    q: _MembershipStatements,
    group: str,
    op: MembershipOp,
    where: str,
) -> MembershipView | float:
    """Run *op* on *group* in one transaction on *conn* (the caller maps driver errors)."""
    _check_outside_transaction(conn, "a membership store")
    params = {"group": group, "state": GroupState(group).dumps()}
    try:
        with conn.pipeline() if _PIPELINE else contextlib.nullcontext():
            conn.execute("BEGIN")
            conn.execute(q.insert, params)
            row = conn.execute(q.lock, params).fetchone()
            assert row is not None  # the INSERT made the row, and rows are never deleted
            result, write = _membership_step(where, group, op, row)
            if write is not None:
                conn.execute(q.write, {"group": group, "state": write})
            conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return result


async def _amembership_transact(
    conn: psycopg.AsyncConnection[Any],
    q: _MembershipStatements,
    group: str,
    op: MembershipOp,
    where: str,
) -> MembershipView | float:
    """The async twin of :func:`_membership_transact`."""
    _check_outside_transaction(conn, "a membership store")
    params = {"group": group, "state": GroupState(group).dumps()}
    try:
        async with conn.pipeline() if _PIPELINE else contextlib.nullcontext():
            await conn.execute("BEGIN")
            await conn.execute(q.insert, params)
            row = await (await conn.execute(q.lock, params)).fetchone()
            assert row is not None  # the INSERT made the row, and rows are never deleted
            result, write = _membership_step(where, group, op, row)
            if write is not None:
                await conn.execute(q.write, {"group": group, "state": write})
            await conn.execute("COMMIT")
    except BaseException:
        await _arollback(conn)
        raise
    return result


@final
class PostgresMembership(_SyncStore):
    """A :class:`~invresilience.typing.Membership` in PostgreSQL: one group, shared by every process.

    The group is a row of ``{prefix}_membership`` holding its
    :class:`~invresilience._core.membership.GroupState` as JSON; each operation locks the
    row, applies the operation at the server's ``clock_timestamp()`` and writes the row
    back, in one transaction (the module documentation describes it). Leases are measured
    on the server's clock. Thread-safe: one connection, one call at a time.

    Usually made by :meth:`PostgresBackend.membership`.

    Args:
        connection: A conninfo string or URL (the store connects on first use and owns the
            connection), or a :class:`psycopg.Connection` in autocommit mode, outside any
            transaction (borrowed: :meth:`close` leaves it open).
        group: The group's name (1 to 100 letters, digits or ``_.:-``).
        table_prefix: Names the tables (``{prefix}_membership``, ``{prefix}_schema``): an
            SQL identifier of at most 41 characters.

    Raises:
        ConfigurationError: An argument is invalid, or *connection* is not in autocommit mode.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        connection: str | psycopg.Connection[Any],
        /,
        group: str = "default",
        *,
        table_prefix: str = "invresilience",
    ) -> None:
        self._group = check_namespace("group", group)
        super().__init__(connection, table_prefix)
        self._q = _membership_statements(table_prefix)

    def __repr__(self) -> str:
        return f"PostgresMembership({self._group!r}, table_prefix={self.table_prefix!r})"

    @property
    def group(self) -> str:
        """The group's name."""
        return self._group

    def _schema(self) -> _Op[None]:
        return _setup(
            self._q.setup,
            self._q.version,
            f"{self.table_prefix}_membership",
            MEMBERSHIP_SCHEMA_VERSION,
        )

    def _apply(self, operation: str, op: MembershipOp) -> MembershipView:
        check_membership_op(op)
        where = f"{self!r}.{operation}"
        with self._lock:
            try:
                result = _membership_transact(self._connection(), self._q, self._group, op, where)
            except _DRIVER_ERRORS as exc:
                raise _error(where, exc) from exc
        return membership_result(self._group, op, result)

    def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.join`.

        Raises:
            MembershipConflictError: *member* is live under another token.
            ConfigurationError: An argument is invalid.
            BackendUnavailableError: PostgreSQL could not be reached.
            BackendError: PostgreSQL failed otherwise, the stored document is malformed,
                or the store is closed.
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


@final
class AsyncPostgresMembership(_AsyncStore):
    """An :class:`~invresilience.typing.AsyncMembership` in PostgreSQL.

    The async twin of :class:`PostgresMembership`: the same table, SQL and rules.
    Safe for concurrent tasks of one event loop (one call at a time on its connection).

    Args:
        connection: A conninfo string or URL (the store connects on its first call and
            owns the connection), or a :class:`psycopg.AsyncConnection` in autocommit mode,
            outside any transaction (borrowed: :meth:`close` leaves it open).
        group: See :class:`PostgresMembership`.
        table_prefix: See :class:`PostgresMembership`.

    Raises:
        ConfigurationError: An argument is invalid, or *connection* is not in autocommit mode.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        connection: str | psycopg.AsyncConnection[Any],
        /,
        group: str = "default",
        *,
        table_prefix: str = "invresilience",
    ) -> None:
        self._group = check_namespace("group", group)
        super().__init__(connection, table_prefix)
        self._q = _membership_statements(table_prefix)

    def __repr__(self) -> str:
        return f"AsyncPostgresMembership({self._group!r}, table_prefix={self.table_prefix!r})"

    @property
    def group(self) -> str:
        """The group's name."""
        return self._group

    def _schema(self) -> _Op[None]:
        return _setup(
            self._q.setup,
            self._q.version,
            f"{self.table_prefix}_membership",
            MEMBERSHIP_SCHEMA_VERSION,
        )

    async def _apply(self, operation: str, op: MembershipOp) -> MembershipView:
        check_membership_op(op)
        where = f"{self!r}.{operation}"
        async with self._locked():
            try:
                conn = await self._connection()
                result = await _amembership_transact(conn, self._q, self._group, op, where)
            except _DRIVER_ERRORS as exc:
                raise _error(where, exc) from exc
        return membership_result(self._group, op, result)

    async def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """See :meth:`PostgresMembership.join`."""
        return await self._apply(
            "join",
            MembershipOp(kind="join", member=member, token=token, weight=weight, lease=lease),
        )

    async def heartbeat(
        self, member: str, token: str, *, lease: float, acked: int
    ) -> MembershipView:
        """See :meth:`PostgresMembership.heartbeat`."""
        return await self._apply(
            "heartbeat",
            MembershipOp(kind="heartbeat", member=member, token=token, lease=lease, acked=acked),
        )

    async def leave(self, member: str, token: str) -> MembershipView:
        """See :meth:`PostgresMembership.leave`."""
        return await self._apply("leave", MembershipOp(kind="leave", member=member, token=token))

    async def view(self) -> MembershipView:
        """See :meth:`PostgresMembership.view`."""
        return await self._apply("view", MembershipOp(kind="view"))


_URL_PASSWORD = re.compile(r"(?<=:)[^:@/]*(?=@)")
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def _redact(conninfo: str) -> str:
    """*conninfo* with any password replaced by ``***`` (URL or ``key=value`` form)."""
    if "://" not in conninfo:
        return _KV_PASSWORD.sub(r"\1***", conninfo)
    parts = urlsplit(conninfo)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name == "password" for name, _ in pairs):
            pairs = [(n, "***" if n == "password" else v) for n, v in pairs]
            query = urlencode(pairs, safe="*")
    return parts._replace(netloc=f"{userinfo}{at}{host}", query=query).geturl()


@final
class PostgresBackend:
    """PostgreSQL stores from one connection string, closed together.

    Each store gets a connection of its own, opened on its first call::

        with PostgresBackend.from_url("postgresql://app@db/app") as backend:
            guard = Idempotency(backend.idempotency_store("orders"), ttl=86400, lease=30.0)
            dlq = backend.dead_letter_queue("orders", max_letters=10_000)

    Attributes:
        url: The conninfo string or URL it was made with (also ``conninfo``).

    Args:
        conninfo: A libpq conninfo string or ``postgresql://`` URL.
        table_prefix: Names the tables; see :class:`PostgresIdempotencyStore`.

    Raises:
        ConfigurationError: *table_prefix* is invalid.

    .. versionadded:: 0.1.0
    """

    def __init__(self, conninfo: str, *, table_prefix: str = "invresilience") -> None:
        if not isinstance(conninfo, str):
            raise ConfigurationError("conninfo", conninfo, "must be a conninfo string or URL")
        self.conninfo = self.url = conninfo
        self.table_prefix = _check_prefix(table_prefix)
        self._stores: list[_SyncStore] = []
        self._async_stores: list[_AsyncStore] = []

    @classmethod
    def from_url(cls, url: str, *, table_prefix: str = "invresilience") -> Self:
        """A backend for a ``postgresql://`` or ``postgres://`` URL.

        Raises:
            ConfigurationError: *url* has another scheme.

        .. versionadded:: 0.1.0
        """
        if urlsplit(url).scheme not in {"postgresql", "postgres"}:
            raise ConfigurationError(
                "url", _redact(url), "must be a postgresql:// or postgres:// URL"
            )
        return cls(url, table_prefix=table_prefix)

    def __repr__(self) -> str:
        return f"PostgresBackend({_redact(self.conninfo)!r})"

    def idempotency_store(self, namespace: str = "default") -> PostgresIdempotencyStore:
        """A new sync store for *namespace*, closed by :meth:`close`.

        .. versionadded:: 0.1.0
        """
        store = PostgresIdempotencyStore(
            self.conninfo, namespace=namespace, table_prefix=self.table_prefix
        )
        self._stores.append(store)
        return store

    def async_idempotency_store(self, namespace: str = "default") -> AsyncPostgresIdempotencyStore:
        """A new async store for *namespace* (it connects on its first call), closed by :meth:`aclose`.

        .. versionadded:: 0.1.0
        """
        store = AsyncPostgresIdempotencyStore(
            self.conninfo, namespace=namespace, table_prefix=self.table_prefix
        )
        self._async_stores.append(store)
        return store

    def dead_letter_store(self, queue: str) -> PostgresDeadLetterStore:
        """A new sync store for dead-letter queue *queue*, closed by :meth:`close`.

        Every store of one queue (in any process) sees the same letters.

        .. versionadded:: 0.1.0
        """
        store = PostgresDeadLetterStore(self.conninfo, queue, table_prefix=self.table_prefix)
        self._stores.append(store)
        return store

    def async_dead_letter_store(self, queue: str) -> AsyncPostgresDeadLetterStore:
        """A new async store for dead-letter queue *queue* (it connects on its first call),
        closed by :meth:`aclose`.

        .. versionadded:: 0.1.0
        """
        store = AsyncPostgresDeadLetterStore(self.conninfo, queue, table_prefix=self.table_prefix)
        self._async_stores.append(store)
        return store

    def membership(self, group: str) -> PostgresMembership:
        """A new sync store for membership group *group*, closed by :meth:`close`.

        Every store of one group (in any process) sees the same members.

        Raises:
            ConfigurationError: *group* is not 1 to 100 letters, digits or ``_.:-``.

        .. versionadded:: 0.1.0
        """
        store = PostgresMembership(
            self.conninfo, check_namespace("group", group), table_prefix=self.table_prefix
        )
        self._stores.append(store)
        return store

    def async_membership(self, group: str) -> AsyncPostgresMembership:
        """A new async store for membership group *group* (it connects on its first call),
        closed by :meth:`aclose`.

        Raises:
            ConfigurationError: *group* is invalid.

        .. versionadded:: 0.1.0
        """
        store = AsyncPostgresMembership(
            self.conninfo, check_namespace("group", group), table_prefix=self.table_prefix
        )
        self._async_stores.append(store)
        return store

    def dead_letter_queue(self, queue: str, **options: Any) -> DeadLetterQueue:
        """A :class:`~invresilience.DeadLetterQueue` over a new :meth:`dead_letter_store`.

        *options* (``codec``, ``redact``, ``max_letters``, ``when_full``, ...) go to its
        constructor. Closing the queue closes its store; :meth:`close` does too.

        .. versionadded:: 0.1.0
        """
        return DeadLetterQueue(self.dead_letter_store(queue), **options)

    def async_dead_letter_queue(self, queue: str, **options: Any) -> AsyncDeadLetterQueue:
        """An :class:`~invresilience.AsyncDeadLetterQueue` over a new
        :meth:`async_dead_letter_store`; *options* go to its constructor.

        .. versionadded:: 0.1.0
        """
        return AsyncDeadLetterQueue(self.async_dead_letter_store(queue), **options)

    def close(self) -> None:
        """Close every sync store this backend made.

        .. versionadded:: 0.1.0
        """
        stores, self._stores = self._stores, []
        for store in stores:
            store.close()

    async def aclose(self) -> None:
        """Close every store this backend made, async and sync.

        .. versionadded:: 0.1.0
        """
        stores, self._async_stores = self._async_stores, []
        for store in stores:
            await store.close()
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
