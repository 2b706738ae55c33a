"""Dead-letter queues: the sync and async shells over the memory stores, and letters as data."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import warnings
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import invresilience as ir
from invresilience import _events
from invresilience._core.dlq import (
    REASONS,
    DeadLetter,
    LetterFilter,
    QueueStats,
    check_letter_id,
    check_queue_name,
    decode_cursor,
    encode_cursor,
    letter_from_json,
    letter_id_for_key,
    letter_to_json,
    meta_to_text,
    new_letter_id,
    reasons_of,
    truncate,
)
from invresilience._dlq import PAYLOAD_HEADER
from invresilience.backends.memory import (
    AsyncMemoryDeadLetterStore,
    MemoryBackend,
    MemoryDeadLetterStore,
)
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator

WALL = 1_700_000_000.0  # ManualClock's default wall-clock reading at monotonic 0
UTC = datetime.timezone.utc
JOB = {"sku": "SKU-1", "qty": 2}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store() -> MemoryDeadLetterStore:
    return MemoryDeadLetterStore("orders")


@pytest.fixture
def queue(store: MemoryDeadLetterStore, clock: ManualClock) -> ir.DeadLetterQueue:
    return ir.DeadLetterQueue(store, clock=clock)


def aqueue(clock: ManualClock, **options: Any) -> ir.AsyncDeadLetterQueue:
    """An async queue named "orders" over a fresh memory store."""
    store = AsyncMemoryDeadLetterStore(MemoryDeadLetterStore("orders"))
    return ir.AsyncDeadLetterQueue(store, clock=clock, **options)


@contextlib.contextmanager
def captured() -> Iterator[list[ir.DeadLetterEvent]]:
    """The dead-letter events emitted inside the block (a scoped listener)."""
    events: list[ir.DeadLetterEvent] = []

    def listen(event: ir.Event) -> None:
        if isinstance(event, ir.DeadLetterEvent):
            events.append(event)

    with _events.scoped_listener(listen):
        yield events


class Outer:
    class BoomError(Exception):
        """An exception whose qualified name has a dot."""


def chained_error() -> ValueError:
    """A ValueError raised from a KeyError, with both tracebacks."""
    try:
        try:
            raise KeyError("sku-lookup")
        except KeyError as exc:
            raise ValueError("stock level went negative") from exc
    except ValueError as exc:
        return exc


def raised(exc: BaseException) -> BaseException:
    """*exc* after being raised, so it carries a traceback."""
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 -- any exception will do
        return caught


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class Handler:
    """Stands in for a JobHandler: returns the queued outcomes, records what it was given."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.seen: list[tuple[str, Any]] = []

    def process_letter(self, letter: DeadLetter, job: Any) -> object:
        self.seen.append((letter.id, job))
        return self.outcomes.pop(0)

    async def aprocess_letter(self, letter: DeadLetter, job: Any) -> object:
        self.seen.append((letter.id, job))
        return self.outcomes.pop(0)


class ClosingStore:
    """Delegates to a memory store and records close()."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.queue = inner.queue
        self.add = inner.add
        self.closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def close(self) -> None:
        self.closed = True


class AsyncClosingStore(ClosingStore):
    async def close(self) -> None:  # type: ignore[override]
        self.closed = True


# -- put: what a letter records -----------------------------------------------------------


def test_put_records_every_field(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """put() stores payload, reason, key, fingerprint, error, attempts, times and headers."""
    clock.advance(5.0)
    error = chained_error()
    letter = queue.put(
        JOB,
        reason="fatal",
        error=error,
        key="order-1",
        fingerprint="sha256:abc",
        attempts=3,
        first_failed_at=WALL - 60.0,
        headers={"message-id": "m-1"},
    )
    assert 32 == len(letter.id)
    assert check_letter_id(letter.id) is None
    assert "orders" == letter.queue
    assert b'{"qty":2,"sku":"SKU-1"}' == letter.payload
    assert "fatal" == letter.reason
    assert "order-1" == letter.key
    assert "sha256:abc" == letter.fingerprint
    assert "builtins.ValueError" == letter.error_type
    assert "stock level went negative" == letter.error_message
    assert 3 == letter.attempts
    assert WALL - 60.0 == letter.first_failed_at
    assert WALL + 5.0 == letter.last_failed_at
    assert WALL + 5.0 == letter.dead_lettered_at
    assert {"message-id": "m-1"} == dict(letter.headers)
    assert 1 == letter.sequence
    assert letter == queue.get(letter.id)
    assert JOB == queue.decode(letter)


def test_traceback_includes_chained_causes(queue: ir.DeadLetterQueue) -> None:
    """The stored traceback holds the cause, the chaining line and the final error."""
    letter = queue.put(JOB, reason="fatal", error=chained_error())
    assert letter.traceback is not None
    assert "KeyError: 'sku-lookup'" in letter.traceback
    assert "direct cause of the following exception" in letter.traceback
    assert letter.traceback.rstrip().endswith("ValueError: stock level went negative")
    assert "chained_error" in letter.traceback


def test_error_type_is_module_and_qualified_name(queue: ir.DeadLetterQueue) -> None:
    """error_type is "module.Qualname", nested classes included."""
    letter = queue.put(JOB, error=raised(Outer.BoomError("bang")))
    assert f"{__name__}.Outer.BoomError" == letter.error_type
    assert "bang" == letter.error_message


def test_put_without_error_leaves_error_fields_empty(
    queue: ir.DeadLetterQueue, clock: ManualClock
) -> None:
    """Without an error the error fields are None and first_failed_at is now."""
    clock.advance(2.0)
    letter = queue.put(JOB, reason="crash_loop")
    assert (None, None, None) == (letter.error_type, letter.error_message, letter.traceback)
    assert "manual" == queue.put(JOB).reason
    assert WALL + 2.0 == letter.first_failed_at == letter.last_failed_at
    assert 1 == letter.attempts
    assert {} == dict(letter.headers)


def test_first_failed_at_takes_aware_datetimes(queue: ir.DeadLetterQueue) -> None:
    """An aware datetime becomes epoch seconds; a naive one is refused naming the field."""
    at = datetime.datetime(2023, 11, 14, 22, 0, tzinfo=UTC)
    assert at.timestamp() == queue.put(JOB, first_failed_at=at).first_failed_at
    with pytest.raises(ir.ConfigurationError) as info:
        queue.put(JOB, first_failed_at=datetime.datetime(2023, 11, 14, 22, 0))  # noqa: DTZ001
    assert "first_failed_at" == info.value.field
    assert 1 == queue.count()


def test_long_message_and_traceback_are_cut_in_the_middle(store: MemoryDeadLetterStore) -> None:
    """Message and traceback are cut to traceback_limit, head and tail kept, with a marker."""
    queue = ir.DeadLetterQueue(store, traceback_limit=200, clock=ManualClock())
    message = "A" * 500 + "B" * 500
    letter = queue.put(JOB, error=raised(RuntimeError(message)))
    assert letter.error_message is not None
    assert letter.traceback is not None
    assert 200 == len(letter.error_message)
    assert letter.error_message.startswith("AAAA")
    assert letter.error_message.endswith("BBBB")
    assert "\n... [800 characters cut] ...\n" in letter.error_message
    assert 200 == len(letter.traceback)
    assert letter.traceback.startswith("Traceback (most recent call last):")
    assert letter.traceback.rstrip().endswith("BBBB")
    assert "characters cut] ..." in letter.traceback


def test_truncate_pins_its_shape() -> None:
    """truncate keeps a third of the room at the head and the rest at the tail."""
    assert "012\n... [60 characters cut] ...\n23456789" == truncate("0123456789" * 10, 40)
    assert "short" == truncate("short", 5)
    # No room for the marker: a plain cut.
    assert "01234" == truncate("0123456789", 5)


def test_tiny_traceback_limit_cuts_without_marker(store: MemoryDeadLetterStore) -> None:
    """A limit smaller than the marker cuts plainly to that many characters."""
    queue = ir.DeadLetterQueue(store, traceback_limit=5, clock=ManualClock())
    letter = queue.put(JOB, error=raised(RuntimeError("0123456789")))
    assert "01234" == letter.error_message
    assert "Trace" == letter.traceback


def test_unprintable_error_is_still_dead_lettered(queue: ir.DeadLetterQueue) -> None:
    """An exception whose __str__ raises is kept with a placeholder message, not lost."""
    letter = queue.put(JOB, reason="fatal", error=raised(UnprintableError()))
    assert "<UnprintableError: str() failed>" == letter.error_message
    assert f"{__name__}.UnprintableError" == letter.error_type
    assert 1 == queue.count()


def test_from_exception_builds_a_letter_directly() -> None:
    """DeadLetter.from_exception fills the error fields and the three times."""
    letter = DeadLetter.from_exception(
        raised(ValueError("x" * 50)),
        queue="q",
        payload=b"raw",
        reason="exhausted",
        now=10.0,
        id="letter-1",
        key="k",
        fingerprint="fp",
        attempts=4,
        first_failed_at=3.0,
        headers={"h": "v"},
        traceback_limit=40,
    )
    assert "letter-1" == letter.id
    assert "q" == letter.queue
    assert b"raw" == letter.payload
    assert "builtins.ValueError" == letter.error_type
    assert 40 == len(letter.error_message or "")
    assert 40 == len(letter.traceback or "")
    assert (3.0, 10.0, 10.0) == (
        letter.first_failed_at,
        letter.last_failed_at,
        letter.dead_lettered_at,
    )
    assert (4, "k", "fp", {"h": "v"}) == (
        letter.attempts,
        letter.key,
        letter.fingerprint,
        dict(letter.headers),
    )
    assert 0 == letter.sequence


def test_from_exception_without_error() -> None:
    """With no exception the error fields are None and the times all equal now."""
    letter = DeadLetter.from_exception(None, queue="q", payload=b"", reason="crash_loop", now=7.0)
    assert (None, None, None) == (letter.error_type, letter.error_message, letter.traceback)
    assert (7.0, 7.0, 7.0) == (
        letter.first_failed_at,
        letter.last_failed_at,
        letter.dead_lettered_at,
    )
    assert 32 == len(letter.id)
    assert {} == dict(letter.headers)


# -- put: ids, payloads, redaction, limits ------------------------------------------------


def test_same_id_twice_is_stored_once(queue: ir.DeadLetterQueue) -> None:
    """A second put with the same id changes nothing and returns the first letter."""
    with captured() as events:
        first = queue.put({"v": 1}, id="key-abc", reason="fatal")
        second = queue.put({"v": 2}, id="key-abc", reason="exhausted")
    assert first == second
    assert {"v": 1} == queue.decode(second)
    assert 1 == queue.count()
    assert ["stored"] == [e.kind for e in events]


def test_redact_runs_before_encoding(store: MemoryDeadLetterStore) -> None:
    """The redact hook's return value is what gets encoded; the caller's object is untouched."""
    seen: list[Any] = []

    def redact(payload: Any) -> Any:
        seen.append(payload)
        return {**payload, "card": "****"}

    queue = ir.DeadLetterQueue(store, redact=redact, clock=ManualClock())
    job = {"sku": "A", "card": "4111111111111111"}
    letter = queue.put(job)
    assert [job] == seen
    assert {"sku": "A", "card": "****"} == queue.decode(letter)
    assert b"4111" not in letter.payload
    assert "4111111111111111" == job["card"]
    odd = {"card": "4111111111111111", "tags": {"x"}}
    kept = queue.put(odd, reason="invalid")
    assert repr({"card": "****", "tags": {"x"}}) == queue.decode(kept)


def test_raw_bytes_are_kept_exactly_and_not_redacted(store: MemoryDeadLetterStore) -> None:
    """A bytes payload is stored as given (redact not called) and decodes to bytes."""
    calls: list[Any] = []
    queue = ir.DeadLetterQueue(store, redact=calls.append, clock=ManualClock())
    body = b"\xff\x00not json at all"
    letter = queue.put(body, reason="invalid")
    assert body == letter.payload
    assert "raw" == letter.headers[PAYLOAD_HEADER]
    assert body == queue.decode(letter)
    assert [] == calls
    assert b"ab" == queue.decode(queue.put(bytearray(b"ab")))
    assert b"cd" == queue.decode(queue.put(memoryview(b"cd")))


def test_unencodable_payload_raises_codec_error(queue: ir.DeadLetterQueue) -> None:
    """A payload the codec refuses raises CodecError, and nothing is stored."""
    with pytest.raises(ir.CodecError):
        queue.put({"x": object()}, reason="fatal")
    assert 0 == queue.count()


def test_unencodable_invalid_payload_keeps_its_repr(queue: ir.DeadLetterQueue) -> None:
    """For reason "invalid" the repr is stored, and decode() returns that text."""
    job = {"when": {1, 2}}
    letter = queue.put(job, reason="invalid")
    assert "repr" == letter.headers[PAYLOAD_HEADER]
    assert repr(job) == queue.decode(letter)
    assert repr(job).encode() == letter.payload


def test_caller_cannot_set_the_payload_header(queue: ir.DeadLetterQueue) -> None:
    """A caller's own payload header is dropped, so decode() reads the payload rightly."""
    letter = queue.put(JOB, headers={PAYLOAD_HEADER: "raw", "tenant": "t1"})
    assert {"tenant": "t1"} == dict(letter.headers)
    assert JOB == queue.decode(letter)
    raw = queue.put(b"\x00", headers={PAYLOAD_HEADER: "repr"})
    assert "raw" == raw.headers[PAYLOAD_HEADER]


