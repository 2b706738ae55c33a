"""The dead-letter store contract against PostgreSQL (a real server), sync and async."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from invresilience.backends.postgres import AsyncPostgresDeadLetterStore, PostgresDeadLetterStore
from invresilience.contract import AsyncDeadLetterStoreContract, DeadLetterStoreContract

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def pg_prefix(postgres_url: str) -> Iterator[str]:
    """A table prefix of this module's own, whose tables are dropped afterwards."""
    prefix = f"invres_dlq_contract_{uuid.uuid4().hex[:12]}"
    yield prefix
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for table in ("dead_letters", "dead_letter_queues", "schema"):
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"{prefix}_{table}"))
            )
        for trigger in ("added", "removed", "moved", "emptied"):
            name = sql.Identifier(f"{prefix}_dead_letters_{trigger}")
            conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(name))


class TestPostgresDeadLetterStore(DeadLetterStoreContract):
    """The sync PostgreSQL store, connecting from a conninfo string."""

    @pytest.fixture(autouse=True)
    def _postgres(self, postgres_url: str, pg_prefix: str) -> None:
        self.url, self.prefix = postgres_url, pg_prefix

    def make_store(self, queue: str) -> PostgresDeadLetterStore:
        return PostgresDeadLetterStore(self.url, queue, table_prefix=self.prefix)


class TestPostgresDeadLetterStoreBorrowed(DeadLetterStoreContract):
    """The sync PostgreSQL store over a connection it borrows (and does not close)."""

    @pytest.fixture(autouse=True)
    def _postgres(self, postgres_url: str, pg_prefix: str) -> Iterator[None]:
        self.prefix = pg_prefix
        with psycopg.connect(postgres_url, autocommit=True) as self.conn:
            yield

    def make_store(self, queue: str) -> PostgresDeadLetterStore:
        return PostgresDeadLetterStore(self.conn, queue, table_prefix=self.prefix)


class TestAsyncPostgresDeadLetterStore(AsyncDeadLetterStoreContract):
    """The async PostgreSQL store, connecting inside each test's event loop."""

    @pytest.fixture(autouse=True)
    def _postgres(self, postgres_url: str, pg_prefix: str) -> None:
        self.url, self.prefix = postgres_url, pg_prefix

    async def make_store(self, queue: str) -> AsyncPostgresDeadLetterStore:
        return AsyncPostgresDeadLetterStore(self.url, queue, table_prefix=self.prefix)
