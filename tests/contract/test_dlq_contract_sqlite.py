"""The dead-letter store contract against the SQLite stores, a fresh file per test."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from invresilience.backends.sqlite import (
    AsyncSqliteDeadLetterStore,
    SqliteBackend,
    SqliteDeadLetterStore,
)
from invresilience.contract import AsyncDeadLetterStoreContract, DeadLetterStoreContract

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class TestSqliteDeadLetterStore(DeadLetterStoreContract):
    """The sync SQLite store; the queues of one test share a file of its own."""

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "letters.db"

    def make_store(self, queue: str) -> SqliteDeadLetterStore:
        return SqliteDeadLetterStore(self.path, queue)


class TestSqliteDeadLetterStoreOtherPrefix(DeadLetterStoreContract):
    """The sync SQLite store under another table prefix, with every commit synced."""

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "letters.db"

    def make_store(self, queue: str) -> SqliteDeadLetterStore:
        return SqliteDeadLetterStore(self.path, queue, table_prefix="dlq_t", durability="full")


class TestSqliteMemoryDeadLetterStore(DeadLetterStoreContract):
    """The sync SQLite store on private ':memory:' databases (one per queue)."""

    def make_store(self, queue: str) -> SqliteDeadLetterStore:
        return SqliteDeadLetterStore(":memory:", queue)


class TestAsyncSqliteDeadLetterStore(AsyncDeadLetterStoreContract):
    """The async SQLite store (worker threads); the queues of one test share a file."""

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "letters.db"

    async def make_store(self, queue: str) -> AsyncSqliteDeadLetterStore:
        return AsyncSqliteDeadLetterStore(self.path, queue)


class TestAsyncSqliteBackendDeadLetterStore(AsyncDeadLetterStoreContract):
    """The async stores a SqliteBackend hands out, on one file per test."""

    @pytest.fixture(autouse=True)
    def _backend(self, tmp_path: Path) -> Iterator[None]:
        with SqliteBackend(tmp_path / "letters.db") as self.backend:
            yield

    async def make_store(self, queue: str) -> AsyncSqliteDeadLetterStore:
        return self.backend.async_dead_letter_store(queue)
