"""The conformance suite for :class:`~invresilience.typing.Membership` and its async twin.

Subclass :class:`~invresilience.contract.MembershipContract` (or
:class:`~invresilience.contract.AsyncMembershipContract`) in a test module under a name
pytest collects (``Test...``) and say how to make the store of a given group; the inherited
``test_*`` methods check every rule :class:`~invresilience.ShardAssignment` relies on: each
join, leave, lease expiry and weight change bumps the version exactly once, renewals and
heartbeats bump nothing, a live name cannot be taken by another incarnation (and each
member shows :func:`~invresilience._core.membership.incarnation_of` its token), stale tokens
change nothing, ``acked`` never goes back, a heartbeat acting on a version the store never
reached (it came back from an older copy) moves the version past it with a quiet period, the history
holds exactly the versions some live member may still act on, and a quiet period
(:attr:`~invresilience.typing.MembershipView.quiet_for`), if the store starts one, lasts at
most one lease.

``make_membership(group)`` (a coroutine in the async suite) is called with a fresh group
name for every check, and again, with the same name or another, when a check needs a
second store: make them all on one backend (the same file, server and prefix), so that two
stores of one group share its members and two groups share nothing.

Leases are kept on the store's clock. The suite grants leases of
:attr:`~invresilience.contract.MembershipContract.lease` seconds and lets them run out with
``expire(seconds)``, which by default sleeps for real (a server's clock cannot be moved):
keep ``lease`` short for a server (0.3 s by default: the suite then waits about 2 s in all),
and raise it for a store slower than a few milliseconds per call, since the suite relies on
``0.4 * lease`` of slack to tell "renewed" from "ran out". A store on a
:class:`~invresilience.testing.ManualClock` moves the clock instead, and can take a long lease::

    import pytest

    from invresilience.backends.memory import MemoryBackend, MemoryMembership
    from invresilience.backends.redis import RedisBackend, RedisMembership
    from invresilience.contract import MembershipContract
    from invresilience.testing import ManualClock


    class TestMemoryMembership(MembershipContract):
        lease = 30.0

        def make_membership(self, group: str) -> MemoryMembership:
            if not hasattr(self, "backend"):
                self.clock = ManualClock()
                self.backend = MemoryBackend(clock=self.clock)
            return self.backend.membership(group)

        def expire(self, seconds: float) -> None:
            self.clock.advance(seconds)


    class TestRedisMembership(MembershipContract):
        @pytest.fixture(autouse=True)
        def _server(self, redis_url: str):
            with RedisBackend(redis_url) as self.backend:
                yield

        def make_membership(self, group: str) -> RedisMembership:
            return self.backend.membership(group)  # closed with the backend

Every check is written once, as a coroutine over the async Protocol; a sync store is
driven through an adapter whose coroutines never suspend (its concurrency check uses real
threads), and each async test runs its own event loop with :func:`asyncio.run`. The suite
uses plain Python (no pytest import); a failed check raises :exc:`AssertionError` saying
what was expected.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import math
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from .._clock import SYSTEM_CLOCK
from .._core.membership import MembershipView, incarnation_of
from ..exceptions import ConfigurationError, MembershipConflictError
from .breaker import _expect, _run_now, _unique

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence

    from ..typing import AsyncMembership, Membership

__all__ = ["AsyncMembershipContract", "MembershipContract"]

#: How many members join at once in the concurrency check.
CONCURRENT = 8
#: Slack allowed on ``expires_in`` and ``retry_after`` above the lease (clock rounding).
ROUNDING = 1e-3


# -- the harness every check runs with ----------------------------------------------------------


class _Harness:
    """What a check gets: the store of a fresh group (async view), time, and more stores."""

    __slots__ = ("_expire", "_open", "group", "join_all", "lease", "membership")

    def __init__(
        self,
        membership: AsyncMembership,
        group: str,
        *,
        lease: float,
        expire: Callable[[float], Awaitable[None]],
        open_membership: Callable[[str], Awaitable[AsyncMembership]],
        join_all: Callable[
            [AsyncMembership, Sequence[tuple[str, str]], float], Awaitable[list[MembershipView]]
        ],
    ) -> None:
        self.membership = membership
        self.group = group
        self.lease = lease
        self._expire = expire
        self._open = open_membership
        self.join_all = join_all

    async def wait(self, leases: float) -> None:
        """Let *leases* times the lease pass on the store's clock."""
        await self._expire(leases * self.lease)

    async def other(self, group: str | None = None) -> AsyncMembership:
        """Another store on the same backend: of this group, or of *group*."""
        return await self._open(self.group if group is None else group)

    async def join(
        self, member: str, *, weight: float = 1.0, store: AsyncMembership | None = None
    ) -> tuple[str, MembershipView]:
        """Join *member* with a fresh token; the token and the view returned."""
        token = _token()
        view = await (store or self.membership).join(member, token, weight=weight, lease=self.lease)
        _expect(True, member in view.members, f"the view join({member!r}) returned: has it")
        return token, view

    async def heartbeat(self, member: str, token: str, acked: int) -> MembershipView:
        """Heartbeat *member* with the suite's lease."""
        return await self.membership.heartbeat(member, token, lease=self.lease, acked=acked)