def test_decode_of_a_corrupt_payload_raises_codec_error(queue: ir.DeadLetterQueue) -> None:
    """A letter whose payload does not decode with the codec raises CodecError."""
    letter = queue.put(JOB)
    with pytest.raises(ir.CodecError):
        queue.decode(attrs.evolve(letter, payload=b"{nope"))


def test_payload_over_the_limit_is_refused(store: MemoryDeadLetterStore) -> None:
    """An encoded payload over max_payload_bytes raises with size, limit and queue; none stored."""
    queue = ir.DeadLetterQueue(store, max_payload_bytes=20, clock=ManualClock())
    with pytest.raises(ir.PayloadTooLargeError) as info:
        queue.put({"blob": "x" * 20})
    assert (31, 20, "orders") == (info.value.size, info.value.limit, info.value.queue)
    with pytest.raises(ir.PayloadTooLargeError):
        queue.put(b"y" * 21)
    assert 0 == queue.count()
    assert b"z" * 20 == queue.put(b"z" * 20).payload


def test_full_queue_rejects_with_an_event(store: MemoryDeadLetterStore) -> None:
    """At max_letters with "reject", put raises DeadLetterQueueFullError and emits "rejected"."""
    queue = ir.DeadLetterQueue(store, max_letters=2, clock=ManualClock())
    queue.put(JOB)
    queue.put(JOB)
    with captured() as events, pytest.raises(ir.DeadLetterQueueFullError) as info:
        queue.put(JOB, id="third")
    assert ("orders", 2) == (info.value.queue, info.value.limit)
    assert [ir.DeadLetterEvent(source="orders", kind="rejected", count=1, ids=("third",))] == events
    assert 2 == queue.count()
    assert queue.get("third") is None


def test_drop_oldest_evicts_with_an_event(store: MemoryDeadLetterStore) -> None:
    """At max_letters with "drop_oldest", the oldest letter goes and "evicted" names it."""
    queue = ir.DeadLetterQueue(store, max_letters=2, when_full="drop_oldest", clock=ManualClock())
    a = queue.put(JOB, id="a")
    queue.put(JOB, id="b")
    with captured() as events:
        queue.put(JOB, id="c", reason="poison")
    assert [
        ir.DeadLetterEvent(source="orders", kind="evicted", count=1, ids=(a.id,)),
        ir.DeadLetterEvent(source="orders", kind="stored", count=1, ids=("c",), reason="poison"),
    ] == events
    assert ["b", "c"] == [letter.id for letter in queue.iter()]


def test_no_cap_with_max_letters_none(store: MemoryDeadLetterStore) -> None:
    """max_letters=None never refuses."""
    queue = ir.DeadLetterQueue(store, max_letters=None, clock=ManualClock())
    for _ in range(5):
        queue.put(JOB)
    assert 5 == queue.count()


# -- retention ------------------------------------------------------------------------------


