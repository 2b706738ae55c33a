"""Idempotency: a claim and its completion per key, on every backend, beside the floor.

Per backend (memory, SQLite, Redis, PostgreSQL), all sync, three scenarios:

``<backend>: claim + complete``
    a fresh key per call (made before the timed loop): ``store.claim(key, fp, lease=30)``
    then ``store.complete(lease, b"result")``, what :meth:`~invresilience.Idempotency.run`
    does on a first execution; also ``guard.run(key, fn, payload)`` with and without the
    heartbeat. The baseline is **the floor**: the same round trips written by hand on the
    raw driver (see :data:`FLOORS`); the budget is ours ≤ 1.3 × the floor. On Redis,
    ``aws-lambda-powertools``' ``idempotent_function`` runs beside it for a first execution.
``<backend>: replay``
    the claim of a completed key (:class:`~invresilience.typing.Completed` with the
    result), and ``guard.run`` replaying it; the floor is one read of the record by hand
    (one ``GET`` / ``SELECT``). Powertools replays on Redis too.
``<backend>: batch of 100, per key``
    ``claim_many`` + ``complete_many`` of 100 fresh keys beside the per-key loop of
    ``claim`` + ``complete`` over the same 100 (the baseline), and the batch written by hand.
    Figures are per key (``bench/run.py`` divides by 100).

Servers: ``INVRES_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) and
``INVRES_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``), as for the
tests; an unreachable server skips its backend (the verdict says so). Every key, row and
table is unique to the run and deleted at the end. Run it through ``bench/run.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from _harness import BASELINE, Case, Gap, Mode, Result

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from contextlib import AbstractContextManager

    from invresilience.typing import IdempotencyStore

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

TITLE = "Idempotency: claim + complete per key"
OURS = "invresilience"
POWERTOOLS = "aws-lambda-powertools"
LIBRARIES = (OURS, POWERTOOLS, "redis", "psycopg")
MODE: Mode = "sync"

REDIS_URL = os.environ.get("INVRES_REDIS_URL") or "redis://127.0.0.1:6379/0"
POSTGRES_URL = os.environ.get("INVRES_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"

BACKENDS = ("memory", "sqlite", "redis", "postgres")
LEASE = 30.0
TTL = 3600.0  # seconds: every record outlives the run, and is deleted after it
TTL_MS = int(TTL * 1000)
FP = "sha256:" + "ab" * 32  # a fingerprint of the usual length
RESULT = b'{"ok":true}'
VALUE = {"ok": True}  # what guard.run's function and Powertools' function return
BATCH = 100
RUN_ID = secrets.token_hex(4)
NAMESPACE = f"bench-{RUN_ID}"

FLOOR_LABEL = "by hand (floor)"
GUARD = f"{OURS} (guard.run)"
GUARD_NO_BEAT = f"{OURS} (guard.run, heartbeat=False)"
FENCED = "by hand, fenced: SET NX PX + EVAL check-and-set"
BY_HAND_BATCH = "by hand, batched"


def claim_complete(backend: str) -> str:
    return f"{backend}: claim + complete"


def replay(backend: str) -> str:
    return f"{backend}: replay"


def batch(backend: str) -> str:
    return f"{backend}: batch of {BATCH}, per key"


#: What each floor is, exactly: the minimum a hand-written claim + complete costs.
FLOORS = {
    "memory": "a dict under a threading.Lock: insert if absent, then overwrite if the token matches",
    "sqlite": (
        "BEGIN IMMEDIATE; INSERT OR IGNORE; COMMIT, then an autocommit UPDATE ... WHERE token = ?"
        " (WAL, synchronous=NORMAL, a table of the same shape in the same file)"
    ),
    "redis": "SET key value NX PX, then SET key value XX PX: two plain commands, two round trips",
    "postgres": (
        "INSERT ... ON CONFLICT DO NOTHING RETURNING, then UPDATE ... WHERE token = ... RETURNING"
        " (autocommit, a table of the same shape)"
    ),
}
REPLAY_FLOORS = {
    "memory": "dict.get under the lock",
    "sqlite": "one SELECT",
    "redis": "one GET",
    "postgres": "one SELECT",
}
BATCH_FLOORS = {
    "memory": "one lock for the 100 inserts, one for the 100 updates",
    "sqlite": "two BEGIN IMMEDIATE transactions of 100 statements (executemany)",
    "redis": "two pipelines of 100 SET (NX PX, then XX PX)",
    "postgres": "two executemany of 100 statements (pipelined by psycopg)",
}

BASELINE_LABELS = {
    **{claim_complete(b): f"{FLOOR_LABEL}: {FLOORS[b].split(' (')[0]}" for b in BACKENDS},
    **{replay(b): f"{FLOOR_LABEL}: {REPLAY_FLOORS[b]}" for b in BACKENDS},
    **{batch(b): f"{OURS}, claim + complete per key (baseline)" for b in BACKENDS},
}
#: Scenarios whose timed call does several keys: run.py divides their figures by this.
PER_ITEM = {batch(b): BATCH for b in BACKENDS}

NOTES = (
    (
        "Every call uses a fresh key, made before its timed loop; records live 1 h (ttl=3600) and"
        " leases 30 s. The result stored is 11 bytes. All rows are sync."
    ),
    (
        "The Redis floor is two plain SETs: the least two round trips can cost. It is not a"
        " complete implementation (the completion is not fenced: a worker whose claim ran out"
        " and was taken over would overwrite the new owner's record); the fenced row, SET NX PX"
        " then a 1-line check-and-set script, is the cheapest correct one written by hand."
    ),
    (
        "Powertools (`idempotent_function` with `CachePersistenceLayer`, default settings besides"
        " `event_key_jmespath`, outside Lambda) makes 2 round trips on a first execution"
        " (SET NX EX, SET EX) and 3 on a replay (SET NX, GET, GET). Outside Lambda it has no"
        " in-progress expiry: a worker that dies mid-call blocks the key until the record's TTL."
        " It does not check the payload unless `payload_validation_jmespath` is set; invresilience"
        " always checks its fingerprint."
    ),
    (
        "guard.run rows include what the guard adds to the store calls: the fingerprint of the"
        " arguments (canonical JSON + SHA-256), JSON encoding of the result (decoding on a"
        " replay) and, by default, registering the call with the heartbeat thread."
    ),
)

#: Rows that could not be timed; filled by :func:`build_cases` (Powertools not installed).
GAPS: list[Gap] = []

# Server-side checks and cleanups registered while building, run by check_cases / teardown.
_checks: dict[Case, Callable[[], str | None]] = {}
_teardowns: list[Callable[[], None]] = []
_unreachable: dict[str, str] = {}


def _anchor(module: str) -> Any:
    """Import a module whose types mypy need not know."""
    return importlib.import_module(module)


def teardown() -> None:
    """Delete every key, row and table of the run, and close the connections."""
    while _teardowns:
        with contextlib.suppress(Exception):
            _teardowns.pop()()


# -- fresh keys --------------------------------------------------------------------------------


class Keys:
    """Fresh keys for one case, made before each timed loop (outside the timing)."""

    MIN_POOL = 20_000

    def __init__(self, prefix: str, per_call: int = 1) -> None:
        self.prefix = prefix
        self.per_call = per_call
        self._counter = itertools.count()
        self._pool: list[str] = []

    def refill(self, calls: int) -> None:
        need = max(self.MIN_POOL, calls * 6 // 5 + 10) * self.per_call - len(self._pool)
        if need > 0:
            prefix, counter = self.prefix, self._counter
            self._pool.extend([f"{prefix}{next(counter)}" for _ in range(need)])

    def take(self) -> str:
        try:
            return self._pool.pop()
        except IndexError:  # a calibration loop outgrew the pool: make one more here
            return f"{self.prefix}{next(self._counter)}"

    def take_many(self, n: int) -> list[str]:
        pool = self._pool
        if len(pool) < n:
            self.refill(n)
        keys = pool[-n:]
        del pool[-n:]
        return keys

    def peek(self, n: int = 1) -> list[str]:
        """The next *n* keys :meth:`take` / :meth:`take_many` will hand out."""
        if len(self._pool) < n:
            self.refill(n)
        return self._pool[-n:]


def _fresh(keys: Keys, case: Case) -> Callable[[], AbstractContextManager[object]]:
    @contextlib.contextmanager
    def context() -> Iterator[None]:
        keys.refill(case.loops)
        yield

    return context


# -- what a backend provides to build its cases ------------------------------------------------


@dataclass
class Hand:
    """The floor written by hand on one backend's raw driver."""

    claim: Callable[[str, str], str | None]  # (key, fingerprint) -> the token, None if taken
    complete: Callable[[str, str, bytes], bool]  # (key, token, result) -> stored
    read: Callable[[str], bytes | None]  # the completed result, None otherwise
    claim_many: Callable[[list[str], str], list[str | None]]
    complete_many: Callable[[list[tuple[str, str]], bytes], int]  # -> how many were stored


