"""The public Protocols that invresilience's pieces are written against.

Anything that satisfies these (structurally: no subclassing needed) can be passed in.
Stores come in sync and async twins (``BreakerStore`` / ``AsyncBreakerStore``); the
conformance suites in :mod:`invresilience.contract` check an implementation.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, runtime_checkable

from typing_extensions import ParamSpec

from ._core.breaker import BreakerSpec, SharedBreakerState
from ._core.dlq import REASONS, Added, DeadLetter, LetterFilter, QueueStats, Reason
from ._core.idempotency import Acquired, Claim, Completed, InProgress, Lease, Mismatch
from ._core.membership import Member, MembershipChange, MembershipView, incarnation_of
from ._core.sharding import ShardKey

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from ._dlq import AsyncDeadLetterQueue, DeadLetterQueue

#: How long a record is kept after its last change, unless told otherwise (24 hours).
DEFAULT_TTL = 86400.0

_P = ParamSpec("_P")
_T = TypeVar("_T")
_N_co = TypeVar("_N_co", covariant=True)

__all__ = [
    "DEFAULT_TTL",
    "REASONS",
    "Acquired",
    "Added",
    "Admission",
    "AsyncBreakerStore",
    "AsyncDeadLetterStore",
    "AsyncIdempotencyStore",
    "AsyncMembership",
    "AsyncRateLimitStore",
    "Backend",
    "BreakerSpec",
    "BreakerStore",
    "Claim",
    "Clock",
    "Codec",
    "Completed",
    "DeadLetter",
    "DeadLetterStore",
    "HashRouter",
    "IdempotencyStore",
    "InProgress",
    "Lease",
    "LetterFilter",
    "Member",
    "Membership",
    "MembershipChange",
    "MembershipView",
    "Mismatch",
    "Permit",
    "Policy",
    "QueueStats",
    "RateLimitStore",
    "Reason",
    "Release",
    "Router",
    "ShardKey",
    "SharedBreakerState",
    "incarnation_of",
]


@runtime_checkable
class Clock(Protocol):
    """**Protocol:** the source of time every time-aware piece takes.

    :class:`~invresilience.SystemClock` is the default;
    :class:`invresilience.testing.ManualClock` advances instantly on sleep,
    so tests of long outages run in milliseconds.

    .. versionadded:: 0.1.0
    """

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences are meaningful."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, for timestamps that leave the process."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for *seconds*."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for *seconds*."""
        ...


class Policy(Protocol):
    """**Protocol:** a decorator that wraps a callable and keeps its signature.

    Every policy -- :class:`~invresilience.RetryPolicy`, :class:`~invresilience.CircuitBreaker`,
    the admission limiters, :class:`~invresilience.Timeout`, :class:`~invresilience.Fallback`,
    :class:`~invresilience.Pipeline` -- is one, so :class:`~invresilience.Pipeline` can
    stack any of them, and your own.

    .. versionadded:: 0.1.0
    """

    def __call__(self, fn: Callable[_P, _T], /) -> Callable[_P, _T]:
        """Wrap *fn*; ``def`` and ``async def`` alike."""
        ...


# -- admission control -----------------------------------------------------------------------

Release = Literal["success", "dropped", "ignored"]
"""How an admitted call ended, reported when its permit is released.

``"success"``: the dependency answered. ``"dropped"``: it failed in a way that signals
overload (an error, a 429 / 503, a timeout) -- adaptive limiters shrink on drops.
``"ignored"``: the call says nothing about the dependency (it was cancelled, or failed
locally).

.. versionadded:: 0.1.0
"""


