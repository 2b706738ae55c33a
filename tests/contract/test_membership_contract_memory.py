"""The membership contract against the in-memory reference stores, and against broken ones.

The memory stores keep leases on a ManualClock, so the suite moves it instead of sleeping.
The broken stores each get one rule wrong; the suite must say which.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from invresilience._core.membership import GroupState, MembershipOp
from invresilience.backends._common import check_membership_op, membership_result
from invresilience.backends.memory import AsyncMemoryMembership, MemoryBackend, MemoryMembership
from invresilience.contract import AsyncMembershipContract, MembershipContract
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from invresilience._core.membership import MembershipView


class TestMemoryMembership(MembershipContract):
    """The sync memory store; the groups of one test share a MemoryBackend on a ManualClock."""

    lease = 30.0

    def make_membership(self, group: str) -> MemoryMembership:
        if not hasattr(self, "backend"):
            self.clock = ManualClock()
            self.backend = MemoryBackend(clock=self.clock)
        return self.backend.membership(group)

    def expire(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestMemoryMembershipShortLease(MembershipContract):
    """The sync memory store with the server-sized default lease (0.3 s) on a ManualClock."""

    def make_membership(self, group: str) -> MemoryMembership:
        if not hasattr(self, "backend"):
            self.clock = ManualClock()
            self.backend = MemoryBackend(clock=self.clock)
        return self.backend.membership(group)

    def expire(self, seconds: float) -> None:
        self.clock.advance(seconds)


class TestAsyncMemoryMembership(AsyncMembershipContract):
    """The async memory store; the groups of one test share a MemoryBackend on a ManualClock."""

    lease = 30.0

    async def make_membership(self, group: str) -> AsyncMemoryMembership:
        if not hasattr(self, "backend"):
            self.clock = ManualClock()
            self.backend = MemoryBackend(clock=self.clock)
        return self.backend.async_membership(group)

    async def expire(self, seconds: float) -> None:
        self.clock.advance(seconds)


def test_the_default_expire_sleeps_for_real() -> None:
    """Without an expire hook the suite sleeps: a memory store on the system clock passes too."""
    # One check that waits (1.2 leases of 0.05 s), to cover the default hooks cheaply.

    class Suite(MembershipContract):
        lease = 0.05

        def make_membership(self, group: str) -> MemoryMembership:
            if not hasattr(self, "backend"):
                self.backend = MemoryBackend()
            return self.backend.membership(group)

    class AsyncSuite(AsyncMembershipContract):
        lease = 0.05

        async def make_membership(self, group: str) -> AsyncMemoryMembership:
            if not hasattr(self, "backend"):
                self.backend = MemoryBackend()
            return self.backend.async_membership(group)

    Suite().test_an_expired_member_disappears_with_one_bump()
    AsyncSuite().test_an_expired_member_disappears_with_one_bump()


def test_unimplemented_hooks_raise() -> None:
    """The base suites need make_membership."""
    with pytest.raises(NotImplementedError):
        MembershipContract().test_an_empty_group_is_version_zero()
    with pytest.raises(NotImplementedError):
        AsyncMembershipContract().test_an_empty_group_is_version_zero()


# -- the suite catches a store that breaks the rules ---------------------------------------------


class _NoBumpOnLeave(GroupState):
    """Removes a leaving member without bumping the version."""

    def leave(self, member: str, token: str, *, now: float) -> MembershipView:
        self._sweep(now)
        entry = self._members.get(member)
        if entry is not None and entry.token == token:
            del self._members[member]
        return self.view(now)


class _HeartbeatIgnoresToken(GroupState):
    """Renews and records acked for whoever heartbeats under a live name."""

    def heartbeat(
        self, member: str, token: str, *, lease: float, acked: int, now: float
    ) -> MembershipView:
        entry = self._members.get(member)
        return super().heartbeat(
            member, token if entry is None else entry.token, lease=lease, acked=acked, now=now
        )


class _NoExpiry(GroupState):
    """Never drops a member whose lease ran out."""

    def _sweep(self, now: float) -> None:
        pass


class _UncappedAcked(GroupState):
    """Records whatever acked a heartbeat reports, even a version that does not exist yet."""

    def heartbeat(
        self, member: str, token: str, *, lease: float, acked: int, now: float
    ) -> MembershipView:
        view = super().heartbeat(member, token, lease=lease, acked=acked, now=now)
        entry = self._members.get(member)
        if entry is None or entry.token != token:
            return view
        entry.acked = acked
        return self.view(now)


class _ForgetfulHistory(GroupState):
    """Keeps only the previous version's weights, whatever the members still act on."""

    def view(self, now: float) -> MembershipView:
        view = super().view(now)
        history = {v: w for v, w in view.history.items() if v == view.version - 1}
        return attrs.evolve(view, history=history)


