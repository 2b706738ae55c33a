"""Admission control: rate limits, bulkheads and adaptive concurrency limits.

The decisions live in :mod:`invresilience._core.admission`; this module holds the public
classes and the thin shells that lock, wait and report back. All three limiters
implement the :class:`~invresilience.typing.Admission` protocol (``try_acquire`` /
``acquire`` / ``aacquire`` returning a :class:`~invresilience.typing.Permit`), and
work as decorators on ``def`` and ``async def`` and through ``call`` / ``acall``.

Thread and task safety: every limiter holds a :class:`threading.Lock` around its
read-modify-write only, never across a call or a wait. One :class:`Bulkhead` or
:class:`AdaptiveLimiter` may serve threads and event loops at once: they share the slot
count, threads wait on a lock of their own and tasks on a future of their own, and a
slot freed in one thread wakes a task in another loop with
:meth:`asyncio.loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
from typing_extensions import ParamSpec, Self, final

from . import _events
from ._clock import SYSTEM_CLOCK, monotonic_ns
from ._config import _is_number, duration, integer, number, seconds
from ._core.admission import (
    AdaptiveCore,
    AimdLimit,
    GcraTable,
    Gradient2Limit,
    LimitAlgorithm,
    SampleWindow,
    Slots,
)
from ._retry import Outcome
from ._timeout import remaining
from .exceptions import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    RateLimitedError,
)
from .typing import AsyncRateLimitStore, Clock, Permit, RateLimitStore, Release

if TYPE_CHECKING:
    import datetime
    from types import TracebackType

__all__ = [
    "AIMD",
    "AdaptiveLimiter",
    "Bulkhead",
    "Gradient2",
    "MemoryRateLimitStore",
    "RateLimiter",
]

P = ParamSpec("P")
T = TypeVar("T")

#: Errors raised by our own admission layers: they say nothing about the dependency.
_LOCAL_ERRORS = (BulkheadFullError, RateLimitedError, CircuitOpenError)

_RELEASES = frozenset(("success", "dropped", "ignored"))

#: Nanoseconds per second.
_NS = 1_000_000_000


def _release_for(exc: BaseException | None) -> Release:
    """How a call that raised *exc* (or returned, for ``None``) releases its permit."""
    if exc is None:
        return "success"
    if not isinstance(exc, Exception) or isinstance(exc, _LOCAL_ERRORS):
        return "ignored"
    return "dropped"


def _check_clock(owner: str, clock: object) -> None:
    if not all(callable(getattr(clock, m, None)) for m in ("monotonic", "wall", "sleep", "asleep")):
        raise ConfigurationError(
            f"{owner}.clock", clock, "must have monotonic, wall, sleep and asleep"
        )


def _check_name(owner: str, name: object) -> None:
    if name is not None and (type(name) is not str or not name):
        raise ConfigurationError(f"{owner}.name", name, "must be a non-empty str or None")


def _check_timeout(timeout: float) -> float:
    """A caller's *timeout*, cut to the deadline published by an enclosing policy."""
    if not (_is_number(timeout) and timeout >= 0):
        raise ConfigurationError("timeout", timeout, "must be a number of seconds >= 0")
    left = remaining()
    return timeout if left is None or timeout < left else left


def _no_generators(owner: str, fn: Callable[..., Any]) -> None:
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"{owner} cannot decorate the generator function {fn.__qualname__}: "
            "a permit covers one call, not a stream; acquire one inside it instead"
        )


# -- permits ---------------------------------------------------------------------------------


