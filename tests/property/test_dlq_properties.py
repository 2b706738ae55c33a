"""A DeadLetterQueue over each store against a reference model written independently.

The model is a list of small records in put order, with the queue's rules spelled out
again here (no ``LetterFilter.matches``, no ``QueueStats.of``): a put with a known id
changes nothing, a put at the cap is refused or evicts the oldest, a redrive removes the
letters its target handled and counts one more attempt on the others, purges remove what
their filter or ids name. After every step the queue must list exactly the model's
letters, in put order, once each, and its count and stats must agree. Evictions are
observed through the queue's ``"evicted"`` events and must be exactly the model's.

The machine runs on the memory store and, once ``invresilience.backends.sqlite`` has a
``SqliteDeadLetterStore``, on SQLite; each with both ``when_full`` policies.
"""

from __future__ import annotations

import dataclasses
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from invresilience import DeadLetterEvent, DeadLetterQueue, add_listener
from invresilience.backends import sqlite as sqlite_backend
from invresilience.backends.memory import MemoryDeadLetterStore
from invresilience.exceptions import DeadLetterQueueFullError
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from invresilience._core.dlq import DeadLetter, Reason
    from invresilience._events import Event
    from invresilience.typing import DeadLetterStore

REASON_NAMES: tuple[Reason, ...] = (
    "exhausted",
    "fatal",
    "poison",
    "crash_loop",
    "invalid",
    "manual",
)
REASONS = st.sampled_from(REASON_NAMES)
KEYS = st.sampled_from([None, "k0", "k1", "k2"])
#: Ids put explicitly come from a small pool, so they collide with stored letters.
FIXED_IDS = [f"id-{i}" for i in range(6)]
TICKS = st.sampled_from([0.25, 1.0, 7.5])
MAX_LETTERS = 4
WALL_START = 1_700_000_000.0
HAS_SQLITE = hasattr(sqlite_backend, "SqliteDeadLetterStore")


@dataclasses.dataclass
class Entry:
    """The model's letter: what was put, and what redrives did to it."""

    id: str
    n: int  # the payload is {"n": n}
    reason: str
    key: str | None
    at: float  # dead_lettered_at
    attempts: int = 1
    last_failed_at: float = 0.0


@dataclasses.dataclass(frozen=True)
class Query:
    """A filter, restated: each given condition must hold."""

    reasons: tuple[str, ...] | None = None
    key: str | None = None
    since: float | None = None
    before: float | None = None

    def selects(self, entry: Entry) -> bool:
        if self.reasons is not None and entry.reason not in self.reasons:
            return False
        if self.key is not None and entry.key != self.key:
            return False
        if self.since is not None and not entry.at >= self.since:
            return False
        return not (self.before is not None and not entry.at < self.before)

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.reasons is not None:
            out["reason"] = self.reasons[0] if len(self.reasons) == 1 else list(self.reasons)
        if self.key is not None:
            out["key"] = self.key
        if self.since is not None:
            out["since"] = self.since
        if self.before is not None:
            out["before"] = self.before
        return out


class FailingError(Exception):
    """What the redrive target raises for the letters chosen to fail."""


