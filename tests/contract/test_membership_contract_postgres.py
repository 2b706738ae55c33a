"""The membership contract against PostgreSQL (a real server), sync and async.

Leases are kept on the server's clock, so the suite waits out short real leases (0.3 s).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

from invresilience.backends.postgres import AsyncPostgresMembership, PostgresMembership
from invresilience.contract import AsyncMembershipContract, MembershipContract

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def pg_prefix(postgres_url: str) -> Iterator[str]:
    """A table prefix of this module's own, whose tables are dropped afterwards."""
    prefix = f"invres_membership_contract_{uuid.uuid4().hex[:12]}"
    yield prefix
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for table in ("membership", "schema"):
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"{prefix}_{table}"))
            )


class TestPostgresMembership(MembershipContract):
    """The sync PostgreSQL store, connecting from a conninfo string."""

    @pytest.fixture(autouse=True)
    def _postgres(self, postgres_url: str, pg_prefix: str) -> None:
        self.url, self.prefix = postgres_url, pg_prefix

    def make_membership(self, group: str) -> PostgresMembership:
        return PostgresMembership(self.url, group, table_prefix=self.prefix)


class TestAsyncPostgresMembership(AsyncMembershipContract):
    """The async PostgreSQL store, connecting inside each test's event loop."""

    @pytest.fixture(autouse=True)
    def _postgres(self, postgres_url: str, pg_prefix: str) -> None:
        self.url, self.prefix = postgres_url, pg_prefix

    async def make_membership(self, group: str) -> AsyncPostgresMembership:
        return AsyncPostgresMembership(self.url, group, table_prefix=self.prefix)
