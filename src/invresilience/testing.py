"""Tools for testing code that uses invresilience: part of the product, not an afterthought.

- :class:`ManualClock` -- a clock whose sleeps advance virtual time instantly and are
  recorded, so a ten-minute outage is tested in milliseconds.
- :func:`testing` -- a scoped context that zeroes retry waits, caps attempts and records a
  :class:`Timeline` of every attempt to assert on.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

from typing_extensions import final

from ._core.retry import RetryDecision
from ._events import Event, RetryEvent, scoped_listener
from ._scope import TESTING, TestingScope
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["ManualClock", "Timeline", "testing"]


@final
class ManualClock:
    """A :class:`~invresilience.typing.Clock` that only moves when told to, or when slept on.

    ``sleep`` and ``asleep`` advance the time at once and append the duration to
    :attr:`sleeps`; ``asleep`` also yields to the event loop once, so other tasks run.
    Thread-safe.

    Args:
        start: The initial monotonic reading.
        wall_start: The wall-clock reading (seconds since the epoch) at *start*.

    .. versionadded:: 0.1.0
    """

    def __init__(self, start: float = 0.0, *, wall_start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._wall_offset = float(wall_start) - self._now
        self._lock = threading.Lock()
        #: Every duration slept, in order.
        self.sleeps: list[float] = []

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"

    def monotonic(self) -> float:
        """The current virtual time."""
        return self._now

    def wall(self) -> float:
        """The virtual wall-clock time, moving in step with :meth:`monotonic`."""
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move time forward by *seconds* without recording a sleep."""
        if seconds < 0:
            raise ValueError(f"cannot move a ManualClock backwards, got {seconds!r}")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Advance by *seconds* and record the sleep."""
        if seconds < 0:
            raise ValueError(f"sleep length must be non-negative, got {seconds!r}")
        with self._lock:
            self._now += seconds
            self.sleeps.append(seconds)

    async def asleep(self, seconds: float) -> None:
        """Advance by *seconds*, record the sleep, and let other tasks run once."""
        self.sleep(seconds)
        await asyncio.sleep(0)


@final
class Timeline:
    """What happened inside a :func:`testing` block, in order.

    .. versionadded:: 0.1.0
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Every event emitted in the block's context.
        self.events: list[Event] = []

    def _record(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    @property
    def retries(self) -> list[RetryEvent]:
        """The retry events, one per attempt."""
        return [event for event in self.events if isinstance(event, RetryEvent)]

    @property
    def attempts(self) -> int:
        """How many attempts ran, over every retried call in the block."""
        return len(self.retries)

    @property
    def decisions(self) -> list[RetryDecision]:
        """The decision taken after each attempt."""
        return [event.decision for event in self.retries]

    @property
    def delays(self) -> list[float]:
        """The delays decided between attempts (slept only under ``testing(wait=True)``)."""
        return [event.delay for event in self.retries if event.decision is RetryDecision.RETRY]


@contextmanager
def testing(*, attempts: int | None = None, wait: bool = False) -> Iterator[Timeline]:
    """Make retrying fast and observable inside a ``with`` block, for tests.

    The block is scoped to the current context -- the thread or asyncio task that enters
    it, and tasks it creates -- not the whole process, so tests running in parallel do
    not see each other's settings. Threads started inside do not inherit it (they start
    with an empty context), unless run through :func:`contextvars.copy_context`.

    Args:
        attempts: Cap every policy's attempts at this many (policies allowing fewer keep theirs).
        wait: Keep the real waits; by default they are zeroed (computed and recorded only),
            and the deadline then counts only the time the attempts themselves take.

    Yields:
        A :class:`Timeline` recording every attempt made in the block.

    .. versionadded:: 0.1.0
    """
    if attempts is not None and (type(attempts) is not int or attempts < 1):
        raise ConfigurationError("testing.attempts", attempts, "must be an int >= 1 or None")
    timeline = Timeline()
    token = TESTING.set(TestingScope(attempts, wait))
    try:
        with scoped_listener(timeline._record):
            yield timeline
    finally:
        TESTING.reset(token)


# `from invresilience.testing import testing` in a test module must not make pytest
# collect this function as a test.
testing.__test__ = False  # type: ignore[attr-defined]
