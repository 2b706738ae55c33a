"""Redis and PostgreSQL restarted under one idempotency store: it fails, then resumes.

Each test owns its server (``tests/servers.py``), so stopping it disturbs nobody. The data
must survive the restart -- the point is that no record is lost or corrupted -- so Redis
runs with an append-only file synced on every write (``--appendonly yes --appendfsync
always``; an RDB snapshot on ``SHUTDOWN SAVE`` would not survive SIGKILL), and PostgreSQL
keeps its cluster directory. Each server is stopped cleanly (SIGTERM / ``pg_ctl -m fast``)
and killed (SIGKILL / ``pg_ctl -m immediate``, a crash: recovery on the next start).

The store is the one the backend made from the URL, with its default driver settings, and
it is the same store object before, during and after the outage.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from invresilience import (
    BackendUnavailableError,
    Idempotency,
    JsonCodec,
    fingerprint,
    open_backend,
)
from invresilience.typing import Acquired, Completed, InProgress

if TYPE_CHECKING:
    from collections.abc import Iterator

    from invresilience.typing import IdempotencyStore

pytestmark = pytest.mark.services


class Server(Protocol):
    """What the tests do with a private server."""

    @property
    def url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


@pytest.fixture(params=["redis", "postgres"])
def server(request: pytest.FixtureRequest) -> Server:
    """A private server, with its data kept across restarts."""
    pytest.importorskip("redis" if request.param == "redis" else "psycopg")
    fixture = "private_redis_persistent" if request.param == "redis" else "private_postgres"
    started: Server = request.getfixturevalue(fixture)
    return started


@pytest.fixture
def store(server: Server) -> Iterator[IdempotencyStore]:
    """One store on the private server, kept for the whole test."""
    backend = open_backend(server.url)
    try:
        yield backend.idempotency_store("restarts")
    finally:
        backend.close()


class Work:
    """A function for the guard that counts its calls, so a replay can be told from a run."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, n: int) -> dict[str, Any]:
        self.calls.append(n)
        return {"n": n, "text": f"résultat {n} ✓", "items": list(range(n))}


def _down(server: Server, how: str) -> None:
    if how == "stop":
        server.stop()
    else:
        server.kill()


def _unavailable(call: Any, *args: Any, **kwargs: Any) -> float:
    """Check that ``call(*args, **kwargs)`` raises BackendUnavailableError; the seconds taken."""
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as info:
        call(*args, **kwargs)
    assert info.value.__cause__ is not None, "the driver's exception is not chained"
    return time.monotonic() - started


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_store_fails_while_down_and_resumes_after_restart(
    server: Server, store: IdempotencyStore, how: str
) -> None:
    """Down: calls raise BackendUnavailableError; back up: same store, same records, new work runs."""
    guard = Idempotency(store, lease=30.0, ttl=3600)
    work = Work()
    done = {f"done-{n}": guard.run(f"done-{n}", work, n) for n in range(5)}
    stored = {
        key: store.claim(key, fingerprint((n,), {}), lease=30.0) for n, key in enumerate(done)
    }
    assert all(isinstance(claim, Completed) for claim in stored.values())
    pending_fp = fingerprint((99,), {})
    pending = store.claim("pending", pending_fp, lease=60.0, ttl=3600)
    assert isinstance(pending, Acquired)
    lease = pending.lease

    _down(server, how)
    seconds = [
        _unavailable(store.claim, "new-0", fingerprint((0,), {}), lease=30.0),
        _unavailable(store.complete, lease, b'"finished"', ttl=3600),
        _unavailable(store.extend, lease, 60.0),
        _unavailable(guard.run, "done-0", work, 0),
        _unavailable(guard.run, "new-1", work, 1),
    ]
    assert [0, 1, 2, 3, 4] == work.calls  # nothing ran while the server was down
    print(f"\nfailed calls took {', '.join(f'{s:.3f}' for s in seconds)} s")

    server.start()
    # The same store: completed records replay their exact bytes, without running again.
    assert stored == {
        key: store.claim(key, fingerprint((n,), {}), lease=30.0) for n, key in enumerate(done)
    }
    assert done == {key: guard.run(key, work, n) for n, key in enumerate(done)}
    assert [0, 1, 2, 3, 4] == work.calls
    # The pending claim is still in progress under the same fence, and its lease holds.
    in_progress = store.claim("pending", pending_fp, lease=30.0)
    assert isinstance(in_progress, InProgress), in_progress
    assert lease.fence == in_progress.fence
    assert 0 < in_progress.retry_after <= 60.0
    store.complete(lease, b'"finished"', ttl=3600)
    assert Completed("pending", pending_fp, b'"finished"') == store.claim(
        "pending", pending_fp, lease=30.0
    )
    # New work runs, once.
    assert Work()(1) == guard.run("new-1", work, 1)
    assert Work()(1) == guard.run("new-1", work, 1)
    assert [0, 1, 2, 3, 4, 1] == work.calls


def test_call_in_flight_across_a_restart_completes(server: Server, store: IdempotencyStore) -> None:
    """A call whose heartbeats fail while the server restarts still completes: nobody took its key."""
    guard = Idempotency(store, lease=1.0, ttl=3600)
    fp = fingerprint(("in flight",), {})

    def work(payload: str) -> str:
        server.stop()
        time.sleep(1.5)  # > lease: heartbeats fail, and the lease's time runs out
        server.start()
        return payload.upper()

    assert "IN FLIGHT" == guard.run("in-flight", work, "in flight")
    assert Completed("in-flight", fp, JsonCodec().encode("IN FLIGHT")) == store.claim(
        "in-flight", fp, lease=30.0
    )


def test_restart_between_calls_costs_at_most_one_failed_call(
    server: Server, store: IdempotencyStore
) -> None:
    """A restart that no call saw fails at most the next call; the one after works."""
    fp = fingerprint(("quiet",), {})
    first = store.claim("before", fp, lease=30.0)
    assert isinstance(first, Acquired)
    server.stop()
    server.start()
    try:
        store.complete(first.lease, b'"before"', ttl=3600)
    except BackendUnavailableError:  # PostgreSQL: the old connection is found broken
        store.complete(first.lease, b'"before"', ttl=3600)
    assert Completed("before", fp, b'"before"') == store.claim("before", fp, lease=30.0)