def _token() -> str:
    return uuid.uuid4().hex


def _names(view: MembershipView) -> list[str]:
    return sorted(view.members)


def _expect_view(
    view: MembershipView,
    version: int,
    members: Mapping[str, tuple[float, int]],
    what: str,
    *,
    history: Mapping[int, Mapping[str, float]] | None = None,
    lease: float | None = None,
) -> None:
    """*view* is at *version* with exactly *members* (name to weight and acked)."""
    _expect(version, view.version, f"{what}: version")
    _expect(sorted(members), _names(view), f"{what}: members")
    for name, (weight, acked) in members.items():
        member = view.members[name]
        _expect(name, member.name, f"{what}: members[{name!r}].name")
        _expect(weight, member.weight, f"{what}: members[{name!r}].weight")
        _expect(acked, member.acked, f"{what}: members[{name!r}].acked")
        if lease is not None:
            _expect_left(member.expires_in, lease, f"{what}: members[{name!r}].expires_in")
    if history is not None:
        actual = {version: dict(weights) for version, weights in view.history.items()}
        _expect(dict(history), actual, f"{what}: history")


def _expect_incarnation(view: MembershipView, member: str, token: str, what: str) -> None:
    """*member* is in *view* as the incarnation that joined with *token*."""
    _expect(
        incarnation_of(token),
        view.members[member].incarnation if member in view.members else None,
        f"{what}: members[{member!r}].incarnation (incarnation_of its token)",
    )


def _expect_left(left: object, lease: float, what: str) -> None:
    """*left* is a lease's remaining seconds: more than 0, at most *lease*."""
    ok = isinstance(left, (int, float)) and math.isfinite(left) and 0 < left <= lease + ROUNDING
    if not ok:
        raise AssertionError(f"{what}: expected seconds in (0, {lease!r}], got {left!r}")


def _expect_quiet(view: MembershipView, lease: float, what: str) -> None:
    """*view*'s quiet period is at most one lease (a store that can lose its data starts
    a group it finds empty with one; the others never have one)."""
    quiet: object = view.quiet_for  # a user's store may put anything there
    if not (isinstance(quiet, (int, float)) and 0 <= quiet <= lease + ROUNDING):
        raise AssertionError(f"{what}: expected seconds in [0, {lease!r}], got {quiet!r}")


async def _raises_config(awaitable: Awaitable[Any], what: str) -> None:
    try:
        await awaitable
    except ConfigurationError:
        pass
    else:
        raise AssertionError(f"{what}: expected ConfigurationError, nothing was raised")