def test_expire_deletes_letters_older_than_retention(
    store: MemoryDeadLetterStore, clock: ManualClock
) -> None:
    """expire() purges letters older than retention and emits "expired" with the count."""
    queue = ir.DeadLetterQueue(store, retention=60.0, clock=clock)
    queue.put(JOB, id="old")
    clock.advance(30.0)
    queue.put(JOB, id="young")
    clock.advance(31.0)
    with captured() as events:
        assert 1 == queue.expire()
        assert 0 == queue.expire()
    assert [ir.DeadLetterEvent(source="orders", kind="expired", count=1)] == events
    assert ["young"] == [letter.id for letter in queue.iter()]


def test_expire_without_retention_does_nothing(
    queue: ir.DeadLetterQueue, clock: ManualClock
) -> None:
    """Without retention, expire() deletes nothing."""
    queue.put(JOB)
    clock.advance(10.0**9)
    assert 0 == queue.expire()
    assert 1 == queue.count()


def test_put_sweeps_retention_every_tenth_of_it(
    store: MemoryDeadLetterStore, clock: ManualClock
) -> None:
    """put() expires old letters, at most once per retention / 10."""
    queue = ir.DeadLetterQueue(store, retention=datetime.timedelta(seconds=100), clock=clock)
    queue.put(JOB, id="a")  # sweeps at 0; next sweep due at 10
    clock.advance(95.0)
    queue.put(JOB, id="b")  # sweeps at 95 (nothing old yet); next due at 105
    clock.advance(6.0)
    queue.put(JOB, id="c")  # 101: "a" is over 100 s old, but no sweep is due
    assert ["a", "b", "c"] == [letter.id for letter in queue.iter()]
    clock.advance(4.0)
    with captured() as events:
        queue.put(JOB, id="d")  # 105: sweep
    assert ["b", "c", "d"] == [letter.id for letter in queue.iter()]
    assert ["expired", "stored"] == [e.kind for e in events]


def test_put_sweeps_at_least_every_minute(store: MemoryDeadLetterStore, clock: ManualClock) -> None:
    """With a long retention the sweep interval is capped at 60 seconds."""
    queue = ir.DeadLetterQueue(store, retention=86400.0, clock=clock)

    def plant(letter_id: str) -> None:
        old = DeadLetter.from_exception(
            None,
            queue="orders",
            payload=b"{}",
            reason="manual",
            now=WALL - 2 * 86400.0,
            id=letter_id,
        )
        store.add(old)

    plant("old-1")
    queue.put(JOB, id="a")  # first put sweeps
    assert queue.get("old-1") is None
    plant("old-2")
    clock.advance(59.0)
    queue.put(JOB, id="b")
    assert queue.get("old-2") is not None
    clock.advance(1.0)
    queue.put(JOB, id="c")
    assert queue.get("old-2") is None


# -- listing ----------------------------------------------------------------------------------


def test_list_pages_with_a_cursor(queue: ir.DeadLetterQueue) -> None:
    """Pages of limit letters, oldest first; the cursor continues; the last page's is None."""
    ids = [queue.put(JOB, id=f"l{i}").id for i in range(5)]
    first = queue.list(limit=2)
    assert ids[:2] == [letter.id for letter in first.letters]
    assert first.cursor is not None
    second = queue.list(limit=2, cursor=first.cursor)
    assert ids[2:4] == [letter.id for letter in second.letters]
    last = queue.list(limit=2, cursor=second.cursor)
    assert ids[4:] == [letter.id for letter in last.letters]
    assert last.cursor is None


def test_list_exact_fit_has_no_cursor(queue: ir.DeadLetterQueue) -> None:
    """When the page holds exactly the remaining letters, its cursor is None."""
    for i in range(4):
        queue.put(JOB, id=f"l{i}")
    first = queue.list(limit=2)
    second = queue.list(limit=2, cursor=first.cursor)
    assert (2, None) == (len(second.letters), second.cursor)
    assert (
        ir.LetterPage(letters=(), cursor=None)
        == ir.DeadLetterQueue(MemoryDeadLetterStore("empty"), clock=ManualClock()).list()
    )


def test_list_cursor_sees_letters_stored_later(queue: ir.DeadLetterQueue) -> None:
    """Letters stored after a page appear on later pages, in order."""
    queue.put(JOB, id="a")
    queue.put(JOB, id="b")
    page = queue.list(limit=1)
    queue.put(JOB, id="c")
    rest = queue.list(limit=10, cursor=page.cursor)
    assert ["b", "c"] == [letter.id for letter in rest.letters]


@pytest.mark.parametrize("cursor", ["x", "s-1", "s01", "", 5])
def test_bad_cursor_is_refused(queue: ir.DeadLetterQueue, cursor: Any) -> None:
    """A cursor no listing returned raises ConfigurationError naming "cursor"."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.list(cursor=cursor)
    assert "cursor" == info.value.field


@pytest.mark.parametrize("limit", [0, -1, True, 2.5])
def test_bad_limit_is_refused(queue: ir.DeadLetterQueue, limit: Any) -> None:
    """list(limit=) must be an int >= 1."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.list(limit=limit)
    assert "limit" == info.value.field


def test_iter_crosses_pages(queue: ir.DeadLetterQueue) -> None:
    """iter() yields every letter, oldest first, across pages (exact multiples included)."""
    ids = [queue.put(JOB, id=f"l{i}").id for i in range(5)]
    assert ids == [letter.id for letter in queue.iter(page_size=2)]
    queue.purge(ids=["l4"])
    assert ids[:4] == [letter.id for letter in queue.iter(page_size=2)]
    assert ids[:4] == [letter.id for letter in queue.iter(page_size=1)]


def test_iter_checks_arguments_at_the_call(queue: ir.DeadLetterQueue) -> None:
    """iter() refuses a bad page_size or filter when called, not at the first next()."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.iter(page_size=0)
    assert "page_size" == info.value.field
    with pytest.raises(ir.ConfigurationError):
        queue.iter(reason="bogus")  # type: ignore[arg-type]


def _filled(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """Four letters 10 s apart: a (fatal, k1), b (exhausted, k2), c (fatal, k2), d (poison)."""
    for letter_id, reason, key in [
        ("a", "fatal", "k1"),
        ("b", "exhausted", "k2"),
        ("c", "fatal", "k2"),
        ("d", "poison", None),
    ]:
        queue.put(JOB, id=letter_id, reason=reason, key=key)  # type: ignore[arg-type]
        clock.advance(10.0)


def _ids_of(letters: Any) -> list[str]:
    return [letter.id for letter in letters]


def test_filters_by_reason_key_and_time(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """reason(s), key, since and before select letters; every condition must hold."""
    _filled(queue, clock)
    assert ["a", "c"] == _ids_of(queue.list(reason="fatal").letters)
    assert ["a", "b", "c"] == _ids_of(queue.iter(reason=["fatal", "exhausted"]))
    assert ["b", "c"] == _ids_of(queue.list(key="k2").letters)
    assert ["c"] == _ids_of(queue.list(key="k2", reason="fatal").letters)
    assert ["b", "c", "d"] == _ids_of(queue.list(since=WALL + 10.0).letters)
    assert ["a", "b"] == _ids_of(queue.list(before=WALL + 20.0).letters)
    assert ["b"] == _ids_of(queue.list(since=WALL + 5, before=WALL + 20).letters)
    aware = datetime.datetime.fromtimestamp(WALL + 20.0, UTC)
    assert ["c", "d"] == _ids_of(queue.list(since=aware).letters)
    assert ["a", "b"] == _ids_of(queue.list(before=aware).letters)
    assert 2 == queue.count(before=aware)
    assert 1 == queue.count(reason="poison")
    assert 4 == queue.count()


@pytest.mark.parametrize("field", ["since", "before"])
def test_naive_datetimes_are_refused(queue: ir.DeadLetterQueue, field: str) -> None:
    """A naive datetime cannot be placed in time: ConfigurationError naming the field."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.list(**{field: datetime.datetime(2024, 1, 1)})  # noqa: DTZ001
    assert field == info.value.field


@pytest.mark.parametrize("value", [math.nan, math.inf, "yesterday", True])
def test_bad_times_are_refused(queue: ir.DeadLetterQueue, value: Any) -> None:
    """since= must be finite epoch seconds or an aware datetime."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.count(since=value)
    assert "since" == info.value.field


@pytest.mark.parametrize("reason", ["bogus", [], ["fatal", "bogus"], 5])
def test_bad_reasons_are_refused(queue: ir.DeadLetterQueue, reason: Any) -> None:
    """An unknown reason, an empty set or a non-reason raises ConfigurationError("reason")."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.count(reason=reason)
    assert "reason" == info.value.field
    assert "must be one or more of exhausted" in str(info.value)


