"""The idempotency guard: run the work of a key once, replay its result afterwards.

The store decides (see :class:`~invresilience.typing.IdempotencyStore`); this module only
asks it, runs the caller's function, keeps the lease alive while the function runs, and
encodes and decodes results through a codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import threading
from typing import TYPE_CHECKING, Any, Concatenate, Literal, Protocol, TypeVar, cast

import attrs
from typing_extensions import ParamSpec, final

from ._clock import SYSTEM_CLOCK
from ._codec import JsonCodec, fingerprint
from ._config import duration, seconds
from ._core.idempotency import Acquired, Completed, InProgress, Lease, check_key
from .exceptions import (
    BackendError,
    ConfigurationError,
    IdempotencyInProgressError,
    IdempotencyKeyReuseError,
    LeaseLostError,
)
from .typing import DEFAULT_TTL, AsyncIdempotencyStore, Clock, Codec, IdempotencyStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._core.idempotency import Claim

__all__ = ["Idempotency"]

P = ParamSpec("P")
T = TypeVar("T")

#: The first and the longest pause between two looks at a key in progress, in seconds.
_POLL_FIRST = 0.05
_POLL_MAX = 1.0


def _check_store(instance: Idempotency, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(getattr(value, "claim", None)) or not callable(
        getattr(value, "complete", None)
    ):
        raise ConfigurationError(
            "Idempotency.store", value, "must be an IdempotencyStore or an AsyncIdempotencyStore"
        )


def _check_codec(instance: Idempotency, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(getattr(value, "encode", None)) or not callable(getattr(value, "decode", None)):
        raise ConfigurationError("Idempotency.codec", value, "must have encode() and decode()")


def _check_mode(instance: Idempotency, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("raise", "wait"):
        raise ConfigurationError("Idempotency.on_in_progress", value, "must be 'raise' or 'wait'")


def _key(key: object) -> str:
    problem = check_key(key)
    if problem is not None:
        raise ConfigurationError("key", key, problem)
    return cast("str", key)


@final
@attrs.frozen(kw_only=True)
class Idempotency:
    """Run the work of an idempotency key once; replay its stored result afterwards.

    ``guard.run(key, fn, *args, **kwargs)`` claims *key* in the store with a fingerprint
    of the arguments, and then:

    - the key is new (or its last run failed, or its worker died and the lease ran out):
      call ``fn``, store its encoded result, and return it;
    - the work was done: return the stored result, decoded, without calling ``fn``;
    - the key was used with other arguments: raise
      :exc:`~invresilience.exceptions.IdempotencyKeyReuseError`;
    - another worker is running it: raise
      :exc:`~invresilience.exceptions.IdempotencyInProgressError`, or with
      ``on_in_progress="wait"`` wait up to *wait_timeout* for its result.

    If ``fn`` raises, the claim is released and the exception propagates: the next call
    runs the work again. While ``fn`` runs, a heartbeat extends the lease every third of
    *lease*, so a long call keeps its claim while its worker lives, and a dead worker's
    claim ends within *lease*.

    The first call returns what ``fn`` returned; a replay returns what the codec decodes,
    so with the default :class:`JsonCodec` a tuple comes back as a list: choose a codec
    for your result type.

    Args:
        store: An :class:`~invresilience.typing.IdempotencyStore` (for :meth:`run`) or an
            :class:`~invresilience.typing.AsyncIdempotencyStore` (for :meth:`arun`; a
            sync store also works there, called in a worker thread).
        ttl: Seconds a completed result is kept and replayed (default 24 h).
        lease: Seconds a claim lasts without a heartbeat: how long a crashed worker
            blocks its key.
        codec: Encodes results to bytes and back (:class:`JsonCodec` by default).
        on_in_progress: ``"raise"`` or ``"wait"`` when another worker holds the key.
        wait_timeout: The longest wait with ``on_in_progress="wait"``.
        heartbeat: Whether to extend the lease while ``fn`` runs.
        clock: Paces waits and the async heartbeat.

    Raises:
        ConfigurationError: A setting is invalid.

    .. versionadded:: 0.1.0
    """

    store: IdempotencyStore | AsyncIdempotencyStore = attrs.field(
        kw_only=False, validator=_check_store
    )
    ttl: float = attrs.field(
        default=DEFAULT_TTL, converter=seconds, validator=duration(positive=True)
    )
    lease: float = attrs.field(default=30.0, converter=seconds, validator=duration(positive=True))
    codec: Codec[Any] = attrs.field(factory=JsonCodec, validator=_check_codec)
    on_in_progress: Literal["raise", "wait"] = attrs.field(default="raise", validator=_check_mode)
    wait_timeout: float = attrs.field(default=30.0, converter=seconds, validator=duration())
    heartbeat: bool = True
    clock: Clock = SYSTEM_CLOCK
    _is_async: bool = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_is_async", inspect.iscoroutinefunction(self.store.claim))

    # -- sync ---------------------------------------------------------------------------------

    def run(self, key: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` once for *key*, fingerprinted by its arguments.

        Raises:
            ConfigurationError: *key* is empty or longer than 512 characters.
            CodecError: An argument is not JSON (use :meth:`run_fingerprinted`), or the
                result cannot be encoded (the claim is released first).
            IdempotencyKeyReuseError: *key* was used with other arguments.
            IdempotencyInProgressError: Another worker holds *key*.
            LeaseLostError: ``fn`` ran, but its lease was taken over before it finished.
            BackendError: The store failed.

        .. versionadded:: 0.1.0
        """
        return self.run_fingerprinted(key, fingerprint(args, kwargs), fn, *args, **kwargs)

    def run_fingerprinted(
        self, key: str, fingerprint: str, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Like :meth:`run`, with the payload's fingerprint given.

        Use it when the arguments are not JSON, or when only part of them identifies
        the payload (hash what matters, for example with
        :func:`invresilience.fingerprint`).

        .. versionadded:: 0.1.0
        """
        store = self._sync_store()
        key = _key(key)
        lease = self._claim(store, key, fingerprint)
        if not isinstance(lease, Lease):
            return cast("T", lease[0])
        beat = _HEARTS.start(store, lease) if self.heartbeat else None
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            if beat is not None:
                _HEARTS.stop(beat)
            self._release(store, beat.lease if beat is not None else lease)
            raise
        if beat is not None:
            _HEARTS.stop(beat)
            lease = beat.lease
        data = self._encode(result, lambda: self._release(store, lease))
        store.complete(lease, data, ttl=self.ttl)
        return result

    def run_in_transaction(
        self,
        key: str,
        fn: Callable[Concatenate[Any, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(connection, *args, **kwargs)`` in the store's transaction, once for *key*.

        For stores with a ``transaction(lease)`` (SQLite and PostgreSQL): ``fn``'s writes
        on *connection* and the stored result commit together or not at all, so local
        state changes exactly once. No heartbeat runs: the transaction holds the record
        locked until it commits. Fingerprinted by ``args`` and ``kwargs``.

        Raises:
            ConfigurationError: The store has no ``transaction()``.

        .. versionadded:: 0.1.0
        """
        store = self._sync_store()
        begin = getattr(store, "transaction", None)
        if not callable(begin):
            raise ConfigurationError(
                "Idempotency.store", store, "has no transaction(): use SQLite or PostgreSQL"
            )
        key = _key(key)
        lease = self._claim(store, key, fingerprint(args, kwargs))
        if not isinstance(lease, Lease):
            return cast("T", lease[0])
        try:
            with begin(lease) as tx:
                result = fn(tx.connection, *args, **kwargs)
                tx.complete(self.codec.encode(result), ttl=self.ttl)
        except BaseException:
            self._release(store, lease)
            raise
        return result

    def _sync_store(self) -> IdempotencyStore:
        if self._is_async:
            raise ConfigurationError(
                "Idempotency.store", self.store, "is an async store: use arun() / await"
            )
        return cast("IdempotencyStore", self.store)

    def _claim(self, store: IdempotencyStore, key: str, fp: str) -> Lease | tuple[Any]:
        """The lease to run under, or a 1-tuple holding the replayed result."""
        claiming = _Claiming(self)
        while True:
            answer = claiming.next(store.claim(key, fp, lease=self.lease, ttl=self.ttl))
            if not isinstance(answer, float):
                return answer
            self.clock.sleep(answer)

    def _release(self, store: IdempotencyStore, lease: Lease) -> None:
        # The work failed: give the key up so the next call runs it again. A lease
        # already lost or a store that is down must not hide the caller's exception:
        # the lease then ends by itself.
        with contextlib.suppress(LeaseLostError, BackendError):
            store.release(lease)

    def _encode(self, result: object, release: Callable[[], object]) -> bytes:
        try:
            return self.codec.encode(result)
        except BaseException:
            release()
            raise

    # -- async --------------------------------------------------------------------------------

    async def arun(
        self, key: str, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """The async twin of :meth:`run`: ``await fn(*args, **kwargs)`` once for *key*.

        .. versionadded:: 0.1.0
        """
        return await self.arun_fingerprinted(key, fingerprint(args, kwargs), fn, *args, **kwargs)

    async def arun_fingerprinted(
        self,
        key: str,
        fingerprint: str,
        fn: Callable[P, Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """The async twin of :meth:`run_fingerprinted`.

        .. versionadded:: 0.1.0
        """
        store = self._async_store()
        key = _key(key)
        claiming = _Claiming(self)
        while True:
            claim = await store.claim(key, fingerprint, lease=self.lease, ttl=self.ttl)
            answer = claiming.next(claim)
            if isinstance(answer, Lease):
                break
            if isinstance(answer, tuple):
                return cast("T", answer[0])
            await self.clock.asleep(answer)
        holder = _Holder(answer)
        beat = asyncio.ensure_future(self._abeat(store, holder)) if self.heartbeat else None
        try:
            result = await fn(*args, **kwargs)
        except BaseException:
            await _cancel(beat)
            await self._arelease(store, holder.lease)
            raise
        await _cancel(beat)
        lease = holder.lease
        try:
            data = self.codec.encode(result)
        except BaseException:
            await self._arelease(store, lease)
            raise
        await store.complete(lease, data, ttl=self.ttl)
        return result

    def _async_store(self) -> _AsyncGuardStore:
        if self._is_async:
            return cast("AsyncIdempotencyStore", self.store)
        return _ThreadedStore(cast("IdempotencyStore", self.store))

    async def _abeat(self, store: _AsyncGuardStore, holder: _Holder) -> None:
        interval = self.lease / 3
        while True:
            await self.clock.asleep(interval)
            try:
                holder.lease = await store.extend(holder.lease, self.lease)
            except LeaseLostError:
                return
            except BackendError:
                continue

    async def _arelease(self, store: _AsyncGuardStore, lease: Lease) -> None:
        with contextlib.suppress(LeaseLostError, BackendError):
            await store.release(lease)

    # -- the decorator --------------------------------------------------------------------------

    def __call__(
        self,
        *,
        key: Callable[P, str],
        fingerprint: Callable[P, str] | None = None,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """A decorator running each call once per key: ``@guard(key=lambda order: order.id)``.

        Args:
            key: Computes the idempotency key from the call's arguments (required: a
                key made up for you could not be stable across retries).
            fingerprint: Computes the payload fingerprint from the arguments; by default
                the arguments' canonical JSON digest (:func:`invresilience.fingerprint`).

        Works on ``def`` and ``async def`` functions and keeps their signatures.

        .. versionadded:: 0.1.0
        """
        if not callable(key):
            raise ConfigurationError("key", key, "must be a function of the call's arguments")
        if fingerprint is not None and not callable(fingerprint):
            raise ConfigurationError("fingerprint", fingerprint, "must be a function or None")
        fingerprint_of = fingerprint

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            wrapper: Callable[..., Any]
            if inspect.iscoroutinefunction(fn):
                afn = cast("Callable[P, Awaitable[Any]]", fn)

                async def wrapper(*args: Any, **kwargs: Any) -> Any:
                    fp = _fingerprint_of(fingerprint_of, args, kwargs)
                    return await self.arun_fingerprinted(
                        key(*args, **kwargs), fp, afn, *args, **kwargs
                    )

            else:

                def wrapper(*args: Any, **kwargs: Any) -> Any:
                    fp = _fingerprint_of(fingerprint_of, args, kwargs)
                    return self.run_fingerprinted(key(*args, **kwargs), fp, fn, *args, **kwargs)

            return cast("Callable[P, T]", functools.wraps(fn)(wrapper))

        return decorate


def _fingerprint_of(
    custom: Callable[..., str] | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    return fingerprint(args, kwargs) if custom is None else custom(*args, **kwargs)


async def _cancel(task: asyncio.Future[None] | None) -> None:
    """Stop a heartbeat task and wait until it has stopped.

    ``asyncio.wait`` never raises the task's own cancellation, but does raise if the
    caller itself is cancelled meanwhile, which must propagate.
    """
    if task is not None:
        task.cancel()
        await asyncio.wait((task,))


class _Claiming:
    """What one call does with each claim answer: the decision run() and arun() share.

    A lease or a replayed result ends the loop; a key in progress raises, or, with
    ``on_in_progress="wait"``, gives the next pause: 0.05 s doubling to 1 s, never past
    the holder's lease or the guard's *wait_timeout*.
    """

    __slots__ = ("guard", "pause", "waited")

    def __init__(self, guard: Idempotency) -> None:
        self.guard = guard
        self.pause = _POLL_FIRST
        self.waited = 0.0

    def next(self, claim: Claim) -> Lease | tuple[Any] | float:
        """A lease, a 1-tuple holding the replayed result, or the seconds to pause."""
        if isinstance(claim, Acquired):
            return claim.lease
        if isinstance(claim, Completed):
            return (self.guard.codec.decode(claim.result),)
        if isinstance(claim, InProgress):
            left = self.guard.wait_timeout - self.waited
            if self.guard.on_in_progress == "raise" or left <= 0:
                raise IdempotencyInProgressError(claim.key, claim.retry_after)
            pause = min(self.pause, max(claim.retry_after, 0.001), left)
            self.waited += pause
            self.pause = min(self.pause * 2, _POLL_MAX)
            return pause
        raise IdempotencyKeyReuseError(claim.key)


class _Holder:
    """The lease of one running call, replaced by every extension."""

    __slots__ = ("lease",)

    def __init__(self, lease: Lease) -> None:
        self.lease = lease


class _AsyncGuardStore(Protocol):
    """The part of an async store the guard uses."""

    async def claim(
        self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL
    ) -> Claim: ...

    async def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None: ...

    async def release(self, lease: Lease) -> None: ...

    async def extend(self, lease: Lease, seconds: float) -> Lease: ...


class _ThreadedStore:
    """A sync store seen as an async one: each call runs in a worker thread."""

    __slots__ = ("sync",)

    def __init__(self, store: IdempotencyStore) -> None:
        self.sync = store

    async def claim(
        self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL
    ) -> Claim:
        return await asyncio.to_thread(self.sync.claim, key, fingerprint, lease=lease, ttl=ttl)

    async def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        await asyncio.to_thread(self.sync.complete, lease, result, ttl=ttl)

    async def release(self, lease: Lease) -> None:
        await asyncio.to_thread(self.sync.release, lease)

    async def extend(self, lease: Lease, seconds: float) -> Lease:
        return await asyncio.to_thread(self.sync.extend, lease, seconds)


# -- the sync heartbeat ------------------------------------------------------------------------


class _Beat:
    """One running call's lease, extended by the heartbeat thread until stopped."""

    __slots__ = ("due", "interval", "lease", "seconds", "store")

    def __init__(self, store: IdempotencyStore, lease: Lease, now: float) -> None:
        self.store = store
        self.lease = lease
        self.seconds = lease.duration
        self.interval = lease.duration / 3
        self.due = now + self.interval


class _Hearts:
    """One daemon thread per process extends the leases of every running sync call.

    A call registers on entry and unregisters on exit: a dict insert and a delete
    under a lock, no thread and no timer per call, and no wake-up of the thread, which
    instead looks at the running calls every *tick* (the shortest interval it has been
    given). A lease is then extended between one and two intervals after it was last
    granted, at most two thirds of the way through it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._running: dict[int, _Beat] = {}
        self._tick = math.inf
        self._thread: threading.Thread | None = None

    def start(self, store: IdempotencyStore, lease: Lease) -> _Beat:
        beat = _Beat(store, lease, SYSTEM_CLOCK.monotonic())
        with self._cond:
            self._running[id(beat)] = beat
            if beat.interval < self._tick:
                self._tick = beat.interval
                self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="invresilience-heartbeat", daemon=True
                )
                self._thread.start()
        return beat

    def stop(self, beat: _Beat) -> None:
        with self._cond:
            self._running.pop(id(beat), None)

    def _run(self) -> None:
        idle = 0.0
        while True:
            with self._cond:
                self._cond.wait(self._tick)
                if not self._running:
                    # Nobody to beat for: after a minute of that, the thread ends; the
                    # next call starts another.
                    idle += self._tick
                    if idle >= 60.0:
                        self._thread = None
                        return
                    continue
                idle = 0.0
                now = SYSTEM_CLOCK.monotonic()
                due = [beat for beat in self._running.values() if beat.due <= now]
            for beat in due:
                self._extend(beat)

    def _extend(self, beat: _Beat) -> None:
        try:
            beat.lease = beat.store.extend(beat.lease, beat.seconds)
        except LeaseLostError:
            self.stop(beat)  # Taken over: the call's complete() will say so.
            return
        except BackendError:
            return  # Try again at the next tick; the lease may still outlive the outage.
        beat.due = SYSTEM_CLOCK.monotonic() + beat.interval


_HEARTS = _Hearts()
