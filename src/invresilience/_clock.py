"""The real clock: the only module of invresilience that reads :mod:`time`."""

from __future__ import annotations

import asyncio
import time

from typing_extensions import final

__all__ = ["SYSTEM_CLOCK", "SystemClock"]


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