def test_bad_key_filter_is_refused(queue: ir.DeadLetterQueue) -> None:
    """A key filter must be a str."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.list(key=5)  # type: ignore[arg-type]
    assert "key" == info.value.field


def test_stats_counts_per_reason(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """stats() has the total, the count per reason (in REASONS order) and oldest/newest."""
    assert QueueStats(total=0) == queue.stats()
    _filled(queue, clock)
    stats = queue.stats()
    assert (
        QueueStats(
            total=4,
            by_reason={"exhausted": 1, "fatal": 2, "poison": 1},
            oldest=WALL,
            newest=WALL + 30.0,
        )
        == stats
    )
    assert ["exhausted", "fatal", "poison"] == list(stats.by_reason)


# -- purge ------------------------------------------------------------------------------------


def test_purge_by_ids(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """purge(ids=) deletes those letters (absent ids ignored) and says how many."""
    _filled(queue, clock)
    with captured() as events:
        assert 2 == queue.purge(ids=["a", "c", "missing"])
    assert ["b", "d"] == _ids_of(queue.iter())
    assert [ir.DeadLetterEvent(source="orders", kind="purged", count=2)] == events


def test_purge_by_filter(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """purge(reason=, key=, since=) deletes what the filter selects."""
    _filled(queue, clock)
    assert 2 == queue.purge(reason="fatal")
    assert 1 == queue.purge(key="k2")
    assert 0 == queue.purge(since=WALL + 1000)
    assert ["d"] == _ids_of(queue.iter())


def test_purge_older_than(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """older_than= (seconds or timedelta) deletes letters older than that, by the clock."""
    _filled(queue, clock)  # a at 0, b at 10, c at 20, d at 30; now 40
    assert 1 == queue.purge(older_than=35.0)
    assert 2 == queue.purge(older_than=datetime.timedelta(seconds=15))
    assert ["d"] == _ids_of(queue.iter())


def test_purge_everything(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """everything=True deletes every letter."""
    _filled(queue, clock)
    assert 4 == queue.purge(everything=True)
    assert 0 == queue.count()


def test_purge_needs_a_selection(queue: ir.DeadLetterQueue) -> None:
    """purge() with no ids, filter or everything=True refuses to run."""
    queue.put(JOB)
    with pytest.raises(ir.ConfigurationError) as info:
        queue.purge()
    assert "purge()" == info.value.field
    assert 1 == queue.count()


@pytest.mark.parametrize("older_than", [0, -5.0, math.inf, "1d", True])
def test_bad_older_than_is_refused(queue: ir.DeadLetterQueue, older_than: Any) -> None:
    """older_than= must be a positive, finite number of seconds."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.purge(older_than=older_than)
    assert "older_than" == info.value.field


@pytest.mark.parametrize("ids", ["a", ["ok", "not ok"], [5]])
def test_bad_ids_are_refused(queue: ir.DeadLetterQueue, ids: Any) -> None:
    """ids= must be an iterable of valid letter ids (a lone str is refused)."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.purge(ids=ids)
    assert "ids" == info.value.field


# -- redrive -----------------------------------------------------------------------------------


def test_redrive_to_a_callable(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """A callable that returns handles the letter: it leaves the queue, oldest first."""
    _filled(queue, clock)
    seen: list[str] = []
    with captured() as events:
        report = queue.redrive(lambda letter: seen.append(letter.id))
    assert ["a", "b", "c", "d"] == seen
    assert ir.RedriveReport(redriven=("a", "b", "c", "d")) == report
    assert 4 == report.total
    assert 0 == queue.count()
    assert [
        ir.DeadLetterEvent(source="orders", kind="redriven", count=4, ids=("a", "b", "c", "d"))
    ] == events


def test_redrive_failure_keeps_the_letter(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """A raising target keeps the letter: attempts + 1, last failure now, new error recorded."""
    before = queue.put(JOB, id="a", reason="fatal", error=raised(ValueError("first")))
    clock.advance(100.0)

    def target(letter: DeadLetter) -> None:
        raise RuntimeError("still broken")

    report = queue.redrive(target)
    assert (("a", "RuntimeError: still broken"),) == report.failed
    assert ((), ()) == (report.redriven, report.skipped)
    after = queue.get("a")
    assert after is not None
    assert before.attempts + 1 == after.attempts
    assert WALL + 100.0 == after.last_failed_at
    assert before.first_failed_at == after.first_failed_at
    assert before.dead_lettered_at == after.dead_lettered_at
    assert before.sequence == after.sequence
    assert "fatal" == after.reason
    assert "builtins.RuntimeError" == after.error_type
    assert "still broken" == after.error_message
    assert after.traceback is not None
    assert "RuntimeError: still broken" in after.traceback
    assert before.payload == after.payload


def test_redrive_to_a_job_handler_reads_outcomes(
    queue: ir.DeadLetterQueue, clock: ManualClock
) -> None:
    """process_letter outcomes: Done redriven, Replayed skipped, RetryLater/DeadLettered failed."""
    for i in range(4):
        queue.put({"n": i}, id=f"l{i}", reason="exhausted", error=raised(ValueError("old")))
    clock.advance(1.0)
    handler = Handler(
        ir.Done("ok"),
        ir.Replayed("ok"),
        ir.RetryLater(5.0, raised(TimeoutError("slow"))),
        ir.DeadLettered("poison"),
    )
    report = queue.redrive(handler)
    assert [("l0", {"n": 0}), ("l1", {"n": 1}), ("l2", {"n": 2}), ("l3", {"n": 3})] == handler.seen
    assert ("l0",) == report.redriven
    assert ("l1",) == report.skipped
    assert (("l2", "TimeoutError: slow"), ("l3", "failed again")) == report.failed
    retried = queue.get("l2")
    poisoned = queue.get("l3")
    assert retried is not None
    assert poisoned is not None
    assert ("exhausted", "builtins.TimeoutError", 2) == (
        retried.reason,
        retried.error_type,
        retried.attempts,
    )
    # DeadLettered without an error: the reason changes, the old error stays.
    assert ("poison", "builtins.ValueError", "old", 2) == (
        poisoned.reason,
        poisoned.error_type,
        poisoned.error_message,
        poisoned.attempts,
    )
    assert WALL + 1.0 == poisoned.last_failed_at
    assert ["l2", "l3"] == _ids_of(queue.iter())


def test_redrive_dead_lettered_with_error_replaces_both(queue: ir.DeadLetterQueue) -> None:
    """A DeadLettered outcome with an error updates reason and error fields."""
    queue.put(JOB, id="a", reason="exhausted")
    report = queue.redrive(Handler(ir.DeadLettered("fatal", "a", raised(KeyError("gone")))))
    letter = queue.get("a")
    assert letter is not None
    assert ("fatal", "builtins.KeyError", "'gone'") == (
        letter.reason,
        letter.error_type,
        letter.error_message,
    )
    assert (("a", "KeyError: 'gone'"),) == report.failed


def test_redrive_callable_returning_an_outcome_is_read(queue: ir.DeadLetterQueue) -> None:
    """A plain callable may return an outcome too: RetryLater keeps the letter."""
    queue.put(JOB, id="a")
    report = queue.redrive(lambda letter: ir.RetryLater(1.0))
    assert (("a", "failed again"),) == report.failed
    assert 1 == queue.count()


def test_redrive_selected_ids_in_order(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """ids= redrives those letters in the order given; absent ids and repeats are skipped."""
    _filled(queue, clock)
    seen: list[str] = []
    report = queue.redrive(lambda letter: seen.append(letter.id), ids=["c", "missing", "a", "c"])
    assert ["c", "a"] == seen
    assert ("c", "a") == report.redriven
    assert ["b", "d"] == _ids_of(queue.iter())


def test_redrive_repeated_failing_id_is_tried_once(queue: ir.DeadLetterQueue) -> None:
    """An id given twice is redriven once: one failure, one more attempt."""
    queue.put(JOB, id="a")

    def target(letter: DeadLetter) -> None:
        raise RuntimeError("no")

    report = queue.redrive(target, ids=["a", "a"])
    assert 1 == len(report.failed)
    letter = queue.get("a")
    assert letter is not None
    assert 2 == letter.attempts


def test_redrive_filter_and_limit(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """The filter selects the letters and limit= stops after that many."""
    _filled(queue, clock)
    assert ("a",) == queue.redrive(lambda letter: None, reason="fatal", limit=1).redriven
    assert ("b",) == queue.redrive(lambda letter: None, key="k2", limit=1).redriven
    assert ("c",) == queue.redrive(lambda letter: None, since=WALL + 15, before=WALL + 25).redriven
    assert ["d"] == _ids_of(queue.iter())


def test_redrive_limit_counts_failures(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """Failed letters count towards limit=."""
    _filled(queue, clock)

    def target(letter: DeadLetter) -> None:
        raise ValueError("x")

    assert 2 == queue.redrive(target, limit=2).total


def test_redrive_at_a_rate_paces_with_the_clock(
    queue: ir.DeadLetterQueue, clock: ManualClock
) -> None:
    """rate=10 spaces five letters 0.1 s apart: the clock moves 0.4 s."""
    for i in range(5):
        queue.put(JOB, id=f"l{i}")
    start = clock.monotonic()
    report = queue.redrive(lambda letter: None, rate=10)
    assert 5 == len(report.redriven)
    assert 0.4 == pytest.approx(clock.monotonic() - start)
    assert [pytest.approx(0.1)] * 4 == clock.sleeps


def test_redrive_through_an_admission(queue: ir.DeadLetterQueue, clock: ManualClock) -> None:
    """rate= a RateLimiter takes a permit per letter, waiting on the clock."""
    for i in range(5):
        queue.put(JOB, id=f"l{i}")
    limiter = ir.RateLimiter(10, burst=1, clock=clock)
    start = clock.monotonic()
    report = queue.redrive(lambda letter: None, rate=limiter)
    assert 5 == len(report.redriven)
    assert 0.4 == pytest.approx(clock.monotonic() - start)


@pytest.mark.parametrize("rate", [0, -1.0, math.nan, math.inf, True, "fast"])
def test_bad_rate_is_refused(queue: ir.DeadLetterQueue, rate: Any) -> None:
    """rate= must be positive letters per second or an Admission."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.redrive(lambda letter: None, rate=rate)
    assert "rate" == info.value.field