class QueueAgreesWithTheModel(RuleBasedStateMachine):
    """Put, redrive, purge, page and let time pass on a DeadLetterQueue and the model."""

    when_full: ClassVar[Literal["reject", "drop_oldest"]] = "reject"

    def make_store(self, queue: str) -> DeadLetterStore:
        return MemoryDeadLetterStore(queue)

    @initialize()
    def start(self) -> None:
        self.clock = ManualClock(wall_start=WALL_START)
        self.directory = tempfile.TemporaryDirectory()
        self.name = f"prop-{uuid.uuid4().hex}"
        self.store = self.make_store(self.name)
        self.queue = DeadLetterQueue(
            self.store, max_letters=MAX_LETTERS, when_full=self.when_full, clock=self.clock
        )
        self.model: list[Entry] = []
        self.next_n = 0
        self.evicted: list[str] = []
        # A listing in progress: (cursor, n of the last letter seen, page size).
        self.paging: tuple[str | None, int, int] | None = None
        self.remove_listener = add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        if (
            isinstance(event, DeadLetterEvent)
            and event.source == self.name
            and event.kind == "evicted"
        ):
            self.evicted.extend(event.ids)

    def teardown(self) -> None:
        if hasattr(self, "queue"):
            self.remove_listener()
            self.queue.close()
            self.directory.cleanup()

    # -- helpers --------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.wall()

    def entry(self, letter_id: str) -> Entry | None:
        return next((e for e in self.model if e.id == letter_id), None)

    def expect_letter(self, entry: Entry, letter: DeadLetter) -> None:
        assert (entry.id, self.name) == (letter.id, letter.queue)
        assert {"n": entry.n} == self.queue.decode(letter)
        assert (entry.reason, entry.key, entry.at) == (
            letter.reason,
            letter.key,
            letter.dead_lettered_at,
        )
        assert entry.attempts == letter.attempts
        if entry.attempts > 1:
            assert entry.last_failed_at == letter.last_failed_at

    def queries(self) -> st.SearchStrategy[Query]:
        times = sorted({e.at for e in self.model} | {self.now(), WALL_START})
        moments = st.sampled_from(times) | st.sampled_from(times).map(lambda t: t + 0.125)
        return st.builds(
            Query,
            reasons=st.none() | st.lists(REASONS, min_size=1, max_size=3, unique=True).map(tuple),
            key=st.none() | st.sampled_from(["k0", "k1", "k2", "nobody"]),
            since=st.none() | moments,
            before=st.none() | moments,
        )

    # -- rules ----------------------------------------------------------------------------

    @rule(reason=REASONS, key=KEYS, fixed=st.none() | st.sampled_from(FIXED_IDS))
    def put(self, reason: Reason, key: str | None, fixed: str | None) -> None:
        n = self.next_n
        self.next_n += 1
        self.evicted.clear()
        existing = None if fixed is None else self.entry(fixed)
        full = len(self.model) >= MAX_LETTERS
        if existing is None and full and self.when_full == "reject":
            before = self.queue.count()
            with pytest.raises(DeadLetterQueueFullError) as raised:
                self.queue.put({"n": n}, reason=reason, key=key, id=fixed)
            assert (self.name, MAX_LETTERS) == (raised.value.queue, raised.value.limit)
            assert before == self.queue.count()
            assert [] == self.evicted
            return
        letter = self.queue.put({"n": n}, reason=reason, key=key, id=fixed)
        if existing is not None:
            self.expect_letter(existing, letter)
            assert [] == self.evicted
            return
        doomed = [e.id for e in self.model[: len(self.model) - MAX_LETTERS + 1]] if full else []
        assert sorted(doomed) == sorted(self.evicted)
        assert len(doomed) == len(self.evicted)
        self.model = [e for e in self.model if e.id not in doomed]
        if fixed is not None:
            assert fixed == letter.id
        entry = Entry(id=letter.id, n=n, reason=reason, key=key, at=self.now())
        self.model.append(entry)
        self.expect_letter(entry, letter)

    @rule(seconds=TICKS)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def _redrive_model(self, chosen: list[Entry], fail: set[str]) -> tuple[list[str], list[str]]:
        redriven: list[str] = []
        failed: list[str] = []
        for entry in chosen:
            if entry.id in fail:
                entry.attempts += 1
                entry.last_failed_at = self.now()
                failed.append(entry.id)
            else:
                self.model.remove(entry)
                redriven.append(entry.id)
        return redriven, failed

    def _target(self, fail: set[str], seen: list[str]) -> Any:
        def target(letter: DeadLetter) -> None:
            seen.append(letter.id)
            if letter.id in fail:
                raise FailingError(f"letter {letter.id} fails again")

        return target

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def redrive_ids(self, data: st.DataObject) -> None:
        ids = [e.id for e in self.model]
        pool = [*ids, "gone-letter"]
        asked = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=6), label="ids")
        fail = set(data.draw(st.lists(st.sampled_from(ids), unique=True), label="fail"))
        chosen = [e for i in dict.fromkeys(asked) if (e := self.entry(i)) is not None]
        seen: list[str] = []
        report = self.queue.redrive(self._target(fail, seen), ids=asked)
        redriven, failed = self._redrive_model(chosen, fail)
        assert [e.id for e in chosen] == seen
        assert tuple(redriven) == report.redriven
        assert tuple(failed) == tuple(i for i, _ in report.failed)
        assert () == report.skipped

    @rule(data=st.data(), limit=st.none() | st.integers(1, 3))
    def redrive_filter(self, data: st.DataObject, limit: int | None) -> None:
        query = data.draw(self.queries(), label="query")
        ids = [e.id for e in self.model]
        fail = (
            set(data.draw(st.lists(st.sampled_from(ids), unique=True), label="fail"))
            if ids
            else set()
        )
        chosen = [e for e in self.model if query.selects(e)][:limit]
        seen: list[str] = []
        report = self.queue.redrive(self._target(fail, seen), limit=limit, **query.kwargs())
        redriven, failed = self._redrive_model(chosen, fail)
        assert [e.id for e in chosen] == seen
        assert tuple(redriven) == report.redriven
        assert tuple(failed) == tuple(i for i, _ in report.failed)

    @rule(data=st.data(), older_than=st.none() | st.sampled_from([0.25, 1.0, 5.0]))
    def purge_filter(self, data: st.DataObject, older_than: float | None) -> None:
        query = data.draw(self.queries(), label="query")
        query = dataclasses.replace(query, before=None)
        if older_than is not None:
            query = dataclasses.replace(query, before=self.now() - older_than)
        everything = query == Query()
        doomed = [e for e in self.model if query.selects(e)]
        kwargs = query.kwargs()
        kwargs.pop("before", None)
        count = self.queue.purge(older_than=older_than, everything=everything, **kwargs)
        assert len(doomed) == count
        self.model = [e for e in self.model if not query.selects(e)]

    @rule(data=st.data())
    def purge_ids(self, data: st.DataObject) -> None:
        stored = [e.id for e in self.model]
        pool = [*stored, "gone-letter", *FIXED_IDS]
        # Any ids, or the newest letters (a burst to throw away): the latter leaves a
        # listing's cursor past every stored letter, where a reused sequence would hide.
        newest = st.integers(1, max(len(stored), 1)).map(lambda k: stored[-k:])
        ids = data.draw(st.lists(st.sampled_from(pool), max_size=6) | newest, label="ids")
        present = {i for i in ids if self.entry(i) is not None}
        assert len(present) == self.queue.purge(ids=ids)
        self.model = [e for e in self.model if e.id not in present]

    @rule(data=st.data(), size=st.integers(1, 5))
    def page(self, data: st.DataObject, size: int) -> None:
        query = data.draw(self.queries(), label="query")
        expected = [e for e in self.model if query.selects(e)]
        seen: list[DeadLetter] = []
        cursor: str | None = None
        for _ in range(len(expected) + 2):
            page = self.queue.list(limit=size, cursor=cursor, **query.kwargs())
            assert len(page.letters) <= size
            seen.extend(page.letters)
            cursor = page.cursor
            if cursor is None:
                break
        assert cursor is None
        assert [e.id for e in expected] == [letter.id for letter in seen]
        for entry, letter in zip(expected, seen, strict=True):
            self.expect_letter(entry, letter)
        assert [e.id for e in expected] == [
            letter.id for letter in self.queue.iter(page_size=size, **query.kwargs())
        ]
        assert len(expected) == self.queue.count(**query.kwargs())

    @rule(size=st.integers(1, 3))
    def continue_paging(self, size: int) -> None:
        """The next page of a listing begun steps ago: later puts show up, nothing is missed.

        One listing is always under way; *size* is its page size when a new one starts.
        """
        cursor, last_n, size = self.paging if self.paging is not None else (None, -1, size)
        rest = [e for e in self.model if e.n > last_n]
        page = self.queue.list(limit=size, cursor=cursor)
        assert [e.id for e in rest[:size]] == [letter.id for letter in page.letters]
        for entry, letter in zip(rest, page.letters, strict=False):
            self.expect_letter(entry, letter)
        if page.cursor is None:
            assert len(rest) <= size
            self.paging = None
        else:
            assert len(rest) > size
            self.paging = (page.cursor, rest[size - 1].n, size)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def the_queue_holds_the_model(self) -> None:
        if not hasattr(self, "queue"):
            return
        letters = list(self.queue.iter(page_size=100))
        assert [e.id for e in self.model] == [letter.id for letter in letters]
        assert len(letters) == len({letter.id for letter in letters})
        sequences = [letter.sequence for letter in letters]
        assert sorted(set(sequences)) == sequences
        for entry, letter in zip(self.model, letters, strict=True):
            self.expect_letter(entry, letter)
        assert len(self.model) <= MAX_LETTERS
        assert len(self.model) == self.queue.count()

    @invariant()
    def stats_agree(self) -> None:
        if not hasattr(self, "queue"):
            return
        stats = self.queue.stats()
        by_reason: dict[str, int] = {}
        for entry in self.model:
            by_reason[entry.reason] = by_reason.get(entry.reason, 0) + 1
        times = [e.at for e in self.model]
        assert len(self.model) == stats.total
        assert by_reason == dict(stats.by_reason)
        assert (min(times) if times else None) == stats.oldest
        assert (max(times) if times else None) == stats.newest