class Permit(Protocol):
    """**Protocol:** the right to make one call, handed out by an :class:`Admission`.

    A permit is released exactly once, with the call's outcome and latency; releasing it
    again does nothing. Used as a context manager it releases itself: ``"success"`` when the
    block ends normally, ``"dropped"`` when it raises an :class:`Exception`, ``"ignored"``
    for cancellation and other :class:`BaseException`.

    .. versionadded:: 0.1.0
    """

    def release(self, outcome: Release = "success", latency: float | None = None) -> None:
        """Give the permit back, reporting how the call went and how long it took (seconds)."""
        ...

    def __enter__(self) -> Permit: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Admission(Protocol):
    """**Protocol:** decides whether a call may start now.

    :class:`~invresilience.RateLimiter`, :class:`~invresilience.Bulkhead` and
    :class:`~invresilience.AdaptiveLimiter` implement it.

    .. versionadded:: 0.1.0
    """

    def try_acquire(self, weight: int = 1, *, key: str | None = None) -> Permit | None:
        """A permit if the call may start at once, else ``None`` (never waits)."""
        ...

    def acquire(self, weight: int = 1, *, key: str | None = None, timeout: float = 0.0) -> Permit:
        """A permit, waiting up to *timeout* seconds for one.

        Raises:
            RateLimitedError: A rate limit would not admit the call in time.
            BulkheadFullError: No slot freed up in time, or the waiting queue is full.
        """
        ...

    async def aacquire(
        self, weight: int = 1, *, key: str | None = None, timeout: float = 0.0
    ) -> Permit:
        """The async twin of :meth:`acquire`; waiting does not block the event loop."""
        ...


class RateLimitStore(Protocol):
    """**Protocol:** where a :class:`~invresilience.RateLimiter` keeps its buckets.

    The algorithm is GCRA on integer nanoseconds, on the *store's* clock. A bucket is one
    stored number, its theoretical arrival time ``tat`` (absent means rested). A request of
    *weight* ``w`` at time ``now`` is admitted iff
    ``max(tat, now) + w * interval_ns - now <= capacity_ns``; then
    ``tat = max(tat, now) + w * interval_ns``. Otherwise nothing changes and the answer is the
    wait until it would be admitted, ``max(tat, now) + w * interval_ns - now - capacity_ns``.
    With ``capacity_ns = burst * interval_ns`` exactly ``burst`` requests pass at once from a
    rested bucket, then one per interval. Every acquire is one atomic operation (one round
    trip on a network store); a bucket may be forgotten once ``tat <= now``.

    .. versionadded:: 0.1.0
    """

    def acquire(self, key: str, *, interval_ns: int, capacity_ns: int, weight: int) -> int:
        """Try to take *weight* from *key*'s bucket: ``0`` if admitted, else the nanoseconds to wait."""
        ...


class AsyncRateLimitStore(Protocol):
    """**Protocol:** the async twin of :class:`RateLimitStore`.

    .. versionadded:: 0.1.0
    """

    async def acquire(self, key: str, *, interval_ns: int, capacity_ns: int, weight: int) -> int:
        """Try to take *weight* from *key*'s bucket: ``0`` if admitted, else the nanoseconds to wait."""
        ...


# -- shared circuit breaker state -----------------------------------------------------------


class BreakerStore(Protocol):
    """**Protocol:** shared state for circuit breakers of the same name in many processes.

    Every method is one atomic operation on the store, using the store's clock, so the
    processes' clocks never need to agree. The state machine, per breaker *name*:

    - ``record``: if the stored state is ``closed`` and its generation equals *generation*,
      add the counts to the shared window; then, if the counts hold a failure or a slow
      call (plain successes only lower the rates), the window holds at least
      ``spec.minimum_calls`` calls, and the failure rate or the slow-call rate reached its
      threshold, trip: ``open``, generation + 1, opens + 1, open until
      ``now + spec.open_for[min(opens, len) - 1]``, window emptied. Counts for another
      generation or state are dropped.
    - ``probe``: an ``open`` breaker whose time is up becomes ``half_open`` (generation + 1).
      In ``half_open``, grant one of ``spec.probes`` probe slots to *owner* if one is free or
      its lease (``spec.probe_lease``) ran out. Returns the state and whether a slot was
      granted; a ``closed`` breaker grants nothing (callers just call).
    - ``settle``: a probe's outcome. Only the owner of a granted slot in the same
      generation counts: a failure re-opens (generation + 1, opens + 1, the next
      ``open_for``); a success frees the slot and, after ``spec.probes`` successes, closes
      (generation + 1, opens = 0, window emptied). *success* ``None`` only frees the slot.
    - ``force``: ``"isolated"`` holds the breaker open until ``force(..., "closed")``, which
      closes it with an empty window; both bump the generation.

    .. versionadded:: 0.1.0
    """

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
    ) -> SharedBreakerState:
        """Add outcomes to a closed breaker's shared window and trip it if a threshold is reached."""
        ...

    def probe(self, name: str, spec: BreakerSpec, owner: str) -> tuple[SharedBreakerState, bool]:
        """Move an open breaker whose time is up to half-open and try to take a probe slot."""
        ...

    def settle(
        self, name: str, spec: BreakerSpec, owner: str, generation: int, success: bool | None
    ) -> SharedBreakerState:
        """Report a probe's outcome (``None``: inconclusive, just free the slot)."""
        ...

    def force(
        self, name: str, spec: BreakerSpec, state: Literal["isolated", "closed"]
    ) -> SharedBreakerState:
        """Isolate (hold open) or reset (close) the breaker."""
        ...

    def read(self, name: str, spec: BreakerSpec) -> SharedBreakerState:
        """The current shared state (``closed``, generation 0 if never seen)."""
        ...