class _FreePermit:
    """A rate limiter's permit: there is nothing to give back, so one instance serves all."""

    __slots__ = ()

    def release(self, outcome: Release = "success", latency: float | None = None) -> None:
        """Nothing to do: a rate limit counts starts, not calls in flight."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __repr__(self) -> str:
        return "<rate limit permit>"


_FREE = _FreePermit()


class _SlotPermit:
    """Slots of a :class:`Bulkhead` or :class:`AdaptiveLimiter`, held until released once."""

    __slots__ = ("done", "in_flight", "pool", "start", "weight")

    def __init__(self, pool: _Pool, weight: int, start: float, in_flight: int) -> None:
        self.pool = pool
        self.weight = weight
        self.start = start
        self.in_flight = in_flight
        self.done = False

    def release(self, outcome: Release = "success", latency: float | None = None) -> None:
        """Give the slots back, reporting the outcome and latency; again does nothing."""
        self.pool.release(self, outcome, latency)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.pool.release(self, _release_for(exc), None)

    def __repr__(self) -> str:
        return f"<permit for {self.weight} slot(s){', released' if self.done else ''}>"


# -- waiting for slots -------------------------------------------------------------------------


class _ThreadWaiter:
    """A thread queued for slots: it blocks on a lock that granting releases."""

    __slots__ = ("lock", "weight")

    def __init__(self, weight: int) -> None:
        self.weight = weight
        self.lock = threading.Lock()
        self.lock.acquire()

    def wake(self) -> bool:
        self.lock.release()
        return True


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _TaskWaiter:
    """A task queued for slots: it awaits a future that granting resolves, from any thread."""

    __slots__ = ("future", "loop", "weight")

    def __init__(self, weight: int, loop: asyncio.AbstractEventLoop) -> None:
        self.weight = weight
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def wake(self) -> bool:
        try:
            self.loop.call_soon_threadsafe(_settle, self.future)
        except RuntimeError:  # the waiter's loop is closed: nobody will take the slots
            return False
        return True


_Waiter = _ThreadWaiter | _TaskWaiter


class _Pool:
    """The slots, lock and waiting shared by :class:`Bulkhead` and :class:`AdaptiveLimiter`.

    With a *core* (adaptive), every release feeds it a sample and the limit follows.
    """

    __slots__ = ("core", "full", "lock", "monotonic", "moved", "slots")

    def __init__(
        self,
        limit: int,
        max_queue: int,
        full: Callable[[], BulkheadFullError],
        core: AdaptiveCore | None = None,
        monotonic: Callable[[], float] | None = None,
        moved: Callable[[int], None] | None = None,
    ) -> None:
        self.slots: Slots[_Waiter] = Slots(limit, max_queue)
        self.lock = threading.Lock()
        self.full = full
        self.core = core
        self.monotonic = monotonic
        self.moved = moved

    def _permit(self, weight: int, in_flight: int) -> _SlotPermit:
        monotonic = self.monotonic
        return _SlotPermit(self, weight, 0.0 if monotonic is None else monotonic(), in_flight)

    def take(self, weight: int) -> _SlotPermit | None:
        """Slots at once, or ``None``."""
        with self.lock:
            slots = self.slots
            if not slots.try_take(weight):
                return None
            in_flight = slots.in_flight
        return self._permit(weight, in_flight)

    def _queue(self, waiter: _Waiter, timeout: float) -> _SlotPermit | None:
        """Take slots at once (a permit), queue *waiter* (``None``), or raise when full."""
        with self.lock:
            slots = self.slots
            if slots.try_take(waiter.weight):
                in_flight = slots.in_flight
            elif timeout > 0.0 and slots.enqueue(waiter):
                return None
            else:
                in_flight = -1
        if in_flight < 0:
            # Raised outside the lock: building the error reports the rejection.
            raise self.full()
        return self._permit(waiter.weight, in_flight)

    def _granted(self, waiter: _Waiter) -> _SlotPermit:
        """The permit of a waiter that stopped waiting; raise if it was never granted."""
        with self.lock:
            behind = self.slots.withdraw(waiter)
            in_flight = self.slots.in_flight
        if behind is not None:
            self._wake(behind)
            raise self.full()
        return self._permit(waiter.weight, in_flight)

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter was interrupted: leave the queue, or hand back slots granted meanwhile."""
        with self.lock:
            granted = self.slots.withdraw(waiter)
            if granted is None:
                granted = self.slots.give_back(waiter.weight)
        self._wake(granted)

    def wait(self, weight: int, timeout: float) -> _SlotPermit:
        """Slots, waiting in the queue up to *timeout* seconds (a thread)."""
        waiter = _ThreadWaiter(weight)
        permit = self._queue(waiter, timeout)
        if permit is not None:
            return permit
        try:
            waiter.lock.acquire(timeout=min(timeout, threading.TIMEOUT_MAX))
        except BaseException:
            self._abandon(waiter)
            raise
        return self._granted(waiter)

    async def await_slots(self, weight: int, timeout: float) -> _SlotPermit:
        """Slots, waiting in the queue up to *timeout* seconds (a task)."""
        loop = asyncio.get_running_loop()
        waiter = _TaskWaiter(weight, loop)
        permit = self._queue(waiter, timeout)
        if permit is not None:
            return permit
        timer = loop.call_later(timeout, _settle, waiter.future)
        try:
            await waiter.future
        except BaseException:
            self._abandon(waiter)
            raise
        finally:
            timer.cancel()
        return self._granted(waiter)

    def release(self, permit: _SlotPermit, outcome: Release, latency: float | None) -> None:
        if outcome not in _RELEASES:
            raise ValueError(f"outcome must be 'success', 'dropped' or 'ignored', got {outcome!r}")
        core = self.core
        moved = None
        if core is None:
            with self.lock:
                if permit.done:
                    return
                permit.done = True
                granted = self.slots.give_back(permit.weight)
        else:
            assert self.monotonic is not None
            now = self.monotonic()
            if latency is None:
                latency = now - permit.start
            with self.lock:
                if permit.done:
                    return
                permit.done = True
                if outcome != "ignored":
                    moved = core.sample(now, latency, outcome == "dropped", permit.in_flight)
                    if moved is not None:
                        self.slots.limit = moved
                granted = self.slots.give_back(permit.weight)
        if granted:
            self._wake(granted)
        if moved is not None and self.moved is not None:
            self.moved(moved)

    def _wake(self, granted: list[_Waiter]) -> None:
        pending = granted
        while pending:
            lost = [waiter for waiter in pending if not waiter.wake()]
            pending = []
            for waiter in lost:
                with self.lock:
                    pending += self.slots.give_back(waiter.weight)


def _pool_caller(
    pool: _Pool,
    fn: Callable[P, T],
    timeout: float,
    classify: Callable[[BaseException | None, Any], Release] | None,
) -> Callable[P, T]:
    """The decorated callable of a pool: take slots (or wait), call, release."""
    take, wait = pool.take, pool.wait

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        permit = take(1) or wait(1, _check_timeout(timeout))
        if classify is None:
            try:
                return fn(*args, **kwargs)
            finally:
                permit.release()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            _report(permit, classify, exc, None)
            raise
        _report(permit, classify, None, result)
        return result

    return run


def _report(
    permit: _SlotPermit,
    classify: Callable[[BaseException | None, Any], Release],
    exc: BaseException | None,
    result: Any,
) -> None:
    """Release *permit* with the outcome's classification; a failing classifier leaks no slot."""
    try:
        outcome = classify(exc, result)
    except BaseException:
        permit.release("ignored")
        raise
    permit.release(outcome)