# -- the checks ---------------------------------------------------------------------------------


async def _an_empty_group_is_version_zero(h: _Harness) -> None:
    _expect(h.group, h.membership.group, "membership.group")
    view = await h.membership.view()
    _expect(MembershipView(group=h.group, version=0), view, "view() of a fresh group")
    _expect(view, await h.membership.view(), "view() again")


async def _a_join_adds_the_member_and_bumps_once(h: _Harness) -> None:
    token, view = await h.join("a", weight=1.5)
    _expect(h.group, view.group, "join: group")
    # A new member acts on the view its join returned: acked is that version.
    _expect_view(view, 1, {"a": (1.5, 1)}, "join(a)", history={}, lease=h.lease)
    _expect_quiet(view, h.lease, "join(a): quiet_for")
    _expect_incarnation(view, "a", token, "join(a)")
    _expect_view(await h.membership.view(), 1, {"a": (1.5, 1)}, "view() after join(a)")


async def _a_second_member_bumps_once(h: _Harness) -> None:
    await h.join("a")
    _, view = await h.join("b", weight=2.0)
    # a still acts on version 1, so its weights are kept.
    expected = {"a": (1.0, 1), "b": (2.0, 2)}
    _expect_view(view, 2, expected, "join(b) after a", history={1: {"a": 1.0}}, lease=h.lease)
    _expect_view(await h.membership.view(), 2, expected, "view() after join(b)")


async def _a_join_with_the_same_token_renews_without_a_bump(h: _Harness) -> None:
    token, _ = await h.join("a")
    await h.wait(0.6)
    view = await h.membership.join("a", token, weight=1.0, lease=h.lease)
    _expect_view(view, 1, {"a": (1.0, 1)}, "join(a) again with its token", lease=h.lease)
    await h.wait(0.6)  # 1.2 leases after the first join, 0.6 after the renewal
    view = await h.membership.view()
    _expect_view(view, 1, {"a": (1.0, 1)}, "a lease renewed by join")
    _expect(0.0, view.quiet_for, "quiet_for a lease after the first join")


async def _a_weight_change_bumps_once(h: _Harness) -> None:
    token, _ = await h.join("a")
    view = await h.membership.join("a", token, weight=3.0, lease=h.lease)
    _expect_view(view, 2, {"a": (3.0, 1)}, "join(a) with weight 3", history={1: {"a": 1.0}})
    view = await h.membership.join("a", token, weight=3.0, lease=h.lease)
    _expect_view(view, 2, {"a": (3.0, 1)}, "join(a) with weight 3 again")


async def _a_live_name_with_another_token_conflicts(h: _Harness) -> None:
    token, _ = await h.join("a")
    try:
        await h.membership.join("a", _token(), weight=1.0, lease=h.lease)
    except MembershipConflictError as exc:
        _expect(h.group, exc.group, "MembershipConflictError.group")
        _expect("a", exc.member, "MembershipConflictError.member")
        _expect_left(exc.retry_after, h.lease, "MembershipConflictError.retry_after")
    else:
        raise AssertionError("join(a) with another token while a is live: expected a conflict")
    view = await h.heartbeat("a", token, 1)
    _expect_view(view, 1, {"a": (1.0, 1)}, "the first a, after")
    _expect_incarnation(view, "a", token, "the first a, after")
    await h.wait(1.1)
    # Once the lease has run out the name is free again: the drop and the join both bump.
    newer, view = await h.join("a")
    _expect_view(view, 3, {"a": (1.0, 3)}, "join(a) with another token after the lease")
    _expect_incarnation(view, "a", newer, "join(a) with another token after the lease")