def test_redrive_bad_limit_and_target_are_refused(queue: ir.DeadLetterQueue) -> None:
    """limit= must be an int >= 1; to= must be callable or have process_letter."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.redrive(lambda letter: None, limit=0)
    assert "limit" == info.value.field
    with pytest.raises(ir.ConfigurationError) as info:
        queue.redrive(object())
    assert "to" == info.value.field


def test_base_exception_in_target_propagates(queue: ir.DeadLetterQueue) -> None:
    """KeyboardInterrupt in the target propagates and leaves the letter untouched."""
    stored = queue.put(JOB, id="a")

    def target(letter: DeadLetter) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        queue.redrive(target)
    assert stored == queue.get("a")


def test_async_target_on_a_sync_queue_is_refused(queue: ir.DeadLetterQueue) -> None:
    """An async callable never runs under the sync redrive: refused, the letter kept."""
    stored = queue.put(JOB, id="a")
    ran: list[str] = []

    async def target(letter: DeadLetter) -> None:
        ran.append(letter.id)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would fail the test
        with pytest.raises(ir.ConfigurationError) as info:
            queue.redrive(target)
    assert "to" == info.value.field
    assert [] == ran
    assert stored == queue.get("a")


def test_awaitable_target_on_a_sync_queue_is_refused(queue: ir.DeadLetterQueue) -> None:
    """A target returning some other awaitable is refused too, the letter kept."""

    class Later:
        def __await__(self) -> Any:
            yield None

    stored = queue.put(JOB, id="a")
    with pytest.raises(ir.ConfigurationError):
        queue.redrive(lambda letter: Later())
    assert stored == queue.get("a")


def test_redrive_of_an_empty_queue(queue: ir.DeadLetterQueue) -> None:
    """Redriving nothing reports nothing."""
    assert ir.RedriveReport() == queue.redrive(lambda letter: None)
    assert 0 == ir.RedriveReport().total


# -- events ------------------------------------------------------------------------------------


def test_events_are_built_only_with_a_listener(
    queue: ir.DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a listener nothing is emitted; with one, each operation emits its event."""
    emitted: list[_events.Event] = []
    monkeypatch.setattr(_events, "emit", emitted.append)
    queue.put(JOB, id="a")
    queue.redrive(lambda letter: None)
    queue.purge(everything=True)
    assert [] == emitted
    with _events.scoped_listener(lambda event: None):
        queue.put(JOB, id="b", reason="fatal")
        queue.redrive(lambda letter: None)
        queue.purge(everything=True)
    assert [
        ir.DeadLetterEvent(source="orders", kind="stored", count=1, ids=("b",), reason="fatal"),
        ir.DeadLetterEvent(source="orders", kind="redriven", count=1, ids=("b",)),
    ] == emitted  # a purge or a redrive that removed nothing says nothing


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"codec": object()}, "DeadLetterQueue.codec"),
        ({"redact": "strip"}, "DeadLetterQueue.redact"),
        ({"max_payload_bytes": 0}, "DeadLetterQueue.max_payload_bytes"),
        ({"max_payload_bytes": None}, "DeadLetterQueue.max_payload_bytes"),
        ({"max_letters": 0}, "DeadLetterQueue.max_letters"),
        ({"max_letters": True}, "DeadLetterQueue.max_letters"),
        ({"when_full": "block"}, "DeadLetterQueue.when_full"),
        ({"retention": 0}, "DeadLetterQueue.retention"),
        ({"retention": datetime.timedelta(0)}, "DeadLetterQueue.retention"),
        ({"retention": "1d"}, "DeadLetterQueue.retention"),
        ({"retention": math.nan}, "DeadLetterQueue.retention"),
        ({"traceback_limit": 0}, "DeadLetterQueue.traceback_limit"),
        ({"traceback_limit": 1.5}, "DeadLetterQueue.traceback_limit"),
        ({"clock": object()}, "DeadLetterQueue.clock"),
    ],
)
def test_bad_settings_name_the_field(
    store: MemoryDeadLetterStore, options: dict[str, Any], field: str
) -> None:
    """Each invalid setting raises ConfigurationError naming DeadLetterQueue.<field>."""
    with pytest.raises(ir.ConfigurationError) as info:
        ir.DeadLetterQueue(store, **options)
    assert field == info.value.field


@pytest.mark.parametrize(
    "store",
    [object(), MemoryDeadLetterStore, AsyncMemoryDeadLetterStore(MemoryDeadLetterStore("q"))],
)
def test_bad_store_is_refused(store: Any) -> None:
    """Not a store, or an async store, raises ConfigurationError("DeadLetterQueue.store")."""
    with pytest.raises(ir.ConfigurationError) as info:
        ir.DeadLetterQueue(store)
    assert "DeadLetterQueue.store" == info.value.field


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"reason": "bogus"}, "reason"),
        ({"id": "has spaces"}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"key": 5}, "key"),
        ({"fingerprint": b"fp"}, "fingerprint"),
        ({"attempts": -1}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"headers": {"a": 1}}, "headers"),
        ({"headers": {1: "a"}}, "headers"),
        ({"headers": [("a", "b")]}, "headers"),
        ({"first_failed_at": "now"}, "first_failed_at"),
    ],
)
def test_bad_put_arguments_name_the_field(
    queue: ir.DeadLetterQueue, arguments: dict[str, Any], field: str
) -> None:
    """Each invalid put() argument raises ConfigurationError naming it; nothing is stored."""
    with pytest.raises(ir.ConfigurationError) as info:
        queue.put(JOB, **arguments)
    assert field == info.value.field
    assert 0 == queue.count()


def test_custom_codec_is_used(store: MemoryDeadLetterStore) -> None:
    """A codec with encode/decode replaces JSON for payloads."""

    class Upper:
        def encode(self, value: Any) -> bytes:
            return str(value).upper().encode()

        def decode(self, data: bytes) -> Any:
            return data.decode().lower()

    queue = ir.DeadLetterQueue(store, codec=Upper(), clock=ManualClock())
    letter = queue.put("abc")
    assert b"ABC" == letter.payload
    assert "abc" == queue.decode(letter)


