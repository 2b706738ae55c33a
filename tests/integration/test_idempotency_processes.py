"""The idempotency guard across real processes: a race on 2,000 keys, and workers that die.

Every test runs against SQLite (a file of the test's own), Redis and PostgreSQL (the system
servers of ``tests/services.py``, in a namespace of the test's own, deleted afterwards).
The workers are separate Python processes running the scripts below; they answer in JSON
lines on stdout.

- The race: 8 workers walk the same 2,000 keys, each in its own shuffled order (shuffled
  within blocks of 40, so that they collide often), all calling ``guard.run(key, work,
  key)`` with ``on_in_progress="raise"``, and come back later to a key in progress;
  ``work`` writes the key to the worker's own file. Every key must have been run exactly
  once, by one worker, and replay afterwards.
- The crash: a worker holding a key (``lease=1.0``, heartbeat on) is killed with SIGKILL;
  the key is free again once the lease runs out, and the dead worker's lease is lost.
- The pause: a worker stopped with SIGSTOP past its lease is taken over by another; when
  it resumes, its own ``complete`` raises ``LeaseLostError`` and the other's result stays.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from invresilience import JsonCodec, LeaseLostError, fingerprint, open_backend
from invresilience.typing import Acquired, Completed, InProgress, Lease

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from invresilience.typing import Claim, IdempotencyStore

WORKERS = 8
KEYS = 2_000
#: The workers walk the keys in blocks of this many, each block in their own shuffled
#: order: all of them are always on the same few keys, so that they collide often (a
#: shuffle of all 2,000 keys makes collisions rare). BLOCK = KEYS shuffles the whole list.
BLOCK = 40
#: Seconds a race may take before its workers give up (each backend takes a few).
RACE_DEADLINE = 120.0
#: The exit code of a worker whose complete() raised LeaseLostError.
LEASE_LOST = 3

RACE_WORKER = r"""
import json, random, sys, time
import invresilience as ir

url, namespace, keys_path, out_path, seed, block, deadline = sys.argv[1:8]
with open(keys_path) as f:
    keys = f.read().split()
# Each worker's own order: the blocks of the list one after the other, each shuffled.
rng, block = random.Random(int(seed)), int(block)
blocks = [keys[i : i + block] for i in range(0, len(keys), block)]
for b in blocks:
    rng.shuffle(b)
keys = [key for b in blocks for key in b]
backend = ir.open_backend(url)
store = backend.idempotency_store(namespace)
guard = ir.Idempotency(store, ttl=3600, on_in_progress="raise")
out = open(out_path, "a")

def work(key):
    out.write(key + "\n")
    return key

# Connect (and create the schema) before the start line, so that all start together.
warm = store.claim(f"warm-up-{seed}", "warm-up", lease=1.0, ttl=60)
store.release(warm.lease)
print(json.dumps({"event": "ready"}), flush=True)
sys.stdin.readline()

started = time.monotonic()
stop = started + float(deadline)
ran, replayed, busy = [], 0, 0
pending = keys
while pending and time.monotonic() < stop:
    later = []
    for key in pending:
        try:
            result = guard.run(key, work, key)
        except ir.IdempotencyInProgressError:
            busy += 1
            later.append(key)
            continue
        if result != key:
            raise AssertionError(f"{key!r} returned {result!r}")
    if later:
        time.sleep(0.005)  # Whoever holds those keys is between its claim and complete().
    pending = later
out.close()
backend.close()
print(json.dumps({
    "event": "done", "pending": len(pending), "busy": busy,
    "seconds": time.monotonic() - started,
}), flush=True)
"""

CRASH_WORKER = r"""
import json, os, signal, sys, time
import invresilience as ir
from invresilience.typing import Acquired

url, namespace, key, name, mode = sys.argv[1:6]
backend = ir.open_backend(url)

class Recording:
    # The store, remembering the lease the guard runs under (the guard does not show it).
    def __init__(self, store):
        self.store = store
        self.lease = None

    def claim(self, *args, **kwargs):
        claim = self.store.claim(*args, **kwargs)
        if isinstance(claim, Acquired):
            self.lease = claim.lease
        return claim

    def extend(self, lease, seconds):
        self.lease = self.store.extend(lease, seconds)
        return self.lease

    def __getattr__(self, name):
        return getattr(self.store, name)

store = Recording(backend.idempotency_store(namespace))
guard = ir.Idempotency(
    store, lease=1.0, heartbeat=True, on_in_progress="wait", wait_timeout=30.0
)

def say(**answer):
    print(json.dumps(answer), flush=True)