@dataclass
class Backend:
    name: str
    store: IdempotencyStore
    hand: Hand
    fenced: Callable[[str, str, bytes], bool] | None = None  # Redis: check-and-set by hand


def _memory() -> Backend:
    import invresilience as ir

    backend = ir.open_backend("memory://")
    _teardowns.append(backend.close)
    records: dict[str, tuple[Any, ...]] = {}
    lock = threading.Lock()
    wall = time.time

    def claim(key: str, fp: str) -> str | None:
        token = secrets.token_hex(16)
        now = wall()
        with lock:
            if key in records:
                return None
            records[key] = ("pending", fp, token, now + LEASE, now + TTL)
        return token

    def complete(key: str, token: str, result: bytes) -> bool:
        now = wall()
        with lock:
            record = records.get(key)
            if record is None or record[2] != token:
                return False
            records[key] = ("completed", record[1], token, result, now + TTL)
        return True

    def read(key: str) -> bytes | None:
        with lock:
            record = records.get(key)
        return record[3] if record is not None and record[0] == "completed" else None

    def claim_many(keys: list[str], fp: str) -> list[str | None]:
        now = wall()
        tokens: list[str | None] = []
        with lock:
            for key in keys:
                if key in records:
                    tokens.append(None)
                    continue
                token = secrets.token_hex(16)
                records[key] = ("pending", fp, token, now + LEASE, now + TTL)
                tokens.append(token)
        return tokens

    def complete_many(items: list[tuple[str, str]], result: bytes) -> int:
        now = wall()
        done = 0
        with lock:
            for key, token in items:
                record = records.get(key)
                if record is not None and record[2] == token:
                    records[key] = ("completed", record[1], token, result, now + TTL)
                    done += 1
        return done

    return Backend(
        "memory",
        backend.idempotency_store(NAMESPACE),
        Hand(claim, complete, read, claim_many, complete_many),
    )