def test_queue_name_repr_and_close(clock: ManualClock) -> None:
    """name is the store's queue; repr names it; close() closes the store."""
    store = ClosingStore(MemoryDeadLetterStore("refunds"))
    queue = ir.DeadLetterQueue(store, clock=clock)  # type: ignore[arg-type]
    assert "refunds" == queue.name
    assert "DeadLetterQueue('refunds', store=" in repr(queue)
    queue.close()
    assert store.closed


def test_backend_builds_queues_on_its_clock(clock: ManualClock) -> None:
    """backend.dead_letter_queue shares one store per name and stamps with the backend's clock."""
    backend = MemoryBackend(clock=clock)
    clock.advance(3.0)
    first = backend.dead_letter_queue("orders", max_letters=2)
    letter = first.put(JOB, id="a")
    assert WALL + 3.0 == letter.dead_lettered_at
    again = backend.dead_letter_queue("orders")
    assert letter == again.get("a")
    assert 2 == first.max_letters
    assert 100_000 == again.max_letters
    assert 0 == backend.dead_letter_queue("other").count()

    async def main() -> DeadLetter | None:
        aqueue = backend.async_dead_letter_queue("orders")
        assert isinstance(aqueue, ir.AsyncDeadLetterQueue)
        return await aqueue.get("a")

    assert letter == asyncio.run(main())


# -- letters as data ------------------------------------------------------------------------


def _letter(**changes: Any) -> DeadLetter:
    base = DeadLetter.from_exception(
        raised(ValueError("bad")),
        queue="orders",
        payload=b'{"a":1}',
        reason="fatal",
        now=100.0,
        id="l1",
        key="k",
        headers={"h": "v"},
    )
    return attrs.evolve(base, **changes)


def test_letter_json_round_trip() -> None:
    """letter_to_json / letter_from_json round-trip text and binary payloads."""
    text = _letter(sequence=7)
    data = letter_to_json(text)
    assert '{"a":1}' == data["payload"]
    assert {"h": "v"} == data["headers"]
    assert 7 == data["sequence"]
    assert text == letter_from_json(data)
    binary = _letter(payload=b"\xff\xfe")
    data = letter_to_json(binary)
    assert "//4=" == data["payload_base64"]
    assert "payload" not in data
    assert binary == letter_from_json(data)
    assert b"over" == letter_from_json(data, b"over").payload
    meta = letter_to_json(binary, payload=False)
    assert {"payload", "payload_base64"}.isdisjoint(meta)
    assert b"" == letter_from_json(meta).payload


def test_meta_to_text_is_compact_sorted_json() -> None:
    """meta_to_text is the letter without payload as compact, key-sorted JSON."""
    text = meta_to_text(_letter(traceback="tb"))
    assert (
        '{"attempts":1,"dead_lettered_at":100.0,"error_message":"bad",'
        '"error_type":"builtins.ValueError","fingerprint":null,"first_failed_at":100.0,'
        '"headers":{"h":"v"},"id":"l1","key":"k","last_failed_at":100.0,"queue":"orders",'
        '"reason":"fatal","sequence":0,"traceback":"tb"}'
    ) == text


@pytest.mark.parametrize(
    "changes",
    [
        {"attempts": -1},
        {"attempts": 1.0},
        {"reason": "bogus"},
        {"first_failed_at": math.nan},
        {"last_failed_at": "now"},
        {"dead_lettered_at": True},
        {"headers": {"a": 1}},
    ],
)
def test_letter_validates_its_fields(changes: dict[str, Any]) -> None:
    """DeadLetter refuses bad attempts, reasons, times and headers with ValueError."""
    with pytest.raises(ValueError, match="DeadLetter"):
        _letter(**changes)


def test_letter_filter_reference_semantics() -> None:
    """LetterFilter.matches: every condition holds; since inclusive, before exclusive."""
    letter = _letter()
    assert LetterFilter().is_everything
    assert not LetterFilter(key="k").is_everything
    assert LetterFilter().matches(letter)
    assert LetterFilter(reasons=frozenset({"fatal"}), key="k", since=100.0).matches(letter)
    assert not LetterFilter(before=100.0).matches(letter)
    assert LetterFilter(before=100.5).matches(letter)
    assert not LetterFilter(since=100.5).matches(letter)
    assert not LetterFilter(key="other").matches(letter)
    assert not LetterFilter(reasons=frozenset({"poison"})).matches(letter)


def test_helpers() -> None:
    """reasons_of, cursors, ids and queue names behave as documented."""
    assert reasons_of(None) is None
    assert frozenset({"fatal"}) == reasons_of("fatal")
    assert frozenset(REASONS) == reasons_of(iter(REASONS))
    with pytest.raises(ValueError, match="reason"):
        reasons_of(3.5)
    assert "s42" == encode_cursor(42)
    assert 42 == decode_cursor("s42")
    assert 0 == decode_cursor(None)
    with pytest.raises(ValueError, match="cursor"):
        decode_cursor("s" + "9" * 20)
    assert letter_id_for_key("order-1") == letter_id_for_key("order-1")
    assert letter_id_for_key("order-1") != letter_id_for_key("order-2")
    assert 44 == len(letter_id_for_key("order-1"))
    assert check_letter_id(letter_id_for_key("\udcff")) is None
    assert new_letter_id() != new_letter_id()
    assert "must be a str, got int" == check_letter_id(5)
    assert check_queue_name("orders.v2:eu-1") is None
    assert check_queue_name("") is not None
    assert check_queue_name(None) is not None


# -- async twins ------------------------------------------------------------------------------


def test_async_put_records_every_field(clock: ManualClock) -> None:
    """The async put() stores the same fields as the sync one."""

    async def main() -> DeadLetter:
        queue = aqueue(clock)
        clock.advance(5.0)
        letter = await queue.put(
            JOB,
            reason="fatal",
            error=chained_error(),
            key="order-1",
            fingerprint="fp",
            attempts=3,
            first_failed_at=datetime.datetime.fromtimestamp(WALL - 60.0, UTC),
            headers={"message-id": "m-1"},
        )
        assert letter == await queue.get(letter.id)
        assert JOB == queue.decode(letter)
        return letter

    letter = asyncio.run(main())
    assert ("orders", "fatal", "order-1", "fp", 3) == (
        letter.queue,
        letter.reason,
        letter.key,
        letter.fingerprint,
        letter.attempts,
    )
    assert "builtins.ValueError" == letter.error_type
    assert letter.traceback is not None
    assert "KeyError: 'sku-lookup'" in letter.traceback
    assert (WALL - 60.0, WALL + 5.0, WALL + 5.0) == (
        letter.first_failed_at,
        letter.last_failed_at,
        letter.dead_lettered_at,
    )
    assert {"message-id": "m-1"} == dict(letter.headers)


def test_async_put_ids_payloads_and_limits(clock: ManualClock) -> None:
    """Async: same id stored once; raw bytes; repr of invalid; CodecError; size limit."""

    async def main() -> None:
        queue = aqueue(clock, max_payload_bytes=64, redact=lambda p: {**p, "card": "*"})
        first = await queue.put({"v": 1}, id="dup")
        assert first == await queue.put({"v": 2}, id="dup")
        assert {"v": 1, "card": "*"} == queue.decode(first)
        raw = await queue.put(b"\xff\x00")
        assert b"\xff\x00" == queue.decode(raw)
        job = {"s": {1}}
        # The repr kept for an unencodable job is of the redacted job.
        redacted = {"s": {1}, "card": "*"}
        assert repr(redacted) == queue.decode(await queue.put(job, reason="invalid"))
        with pytest.raises(ir.CodecError):
            await queue.put(job, reason="fatal")
        with pytest.raises(ir.PayloadTooLargeError) as info:
            await queue.put(b"x" * 65)
        assert (65, 64, "orders") == (info.value.size, info.value.limit, info.value.queue)
        assert 3 == await queue.count()

    asyncio.run(main())


