"""Typed events and their listeners.

Events are built only when a listener is attached: the shells test the module-level
:data:`active` flag, a single attribute read, before constructing anything.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import attrs
from typing_extensions import final

from ._core.breaker import OPEN, BreakerState
from ._core.dlq import Reason
from ._core.retry import RetryDecision

__all__ = [
    "AdmissionEvent",
    "BreakerEvent",
    "DeadLetterEvent",
    "Event",
    "Listener",
    "LoggingListener",
    "MembershipEvent",
    "RetryEvent",
    "add_listener",
    "emit",
    "remove_listener",
    "scoped_listener",
]

logger = logging.getLogger("invresilience")


@attrs.frozen(kw_only=True)
class Event:
    """Base class of every event invresilience emits.

    Attributes:
        source: The name of the policy (or breaker, limiter, ...) that emitted it.

    .. versionadded:: 0.1.0
    """

    source: str


@final
@attrs.frozen(kw_only=True)
class RetryEvent(Event):
    """One attempt of a retried call finished, and what was decided.

    Attributes:
        target: The qualified name of the callable being retried.
        attempt: The attempt's number, starting at 1.
        decision: What happens next.
        delay: Seconds slept before the next attempt (for ``RETRY``), or the delay that
            was refused (for ``DEADLINE_EXCEEDED`` / ``BUDGET_EXHAUSTED``); else ``0.0``.
        elapsed: Seconds since the first attempt started.
        exception: The attempt's exception, if it raised.
        result: The attempt's return value, if it returned.

    .. versionadded:: 0.1.0
    """

    target: str
    attempt: int
    decision: RetryDecision
    delay: float
    elapsed: float
    exception: BaseException | None = None
    result: Any = None


@final
@attrs.frozen(kw_only=True)
class BreakerEvent(Event):
    """A circuit breaker changed state, rejected a call, or lost its shared store.

    Attributes:
        kind: ``"state_changed"``, ``"rejected"`` or ``"store_error"``.
        state: The state after the event (for a rejection: the state that rejected).
        previous: The state before a change; ``None`` for the other kinds.
        generation: The breaker's generation after the event.
        retry_after: For a rejection, the seconds until a probe may be admitted (if known).
        exception: For ``"store_error"``, the store's error.

    .. versionadded:: 0.1.0
    """

    kind: Literal["state_changed", "rejected", "store_error"]
    state: BreakerState
    previous: BreakerState | None = None
    generation: int = 0
    retry_after: float | None = None
    exception: BaseException | None = None


@final
@attrs.frozen(kw_only=True)
class AdmissionEvent(Event):
    """A rate limiter, bulkhead or adaptive limiter rejected a call or moved its limit.

    Attributes:
        kind: ``"rejected"`` or ``"limit_changed"``.
        retry_after: For a rejection, the seconds until a permit is expected, if known.
        limit: For ``"limit_changed"``, the new concurrency limit.

    .. versionadded:: 0.1.0
    """

    kind: Literal["rejected", "limit_changed"]
    retry_after: float | None = None
    limit: int | None = None


@final
@attrs.frozen(kw_only=True)
class DeadLetterEvent(Event):
    """A dead-letter queue stored, refused, evicted, expired, purged or redrove letters.

    ``source`` is the queue's name.

    Attributes:
        kind: ``"stored"``, ``"rejected"`` (full, nothing stored), ``"evicted"`` (the
            oldest letters deleted to make room), ``"expired"`` (deleted by retention),
            ``"purged"`` or ``"redriven"``.
        count: How many letters the event concerns.
        ids: Their ids, where known.
        reason: For ``"stored"``, the letter's reason.

    .. versionadded:: 0.1.0
    """

    kind: Literal["stored", "rejected", "evicted", "expired", "purged", "redriven"]
    count: int = 0
    ids: tuple[str, ...] = ()
    reason: Reason | None = None


@final
@attrs.frozen(kw_only=True)
class MembershipEvent(Event):
    """A worker saw its group's membership change, or lost its own lease.

    ``source`` is the group's name.

    Attributes:
        kind: ``"joined"``, ``"left"`` (left or its lease ran out), ``"reweighted"``, or
            ``"lease_lost"`` (this worker's own lease ran out; it joins again).
        member: The member concerned.
        version: The membership version of the view that showed it.

    .. versionadded:: 0.1.0
    """

    kind: Literal["joined", "left", "reweighted", "lease_lost"]
    member: str
    version: int


Listener = Callable[[Event], None]
"""A callable that receives every event. It must be quick and must not raise; exceptions
it raises are logged and swallowed so that observing a call never breaks it.

.. versionadded:: 0.1.0
"""

_lock = threading.Lock()
_global: tuple[Listener, ...] = ()
_scoped: contextvars.ContextVar[tuple[Listener, ...]] = contextvars.ContextVar(
    "invresilience_listeners", default=()
)
_scoped_users = 0

#: True while any listener is attached anywhere; the shells read it before building events.
active = False


def _refresh() -> None:
    global active
    active = bool(_global) or _scoped_users > 0


def add_listener(listener: Listener) -> Callable[[], None]:
    """Attach *listener* to every event of the process.

    Returns:
        A function that detaches it again.

    .. versionadded:: 0.1.0
    """
    global _global
    with _lock:
        _global = (*_global, listener)
        _refresh()
    return lambda: remove_listener(listener)


def remove_listener(listener: Listener) -> None:
    """Detach a listener attached with :func:`add_listener`; detaching twice is harmless.

    .. versionadded:: 0.1.0
    """
    global _global
    with _lock:
        if listener in _global:
            index = _global.index(listener)
            _global = _global[:index] + _global[index + 1 :]
        _refresh()


@contextmanager
def scoped_listener(listener: Listener) -> Iterator[None]:
    """Attach *listener* for the current context only (this thread or task and its children)."""
    global _scoped_users
    with _lock:
        _scoped_users += 1
        _refresh()
    token = _scoped.set((*_scoped.get(), listener))
    try:
        yield
    finally:
        _scoped.reset(token)
        with _lock:
            _scoped_users -= 1
            _refresh()


def emit(event: Event) -> None:
    """Deliver *event* to the global listeners and to those scoped to this context."""
    for listener in (*_global, *_scoped.get()):
        try:
            listener(event)
        except Exception:
            logger.exception("invresilience: event listener %r raised", listener)


_LEVELS = {
    RetryDecision.SUCCESS: logging.DEBUG,
    RetryDecision.RETRY: logging.WARNING,
    RetryDecision.NOT_RETRYABLE: logging.DEBUG,
}


@final
class LoggingListener:
    """A listener that writes events to a stdlib :mod:`logging` logger.

    Retries are logged at ``WARNING``; giving up on a retryable failure at ``ERROR``;
    successes and non-retryable failures at ``DEBUG``. Structured fields are passed in
    ``extra`` (``invresilience_event``) for handlers that want them.

    Args:
        logger: Where to log; defaults to the ``"invresilience"`` logger.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger("invresilience")

    def __call__(self, event: Event) -> None:
        """Log *event*."""
        if isinstance(event, RetryEvent):
            level = _LEVELS.get(event.decision, logging.ERROR)
            if not self.logger.isEnabledFor(level):
                return
            what = (
                f"{type(event.exception).__qualname__}: {event.exception}"
                if event.exception is not None
                else f"returned {event.result!r}"
            )
            self.logger.log(
                level,
                "%s attempt %d %s (%s) after %.3f s; next delay %.3f s",
                event.target if event.source == event.target else f"{event.source}: {event.target}",
                event.attempt,
                event.decision.value,
                what,
                event.elapsed,
                event.delay,
                extra={"invresilience_event": event},
            )
        elif isinstance(event, BreakerEvent) and event.kind != "rejected":
            level = (
                logging.WARNING
                if event.state is OPEN or event.kind == "store_error"
                else logging.INFO
            )
            if self.logger.isEnabledFor(level):
                self.logger.log(
                    level,
                    "circuit %r %s: %s -> %s (generation %d)%s",
                    event.source,
                    event.kind.replace("_", " "),
                    event.previous.value if event.previous is not None else "-",
                    event.state.value,
                    event.generation,
                    f": {event.exception!r}" if event.exception is not None else "",
                    extra={"invresilience_event": event},
                )
        elif isinstance(event, DeadLetterEvent):
            level = logging.WARNING if event.kind in _DLQ_WARNINGS else logging.INFO
            if self.logger.isEnabledFor(level):
                self.logger.log(
                    level,
                    "dead-letter queue %r %s %d letter(s)%s",
                    event.source,
                    event.kind,
                    event.count,
                    f" ({event.reason})" if event.reason is not None else "",
                    extra={"invresilience_event": event},
                )
        elif isinstance(event, MembershipEvent):
            level = logging.WARNING if event.kind == "lease_lost" else logging.INFO
            if self.logger.isEnabledFor(level):
                self.logger.log(
                    level,
                    "group %r: %s %s (version %d)",
                    event.source,
                    event.member,
                    event.kind.replace("_", " "),
                    event.version,
                    extra={"invresilience_event": event},
                )
        elif self.logger.isEnabledFor(logging.DEBUG if _is_rejection(event) else logging.INFO):
            level = logging.DEBUG if _is_rejection(event) else logging.INFO
            self.logger.log(level, "%r", event, extra={"invresilience_event": event})


# A letter stored, refused by a full queue, or evicted to make room needs a human.
_DLQ_WARNINGS = frozenset({"stored", "rejected", "evicted"})


def _is_rejection(event: Event) -> bool:
    return getattr(event, "kind", None) == "rejected"
