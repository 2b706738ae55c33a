"""Checked by mypy (never run): the dead-letter queues keep their signatures, and misuse is caught.

Every ``type: ignore`` below marks a misuse that must stay an error: with
``warn_unused_ignores`` a loosened signature makes the ignore unused and fails the check.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from typing_extensions import assert_type

import invresilience as ir
from invresilience.backends.memory import (
    AsyncMemoryDeadLetterStore,
    MemoryBackend,
    MemoryDeadLetterStore,
)
from invresilience.testing import ManualClock
from invresilience.typing import (
    Added,
    AsyncDeadLetterStore,
    Backend,
    DeadLetter,
    DeadLetterStore,
    LetterFilter,
    QueueStats,
    Reason,
)

clock = ManualClock()
store: DeadLetterStore = MemoryDeadLetterStore("orders")
async_store: AsyncDeadLetterStore = AsyncMemoryDeadLetterStore()

queue = ir.DeadLetterQueue(
    store,
    codec=ir.JsonCodec(default=str),
    redact=lambda job: {**job, "card": "****"},
    max_payload_bytes=65536,
    max_letters=None,
    when_full="drop_oldest",
    retention=datetime.timedelta(days=14),
    traceback_limit=4096,
    clock=clock,
)
ir.DeadLetterQueue(store, retention=3600.0)
ir.DeadLetterQueue(store, when_full="block")  # type: ignore[arg-type]
ir.DeadLetterQueue(store, max_letters="many")  # type: ignore[arg-type]
ir.DeadLetterQueue(store, retention="14d")  # type: ignore[arg-type]
ir.DeadLetterQueue(store, clock=object())  # type: ignore[arg-type]
ir.DeadLetterQueue(async_store)  # type: ignore[arg-type]
ir.AsyncDeadLetterQueue(store)  # type: ignore[arg-type]

# -- put and reading letters -------------------------------------------------------------------

letter = queue.put(
    {"sku": "SKU-1"},
    reason="fatal",
    error=ValueError("negative stock"),
    key="order-1",
    fingerprint="sha256:abc",
    attempts=3,
    first_failed_at=datetime.datetime.now(datetime.timezone.utc),
    headers={"message-id": "m-1"},
    id="key-1",
)
assert_type(letter, DeadLetter)
assert_type(queue.put(b"raw bytes"), DeadLetter)
assert_type(letter.payload, bytes)
assert_type(letter.reason, Reason)
assert_type(letter.error_type, str | None)
assert_type(letter.attempts, int)
assert_type(letter.dead_lettered_at, float)
assert_type(letter.sequence, int)
assert_type(queue.decode(letter), Any)
assert_type(queue.get("key-1"), DeadLetter | None)
assert_type(queue.name, str)
queue.put({}, reason="bogus")  # type: ignore[arg-type]
queue.put({}, attempts="3")  # type: ignore[arg-type]
queue.put({}, headers={"retries": 3})  # type: ignore[dict-item]
queue.put({}, first_failed_at="yesterday")  # type: ignore[arg-type]
queue.put({}, error="boom")  # type: ignore[arg-type]
queue.put({}, max_letters=3)  # type: ignore[call-arg]
queue.put({}, "fatal")  # type: ignore[call-arg]
queue.get(5)  # type: ignore[arg-type]

# -- listing, counting, purging ----------------------------------------------------------------

page = queue.list(reason=["fatal", "poison"], key="order-1", since=0.0, limit=50)
assert_type(page, ir.LetterPage)
assert_type(page.letters, tuple[DeadLetter, ...])
assert_type(page.cursor, str | None)
queue.list(cursor=page.cursor, before=datetime.datetime.now(datetime.timezone.utc))
assert_type(queue.iter(reason="exhausted", page_size=10), Iterator[DeadLetter])
assert_type(queue.count(reason="poison"), int)
assert_type(queue.stats(), QueueStats)
assert_type(queue.purge(ids=["key-1"]), int)
assert_type(queue.purge(older_than=datetime.timedelta(days=30)), int)
assert_type(queue.purge(everything=True), int)
assert_type(queue.expire(), int)
queue.list(limit="10")  # type: ignore[arg-type]
queue.list(cursor=5)  # type: ignore[arg-type]
queue.list(reason="bogus")  # type: ignore[arg-type]
queue.list(since="yesterday")  # type: ignore[arg-type]
queue.count(key=5)  # type: ignore[arg-type]
queue.purge(older_than="30d")  # type: ignore[arg-type]
queue.purge(ids=[1, 2])  # type: ignore[list-item]

# -- redrive -------------------------------------------------------------------------------------


def publish(letter: DeadLetter) -> None:
    """Hand a letter to a work queue."""


report = queue.redrive(publish, ids=["key-1"], limit=10, rate=5.0)
assert_type(report, ir.RedriveReport)
assert_type(report.redriven, tuple[str, ...])
assert_type(report.failed, tuple[tuple[str, str], ...])
assert_type(report.total, int)
queue.redrive(publish, rate=ir.RateLimiter(5, burst=1))
queue.redrive(publish, rate="fast")  # type: ignore[arg-type]
queue.redrive(publish, limit=1.5)  # type: ignore[arg-type]
queue.close()

event = ir.DeadLetterEvent(source="orders", kind="evicted", count=1, ids=("key-1",))
assert_type(event.kind, Literal["stored", "rejected", "evicted", "expired", "purged", "redriven"])
ir.DeadLetterEvent(source="orders", kind="deleted")  # type: ignore[arg-type]

# -- values and the store protocol --------------------------------------------------------------

built = DeadLetter.from_exception(
    ValueError("x"), queue="orders", payload=b"{}", reason="exhausted", now=0.0
)
assert_type(built, DeadLetter)
DeadLetter.from_exception(None, queue="orders", payload="{}", reason="fatal", now=0.0)  # type: ignore[arg-type]
assert_type(store.add(built, max_letters=10, evict_oldest=True), Added)
assert_type(
    store.list(LetterFilter(reasons=frozenset({"fatal"})), after=0, limit=10), list[DeadLetter]
)
LetterFilter(reasons={"bogus"})  # type: ignore[arg-type]

backend: Backend = MemoryBackend(clock=clock)
assert_type(backend.dead_letter_queue("orders", max_letters=10), ir.DeadLetterQueue)
assert_type(backend.async_dead_letter_queue("orders"), ir.AsyncDeadLetterQueue)

# -- async ---------------------------------------------------------------------------------------


async def apublish(letter: DeadLetter) -> None:
    """Hand a letter to a work queue, asynchronously."""


async def main() -> None:
    aqueue = ir.AsyncDeadLetterQueue(async_store, max_letters=1000, clock=clock)
    assert_type(await aqueue.put({"sku": "SKU-2"}, reason="invalid"), DeadLetter)
    assert_type(await aqueue.get("key-1"), DeadLetter | None)
    assert_type(await aqueue.list(limit=10), ir.LetterPage)
    assert_type(aqueue.iter(page_size=10), AsyncIterator[DeadLetter])
    async for found in aqueue.iter(reason="fatal"):
        assert_type(found, DeadLetter)
    assert_type(await aqueue.count(), int)
    assert_type(await aqueue.stats(), QueueStats)
    assert_type(await aqueue.purge(everything=True), int)
    assert_type(await aqueue.expire(), int)
    assert_type(await aqueue.redrive(apublish, rate=2.0), ir.RedriveReport)
    await aqueue.put({}, reason="lost")  # type: ignore[arg-type]
    await aqueue.list(limit=None)  # type: ignore[arg-type]
    await aqueue.redrive(apublish, rate="slow")  # type: ignore[arg-type]
    await aqueue.close()