class AsyncBreakerStore(Protocol):
    """**Protocol:** the async twin of :class:`BreakerStore`.

    .. versionadded:: 0.1.0
    """

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
        """See :meth:`BreakerStore.record`."""
        ...

    async def probe(
        self, name: str, spec: BreakerSpec, owner: str
    ) -> tuple[SharedBreakerState, bool]:
        """See :meth:`BreakerStore.probe`."""
        ...

    async def settle(
        self, name: str, spec: BreakerSpec, owner: str, generation: int, success: bool | None
    ) -> SharedBreakerState:
        """See :meth:`BreakerStore.settle`."""
        ...

    async def force(
        self, name: str, spec: BreakerSpec, state: Literal["isolated", "closed"]
    ) -> SharedBreakerState:
        """See :meth:`BreakerStore.force`."""
        ...

    async def read(self, name: str, spec: BreakerSpec) -> SharedBreakerState:
        """See :meth:`BreakerStore.read`."""
        ...


_V = TypeVar("_V")


@runtime_checkable
class Codec(Protocol[_V]):
    """**Protocol:** turns values into bytes and back, for stored results and payloads.

    :class:`~invresilience.JsonCodec` is the default. Write your own for your types
    (msgspec, pydantic, protobuf); never pickle, which would let whoever can write to
    the store run code in every worker that reads it.

    .. versionadded:: 0.1.0
    """

    def encode(self, value: _V) -> bytes:
        """*value* as bytes; raise :exc:`~invresilience.exceptions.CodecError` if it can't be."""
        ...

    def decode(self, data: bytes) -> _V:
        """The value *data* encodes; raise :exc:`~invresilience.exceptions.CodecError` if none."""
        ...