_COLUMNS = (
    "namespace TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, state TEXT NOT NULL,"
    " fence BIGINT NOT NULL, token TEXT NOT NULL, lease_until {real} NOT NULL,"
    " expires_at {real} NOT NULL, result {blob}, PRIMARY KEY (namespace, key)"
)


def _sqlite() -> Backend:
    import invresilience as ir

    directory = tempfile.mkdtemp(prefix="invres-bench-")
    _teardowns.append(lambda: shutil.rmtree(directory, ignore_errors=True))
    path = os.path.join(directory, "bench.db")
    backend = ir.open_backend(f"sqlite:///{path}")
    _teardowns.append(backend.close)
    store = backend.idempotency_store(NAMESPACE)

    # The same connection settings as the store's: autocommit (explicit BEGIN), WAL, NORMAL.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    _teardowns.append(conn.close)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    table = "bench_floor"
    conn.execute(f"CREATE TABLE {table} ({_COLUMNS.format(real='REAL', blob='BLOB')})")
    conn.execute(f"CREATE INDEX {table}_expires ON {table} (namespace, expires_at)")
    execute = conn.execute
    insert = (
        f"INSERT OR IGNORE INTO {table} (namespace, key, fingerprint, state, fence, token,"
        " lease_until, expires_at, result) VALUES (?, ?, ?, 'pending', 1, ?, ?, ?, NULL)"
    )
    update = (
        f"UPDATE {table} SET state = 'completed', result = ?, lease_until = 0, expires_at = ?"
        " WHERE namespace = ? AND key = ? AND token = ? AND state = 'pending'"
    )
    select = f"SELECT state, result FROM {table} WHERE namespace = ? AND key = ?"
    wall = time.time

    def claim(key: str, fp: str) -> str | None:
        token = secrets.token_hex(16)
        now = wall()
        execute("BEGIN IMMEDIATE")
        try:
            cursor = execute(insert, (NAMESPACE, key, fp, token, now + LEASE, now + TTL))
            execute("COMMIT")
        except BaseException:
            execute("ROLLBACK")
            raise
        return token if cursor.rowcount == 1 else None

    def complete(key: str, token: str, result: bytes) -> bool:
        cursor = execute(update, (result, wall() + TTL, NAMESPACE, key, token))
        return cursor.rowcount == 1

    def read(key: str) -> bytes | None:
        row = execute(select, (NAMESPACE, key)).fetchone()
        return row[1] if row is not None and row[0] == "completed" else None

    def claim_many(keys: list[str], fp: str) -> list[str | None]:
        tokens = [secrets.token_hex(16) for _ in keys]
        now = wall()
        execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                insert,
                [
                    (NAMESPACE, k, fp, t, now + LEASE, now + TTL)
                    for k, t in zip(keys, tokens, strict=True)
                ],
            )
            execute("COMMIT")
        except BaseException:
            execute("ROLLBACK")
            raise
        return list(tokens)

    def complete_many(items: list[tuple[str, str]], result: bytes) -> int:
        expires = wall() + TTL
        execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.executemany(
                update, [(result, expires, NAMESPACE, k, t) for k, t in items]
            )
            execute("COMMIT")
        except BaseException:
            execute("ROLLBACK")
            raise
        return cursor.rowcount

    return Backend("sqlite", store, Hand(claim, complete, read, claim_many, complete_many))


