"""The conformance suite for :class:`~invresilience.typing.DeadLetterStore` and its async twin.

Subclass :class:`DeadLetterStoreContract` (or :class:`AsyncDeadLetterStoreContract`) in a
test module under a name pytest collects (``Test...``) and say how to make a store of a
given queue; the inherited ``test_*`` methods check every rule of the Protocol: every
field round-trips, ids are unique, sequences only grow, listings page and filter exactly
as :meth:`LetterFilter.matches <invresilience.typing.LetterFilter.matches>` does, counts
and stats agree with the listing, ``replace``, ``delete`` and ``purge`` do what they say,
``max_letters`` rejects or evicts the oldest, queues are isolated and concurrent adds are
atomic.

``make_store(queue)`` (a coroutine in the async suite) is called with a fresh queue name
for every check, and a second time with another name when a check needs two queues: make
both on the same backend (the same file, server and prefix), so the isolation checks
mean something. Every check uses fresh queue names, so one server serves them all::

    import pytest

    from invresilience.backends.sqlite import SqliteDeadLetterStore
    from invresilience.contract import DeadLetterStoreContract


    class TestSqliteDeadLetterStore(DeadLetterStoreContract):
        @pytest.fixture(autouse=True)
        def _database(self, tmp_path):
            self.path = tmp_path / "letters.db"

        def make_store(self, queue: str) -> SqliteDeadLetterStore:
            return SqliteDeadLetterStore(self.path, queue=queue)

Every check is written once, as a coroutine over the async Protocol; a sync store is
driven through an adapter whose coroutines never suspend (its concurrency check uses real
threads), and each async test runs its own event loop with :func:`asyncio.run`. The suite
uses plain Python (no pytest import); a failed check raises :exc:`AssertionError` saying
what was expected.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import attrs

from .._core.dlq import REASONS, DeadLetter, LetterFilter, QueueStats
from ..exceptions import ConfigurationError, DeadLetterQueueFullError
from .breaker import _expect, _run_now, _unique

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence

    from .._core.dlq import Added, Reason
    from ..typing import AsyncDeadLetterStore, DeadLetterStore

__all__ = ["AsyncDeadLetterStoreContract", "DeadLetterStoreContract"]

#: Bytes no text codec would produce: NUL, invalid UTF-8, every byte value.
BINARY = bytes(range(256)) + b"\x00\xff\xfe"
#: An epoch time that needs all 17 significant digits of a double.
T0 = 1712345678.1234567
#: Letters read back in one call when a check wants them all.
ALL = 10_000
#: Everything.
EVERYTHING = LetterFilter()


# -- the harness every check runs with ----------------------------------------------------------


class _Harness:
    """What a check gets: the store of a fresh queue (async view), and ways to get more."""

    __slots__ = ("_count", "_open", "add_all", "queue", "store")

    def __init__(
        self,
        store: AsyncDeadLetterStore,
        queue: str,
        open_store: Callable[[str], Awaitable[AsyncDeadLetterStore]],
        add_all: Callable[[AsyncDeadLetterStore, Sequence[DeadLetter]], Awaitable[list[Added]]],
    ) -> None:
        self.store = store
        self.queue = queue
        self._open = open_store
        self.add_all = add_all
        self._count = 0

    async def other_store(self) -> tuple[str, AsyncDeadLetterStore]:
        """A store of another fresh queue on the same backend."""
        queue = _unique("dlq")
        return queue, await self._open(queue)

    def letter(self, queue: str | None = None, **fields: Any) -> DeadLetter:
        """A letter of this queue (or *queue*) with a fresh id; *fields* override."""
        self._count += 1
        values: dict[str, Any] = {
            "id": f"letter-{self._count}-{_unique('id')[-12:]}",
            "queue": self.queue if queue is None else queue,
            "payload": f"payload {self._count}".encode(),
            "reason": "exhausted",
            "first_failed_at": T0,
            "last_failed_at": T0,
            "dead_lettered_at": T0,
        }
        values.update(fields)
        return DeadLetter(**values)

    async def add(
        self, letter: DeadLetter, store: AsyncDeadLetterStore | None = None
    ) -> DeadLetter:
        """Add a new letter (no limit) and return it as stored, checking it was created."""
        added = await (self.store if store is None else store).add(letter)
        _expect(True, added.created, f"adding new letter {letter.id!r}: created")
        _expect((), added.evicted, f"adding new letter {letter.id!r} without a limit: evicted")
        _is_sequence(added.letter.sequence, f"the sequence of new letter {letter.id!r}")
        _expect(attrs.evolve(letter, sequence=added.letter.sequence), added.letter, "Added.letter")
        return added.letter

    async def add_many(
        self, letters: Iterable[DeadLetter], store: AsyncDeadLetterStore | None = None
    ) -> list[DeadLetter]:
        """Add *letters* one by one; the stored letters, in order."""
        return [await self.add(letter, store) for letter in letters]


def _is_sequence(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AssertionError(f"{what}: expected an int >= 1, got {value!r}")
    return value


def _ids(letters: Iterable[DeadLetter]) -> list[str]:
    return [letter.id for letter in letters]


def _expect_letters(
    expected: Sequence[DeadLetter], actual: Sequence[DeadLetter], what: str
) -> None:
    """Same letters in the same order: ids first (a readable message), then every field."""
    _expect(_ids(expected), _ids(actual), f"{what}: ids in order")
    for want, got in zip(expected, actual, strict=True):
        _expect(want, got, f"{what}: letter {want.id!r}")


async def _expect_contents(
    store: AsyncDeadLetterStore, expected: Sequence[DeadLetter], what: str
) -> None:
    """The store holds exactly *expected*: listing, count, stats and get agree."""
    _expect_letters(expected, await store.list(EVERYTHING, limit=ALL), f"{what}: list")
    _expect(len(expected), await store.count(EVERYTHING), f"{what}: count")
    _expect(QueueStats.of(expected), await store.stats(), f"{what}: stats")
    for letter in expected:
        _expect(letter, await store.get(letter.id), f"{what}: get({letter.id!r})")


async def _raises_config(awaitable: Awaitable[Any], field: str, what: str) -> None:
    try:
        await awaitable
    except ConfigurationError as exc:
        _expect(field, exc.field, f"{what}: ConfigurationError.field")
    else:
        raise AssertionError(f"{what}: expected ConfigurationError, nothing was raised")


async def _raises_full(awaitable: Awaitable[Any], queue: str, limit: int, what: str) -> None:
    try:
        await awaitable
    except DeadLetterQueueFullError as exc:
        _expect(queue, exc.queue, f"{what}: DeadLetterQueueFullError.queue")
        _expect(limit, exc.limit, f"{what}: DeadLetterQueueFullError.limit")
    else:
        raise AssertionError(f"{what}: expected DeadLetterQueueFullError, nothing was raised")


async def _filter_set(h: _Harness) -> list[DeadLetter]:
    """Twelve letters whose reasons, keys and times vary, times not in add order."""
    keys = (None, "key-a", "key-b")
    offsets = (5, 1, 3, 3, 0, 7, 2, 5, 9, 1, 4, 6)
    letters = [
        h.letter(
            reason=REASONS[i % len(REASONS)],
            key=keys[i % len(keys)],
            dead_lettered_at=T0 + offset * 0.5,
        )
        for i, offset in enumerate(offsets)
    ]
    return await h.add_many(letters)


def _filters() -> list[LetterFilter]:
    one: frozenset[Reason] = frozenset({"fatal"})
    several: frozenset[Reason] = frozenset({"exhausted", "poison", "manual"})
    none_stored: frozenset[Reason] = frozenset({"manual"})
    at_1_5, at_2_5 = T0 + 1.5, T0 + 2.5  # both are times of stored letters
    return [
        EVERYTHING,
        LetterFilter(reasons=one),
        LetterFilter(reasons=several),
        LetterFilter(reasons=frozenset(REASONS)),
        LetterFilter(key="key-a"),
        LetterFilter(key="no-such-key"),
        LetterFilter(since=at_1_5),
        LetterFilter(before=at_1_5),
        LetterFilter(since=at_1_5, before=at_2_5),
        LetterFilter(since=at_2_5, before=at_2_5),
        LetterFilter(since=at_2_5, before=at_1_5),
        LetterFilter(since=math.nextafter(at_1_5, math.inf)),
        LetterFilter(before=math.nextafter(at_1_5, math.inf)),
        LetterFilter(since=T0 + 100),
        LetterFilter(reasons=several, key="key-b"),
        LetterFilter(reasons=several, since=at_1_5),
        LetterFilter(key="key-a", since=T0 + 0.5, before=T0 + 4.5),
        LetterFilter(reasons=one, key="key-b", since=T0, before=T0 + 10),
        LetterFilter(reasons=none_stored, key="key-a"),
    ]


def _describe(where: LetterFilter) -> str:
    parts = []
    if where.reasons is not None:
        parts.append(f"reasons={sorted(where.reasons)}")
    if where.key is not None:
        parts.append(f"key={where.key!r}")
    if where.since is not None:
        parts.append(f"since=T0+{where.since - T0!r}")
    if where.before is not None:
        parts.append(f"before=T0+{where.before - T0!r}")
    return "LetterFilter(" + ", ".join(parts) + ")"


# -- the checks ---------------------------------------------------------------------------------


async def _the_store_knows_its_queue(h: _Harness) -> None:
    _expect(h.queue, h.store.queue, "store.queue")
    await _expect_contents(h.store, [], "a fresh queue")
    _expect(QueueStats(total=0), await h.store.stats(), "stats of a fresh queue")
    _expect(None, await h.store.get("no-such-letter"), "get of an unknown id")


async def _every_field_round_trips(h: _Harness) -> None:
    full = h.letter(
        payload=BINARY,
        reason="poison",
        key="clé-🔑 with spaces/and:colons",
        fingerprint="sha256:" + "ab" * 32,
        error_type="builtins.ValueError",
        error_message="żółw 🐢 said \"no\" and 'no'\\ \nsecond line\ttab",
        traceback='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: ☃\n',
        attempts=7,
        first_failed_at=T0,
        last_failed_at=math.nextafter(T0 + 60.0, math.inf),
        dead_lettered_at=math.nextafter(T0 + 61.0, 0.0),
        headers={
            "tenant": "café ☕",
            "trace-id": "0af7651916cd43dd8448eb211c80319c",
            "empty": "",
            "x-json": '{"a": [1, "b"], "c": null}',
        },
    )
    bare = h.letter(payload=b"", reason="manual", attempts=0, headers={})
    large = h.letter(payload=(BINARY * 4100)[: 1 << 20], reason="crash_loop", attempts=1)
    stored = await h.add_many([full, bare, large])
    _expect(1 << 20, len(stored[2].payload), "the length of a 1 MiB payload as added")
    for letter in stored:
        got = await h.store.get(letter.id)
        if got is None:
            raise AssertionError(f"get({letter.id!r}) after add: expected the letter, got None")
        for field in attrs.fields(DeadLetter):
            _expect(
                getattr(letter, field.name),
                getattr(got, field.name),
                f"field {field.name!r} of letter {letter.id!r} read back by get",
            )
    await _expect_contents(h.store, stored, "three letters of every shape")
    float_times = [type(getattr(stored[0], f)) for f in ("first_failed_at", "dead_lettered_at")]
    _expect([float, float], float_times, "time types")


async def _an_existing_id_changes_nothing(h: _Harness) -> None:
    first = await h.add(h.letter(payload=b"first", reason="fatal", key="k1"))
    other = await h.add(h.letter())
    again = attrs.evolve(
        first, payload=b"second", reason="poison", key="k2", attempts=9, dead_lettered_at=T0 + 9
    )
    for what, max_letters, evict in (
        ("no limit", None, False),
        ("a full queue that rejects", 2, False),
        ("a full queue that evicts", 2, True),
    ):
        added = await h.store.add(again, max_letters=max_letters, evict_oldest=evict)
        _expect(False, added.created, f"adding an existing id to {what}: created")
        _expect(first, added.letter, f"adding an existing id to {what}: the stored letter")
        _expect((), added.evicted, f"adding an existing id to {what}: evicted")
        await _expect_contents(h.store, [first, other], f"after adding an existing id to {what}")


async def _sequences_grow_and_are_never_reused(h: _Harness) -> None:
    stored = await h.add_many(h.letter() for _ in range(5))
    sequences = [letter.sequence for letter in stored]
    if sequences != sorted(set(sequences)):
        raise AssertionError(f"sequences in add order: expected strictly increasing, {sequences}")
    # Delete the newest letters: a store deriving the next sequence from MAX() reuses them.
    _expect(2, await h.store.delete([stored[3].id, stored[4].id]), "deleting the two newest")
    after_delete = await h.add(h.letter())
    if not after_delete.sequence > sequences[-1]:
        raise AssertionError(
            f"sequence after deleting the newest: expected > {sequences[-1]}, "
            f"got {after_delete.sequence}"
        )
    _expect(4, await h.store.purge(EVERYTHING), "purging the queue")
    after_purge = await h.add(h.letter())
    if not after_purge.sequence > after_delete.sequence:
        raise AssertionError(
            f"sequence after purging everything: expected > {after_delete.sequence}, "
            f"got {after_purge.sequence}"
        )
    await _expect_contents(h.store, [after_purge], "after purge and one add")


async def _list_pages_cover_everything_once(h: _Harness) -> None:
    stored = await _filter_set(h)
    _expect_letters(stored, await h.store.list(EVERYTHING), "list() with the defaults")
    for size in (1, 2, 5, 11, 12, 13):
        seen: list[DeadLetter] = []
        after = 0
        for _ in range(len(stored) + 2):
            page = await h.store.list(EVERYTHING, after=after, limit=size)
            if len(page) > size:
                raise AssertionError(f"a page of limit {size}: got {len(page)} letters")
            if not page:
                break
            seen.extend(page)
            after = page[-1].sequence
        _expect_letters(stored, seen, f"pages of {size}")
    for i, letter in enumerate(stored):
        _expect_letters(
            stored[i + 1 :],
            await h.store.list(EVERYTHING, after=letter.sequence, limit=ALL),
            f"list after the sequence of letter {i}",
        )
    _expect_letters(stored[:3], await h.store.list(EVERYTHING, limit=3), "list(limit=3)")
    _expect([], await h.store.list(EVERYTHING, after=stored[-1].sequence + 1000), "beyond the end")


async def _filters_select_what_matches_selects(h: _Harness) -> None:
    stored = await _filter_set(h)
    for where in _filters():
        what = _describe(where)
        expected = [letter for letter in stored if where.matches(letter)]
        _expect_letters(expected, await h.store.list(where, limit=ALL), f"list({what})")
        _expect(len(expected), await h.store.count(where), f"count({what})")
        paged: list[DeadLetter] = []
        after = 0
        for _ in range(len(stored) + 1):
            page = await h.store.list(where, after=after, limit=2)
            if not page:
                break
            paged.extend(page)
            after = page[-1].sequence
        _expect_letters(expected, paged, f"pages of 2 of {what}")
        middle = stored[len(stored) // 2].sequence
        _expect_letters(
            [letter for letter in expected if letter.sequence > middle],
            await h.store.list(where, after=middle, limit=ALL),
            f"list({what}) after the middle letter",
        )


async def _stats_agree_with_the_letters(h: _Harness) -> None:
    stored = await _filter_set(h)
    _expect(QueueStats.of(stored), await h.store.stats(), "stats of twelve letters")
    _expect(2, await h.store.delete([stored[4].id, stored[8].id]), "deleting oldest and newest")
    rest = [letter for i, letter in enumerate(stored) if i not in (4, 8)]
    _expect(QueueStats.of(rest), await h.store.stats(), "stats after deleting oldest and newest")
    await _expect_contents(h.store, rest, "after two deletes")


async def _replace_keeps_the_sequence(h: _Harness) -> None:
    first, second, third = await h.add_many(
        [h.letter(reason="exhausted", key="k"), h.letter(), h.letter()]
    )
    changed = attrs.evolve(
        first,
        payload=BINARY,
        reason="fatal",
        error_type="builtins.KeyError",
        error_message="'missing' ✗",
        traceback="Traceback ...\nKeyError: 'missing'\n",
        attempts=first.attempts + 3,
        first_failed_at=T0 - 10.0,
        last_failed_at=T0 + 100.0,
        dead_lettered_at=T0 + 100.0,
        headers={"redriven": "yes", "by": "zoë"},
        sequence=0,
    )
    _expect(True, await h.store.replace(changed), "replace() of a stored letter")
    now = attrs.evolve(changed, sequence=first.sequence)
    await _expect_contents(h.store, [now, second, third], "after replace (order unchanged)")
    fatal: frozenset[Reason] = frozenset({"fatal"})
    exhausted: frozenset[Reason] = frozenset({"exhausted"})
    _expect_letters([now], await h.store.list(LetterFilter(reasons=fatal)), "by the new reason")
    _expect(2, await h.store.count(LetterFilter(reasons=exhausted)), "count by the old reason")
    _expect_letters(
        [now], await h.store.list(LetterFilter(since=T0 + 50)), "since the new dead_lettered_at"
    )
    _expect_letters(
        [second, third], await h.store.list(LetterFilter(before=T0 + 50)), "before the new time"
    )
    await h.store.delete([third.id])
    _expect(False, await h.store.replace(third), "replace() of a deleted letter")
    _expect(False, await h.store.replace(h.letter()), "replace() of a letter never stored")
    await _expect_contents(h.store, [now, second], "after replacing letters that are gone")
    newer = await h.add(h.letter())
    if not newer.sequence > second.sequence:
        raise AssertionError("a letter added after replace() must sort after the others")


async def _delete_counts_what_was_there(h: _Harness) -> None:
    a, b, c, d = await h.add_many(h.letter() for _ in range(4))
    _expect(0, await h.store.delete([]), "delete([])")
    _expect(0, await h.store.delete(["no-such-letter"]), "delete of an absent id")
    _expect(2, await h.store.delete([a.id, a.id, "no-such-letter", c.id]), "delete(a, a, ?, c)")
    await _expect_contents(h.store, [b, d], "after deleting a and c")
    _expect(0, await h.store.delete([a.id, c.id]), "deleting a and c again")
    _expect(1, await h.store.delete((d.id,)), "delete of a tuple")
    await _expect_contents(h.store, [b], "after deleting d")


async def _purge_deletes_what_the_filter_selects(h: _Harness) -> None:
    stored = await _filter_set(h)
    several: frozenset[Reason] = frozenset({"fatal", "poison"})
    rest = stored
    for where in (
        LetterFilter(reasons=several),
        LetterFilter(key="key-a", since=T0 + 1.5),
        LetterFilter(before=T0 + 1.0),
        LetterFilter(reasons=several),
        EVERYTHING,
        EVERYTHING,
    ):
        doomed = [letter for letter in rest if where.matches(letter)]
        rest = [letter for letter in rest if not where.matches(letter)]
        _expect(len(doomed), await h.store.purge(where), f"purge({_describe(where)})")
        await _expect_contents(h.store, rest, f"after purge({_describe(where)})")
    _expect(QueueStats(total=0), await h.store.stats(), "stats of a purged queue")


async def _a_full_queue_rejects(h: _Harness) -> None:
    stored = [await h.store.add(h.letter(), max_letters=3) for _ in range(3)]
    _expect([True] * 3, [added.created for added in stored], "adds below max_letters")
    letters = [added.letter for added in stored]
    refused = h.letter()
    await _raises_full(h.store.add(refused, max_letters=3), h.queue, 3, "a fourth of 3")
    await _raises_full(h.store.add(refused, max_letters=1), h.queue, 1, "a fourth of 1")
    await _expect_contents(h.store, letters, "after refused adds")
    _expect(None, await h.store.get(refused.id), "get of a refused letter")
    await h.store.delete([letters[1].id])
    added = await h.store.add(refused, max_letters=3)
    _expect(True, added.created, "an add once a letter was deleted")
    _expect((), added.evicted, "an add once a letter was deleted: evicted")
    if not added.letter.sequence > letters[2].sequence:
        raise AssertionError("a letter added after a refusal must sort after the others")
    await _expect_contents(h.store, [letters[0], letters[2], added.letter], "after making room")


async def _a_full_queue_evicts_the_oldest(h: _Harness) -> None:
    a, b, c = await h.add_many(h.letter(dead_lettered_at=T0 + i) for i in range(3))
    added = await h.store.add(h.letter(), max_letters=3, evict_oldest=True)
    _expect(True, added.created, "an add that evicts: created")
    _expect([a.id], sorted(added.evicted), "an add to a queue of 3 with max_letters 3: evicted")
    d = added.letter
    await _expect_contents(h.store, [b, c, d], "after evicting one")
    # Replacing b with the latest time keeps its sequence: it is still the oldest.
    b = attrs.evolve(b, dead_lettered_at=T0 + 1000.0)
    _expect(True, await h.store.replace(b), "replace b")
    added = await h.store.add(h.letter(), max_letters=2, evict_oldest=True)
    _expect(True, added.created, "an add that evicts two: created")
    _expect(sorted([b.id, c.id]), sorted(added.evicted), "max_letters 2 on a queue of 3: evicted")
    _expect(2, len(added.evicted), "max_letters 2 on a queue of 3: evicted ids are distinct")
    e = added.letter
    await _expect_contents(h.store, [d, e], "after evicting two")
    added = await h.store.add(h.letter(), max_letters=5, evict_oldest=True)
    _expect((), added.evicted, "an add with room to spare: evicted")
    await _expect_contents(h.store, [d, e, added.letter], "after an add with room")


async def _queues_are_isolated(h: _Harness) -> None:
    other_queue, other = await h.other_store()
    _expect(other_queue, other.queue, "the second store's queue")
    mine = await h.add_many(
        [h.letter(id="shared-id", reason="fatal"), h.letter(reason="fatal"), h.letter()]
    )
    theirs = await h.add_many(
        [
            h.letter(other_queue, id="shared-id", reason="poison", payload=b"theirs"),
            h.letter(other_queue, reason="fatal"),
        ],
        other,
    )
    await _expect_contents(h.store, mine, "the first queue")
    await _expect_contents(other, theirs, "the second queue")
    fatal: frozenset[Reason] = frozenset({"fatal"})
    _expect(2, await h.store.count(LetterFilter(reasons=fatal)), "fatal in the first queue")
    _expect(1, await other.count(LetterFilter(reasons=fatal)), "fatal in the second queue")
    _expect(None, await other.get(mine[1].id), "the second queue's get of a first-queue id")
    # max_letters counts the queue's own letters only.
    added = await other.add(h.letter(other_queue), max_letters=3)
    _expect(True, added.created, "an add to a queue of 2 with max_letters 3")
    theirs.append(added.letter)
    _expect(1, await h.store.delete(["shared-id"]), "deleting the shared id in the first queue")
    await _expect_contents(other, theirs, "the second queue after a delete in the first")
    _expect(3, await other.purge(EVERYTHING), "purging the second queue")
    await _expect_contents(h.store, mine[1:], "the first queue after purging the second")


async def _a_letter_of_another_queue_is_refused(h: _Harness) -> None:
    mine = await h.add(h.letter(id="taken-id"))
    other_queue = _unique("dlq")
    foreign = h.letter(other_queue)
    await _raises_config(h.store.add(foreign), "letter.queue", "adding another queue's letter")
    await _raises_config(
        h.store.replace(h.letter(other_queue, id="taken-id", payload=b"foreign")),
        "letter.queue",
        "replacing with another queue's letter",
    )
    await _expect_contents(h.store, [mine], "after refusing foreign letters")


async def _concurrent_adds_of_distinct_ids_all_land(h: _Harness) -> None:
    letters = [h.letter() for _ in range(16)]
    results = await h.add_all(h.store, letters)
    _expect([True] * 16, [added.created for added in results], "16 concurrent adds: created")
    sequences = [added.letter.sequence for added in results]
    _expect(16, len(set(sequences)), f"16 concurrent adds: distinct sequences in {sequences}")
    stored = sorted((added.letter for added in results), key=lambda letter: letter.sequence)
    await _expect_contents(h.store, stored, "after 16 concurrent adds")
    _expect(sorted(_ids(letters)), sorted(_ids(stored)), "the ids of 16 concurrent adds")


async def _concurrent_adds_of_one_id_create_one(h: _Harness) -> None:
    letters = [h.letter(id="one-id", payload=f"copy {i}".encode()) for i in range(8)]
    results = await h.add_all(h.store, letters)
    created = [added for added in results if added.created]
    _expect(1, len(created), "8 concurrent adds of one id: how many created")
    winner = created[0].letter
    for i, added in enumerate(results):
        _expect(winner, added.letter, f"concurrent add {i} of one id: the stored letter")
    await _expect_contents(h.store, [winner], "after 8 concurrent adds of one id")


# -- the test classes ---------------------------------------------------------------------------

if TYPE_CHECKING:
    _Check = Callable[[_Harness], Coroutine[Any, Any, None]]


class _DeadLetterChecks:
    """The ``test_*`` methods, written once for both suites."""

    def _check(self, check: _Check) -> None:
        raise NotImplementedError

    def test_the_store_knows_its_queue(self) -> None:
        """A fresh store names its queue and holds nothing."""
        self._check(_the_store_knows_its_queue)

    def test_every_field_round_trips(self) -> None:
        """Every field, binary, empty and 1 MiB payloads and exact float times read back as added."""
        self._check(_every_field_round_trips)

    def test_an_existing_id_changes_nothing(self) -> None:
        """Adding a stored id returns the stored letter, created=False, and changes nothing."""
        self._check(_an_existing_id_changes_nothing)

    def test_sequences_grow_and_are_never_reused(self) -> None:
        """Sequences increase in add order and are not reused after deletes or purges."""
        self._check(_sequences_grow_and_are_never_reused)

    def test_list_pages_cover_everything_once(self) -> None:
        """Pages of any size, chained by after=, list every letter once, oldest first."""
        self._check(_list_pages_cover_everything_once)

    def test_filters_select_what_matches_selects(self) -> None:
        """list() and count() select exactly what LetterFilter.matches() selects."""
        self._check(_filters_select_what_matches_selects)

    def test_stats_agree_with_the_letters(self) -> None:
        """stats() equals QueueStats.of() the stored letters."""
        self._check(_stats_agree_with_the_letters)

    def test_replace_keeps_the_sequence(self) -> None:
        """replace() overwrites the fields, keeps the sequence; False for a gone id."""
        self._check(_replace_keeps_the_sequence)

    def test_delete_counts_what_was_there(self) -> None:
        """delete() counts each stored id once, ignoring absent ids and duplicates."""
        self._check(_delete_counts_what_was_there)

    def test_purge_deletes_what_the_filter_selects(self) -> None:
        """purge() deletes exactly the selected letters and says how many."""
        self._check(_purge_deletes_what_the_filter_selects)

    def test_a_full_queue_rejects(self) -> None:
        """At max_letters an add raises DeadLetterQueueFullError and changes nothing."""
        self._check(_a_full_queue_rejects)

    def test_a_full_queue_evicts_the_oldest(self) -> None:
        """With evict_oldest an add deletes the lowest-sequence letters and reports them."""
        self._check(_a_full_queue_evicts_the_oldest)

    def test_queues_are_isolated(self) -> None:
        """Two queues on one backend share nothing, not even letter ids."""
        self._check(_queues_are_isolated)

    def test_a_letter_of_another_queue_is_refused(self) -> None:
        """add() and replace() of another queue's letter raise ConfigurationError."""
        self._check(_a_letter_of_another_queue_is_refused)

    def test_concurrent_adds_of_distinct_ids_all_land(self) -> None:
        """Concurrent adds of distinct ids all land, with distinct sequences."""
        self._check(_concurrent_adds_of_distinct_ids_all_land)

    def test_concurrent_adds_of_one_id_create_one(self) -> None:
        """Concurrent adds of one id create exactly one letter; all see it."""
        self._check(_concurrent_adds_of_one_id_create_one)