@runtime_checkable
class IdempotencyStore(Protocol):
    """**Protocol:** where :class:`~invresilience.Idempotency` keeps one record per key.

    A record remembers the payload fingerprint, a fence that grows with every claim, and,
    once the work is done, its result as bytes (the guard applies the codec). The rules,
    which :mod:`invresilience.contract` checks:

    - :meth:`claim` is atomic. It returns :class:`Acquired` (a :class:`Lease` with a
      larger fence than any earlier claim of the key) when the key is free: never seen,
      expired, released, or pending with its lease run out. It returns
      :class:`Completed` with the stored result, :class:`InProgress` while another lease
      runs, or :class:`Mismatch` when the live record has a different fingerprint, in
      any state.
    - :meth:`complete`, :meth:`release` and :meth:`extend` present the lease. It holds
      while nobody claimed the key since, even once its time ran out; otherwise they
      raise :exc:`~invresilience.exceptions.LeaseLostError` and change nothing.
    - A record lives *ttl* seconds after its last change (at least as long as its lease),
      then is as good as absent; :meth:`purge_expired` deletes such records.
    - Driver failures raise :exc:`~invresilience.exceptions.BackendUnavailableError`
      (unreachable) or :exc:`~invresilience.exceptions.BackendError`, chained to the
      driver's exception.

    Times are the store's own: a network store uses its server's clock, so processes
    with skewed clocks agree.

    .. versionadded:: 0.1.0
    """

    def claim(self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL) -> Claim:
        """Claim *key* for *lease* seconds; see the rules above."""
        ...

    def claim_many(
        self, items: Sequence[tuple[str, str]], *, lease: float, ttl: float = DEFAULT_TTL
    ) -> list[Claim]:
        """Claim each ``(key, fingerprint)``, each atomically; the answers in order."""
        ...

    def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """Store *result* for the lease's key and keep it *ttl* seconds."""
        ...

    def complete_many(
        self, items: Sequence[tuple[Lease, bytes]], *, ttl: float = DEFAULT_TTL
    ) -> list[bool]:
        """Complete each ``(lease, result)``; ``False`` where that lease was lost."""
        ...

    def release(self, lease: Lease) -> None:
        """Give the key up unfinished, so that the next claim runs the work again."""
        ...

    def extend(self, lease: Lease, seconds: float) -> Lease:
        """Let the lease run *seconds* from now; the lease to present from then on."""
        ...

    def purge_expired(self, limit: int = 1000) -> int:
        """Delete up to *limit* expired records; how many were deleted."""
        ...

    def close(self) -> None:
        """Release the store's connections; a closed store must not be used again."""
        ...


@runtime_checkable
class AsyncIdempotencyStore(Protocol):
    """**Protocol:** the async twin of :class:`IdempotencyStore`, with the same rules.

    .. versionadded:: 0.1.0
    """

    async def claim(
        self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL
    ) -> Claim:
        """See :meth:`IdempotencyStore.claim`."""
        ...

    async def claim_many(
        self, items: Sequence[tuple[str, str]], *, lease: float, ttl: float = DEFAULT_TTL
    ) -> list[Claim]:
        """See :meth:`IdempotencyStore.claim_many`."""
        ...

    async def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """See :meth:`IdempotencyStore.complete`."""
        ...

    async def complete_many(
        self, items: Sequence[tuple[Lease, bytes]], *, ttl: float = DEFAULT_TTL
    ) -> list[bool]:
        """See :meth:`IdempotencyStore.complete_many`."""
        ...

    async def release(self, lease: Lease) -> None:
        """See :meth:`IdempotencyStore.release`."""
        ...

    async def extend(self, lease: Lease, seconds: float) -> Lease:
        """See :meth:`IdempotencyStore.extend`."""
        ...

    async def purge_expired(self, limit: int = 1000) -> int:
        """See :meth:`IdempotencyStore.purge_expired`."""
        ...

    async def close(self) -> None:
        """See :meth:`IdempotencyStore.close`."""
        ...


# -- dead letters -----------------------------------------------------------------------------