class _JoinStealsTheName(GroupState):
    """Lets a join under a live name with another token take the name over."""

    def join(
        self, member: str, token: str, *, weight: float, lease: float, now: float
    ) -> MembershipView | float:
        entry = self._members.get(member)
        if entry is not None:
            entry.token = token
        return super().join(member, token, weight=weight, lease=lease, now=now)


class _NoIncarnation(GroupState):
    """Reports no incarnation for its members (as a static list does)."""

    def view(self, now: float) -> MembershipView:
        view = super().view(now)
        members = {n: attrs.evolve(m, incarnation="") for n, m in view.members.items()}
        return attrs.evolve(view, members=members)


class _BrokenMembership:
    """MemoryMembership's shell over a broken GroupState."""

    def __init__(self, state: GroupState, clock: ManualClock) -> None:
        self.state, self.clock, self.lock = state, clock, threading.Lock()
        self.group = state.group

    def _apply(self, op: MembershipOp) -> MembershipView:
        check_membership_op(op)
        with self.lock:
            result = self.state.apply(op, self.clock.monotonic())
        return membership_result(self.group, op, result)

    def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        return self._apply(
            MembershipOp(kind="join", member=member, token=token, weight=weight, lease=lease)
        )

    def heartbeat(self, member: str, token: str, *, lease: float, acked: int) -> MembershipView:
        return self._apply(
            MembershipOp(kind="heartbeat", member=member, token=token, lease=lease, acked=acked)
        )

    def leave(self, member: str, token: str) -> MembershipView:
        return self._apply(MembershipOp(kind="leave", member=member, token=token))

    def view(self) -> MembershipView:
        return self._apply(MembershipOp(kind="view"))

    def close(self) -> None:
        pass


class _Broken(MembershipContract):
    lease = 30.0

    def __init__(self, state: type[GroupState]) -> None:
        self.state = state
        self.clock = ManualClock()
        self.groups: dict[str, _BrokenMembership] = {}

    def make_membership(self, group: str) -> Any:
        if group not in self.groups:
            self.groups[group] = _BrokenMembership(self.state(group), self.clock)
        return self.groups[group]

    def expire(self, seconds: float) -> None:
        self.clock.advance(seconds)


@pytest.mark.parametrize(
    ("state", "test", "message"),
    [
        (_NoBumpOnLeave, "test_a_leave_removes_at_once_and_bumps", r"leave\(b\): version"),
        (
            _HeartbeatIgnoresToken,
            "test_a_stale_heartbeat_changes_nothing",
            r"heartbeat\(a\) with a stale token: members\['a'\]\.acked: expected 1, got 2",
        ),
        (_NoExpiry, "test_an_expired_member_disappears_with_one_bump", "ran out: version"),
        (
            _UncappedAcked,
            "test_a_heartbeat_records_acked_and_moves_past_a_version_it_never_reached",
            r"acked=0\): kept: members\['a'\]\.acked: expected 2, got 0",
        ),
        (
            _ForgetfulHistory,
            "test_the_history_keeps_the_versions_in_play",
            "four versions: history",
        ),
        (_NoIncarnation, "test_a_join_adds_the_member_and_bumps_once", r"\.incarnation"),
        (
            _JoinStealsTheName,
            "test_a_live_name_with_another_token_conflicts",
            "expected a conflict",
        ),
    ],
)
def test_the_suite_catches_a_broken_store(state: type[GroupState], test: str, message: str) -> None:
    """A store that gets one rule wrong fails the check of that rule, saying what was wrong."""
    with pytest.raises(AssertionError, match=message):
        getattr(_Broken(state), test)()


def test_the_broken_harness_passes_over_the_reference() -> None:
    """The harness of the broken stores, over the reference GroupState, passes every check."""
    suite = _Broken(GroupState)
    checks = [name for name in dir(suite) if name.startswith("test_")]
    for name in checks:
        getattr(_Broken(GroupState), name)()
    assert 16 == len(checks)
