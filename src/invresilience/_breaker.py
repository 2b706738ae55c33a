"""Circuit breakers: stop calling a dependency that is failing, and probe it to recover.

The rules live in :mod:`invresilience._core.breaker` and are run by a *store*: a private
:class:`~invresilience.backends.memory.MemoryBreakerStore` for an in-process breaker, or a
shared one (Redis) for a breaker many processes agree on. This module is the shell around
it. Its hot path reads one immutable-ish :class:`_Epoch` object per call -- the state and
generation the call is admitted in -- and, for a closed breaker, counts a success with one
C-level increment. Failures, probes and transitions take a lock, briefly; the lock is never
held across the protected call, and a result is reported against the epoch it was
admitted in, so a late result from an older generation cannot flip the current state.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import inspect
import itertools
import math
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import attrs
from typing_extensions import ParamSpec, Self, final

from . import _events
from ._clock import SYSTEM_CLOCK
from ._config import _is_number, duration, field_name, integer, number, seconds
from ._core.breaker import (
    CLOSED,
    HALF_OPEN,
    ISOLATED,
    OPEN,
    BreakerSpec,
    BreakerState,
    SharedBreakerState,
)
from ._retry import Backoff, Outcome
from .backends.memory import MemoryBreakerStore
from .exceptions import (
    BackendError,
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    RateLimitedError,
)
from .typing import AsyncBreakerStore, BreakerStore, Clock

if TYPE_CHECKING:
    import datetime
    from types import TracebackType

__all__ = [
    "BreakerMetrics",
    "CircuitBreaker",
    "CircuitBreakerRegistry",
    "CountWindow",
    "TimeWindow",
    "Verdict",
]

P = ParamSpec("P")
T = TypeVar("T")

Verdict = Literal["failure", "success", "ignore"]
"""How a breaker counts an outcome: against the dependency, for it, or not at all.