@runtime_checkable
class DeadLetterStore(Protocol):
    """**Protocol:** where a :class:`~invresilience.DeadLetterQueue` keeps the letters of one queue.

    A store holds :class:`DeadLetter` values by id. The rules, which
    :mod:`invresilience.contract` checks:

    - :meth:`add` is atomic. A letter whose id is already stored changes nothing
      (``created=False``, the stored letter returned). A new letter gets a
      :attr:`~DeadLetter.sequence` larger than that of every letter added to the queue
      before it. With *max_letters*, a queue already holding that many letters either
      refuses the new one with :exc:`~invresilience.exceptions.DeadLetterQueueFullError`
      (nothing changes) or, with *evict_oldest*, deletes its lowest-sequence letters to
      make room and reports their ids.
    - :meth:`list` returns the letters a :class:`LetterFilter` selects whose sequence is
      larger than *after*, in increasing sequence (oldest first), at most *limit*.
      Letters never move in that order: updating one with :meth:`replace` keeps its
      sequence.
    - :meth:`replace` overwrites the stored letter of the same id (its payload,
      reason, error, attempts, times and headers), keeping its sequence; ``False`` if
      it is gone.
    - :meth:`delete` and :meth:`purge` delete and say how many; deleting an absent id
      is not an error.
    - Driver failures raise :exc:`~invresilience.exceptions.BackendUnavailableError`
      (unreachable) or :exc:`~invresilience.exceptions.BackendError`, chained to the
      driver's exception.

    .. versionadded:: 0.1.0
    """

    queue: str

    def add(
        self, letter: DeadLetter, *, max_letters: int | None = None, evict_oldest: bool = False
    ) -> Added:
        """Store *letter* unless its id is taken; see the rules above."""
        ...

    def get(self, letter_id: str) -> DeadLetter | None:
        """The letter stored under *letter_id*, or ``None``."""
        ...

    def list(self, where: LetterFilter, *, after: int = 0, limit: int = 100) -> list[DeadLetter]:
        """Up to *limit* selected letters with a sequence above *after*, oldest first."""
        ...

    def count(self, where: LetterFilter) -> int:
        """How many letters *where* selects."""
        ...

    def stats(self) -> QueueStats:
        """The queue's totals per reason and its oldest and newest times."""
        ...

    def replace(self, letter: DeadLetter) -> bool:
        """Overwrite the letter with *letter*'s id, keeping its sequence; ``False`` if gone."""
        ...

    def delete(self, letter_ids: Sequence[str]) -> int:
        """Delete the letters with these ids; how many there were."""
        ...

    def purge(self, where: LetterFilter) -> int:
        """Delete every letter *where* selects; how many."""
        ...

    def close(self) -> None:
        """Release the store's own connections (not a backend's shared ones)."""
        ...