_CAS_LUA = """\
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'XX', 'PX', ARGV[3]) and 1
end
return 0"""


def _redis() -> Backend:
    import redis

    import invresilience as ir

    raw = redis.Redis.from_url(REDIS_URL)
    _teardowns.append(raw.close)
    raw.ping()
    backend = ir.open_backend(REDIS_URL)
    _teardowns.append(backend.close)
    _teardowns.append(lambda: _redis_cleanup(raw))
    store = backend.idempotency_store(NAMESPACE)
    base = f"invres-bench:{RUN_ID}:floor:"
    cas = raw.register_script(_CAS_LUA)
    set_ = raw.set
    get = raw.get

    def claim(key: str, fp: str) -> str | None:
        token = secrets.token_hex(16)
        taken = set_(base + key, f"pending:{fp}:{token}", nx=True, px=TTL_MS)
        return token if taken else None

    def complete(key: str, token: str, result: bytes) -> bool:
        return bool(set_(base + key, b"completed:" + result, xx=True, px=TTL_MS))

    def complete_fenced(key: str, token: str, result: bytes) -> bool:
        owner = f"pending:{FP}:{token}"
        return bool(cas(keys=[base + key], args=[owner, b"completed:" + result, TTL_MS]))

    def read(key: str) -> bytes | None:
        value: Any = get(base + key)  # bytes: the client does not decode
        if value is None or not value.startswith(b"completed:"):
            return None
        return bytes(value[len(b"completed:") :])

    def claim_many(keys: list[str], fp: str) -> list[str | None]:
        tokens = [secrets.token_hex(16) for _ in keys]
        with raw.pipeline(transaction=False) as pipe:
            for key, token in zip(keys, tokens, strict=True):
                pipe.set(base + key, f"pending:{fp}:{token}", nx=True, px=TTL_MS)
            taken = pipe.execute()
        return [token if ok else None for token, ok in zip(tokens, taken, strict=True)]

    def complete_many(items: list[tuple[str, str]], result: bytes) -> int:
        value = b"completed:" + result
        with raw.pipeline(transaction=False) as pipe:
            for key, _ in items:
                pipe.set(base + key, value, xx=True, px=TTL_MS)
            return sum(1 for ok in pipe.execute() if ok)

    return Backend(
        "redis",
        store,
        Hand(claim, complete, read, claim_many, complete_many),
        fenced=complete_fenced,
    )


def _redis_cleanup(raw: Any) -> None:
    """Delete every key of this run: ours (the namespace), the floor's and Powertools'."""
    for pattern in (f"*{NAMESPACE}*", f"invres-bench:{RUN_ID}:*", f"invres-bench-{RUN_ID}*"):
        batch_: list[bytes] = []
        for key in raw.scan_iter(match=pattern, count=1000):
            batch_.append(key)
            if len(batch_) >= 1000:
                raw.delete(*batch_)
                batch_.clear()
        if batch_:
            raw.delete(*batch_)