.. versionadded:: 0.1.0
"""

StoreErrorPolicy = Literal["fail_open", "fail_closed", "local"]

#: Errors raised by our own admission layers: they say nothing about the dependency.
_LOCAL_ERRORS = (BulkheadFullError, RateLimitedError, CircuitOpenError)

#: Builds a CircuitOpenError without running its Python ``__init__`` (see exceptions.py).
_new_error = CircuitOpenError.__new__

#: How many open durations of a growing ``open_for`` backoff are precomputed.
_SCHEDULE = 32


@final
@attrs.frozen
class CountWindow:
    """A sliding window over the last *size* recorded calls.

    .. versionadded:: 0.1.0
    """

    size: int = attrs.field(default=100, validator=integer(minimum=1))


@final
@attrs.frozen
class TimeWindow:
    """A sliding window over the calls of the last *seconds*, aged out in *buckets* steps.

    .. versionadded:: 0.1.0
    """

    seconds: float = attrs.field(default=60.0, converter=seconds, validator=duration(positive=True))
    buckets: int = attrs.field(default=10, validator=integer(minimum=1))


@final
@attrs.frozen(kw_only=True)
class BreakerMetrics:
    """A snapshot of a breaker, from :meth:`CircuitBreaker.metrics`.

    Attributes:
        name: The breaker's name.
        state: Its state.
        generation: Its generation (one more per transition).
        calls: Calls in the window.
        failures: Failures in the window.
        slow: Slow calls in the window.
        failure_rate: ``failures / calls`` (``0.0`` with no calls).
        slow_call_rate: ``slow / calls`` (``0.0`` with no calls).
        opens: Consecutive openings without a recovery.
        retry_after: Seconds until an open breaker admits a probe.
        rejected: Calls rejected by this breaker object since it was created.

    .. versionadded:: 0.1.0
    """

    name: str
    state: BreakerState
    generation: int
    calls: int
    failures: int
    slow: int
    failure_rate: float
    slow_call_rate: float
    opens: int
    retry_after: float
    rejected: int


class _Epoch:
    """What the hot path reads: the state and generation a call is admitted in.

    A new epoch replaces the old one on every transition. Successes of a closed epoch are
    counted with ``ok()`` (``next`` of an :func:`itertools.count`, atomic under the GIL) and
    folded into the window when a failure is recorded or ``flush_at`` passes; a success
    counted on a replaced epoch lands nowhere, which is exactly what a stale result
    deserves.
    """

    __slots__ = ("flush_at", "folded", "generation", "ok", "state", "until")

    def __init__(self, state: BreakerState, generation: int, until: float, flush_at: float) -> None:
        self.state = state
        self.generation = generation
        #: Open / half-open / isolated: reject without asking the store until then.
        self.until = until
        #: Closed: fold the counted successes into the window once this time passes.
        self.flush_at = flush_at
        self.ok = itertools.count().__next__
        #: The counter's value at the last fold.
        self.folded = -1

    def drain(self) -> int:
        """Successes counted since the last fold (call under the breaker's lock)."""
        now = self.ok()
        pending = now - self.folded - 1
        self.folded = now
        return pending


class _Ticket:
    """One admitted call: its epoch, and its probe slot if it is a probe."""

    __slots__ = ("epoch", "probe", "start")

    def __init__(self, epoch: _Epoch, probe: str | None, start: float) -> None:
        self.epoch = epoch
        self.probe = probe
        self.start = start


def _validate_types(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError(
                field_name(instance, attribute),
                value,
                "must be an exception class or a tuple of them",
            )


def _as_tuple(
    value: type[BaseException] | tuple[type[BaseException], ...],
) -> tuple[type[BaseException], ...]:
    return value if isinstance(value, tuple) else (value,)


def _open_for(value: float | datetime.timedelta | Backoff) -> float | Backoff:
    return value if isinstance(value, Backoff) else seconds(value)


@final
@attrs.define(eq=False, kw_only=True)
class CircuitBreaker:
    """Stop calling a failing dependency for a while, then probe it before trusting it again.

    **Closed**, calls pass and their outcomes fill a sliding *window*. Once the window holds
    *minimum_calls* calls and the share of failures reaches *failure_rate* (or the share of
    calls slower than *slow_call_duration* reaches *slow_call_rate*), the breaker **opens**:
    calls are rejected at once with :class:`~invresilience.exceptions.CircuitOpenError` for
    *open_for* seconds. Then it is **half-open**: at most *half_open_probes* calls are let
    through as probes, each holding a leased permit that expires after *probe_timeout*, so
    a hung probe cannot wedge the breaker; everyone else is rejected. If every probe
    succeeds the breaker closes; a failed probe re-opens it, for longer if *open_for* is a
    :class:`~invresilience.Backoff`.

    What counts: an exception of a *failure_on* type is a failure, one of an *ignore_on*
    type counts for nothing, and any other exception -- or a return -- is a success (the
    dependency answered). A *classify* callable sees every outcome, returned values
    included, and may decide otherwise. Cancellation and invresilience's own local
    rejections (a full bulkhead, a rate limit, an inner breaker) never count either way.

    With a *store* the state is shared by every breaker of the same *name* that uses it,
    in any process; successes are counted locally and sent in batches at most every
    *flush_interval* seconds, so a healthy closed breaker costs about no round trips.
    When the store fails, *on_store_error* decides: ``"local"`` (default) carries on with
    this process's own state, ``"fail_open"`` lets every call through, ``"fail_closed"``
    rejects every call; the store is tried again after *store_retry* seconds.

    Args:
        name: The breaker's name, in errors, events and the shared store's keys.
        failure_rate: Trip when failures / calls reaches this; in ``(0, 1]``.
        slow_call_rate: Trip when slow calls / calls reaches this; ``None`` disables it.
        slow_call_duration: A call taking at least this many seconds is slow.
        minimum_calls: No tripping before the window holds this many calls.
        window: A :class:`CountWindow` or a :class:`TimeWindow`.
        open_for: Seconds to stay open, or a :class:`~invresilience.Backoff` (without
            jitter) giving longer durations to consecutive openings.
        half_open_probes: Probe permits handed out in half-open.
        probe_timeout: Seconds a probe permit is leased for.
        failure_on: Exception types that count as failures.
        ignore_on: Exception types that count for nothing.
        classify: ``(Outcome) -> "failure" | "success" | "ignore" | None``; ``None`` falls
            back to the type rules.
        store: A shared :class:`~invresilience.typing.BreakerStore`.
        async_store: Its async twin, used by ``acall``, async decorated functions and
            ``async with``; without one, async calls use *store* (a short blocking call).
        on_store_error: ``"local"``, ``"fail_open"`` or ``"fail_closed"``.
        store_retry: Seconds before a failed store is tried again.
        flush_interval: Longest a shared breaker holds counted successes back.
        clock: The time source.

    Raises:
        ConfigurationError: On a bad value, naming the field and the value.

    .. versionadded:: 0.1.0
    """

    name: str = attrs.field(kw_only=False)
    failure_rate: float = attrs.field(default=0.5, validator=number(minimum=0.0, inclusive=False))
    slow_call_rate: float | None = None
    slow_call_duration: float | None = attrs.field(default=None)
    minimum_calls: int = attrs.field(default=20, validator=integer(minimum=1))
    window: CountWindow | TimeWindow = attrs.field(factory=CountWindow)
    open_for: float | Backoff = attrs.field(default=30.0, converter=_open_for)
    half_open_probes: int = attrs.field(default=1, validator=integer(minimum=1))
    probe_timeout: float = attrs.field(
        default=30.0, converter=seconds, validator=duration(positive=True)
    )
    failure_on: type[BaseException] | tuple[type[BaseException], ...] = attrs.field(
        default=Exception, validator=_validate_types
    )
    ignore_on: type[BaseException] | tuple[type[BaseException], ...] = attrs.field(
        default=(), validator=_validate_types
    )
    classify: Callable[[Outcome], Verdict | None] | None = None
    store: BreakerStore | None = None
    async_store: AsyncBreakerStore | None = None
    on_store_error: StoreErrorPolicy = "local"
    store_retry: float = attrs.field(
        default=5.0, converter=seconds, validator=duration(positive=True)
    )
    flush_interval: float = attrs.field(
        default=1.0, converter=seconds, validator=duration(positive=True)
    )
    clock: Clock = SYSTEM_CLOCK

    # Derived and mutable state.
    _spec: BreakerSpec = attrs.field(init=False, repr=False)
    _failure_types: tuple[type[BaseException], ...] = attrs.field(init=False, repr=False)
    _ignore_types: tuple[type[BaseException], ...] = attrs.field(init=False, repr=False)
    _slow_after: float = attrs.field(init=False, repr=False)
    _timed: bool = attrs.field(init=False, repr=False)
    _local: MemoryBreakerStore = attrs.field(init=False, repr=False)
    _lock: threading.Lock = attrs.field(init=False, repr=False, factory=threading.Lock)
    _epoch: _Epoch = attrs.field(init=False, repr=False)
    _owners: Callable[[], int] = attrs.field(init=False, repr=False)
    _owner_prefix: str = attrs.field(init=False, repr=False)
    _rejections: Callable[[], int] = attrs.field(init=False, repr=False)
    _rejection_reads: int = attrs.field(init=False, repr=False, default=0)
    _source: object = attrs.field(init=False, repr=False, default=None)
    _store_down_until: float = attrs.field(init=False, repr=False, default=-math.inf)
    _last: SharedBreakerState = attrs.field(init=False, repr=False)
    _tickets: contextvars.ContextVar[tuple[_Ticket, ...]] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._validate()
        window = self.window
        if isinstance(window, CountWindow):
            kind: Literal["count", "time"] = "count"
            size, buckets = float(window.size), 1
        else:
            kind, size, buckets = "time", window.seconds, window.buckets
        self._spec = BreakerSpec(
            window=kind,
            size=size,
            buckets=buckets,
            failure_rate=self.failure_rate,
            slow_call_rate=2.0 if self.slow_call_rate is None else self.slow_call_rate,
            minimum_calls=self.minimum_calls,
            open_for=self._schedule(),
            probes=self.half_open_probes,
            probe_lease=self.probe_timeout,
        )
        self._failure_types = _as_tuple(self.failure_on)
        self._ignore_types = _as_tuple(self.ignore_on)
        self._slow_after = (
            math.inf
            if self.slow_call_rate is None or self.slow_call_duration is None
            else self.slow_call_duration
        )
        self._timed = kind == "time" or self.store is not None or self.slow_call_rate is not None
        self._local = MemoryBreakerStore(clock=self.clock)
        self._owners = itertools.count(1).__next__
        self._owner_prefix = uuid.uuid4().hex[:12]
        self._rejections = itertools.count().__next__
        self._tickets = contextvars.ContextVar(f"invresilience_breaker_{id(self)}", default=())
        now = self.clock.monotonic()
        self._last = SharedBreakerState(state=CLOSED, generation=0)
        self._epoch = self._new_epoch(self._last, now)
        if self.store is not None:
            self._apply(lambda store: store.read(self.name, self._spec), now)

    def _validate(self) -> None:
        name = self.name
        if type(name) is not str or not name or len(name) > 200 or not name.isprintable():
            raise ConfigurationError(
                "CircuitBreaker.name", name, "must be a non-empty printable str of <= 200 chars"
            )
        if self.failure_rate > 1:
            raise ConfigurationError(
                "CircuitBreaker.failure_rate", self.failure_rate, "must be <= 1"
            )
        if self.slow_call_rate is not None:
            rate = self.slow_call_rate
            if not _is_number(rate) or not 0 < rate <= 1:
                raise ConfigurationError(
                    "CircuitBreaker.slow_call_rate", rate, "must be in (0, 1] or None"
                )
            if self.slow_call_duration is None:
                raise ConfigurationError(
                    "CircuitBreaker.slow_call_duration",
                    None,
                    "must be set when slow_call_rate is",
                )
        if self.slow_call_duration is not None:
            value = seconds(self.slow_call_duration)
            if not _is_number(value) or not 0 < value < math.inf:
                raise ConfigurationError(
                    "CircuitBreaker.slow_call_duration",
                    self.slow_call_duration,
                    "must be > 0 seconds",
                )
            object.__setattr__(self, "slow_call_duration", value)
        if not isinstance(self.window, (CountWindow, TimeWindow)):
            raise ConfigurationError(
                "CircuitBreaker.window", self.window, "must be a CountWindow or a TimeWindow"
            )
        if isinstance(self.open_for, Backoff):
            if self.open_for.jitter != "none":
                raise ConfigurationError(
                    "CircuitBreaker.open_for",
                    self.open_for,
                    'must be a Backoff with jitter="none" (every process must agree on it)',
                )
            if self.open_for.initial <= 0:
                raise ConfigurationError(
                    "CircuitBreaker.open_for", self.open_for, "must start above 0 seconds"
                )
        elif not _is_number(self.open_for) or not 0 < self.open_for < math.inf:
            raise ConfigurationError(
                "CircuitBreaker.open_for", self.open_for, "must be > 0 seconds or a Backoff"
            )
        if self.classify is not None and not callable(self.classify):
            raise ConfigurationError("CircuitBreaker.classify", self.classify, "must be callable")
        methods = ("record", "probe", "settle", "force", "read")
        for field, store in (("store", self.store), ("async_store", self.async_store)):
            if store is not None and not all(callable(getattr(store, m, None)) for m in methods):
                raise ConfigurationError(
                    f"CircuitBreaker.{field}", store, f"must have {', '.join(methods)}"
                )
        if self.async_store is not None and self.store is None:
            raise ConfigurationError(
                "CircuitBreaker.async_store", self.async_store, "needs the sync store as well"
            )
        if self.on_store_error not in ("local", "fail_open", "fail_closed"):
            raise ConfigurationError(
                "CircuitBreaker.on_store_error",
                self.on_store_error,
                "must be 'local', 'fail_open' or 'fail_closed'",
            )
        if not all(
            callable(getattr(self.clock, m, None)) for m in ("monotonic", "wall", "sleep", "asleep")
        ):
            raise ConfigurationError(
                "CircuitBreaker.clock", self.clock, "must have monotonic, wall, sleep and asleep"
            )

    def _schedule(self) -> tuple[float, ...]:
        open_for = self.open_for
        if not isinstance(open_for, Backoff):
            return (open_for,)
        delays = [open_for.delay(attempt) for attempt in range(1, _SCHEDULE + 1)]
        while len(delays) > 1 and delays[-1] == delays[-2]:
            delays.pop()
        return tuple(delays)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._epoch.state.value}>"

    # -- state --------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state, as the next call would find it.

        .. versionadded:: 0.1.0
        """
        epoch = self._epoch
        if epoch.state is OPEN and self.clock.monotonic() >= epoch.until:
            return HALF_OPEN
        return epoch.state

    @property
    def generation(self) -> int:
        """The generation of the current state; one more on every transition.

        .. versionadded:: 0.1.0
        """
        return self._epoch.generation

    def _new_epoch(self, shared: SharedBreakerState, now: float) -> _Epoch:
        state = shared.state
        if state is CLOSED:
            if self.store is not None:
                flush_at = now + self.flush_interval
            elif self._spec.window == "time":
                flush_at = self._local_window_boundary(now)
            else:
                flush_at = math.inf
            return _Epoch(state, shared.generation, 0.0, flush_at)
        return _Epoch(state, shared.generation, self._until(shared, now), math.inf)

    def _until(self, shared: SharedBreakerState, now: float) -> float:
        """Until when a non-closed *shared* state rejects calls without asking the authority.

        A local breaker knows every change as it happens. A shared one must hear of its
        peers' changes: an isolation lifted by a peer's reset (never, otherwise) or a
        half-open generation closed by a peer's probe (only when every lease ran out,
        otherwise), so it asks again after at most flush_interval.
        """
        if self.store is None:
            return math.inf if shared.state is ISOLATED else now + shared.retry_after
        if shared.state is OPEN:
            return now + shared.retry_after
        if shared.state is ISOLATED:
            return now + self.flush_interval
        return now + min(shared.retry_after, self.flush_interval)

    def _local_window_boundary(self, now: float) -> float:
        width = self._spec.size / self._spec.buckets
        return (math.floor(now / width) + 1) * width

    def _adopt(self, shared: SharedBreakerState, now: float, source: object) -> _Epoch:
        """Make *shared* the current state, unless it is older than what we know (under lock).

        Generations are per authority: when the answer comes from another one than the
        current epoch's (the store failed over to local state, or came back), it is taken
        as it is. An answer with the epoch's own state and generation keeps the epoch, even
        from another authority (the first answer ever, a fail-over seeded from it): a new
        epoch would drop the successes counted on it and report a change that did not happen.
        """
        epoch = self._epoch
        switched = source is not self._source
        if not switched and shared.generation < epoch.generation:
            return epoch
        self._last = shared
        self._source = source
        if shared.generation == epoch.generation and shared.state is epoch.state:
            if shared.state is CLOSED:
                if self.store is not None:
                    epoch.flush_at = now + self.flush_interval
                elif self._spec.window == "time":
                    epoch.flush_at = self._local_window_boundary(now)
            elif shared.state is not ISOLATED or self.store is not None:
                epoch.until = self._until(shared, now)
            return epoch
        epoch = self._epoch = self._new_epoch(shared, now)
        return epoch

    def _adopted(self, before: _Epoch, after: _Epoch) -> _Epoch:
        """Report a change :meth:`_adopt` made; called after the lock is released, so a
        listener may call back into the breaker."""
        if after is not before and _events.active:
            _events.emit(
                _events.BreakerEvent(
                    source=self.name,
                    kind="state_changed",
                    state=after.state,
                    previous=before.state,
                    generation=after.generation,
                )
            )
        return after

    # -- talking to the store ---------------------------------------------------------------

    def _authority(self, now: float) -> BreakerStore | None:
        """The store to ask now: the shared one, the local one, or ``None`` to bypass."""
        if self.store is None:
            return self._local
        if now < self._store_down_until:
            return self._local if self.on_store_error == "local" else None
        return self.store

    def _store_failed(self, exc: BackendError, now: float) -> None:
        """Stop asking the store for a while (under lock); seed the local state from ours."""
        self._store_down_until = now + self.store_retry
        if self.on_store_error == "local":
            last, epoch = self._last, self._epoch
            if epoch.state is OPEN and epoch.generation == last.generation:
                # _last.retry_after counts from when it was read; the epoch knows when the
                # open time ends (often: now, when a probe found the store down).
                last = attrs.evolve(last, retry_after=max(0.0, epoch.until - now))
            self._local._seed(self.name, self._spec, last, now)

    def _report_store_error(self, exc: BackendError) -> None:
        """The ``store_error`` event, emitted after the lock is released."""
        if _events.active:
            _events.emit(
                _events.BreakerEvent(
                    source=self.name,
                    kind="store_error",
                    state=self._epoch.state,
                    generation=self._epoch.generation,
                    exception=exc,
                )
            )

    def _bypassed(self, now: float) -> SharedBreakerState:
        """The state to act on while the store is down and the policy is fail_open/closed."""
        if self.on_store_error == "fail_open":
            return SharedBreakerState(state=CLOSED, generation=self._epoch.generation)
        return SharedBreakerState(
            state=OPEN,
            generation=self._epoch.generation,
            retry_after=max(0.0, self._store_down_until - now),
        )

    def _apply(self, op: Callable[[BreakerStore], SharedBreakerState], now: float) -> _Epoch:
        """Run *op* against the authority and adopt its answer (the lock is not held)."""
        authority = self._authority(now)
        if authority is None:
            shared = self._bypassed(now)
        else:
            try:
                shared = op(authority)
            except BackendError as exc:
                if authority is self._local:
                    raise
                with self._lock:
                    self._store_failed(exc, now)
                self._report_store_error(exc)
                return self._apply(op, now)
        with self._lock:
            epoch = self._epoch
            if authority is None:
                # A bypass state replaces the epoch outright, to take effect at once.
                self._source = None
                self._epoch = epoch = _Epoch(
                    shared.state,
                    epoch.generation,
                    now + shared.retry_after,
                    self._store_down_until,
                )
                return epoch
            before = self._epoch
            epoch = self._adopt(shared, now, authority)
        return self._adopted(before, epoch)

    async def _aapply(
        self,
        op: Callable[[BreakerStore], SharedBreakerState],
        aop: Callable[[AsyncBreakerStore], Awaitable[SharedBreakerState]],
        now: float,
    ) -> _Epoch:
        """:meth:`_apply`, awaiting the async store when there is one."""
        if self.async_store is None or self._authority(now) is not self.store:
            return self._apply(op, now)
        try:
            shared = await aop(self.async_store)
        except BackendError as exc:
            with self._lock:
                self._store_failed(exc, now)
            self._report_store_error(exc)
            return self._apply(op, now)
        with self._lock:
            before = self._epoch
            epoch = self._adopt(shared, now, self.store)
        return self._adopted(before, epoch)

    # -- recording outcomes -------------------------------------------------------------------

    def _verdict(self, exc: BaseException | None, result: Any) -> Verdict:
        if exc is not None and (not isinstance(exc, Exception) or isinstance(exc, _LOCAL_ERRORS)):
            return "ignore"
        if self.classify is not None:
            verdict = self.classify(Outcome(exc, result))
            if verdict is not None:
                if verdict not in ("failure", "success", "ignore"):
                    raise ConfigurationError(
                        "CircuitBreaker.classify",
                        verdict,
                        "must return 'failure', 'success', 'ignore' or None",
                    )
                return verdict
        if exc is None:
            return "success"
        if isinstance(exc, self._ignore_types):
            return "ignore"
        if isinstance(exc, self._failure_types):
            return "failure"
        return "success"

    def _record_args(
        self, epoch: _Epoch, verdict: Verdict | None, elapsed: float
    ) -> tuple[int, dict[str, int]]:
        """*epoch*'s pending successes, and the counts of this outcome (under lock)."""
        counts = {"successes": 0, "failures": 0, "slow_successes": 0, "slow_failures": 0}
        slow = elapsed >= self._slow_after
        if verdict == "success":
            counts["slow_successes" if slow else "successes"] += 1
        elif verdict == "failure":
            counts["slow_failures" if slow else "failures"] += 1
        return epoch.drain(), counts

    def _record_ops(
        self, epoch: _Epoch, verdict: Verdict | None, elapsed: float
    ) -> tuple[
        float,
        Callable[[BreakerStore], SharedBreakerState],
        Callable[[AsyncBreakerStore], Awaitable[SharedBreakerState]],
    ]:
        """Store operations recording a closed epoch's outcome and its pending successes."""
        now = self.clock.monotonic()
        with self._lock:
            pending, counts = self._record_args(epoch, verdict, elapsed)
        generation, name, spec, local = epoch.generation, self.name, self._spec, self._local
        pending_at: float | None = None
        if spec.window == "time" and pending and now >= epoch.flush_at:
            # Flushed late: the pending successes were all counted before flush_at, maybe
            # long before. Recorded "now" they would outlive their time in the window and
            # dilute the failures that follow an idle spell. A local breaker's flush_at ends
            # the bucket they were counted in, so they go there (or nowhere if it has aged
            # out); a store can only place them now, so those older than the window are dropped.
            if self.store is None:
                pending_at = epoch.flush_at - spec.size / spec.buckets / 2
            elif now - epoch.flush_at >= spec.size:
                pending = 0
        if pending_at is None:
            counts["successes"] += pending

        def op(store: BreakerStore) -> SharedBreakerState:
            if pending_at is not None:
                # Successes alone never trip: recording them apart changes no transition.
                local.record(name, spec, generation, successes=pending, successes_at=pending_at)
            return store.record(name, spec, generation, **counts)

        async def aop(store: AsyncBreakerStore) -> SharedBreakerState:
            return await store.record(name, spec, generation, **counts)

        return now, op, aop

    def _flush(self, epoch: _Epoch, verdict: Verdict | None, elapsed: float) -> None:
        """Record a closed epoch's outcome (and its pending successes) with the authority."""
        now, op, _ = self._record_ops(epoch, verdict, elapsed)
        self._apply(op, now)

    async def _aflush(self, epoch: _Epoch, verdict: Verdict | None, elapsed: float) -> None:
        now, op, aop = self._record_ops(epoch, verdict, elapsed)
        await self._aapply(op, aop, now)

    def _closed_outcome(self, epoch: _Epoch, verdict: Verdict, elapsed: float, end: float) -> bool:
        """Count a closed call's outcome; ``True`` when it must be flushed to the authority."""
        if verdict == "ignore":
            return end >= epoch.flush_at
        if verdict == "success" and elapsed < self._slow_after and end < epoch.flush_at:
            epoch.ok()
            return False
        return True

    # -- admission ---------------------------------------------------------------------------

    def _reject(self, epoch: _Epoch, now: float) -> CircuitOpenError:
        """A fresh rejection for *epoch*, counted and reported (no lock)."""
        self._rejections()
        retry_after = None if epoch.state is ISOLATED else epoch.until - now
        if _events.active:
            _events.emit(
                _events.BreakerEvent(
                    source=self.name,
                    kind="rejected",
                    state=epoch.state,
                    generation=epoch.generation,
                    retry_after=retry_after,
                )
            )
        return _new_error(CircuitOpenError, self.name, retry_after)

    def _probe_ops(
        self, owner: str, granted: list[int | None]
    ) -> tuple[
        Callable[[BreakerStore], SharedBreakerState],
        Callable[[AsyncBreakerStore], Awaitable[SharedBreakerState]],
    ]:
        """Store operations asking for a probe slot; they append the generation it was
        granted in (``None``: not granted)."""
        name, spec = self.name, self._spec

        def op(store: BreakerStore) -> SharedBreakerState:
            shared, ok = store.probe(name, spec, owner)
            granted.append(shared.generation if ok else None)
            return shared

        async def aop(store: AsyncBreakerStore) -> SharedBreakerState:
            shared, ok = await store.probe(name, spec, owner)
            granted.append(shared.generation if ok else None)
            return shared

        return op, aop

    def _admit(self) -> _Ticket:
        """Admit a call into whatever state the breaker is in, or raise CircuitOpenError."""
        epoch = self._epoch
        now = self.clock.monotonic()
        if epoch.state is CLOSED:
            if now < epoch.flush_at or self.store is None:
                return _Ticket(epoch, None, now)
            # A shared breaker checks in with its store at least every flush_interval, and
            # before the call, so a trip recorded by another process stops this call too.
            self._flush(epoch, None, 0.0)
            epoch = self._epoch
            if epoch.state is CLOSED:
                return _Ticket(epoch, None, now)
        if now < epoch.until:
            raise self._reject(epoch, now)
        owner = f"{self._owner_prefix}-{self._owners()}"
        granted: list[int | None] = []
        op, _ = self._probe_ops(owner, granted)
        return self._admitted(self._apply(op, now), owner, granted, now)

    async def _aadmit(self) -> _Ticket:
        epoch = self._epoch
        now = self.clock.monotonic()
        if epoch.state is CLOSED:
            if now < epoch.flush_at or self.store is None:
                return _Ticket(epoch, None, now)
            await self._aflush(epoch, None, 0.0)
            epoch = self._epoch
            if epoch.state is CLOSED:
                return _Ticket(epoch, None, now)
        if now < epoch.until:
            raise self._reject(epoch, now)
        owner = f"{self._owner_prefix}-{self._owners()}"
        granted: list[int | None] = []
        op, aop = self._probe_ops(owner, granted)
        return self._admitted(await self._aapply(op, aop, now), owner, granted, now)

    def _admitted(
        self, epoch: _Epoch, owner: str, granted: list[int | None], now: float
    ) -> _Ticket:
        # A slot granted in an older generation than the epoch we act on (transitions
        # happened while the answer was on its way) is no slot at all: reject.
        if granted and granted[-1] == epoch.generation and epoch.state is HALF_OPEN:
            return _Ticket(epoch, owner, now)
        if epoch.state is CLOSED:
            return _Ticket(epoch, None, now)
        if epoch.state is HALF_OPEN and epoch.until <= now:
            # Every slot is taken but the store did not say for how long: do not ask again
            # on every call; the holders settle well within a probe lease.
            epoch.until = now + min(self.probe_timeout, 1.0)
        raise self._reject(epoch, now)

    def _settle_op(
        self, ticket: _Ticket, verdict: Verdict, elapsed: float
    ) -> tuple[
        Callable[[BreakerStore], SharedBreakerState],
        Callable[[AsyncBreakerStore], Awaitable[SharedBreakerState]],
    ]:
        owner = ticket.probe
        assert owner is not None
        success = (
            None if verdict == "ignore" else verdict == "success" and elapsed < self._slow_after
        )
        name, spec, generation = self.name, self._spec, ticket.epoch.generation

        def op(store: BreakerStore) -> SharedBreakerState:
            return store.settle(name, spec, owner, generation, success)

        async def aop(store: AsyncBreakerStore) -> SharedBreakerState:
            return await store.settle(name, spec, owner, generation, success)

        return op, aop

    def _finish(self, ticket: _Ticket, exc: BaseException | None, result: Any) -> None:
        """Report the outcome of a call admitted by :meth:`_admit`."""
        verdict = self._verdict(exc, result)
        end = self.clock.monotonic()
        elapsed = end - ticket.start
        if ticket.probe is not None:
            op, _ = self._settle_op(ticket, verdict, elapsed)
            self._apply(op, end)
        elif self._closed_outcome(ticket.epoch, verdict, elapsed, end):
            self._flush(ticket.epoch, verdict, elapsed)

    async def _afinish(self, ticket: _Ticket, exc: BaseException | None, result: Any) -> None:
        verdict = self._verdict(exc, result)
        end = self.clock.monotonic()
        elapsed = end - ticket.start
        if ticket.probe is not None:
            op, aop = self._settle_op(ticket, verdict, elapsed)
            await self._aapply(op, aop, end)
        elif self._closed_outcome(ticket.epoch, verdict, elapsed, end):
            await self._aflush(ticket.epoch, verdict, elapsed)

    # -- calls ---------------------------------------------------------------------------------

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` through the breaker.

        Raises:
            CircuitOpenError: The breaker is open (or half-open with no free probe permit).

        .. versionadded:: 0.1.0
        """
        ticket = self._admit()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._finish(ticket, exc, None)
            raise
        self._finish(ticket, None, result)
        return result

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker.

        .. versionadded:: 0.1.0
        """
        ticket = await self._aadmit()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            await self._afinish(ticket, exc, None)
            raise
        await self._afinish(ticket, None, result)
        return result

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]:
        """Decorate *fn* (``def`` or ``async def``) so every call goes through the breaker.

        .. versionadded:: 0.1.0
        """
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"CircuitBreaker cannot decorate the generator function {fn.__qualname__}: "
                "a breaker guards one call, not a stream; use `with breaker:` inside it"
            )
        wrapper: Callable[..., Any] = (
            _async_caller(self, fn) if inspect.iscoroutinefunction(fn) else _sync_caller(self, fn)
        )
        functools.update_wrapper(wrapper, fn)
        return cast("Callable[P, T]", wrapper)

    # -- with / async with ---------------------------------------------------------------------

    def __enter__(self) -> Self:
        """Admit the block as one call (or raise CircuitOpenError); its outcome is recorded.

        .. versionadded:: 0.1.0
        """
        ticket = self._admit()
        self._tickets.set((*self._tickets.get(), ticket))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tickets = self._tickets.get()
        self._tickets.set(tickets[:-1])
        self._finish(tickets[-1], exc, None)

    async def __aenter__(self) -> Self:
        """The async twin of ``with``.

        .. versionadded:: 0.1.0
        """
        ticket = await self._aadmit()
        self._tickets.set((*self._tickets.get(), ticket))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tickets = self._tickets.get()
        self._tickets.set(tickets[:-1])
        await self._afinish(tickets[-1], exc, None)

    # -- control and inspection --------------------------------------------------------------

    def isolate(self) -> None:
        """Hold the breaker open -- every call rejected -- until :meth:`reset`.

        With a shared store, every process sharing it is isolated.

        .. versionadded:: 0.1.0
        """
        name, spec = self.name, self._spec
        self._apply(lambda store: store.force(name, spec, "isolated"), self.clock.monotonic())

    def reset(self) -> None:
        """Close the breaker with an empty window (also ends an :meth:`isolate`).

        .. versionadded:: 0.1.0
        """
        name, spec = self.name, self._spec
        self._apply(lambda store: store.force(name, spec, "closed"), self.clock.monotonic())

    def metrics(self) -> BreakerMetrics:
        """A snapshot: state, window counts and rates, openings, rejections.

        Successes counted locally are recorded first, so the counts are current.

        .. versionadded:: 0.1.0
        """
        now = self.clock.monotonic()
        epoch = self._epoch
        if epoch.state is CLOSED:
            self._flush(epoch, None, 0.0)
        else:
            name, spec = self.name, self._spec
            self._apply(lambda store: store.read(name, spec), now)
        shared = self._last
        calls = shared.calls
        state = self.state
        return BreakerMetrics(
            name=self.name,
            state=state,
            generation=self._epoch.generation,
            calls=calls,
            failures=shared.failures,
            slow=shared.slow,
            failure_rate=shared.failures / calls if calls else 0.0,
            slow_call_rate=shared.slow / calls if calls else 0.0,
            opens=shared.opens,
            retry_after=max(0.0, self._epoch.until - now) if state is OPEN else 0.0,
            rejected=self._rejected(),
        )

    def _rejected(self) -> int:
        # The counter is advanced by every rejection and by every read (this one included).
        with self._lock:
            value = self._rejections() - self._rejection_reads
            self._rejection_reads += 1
        return value


def _sync_caller(breaker: CircuitBreaker, fn: Callable[P, T]) -> Callable[P, T]:
    """The hot path of one protected callable, with the breaker's fields pre-bound.

    A closed breaker costs an attribute read, an identity test and one C-level counter
    increment per successful call (plus two clock reads when it must time calls).
    """
    call = breaker.call
    reject = breaker._reject
    count_rejection = breaker._rejections
    name = breaker.name
    finish_closed = breaker._closed_outcome
    flush = breaker._flush
    verdict_of = breaker._verdict
    monotonic = breaker.clock.monotonic
    slow_after = breaker._slow_after
    classify = breaker.classify

    if not breaker._timed:

        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            epoch = breaker._epoch
            if epoch.state is not CLOSED:
                now = monotonic()
                if now < epoch.until:
                    # Inlined _reject: a rejection must cost little more than the raise.
                    if _events.active:
                        raise reject(epoch, now)
                    count_rejection()
                    raise _new_error(
                        CircuitOpenError,
                        name,
                        None if epoch.state is ISOLATED else epoch.until - now,
                    )
                return call(fn, *args, **kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                verdict = verdict_of(exc, None)
                if verdict == "success":
                    epoch.ok()
                elif verdict == "failure":
                    flush(epoch, verdict, 0.0)
                raise
            if classify is not None:
                verdict = verdict_of(None, result)
                if verdict == "failure":
                    flush(epoch, verdict, 0.0)
                    return result
                if verdict == "ignore":
                    return result
            epoch.ok()
            return result

        return run

    def timed(*args: P.args, **kwargs: P.kwargs) -> T:
        epoch = breaker._epoch
        if epoch.state is not CLOSED:
            now = monotonic()
            if now < epoch.until:
                # Inlined _reject: a rejection must cost little more than the raise.
                if _events.active:
                    raise reject(epoch, now)
                count_rejection()
                raise _new_error(
                    CircuitOpenError, name, None if epoch.state is ISOLATED else epoch.until - now
                )
            return call(fn, *args, **kwargs)
        start = monotonic()
        if start >= epoch.flush_at:
            return call(fn, *args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            end = monotonic()
            verdict = verdict_of(exc, None)
            if finish_closed(epoch, verdict, end - start, end):
                flush(epoch, verdict, end - start)
            raise
        end = monotonic()
        if classify is None and end - start < slow_after and end < epoch.flush_at:
            epoch.ok()
            return result
        verdict = verdict_of(None, result)
        if finish_closed(epoch, verdict, end - start, end):
            flush(epoch, verdict, end - start)
        return result

    return timed


def _async_caller(
    breaker: CircuitBreaker, fn: Callable[P, Awaitable[T]]
) -> Callable[P, Awaitable[T]]:
    """The async twin of :func:`_sync_caller`."""
    acall = breaker.acall
    reject = breaker._reject
    count_rejection = breaker._rejections
    name = breaker.name
    finish_closed = breaker._closed_outcome
    aflush = breaker._aflush
    verdict_of = breaker._verdict
    monotonic = breaker.clock.monotonic
    slow_after = breaker._slow_after
    classify = breaker.classify

    if not breaker._timed:

        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            epoch = breaker._epoch
            if epoch.state is not CLOSED:
                now = monotonic()
                if now < epoch.until:
                    # Inlined _reject: a rejection must cost little more than the raise.
                    if _events.active:
                        raise reject(epoch, now)
                    count_rejection()
                    raise _new_error(
                        CircuitOpenError,
                        name,
                        None if epoch.state is ISOLATED else epoch.until - now,
                    )
                return await acall(fn, *args, **kwargs)
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                verdict = verdict_of(exc, None)
                if verdict == "success":
                    epoch.ok()
                elif verdict == "failure":
                    await aflush(epoch, verdict, 0.0)
                raise
            if classify is not None:
                verdict = verdict_of(None, result)
                if verdict == "failure":
                    await aflush(epoch, verdict, 0.0)
                    return result
                if verdict == "ignore":
                    return result
            epoch.ok()
            return result

        return run

    async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
        epoch = breaker._epoch
        if epoch.state is not CLOSED:
            now = monotonic()
            if now < epoch.until:
                # Inlined _reject: a rejection must cost little more than the raise.
                if _events.active:
                    raise reject(epoch, now)
                count_rejection()
                raise _new_error(
                    CircuitOpenError, name, None if epoch.state is ISOLATED else epoch.until - now
                )
            return await acall(fn, *args, **kwargs)
        start = monotonic()
        if start >= epoch.flush_at:
            return await acall(fn, *args, **kwargs)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            end = monotonic()
            verdict = verdict_of(exc, None)
            if finish_closed(epoch, verdict, end - start, end):
                await aflush(epoch, verdict, end - start)
            raise
        end = monotonic()
        if classify is None and end - start < slow_after and end < epoch.flush_at:
            epoch.ok()
            return result
        verdict = verdict_of(None, result)
        if finish_closed(epoch, verdict, end - start, end):
            await aflush(epoch, verdict, end - start)
        return result

    return timed


@final
class CircuitBreakerRegistry:
    """One breaker per key (host, shard, tenant), created on first use, bounded in number.

    When more than *maximum* keys are in use, the least recently used breaker is dropped;
    a dropped key that comes back starts with a fresh, closed breaker (or, with a shared
    store, picks the shared state up again).

    Args:
        factory: Builds the breaker for a key, e.g.
            ``lambda host: CircuitBreaker(f"erp:{host}", failure_rate=0.5)``.
        maximum: The most breakers kept at once.

    .. versionadded:: 0.1.0
    """

    def __init__(self, factory: Callable[[str], CircuitBreaker], *, maximum: int = 1024) -> None:
        if not callable(factory):
            raise ConfigurationError("CircuitBreakerRegistry.factory", factory, "must be callable")
        if type(maximum) is not int or maximum < 1:
            raise ConfigurationError(
                "CircuitBreakerRegistry.maximum", maximum, "must be an int >= 1"
            )
        self._factory = factory
        self.maximum = maximum
        self._lock = threading.Lock()
        self._breakers: collections.OrderedDict[str, CircuitBreaker] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"CircuitBreakerRegistry({len(self._breakers)}/{self.maximum} breakers)"

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, key: object) -> bool:
        return key in self._breakers

    def get(self, key: str) -> CircuitBreaker:
        """The breaker for *key*, created by the factory on first use.

        .. versionadded:: 0.1.0
        """
        breakers = self._breakers
        with self._lock:
            breaker = breakers.get(key)
            if breaker is not None:
                breakers.move_to_end(key)
                return breaker
        created = self._factory(key)
        if not isinstance(created, CircuitBreaker):
            raise TypeError(f"the registry's factory returned {created!r}, not a CircuitBreaker")
        with self._lock:
            breaker = breakers.setdefault(key, created)
            breakers.move_to_end(key)
            while len(breakers) > self.maximum:
                breakers.popitem(last=False)
        return breaker

    __getitem__ = get

    def call(self, key: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``self.get(key).call(fn, *args, **kwargs)``.

        .. versionadded:: 0.1.0
        """
        return self.get(key).call(fn, *args, **kwargs)

    async def acall(
        self, key: str, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``await self.get(key).acall(fn, *args, **kwargs)``.

        .. versionadded:: 0.1.0
        """
        return await self.get(key).acall(fn, *args, **kwargs)

    def metrics(self) -> list[BreakerMetrics]:
        """A snapshot of every breaker held.

        .. versionadded:: 0.1.0
        """
        with self._lock:
            breakers = list(self._breakers.values())
        return [breaker.metrics() for breaker in breakers]
