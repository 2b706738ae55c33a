"""A stream of 1,000 jobs through JobHandler, on every backend, with four consumer threads.

5% of the messages are malformed (undecodable bytes, a missing field, a wrong type), 5%
fail with a fatal error, 10% of the valid ones fail once with a transient error and are
redelivered, and 5% of the well-formed messages are delivered twice (as a broker does after a lost
ack). A tiny in-process broker redelivers what is not acknowledged. At the end: every
valid job took effect exactly once, every bad one is in the dead-letter queue once with
the right reason and its message byte for byte, and every message was acknowledged.
"""

from __future__ import annotations

import collections
import json
import queue
import random
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest

import invresilience as ir

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

JOBS = 1_000
WORKERS = 4


class FatalError(Exception):
    """The ERP refused the SKU for good."""


def _validate(raw: object) -> dict[str, Any]:
    if not isinstance(raw, bytes):
        raise TypeError(f"expected the message body as bytes, got {type(raw).__name__}")
    job = json.loads(raw)
    if not isinstance(job, dict):
        raise TypeError("a job is a JSON object")
    for field, kind in (("id", str), ("sku", str), ("qty", int)):
        if not isinstance(job.get(field), kind):
            raise TypeError(f"field {field!r} must be a {kind.__name__}")
    return job


def _messages(rng: random.Random) -> tuple[list[bytes], dict[str, str]]:
    """The stream, and what each message is: valid, flaky, fatal or malformed."""
    kinds = ["malformed"] * 50 + ["fatal"] * 50 + ["flaky"] * 90 + ["valid"] * 810
    rng.shuffle(kinds)
    messages: list[bytes] = []
    truth: dict[str, str] = {}
    for n, kind in enumerate(kinds):
        job_id = f"job-{n:04d}"
        if kind == "malformed":
            body = [
                b"\xff\xfe not json",
                json.dumps({"id": job_id, "qty": 1}).encode(),  # no sku
                json.dumps({"id": job_id, "sku": "A", "qty": "ten"}).encode(),
            ][n % 3]
        else:
            body = json.dumps({"id": job_id, "sku": f"SKU-{n}", "qty": n % 7 + 1}).encode()
        messages.append(body)
        truth[job_id] = kind
    return messages, truth


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A backend URL: memory, a SQLite file of the test's own, or the shared Redis / PostgreSQL."""
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        yield str(request.getfixturevalue(f"{request.param}_url"))


def test_a_stream_of_jobs_is_processed_once_and_bad_jobs_are_dead_lettered(
    backend_url: str,
) -> None:
    """Every valid job done once, every bad one dead-lettered with its reason, none dropped."""
    rng = random.Random(20261124)
    messages, truth = _messages(rng)
    # Malformed messages have no key to recognise them by: one delivered twice would be
    # stored twice (at least once, never dropped), so only keyed jobs are duplicated here.
    keyed = [n for n, body in enumerate(messages) if _id_of(body)]
    duplicates = set(rng.sample(keyed, JOBS // 20))
    namespace = f"stream-{uuid.uuid4().hex[:12]}"
    effects: collections.Counter[str] = collections.Counter()
    failed_once: set[str] = set()
    lock = threading.Lock()

    def handle(job: dict[str, Any]) -> dict[str, Any]:
        kind = truth[job["id"]]
        if kind == "fatal":
            raise FatalError(f"unknown SKU {job['sku']}")
        with lock:
            if kind == "flaky" and job["id"] not in failed_once:
                failed_once.add(job["id"])
                raise ConnectionError("ERP connection reset")
            effects[job["id"]] += 1
        return {"adjusted": job["qty"]}

    with ir.open_backend(backend_url) as backend:
        guard = ir.Idempotency(backend.idempotency_store(namespace), lease=30.0, heartbeat=False)
        dlq = backend.dead_letter_queue(namespace)
        handler = ir.JobHandler(
            handle,
            key=lambda job: job["id"],
            validate=_validate,
            idempotency=guard,
            dead_letters=dlq,
            max_deliveries=3,
            fatal=FatalError,
        )
        broker: queue.Queue[tuple[bytes, int] | None] = queue.Queue()
        for n, body in enumerate(messages):
            broker.put((body, 1))
            if n in duplicates:
                broker.put((body, 1))
        outcomes: collections.Counter[str] = collections.Counter()
        errors: list[BaseException] = []

        def consume() -> None:
            while True:
                item = broker.get()
                if item is None:
                    return
                body, deliveries = item
                try:
                    outcome = handler.process(body, deliveries=deliveries)
                except BaseException as exc:  # noqa: BLE001 -- the test fails below; keep consuming
                    errors.append(exc)
                    broker.task_done()
                    continue
                with lock:
                    name = type(outcome).__name__
                    if isinstance(outcome, ir.DeadLettered):
                        name += ":duplicate" if outcome.duplicate else f":{outcome.reason}"
                    outcomes[name] += 1
                if not outcome.ack:
                    broker.put((body, deliveries + 1))
                broker.task_done()

        threads = [threading.Thread(target=consume) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        broker.join()
        for _ in threads:
            broker.put(None)
        for thread in threads:
            thread.join()

        assert [] == errors
        valid = sorted(k for k, kind in truth.items() if kind in ("valid", "flaky"))
        assert dict.fromkeys(valid, 1) == dict(effects)
        letters = list(dlq.iter())
        try:
            by_reason = collections.Counter(letter.reason for letter in letters)
            assert {"invalid": 50, "fatal": 50} == dict(by_reason)
            fatal = {letter.key for letter in letters if letter.reason == "fatal"}
            assert {k for k, kind in truth.items() if kind == "fatal"} == fatal
            malformed = sorted(
                body for body in messages if truth.get(_id_of(body), "malformed") == "malformed"
            )
            stored = sorted(letter.payload for letter in letters if letter.reason == "invalid")
            assert malformed == stored
            acknowledged = sum(n for name, n in outcomes.items() if name != "RetryLater")
            assert JOBS + len(duplicates) == acknowledged
            assert len(valid) == outcomes["Done"]
        finally:
            dlq.purge(everything=True)


def _id_of(body: bytes) -> str:
    """The job id of a well-formed message ('' for an undecodable one)."""
    try:
        job = json.loads(body)
    except ValueError:
        return ""
    return (
        str(job.get("id", ""))
        if isinstance(job.get("sku"), str) and isinstance(job.get("qty"), int)
        else ""
    )