def _postgres() -> Backend:
    import psycopg

    import invresilience as ir

    conn = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    _teardowns.append(conn.close)
    backend = ir.open_backend(POSTGRES_URL)
    _teardowns.append(backend.close)
    store = backend.idempotency_store(NAMESPACE)
    table = f"invres_bench_floor_{RUN_ID}"
    conn.execute(f"CREATE TABLE {table} ({_COLUMNS.format(real='float8', blob='bytea')})")
    conn.execute(f"CREATE INDEX {table}_expires ON {table} (expires_at)")

    def cleanup() -> None:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        # The store's rows: the default table prefix, this run's namespace.
        conn.execute("DELETE FROM invresilience_idempotency WHERE namespace = %s", (NAMESPACE,))

    _teardowns.append(cleanup)
    now = "date_part('epoch', statement_timestamp())"  # the server's clock, as the store's
    insert = (
        f"INSERT INTO {table} (namespace, key, fingerprint, state, fence, token, lease_until,"
        f" expires_at, result) VALUES (%s, %s, %s, 'pending', 1, %s, {now} + %s, {now} + %s,"
        " NULL) ON CONFLICT (namespace, key) DO NOTHING RETURNING fence"
    )
    update = (
        f"UPDATE {table} SET state = 'completed', result = %s, lease_until = 0,"
        f" expires_at = {now} + %s WHERE namespace = %s AND key = %s AND token = %s"
        " AND state = 'pending' RETURNING fence"
    )
    select = f"SELECT state, result FROM {table} WHERE namespace = %s AND key = %s"
    execute = conn.execute

    def claim(key: str, fp: str) -> str | None:
        token = secrets.token_hex(16)
        row = execute(insert, (NAMESPACE, key, fp, token, LEASE, TTL)).fetchone()
        return token if row is not None else None

    def complete(key: str, token: str, result: bytes) -> bool:
        return execute(update, (result, TTL, NAMESPACE, key, token)).fetchone() is not None

    def read(key: str) -> bytes | None:
        row = execute(select, (NAMESPACE, key)).fetchone()
        return bytes(row[1]) if row is not None and row[0] == "completed" else None

    def claim_many(keys: list[str], fp: str) -> list[str | None]:
        tokens = [secrets.token_hex(16) for _ in keys]
        with conn.cursor() as cur:
            cur.executemany(
                insert,
                [(NAMESPACE, k, fp, t, LEASE, TTL) for k, t in zip(keys, tokens, strict=True)],
                returning=True,
            )
            taken = [cur.fetchone() is not None]
            while cur.nextset():
                taken.append(cur.fetchone() is not None)
        return [t if ok else None for t, ok in zip(tokens, taken, strict=True)]

    def complete_many(items: list[tuple[str, str]], result: bytes) -> int:
        with conn.cursor() as cur:
            cur.executemany(
                update, [(result, TTL, NAMESPACE, k, t) for k, t in items], returning=True
            )
            done = int(cur.fetchone() is not None)
            while cur.nextset():
                done += cur.fetchone() is not None
        return done

    return Backend("postgres", store, Hand(claim, complete, read, claim_many, complete_many))


FACTORIES: dict[str, Callable[[], Backend]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "postgres": _postgres,
}


# -- the cases ---------------------------------------------------------------------------------


def _add(
    cases: list[Case],
    scenario: str,
    library: str,
    fn: Callable[[], Any],
    check: Callable[[], str | None],
    keys: Keys | None = None,
) -> None:
    case = Case(scenario, MODE, library, fn, fn.__code__)
    if keys is not None:
        case.context = _fresh(keys, case)
    _checks[case] = check
    cases.append(case)


def _prefix(backend: str, what: str) -> str:
    return f"{backend}-{what}-{RUN_ID}-"