def _pool_acaller(
    pool: _Pool,
    fn: Callable[P, Awaitable[T]],
    timeout: float,
    classify: Callable[[BaseException | None, Any], Release] | None,
) -> Callable[P, Awaitable[T]]:
    """The async twin of :func:`_pool_caller`."""
    take, await_slots = pool.take, pool.await_slots

    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        permit = take(1) or await await_slots(1, _check_timeout(timeout))
        if classify is None:
            try:
                return await fn(*args, **kwargs)
            finally:
                permit.release()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            _report(permit, classify, exc, None)
            raise
        _report(permit, classify, None, result)
        return result

    return run


# -- rate limits -----------------------------------------------------------------------------


def _check_gcra(interval_ns: int, capacity_ns: int, weight: int) -> None:
    if interval_ns < 1 or capacity_ns < interval_ns or weight < 1:
        raise ValueError(
            "need interval_ns >= 1, capacity_ns >= interval_ns and weight >= 1, got "
            f"{interval_ns}, {capacity_ns} and {weight}"
        )


class _Buckets:
    """The in-memory buckets of one :class:`RateLimiter`: the default one and the keyed ones."""

    __slots__ = ("capacity", "interval", "lock", "table", "tat")

    def __init__(self, interval: int, capacity: int) -> None:
        self.interval = interval
        self.capacity = capacity
        self.tat = 0
        self.table = GcraTable()
        self.lock = threading.Lock()


