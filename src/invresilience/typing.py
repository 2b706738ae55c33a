"""The public Protocols that invresilience's pieces are written against.

Anything that satisfies these (structurally: no subclassing needed) can be passed in.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Clock"]


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
