"""The idempotency store contract against PostgreSQL (a real server, real time), sync and async."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from invresilience.backends.postgres import (
    AsyncPostgresIdempotencyStore,
    PostgresIdempotencyStore,
)
from invresilience.contract import AsyncIdempotencyStoreContract, IdempotencyStoreContract

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def pg_prefix(postgres_url: str) -> Iterator[str]:
    """A table prefix of this module's own, whose tables are dropped afterwards."""
    prefix = f"invres_contract_{uuid.uuid4().hex[:12]}"
    yield prefix
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for table in ("idempotency", "schema"):
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"{prefix}_{table}"))
            )


class TestPostgresIdempotencyStore(IdempotencyStoreContract):
    """The sync PostgreSQL store, connecting from a conninfo string, on the server's clock."""

    @pytest.fixture(autouse=True)
    def _postgres(self, postgres_url: str, pg_prefix: str) -> None:
        self.url, self.prefix = postgres_url, pg_prefix

    def make_store(self) -> PostgresIdempotencyStore:
        return PostgresIdempotencyStore(self.url, table_prefix=self.prefix, namespace="sync")


class TestPostgresIdempotencyStoreBorrowed(IdempotencyStoreContract):
    """The sync PostgreSQL store over a connection it borrows (and does not close)."""

    @pytest.fixture(autouse=True)
    def _postgres(self, postgres_url: str, pg_prefix: str) -> Iterator[None]:
        self.prefix = pg_prefix
        with psycopg.connect(postgres_url, autocommit=True) as self.conn:
            yield

    def make_store(self) -> PostgresIdempotencyStore:
        return PostgresIdempotencyStore(self.conn, table_prefix=self.prefix, namespace="borrowed")


class TestAsyncPostgresIdempotencyStore(AsyncIdempotencyStoreContract):
    """The async PostgreSQL store, connecting inside each test's event loop."""

    @pytest.fixture(autouse=True)
    def _postgres(self, postgres_url: str, pg_prefix: str) -> None:
        self.url, self.prefix = postgres_url, pg_prefix

    async def make_store(self) -> AsyncPostgresIdempotencyStore:
        return AsyncPostgresIdempotencyStore(self.url, table_prefix=self.prefix, namespace="async")
