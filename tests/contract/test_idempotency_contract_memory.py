"""The idempotency store contract against the in-memory reference stores."""

from __future__ import annotations

from invresilience.backends.memory import AsyncMemoryIdempotencyStore, MemoryIdempotencyStore
from invresilience.contract import AsyncIdempotencyStoreContract, IdempotencyStoreContract
from invresilience.testing import ManualClock


class TestMemoryIdempotencyStore(IdempotencyStoreContract):
    """The sync memory store on a ManualClock."""

    exact_clock = True

    def make_store(self) -> MemoryIdempotencyStore:
        self.clock = ManualClock()
        return MemoryIdempotencyStore(clock=self.clock)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestAsyncMemoryIdempotencyStore(AsyncIdempotencyStoreContract):
    """The async memory store on a ManualClock."""

    exact_clock = True

    async def make_store(self) -> AsyncMemoryIdempotencyStore:
        self.clock = ManualClock()
        return AsyncMemoryIdempotencyStore(clock=self.clock)

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