def work(payload):
    lease = store.lease
    say(event="claimed", lease={
        "key": lease.key, "fence": lease.fence, "token": lease.token,
        "fingerprint": lease.fingerprint, "duration": lease.duration,
    })
    if mode == "hang":  # until SIGKILL
        while True:
            time.sleep(60)
    if mode == "pause":  # stopped right here, between two heartbeats, until SIGCONT
        os.kill(os.getpid(), signal.SIGSTOP)
        sys.stdin.readline()
    return {"by": name, "payload": payload}

try:
    result = guard.run(key, work, "the payload")
except ir.LeaseLostError as exc:
    say(event="lease-lost", error=str(exc))
    sys.exit(LEASE_LOST)
say(event="done", result=result)
""".replace("LEASE_LOST", str(LEASE_LOST))


# -- backends ---------------------------------------------------------------------------------

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis", marks=pytest.mark.services),
    pytest.param("postgres", id="postgres", marks=pytest.mark.services),
]


def _forget(url: str, namespace: str) -> None:
    """Delete the records a test left in *namespace* of a shared server."""
    if url.startswith("redis"):
        import redis

        with redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match=f"invresilience:idem:{namespace}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
    elif url.startswith("postgres"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM invresilience_idempotency WHERE namespace = %s", [namespace])


@pytest.fixture
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of the backend under test: a fresh SQLite file, or a system server."""
    kind: str = request.param
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'idempotency.db'}"
    if kind == "redis":
        pytest.importorskip("redis")
    else:
        pytest.importorskip("psycopg")
    url: str = request.getfixturevalue(f"{kind}_url")
    return url