class EvictingQueueAgreesWithTheModel(QueueAgreesWithTheModel):
    """The same machine with ``when_full="drop_oldest"``."""

    when_full = "drop_oldest"


class SqliteQueueAgreesWithTheModel(QueueAgreesWithTheModel):
    """The machine on a SQLite file of its own."""

    def make_store(self, queue: str) -> DeadLetterStore:
        path = Path(self.directory.name) / "letters.db"
        store: DeadLetterStore = sqlite_backend.SqliteDeadLetterStore(path, queue=queue)  # type: ignore[attr-defined,unused-ignore]
        return store


class SqliteEvictingQueueAgreesWithTheModel(SqliteQueueAgreesWithTheModel):
    """The SQLite machine with ``when_full="drop_oldest"``."""

    when_full = "drop_oldest"


SETTINGS = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
needs_sqlite = pytest.mark.skipif(
    not HAS_SQLITE, reason="invresilience.backends.sqlite has no SqliteDeadLetterStore yet"
)

QueueAgreesWithTheModel.TestCase.settings = SETTINGS
EvictingQueueAgreesWithTheModel.TestCase.settings = SETTINGS
SqliteQueueAgreesWithTheModel.TestCase.settings = SETTINGS
SqliteEvictingQueueAgreesWithTheModel.TestCase.settings = SETTINGS

TestMemoryRejecting = QueueAgreesWithTheModel.TestCase
TestMemoryEvicting = EvictingQueueAgreesWithTheModel.TestCase
TestSqliteRejecting = needs_sqlite(SqliteQueueAgreesWithTheModel.TestCase)
TestSqliteEvicting = needs_sqlite(SqliteEvictingQueueAgreesWithTheModel.TestCase)
