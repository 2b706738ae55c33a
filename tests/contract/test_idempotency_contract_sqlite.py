"""The idempotency store contract against the SQLite stores, a fresh file per test."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from invresilience.backends.sqlite import AsyncSqliteIdempotencyStore, SqliteIdempotencyStore
from invresilience.contract import AsyncIdempotencyStoreContract, IdempotencyStoreContract
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from pathlib import Path


class TestSqliteIdempotencyStore(IdempotencyStoreContract):
    """The sync SQLite store on a file of its own and a ManualClock."""

    exact_clock = True

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "idempotency.db"

    def make_store(self) -> SqliteIdempotencyStore:
        self.clock = ManualClock()
        return SqliteIdempotencyStore(self.path, clock=self.clock)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestSqliteMemoryIdempotencyStore(IdempotencyStoreContract):
    """The sync SQLite store on a private ':memory:' database."""

    exact_clock = True

    def make_store(self) -> SqliteIdempotencyStore:
        self.clock = ManualClock()
        return SqliteIdempotencyStore(":memory:", clock=self.clock)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestAsyncSqliteIdempotencyStore(AsyncIdempotencyStoreContract):
    """The async SQLite store (worker threads) on a file of its own and a ManualClock."""

    exact_clock = True

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "idempotency.db"

    async def make_store(self) -> AsyncSqliteIdempotencyStore:
        self.clock = ManualClock()
        return AsyncSqliteIdempotencyStore(self.path, clock=self.clock)

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