def _store_cases(cases: list[Case], b: Backend) -> None:
    """Our rows and the floors of the three scenarios on one backend."""
    from invresilience import Idempotency
    from invresilience.typing import Acquired, Completed

    store, hand, name = b.store, b.hand, b.name
    claim_, complete_ = store.claim, store.complete

    def replayed(key: str) -> str | None:
        """None when *key* replays RESULT from our store, else what is wrong."""
        answer = store.claim(key, FP, lease=LEASE, ttl=TTL)
        if type(answer) is not Completed or answer.result != RESULT:
            return f"the key it completed does not replay its result: {answer!r}"
        return None

    # claim + complete: the floor, the store, the guard (heartbeat on and off).
    scenario = claim_complete(name)
    floor_keys = Keys(_prefix(name, "floor"))

    def by_hand() -> bool:
        key = floor_keys.take()
        token = hand.claim(key, FP)
        return token is not None and hand.complete(key, token, RESULT)

    def check_by_hand() -> str | None:
        key = floor_keys.peek()[0]
        if by_hand() is not True:
            return "the hand-written claim did not acquire and complete a fresh key"
        if hand.read(key) != RESULT:
            return "the hand-written completion did not store the result"
        return None

    cases_before = len(cases)
    _add(cases, scenario, BASELINE, by_hand, check_by_hand, floor_keys)

    store_keys = Keys(_prefix(name, "store"))

    def ours() -> bool:
        claim = claim_(store_keys.take(), FP, lease=LEASE, ttl=TTL)
        if type(claim) is not Acquired:
            return False
        complete_(claim.lease, RESULT, ttl=TTL)
        return True

    def check_ours() -> str | None:
        key = store_keys.peek()[0]
        if ours() is not True:
            return "claim did not acquire a fresh key"
        return replayed(key)

    _add(cases, scenario, OURS, ours, check_ours, store_keys)

    if b.fenced is not None:
        fenced_keys = Keys(_prefix(name, "fenced"))
        complete_fenced = b.fenced

        def fenced() -> bool:
            key = fenced_keys.take()
            token = hand.claim(key, FP)
            return token is not None and complete_fenced(key, token, RESULT)

        def check_fenced() -> str | None:
            key = fenced_keys.peek()[0]
            if fenced() is not True:
                return "the fenced hand-written claim did not acquire and complete a fresh key"
            if hand.read(key) != RESULT:
                return "the fenced hand-written completion did not store the result"
            return None

        _add(cases, scenario, FENCED, fenced, check_fenced, fenced_keys)

    for label, heartbeat in ((GUARD, True), (GUARD_NO_BEAT, False)):
        guard = Idempotency(store, ttl=TTL, lease=LEASE, heartbeat=heartbeat)
        keys = Keys(_prefix(name, f"guard-{int(heartbeat)}"))
        _add(cases, scenario, label, *_guard_first(guard, keys), keys)

    # replay: one completed key, claimed again and again.
    scenario = replay(name)
    done = f"{NAMESPACE}-replay"
    token = hand.claim(done, FP)
    if token is None or not hand.complete(done, token, RESULT):
        raise RuntimeError(f"{name}: could not complete the floor's replay key")
    first = store.claim(done, FP, lease=LEASE, ttl=TTL)
    if type(first) is not Acquired:
        raise RuntimeError(f"{name}: could not claim the replay key: {first!r}")
    store.complete(first.lease, RESULT, ttl=TTL)
    read = hand.read

    def read_floor() -> bytes | None:
        return read(done)

    def replay_ours() -> bytes | None:
        answer = claim_(done, FP, lease=LEASE, ttl=TTL)
        return answer.result if type(answer) is Completed else None

    for library, fn in ((BASELINE, read_floor), (OURS, replay_ours)):
        _add(cases, scenario, library, fn, _returns(fn, RESULT, "replay"))
    guard = Idempotency(store, ttl=TTL, lease=LEASE)
    payload = {"id": done}
    calls = [0]

    def work(order: dict[str, str]) -> dict[str, bool]:
        calls[0] += 1
        return VALUE

    guard.run(done + "-guard", work, payload)
    run = guard.run
    guard_key = done + "-guard"

    def replay_guard() -> Any:
        return run(guard_key, work, payload)

    def check_replay_guard() -> str | None:
        before = calls[0]
        value = replay_guard()
        if value != VALUE or calls[0] != before:
            return f"guard.run did not replay ({value!r}, the function ran {calls[0] - before}×)"
        return None

    _add(cases, scenario, GUARD, replay_guard, check_replay_guard)

    # batch: the per-key loop (baseline), claim_many + complete_many, and by hand.
    scenario = batch(name)
    loop_keys = Keys(_prefix(name, "loop"), BATCH)

    def per_key() -> int:
        done = 0
        for key in loop_keys.take_many(BATCH):
            claim = claim_(key, FP, lease=LEASE, ttl=TTL)
            if type(claim) is Acquired:
                complete_(claim.lease, RESULT, ttl=TTL)
                done += 1
        return done

    many_keys = Keys(_prefix(name, "many"), BATCH)
    claim_many, complete_many = store.claim_many, store.complete_many

    def many() -> int:
        claims = claim_many([(key, FP) for key in many_keys.take_many(BATCH)], lease=LEASE, ttl=TTL)
        leases = [(c.lease, RESULT) for c in claims if type(c) is Acquired]
        return sum(complete_many(leases, ttl=TTL))

    hand_keys = Keys(_prefix(name, "hand-batch"), BATCH)

    def hand_batch() -> int:
        keys = hand_keys.take_many(BATCH)
        tokens = hand.claim_many(keys, FP)
        return hand.complete_many(
            [(k, t) for k, t in zip(keys, tokens, strict=True) if t is not None], RESULT
        )

    def check_batch(fn: Callable[[], int], keys: Keys, ours: bool) -> Callable[[], str | None]:
        def check() -> str | None:
            first, last = keys.peek(BATCH)[0], keys.peek(BATCH)[-1]
            stored = fn()
            if stored != BATCH:
                return f"completed {stored} of {BATCH} fresh keys"
            for key in (first, last):
                problem = replayed(key) if ours else None
                if not ours and hand.read(key) != RESULT:
                    problem = "a key of the hand-written batch holds no result"
                if problem is not None:
                    return problem
            return None

        return check

    _add(cases, scenario, BASELINE, per_key, check_batch(per_key, loop_keys, True), loop_keys)
    _add(cases, scenario, OURS, many, check_batch(many, many_keys, True), many_keys)
    _add(
        cases,
        scenario,
        BY_HAND_BATCH,
        hand_batch,
        check_batch(hand_batch, hand_keys, False),
        hand_keys,
    )
    assert len(cases) > cases_before


