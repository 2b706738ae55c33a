"""Four worker processes share 200 keys; one is SIGKILLed; the others take its keys safely.

Each worker (``_membership_worker.py``, a separate Python process) opens the backend by
URL, joins one group through a ShardAssignment (lease 1 s, heartbeat 0.2 s) and logs,
every 50 ms, the membership version it holds and which of the keys ``WH-0000`` ..
``WH-0199`` it owns. Once all four have joined and every key has an owner, one worker is
killed with SIGKILL: it never leaves, so its keys must wait for its lease to run out on the
store's clock. The survivors are stopped with SIGTERM (they leave) once they own every key.

From the logs: at no membership version is a key owned by two workers; no survivor owns a
key of the killed worker before the killed worker's own copy of its lease could have run
out; at the end every key is owned by exactly one survivor, the killed worker's included;
and in wall-clock time, no key is owned by a worker while another holds it (see
:func:`_overlaps` for what the 50 ms samples can honestly show).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import invresilience as ir

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

WORKER = Path(__file__).with_name("_membership_worker.py")
KEYS = 200
WORKERS = 4
LEASE = 1.0
HEARTBEAT = 0.2
SAMPLE = 0.05
#: Bound on each wait: all joined and settled, and the handoff after the kill.
PATIENCE = 10.0
VICTIM = "w1"

Line = dict[str, Any]


@pytest.fixture(params=["redis", "postgres", "sqlite"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A server's URL, or a SQLite file of the test's own (shared by the processes)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'membership.db'}"
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def group(backend_url: str) -> Iterator[str]:
    """A group of the test's own, whose record is deleted afterwards."""
    name = f"kill-{uuid.uuid4().hex[:16]}"
    yield name
    if backend_url.startswith("redis"):
        import redis

        with ir.open_backend(backend_url) as backend:
            key = backend.membership(name).key  # type: ignore[attr-defined]
        with redis.Redis.from_url(backend_url) as client:
            client.delete(key)
    elif backend_url.startswith("postgres"):
        import psycopg

        with psycopg.connect(backend_url, autocommit=True) as conn:
            conn.execute("DELETE FROM invresilience_membership WHERE grp = %s", [name])


def _start(url: str, group: str, name: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    src = Path(__file__).resolve().parents[2] / "src"
    env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    args = [url, group, name, str(tmp_path / f"{name}.log")]
    args += [str(KEYS), str(LEASE), str(HEARTBEAT), str(SAMPLE)]
    with (tmp_path / f"{name}.err").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, str(WORKER), *args], env=env, stdout=subprocess.DEVNULL, stderr=err
        )


def _read(tmp_path: Path, name: str) -> list[Line]:
    """The complete lines *name* has logged (a line being written is left out)."""
    path = tmp_path / f"{name}.log"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _samples(lines: list[Line]) -> list[Line]:
    return [line for line in lines if "owned" in line]


def _wait_for(what: str, ready: Callable[[], bool], tmp_path: Path) -> float:
    """Poll *ready* until it holds (the time it did), or fail after PATIENCE seconds."""
    deadline = time.monotonic() + PATIENCE
    while not ready():
        if time.monotonic() > deadline:
            errors = {
                name: (tmp_path / f"{name}.err").read_text()[-2000:]
                for name in (f"w{i}" for i in range(WORKERS))
            }
            last = {name: _samples(_read(tmp_path, name))[-1:] for name in errors}
            pytest.fail(f"{what}: not within {PATIENCE} s; last lines {last}; stderr {errors}")
        time.sleep(SAMPLE)
    return time.time()


def _covered(tmp_path: Path, names: list[str], *, after: float = 0.0) -> bool:
    """Whether the last lines of *names* (logged after *after*) show only them, owning every key."""
    owned: list[int] = []
    for name in names:
        samples = _samples(_read(tmp_path, name))
        if not samples or samples[-1]["t"] <= after or samples[-1]["members"] != names:
            return False
        owned += samples[-1]["owned"]
    return sorted(owned) == list(range(KEYS))