@final
class MemoryRateLimitStore:
    """A :class:`~invresilience.typing.RateLimitStore` in this process's memory.

    Share one between several :class:`RateLimiter` objects to let them draw from the
    same buckets; it is also the reference that the network stores are tested against.
    Thread-safe. Rested buckets are forgotten lazily, so memory stays proportional to
    the buckets in use, however many keys pass through.

    Args:
        clock: The time source; buckets are timed on it.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_lock", "_table", "clock")

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        _check_clock("MemoryRateLimitStore", clock)
        self.clock = clock
        self._lock = threading.Lock()
        self._table = GcraTable()

    def __repr__(self) -> str:
        return f"MemoryRateLimitStore(buckets={len(self._table)})"

    def __len__(self) -> int:
        """How many buckets are remembered (rested ones may linger until the next sweep)."""
        return len(self._table)

    def acquire(self, key: str, *, interval_ns: int, capacity_ns: int, weight: int) -> int:
        """Try to take *weight* from *key*'s bucket: ``0`` if admitted, else the nanoseconds to wait.

        See :class:`~invresilience.typing.RateLimitStore` for the rule.

        Raises:
            ValueError: When ``interval_ns < 1``, ``capacity_ns < interval_ns`` or ``weight < 1``.

        .. versionadded:: 0.1.0
        """
        _check_gcra(interval_ns, capacity_ns, weight)
        now = round(self.clock.monotonic() * _NS)
        with self._lock:
            return self._table.acquire(key, now, interval_ns, capacity_ns, weight)


def _check_store(instance: RateLimiter, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(getattr(value, "acquire", None)):
        raise ConfigurationError(
            f"RateLimiter.{attribute.name}", value, "must have an acquire() method or be None"
        )


@final
@attrs.frozen(eq=False)
class RateLimiter:
    """Admit at most *rate* calls per *per* seconds, with bursts of up to *burst*.

    The rule is GCRA (the generic cell rate algorithm, a token bucket that stores one
    timestamp) on integer nanoseconds: from a rested bucket exactly *burst* calls are
    admitted at once, then one every ``per / rate`` seconds (rounded to the nanosecond).
    A call exactly on that boundary is admitted -- integers do not round it away.

    Buckets: the default one, and one per *key* passed to :meth:`try_acquire` /
    :meth:`acquire` (a tenant, a warehouse, an API token). In memory, rested buckets are
    forgotten lazily, so a million keys do not leak. With a *store* (a
    :class:`MemoryRateLimitStore` or a network store), every acquire is one call to the
    store on the store's clock, and limiters sharing it share the buckets. The bucket key
    is *key*, prefixed with ``"name:"`` when the limiter has a *name*; the default
    bucket is *name*, or ``"default"``.

    As a decorator (``def`` or ``async def``) or through :meth:`call` / :meth:`acall`,
    a rejected call waits up to *max_wait* seconds (``clock.sleep`` / ``clock.asleep``)
    when a permit is due by then, and otherwise raises
    :class:`~invresilience.exceptions.RateLimitedError` with ``retry_after`` set. Waits
    never run past the deadline of an enclosing :class:`~invresilience.RetryPolicy` or
    :class:`~invresilience.Timeout`.

    Args:
        rate: Calls admitted per *per* seconds at the sustained rate; ``> 0``.
        per: The period in seconds (or a timedelta).
        burst: Calls admitted at once from a rested bucket -- required, because neither
            ``1`` (no two calls close together) nor *rate* (a whole period's worth at
            once) is right for everyone.
        max_wait: How long a decorated call or :meth:`call` waits for a permit before
            raising; ``0`` rejects at once.
        store: A shared :class:`~invresilience.typing.RateLimitStore`, or ``None`` for
            in-process buckets.
        async_store: Its async twin, used by :meth:`aacquire`, :meth:`acall` and
            decorated ``async def`` functions; without one, they call *store* (a short
            blocking call).
        clock: The time source (for the in-process buckets, and for waiting).
        name: A name for errors, events and the store's keys.

    Raises:
        ConfigurationError: On a bad value, naming the field and the value.

    .. versionadded:: 0.1.0
    """

    rate: float = attrs.field(validator=number(minimum=0.0, inclusive=False))
    per: float = attrs.field(default=1.0, converter=seconds, validator=duration(positive=True))
    burst: int = attrs.field(kw_only=True, validator=integer(minimum=1))
    max_wait: float = attrs.field(
        default=0.0, kw_only=True, converter=seconds, validator=duration()
    )
    store: RateLimitStore | None = attrs.field(default=None, kw_only=True, validator=_check_store)
    async_store: AsyncRateLimitStore | None = attrs.field(
        default=None, kw_only=True, validator=_check_store
    )
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, kw_only=True)
    name: str | None = attrs.field(default=None, kw_only=True)
    # Derived state; the buckets live in a plain object because a frozen class cannot
    # assign to itself cheaply.
    _interval: int = attrs.field(init=False, repr=False)
    _capacity: int = attrs.field(init=False, repr=False)
    _bucket: _Buckets | None = attrs.field(init=False, repr=False)
    _monotonic_ns: Callable[[], int] = attrs.field(init=False, repr=False)
    _prefix: str = attrs.field(init=False, repr=False)
    _default_key: str = attrs.field(init=False, repr=False)
    # The key that names the default bucket in a store ("default" when unnamed): the
    # memory buckets honour it too, so both behave alike.
    _default_alias: str | None = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_clock("RateLimiter", self.clock)
        _check_name("RateLimiter", self.name)
        if self.async_store is not None and self.store is None:
            raise ConfigurationError(
                "RateLimiter.async_store", self.async_store, "needs the sync store as well"
            )
        interval = round(self.per * _NS / self.rate)
        if interval < 1:
            raise ConfigurationError(
                "RateLimiter.rate",
                self.rate,
                f"must allow at least 1 ns between calls per {self.per} s",
            )
        capacity = self.burst * interval
        derived = {
            "_interval": interval,
            "_capacity": capacity,
            "_bucket": _Buckets(interval, capacity) if self.store is None else None,
            "_monotonic_ns": monotonic_ns(self.clock),
            "_prefix": f"{self.name}:" if self.name else "",
            "_default_key": self.name or "default",
            "_default_alias": None if self.name else "default",
        }
        for field, value in derived.items():
            object.__setattr__(self, field, value)

    # -- the decision ----------------------------------------------------------------------

    def _wait_ns(self, weight: int, key: str | None) -> int:
        """``0`` if *weight* was taken from *key*'s bucket, else the nanoseconds to wait."""
        if weight != 1 and (type(weight) is not int or not 1 <= weight <= self.burst):
            raise self._bad_weight(weight)
        buckets = self._bucket
        if buckets is None:
            assert self.store is not None
            name = self._default_key if key is None else self._prefix + key
            return self.store.acquire(
                name, interval_ns=self._interval, capacity_ns=self._capacity, weight=weight
            )
        now = self._monotonic_ns()
        if key is None or key == self._default_alias:
            # Inlined _core.admission.gcra(): a function call would cost a fifth of the budget.
            with buckets.lock:
                tat = buckets.tat
                if tat < now:
                    tat = now
                tat += weight * buckets.interval
                wait = tat - now - buckets.capacity
                if wait <= 0:
                    buckets.tat = tat
                    return 0
            return wait
        with buckets.lock:
            return buckets.table.acquire(key, now, buckets.interval, buckets.capacity, weight)

    async def _await_ns(self, weight: int, key: str | None) -> int:
        """:meth:`_wait_ns` through the async store."""
        store = self.async_store
        if store is None:
            return self._wait_ns(weight, key)
        if weight != 1 and (type(weight) is not int or not 1 <= weight <= self.burst):
            raise self._bad_weight(weight)
        bucket = self._default_key if key is None else self._prefix + key
        return await store.acquire(
            bucket, interval_ns=self._interval, capacity_ns=self._capacity, weight=weight
        )

    def _bad_weight(self, weight: object) -> ConfigurationError:
        return ConfigurationError(
            "weight",
            weight,
            f"must be an int from 1 to the burst ({self.burst}): heavier could never be admitted",
        )

    def _refused(self, retry_after: float) -> None:
        """Every rejection passes here: a ``None`` from try_acquire and each error alike.

        The hot paths call it only ``if _events.active``.
        """
        _events.emit(
            _events.AdmissionEvent(
                source=self.name or "RateLimiter", kind="rejected", retry_after=retry_after
            )
        )

    def _rejected(self, retry_after: float) -> RateLimitedError:
        """The error for a rejected call."""
        if _events.active:
            self._refused(retry_after)
        name = self.name
        return RateLimitedError(
            retry_after,
            None if name is None else f"rate limit {name!r} exceeded; retry in {retry_after:.3g} s",
        )

    # -- the Admission protocol --------------------------------------------------------------

    def try_acquire(self, weight: int = 1, *, key: str | None = None) -> Permit | None:
        """A permit if the call may start now, else ``None``; never waits.

        Args:
            weight: How many calls this one counts as; from 1 to *burst*.
            key: The bucket; ``None`` for the default one.

        Raises:
            ConfigurationError: When *weight* is not an int from 1 to *burst*.

        .. versionadded:: 0.1.0
        """
        buckets = self._bucket
        if key is None and weight == 1 and buckets is not None:
            # The hot path, kept flat: one clock read, one lock, integer arithmetic.
            now = self._monotonic_ns()
            with buckets.lock:
                tat = buckets.tat
                if tat < now:
                    tat = now
                tat += buckets.interval
                wait = tat - now - buckets.capacity
                if wait <= 0:
                    buckets.tat = tat
                    return _FREE
        else:
            wait = self._wait_ns(weight, key)
            if wait == 0:
                return _FREE
        if _events.active:
            self._refused(wait / _NS)
        return None

    def acquire(self, weight: int = 1, *, key: str | None = None, timeout: float = 0.0) -> Permit:
        """A permit, sleeping up to *timeout* seconds for one.

        Sleeps only when a permit is due within *timeout* (and the enclosing deadline).

        Raises:
            RateLimitedError: No permit is due in time; ``retry_after`` says when one is.
            ConfigurationError: When *weight* is not an int from 1 to *burst*.

        .. versionadded:: 0.1.0
        """
        wait = self._wait_ns(weight, key)
        if wait == 0:
            return _FREE
        return self._sleep_for(wait, weight, key, timeout)

    def _sleep_for(self, wait: int, weight: int, key: str | None, timeout: float) -> Permit:
        """Sleep for a permit that was refused with *wait* ns to go, or raise."""
        clock = self.clock
        deadline = clock.monotonic() + _check_timeout(timeout)
        while True:
            delay = wait / _NS
            if clock.monotonic() + delay > deadline:
                raise self._rejected(delay)
            clock.sleep(delay)
            wait = self._wait_ns(weight, key)
            if wait == 0:
                return _FREE

    async def aacquire(
        self, weight: int = 1, *, key: str | None = None, timeout: float = 0.0
    ) -> Permit:
        """The async twin of :meth:`acquire`: waits with ``clock.asleep``.

        .. versionadded:: 0.1.0
        """
        buckets = self._bucket
        if key is None and weight == 1 and buckets is not None:
            # The hot path, the same flat code as try_acquire's: awaiting another
            # coroutine here would cost more than the rest of the acquire.
            now = self._monotonic_ns()
            with buckets.lock:
                tat = buckets.tat
                if tat < now:
                    tat = now
                tat += buckets.interval
                wait = tat - now - buckets.capacity
                if wait <= 0:
                    buckets.tat = tat
                    return _FREE
        else:
            wait = await self._await_ns(weight, key)
            if wait == 0:
                return _FREE
        return await self._asleep_for(wait, weight, key, timeout)

    async def _asleep_for(self, wait: int, weight: int, key: str | None, timeout: float) -> Permit:
        """The async twin of :meth:`_sleep_for`."""
        clock = self.clock
        deadline = clock.monotonic() + _check_timeout(timeout)
        while True:
            delay = wait / _NS
            if clock.monotonic() + delay > deadline:
                raise self._rejected(delay)
            await clock.asleep(delay)
            wait = await self._await_ns(weight, key)
            if wait == 0:
                return _FREE

    # -- calls -------------------------------------------------------------------------------

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` once a permit is granted (waiting up to *max_wait*).

        Raises:
            RateLimitedError: No permit was due within *max_wait*.

        .. versionadded:: 0.1.0
        """
        wait = self._wait_ns(1, None)
        if wait:
            self._sleep_for(wait, 1, None, self.max_wait)
        return fn(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` once a permit is granted; the async twin of :meth:`call`.

        .. versionadded:: 0.1.0
        """
        wait = await self._await_ns(1, None)
        if wait:
            await self._asleep_for(wait, 1, None, self.max_wait)
        return await fn(*args, **kwargs)

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]:
        """Decorate *fn* (``def`` or ``async def``) so that every call takes a permit first.

        The signature is kept. Each call uses the default bucket and waits up to
        *max_wait*.

        .. versionadded:: 0.1.0
        """
        _no_generators("RateLimiter", fn)
        wrapper: Callable[..., Any]
        if inspect.iscoroutinefunction(fn):
            acall = self.acall

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await acall(fn, *args, **kwargs)

        else:
            wait_ns, sleep_for, max_wait = self._wait_ns, self._sleep_for, self.max_wait

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                wait = wait_ns(1, None)
                if wait:
                    sleep_for(wait, 1, None, max_wait)
                return fn(*args, **kwargs)

        functools.update_wrapper(wrapper, fn)
        return cast("Callable[P, T]", wrapper)


# -- bulkheads ---------------------------------------------------------------------------------


@final
@attrs.frozen(eq=False)
class Bulkhead:
    """At most *max_concurrent* calls in flight; up to *max_queue* more wait for a slot.

    A call that finds every slot taken waits in a FIFO queue -- fair: nobody overtakes
    a queued caller -- for at most *queue_timeout* seconds, and gets
    :class:`~invresilience.exceptions.BulkheadFullError` when the queue is full or the
    wait runs out. A permit holds its slot until released; a cancelled or interrupted
    waiter never keeps one.

    Waiting is real: threads block on a lock and tasks await a future, timed by the
    thread primitive and the event loop, because a clock can sleep but cannot wake a
    waiter early when a slot frees up. Waits never run past the deadline of an enclosing
    :class:`~invresilience.RetryPolicy` or :class:`~invresilience.Timeout`.

    Args:
        max_concurrent: Slots; ``>= 1``.
        max_queue: Callers allowed to wait for a slot; ``0`` rejects at once when full.
        queue_timeout: How long a decorated call or :meth:`call` waits in the queue.
        name: A name for errors and events.

    Raises:
        ConfigurationError: On a bad value, naming the field and the value.

    .. versionadded:: 0.1.0
    """

    max_concurrent: int = attrs.field(validator=integer(minimum=1))
    max_queue: int = attrs.field(default=0, kw_only=True, validator=integer(minimum=0))
    queue_timeout: float = attrs.field(
        default=1.0, kw_only=True, converter=seconds, validator=duration()
    )
    name: str | None = attrs.field(default=None, kw_only=True)
    _pool: _Pool = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_name("Bulkhead", self.name)
        object.__setattr__(
            self, "_pool", _Pool(self.max_concurrent, self.max_queue, self._rejected)
        )

    def _refused(self) -> None:
        """Every rejection passes here: a ``None`` from try_acquire and each error alike.

        The callers call it only ``if _events.active``.
        """
        _events.emit(_events.AdmissionEvent(source=self.name or "Bulkhead", kind="rejected"))

    def _rejected(self) -> BulkheadFullError:
        """The error for a rejected call."""
        if _events.active:
            self._refused()
        label = "bulkhead" if self.name is None else f"bulkhead {self.name!r}"
        return BulkheadFullError(
            f"{label} has no free slot ({self.max_concurrent} in flight, "
            f"room for {self.max_queue} waiting)"
        )

    def _check_weight(self, weight: int) -> None:
        if weight != 1 and (type(weight) is not int or not 1 <= weight <= self.max_concurrent):
            raise ConfigurationError(
                "weight",
                weight,
                f"must be an int from 1 to max_concurrent ({self.max_concurrent})",
            )

    @property
    def in_flight(self) -> int:
        """Slots in use."""
        return self._pool.slots.in_flight

    @property
    def queued(self) -> int:
        """Callers waiting for a slot."""
        return len(self._pool.slots.waiters)

    def try_acquire(self, weight: int = 1, *, key: str | None = None) -> Permit | None:
        """A permit for *weight* slots if they are free now, else ``None``; never waits.

        *key* is accepted for the :class:`~invresilience.typing.Admission` protocol and
        ignored: a bulkhead has one pool of slots.

        .. versionadded:: 0.1.0
        """
        self._check_weight(weight)
        permit = self._pool.take(weight)
        if permit is None and _events.active:
            self._refused()
        return permit

    def acquire(self, weight: int = 1, *, key: str | None = None, timeout: float = 0.0) -> Permit:
        """A permit for *weight* slots, queueing up to *timeout* seconds for them.

        Raises:
            BulkheadFullError: The queue is full, or no slot freed up in time.

        .. versionadded:: 0.1.0
        """
        self._check_weight(weight)
        return self._pool.take(weight) or self._pool.wait(weight, _check_timeout(timeout))

    async def aacquire(
        self, weight: int = 1, *, key: str | None = None, timeout: float = 0.0
    ) -> Permit:
        """The async twin of :meth:`acquire`; a cancelled waiter leaves no slot behind.

        .. versionadded:: 0.1.0
        """
        self._check_weight(weight)
        pool = self._pool
        return pool.take(weight) or await pool.await_slots(weight, _check_timeout(timeout))

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` in a slot, queueing up to *queue_timeout* for one.

        Raises:
            BulkheadFullError: No slot in time.

        .. versionadded:: 0.1.0
        """
        return _pool_caller(self._pool, fn, self.queue_timeout, None)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` in a slot; the async twin of :meth:`call`.

        .. versionadded:: 0.1.0
        """
        return await _pool_acaller(self._pool, fn, self.queue_timeout, None)(*args, **kwargs)

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]:
        """Decorate *fn* (``def`` or ``async def``) so that every call runs in a slot.

        .. versionadded:: 0.1.0
        """
        _no_generators("Bulkhead", fn)
        wrapper: Callable[..., Any] = (
            _pool_acaller(self._pool, fn, self.queue_timeout, None)
            if inspect.iscoroutinefunction(fn)
            else _pool_caller(self._pool, fn, self.queue_timeout, None)
        )
        functools.update_wrapper(wrapper, fn)
        return cast("Callable[P, T]", wrapper)


# -- adaptive limits ---------------------------------------------------------------------------


def _check_ratio(instance: AIMD, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not _is_number(value) or not 0.5 <= value < 1.0:
        raise ConfigurationError("AIMD.backoff_ratio", value, "must be in [0.5, 1)")


def _check_fraction(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not _is_number(value) or not 0.0 < value <= 1.0:
        raise ConfigurationError(
            f"{type(instance).__name__}.{attribute.name}", value, "must be in (0, 1]"
        )


def _optional_target(value: float | datetime.timedelta | None) -> float | None:
    return None if value is None else seconds(value)


def _check_target(instance: AIMD, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not _is_number(value) or not 0.0 < value < math.inf):
        raise ConfigurationError("AIMD.latency_target", value, "must be > 0 seconds or None")


@final
@attrs.frozen(kw_only=True)
class AIMD:
    """Additive increase, multiplicative decrease: the loss-based adaptive limit.

    After each sample window (see :class:`AdaptiveLimiter`): a window with a drop, or
    whose *percentile* latency exceeds *latency_target*, multiplies the limit by
    *backoff_ratio* (shrinking it by at least one); a healthy window in which at least
    half the limit was in use adds one. The limit probes upwards one step per window and
    backs off at once on trouble -- the sawtooth of TCP congestion control.

    Args:
        backoff_ratio: The factor applied on trouble; in ``[0.5, 1)``.
        latency_target: Seconds the window's *percentile* latency may reach before the
            limit backs off (your p95 objective, say); ``None`` reacts to drops only.
        percentile: Which latency quantile is compared with the target; in ``(0, 1]``.

    .. versionadded:: 0.1.0
    """

    backoff_ratio: float = attrs.field(default=0.9, validator=_check_ratio)
    latency_target: float | None = attrs.field(
        default=None, converter=_optional_target, validator=_check_target
    )
    percentile: float = attrs.field(default=0.95, validator=_check_fraction)

    def _build(self, minimum: int) -> LimitAlgorithm:
        return AimdLimit(self.backoff_ratio, self.latency_target, self.percentile)


def _check_queue_size(instance: Gradient2, attribute: attrs.Attribute[Any], value: Any) -> None:
    if callable(value):
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(
            "Gradient2.queue_size", value, "must be an int >= 0 or a callable (limit) -> number"
        )


@final
@attrs.frozen(kw_only=True)
class Gradient2:
    """Netflix's Gradient2: follow the ratio of the baseline latency to the current one.

    After each sample window (see :class:`AdaptiveLimiter`), with ``short`` the window's
    mean latency and ``long`` a slow moving average of it (the baseline)::

        gradient = clamp(tolerance * long / short, 0.5, 1.0)  # 0.5 on a drop
        target = limit * gradient + (queue_size if gradient == 1 else 0)
        limit = limit * (1 - smoothing) + target * smoothing

    So the limit grows by ``queue_size * smoothing`` per window while latency stays
    within *tolerance* times the baseline, and shrinks in proportion once it does not:
    it settles where the dependency's latency is about *tolerance* × its unloaded
    latency. A window using less than half the limit leaves it alone.

    Departures from Netflix's ``Gradient2Limit``, each for a failure seen there: a drop
    counts as the steepest gradient (Netflix ignores drops); the queue allowance is added
    only while no queueing is seen (else the limit creeps up under modest overload); and
    the baseline learns only from windows that can show the unloaded latency -- latency
    lower than the baseline, a limit less than half used, or a limit at its floor -- so
    that hours of saturation do not teach it that the overloaded latency is normal.

    Args:
        tolerance: How many times the baseline latency is accepted before the limit
            shrinks; ``>= 1``. Lower (1.1 -- 1.25) keeps the dependency's queue short.
        smoothing: How much of the way to the new target the limit moves per window;
            in ``(0, 1]``.
        queue_size: The growth allowance per window, or a callable of the current limit
            (``math.sqrt``, say).
        long_window: The baseline's averaging span, in windows.

    .. versionadded:: 0.1.0
    """

    tolerance: float = attrs.field(default=1.5, validator=number(minimum=1.0))
    smoothing: float = attrs.field(default=0.2, validator=_check_fraction)
    queue_size: int | Callable[[int], float] = attrs.field(default=4, validator=_check_queue_size)
    long_window: int = attrs.field(default=600, validator=integer(minimum=1))

    def _build(self, minimum: int) -> LimitAlgorithm:
        size = self.queue_size
        queue = size if callable(size) else (lambda _limit: float(size))
        return Gradient2Limit(self.tolerance, self.smoothing, queue, self.long_window, minimum)


def _check_algorithm(
    instance: AdaptiveLimiter, attribute: attrs.Attribute[Any], value: Any
) -> None:
    if not isinstance(value, (AIMD, Gradient2)):
        raise ConfigurationError(
            "AdaptiveLimiter.algorithm", value, "must be AIMD() or Gradient2()"
        )


def _check_drop_on(instance: AdaptiveLimiter, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not callable(value):
        raise ConfigurationError("AdaptiveLimiter.drop_on", value, "must be callable or None")


@final
@attrs.frozen(eq=False)
class AdaptiveLimiter:
    """A bulkhead whose size follows the dependency: a concurrency limit tuned from latency and drops.

    Every released permit is a sample: its latency (measured from admission on *clock*
    unless given) and its outcome. ``"dropped"`` -- an error, a 429 / 503, a timeout --
    signals overload; ``"ignored"`` samples are not counted. Samples are gathered in
    windows of at least *window* seconds and *min_samples* samples; after each window
    the *algorithm* (:class:`AIMD` or :class:`Gradient2`) moves the limit, which stays
    within ``[min_limit, max_limit]``. A shrinking limit lets calls in flight finish; a
    growing one admits queued callers at once.

    As a decorator or through :meth:`call` / :meth:`acall`, a call that raises releases
    ``"dropped"``; cancellation and invresilience's own rejections (a full bulkhead, a
    rate limit, an open circuit) release ``"ignored"``; a return releases
    ``"success"``. *drop_on* sees every other outcome, returns included, and decides
    whether it is a drop -- an HTTP 503 response, say.

    Queueing works as in :class:`Bulkhead`.

    Args:
        algorithm: :class:`Gradient2` (the default) or :class:`AIMD`.
        initial_limit: The limit to start from; within the bounds.
        min_limit: The floor; ``>= 1``.
        max_limit: The ceiling; ``>= min_limit``.
        max_queue: Callers allowed to wait for a slot.
        queue_timeout: How long a decorated call or :meth:`call` waits in the queue.
        window: The shortest sample window, in seconds.
        min_samples: The fewest samples a window needs before it moves the limit.
        drop_on: ``(Outcome) -> bool``: whether an outcome is a drop; ``None`` drops on
            every exception and on no return.
        clock: The time source for latencies and windows.
        name: A name for errors and events.

    Raises:
        ConfigurationError: On a bad value, naming the field and the value.

    .. versionadded:: 0.1.0
    """

    algorithm: AIMD | Gradient2 = attrs.field(factory=Gradient2, validator=_check_algorithm)
    initial_limit: int = attrs.field(default=10, kw_only=True, validator=integer(minimum=1))
    min_limit: int = attrs.field(default=1, kw_only=True, validator=integer(minimum=1))
    max_limit: int = attrs.field(default=200, kw_only=True, validator=integer(minimum=1))
    max_queue: int = attrs.field(default=0, kw_only=True, validator=integer(minimum=0))
    queue_timeout: float = attrs.field(
        default=1.0, kw_only=True, converter=seconds, validator=duration()
    )
    window: float = attrs.field(
        default=1.0, kw_only=True, converter=seconds, validator=duration(positive=True)
    )
    min_samples: int = attrs.field(default=10, kw_only=True, validator=integer(minimum=1))
    drop_on: Callable[[Outcome], bool] | None = attrs.field(
        default=None, kw_only=True, validator=_check_drop_on
    )
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, kw_only=True)
    name: str | None = attrs.field(default=None, kw_only=True)
    _pool: _Pool = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_clock("AdaptiveLimiter", self.clock)
        _check_name("AdaptiveLimiter", self.name)
        if self.max_limit < self.min_limit:
            raise ConfigurationError(
                "AdaptiveLimiter.max_limit",
                self.max_limit,
                f"must be >= min_limit ({self.min_limit})",
            )
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ConfigurationError(
                "AdaptiveLimiter.initial_limit",
                self.initial_limit,
                f"must be within [min_limit, max_limit] = [{self.min_limit}, {self.max_limit}]",
            )
        monotonic = self.clock.monotonic
        core = AdaptiveCore(
            self.algorithm._build(self.min_limit),
            SampleWindow(self.window, self.min_samples, monotonic()),
            initial=self.initial_limit,
            minimum=self.min_limit,
            maximum=self.max_limit,
        )
        pool = _Pool(
            self.initial_limit,
            self.max_queue,
            self._rejected,
            core=core,
            monotonic=monotonic,
            moved=self._limit_changed,
        )
        object.__setattr__(self, "_pool", pool)

    def _refused(self) -> None:
        """Every rejection passes here: a ``None`` from try_acquire and each error alike.

        The callers call it only ``if _events.active``.
        """
        _events.emit(
            _events.AdmissionEvent(
                source=self.name or "AdaptiveLimiter", kind="rejected", limit=self.limit
            )
        )

    def _rejected(self) -> BulkheadFullError:
        """The error for a rejected call."""
        if _events.active:
            self._refused()
        label = "adaptive limiter" if self.name is None else f"adaptive limiter {self.name!r}"
        return BulkheadFullError(
            f"{label} has no free slot (limit {self.limit}, room for {self.max_queue} waiting)"
        )

    def _limit_changed(self, limit: int) -> None:
        """Every move of the limit passes here, outside the lock."""
        if _events.active:
            _events.emit(
                _events.AdmissionEvent(
                    source=self.name or "AdaptiveLimiter", kind="limit_changed", limit=limit
                )
            )

    def _check_weight(self, weight: int) -> None:
        if weight != 1 and (type(weight) is not int or not 1 <= weight <= self.max_limit):
            raise ConfigurationError(
                "weight", weight, f"must be an int from 1 to max_limit ({self.max_limit})"
            )

    def _classify(self, exc: BaseException | None, result: Any) -> Release:
        release = _release_for(exc)
        drop_on = self.drop_on
        if drop_on is None or release == "ignored":
            return release
        return "dropped" if drop_on(Outcome(exc, result)) else "success"

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        return self._pool.slots.limit

    @property
    def in_flight(self) -> int:
        """Slots in use."""
        return self._pool.slots.in_flight

    @property
    def queued(self) -> int:
        """Callers waiting for a slot."""
        return len(self._pool.slots.waiters)

    def try_acquire(self, weight: int = 1, *, key: str | None = None) -> Permit | None:
        """A permit if the limit allows the call now, else ``None``; never waits.

        Release it with the outcome (and, if you measured it, the latency). *key* is
        ignored: there is one limit.

        .. versionadded:: 0.1.0
        """
        self._check_weight(weight)
        permit = self._pool.take(weight)
        if permit is None and _events.active:
            self._refused()
        return permit

    def acquire(self, weight: int = 1, *, key: str | None = None, timeout: float = 0.0) -> Permit:
        """A permit, queueing up to *timeout* seconds for one.

        Raises:
            BulkheadFullError: The queue is full, or no slot freed up in time.

        .. versionadded:: 0.1.0
        """
        self._check_weight(weight)
        return self._pool.take(weight) or self._pool.wait(weight, _check_timeout(timeout))

    async def aacquire(
        self, weight: int = 1, *, key: str | None = None, timeout: float = 0.0
    ) -> Permit:
        """The async twin of :meth:`acquire`.

        .. versionadded:: 0.1.0
        """
        self._check_weight(weight)
        pool = self._pool
        return pool.take(weight) or await pool.await_slots(weight, _check_timeout(timeout))

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` within the limit and report how it went.

        Raises:
            BulkheadFullError: No slot in time.

        .. versionadded:: 0.1.0
        """
        return _pool_caller(self._pool, fn, self.queue_timeout, self._classify)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` within the limit; the async twin of :meth:`call`.

        .. versionadded:: 0.1.0
        """
        caller = _pool_acaller(self._pool, fn, self.queue_timeout, self._classify)
        return await caller(*args, **kwargs)

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]:
        """Decorate *fn* (``def`` or ``async def``) so every call runs within the limit.

        .. versionadded:: 0.1.0
        """
        _no_generators("AdaptiveLimiter", fn)
        wrapper: Callable[..., Any] = (
            _pool_acaller(self._pool, fn, self.queue_timeout, self._classify)
            if inspect.iscoroutinefunction(fn)
            else _pool_caller(self._pool, fn, self.queue_timeout, self._classify)
        )
        functools.update_wrapper(wrapper, fn)
        return cast("Callable[P, T]", wrapper)
