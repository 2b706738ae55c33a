"""The real clock: the only module of invresilience that reads :mod:`time`."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from typing_extensions import final

if TYPE_CHECKING:
    from collections.abc import Callable

    from invresilience.typing import Clock

__all__ = ["SYSTEM_CLOCK", "SystemClock", "monotonic_ns"]


@final
class SystemClock:
    """The process's real clock: :func:`time.monotonic`, :func:`time.time` and real sleeps.

    Stateless: every policy shares one instance unless given another clock.

    .. versionadded:: 0.1.0
    """

    __slots__ = ()

    # Bound straight to the C functions so that reading the clock on a hot path costs no
    # Python-level call.
    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)
    sleep = staticmethod(time.sleep)

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for *seconds* with :func:`asyncio.sleep`."""
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


def monotonic_ns(clock: Clock) -> Callable[[], int]:
    """A function reading *clock*'s monotonic time in integer nanoseconds.

    For the system clock it is :func:`time.monotonic_ns` itself, which skips a float
    multiplication and a :func:`round` on hot paths; any other clock is scaled.
    """
    if type(clock) is SystemClock:
        return time.monotonic_ns
    read = clock.monotonic
    return lambda: round(read() * 1_000_000_000)