def _returns(fn: Callable[[], Any], expected: object, what: str) -> Callable[[], str | None]:
    def check() -> str | None:
        value = fn()
        return None if value == expected else f"{what} returned {value!r}, not {expected!r}"

    return check


def _guard_first(guard: Any, keys: Keys) -> tuple[Callable[[], Any], Callable[[], str | None]]:
    """``guard.run`` of a fresh key, and its check (the work ran once and then replays)."""
    calls = [0]

    def work(order: dict[str, str]) -> dict[str, bool]:
        calls[0] += 1
        return VALUE

    run = guard.run
    take = keys.take

    def first() -> Any:
        key = take()
        return run(key, work, {"id": key})

    def check() -> str | None:
        key = keys.peek()[0]
        before = calls[0]
        value = first()
        if value != VALUE or calls[0] != before + 1:
            return f"guard.run of a fresh key returned {value!r} after {calls[0] - before} runs"
        again = run(key, work, {"id": key})
        if again != VALUE or calls[0] != before + 1:
            return "guard.run of a completed key did not replay"
        return None

    return first, check


def _powertools_cases(cases: list[Case], b: Backend) -> None:
    """``idempotent_function`` on the same Redis: a first execution and a replay."""
    idempotency = _anchor("aws_lambda_powertools.utilities.idempotency")
    try:
        cache = _anchor("aws_lambda_powertools.utilities.idempotency.persistence.cache")
        layer_class = cache.CachePersistenceLayer
    except ImportError:  # before 3.x's cache module: the Redis one
        redis_module = _anchor("aws_lambda_powertools.utilities.idempotency.persistence.redis")
        layer_class = redis_module.RedisCachePersistenceLayer
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)  # as in their docs
    _teardowns.append(client.close)
    with warnings.catch_warnings():  # RedisCachePersistenceLayer's deprecation, in 3.x
        warnings.simplefilter("ignore", DeprecationWarning)
        layer = layer_class(client=client)
    config = idempotency.IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=3600)
    # Outside Lambda it warns (once per process, as warnings go) that it has no deadline.
    warnings.filterwarnings("ignore", "Couldn't determine the remaining time", UserWarning)
    calls = [0]

    def work(order: dict[str, str]) -> dict[str, bool]:
        calls[0] += 1
        return VALUE

    process = idempotency.idempotent_function(
        work,
        data_keyword_argument="order",
        persistence_store=layer,
        config=config,
        key_prefix=f"invres-bench-{RUN_ID}-pt",
    )
    keys = Keys(_prefix("powertools", "first"))
    take = keys.take

    def first() -> Any:
        return process(order={"id": take()})

    def check_first() -> str | None:
        key = keys.peek()[0]
        before = calls[0]
        value = first()
        if value != VALUE or calls[0] != before + 1:
            return f"Powertools' first execution returned {value!r} after {calls[0] - before} runs"
        again = process(order={"id": key})
        if again != VALUE or calls[0] != before + 1:
            return "Powertools did not replay a key it completed"
        stored = list(client.scan_iter(match=f"invres-bench-{RUN_ID}-pt*", count=1000))
        if not stored:
            return "Powertools stored no record in Redis"
        return None

    _add(cases, claim_complete(b.name), POWERTOOLS, first, check_first, keys)

    done = {"id": f"{NAMESPACE}-pt-replay"}
    process(order=done)

    def replayed() -> Any:
        return process(order=done)

    def check_replay() -> str | None:
        before = calls[0]
        value = replayed()
        if value != VALUE or calls[0] != before:
            return f"Powertools did not replay ({value!r}, ran {calls[0] - before}×)"
        return None

    _add(cases, replay(b.name), POWERTOOLS, replayed, check_replay)


