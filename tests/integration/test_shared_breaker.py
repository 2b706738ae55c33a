"""A Redis-backed breaker shared by 4 worker processes, with Redis stopped mid-run.

The workers are real processes talking to a real Redis; they are driven line by line over
stdin and answer in JSON on stdout. Redis runs on its own clock, so these tests wait in
real time -- in steps of a fraction of a second, a few seconds per test in all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.servers import PrivateRedis

pytest.importorskip("redis")

WORKER = r"""
import json, sys, threading
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
import invresilience as ir
from invresilience.backends.redis import RedisBreakerStore

url, prefix, name, policy = sys.argv[1:5]
client = redis.Redis.from_url(
    url, retry=Retry(NoBackoff(), 0), socket_timeout=1.0, socket_connect_timeout=1.0
)
breaker = ir.CircuitBreaker(
    name,
    minimum_calls=4,
    failure_rate=0.5,
    window=ir.CountWindow(20),
    open_for=1.0,
    probe_timeout=10.0,
    flush_interval=0.05,
    store=RedisBreakerStore(client, prefix=prefix),
    on_store_error=policy,
    store_retry=0.3,
)
release = threading.Event()
held = []

def say(**answer):
    print(json.dumps(answer), flush=True)

def down():
    raise ConnectionError("dependency down")

def hold():
    say(result="entered")
    release.wait()
    return 1

def run(fn, done):
    try:
        breaker.call(fn)
    except ir.CircuitOpenError:
        say(result="rejected")
    except ConnectionError:
        say(result="failed")
    else:
        say(result=done)

say(result="ready")
for line in sys.stdin:
    command = line.strip()
    if command == "fail":
        run(down, "ok")
    elif command == "ok":
        run(lambda: 1, "ok")
    elif command == "hold":
        thread = threading.Thread(target=run, args=(hold, "released"))
        thread.start()
        held.append(thread)
    elif command == "release":
        release.set()
        for thread in held:
            thread.join()
        held.clear()
    elif command == "state":
        say(result=breaker.state.value)
    elif command == "quit":
        break
"""


class Worker:
    """One worker process running a shared breaker."""

    def __init__(self, url: str, prefix: str, name: str, policy: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, url, prefix, name, policy],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert "ready" == self.read()

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"worker exited with {self.process.wait(5)}"
        answer: dict[str, Any] = json.loads(line)
        return str(answer["result"])

    def ask(self, command: str) -> str:
        self.send(command)
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.send("quit")
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck worker
                self.process.kill()


def _workers(url: str, policy: str, count: int = 4) -> list[Worker]:
    prefix = f"invresilience-test:{uuid.uuid4().hex}"
    return [Worker(url, prefix, "erp", policy) for _ in range(count)]


@pytest.fixture
def workers(redis_url: str) -> Iterator[list[Worker]]:
    """Four workers sharing one breaker through the real Redis."""
    pool = _workers(redis_url, "local")
    try:
        yield pool
    finally:
        for worker in pool:
            worker.close()


def test_four_processes_trip_together_and_elect_one_prober(workers: list[Worker]) -> None:
    """After the threshold all 4 reject; after open_for exactly one of them probes."""
    assert ["failed"] * 4 == [worker.ask("fail") for worker in workers]
    time.sleep(0.1)  # > flush_interval: every worker checks in before its next call
    assert ["rejected"] * 4 == [worker.ask("ok") for worker in workers]

    time.sleep(1.0)  # open_for
    for worker in workers:
        worker.send("hold")
    answers = [worker.read() for worker in workers]
    assert 1 == answers.count("entered"), answers
    assert 3 == answers.count("rejected"), answers

    prober = workers[answers.index("entered")]
    prober.send("release")
    assert "released" == prober.read()
    time.sleep(0.1)
    assert ["ok"] * 4 == [worker.ask("ok") for worker in workers]
    assert ["closed"] * 4 == [worker.ask("state") for worker in workers]


@pytest.mark.services
@pytest.mark.parametrize("policy", ["local", "fail_open", "fail_closed"])
def test_redis_stopped_mid_run(private_redis: PrivateRedis, policy: str) -> None:
    """With Redis down the configured on_store_error holds; back up, the breaker recovers."""
    pool = _workers(private_redis.url, policy)
    try:
        assert ["ok"] * 4 == [worker.ask("ok") for worker in pool]
        private_redis.stop()
        time.sleep(0.1)  # > flush_interval: the next call checks in with the (dead) store

        first = pool[0]
        answers = [first.ask("fail") for _ in range(6)]
        if policy == "fail_closed":
            # The first call finds the store down and is rejected, and so is every later one.
            assert ["rejected"] * 6 == answers
        elif policy == "fail_open":
            # No breaker at all while the store is down: every call goes through.
            assert ["failed"] * 6 == answers
        else:
            # This process's own breaker takes over and trips locally once its window holds
            # minimum_calls (4) calls -- 3 or 4 failures, depending on whether the earlier
            # success had been sent to Redis or was still counted locally.
            failed = answers.count("failed")
            assert failed in (3, 4), answers
            assert ["failed"] * failed + ["rejected"] * (6 - failed) == answers
        # The other processes, which have not failed, act on the same policy.
        expected = "rejected" if policy == "fail_closed" else "ok"
        assert [expected] * 3 == [worker.ask("ok") for worker in pool[1:]]

        private_redis.start()  # empty: Redis keeps nothing on disk here
        time.sleep(1.1)  # > store_retry, and > open_for for the locally tripped breaker
        assert ["ok"] * 4 == [worker.ask("ok") for worker in pool]
        assert ["closed"] * 4 == [worker.ask("state") for worker in pool]
    finally:
        for worker in pool:
            worker.close()
