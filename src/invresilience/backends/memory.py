"""In-process stores: the reference implementations of the store Protocols.

They share state between the objects of one process (two breakers with the same name, many
limiters on one bucket) and are what the network backends are tested against.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Literal

from typing_extensions import final

from .._admission import MemoryRateLimitStore
from .._clock import SYSTEM_CLOCK
from .._core.breaker import BreakerCore, BreakerSpec, SharedBreakerState

if TYPE_CHECKING:
    from ..typing import Clock

__all__ = ["AsyncMemoryBreakerStore", "MemoryBreakerStore", "MemoryRateLimitStore"]


@final
class MemoryBreakerStore:
    """A :class:`~invresilience.typing.BreakerStore` in this process's memory.

    Breakers are kept per name for the life of the store.
    Thread-safe; every operation is atomic under one lock.

    Args:
        clock: The store's clock (the one every rule's ``now`` is read from).

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._cores: dict[str, BreakerCore] = {}

    def __repr__(self) -> str:
        return f"MemoryBreakerStore({len(self._cores)} breakers)"

    def _core(self, name: str, spec: BreakerSpec) -> BreakerCore:
        core = self._cores.get(name)
        if core is None or core.spec != spec:
            # A breaker reconfigured under the same name starts afresh, closed, but keeps
            # counting generations so outcomes from the old configuration are dropped.
            fresh = BreakerCore(spec)
            if core is not None:
                fresh.generation = core.generation + 1
            core = self._cores[name] = fresh
        return core

    def _seed(self, name: str, spec: BreakerSpec, shared: SharedBreakerState, now: float) -> None:
        """Start *name* from *shared* (a breaker failing over from a shared store to local)."""
        with self._lock:
            core = self._cores[name] = BreakerCore(spec)
            core.state = shared.state
            core.generation = shared.generation
            core.opens = shared.opens
            core.open_until = now + shared.retry_after

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
        successes_at: float | None = None,
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.record`.

        *successes_at* (not part of the Protocol) is the earlier time, on this store's
        clock, that the plain *successes* belong to: an in-process breaker folding a batch
        of successes late files them in the time-window bucket they were counted in.
        """
        with self._lock:
            core = self._core(name, spec)
            now = self.clock.monotonic()
            core.record(
                now,
                generation,
                successes=successes,
                failures=failures,
                slow_successes=slow_successes,
                slow_failures=slow_failures,
                successes_at=successes_at,
            )
            return core.shared(now)

    def probe(self, name: str, spec: BreakerSpec, owner: str) -> tuple[SharedBreakerState, bool]:
        """See :meth:`~invresilience.typing.BreakerStore.probe`."""
        with self._lock:
            core = self._core(name, spec)
            now = self.clock.monotonic()
            granted = core.probe(now, owner)
            return core.shared(now), granted

    def settle(
        self, name: str, spec: BreakerSpec, owner: str, generation: int, success: bool | None
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.settle`."""
        with self._lock:
            core = self._core(name, spec)
            now = self.clock.monotonic()
            core.settle(now, owner, generation, success)
            return core.shared(now)

    def force(
        self, name: str, spec: BreakerSpec, state: Literal["isolated", "closed"]
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.force`."""
        with self._lock:
            core = self._core(name, spec)
            now = self.clock.monotonic()
            core.force(now, state)
            return core.shared(now)

    def read(self, name: str, spec: BreakerSpec) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.read`."""
        with self._lock:
            core = self._core(name, spec)
            return core.shared(self.clock.monotonic())


@final
class AsyncMemoryBreakerStore:
    """The async twin of :class:`MemoryBreakerStore`, sharing its state.

    Args:
        store: The sync store whose breakers to share; a new one by default.

    .. versionadded:: 0.1.0
    """

    def __init__(self, store: MemoryBreakerStore | None = None) -> None:
        self.sync = store if store is not None else MemoryBreakerStore()

    def __repr__(self) -> str:
        return f"AsyncMemoryBreakerStore({self.sync!r})"

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
        """See :meth:`~invresilience.typing.BreakerStore.record`."""
        return self.sync.record(
            name,
            spec,
            generation,
            successes=successes,
            failures=failures,
            slow_successes=slow_successes,
            slow_failures=slow_failures,
        )

    async def probe(
        self, name: str, spec: BreakerSpec, owner: str
    ) -> tuple[SharedBreakerState, bool]:
        """See :meth:`~invresilience.typing.BreakerStore.probe`."""
        return self.sync.probe(name, spec, owner)

    async def settle(
        self, name: str, spec: BreakerSpec, owner: str, generation: int, success: bool | None
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.settle`."""
        return self.sync.settle(name, spec, owner, generation, success)

    async def force(
        self, name: str, spec: BreakerSpec, state: Literal["isolated", "closed"]
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.force`."""
        return self.sync.force(name, spec, state)

    async def read(self, name: str, spec: BreakerSpec) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.read`."""
        return self.sync.read(name, spec)