def _overlaps(logs: dict[str, list[Line]]) -> list[str]:
    """Keys two workers owned at one wall-clock moment, as far as the samples show.

    A sample is taken over ``[t, t_end]``. When two consecutive samples of worker A at
    one version both own key k, A held k over the time between them (at one version,
    ownership only grows as acknowledgements arrive, and A's version stays below any
    version where another worker could take k over). So no sample of another worker
    taken wholly inside ``(t_end, t')`` may own k. Samples straddling the boundaries
    prove nothing either way: the handoff may have happened within them.
    """
    found: list[str] = []
    for holder, lines in logs.items():
        for first, second in itertools.pairwise(lines):
            if first["version"] != second["version"]:
                continue
            held = set(first["owned"]) & set(second["owned"])
            if not held:
                continue
            for other, other_lines in logs.items():
                if other == holder:
                    continue
                for line in other_lines:
                    if first["t_end"] < line["t"] and line["t_end"] < second["t"]:
                        both = held & set(line["owned"])
                        if both:
                            found.append(
                                f"{holder} held {sorted(both)[:5]} over "
                                f"[{first['t_end']:.3f}, {second['t']:.3f}] while {other} "
                                f"owned them at {line['t']:.3f} (version {line['version']})"
                            )
    return found


def test_a_killed_worker_s_keys_move_to_the_others_after_its_lease(
    backend_url: str, group: str, tmp_path: Path
) -> None:
    """SIGKILL one of four workers: no key ever has two owners, and its keys move after its lease."""
    names = [f"w{i}" for i in range(WORKERS)]
    survivors = [name for name in names if name != VICTIM]
    started = time.time()
    procs = {name: _start(backend_url, group, name, tmp_path) for name in names}
    try:
        settled = _wait_for(
            "all four joined, every key owned", lambda: _covered(tmp_path, names), tmp_path
        )
        kill_time = time.time()
        os.kill(procs[VICTIM].pid, signal.SIGKILL)
        assert -signal.SIGKILL == procs[VICTIM].wait(timeout=5)
        covered = _wait_for(
            "the survivors own every key",
            lambda: _covered(tmp_path, survivors, after=kill_time),
            tmp_path,
        )
        stopping = time.time()
        for name in survivors:
            procs[name].send_signal(signal.SIGTERM)
        for name in survivors:
            assert 0 == procs[name].wait(timeout=10), (tmp_path / f"{name}.err").read_text()
        stopped = time.time()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    logs = {name: _read(tmp_path, name) for name in names}
    for name in survivors:
        assert "left" == logs[name][-1].get("event"), f"{name} did not leave on SIGTERM"
    samples = {name: _samples(lines) for name, lines in logs.items()}
    with ir.open_backend(backend_url) as backend:
        final = backend.membership(group).view()
    assert {} == dict(final.members)

    # (1) At no membership version is a key owned by two workers.
    by_version: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for name, lines in samples.items():
        for line in lines:
            by_version[line["version"]][name].update(line["owned"])
    for version, owners in by_version.items():
        seen: dict[int, str] = {}
        for name, owned in owners.items():
            for key in owned:
                assert seen.setdefault(key, name) == name, (
                    f"version {version}: key {key} owned by {seen[key]} and {name}"
                )

    # (2) No survivor owns a key of the victim before the victim's own lease could end.
    last = samples[VICTIM][-1]
    victim_keys = set(last["owned"])
    assert victim_keys, f"the victim owned nothing when killed: {last}"
    assert last["t"] <= kill_time
    victim_deadline = last["t"] + last["expires_in"]
    taken = {
        key: min(
            (
                line["t"]
                for name in survivors
                for line in samples[name]
                if line["version"] > last["version"] and key in line["owned"]
            ),
            default=math.inf,
        )
        for key in victim_keys
    }
    first_taken, all_taken = min(taken.values()), max(taken.values())
    assert first_taken >= victim_deadline, (
        f"a survivor owned a victim's key {victim_deadline - first_taken:.3f} s "
        "before the victim's lease could end"
    )
    assert first_taken >= kill_time
    print(
        f"\n{backend_url.split(':')[0]}: all joined and settled {settled - started:.2f} s "
        f"after the start, survivors left {stopped - stopping:.2f} s after SIGTERM; victim owned "
        f"{len(victim_keys)} keys; its lease ran to kill {victim_deadline - kill_time:+.3f} s; "
        f"first key taken over at kill +{first_taken - kill_time:.3f} s, "
        f"all at kill +{all_taken - kill_time:.3f} s (seen covered at +{covered - kill_time:.2f} s)"
    )

    # (3) and (4) Afterwards every key is owned by exactly one survivor, the victim's too.
    finals = {name: set(samples[name][-1]["owned"]) for name in survivors}
    assert KEYS == sum(len(owned) for owned in finals.values())
    assert set(range(KEYS)) == set().union(*finals.values())
    for key in victim_keys:
        assert 1 == sum(key in owned for owned in finals.values())

    # In wall-clock time, no key had two owners at once, as far as the samples show.
    assert [] == _overlaps(samples)