def test_async_cap_reject_and_drop_oldest(clock: ManualClock) -> None:
    """Async: "reject" raises with a "rejected" event; "drop_oldest" evicts with "evicted"."""

    async def main() -> list[ir.DeadLetterEvent]:
        with captured() as events:
            strict = aqueue(clock, max_letters=1)
            await strict.put(JOB, id="a")
            with pytest.raises(ir.DeadLetterQueueFullError):
                await strict.put(JOB, id="b")
            loose = aqueue(clock, max_letters=1, when_full="drop_oldest")
            await loose.put(JOB, id="a")
            await loose.put(JOB, id="b")
            assert ["b"] == [letter.id async for letter in loose.iter()]
        return events

    events = asyncio.run(main())
    assert [
        ("stored", ("a",)),
        ("rejected", ("b",)),
        ("stored", ("a",)),
        ("evicted", ("a",)),
        ("stored", ("b",)),
    ] == [(e.kind, e.ids) for e in events]


def test_async_retention(clock: ManualClock) -> None:
    """Async: expire() and the put() sweep delete letters older than retention."""

    async def main() -> None:
        queue = aqueue(clock, retention=100.0)
        assert 0 == await aqueue(clock).expire()
        await queue.put(JOB, id="a")
        clock.advance(101.0)
        with captured() as events:
            await queue.put(JOB, id="b")  # sweep due: "a" expires
        assert [("expired", 1), ("stored", 1)] == [(e.kind, e.count) for e in events]
        clock.advance(101.0)
        assert 1 == await queue.expire()
        assert 0 == await queue.count()

    asyncio.run(main())


def test_async_list_iter_count_stats(clock: ManualClock) -> None:
    """Async: cursor pages, iter across pages, filters, count and stats."""

    async def main() -> None:
        queue = aqueue(clock)
        for i, reason in enumerate(["fatal", "poison", "fatal"]):
            await queue.put(JOB, id=f"l{i}", reason=reason)  # type: ignore[arg-type]
            clock.advance(10.0)
        first = await queue.list(limit=2)
        assert ["l0", "l1"] == _ids_of(first.letters)
        last = await queue.list(limit=2, cursor=first.cursor)
        assert (["l2"], None) == (_ids_of(last.letters), last.cursor)
        with pytest.raises(ir.ConfigurationError):
            await queue.list(cursor="bogus")
        assert ["l0", "l1", "l2"] == [letter.id async for letter in queue.iter(page_size=1)]
        assert ["l0", "l2"] == [letter.id async for letter in queue.iter(reason="fatal")]
        assert ["l1", "l2"] == [
            letter.id async for letter in queue.iter(page_size=2, since=WALL + 10)
        ]
        with pytest.raises(ir.ConfigurationError):
            queue.iter(before=datetime.datetime(2024, 1, 1))  # noqa: DTZ001
        assert 2 == await queue.count(reason=["fatal"])
        assert (
            QueueStats(total=3, by_reason={"fatal": 2, "poison": 1}, oldest=WALL, newest=WALL + 20)
            == await queue.stats()
        )

    asyncio.run(main())


def test_async_purge(clock: ManualClock) -> None:
    """Async: purge by ids, filter, older_than and everything; a bare purge() refuses."""

    async def main() -> None:
        queue = aqueue(clock)
        for i in range(5):
            await queue.put(JOB, id=f"l{i}", reason="fatal" if i % 2 else "poison")
            clock.advance(10.0)
        with pytest.raises(ir.ConfigurationError):
            await queue.purge()
        assert 1 == await queue.purge(ids=["l0", "nope"])
        assert 2 == await queue.purge(reason="fatal")
        assert 1 == await queue.purge(older_than=25.0)
        assert 1 == await queue.purge(everything=True)
        assert 0 == await queue.count()

    asyncio.run(main())


def test_async_redrive_to_an_async_callable(clock: ManualClock) -> None:
    """Async: success removes the letter; a raise keeps it with attempts + 1 and the new error."""

    async def main() -> tuple[ir.RedriveReport, DeadLetter | None]:
        queue = aqueue(clock)
        await queue.put(JOB, id="good")
        await queue.put(JOB, id="bad", reason="fatal")
        clock.advance(50.0)

        async def target(letter: DeadLetter) -> None:
            if letter.id == "bad":
                raise RuntimeError("still broken")

        with captured() as events:
            report = await queue.redrive(target)
        assert [("redriven", ("good",))] == [(e.kind, e.ids) for e in events]
        return report, await queue.get("bad")

    report, bad = asyncio.run(main())
    assert ("good",) == report.redriven
    assert (("bad", "RuntimeError: still broken"),) == report.failed
    assert bad is not None
    assert (2, WALL + 50.0, "builtins.RuntimeError", "fatal") == (
        bad.attempts,
        bad.last_failed_at,
        bad.error_type,
        bad.reason,
    )


def test_async_redrive_accepts_a_plain_callable(clock: ManualClock) -> None:
    """Async: a plain callable has run when it returns: its letter is redriven, not failed."""

    async def main() -> tuple[ir.RedriveReport, int]:
        queue = aqueue(clock)
        await queue.put(JOB, id="a")
        seen: list[str] = []
        report = await queue.redrive(lambda letter: seen.append(letter.id))
        assert ["a"] == seen
        return report, await queue.count()

    assert (ir.RedriveReport(redriven=("a",)), 0) == asyncio.run(main())


def test_async_redrive_to_a_job_handler(clock: ManualClock) -> None:
    """Async: aprocess_letter outcomes are read like process_letter's."""
    handler = Handler(
        ir.Done(),
        ir.Replayed(),
        ir.RetryLater(1.0, raised(TimeoutError("slow"))),
        ir.DeadLettered("poison"),
    )

    async def main() -> tuple[ir.RedriveReport, list[DeadLetter]]:
        queue = aqueue(clock)
        for i in range(4):
            await queue.put({"n": i}, id=f"l{i}", reason="exhausted")
        report = await queue.redrive(handler)
        return report, [letter async for letter in queue.iter()]

    report, left = asyncio.run(main())
    assert [("l0", {"n": 0}), ("l1", {"n": 1}), ("l2", {"n": 2}), ("l3", {"n": 3})] == handler.seen
    assert (("l0",), ("l1",)) == (report.redriven, report.skipped)
    assert (("l2", "TimeoutError: slow"), ("l3", "failed again")) == report.failed
    assert [("l2", "exhausted", 2), ("l3", "poison", 2)] == [
        (letter.id, letter.reason, letter.attempts) for letter in left
    ]


def test_async_redrive_ids_limit_and_filter(clock: ManualClock) -> None:
    """Async: ids= in order (absent ignored), limit= and filters select the letters."""

    async def main() -> None:
        queue = aqueue(clock)
        for i in range(5):
            await queue.put(JOB, id=f"l{i}", reason="fatal" if i < 3 else "poison")

        async def target(letter: DeadLetter) -> None:
            return None

        report = await queue.redrive(target, ids=["l4", "nope", "l0", "l4"])
        assert ("l4", "l0") == report.redriven
        assert ("l1",) == (await queue.redrive(target, reason="fatal", limit=1)).redriven
        assert ("l3",) == (await queue.redrive(target, reason="poison")).redriven
        assert ["l2"] == [letter.id async for letter in queue.iter()]

    asyncio.run(main())


def test_async_redrive_paces(clock: ManualClock) -> None:
    """Async: rate=10 and a RateLimiter both space five letters over 0.4 s of the clock."""

    async def main() -> list[float]:
        queue = aqueue(clock)
        elapsed: list[float] = []

        async def target(letter: DeadLetter) -> None:
            return None

        for rate in (10, ir.RateLimiter(10, burst=1, clock=clock)):
            for i in range(5):
                await queue.put(JOB, id=f"l{i}")
            start = clock.monotonic()
            assert 5 == (await queue.redrive(target, rate=rate)).total
            elapsed.append(clock.monotonic() - start)
        return elapsed

    assert [pytest.approx(0.4), pytest.approx(0.4)] == asyncio.run(main())


def test_async_redrive_base_exception_and_bad_target(clock: ManualClock) -> None:
    """Async: KeyboardInterrupt propagates leaving the letter; a non-callable target is refused."""
    queue = aqueue(clock)

    async def target(letter: DeadLetter) -> None:
        raise KeyboardInterrupt

    async def main() -> DeadLetter:
        stored = await queue.put(JOB, id="a")
        with pytest.raises(KeyboardInterrupt):
            await queue.redrive(target)
        with pytest.raises(ir.ConfigurationError) as info:
            await queue.redrive(object())
        assert "to" == info.value.field
        with pytest.raises(ir.ConfigurationError) as info:
            await queue.redrive(target, rate=0)
        assert "rate" == info.value.field
        return stored

    stored = asyncio.run(main())
    assert stored == asyncio.run(queue.get("a"))