class _SyncDeadLetterView:
    """A sync store seen through the async Protocol; its coroutines never suspend."""

    __slots__ = ("queue", "sync")

    def __init__(self, store: DeadLetterStore) -> None:
        self.sync = store
        self.queue = store.queue

    async def add(
        self, letter: DeadLetter, *, max_letters: int | None = None, evict_oldest: bool = False
    ) -> Added:
        return self.sync.add(letter, max_letters=max_letters, evict_oldest=evict_oldest)

    async def get(self, letter_id: str) -> DeadLetter | None:
        return self.sync.get(letter_id)

    async def list(
        self, where: LetterFilter, *, after: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        return self.sync.list(where, after=after, limit=limit)

    async def count(self, where: LetterFilter) -> int:
        return self.sync.count(where)

    async def stats(self) -> QueueStats:
        return self.sync.stats()

    async def replace(self, letter: DeadLetter) -> bool:
        return self.sync.replace(letter)

    async def delete(self, letter_ids: Sequence[str]) -> int:
        return self.sync.delete(letter_ids)

    async def purge(self, where: LetterFilter) -> int:
        return self.sync.purge(where)

    async def close(self) -> None:
        self.sync.close()


async def _add_in_threads(
    store: AsyncDeadLetterStore, letters: Sequence[DeadLetter]
) -> list[Added]:
    """Add *letters* to a sync store from as many threads, released together."""
    if not isinstance(store, _SyncDeadLetterView):
        raise TypeError("the sync suite adds concurrently to its own stores only")
    sync = store.sync
    barrier = threading.Barrier(len(letters))

    def add(letter: DeadLetter) -> Added:
        barrier.wait(timeout=30.0)
        return sync.add(letter)

    with ThreadPoolExecutor(max_workers=len(letters), thread_name_prefix="dlq-contract") as pool:
        return list(pool.map(add, letters))


async def _add_gathered(store: AsyncDeadLetterStore, letters: Sequence[DeadLetter]) -> list[Added]:
    """Add *letters* to an async store as concurrent tasks of one loop."""
    return list(await asyncio.gather(*(store.add(letter) for letter in letters)))


class DeadLetterStoreContract(_DeadLetterChecks):
    """The conformance suite for a :class:`~invresilience.typing.DeadLetterStore`.

    Subclass it as ``Test...`` and implement :meth:`make_store`; pytest runs the
    inherited ``test_*`` methods, each on a store of a fresh queue. Concurrency is
    checked with real threads sharing one store.

    .. versionadded:: 0.1.0
    """

    def make_store(self, queue: str) -> DeadLetterStore:
        """A store of *queue*; every store of one test must share one backend.

        Args:
            queue: A fresh queue name (``contract-dlq-`` and 32 hex digits).

        Returns:
            The store, its ``queue`` attribute equal to *queue*.

        .. versionadded:: 0.1.0
        """
        raise NotImplementedError

    def close_store(self, store: DeadLetterStore) -> None:
        """Release *store* after its test; calls ``store.close()`` by default.

        Args:
            store: A store :meth:`make_store` returned.

        .. versionadded:: 0.1.0
        """
        store.close()

    def _check(self, check: _Check) -> None:
        opened: list[DeadLetterStore] = []

        def make(queue: str) -> _SyncDeadLetterView:
            store = self.make_store(queue)
            opened.append(store)
            return _SyncDeadLetterView(store)

        async def open_store(queue: str) -> AsyncDeadLetterStore:
            return make(queue)

        try:
            queue = _unique("dlq")
            harness = _Harness(make(queue), queue, open_store, _add_in_threads)
            _run_now(check(harness))
        finally:
            for store in reversed(opened):
                self.close_store(store)


class AsyncDeadLetterStoreContract(_DeadLetterChecks):
    """The conformance suite for an :class:`~invresilience.typing.AsyncDeadLetterStore`.

    Like :class:`DeadLetterStoreContract`, with coroutine hooks; each test runs in its
    own event loop (``asyncio.run``), inside which :meth:`make_store` is awaited.
    Concurrency is checked with tasks of that loop sharing one store.

    .. versionadded:: 0.1.0
    """

    async def make_store(self, queue: str) -> AsyncDeadLetterStore:
        """A store of *queue*, made inside the test's event loop; one backend per test.

        Args:
            queue: A fresh queue name (``contract-dlq-`` and 32 hex digits).

        Returns:
            The store, its ``queue`` attribute equal to *queue*.

        .. versionadded:: 0.1.0
        """
        raise NotImplementedError

    async def close_store(self, store: AsyncDeadLetterStore) -> None:
        """Release *store* after its test; awaits ``store.close()`` by default.

        Args:
            store: A store :meth:`make_store` returned.

        .. versionadded:: 0.1.0
        """
        await store.close()

    def _check(self, check: _Check) -> None:
        async def main() -> None:
            opened: list[AsyncDeadLetterStore] = []

            async def open_store(queue: str) -> AsyncDeadLetterStore:
                store = await self.make_store(queue)
                opened.append(store)
                return store

            try:
                queue = _unique("dlq")
                harness = _Harness(await open_store(queue), queue, open_store, _add_gathered)
                await check(harness)
            finally:
                for store in reversed(opened):
                    await self.close_store(store)

        asyncio.run(main())
