"""Time limits on calls: real cancellation for coroutines, a published deadline for threads.

A :class:`Timeout` publishes its deadline in the context (``_scope.DEADLINE``, the
contextvar :class:`~invresilience.RetryPolicy` already shares between nested calls), so
that callees can read :func:`remaining` and pass it on to socket and HTTP timeouts, and
so that nested policies, limiters and timeouts never wait past it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
from typing_extensions import ParamSpec, final

from ._clock import SYSTEM_CLOCK, SystemClock
from ._config import duration, seconds
from ._scope import DEADLINE
from .exceptions import ConfigurationError
from .typing import Clock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Timeout", "remaining"]

P = ParamSpec("P")
T = TypeVar("T")


def remaining() -> float | None:
    """Seconds left before the innermost deadline of the calling context, or ``None``.

    A deadline is published by :class:`Timeout` and by
    :class:`~invresilience.RetryPolicy` (its total *timeout*), for the duration of the
    call they wrap. Pass it on to the I/O that a callee makes, so that a stuck read gives
    up when the caller would:

    .. code-block:: python

        @ir.Timeout(2.0)
        def fetch_stock(sku: str) -> int:
            return http.get(f"/stock/{sku}", timeout=ir.remaining()).json()["level"]

    Returns:
        Seconds (``0.0`` once the deadline has passed), or ``None`` outside any deadline.

    .. versionadded:: 0.1.0
    """
    outer = DEADLINE.get()
    if outer is None:
        return None
    left = outer[1] - outer[0].monotonic()
    return left if left > 0.0 else 0.0


if sys.version_info >= (3, 11):

    def _cancelling(task: asyncio.Task[Any]) -> int:
        return task.cancelling()

    def _uncancel(task: asyncio.Task[Any]) -> int:
        return task.uncancel()

else:  # pragma: no cover - Python 3.10 cannot tell our cancellation from another one

    def _cancelling(task: asyncio.Task[Any]) -> int:
        return 0

    def _uncancel(task: asyncio.Task[Any]) -> int:
        return 0


class _Expiry:
    """Cancels a task when its time is up, remembering that it did."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


async def _watch(clock: Clock, delay: float, expiry: _Expiry) -> None:
    """The timer on a clock other than the system's: sleep on it, then fire."""
    await clock.asleep(delay)
    expiry.fire()


