"""A redrive killed with SIGKILL midway, then run again: every letter's job takes effect once.

A queue of 60 letters is redriven through a JobHandler by a separate Python process,
which is killed with SIGKILL at one of the two moments that matter:

- ``in-handler``: while the 25th job runs, before its effect: that job's claim is left
  pending until its lease (1 s) runs out, and its letter stays;
- ``before-delete``: after the 25th job completed (its effect and its stored result are
  durable) but before its letter was deleted: the crash window between "done" and
  "removed from the queue".

Then the redrive runs again in a fresh process until the queue is empty. Each job's
effect (a row in a SQLite file of the test's own, written by the handler) must exist
exactly once, and the rerun must report the job that completed before the crash as
skipped, not run it again. On SQLite, Redis and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

import invresilience as ir

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

LETTERS = 60
KILL_AT = 25
LEASE = 1.0

CHILD = r"""
import json, os, signal, sqlite3, sys
import invresilience as ir

url, namespace, effects_path, mode, kill_at, lease = sys.argv[1:7]
kill_at = int(kill_at)
effects = sqlite3.connect(effects_path, isolation_level=None, timeout=30)
effects.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT, pid INTEGER)")
runs = 0


def handle(job):
    global runs
    runs += 1
    if mode == "in-handler" and runs == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    effects.execute("INSERT INTO effects VALUES (?, ?)", (job["id"], os.getpid()))
    return {"adjusted": job["id"]}


class KillBeforeDelete:
    # The queue's store, except that the kill_at-th delete kills the process first.
    def __init__(self, store):
        self.store, self.deletes = store, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def delete(self, ids):
        self.deletes += 1
        if self.deletes == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.store.delete(ids)


with ir.open_backend(url) as backend:
    guard = ir.Idempotency(backend.idempotency_store(namespace), lease=float(lease), heartbeat=False)
    dlq = backend.dead_letter_queue(namespace)
    if mode == "before-delete":
        dlq.store = KillBeforeDelete(dlq.store)
    handler = ir.JobHandler(handle, key=lambda job: job["id"], idempotency=guard, dead_letters=dlq)
    report = dlq.redrive(handler)
    print(json.dumps({k: list(getattr(report, k)) for k in ("redriven", "skipped", "failed")}))
"""


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file of the test's own, or the shared Redis / PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'redrive.db'}"
    else:
        yield str(request.getfixturevalue(f"{request.param}_url"))


def _redrive(
    url: str, namespace: str, effects: Path, mode: str
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", CHILD, url, namespace, str(effects), mode, str(KILL_AT), str(LEASE)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def _report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert 0 == done.returncode, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize("mode", ["in-handler", "before-delete"])
def test_a_redrive_killed_midway_and_run_again_applies_each_letter_once(
    backend_url: str, mode: str, tmp_path: Path
) -> None:
    """SIGKILL during a redrive loses nothing, and the rerun runs no job twice."""
    namespace = f"redrive-{uuid.uuid4().hex[:12]}"
    effects = tmp_path / "effects.db"
    keys = [f"job-{n:03d}" for n in range(LETTERS)]
    with ir.open_backend(backend_url) as backend:
        dlq = backend.dead_letter_queue(namespace)
        for key in keys:
            dlq.put({"id": key}, reason="fatal", key=key, error=RuntimeError("ERP said no"))
        try:
            killed = _redrive(backend_url, namespace, effects, mode)
            assert -9 == killed.returncode, killed.stderr
            left_after_kill = dlq.count()
            expected_left = LETTERS - KILL_AT + 1
            assert expected_left == left_after_kill
            if mode == "in-handler":
                time.sleep(LEASE + 0.2)  # the killed job's claim must run out first
            rerun = _report(_redrive(backend_url, namespace, effects, "none"))
            assert [] == rerun["failed"]
            assert (1 if mode == "before-delete" else 0) == len(rerun["skipped"])
            assert expected_left == len(rerun["redriven"]) + len(rerun["skipped"])
            assert 0 == dlq.count()
        finally:
            dlq.purge(everything=True)
    with sqlite3.connect(effects) as db:
        rows = db.execute("SELECT key, COUNT(*) FROM effects GROUP BY key").fetchall()
    assert dict.fromkeys(keys, 1) == dict(rows)