def build_cases(
    run: Callable[[Awaitable[Any]], Any], backends: tuple[str, ...] = BACKENDS
) -> tuple[list[Case], list[str]]:
    """Every case, each scenario's baseline first; and the libraries skipped (none here).

    A backend whose server cannot be reached is left out (its verdicts say so); Powertools
    not installed leaves a gap in the Redis rows.
    """
    cases: list[Case] = []
    for name in backends:
        try:
            backend = FACTORIES[name]()
        except Exception as exc:
            if name in ("memory", "sqlite"):
                raise
            _unreachable[name] = f"{type(exc).__name__}: {exc}".strip()
            print(f"note: {name} skipped: {_unreachable[name]}", file=sys.stderr)
            continue
        _store_cases(cases, backend)
        if name == "redis":
            try:
                _powertools_cases(cases, backend)
            except ImportError:
                GAPS.extend(
                    Gap(scenario, MODE, POWERTOOLS, "not installed")
                    for scenario in (claim_complete(name), replay(name))
                )
    # The harness wants each scenario's baseline before its other rows: sort stably.
    order = {scenario: i for i, scenario in enumerate(dict.fromkeys(c.scenario for c in cases))}
    cases.sort(key=lambda c: (order[c.scenario], c.library != BASELINE))
    return cases, []


def check_cases(cases: list[Case], run: Callable[[Awaitable[Any]], Any]) -> list[str]:
    """Problems found by running every case's check once (an empty list when all is well).

    A claim must acquire a fresh key and its completion make the key replay the result;
    a replay must return the stored result without running the work; Powertools must
    run the work once, store it in Redis and replay it.
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


# -- budgets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatioBudget:
    """invresilience's row at most *limit* × the floor (the median per-repeat quotient).

    With ``judged=False`` the line only reports (``INFO``) and never fails the run.
    """

    backend: str
    scenario: str
    limit: float
    floor: str
    judged: bool = True
    versus: str = "the floor"

    def verdict(self, results: list[Result]) -> tuple[bool, str]:
        rows = {r.library: r for r in results if r.scenario == self.scenario}
        if OURS not in rows:
            why = _unreachable.get(self.backend, "not timed")
            return True, f"SKIP  {self.scenario}: {self.backend} was not reachable ({why})"
        ours, base = rows[OURS], rows[BASELINE]
        per = PER_ITEM.get(self.scenario, 1)
        head = (
            f"{self.scenario}: {ours.us_per_call / per:.1f} µs per key,"
            f" {ours.ratio:.2f}× {self.versus} ({self.floor}: {base.us_per_call / per:.1f} µs)"
        )
        if self.judged:
            head += f" (budget ≤ {self.limit:g}×)"
        extras = [
            f"{name.removeprefix(OURS).strip(' ()')} {row.ratio:.2f}×"
            for name, row in rows.items()
            if name.startswith(OURS) and name != OURS
        ]
        if extras:
            head += "; " + ", ".join(extras)
        anchors = [
            row for name, row in rows.items() if name != BASELINE and not name.startswith(OURS)
        ]
        if anchors:
            head += "; invresilience is " + ", ".join(_faster(ours, a) for a in anchors)
        if not self.judged:
            return True, f"INFO  {head}"
        within = ours.ratio <= self.limit
        return within, f"{'PASS' if within else 'OVER'}  {head}"


def _faster(ours: Result, anchor: Result) -> str:
    ratio = anchor.us_per_call / ours.us_per_call
    if ratio >= 1:
        return f"{ratio:.2f}× faster than {anchor.library}"
    return f"{1 / ratio:.2f}× slower than {anchor.library}"


BUDGETS = (
    *(
        RatioBudget(b, claim_complete(b), 1.3, FLOORS[b].split(" (")[0], judged=b != "memory")
        for b in BACKENDS
    ),
    *(RatioBudget(b, replay(b), 1.3, REPLAY_FLOORS[b], judged=False) for b in BACKENDS),
    *(
        RatioBudget(b, batch(b), 1.0, "claim + complete per key", False, "the per-key loop")
        for b in BACKENDS
    ),
)
