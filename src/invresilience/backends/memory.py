"""In-process stores: the reference implementations of the store Protocols.

They share state between the objects of one process (two breakers with the same name, many
limiters on one bucket) and are what the network backends are tested against.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import secrets
import threading
from typing import TYPE_CHECKING, Any, Literal

import attrs
from typing_extensions import final

from .._admission import MemoryRateLimitStore
from .._clock import SYSTEM_CLOCK
from .._core import idempotency as rules
from .._core.breaker import BreakerCore, BreakerSpec, SharedBreakerState
from .._core.dlq import Added, QueueStats
from .._core.membership import GroupState, MembershipOp
from .._dlq import AsyncDeadLetterQueue, DeadLetterQueue
from ..exceptions import ConfigurationError, DeadLetterQueueFullError
from ..typing import DEFAULT_TTL
from ._common import (
    check_claim_args,
    check_lease,
    check_letter,
    check_limit,
    check_max_letters,
    check_membership_op,
    check_namespace,
    check_ttl,
    lost,
    membership_result,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._core.dlq import DeadLetter, LetterFilter
    from .._core.idempotency import Claim, Lease, Record
    from .._core.membership import MembershipView
    from ..typing import Clock

__all__ = [
    "AsyncMemoryBreakerStore",
    "AsyncMemoryDeadLetterStore",
    "AsyncMemoryIdempotencyStore",
    "AsyncMemoryMembership",
    "MemoryBackend",
    "MemoryBreakerStore",
    "MemoryDeadLetterStore",
    "MemoryIdempotencyStore",
    "MemoryMembership",
    "MemoryRateLimitStore",
]


@final
class MemoryBreakerStore:
    """A :class:`~invresilience.typing.BreakerStore` in this process's memory.

    Breakers are kept per name for the life of the store.
    Thread-safe; every operation is atomic under one lock.

    Args:
        clock: The store's clock (the one every rule's ``now`` is read from).

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._cores: dict[str, BreakerCore] = {}

    def __repr__(self) -> str:
        return f"MemoryBreakerStore({len(self._cores)} breakers)"

    def _core(self, name: str, spec: BreakerSpec) -> BreakerCore:
        core = self._cores.get(name)
        if core is None or core.spec != spec:
            # A breaker reconfigured under the same name starts afresh, closed, but keeps
            # counting generations so outcomes from the old configuration are dropped.
            fresh = BreakerCore(spec)
            if core is not None:
                fresh.generation = core.generation + 1
            core = self._cores[name] = fresh
        return core

    def _seed(self, name: str, spec: BreakerSpec, shared: SharedBreakerState, now: float) -> None:
        """Start *name* from *shared* (a breaker failing over from a shared store to local)."""
        with self._lock:
            core = self._cores[name] = BreakerCore(spec)
            core.state = shared.state
            core.generation = shared.generation
            core.opens = shared.opens
            core.open_until = now + shared.retry_after

    def record(
        self,
        name: str,
        spec: BreakerSpec,
        generation: int,
        *,
        successes: int = 0,
        failures: int = 0,
        slow_successes: int = 0,
        slow_failures: int = 0,
        successes_at: float | None = None,
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.record`.

        *successes_at* (not part of the Protocol) is the earlier time, on this store's
        clock, that the plain *successes* belong to: an in-process breaker folding a batch
        of successes late files them in the time-window bucket they were counted in.
        """
        with self._lock:
            core = self._core(name, spec)
            now = self.clock.monotonic()
            core.record(
                now,
                generation,
                successes=successes,
                failures=failures,
                slow_successes=slow_successes,
                slow_failures=slow_failures,
                successes_at=successes_at,
            )
            return core.shared(now)

    def probe(self, name: str, spec: BreakerSpec, owner: str) -> tuple[SharedBreakerState, bool]:
        """See :meth:`~invresilience.typing.BreakerStore.probe`."""
        with self._lock:
            core = self._core(name, spec)
            now = self.clock.monotonic()
            granted = core.probe(now, owner)
            return core.shared(now), granted

    def settle(
        self, name: str, spec: BreakerSpec, owner: str, generation: int, success: bool | None
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.settle`."""
        with self._lock:
            core = self._core(name, spec)
            now = self.clock.monotonic()
            core.settle(now, owner, generation, success)
            return core.shared(now)

    def force(
        self, name: str, spec: BreakerSpec, state: Literal["isolated", "closed"]
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.force`."""
        with self._lock:
            core = self._core(name, spec)
            now = self.clock.monotonic()
            core.force(now, state)
            return core.shared(now)

    def read(self, name: str, spec: BreakerSpec) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.read`."""
        with self._lock:
            core = self._core(name, spec)
            return core.shared(self.clock.monotonic())


@final
class AsyncMemoryBreakerStore:
    """The async twin of :class:`MemoryBreakerStore`, sharing its state.

    Args:
        store: The sync store whose breakers to share; a new one by default.

    .. versionadded:: 0.1.0
    """

    def __init__(self, store: MemoryBreakerStore | None = None) -> None:
        self.sync = store if store is not None else MemoryBreakerStore()

    def __repr__(self) -> str:
        return f"AsyncMemoryBreakerStore({self.sync!r})"

    async def record(
        self,
        name: str,
        spec: BreakerSpec,
        generation: int,
        *,
        successes: int = 0,
        failures: int = 0,
        slow_successes: int = 0,
        slow_failures: int = 0,
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.record`."""
        return self.sync.record(
            name,
            spec,
            generation,
            successes=successes,
            failures=failures,
            slow_successes=slow_successes,
            slow_failures=slow_failures,
        )

    async def probe(
        self, name: str, spec: BreakerSpec, owner: str
    ) -> tuple[SharedBreakerState, bool]:
        """See :meth:`~invresilience.typing.BreakerStore.probe`."""
        return self.sync.probe(name, spec, owner)

    async def settle(
        self, name: str, spec: BreakerSpec, owner: str, generation: int, success: bool | None
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.settle`."""
        return self.sync.settle(name, spec, owner, generation, success)

    async def force(
        self, name: str, spec: BreakerSpec, state: Literal["isolated", "closed"]
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.force`."""
        return self.sync.force(name, spec, state)

    async def read(self, name: str, spec: BreakerSpec) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.read`."""
        return self.sync.read(name, spec)


@final
class MemoryIdempotencyStore:
    """An :class:`~invresilience.typing.IdempotencyStore` in this process's memory.

    The reference implementation: it applies the rules of the store Protocol directly,
    under one lock, on the store's clock. Records vanish with the process, so it suits
    tests and single-process tools; expired records are deleted by
    :meth:`purge_expired`.

    Args:
        clock: The store's clock; records are timed on its ``wall()``.

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}

    def __repr__(self) -> str:
        return f"MemoryIdempotencyStore({len(self._records)} records)"

    def claim(self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL) -> Claim:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim`."""
        check_claim_args(key, fingerprint, lease, ttl)
        return self._claim(key, fingerprint, lease, ttl)

    def _claim(self, key: str, fingerprint: str, lease: float, ttl: float) -> Claim:
        with self._lock:
            new, answer = rules.claim(
                self._records.get(key),
                key,
                fingerprint,
                secrets.token_hex(16),
                now=self.clock.wall(),
                lease=lease,
                ttl=ttl,
            )
            if new is not None:
                self._records[key] = new
            return answer

    def claim_many(
        self, items: Sequence[tuple[str, str]], *, lease: float, ttl: float = DEFAULT_TTL
    ) -> list[Claim]:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim_many`."""
        for key, fingerprint in items:
            check_claim_args(key, fingerprint, lease, ttl)
        return [self._claim(key, fingerprint, lease, ttl) for key, fingerprint in items]

    def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete`."""
        check_lease(lease)
        check_ttl(ttl)
        if not self._complete(lease, bytes(result), ttl):
            raise lost(lease)

    def _complete(self, lease: Lease, result: bytes, ttl: float) -> bool:
        with self._lock:
            new = rules.complete(
                self._records.get(lease.key), lease, result, now=self.clock.wall(), ttl=ttl
            )
            if new is None:
                return False
            self._records[lease.key] = new
            return True

    def complete_many(
        self, items: Sequence[tuple[Lease, bytes]], *, ttl: float = DEFAULT_TTL
    ) -> list[bool]:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete_many`."""
        check_ttl(ttl)
        for lease, _ in items:
            check_lease(lease)
        return [self._complete(lease, bytes(result), ttl) for lease, result in items]

    def release(self, lease: Lease) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.release`."""
        check_lease(lease)
        with self._lock:
            new = rules.release(self._records.get(lease.key), lease, now=self.clock.wall())
            if new is None:
                raise lost(lease)
            self._records[lease.key] = new

    def extend(self, lease: Lease, seconds: float) -> Lease:
        """See :meth:`~invresilience.typing.IdempotencyStore.extend`."""
        check_lease(lease)
        check_ttl(seconds, field="seconds")
        with self._lock:
            new = rules.extend(self._records.get(lease.key), lease, seconds, now=self.clock.wall())
            if new is None:
                raise lost(lease)
            self._records[lease.key] = new
        return rules.Lease(lease.key, lease.fence, lease.token, lease.fingerprint, seconds)

    def purge_expired(self, limit: int = 1000) -> int:
        """See :meth:`~invresilience.typing.IdempotencyStore.purge_expired`."""
        check_limit(limit)
        with self._lock:
            now = self.clock.wall()
            doomed = [key for key, record in self._records.items() if record.expires_at <= now]
            for key in doomed[:limit]:
                del self._records[key]
            return min(len(doomed), limit)

    def close(self) -> None:
        """Nothing to release; records stay readable."""


@final
class AsyncMemoryIdempotencyStore:
    """The async twin of :class:`MemoryIdempotencyStore`, over the same records.

    Args:
        store: The sync store to share records with; a new one when omitted.
        clock: The clock of the new store (only when *store* is omitted).

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, store: MemoryIdempotencyStore | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.store = MemoryIdempotencyStore(clock=clock) if store is None else store

    def __repr__(self) -> str:
        return f"AsyncMemoryIdempotencyStore({self.store!r})"

    async def claim(
        self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL
    ) -> Claim:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim`."""
        return self.store.claim(key, fingerprint, lease=lease, ttl=ttl)

    async def claim_many(
        self, items: Sequence[tuple[str, str]], *, lease: float, ttl: float = DEFAULT_TTL
    ) -> list[Claim]:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim_many`."""
        return self.store.claim_many(items, lease=lease, ttl=ttl)

    async def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete`."""
        self.store.complete(lease, result, ttl=ttl)

    async def complete_many(
        self, items: Sequence[tuple[Lease, bytes]], *, ttl: float = DEFAULT_TTL
    ) -> list[bool]:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete_many`."""
        return self.store.complete_many(items, ttl=ttl)

    async def release(self, lease: Lease) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.release`."""
        self.store.release(lease)

    async def extend(self, lease: Lease, seconds: float) -> Lease:
        """See :meth:`~invresilience.typing.IdempotencyStore.extend`."""
        return self.store.extend(lease, seconds)

    async def purge_expired(self, limit: int = 1000) -> int:
        """See :meth:`~invresilience.typing.IdempotencyStore.purge_expired`."""
        return self.store.purge_expired(limit)

    async def close(self) -> None:
        """Nothing to release."""


@final
class MemoryDeadLetterStore:
    """A :class:`~invresilience.typing.DeadLetterStore` in this process's memory.

    The reference implementation: letters in a dict in sequence order, filters applied
    by :meth:`LetterFilter.matches <invresilience.typing.LetterFilter.matches>`, under
    one lock. Nothing survives the process.

    Args:
        queue: The queue's name.

    .. versionadded:: 0.1.0
    """

    def __init__(self, queue: str = "default") -> None:
        self.queue = check_namespace("queue", queue)
        self._lock = threading.Lock()
        self._letters: dict[str, DeadLetter] = {}  # insertion order is sequence order
        self._sequence = 0

    def __repr__(self) -> str:
        return f"MemoryDeadLetterStore({self.queue!r}, {len(self._letters)} letters)"

    def add(
        self, letter: DeadLetter, *, max_letters: int | None = None, evict_oldest: bool = False
    ) -> Added:
        """See :meth:`~invresilience.typing.DeadLetterStore.add`."""
        check_letter(letter, self.queue)
        check_max_letters(max_letters)
        with self._lock:
            existing = self._letters.get(letter.id)
            if existing is not None:
                return Added(letter=existing, created=False)
            evicted: list[str] = []
            if max_letters is not None and len(self._letters) >= max_letters:
                if not evict_oldest:
                    raise DeadLetterQueueFullError(self.queue, max_letters)
                for old in list(self._letters)[: len(self._letters) - max_letters + 1]:
                    del self._letters[old]
                    evicted.append(old)
            self._sequence += 1
            stored = attrs.evolve(letter, sequence=self._sequence)
            self._letters[letter.id] = stored
            return Added(letter=stored, created=True, evicted=tuple(evicted))

    def get(self, letter_id: str) -> DeadLetter | None:
        """See :meth:`~invresilience.typing.DeadLetterStore.get`."""
        with self._lock:
            return self._letters.get(letter_id)

    def list(self, where: LetterFilter, *, after: int = 0, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`~invresilience.typing.DeadLetterStore.list`."""
        check_limit(limit)
        with self._lock:
            found: list[DeadLetter] = []
            for letter in self._letters.values():
                if letter.sequence > after and where.matches(letter):
                    found.append(letter)
                    if len(found) == limit:
                        break
            return found

    def count(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.count`."""
        with self._lock:
            return sum(1 for letter in self._letters.values() if where.matches(letter))

    def stats(self) -> QueueStats:
        """See :meth:`~invresilience.typing.DeadLetterStore.stats`."""
        with self._lock:
            return QueueStats.of(self._letters.values())

    def replace(self, letter: DeadLetter) -> bool:
        """See :meth:`~invresilience.typing.DeadLetterStore.replace`."""
        check_letter(letter, self.queue)
        with self._lock:
            old = self._letters.get(letter.id)
            if old is None:
                return False
            self._letters[letter.id] = attrs.evolve(letter, sequence=old.sequence)
            return True

    def delete(self, letter_ids: Sequence[str]) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.delete`."""
        with self._lock:
            return sum(self._letters.pop(i, None) is not None for i in set(letter_ids))

    def purge(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.purge`."""
        with self._lock:
            doomed = [i for i, letter in self._letters.items() if where.matches(letter)]
            for letter_id in doomed:
                del self._letters[letter_id]
            return len(doomed)

    def close(self) -> None:
        """Nothing to release; letters stay readable."""


@final
class AsyncMemoryDeadLetterStore:
    """The async twin of :class:`MemoryDeadLetterStore`, over the same letters.

    Args:
        store: The sync store to share letters with; a new one when omitted.

    .. versionadded:: 0.1.0
    """

    def __init__(self, store: MemoryDeadLetterStore | None = None) -> None:
        self.store = MemoryDeadLetterStore() if store is None else store
        self.queue = self.store.queue

    def __repr__(self) -> str:
        return f"AsyncMemoryDeadLetterStore({self.store!r})"

    async def add(
        self, letter: DeadLetter, *, max_letters: int | None = None, evict_oldest: bool = False
    ) -> Added:
        """See :meth:`~invresilience.typing.DeadLetterStore.add`."""
        return self.store.add(letter, max_letters=max_letters, evict_oldest=evict_oldest)

    async def get(self, letter_id: str) -> DeadLetter | None:
        """See :meth:`~invresilience.typing.DeadLetterStore.get`."""
        return self.store.get(letter_id)

    async def list(
        self, where: LetterFilter, *, after: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """See :meth:`~invresilience.typing.DeadLetterStore.list`."""
        return self.store.list(where, after=after, limit=limit)

    async def count(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.count`."""
        return self.store.count(where)

    async def stats(self) -> QueueStats:
        """See :meth:`~invresilience.typing.DeadLetterStore.stats`."""
        return self.store.stats()

    async def replace(self, letter: DeadLetter) -> bool:
        """See :meth:`~invresilience.typing.DeadLetterStore.replace`."""
        return self.store.replace(letter)

    async def delete(self, letter_ids: Sequence[str]) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.delete`."""
        return self.store.delete(letter_ids)

    async def purge(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.purge`."""
        return self.store.purge(where)

    async def close(self) -> None:
        """Nothing to release."""


@final
class MemoryMembership:
    """One group's membership in this process: leases on the injected clock.

    The reference :class:`~invresilience.typing.Membership`: the Redis, PostgreSQL and
    SQLite stores keep the same :class:`~invresilience._core.membership.GroupState` and
    apply the same operations, on their own clocks. Share it between threads (or between
    :class:`~invresilience.ShardAssignment` objects in one test) to model many workers.

    Args:
        group: The group's name.
        clock: Measures leases (a :class:`~invresilience.testing.ManualClock` in tests).

    .. versionadded:: 0.1.0
    """

    def __init__(self, group: str = "default", *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._group = check_namespace("group", group)
        self._clock = clock
        self._state = GroupState(group)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryMembership({self._group!r})"

    @property
    def group(self) -> str:
        """The group's name."""
        return self._group

    def _apply(self, op: MembershipOp) -> MembershipView:
        check_membership_op(op)
        with self._lock:
            result = self._state.apply(op, self._clock.monotonic())
        return membership_result(self._group, op, result)

    def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.join`."""
        return self._apply(
            MembershipOp(kind="join", member=member, token=token, weight=weight, lease=lease)
        )

    def heartbeat(self, member: str, token: str, *, lease: float, acked: int) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.heartbeat`."""
        return self._apply(
            MembershipOp(kind="heartbeat", member=member, token=token, lease=lease, acked=acked)
        )

    def leave(self, member: str, token: str) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.leave`."""
        return self._apply(MembershipOp(kind="leave", member=member, token=token))

    def view(self) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.view`."""
        return self._apply(MembershipOp(kind="view"))

    def close(self) -> None:
        """Nothing to close."""


@final
class AsyncMemoryMembership:
    """The async view of a :class:`MemoryMembership` (the same group state).

    .. versionadded:: 0.1.0
    """

    def __init__(self, membership: MemoryMembership | None = None) -> None:
        self._sync = membership if membership is not None else MemoryMembership()

    def __repr__(self) -> str:
        return f"AsyncMemoryMembership({self._sync.group!r})"

    @property
    def group(self) -> str:
        """The group's name."""
        return self._sync.group

    async def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """See :meth:`MemoryMembership.join`."""
        return self._sync.join(member, token, weight=weight, lease=lease)

    async def heartbeat(
        self, member: str, token: str, *, lease: float, acked: int
    ) -> MembershipView:
        """See :meth:`MemoryMembership.heartbeat`."""
        return self._sync.heartbeat(member, token, lease=lease, acked=acked)

    async def leave(self, member: str, token: str) -> MembershipView:
        """See :meth:`MemoryMembership.leave`."""
        return self._sync.leave(member, token)

    async def view(self) -> MembershipView:
        """See :meth:`MemoryMembership.view`."""
        return self._sync.view()

    async def close(self) -> None:
        """Nothing to close."""


@final
class MemoryBackend:
    """The :class:`~invresilience.typing.Backend` of ``memory://``: stores in this process.

    Every store of one namespace shares its records, so two guards in one process
    agree; nothing survives the process. For tests and one-off tools.

    Args:
        clock: The stores' clock.

    .. versionadded:: 0.1.0
    """

    url = "memory://"

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._idempotency: dict[str, MemoryIdempotencyStore] = {}
        self._dead_letters: dict[str, MemoryDeadLetterStore] = {}
        self._breakers: MemoryBreakerStore | None = None
        self._limits: MemoryRateLimitStore | None = None
        self._groups: dict[str, MemoryMembership] = {}

    @classmethod
    def from_url(cls, url: str) -> MemoryBackend:
        """The backend of ``memory://`` (nothing may follow the scheme).

        Raises:
            ConfigurationError: Something follows ``memory://``.
        """
        if url.rstrip("/").lower() != "memory:":
            raise ConfigurationError("url", url, "must be exactly 'memory://'")
        return cls()

    def __repr__(self) -> str:
        return "MemoryBackend()"

    def __enter__(self) -> MemoryBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def idempotency_store(self, namespace: str = "default") -> MemoryIdempotencyStore:
        """The idempotency store of *namespace*: one per namespace, shared."""
        check_namespace("namespace", namespace)
        with self._lock:
            store = self._idempotency.get(namespace)
            if store is None:
                store = self._idempotency[namespace] = MemoryIdempotencyStore(clock=self.clock)
            return store

    def async_idempotency_store(self, namespace: str = "default") -> AsyncMemoryIdempotencyStore:
        """The async view of :meth:`idempotency_store`, over the same records."""
        return AsyncMemoryIdempotencyStore(self.idempotency_store(namespace))

    def dead_letter_store(self, queue: str) -> MemoryDeadLetterStore:
        """The store of dead-letter queue *queue*: one per name, shared."""
        check_namespace("queue", queue)
        with self._lock:
            store = self._dead_letters.get(queue)
            if store is None:
                store = self._dead_letters[queue] = MemoryDeadLetterStore(queue)
            return store

    def async_dead_letter_store(self, queue: str) -> AsyncMemoryDeadLetterStore:
        """The async view of :meth:`dead_letter_store`, over the same letters."""
        return AsyncMemoryDeadLetterStore(self.dead_letter_store(queue))

    def dead_letter_queue(self, queue: str, **options: Any) -> DeadLetterQueue:
        """A :class:`~invresilience.DeadLetterQueue` over :meth:`dead_letter_store`.

        *options* (``codec``, ``redact``, ``max_letters``, ...) go to its constructor;
        the queue's clock defaults to this backend's.
        """
        options.setdefault("clock", self.clock)
        return DeadLetterQueue(self.dead_letter_store(queue), **options)

    def async_dead_letter_queue(self, queue: str, **options: Any) -> AsyncDeadLetterQueue:
        """An :class:`~invresilience.AsyncDeadLetterQueue` over :meth:`async_dead_letter_store`."""
        options.setdefault("clock", self.clock)
        return AsyncDeadLetterQueue(self.async_dead_letter_store(queue), **options)

    def membership(self, group: str) -> MemoryMembership:
        """The membership of *group*: one per name, shared, leases on the backend's clock."""
        check_namespace("group", group)
        with self._lock:
            membership = self._groups.get(group)
            if membership is None:
                membership = self._groups[group] = MemoryMembership(group, clock=self.clock)
            return membership

    def async_membership(self, group: str) -> AsyncMemoryMembership:
        """The async view of :meth:`membership`, over the same group."""
        return AsyncMemoryMembership(self.membership(group))

    def breaker_store(self) -> MemoryBreakerStore:
        """The breaker store every breaker of this backend shares."""
        with self._lock:
            if self._breakers is None:
                self._breakers = MemoryBreakerStore(clock=self.clock)
            return self._breakers

    def rate_limit_store(self) -> MemoryRateLimitStore:
        """The rate-limit store every limiter of this backend shares."""
        with self._lock:
            if self._limits is None:
                self._limits = MemoryRateLimitStore(self.clock)
            return self._limits

    def close(self) -> None:
        """Nothing to close: the stores stay usable."""