@pytest.fixture
def namespace(backend_url: str) -> Iterator[str]:
    """A namespace of this test's own, whose records are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    yield name
    _forget(backend_url, name)


@pytest.fixture
def store(backend_url: str, namespace: str) -> Iterator[IdempotencyStore]:
    """The test's own store on the backend, in the test's namespace."""
    backend = open_backend(backend_url)
    try:
        yield backend.idempotency_store(namespace)
    finally:
        backend.close()


# -- workers ----------------------------------------------------------------------------------


class Worker:
    """One worker process; stderr goes to a file, shown when the worker misbehaves."""

    def __init__(self, script: str, args: list[str], stderr: Path) -> None:
        self.stderr_path = stderr
        with stderr.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-c", script, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def read(self) -> dict[str, Any]:
        """The next JSON line the worker wrote."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait(10)
            raise AssertionError(f"worker exited with {code}:\n{self.stderr()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def send(self, line: str = "") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def end(self) -> None:
        """Kill the worker if it still runs (continuing it first if it is stopped)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start workers; every one still running at the end of the test is killed."""
    started: list[Worker] = []

    def start(script: str, *args: str) -> Worker:
        worker = Worker(script, list(args), tmp_path / f"worker-{len(started)}.stderr")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.end()


def _lease(answer: dict[str, Any]) -> Lease:
    """The lease a worker reported from inside its call."""
    assert "claimed" == answer["event"], answer
    fields: dict[str, Any] = answer["lease"]
    return Lease(
        fields["key"],
        int(fields["fence"]),
        fields["token"],
        fields["fingerprint"],
        float(fields["duration"]),
    )


def _claim_until_acquired(store: IdempotencyStore, key: str, fp: str, limit: float) -> Acquired:
    """Claim *key* every 50 ms until it is acquired; fail after *limit* seconds."""
    deadline = time.monotonic() + limit
    while True:
        claim: Claim = store.claim(key, fp, lease=30.0, ttl=600)
        if isinstance(claim, Acquired):
            return claim
        assert isinstance(claim, InProgress), claim
        assert time.monotonic() < deadline, f"{key!r} still in progress after {limit} s"
        time.sleep(0.05)


# -- the race ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_url", BACKENDS, indirect=True)
def test_race_runs_each_key_exactly_once(
    backend_url: str,
    namespace: str,
    store: IdempotencyStore,
    spawn: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    """8 processes race through the same 2,000 keys: each key runs once and then replays."""
    keys = [f"order-{i:05d}" for i in range(KEYS)]
    keys_path = tmp_path / "keys.txt"
    keys_path.write_text("\n".join(keys))
    outputs = [tmp_path / f"ran-{i}.txt" for i in range(WORKERS)]
    workers = [
        spawn(
            RACE_WORKER,
            backend_url,
            namespace,
            str(keys_path),
            str(outputs[i]),
            str(i),
            str(BLOCK),
            str(RACE_DEADLINE),
        )
        for i in range(WORKERS)
    ]
    assert [{"event": "ready"}] * WORKERS == [worker.read() for worker in workers]

    started = time.monotonic()
    for worker in workers:
        worker.send("go")
    reports = [worker.read() for worker in workers]
    elapsed = time.monotonic() - started
    assert [0] * WORKERS == [worker.wait() for worker in workers]
    assert [0] * WORKERS == [report["pending"] for report in reports], reports

    ran = collections.Counter[str]()
    per_worker = []
    for path in outputs:
        lines = path.read_text().split() if path.exists() else []
        per_worker.append(len(lines))
        ran.update(lines)
    twice = sorted(key for key, count in ran.items() if count > 1)
    assert [] == twice, f"run more than once: {twice[:20]} ({len(twice)} keys)"
    assert set(keys) == set(ran), f"never run: {sorted(set(keys) - set(ran))[:20]}"
    assert KEYS == sum(per_worker)

    codec = JsonCodec()
    claims = [store.claim(key, fingerprint((key,), {}), lease=30.0) for key in keys]
    wrong = [
        claim
        for claim in claims
        if not isinstance(claim, Completed) or claim.key != codec.decode(claim.result)
    ]
    assert [] == wrong[:10], f"{len(wrong)} keys do not replay their own result"
    print(
        f"\n{backend_url.split(':')[0]}: {KEYS} keys x {WORKERS} processes in {elapsed:.2f} s;"
        f" runs per worker {per_worker}; in-progress answers {[r['busy'] for r in reports]}"
    )


# -- the crash and the pause ------------------------------------------------------------------


@pytest.mark.parametrize("backend_url", BACKENDS, indirect=True)
def test_killed_worker_loses_its_key_when_the_lease_runs_out(
    backend_url: str, namespace: str, store: IdempotencyStore, spawn: Callable[..., Worker]
) -> None:
    """A SIGKILLed worker's key is taken over after its lease; its late complete is refused."""
    key = "order-killed"
    dead = spawn(CRASH_WORKER, backend_url, namespace, key, "first", "hang")
    lease = _lease(dead.read())
    assert 1.0 == lease.duration
    fp = lease.fingerprint
    assert fingerprint(("the payload",), {}) == fp

    time.sleep(1.5)  # > lease: only the heartbeat keeps the key
    claim = store.claim(key, fp, lease=30.0)
    assert isinstance(claim, InProgress), claim
    assert lease.fence == claim.fence

    dead.signal(signal.SIGKILL)
    assert -signal.SIGKILL == dead.wait()
    killed = time.monotonic()
    second = _claim_until_acquired(store, key, fp, limit=10.0).lease
    assert time.monotonic() - killed < 1.0 + 2.0  # lease, and a heartbeat in flight
    assert second.fence > lease.fence

    # The dead worker's lease is gone: finishing, giving up or extending change nothing.
    with pytest.raises(LeaseLostError):
        store.complete(lease, b'{"by": "first"}')
    with pytest.raises(LeaseLostError):
        store.extend(lease, 30.0)
    with pytest.raises(LeaseLostError):
        store.release(lease)
    assert isinstance(store.claim(key, fp, lease=30.0), InProgress)

    store.complete(second, b'{"by": "second"}', ttl=600)
    with pytest.raises(LeaseLostError):
        store.complete(lease, b'{"by": "first"}')
    assert Completed(key, fp, b'{"by": "second"}') == store.claim(key, fp, lease=30.0)


@pytest.mark.parametrize("backend_url", BACKENDS, indirect=True)
def test_paused_worker_finds_its_lease_taken_over(
    backend_url: str, namespace: str, store: IdempotencyStore, spawn: Callable[..., Worker]
) -> None:
    """A worker stopped past its lease is taken over; resumed, its complete raises LeaseLostError."""
    key = "order-paused"
    first = spawn(CRASH_WORKER, backend_url, namespace, key, "first", "pause")
    lease = _lease(first.read())
    # The worker stops itself right after reporting, before its first heartbeat is due:
    # nothing of it runs from now on, heartbeat included, until SIGCONT.
    pid, status = os.waitpid(first.pid, os.WUNTRACED)
    assert (first.pid, True) == (pid, os.WIFSTOPPED(status)), first.stderr()

    second = spawn(CRASH_WORKER, backend_url, namespace, key, "second", "run")
    taken = _lease(second.read())
    assert taken.fence > lease.fence
    assert {"event": "done", "result": {"by": "second", "payload": "the payload"}} == second.read()
    assert 0 == second.wait()

    first.signal(signal.SIGCONT)
    first.send()  # the call returns, and the guard completes with the lost lease
    answer = first.read()
    assert "lease-lost" == answer["event"], answer
    assert LEASE_LOST == first.wait(), first.stderr()

    stored = store.claim(key, lease.fingerprint, lease=30.0)
    assert isinstance(stored, Completed), stored
    assert {"by": "second", "payload": "the payload"} == JsonCodec().decode(stored.result)