@runtime_checkable
class AsyncDeadLetterStore(Protocol):
    """**Protocol:** the async twin of :class:`DeadLetterStore`.

    .. versionadded:: 0.1.0
    """

    queue: str

    async def add(
        self, letter: DeadLetter, *, max_letters: int | None = None, evict_oldest: bool = False
    ) -> Added:
        """See :meth:`DeadLetterStore.add`."""
        ...

    async def get(self, letter_id: str) -> DeadLetter | None:
        """See :meth:`DeadLetterStore.get`."""
        ...

    async def list(
        self, where: LetterFilter, *, after: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """See :meth:`DeadLetterStore.list`."""
        ...

    async def count(self, where: LetterFilter) -> int:
        """See :meth:`DeadLetterStore.count`."""
        ...

    async def stats(self) -> QueueStats:
        """See :meth:`DeadLetterStore.stats`."""
        ...

    async def replace(self, letter: DeadLetter) -> bool:
        """See :meth:`DeadLetterStore.replace`."""
        ...

    async def delete(self, letter_ids: Sequence[str]) -> int:
        """See :meth:`DeadLetterStore.delete`."""
        ...

    async def purge(self, where: LetterFilter) -> int:
        """See :meth:`DeadLetterStore.purge`."""
        ...

    async def close(self) -> None:
        """See :meth:`DeadLetterStore.close`."""
        ...


class Router(Protocol[_N_co]):
    """**Protocol:** maps a key to the node that owns it, the same way in every process.

    :class:`~invresilience.RendezvousRouter`, :class:`~invresilience.SlotRouter`,
    :class:`~invresilience.JumpRouter` and :class:`~invresilience.RangeRouter` are routers.

    .. versionadded:: 0.1.0
    """

    def route(self, key: ShardKey, /) -> _N_co:
        """The node *key* goes to."""
        ...


class HashRouter(Router[_N_co], Protocol[_N_co]):
    """**Protocol:** a router that routes by :func:`~invresilience.stable_hash`.

    :class:`~invresilience.HotKeyRouter` and :class:`~invresilience.BoundedLoadRouter` wrap
    one: they route precomputed hashes and walk a key's order of preference.

    .. versionadded:: 0.1.0
    """

    @property
    def nodes(self) -> Any:
        """The nodes: a mapping of names to weights, or a range of shard numbers."""
        ...

    def route_hash(self, hashed: int, /) -> _N_co:
        """The node of a key whose stable hash is *hashed*."""
        ...

    def ranked_hash(self, hashed: int, /) -> Sequence[_N_co]:
        """Every node, best first, for a key whose stable hash is *hashed*."""
        ...


class Membership(Protocol):
    """**Protocol:** where a group's members register, renew leases and read the view.

    Every operation first drops members whose lease has run out (on the store's clock),
    and returns the view after it. Each join, leave or weight change bumps the view's
    version once, and so does dropping expired members (once per operation, however many
    expired). A member is identified by its name and an incarnation *token*: a join under a
    live name with another token raises
    :class:`~invresilience.exceptions.MembershipConflictError`; heartbeats and leaves with a
    stale token change nothing; and each :class:`Member` of a view carries
    ``incarnation_of(token)`` of the join that holds the name, which is how a worker whose
    lease ran out learns that its name was taken (a store must fill it in; only
    :class:`~invresilience.StaticMembership` leaves it empty). :class:`~invresilience.contract.MembershipContract` checks
    an implementation.

    .. versionadded:: 0.1.0
    """

    @property
    def group(self) -> str:
        """The group's name."""
        ...

    def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """Add *member* with a lease of *lease* seconds (renew it, if already joined with *token*)."""
        ...

    def heartbeat(self, member: str, token: str, *, lease: float, acked: int) -> MembershipView:
        """Renew *member*'s lease and record that it acts on version *acked*.

        The view returned lacks *member* if its lease had already run out.
        """
        ...

    def leave(self, member: str, token: str) -> MembershipView:
        """Remove *member* at once."""
        ...

    def view(self) -> MembershipView:
        """The current view."""
        ...

    def close(self) -> None:
        """Release the store's connections, if it owns any."""
        ...


class AsyncMembership(Protocol):
    """**Protocol:** the async twin of :class:`Membership`, with the same rules.

    .. versionadded:: 0.1.0
    """

    @property
    def group(self) -> str:
        """The group's name."""
        ...

    async def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """See :meth:`Membership.join`."""
        ...

    async def heartbeat(
        self, member: str, token: str, *, lease: float, acked: int
    ) -> MembershipView:
        """See :meth:`Membership.heartbeat`."""
        ...

    async def leave(self, member: str, token: str) -> MembershipView:
        """See :meth:`Membership.leave`."""
        ...

    async def view(self) -> MembershipView:
        """See :meth:`Membership.view`."""
        ...

    async def close(self) -> None:
        """See :meth:`Membership.close`."""
        ...


@runtime_checkable
class Backend(Protocol):
    """**Protocol:** a storage technology opened from a URL by :func:`~invresilience.open_backend`.

    It hands out the stores of every capability it can serve, sharing its connections;
    each store of one *namespace* sees the same records, whichever process made it.

    .. versionadded:: 0.1.0
    """

    url: str

    def idempotency_store(self, namespace: str = "default") -> IdempotencyStore:
        """The idempotency store of *namespace*."""
        ...

    def async_idempotency_store(self, namespace: str = "default") -> AsyncIdempotencyStore:
        """The async idempotency store of *namespace*."""
        ...

    def dead_letter_store(self, queue: str) -> DeadLetterStore:
        """The store of dead-letter queue *queue*."""
        ...

    def async_dead_letter_store(self, queue: str) -> AsyncDeadLetterStore:
        """The async store of dead-letter queue *queue*."""
        ...

    def dead_letter_queue(self, queue: str, **options: Any) -> DeadLetterQueue:
        """A :class:`~invresilience.DeadLetterQueue` over :meth:`dead_letter_store`;
        *options* go to its constructor."""
        ...

    def async_dead_letter_queue(self, queue: str, **options: Any) -> AsyncDeadLetterQueue:
        """An :class:`~invresilience.AsyncDeadLetterQueue` over :meth:`async_dead_letter_store`."""
        ...

    def membership(self, group: str) -> Membership:
        """The membership store of *group*, for :class:`~invresilience.ShardAssignment`."""
        ...

    def async_membership(self, group: str) -> AsyncMembership:
        """The async membership store of *group*."""
        ...

    def close(self) -> None:
        """Close the connections of the backend and of the sync stores it handed out."""
        ...

    def __enter__(self) -> Backend:
        """The backend itself, closed when the ``with`` block ends."""
        ...

    def __exit__(self, *exc_info: object) -> None:
        """Close the backend."""
        ...