def _check_clock(instance: Timeout, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not all(callable(getattr(value, m, None)) for m in ("monotonic", "wall", "sleep", "asleep")):
        raise ConfigurationError(
            "Timeout.clock", value, "must have monotonic, wall, sleep and asleep"
        )


def _check_name(instance: Timeout, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (type(value) is not str or not value):
        raise ConfigurationError("Timeout.name", value, "must be a non-empty str or None")


@final
@attrs.frozen
class Timeout:
    """Give up on a call that takes longer than *seconds*.

    **Coroutines** are really cancelled: when the time is up the awaited call receives
    :class:`asyncio.CancelledError` at its current ``await``, and the caller gets the
    builtin ``TimeoutError`` (on every Python version; before 3.11
    :func:`asyncio.wait_for` raised a different class). No task is created per call on
    the system clock -- an event-loop timer cancels the calling task -- and cancelling
    the caller from outside still propagates as cancellation.

    **Functions** cannot be interrupted safely, so no thread is spent on them: the
    deadline is published instead, for the callee to honour -- :func:`remaining` gives
    the seconds left, to pass on to socket and HTTP timeouts -- and nested retry
    policies, limiters and timeouts never wait past it. A call that overran still
    returns its result, which cannot be undone; with ``strict=True`` it raises
    ``TimeoutError`` instead, after the fact.

    Deadlines nest: inside another deadline (an outer :class:`Timeout`, or a
    :class:`~invresilience.RetryPolicy`'s total timeout) the earlier one wins, so an
    inner timeout can shrink the time left but never extend it. A call that would start
    with no time left raises ``TimeoutError`` without running.

    On a clock other than the system's (a :class:`~invresilience.testing.ManualClock`),
    the coroutine timer sleeps on that clock in a helper task.

    Args:
        seconds: The time limit (or a timedelta); ``> 0``.
        strict: Raise ``TimeoutError`` when a function returns after its deadline.
        clock: The time source.
        name: A name for the error message; defaults to the callable's name.

    Raises:
        ConfigurationError: On a bad value, naming the field and the value.

    .. versionadded:: 0.1.0
    """

    seconds: float = attrs.field(converter=seconds, validator=duration(positive=True))
    strict: bool = attrs.field(default=False, kw_only=True)
    clock: Clock = attrs.field(default=SYSTEM_CLOCK, kw_only=True, validator=_check_clock)
    name: str | None = attrs.field(default=None, kw_only=True, validator=_check_name)

    def _expired(self, fn: object) -> TimeoutError:
        label = self.name or getattr(fn, "__qualname__", None) or repr(fn)
        return TimeoutError(f"{label} timed out after {self.seconds:.3g} s")

    def _deadline(self, now: float) -> float:
        """``now + seconds``, or an enclosing deadline if it comes first."""
        deadline = now + self.seconds
        outer = DEADLINE.get()
        if outer is not None:
            clock = outer[0]
            if clock is self.clock:
                if outer[1] < deadline:
                    deadline = outer[1]
            else:
                # Another clock: compare the time left, which both agree on.
                left = outer[1] - clock.monotonic()
                if left < self.seconds:
                    deadline = now + left
        return deadline

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` with the deadline published to it.

        Raises:
            TimeoutError: There was no time left to start, or (``strict=True``) the call
                returned after its deadline.

        .. versionadded:: 0.1.0
        """
        return _sync_caller(self, fn)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, cancelling it when the time is up.

        Raises:
            TimeoutError: The time ran out (the call was cancelled), or there was none left.

        .. versionadded:: 0.1.0
        """
        return await _async_caller(self, fn)(*args, **kwargs)

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]:
        """Decorate *fn* (``def`` or ``async def``) so every call is time-limited.

        .. versionadded:: 0.1.0
        """
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"Timeout cannot decorate the generator function {fn.__qualname__}: "
                "its body runs between the caller's steps, not in one call"
            )
        wrapper: Callable[..., Any] = (
            _async_caller(self, fn) if inspect.iscoroutinefunction(fn) else _sync_caller(self, fn)
        )
        functools.update_wrapper(wrapper, fn)
        return cast("Callable[P, T]", wrapper)


def _sync_caller(timeout: Timeout, fn: Callable[P, T]) -> Callable[P, T]:
    monotonic = timeout.clock.monotonic
    clock, strict = timeout.clock, timeout.strict
    set_deadline, reset_deadline = DEADLINE.set, DEADLINE.reset
    deadline_from, expired = timeout._deadline, timeout._expired

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        now = monotonic()
        deadline = deadline_from(now)
        if deadline <= now:
            raise expired(fn)
        token = set_deadline((clock, deadline))
        try:
            result = fn(*args, **kwargs)
        finally:
            reset_deadline(token)
        if strict and monotonic() > deadline:
            raise expired(fn)
        return result

    return run


def _async_caller(timeout: Timeout, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    monotonic = timeout.clock.monotonic
    clock, strict = timeout.clock, timeout.strict
    system = isinstance(clock, SystemClock)
    set_deadline, reset_deadline = DEADLINE.set, DEADLINE.reset
    deadline_from, expired = timeout._deadline, timeout._expired

    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        now = monotonic()
        deadline = deadline_from(now)
        if deadline <= now:
            raise expired(fn)
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - a coroutine always runs in a task under asyncio
            raise RuntimeError("Timeout needs to run inside an asyncio task")
        loop = task.get_loop()
        expiry = _Expiry(task)
        # The system clock is the event loop's: a loop timer needs no extra task.
        timer: asyncio.TimerHandle | asyncio.Task[None] = (
            loop.call_later(deadline - now, expiry.fire)
            if system
            else loop.create_task(_watch(clock, deadline - now, expiry))
        )
        cancelling = _cancelling(task)
        token = set_deadline((clock, deadline))
        try:
            result = await fn(*args, **kwargs)
        except asyncio.CancelledError:
            # Ours only if, once our cancellation is withdrawn, no other one is pending.
            if expiry.fired and _uncancel(task) <= cancelling:
                raise expired(fn) from None
            raise
        finally:
            timer.cancel()
            reset_deadline(token)
        if expiry.fired or strict:
            returned(task, expiry, deadline)
        return result

    def returned(task: asyncio.Task[Any], expiry: _Expiry, deadline: float) -> None:
        """After a return: tidy up a cancellation the callee swallowed; be strict if asked."""
        # A function of its own, not inline: after a cancellation thrown into the callee
        # was swallowed, CPython 3.11 stops reporting the resumed frame's lines to tracers,
        # and coverage would miss them.
        if expiry.fired:
            _uncancel(task)
            if strict:
                raise expired(fn)
        elif monotonic() > deadline:
            raise expired(fn)

    return run
