"""The membership contract against SQLite files, sync and async.

SQLite keeps leases on the store's clock (its ``wall()``), so most classes run on a
ManualClock with a long lease; one class runs on the system clock with the suite's short
real leases, as a server-backed store would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from invresilience.backends.sqlite import (
    AsyncSqliteMembership,
    SqliteBackend,
    SqliteMembership,
)
from invresilience.contract import AsyncMembershipContract, MembershipContract
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class TestSqliteMembership(MembershipContract):
    """The sync SQLite store on a ManualClock; each store opens the test's file."""

    lease = 30.0

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "membership.db"
        self.clock = ManualClock(wall_start=1_712_345_678.0)

    def make_membership(self, group: str) -> SqliteMembership:
        return SqliteMembership(self.path, group, clock=self.clock)

    def expire(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestSqliteMembershipRealClock(MembershipContract):
    """The sync SQLite store on the system clock, with short real leases."""

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "membership.db"

    def make_membership(self, group: str) -> SqliteMembership:
        return SqliteMembership(self.path, group)


class TestSqliteBackendMembership(MembershipContract):
    """The stores SqliteBackend.membership(group) hands out, on a ManualClock."""

    lease = 30.0

    @pytest.fixture(autouse=True, params=["file", ":memory:"])
    def _database(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
        path = tmp_path / "membership.db" if request.param == "file" else ":memory:"
        self.clock = ManualClock()
        with SqliteBackend(path, clock=self.clock) as self.backend:
            yield

    def make_membership(self, group: str) -> SqliteMembership:
        return self.backend.membership(group)

    def expire(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestAsyncSqliteMembership(AsyncMembershipContract):
    """The async SQLite store on a ManualClock."""

    lease = 30.0

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "membership.db"
        self.clock = ManualClock(wall_start=1_712_345_678.0)

    async def make_membership(self, group: str) -> AsyncSqliteMembership:
        return AsyncSqliteMembership(self.path, group, clock=self.clock)

    async def expire(self, seconds: float) -> None:
        self.clock.advance(seconds)