async def _a_heartbeat_records_acked_and_moves_past_a_version_it_never_reached(
    h: _Harness,
) -> None:
    token, _ = await h.join("a")
    await h.join("b")
    view = await h.heartbeat("a", token, 2)
    _expect_view(view, 2, {"a": (1.0, 2), "b": (1.0, 2)}, "heartbeat(a, acked=2)", history={})
    view = await h.heartbeat("a", token, 0)
    _expect_view(view, 2, {"a": (1.0, 2), "b": (1.0, 2)}, "heartbeat(a, acked=0): kept")
    # A member acting on version 99 of a group at version 2: the store came back from an
    # older copy. It moves its version past 99 and is quiet for a lease.
    view = await h.heartbeat("a", token, 99)
    expected = {"a": (1.0, 99), "b": (1.0, 2)}
    _expect_view(view, 100, expected, "heartbeat(a, acked=99) at version 2: rolled back")
    _expect_quiet(view, h.lease, "heartbeat(a, acked=99): quiet_for")
    if not view.quiet_for > 0:
        raise AssertionError("heartbeat(a, acked=99): expected a quiet period, got none")


async def _a_heartbeat_renews_the_lease(h: _Harness) -> None:
    token, _ = await h.join("a")
    await h.wait(0.6)
    view = await h.heartbeat("a", token, 1)
    _expect_view(view, 1, {"a": (1.0, 1)}, "heartbeat(a)", lease=h.lease)
    await h.wait(0.6)  # 1.2 leases after the join, 0.6 after the heartbeat
    _expect_view(await h.membership.view(), 1, {"a": (1.0, 1)}, "a lease renewed by heartbeat")


async def _a_stale_heartbeat_changes_nothing(h: _Harness) -> None:
    await h.join("a")
    b, _ = await h.join("b")
    view = await h.heartbeat("a", _token(), 2)
    expected = {"a": (1.0, 1), "b": (1.0, 2)}
    _expect_view(view, 2, expected, "heartbeat(a) with a stale token")
    view = await h.heartbeat("ghost", _token(), 0)
    _expect_view(view, 2, expected, "heartbeat of a member that never joined")
    await h.wait(0.6)
    await h.heartbeat("b", b, 2)
    await h.heartbeat("a", _token(), 2)
    await h.wait(0.6)  # a: 1.2 leases since its join
    view = await h.membership.view()
    _expect_view(view, 3, {"b": (1.0, 2)}, "a stale heartbeat renewed nothing")


async def _an_expired_member_disappears_with_one_bump(h: _Harness) -> None:
    a, _ = await h.join("a")
    b, _ = await h.join("b", weight=2.0)
    await h.wait(0.6)
    await h.heartbeat("b", b, 2)
    await h.wait(0.6)  # a: 1.2 leases since its join; b: 0.6 since its heartbeat
    # b may still act on version 2, where a was a member.
    history = {2: {"a": 1.0, "b": 2.0}}
    view = await h.membership.view()
    _expect_view(view, 3, {"b": (2.0, 2)}, "view() after a's lease ran out", history=history)
    _expect_view(await h.membership.view(), 3, {"b": (2.0, 2)}, "view() read again")
    view = await h.heartbeat("a", a, 2)
    _expect_view(view, 3, {"b": (2.0, 2)}, "heartbeat(a) after its lease ran out")
    view = await h.membership.join("a", a, weight=1.0, lease=h.lease)
    _expect_view(view, 4, {"a": (1.0, 4), "b": (2.0, 2)}, "join(a) again after its lease")


async def _a_leave_removes_at_once_and_bumps(h: _Harness) -> None:
    a, _ = await h.join("a")
    b, _ = await h.join("b")
    view = await h.membership.leave("b", b)
    history = {1: {"a": 1.0}, 2: {"a": 1.0, "b": 1.0}}
    _expect_view(view, 3, {"a": (1.0, 1)}, "leave(b)", history=history)
    _expect_view(await h.membership.leave("b", b), 3, {"a": (1.0, 1)}, "leave(b) again")
    _expect_view(await h.membership.leave("ghost", _token()), 3, {"a": (1.0, 1)}, "leave(ghost)")
    view = await h.membership.leave("a", a)
    _expect_view(view, 4, {}, "leave(a): nobody left", history={})
    _expect_view(await h.membership.view(), 4, {}, "view() of a group everyone left")