def test_async_bad_settings_name_the_field(clock: ManualClock) -> None:
    """Async: settings and the store are checked like the sync queue's, naming the field."""
    store = AsyncMemoryDeadLetterStore(MemoryDeadLetterStore("orders"))
    for options, field in [
        ({"codec": 5}, "AsyncDeadLetterQueue.codec"),
        ({"redact": 5}, "AsyncDeadLetterQueue.redact"),
        ({"max_payload_bytes": -1}, "AsyncDeadLetterQueue.max_payload_bytes"),
        ({"max_letters": "many"}, "AsyncDeadLetterQueue.max_letters"),
        ({"when_full": "wait"}, "AsyncDeadLetterQueue.when_full"),
        ({"retention": -1}, "AsyncDeadLetterQueue.retention"),
        ({"traceback_limit": None}, "AsyncDeadLetterQueue.traceback_limit"),
        ({"clock": None}, "AsyncDeadLetterQueue.clock"),
    ]:
        with pytest.raises(ir.ConfigurationError) as info:
            ir.AsyncDeadLetterQueue(store, **options)
        assert field == info.value.field
    for bad in (object(), MemoryDeadLetterStore("orders")):
        with pytest.raises(ir.ConfigurationError) as info:
            ir.AsyncDeadLetterQueue(bad)  # type: ignore[arg-type]
        assert "AsyncDeadLetterQueue.store" == info.value.field


def test_async_bad_put_arguments(clock: ManualClock) -> None:
    """Async: put() arguments are checked, naming the field."""

    async def main() -> list[str]:
        queue = aqueue(clock)
        fields = []
        for arguments in ({"reason": "x"}, {"headers": {"a": 2}}, {"attempts": -3}):
            with pytest.raises(ir.ConfigurationError) as info:
                await queue.put(JOB, **arguments)
            fields.append(info.value.field)
        return fields

    assert ["reason", "headers", "attempts"] == asyncio.run(main())


def test_async_name_repr_and_close(clock: ManualClock) -> None:
    """Async: name, repr and close() delegate to the store."""
    store = AsyncClosingStore(AsyncMemoryDeadLetterStore(MemoryDeadLetterStore("refunds")))
    queue = ir.AsyncDeadLetterQueue(store, clock=clock)  # type: ignore[arg-type]
    assert "refunds" == queue.name
    assert "AsyncDeadLetterQueue('refunds', store=" in repr(queue)
    asyncio.run(queue.close())
    assert store.closed


def test_async_events_only_with_a_listener(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Async: nothing is emitted without a listener."""
    emitted: list[_events.Event] = []
    monkeypatch.setattr(_events, "emit", emitted.append)

    async def main() -> None:
        queue = aqueue(clock, retention=1.0)
        await queue.put(JOB)
        clock.advance(2.0)
        await queue.expire()

        async def target(letter: DeadLetter) -> None:
            return None

        await queue.redrive(target)
        await queue.purge(everything=True)

    asyncio.run(main())
    assert [] == emitted


def test_purge_refuses_ids_and_a_filter_together(queue: ir.DeadLetterQueue) -> None:
    """ids= with a filter would silently ignore the filter: it is refused instead."""
    queue.put(JOB, id="a")
    with pytest.raises(ir.ConfigurationError, match="not both"):
        queue.purge(ids=["a"], reason="manual")
    assert 1 == queue.count()


def test_error_text_every_store_can_hold() -> None:
    """NUL and lone surrogates in an exception's message are escaped, not refused later."""
    try:
        raise ValueError("bad\x00byte \udcff")
    except ValueError as exc:
        letter = ir.DeadLetter.from_exception(exc, queue="q", payload=b"", reason="fatal", now=1.0)
    assert "bad\\x00byte \\udcff" == letter.error_message
    assert letter.traceback is not None
    assert "\x00" not in letter.traceback


def test_dead_letter_events_are_logged_at_warning_when_they_need_a_human(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stored, rejected and evicted letters are warnings; purges and redrives are info."""
    listener = ir.LoggingListener()
    with caplog.at_level("DEBUG", logger="invresilience"):
        listener(ir.DeadLetterEvent(source="orders", kind="stored", count=1, reason="fatal"))
        listener(ir.DeadLetterEvent(source="orders", kind="purged", count=3))
    assert [
        ("WARNING", "dead-letter queue 'orders' stored 1 letter(s) (fatal)"),
        (
            "INFO",
            "dead-letter queue 'orders' purged 3 letter(s)",
        ),
    ] == [(r.levelname, r.getMessage()) for r in caplog.records]


def _without_carets(text: str) -> str:
    return "\n".join(
        line for line in text.split("\n") if not line.strip() or line.strip().strip("^~") != ""
    )


def _raise_chain() -> BaseException:
    def inner() -> None:
        raise KeyError("sku")

    def middle() -> None:
        try:
            inner()
        except KeyError as exc:
            raise ValueError("stock update failed") from exc

    try:
        try:
            middle()
        except ValueError:
            raise RuntimeError("while handling") from None
    except RuntimeError:
        try:
            middle()
        except ValueError as exc:
            if hasattr(exc, "add_note"):  # Python 3.11+
                exc.add_note("a note")
            return exc
    raise AssertionError("unreachable")


def test_format_error_prints_what_python_prints_without_the_carets() -> None:
    """The chain (cause and context), frames, source lines and notes, as traceback does."""
    import traceback

    from invresilience._core.dlq import format_error

    exc = _raise_chain()
    expected = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert _without_carets(expected) == format_error(exc)
    assert "The above exception was the direct cause" in format_error(exc)
    assert "During handling of the above exception" in format_error(exc)
    bare = ValueError("never raised")
    assert "ValueError: never raised\n" == format_error(bare)


def test_format_error_leaves_exception_groups_to_traceback() -> None:
    """A group (or anything with an ``exceptions`` tuple) is formatted by traceback itself."""
    import traceback

    from invresilience._core.dlq import format_error

    class GroupError(Exception):
        exceptions = (ValueError("a"),)

    with pytest.raises(GroupError) as info:
        raise GroupError("group")
    exc = info.value
    expected = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert expected == format_error(exc)


def test_format_error_stops_at_a_cycle_in_the_chain() -> None:
    """Exceptions that are each other's context are printed once each, as traceback does."""
    import traceback

    from invresilience._core.dlq import format_error

    first, second = ValueError("first"), KeyError("second")
    first.__context__, second.__context__ = second, first
    expected = "".join(traceback.format_exception(type(first), first, None))
    assert expected == format_error(first)


def test_format_error_skips_source_lines_it_cannot_find() -> None:
    """A frame of code with no file (exec'd text) prints its location only, like traceback."""
    import traceback

    from invresilience._core.dlq import format_error

    namespace: dict[str, Any] = {}
    exec(
        compile("def fail():\n    raise ValueError('no source')\n", "<generated>", "exec"),
        namespace,
    )
    with pytest.raises(ValueError, match="no source") as info:
        namespace["fail"]()
    exc = info.value
    expected = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert _without_carets(expected) == format_error(exc)
    assert '  File "<generated>", line 2, in fail\nValueError' in format_error(exc)


def test_redrive_refuses_ids_and_a_filter_together(queue: ir.DeadLetterQueue) -> None:
    """ids= with a filter would redrive letters outside the filter: refused."""
    queue.put(JOB, id="a")
    with pytest.raises(ir.ConfigurationError, match="not both"):
        queue.redrive(lambda letter: None, ids=["a"], reason="fatal")
    assert 1 == queue.count()


def test_keys_and_headers_every_store_can_hold(queue: ir.DeadLetterQueue) -> None:
    """A key with NUL is refused up front; header text is escaped like error text."""
    with pytest.raises(ir.ConfigurationError, match="NUL"):
        queue.put(JOB, key="a\x00b")
    letter = queue.put(JOB, headers={"trace\x00id": "x\udc80"})
    assert {"trace\\x00id": "x\\udc80"} == dict(letter.headers)
