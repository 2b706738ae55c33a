"""The dead-letter store contract against the in-memory reference stores."""

from __future__ import annotations

from invresilience.backends.memory import (
    AsyncMemoryDeadLetterStore,
    MemoryBackend,
    MemoryDeadLetterStore,
)
from invresilience.contract import AsyncDeadLetterStoreContract, DeadLetterStoreContract


class TestMemoryDeadLetterStore(DeadLetterStoreContract):
    """The sync memory store; the queues of one test share a MemoryBackend."""

    def make_store(self, queue: str) -> MemoryDeadLetterStore:
        if not hasattr(self, "backend"):
            self.backend = MemoryBackend()
        return self.backend.dead_letter_store(queue)


class TestStandaloneMemoryDeadLetterStore(DeadLetterStoreContract):
    """The sync memory store made directly, one per queue."""

    def make_store(self, queue: str) -> MemoryDeadLetterStore:
        return MemoryDeadLetterStore(queue)


class TestAsyncMemoryDeadLetterStore(AsyncDeadLetterStoreContract):
    """The async memory store; the queues of one test share a MemoryBackend."""

    async def make_store(self, queue: str) -> AsyncMemoryDeadLetterStore:
        if not hasattr(self, "backend"):
            self.backend = MemoryBackend()
        return self.backend.async_dead_letter_store(queue)