async def _a_stale_leave_changes_nothing(h: _Harness) -> None:
    a, _ = await h.join("a")
    view = await h.membership.leave("a", _token())
    _expect_view(view, 1, {"a": (1.0, 1)}, "leave(a) with a stale token")
    _expect_incarnation(view, "a", a, "leave(a) with a stale token")
    _expect_view(await h.heartbeat("a", a, 1), 1, {"a": (1.0, 1)}, "a, still live")


async def _the_history_keeps_the_versions_in_play(h: _Harness) -> None:
    a, _ = await h.join("a")
    b, _ = await h.join("b", weight=2.0)
    c, _ = await h.join("c", weight=0.5)
    view = await h.membership.join("c", c, weight=4.0, lease=h.lease)
    v1, v2, v3 = {"a": 1.0}, {"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0, "c": 0.5}
    members = {"a": (1.0, 1), "b": (2.0, 2), "c": (4.0, 3)}
    _expect_view(view, 4, members, "four versions", history={1: v1, 2: v2, 3: v3})
    _expect({"a": 1.0, "b": 2.0, "c": 4.0}, dict(view.weights_at(4) or {}), "weights_at(4)")
    view = await h.heartbeat("a", a, 4)
    members["a"] = (1.0, 4)
    _expect_view(view, 4, members, "a acked 4: b still on 2", history={2: v2, 3: v3})
    view = await h.heartbeat("b", b, 4)
    members["b"] = (2.0, 4)
    _expect_view(view, 4, members, "b acked 4: c still on 3", history={3: v3})
    view = await h.heartbeat("c", c, 4)
    members["c"] = (4.0, 4)
    _expect_view(view, 4, members, "all acked 4", history={})
    _expect(True, view.settled, "all acked 4: settled")


async def _stores_of_one_group_share_it(h: _Harness) -> None:
    second = await h.other()
    a, _ = await h.join("a")
    await h.join("b", store=second)
    both = {"a": (1.0, 1), "b": (1.0, 2)}
    _expect_view(await h.membership.view(), 2, both, "the first store, b joined by the second")
    view = await second.leave("a", a)
    _expect_view(view, 3, {"b": (1.0, 2)}, "the second store, after it removed a")
    _expect_view(await h.membership.view(), 3, {"b": (1.0, 2)}, "the first store, after")
    elsewhere = _unique("group")
    other = await h.other(elsewhere)
    _expect(elsewhere, other.group, "a store of another group: group")
    _expect_view(await other.view(), 0, {}, "another group on the same backend")
    _, view = await h.join("b", store=other)
    _expect_view(view, 1, {"b": (1.0, 1)}, "b joined another group under another token")
    _expect_view(await h.membership.view(), 3, {"b": (1.0, 2)}, "the first group, after")


async def _concurrent_joins_get_distinct_versions(h: _Harness) -> None:
    joins = [(f"m{n}", _token()) for n in range(CONCURRENT)]
    views = await h.join_all(h.membership, joins, h.lease)
    for (name, _), view in zip(joins, views, strict=True):
        _expect(True, name in view.members, f"the view join({name!r}) returned: has it")
        _expect(view.version, view.members[name].acked, f"join({name!r}): acked")
    versions = sorted(view.version for view in views)
    _expect(list(range(1, CONCURRENT + 1)), versions, "the versions concurrent joins returned")
    view = await h.membership.view()
    _expect(CONCURRENT, view.version, "view() after concurrent joins: version")
    _expect(sorted(name for name, _ in joins), _names(view), "view() after concurrent joins")


async def _bad_arguments_are_refused(h: _Harness) -> None:
    m, lease = h.membership, h.lease
    joins: list[tuple[str, Callable[[], Awaitable[MembershipView]]]] = [
        ("join with an empty member", lambda: m.join("", _token(), weight=1.0, lease=lease)),
        ("join with an empty token", lambda: m.join("a", "", weight=1.0, lease=lease)),
        ("join with lease 0", lambda: m.join("a", _token(), weight=1.0, lease=0.0)),
        ("join with lease -1", lambda: m.join("a", _token(), weight=1.0, lease=-1.0)),
        ("join with lease nan", lambda: m.join("a", _token(), weight=1.0, lease=math.nan)),
        ("join with lease inf", lambda: m.join("a", _token(), weight=1.0, lease=math.inf)),
        ("join with weight 0", lambda: m.join("a", _token(), weight=0.0, lease=lease)),
        ("join with weight -1", lambda: m.join("a", _token(), weight=-1.0, lease=lease)),
        ("join with weight nan", lambda: m.join("a", _token(), weight=math.nan, lease=lease)),
        ("leave with an empty member", lambda: m.leave("", _token())),
    ]
    for what, call in joins:
        await _raises_config(call(), what)
    _expect_view(await m.view(), 0, {}, "view() after refused joins")
    a, _ = await h.join("a")
    beats: list[tuple[str, Callable[[], Awaitable[MembershipView]]]] = [
        ("heartbeat with acked -1", lambda: m.heartbeat("a", a, lease=lease, acked=-1)),
        ("heartbeat with lease 0", lambda: m.heartbeat("a", a, lease=0.0, acked=1)),
        ("heartbeat with lease -1", lambda: m.heartbeat("a", a, lease=-1.0, acked=1)),
        ("heartbeat with an empty member", lambda: m.heartbeat("", a, lease=lease, acked=1)),
    ]
    for what, beat in beats:
        await _raises_config(beat(), what)
    _expect_view(await m.view(), 1, {"a": (1.0, 1)}, "view() after refused heartbeats")


if TYPE_CHECKING:
    _Check = Callable[[_Harness], Coroutine[Any, Any, None]]


class _MembershipChecks:
    """The ``test_*`` methods, written once for both suites."""

    def _check(self, check: _Check) -> None:
        raise NotImplementedError

    def test_an_empty_group_is_version_zero(self) -> None:
        """A fresh group is at version 0 with no members and no history."""
        self._check(_an_empty_group_is_version_zero)

    def test_a_join_adds_the_member_and_bumps_once(self) -> None:
        """join() returns a view with the member (acked at that version) and bumps the version once."""
        self._check(_a_join_adds_the_member_and_bumps_once)

    def test_a_second_member_bumps_once(self) -> None:
        """A second member bumps the version once; the first one's version stays in the history."""
        self._check(_a_second_member_bumps_once)

    def test_a_join_with_the_same_token_renews_without_a_bump(self) -> None:
        """join() again with the member's token renews its lease and bumps nothing."""
        self._check(_a_join_with_the_same_token_renews_without_a_bump)

    def test_a_weight_change_bumps_once(self) -> None:
        """join() with the member's token and a new weight bumps the version once."""
        self._check(_a_weight_change_bumps_once)

    def test_a_live_name_with_another_token_conflicts(self) -> None:
        """join() under a live name with another token raises MembershipConflictError."""
        self._check(_a_live_name_with_another_token_conflicts)

    def test_a_heartbeat_records_acked_and_moves_past_a_version_it_never_reached(self) -> None:
        """heartbeat() records acked, never going back; an acked beyond the version means
        the store went back to an older copy: the version moves past it, with a quiet period."""
        self._check(_a_heartbeat_records_acked_and_moves_past_a_version_it_never_reached)

    def test_a_heartbeat_renews_the_lease(self) -> None:
        """heartbeat() renews the member's lease and bumps nothing."""
        self._check(_a_heartbeat_renews_the_lease)

    def test_a_stale_heartbeat_changes_nothing(self) -> None:
        """heartbeat() with a stale token or an unknown name neither records acked nor renews."""
        self._check(_a_stale_heartbeat_changes_nothing)

    def test_an_expired_member_disappears_with_one_bump(self) -> None:
        """A member whose lease ran out is dropped with one bump and not revived by a heartbeat."""
        self._check(_an_expired_member_disappears_with_one_bump)

    def test_a_leave_removes_at_once_and_bumps(self) -> None:
        """leave() removes the member at once with one bump; leaving again changes nothing."""
        self._check(_a_leave_removes_at_once_and_bumps)

    def test_a_stale_leave_changes_nothing(self) -> None:
        """leave() with a stale token leaves the member live."""
        self._check(_a_stale_leave_changes_nothing)

    def test_the_history_keeps_the_versions_in_play(self) -> None:
        """The history holds the weights of exactly the versions from the oldest acked on."""
        self._check(_the_history_keeps_the_versions_in_play)

    def test_stores_of_one_group_share_it(self) -> None:
        """Two stores of one group see each other's changes; another group shares nothing."""
        self._check(_stores_of_one_group_share_it)

    def test_concurrent_joins_get_distinct_versions(self) -> None:
        """Eight concurrent joins get eight distinct versions and all become members."""
        self._check(_concurrent_joins_get_distinct_versions)

    def test_bad_arguments_are_refused(self) -> None:
        """Empty names or tokens, bad leases and weights, negative acked raise ConfigurationError."""
        self._check(_bad_arguments_are_refused)


class _SyncMembershipView:
    """A sync store seen through the async Protocol; its coroutines never suspend."""

    __slots__ = ("sync",)

    def __init__(self, membership: Membership) -> None:
        self.sync = membership

    @property
    def group(self) -> str:
        return self.sync.group

    async def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        return self.sync.join(member, token, weight=weight, lease=lease)

    async def heartbeat(
        self, member: str, token: str, *, lease: float, acked: int
    ) -> MembershipView:
        return self.sync.heartbeat(member, token, lease=lease, acked=acked)

    async def leave(self, member: str, token: str) -> MembershipView:
        return self.sync.leave(member, token)

    async def view(self) -> MembershipView:
        return self.sync.view()

    async def close(self) -> None:
        self.sync.close()


async def _join_in_threads(
    membership: AsyncMembership, joins: Sequence[tuple[str, str]], lease: float
) -> list[MembershipView]:
    """Join from as many threads as *joins*, released together."""
    if not isinstance(membership, _SyncMembershipView):
        raise TypeError("the sync suite joins concurrently through its own stores only")
    sync = membership.sync
    barrier = threading.Barrier(len(joins))

    def join(member_token: tuple[str, str]) -> MembershipView:
        barrier.wait(timeout=30.0)
        return sync.join(*member_token, weight=1.0, lease=lease)

    with ThreadPoolExecutor(max_workers=len(joins), thread_name_prefix="membership") as pool:
        return list(pool.map(join, joins))


async def _join_gathered(
    membership: AsyncMembership, joins: Sequence[tuple[str, str]], lease: float
) -> list[MembershipView]:
    """Join as concurrent tasks of one loop."""
    return list(
        await asyncio.gather(
            *(membership.join(name, token, weight=1.0, lease=lease) for name, token in joins)
        )
    )


class MembershipContract(_MembershipChecks):
    """The conformance suite for a :class:`~invresilience.typing.Membership`.

    Subclass it as ``Test...`` and implement :meth:`make_membership`; pytest runs the
    inherited ``test_*`` methods, each on a fresh group. Concurrency is checked with real
    threads sharing one store.

    Attributes:
        lease: The lease, in seconds, the suite's members join with. The suite lets up to
            1.2 leases pass in one check, and needs 0.4 of a lease of slack between a
            renewal and a check that it held; 0.3 by default, for a store on a server's
            clock. Take a long one (30) with a :class:`~invresilience.testing.ManualClock`.

    .. versionadded:: 0.1.0
    """

    lease: ClassVar[float] = 0.3

    def make_membership(self, group: str) -> Membership:
        """The store of *group*; every store of one test must share one backend.

        Args:
            group: A group name (``contract-group-`` and 32 hex digits); fresh for each
                check, and again the same name when a check needs a second store of it.

        Returns:
            The store, its ``group`` equal to *group*.

        .. versionadded:: 0.1.0
        """
        raise NotImplementedError

    def close_membership(self, membership: Membership) -> None:
        """Release *membership* after its test; calls ``membership.close()`` by default.

        Args:
            membership: A store :meth:`make_membership` returned.

        .. versionadded:: 0.1.0
        """
        membership.close()

    def expire(self, seconds: float) -> None:
        """Let at least *seconds* pass on the store's clock; by default sleeps (plus 10 ms).

        Move a :class:`~invresilience.testing.ManualClock` instead when the store keeps
        one.

        Args:
            seconds: The time to let pass.

        .. versionadded:: 0.1.0
        """
        SYSTEM_CLOCK.sleep(seconds + 0.01)

    def _check(self, check: _Check) -> None:
        opened: list[Membership] = []

        async def open_membership(group: str) -> AsyncMembership:
            membership = self.make_membership(group)
            opened.append(membership)
            return _SyncMembershipView(membership)

        async def expire(seconds: float) -> None:
            self.expire(seconds)

        try:
            group = _unique("group")
            harness = _Harness(
                _run_now(open_membership(group)),
                group,
                lease=self.lease,
                expire=expire,
                open_membership=open_membership,
                join_all=_join_in_threads,
            )
            _run_now(check(harness))
        finally:
            for membership in reversed(opened):
                self.close_membership(membership)


class AsyncMembershipContract(_MembershipChecks):
    """The conformance suite for an :class:`~invresilience.typing.AsyncMembership`.

    Like :class:`MembershipContract`, with coroutine hooks; each test runs in its own
    event loop (``asyncio.run``), inside which :meth:`make_membership` is awaited.
    Concurrency is checked with tasks of that loop sharing one store.

    Attributes:
        lease: See :attr:`MembershipContract.lease`.

    .. versionadded:: 0.1.0
    """

    lease: ClassVar[float] = 0.3

    async def make_membership(self, group: str) -> AsyncMembership:
        """The store of *group*, made inside the test's event loop; one backend per test.

        Args:
            group: A group name; see :meth:`MembershipContract.make_membership`.

        Returns:
            The store, its ``group`` equal to *group*.

        .. versionadded:: 0.1.0
        """
        raise NotImplementedError

    async def close_membership(self, membership: AsyncMembership) -> None:
        """Release *membership* after its test; awaits ``membership.close()`` by default.

        Args:
            membership: A store :meth:`make_membership` returned.

        .. versionadded:: 0.1.0
        """
        await membership.close()

    async def expire(self, seconds: float) -> None:
        """Let at least *seconds* pass on the store's clock; by default sleeps (plus 10 ms).

        Args:
            seconds: The time to let pass.

        .. versionadded:: 0.1.0
        """
        await asyncio.sleep(seconds + 0.01)

    def _check(self, check: _Check) -> None:
        async def main() -> None:
            opened: list[AsyncMembership] = []

            async def open_membership(group: str) -> AsyncMembership:
                membership = await self.make_membership(group)
                opened.append(membership)
                return membership

            try:
                group = _unique("group")
                harness = _Harness(
                    await open_membership(group),
                    group,
                    lease=self.lease,
                    expire=self.expire,
                    open_membership=open_membership,
                    join_all=_join_gathered,
                )
                await check(harness)
            finally:
                for membership in reversed(opened):
                    await self.close_membership(membership)

        asyncio.run(main())
