"""Membership and ownership: group state, views, the handoff rule, the stores and the assignments.

Leases run on a :class:`~invresilience.testing.ManualClock`. The only real waiting is for the
heartbeat thread of ``with ShardAssignment(...)``, which beats on the wall clock every few
milliseconds: those tests wait on a condition, with a timeout, for the beats they expect.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

import pytest

import invresilience._sharding as sharding
from invresilience import (
    AsyncShardAssignment,
    AsyncStaticMembership,
    LoggingListener,
    MembershipEvent,
    MembershipView,
    RendezvousRouter,
    ShardAssignment,
    SlotRouter,
    StaticMembership,
)
from invresilience._core.membership import (
    GroupState,
    Member,
    MembershipChange,
    MembershipOp,
    changes_between,
    incarnation_of,
    may_own,
)
from invresilience.backends.memory import AsyncMemoryMembership, MemoryBackend, MemoryMembership
from invresilience.exceptions import (
    ConfigurationError,
    MembershipConflictError,
    NoShardOwnerError,
)
from invresilience.testing import ManualClock, testing

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable, Mapping

    from invresilience.typing import Router

KEYS = [f"sku-{i}" for i in range(200)]
LEASE = 10.0


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (the project does not use pytest-asyncio)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def membership_events(events: Iterable[object]) -> list[tuple[str, str, int]]:
    """The (kind, member, version) of each membership event, in order."""
    return [(e.kind, e.member, e.version) for e in events if isinstance(e, MembershipEvent)]


def owned(assignment: ShardAssignment | AsyncShardAssignment) -> set[str]:
    """The keys *assignment* owns now."""
    return {key for key in KEYS if assignment.owns(key)}


# -- GroupState ------------------------------------------------------------------------------


def test_first_join_is_version_one() -> None:
    """A join bumps the version once and shows the member with its lease and incarnation."""
    state = GroupState("g")
    view = state.join("a", "ta", weight=2, lease=LEASE, now=5.0)
    assert isinstance(view, MembershipView)
    assert 1 == view.version == state.version
    assert {
        "a": Member(
            name="a", weight=2.0, acked=1, expires_in=LEASE, incarnation=incarnation_of("ta")
        )
    } == view.members
    assert {} == view.history
    assert "g" == view.group
    assert 0.0 == view.quiet_for


def test_each_join_bumps_once_and_keeps_history_for_unacked_members() -> None:
    """A second join bumps once; the first member has not acked it, so version 1 stays."""
    state = GroupState("g")
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    view = state.join("b", "tb", weight=2, lease=LEASE, now=1.0)
    assert isinstance(view, MembershipView)
    assert 2 == view.version
    assert {"a": 1, "b": 2} == {n: m.acked for n, m in view.members.items()}
    assert {1: {"a": 1.0}} == view.history
    assert {"a": 1.0, "b": 2.0} == view.weights


def test_heartbeat_renews_and_acks_without_a_bump() -> None:
    """A heartbeat renews the lease and records acked; the version does not move."""
    state = GroupState("g")
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    state.join("b", "tb", weight=1, lease=LEASE, now=0.0)
    view = state.heartbeat("a", "ta", lease=LEASE, acked=2, now=4.0)
    assert 2 == view.version
    assert (
        Member(name="a", acked=2, expires_in=LEASE, incarnation=incarnation_of("ta"))
        == (view.members["a"])
    )
    assert 6.0 == view.members["b"].expires_in
    assert {} == view.history


def test_acked_never_goes_back_and_beyond_the_version_means_the_store_went_back() -> None:
    """A lower acked changes nothing; one beyond the version moves it past, quiet for a lease."""
    state = GroupState("g")
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    state.join("b", "tb", weight=1, lease=LEASE, now=0.0)
    assert 2 == state.heartbeat("a", "ta", lease=LEASE, acked=2, now=0.0).members["a"].acked
    assert 2 == state.heartbeat("a", "ta", lease=LEASE, acked=0, now=0.0).members["a"].acked
    view = state.heartbeat("a", "ta", lease=LEASE, acked=99, now=1.0)
    assert (100, 99, LEASE) == (view.version, view.members["a"].acked, view.quiet_for)


def test_stale_token_heartbeat_and_leave_change_nothing() -> None:
    """Another incarnation's heartbeat renews nothing and its leave removes nothing."""
    state = GroupState("g")
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    before = state.dumps()
    view = state.heartbeat("a", "stale", lease=LEASE, acked=1, now=3.0)
    assert 7.0 == view.members["a"].expires_in
    view = state.leave("a", "stale", now=3.0)
    assert ["a"] == list(view.members)
    assert before == state.dumps()


def test_heartbeat_of_an_unknown_member_shows_a_view_without_it() -> None:
    """A heartbeat from a member the store does not know returns the view, unchanged."""
    state = GroupState("g")
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    view = state.heartbeat("ghost", "tg", lease=LEASE, acked=0, now=0.0)
    assert ["a"] == list(view.members)
    assert 1 == view.version


def test_leave_bumps_once() -> None:
    """A leave removes the member and bumps once; leaving again changes nothing."""
    state = GroupState("g")
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    state.join("b", "tb", weight=1, lease=LEASE, now=0.0)
    view = state.leave("a", "ta", now=1.0)
    assert 3 == view.version
    assert ["b"] == list(view.members)
    assert 3 == state.leave("a", "ta", now=1.0).version


def test_expiry_removes_at_the_deadline_with_one_bump() -> None:
    """Members whose lease ends at or before now go, all in one version bump."""
    state = GroupState("g")
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    state.join("b", "tb", weight=1, lease=LEASE, now=0.0)
    state.join("c", "tc", weight=1, lease=LEASE, now=5.0)
    assert {"a", "b", "c"} == set(state.view(9.75).members)
    view = state.view(10.0)
    assert ["c"] == list(view.members)
    assert 4 == view.version
    assert 4 == state.view(11.0).version
    assert 5 == state.view(15.0).version
    assert {} == state.view(15.0).members


def test_rejoin_with_the_same_token_renews_without_a_bump() -> None:
    """A join under the member's own token renews its lease and keeps the version."""
    state = GroupState("g")
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    view = state.join("a", "ta", weight=1, lease=LEASE, now=6.0)
    assert isinstance(view, MembershipView)
    assert 1 == view.version
    assert LEASE == view.members["a"].expires_in


def test_rejoin_with_another_weight_bumps_once() -> None:
    """A join under the same token with a new weight is a weight change: one bump."""
    state = GroupState("g")
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    view = state.join("a", "ta", weight=3, lease=LEASE, now=1.0)
    assert isinstance(view, MembershipView)
    assert 2 == view.version
    assert {"a": 3.0} == view.weights
    assert isinstance(view.weights["a"], float)
    assert 1 == view.members["a"].acked
    assert {1: {"a": 1.0}} == view.history


def test_join_clash_returns_the_lease_left() -> None:
    """A join under a live name with another token returns the other's lease left."""
    state = GroupState("g")
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    assert 6.5 == state.join("a", "other", weight=1, lease=LEASE, now=3.5)
    assert 1 == state.version
    assert isinstance(state.join("a", "other", weight=1, lease=LEASE, now=10.0), MembershipView)


def test_history_is_trimmed_to_the_oldest_acked() -> None:
    """The history keeps exactly the versions from the oldest acked up to the current one."""
    state = GroupState("g")
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    state.join("b", "tb", weight=1, lease=LEASE, now=0.0)
    state.join("c", "tc", weight=1, lease=LEASE, now=0.0)
    state.join("d", "td", weight=1, lease=LEASE, now=0.0)
    assert [1, 2, 3] == sorted(state.view(0.0).history)
    state.heartbeat("a", "ta", lease=LEASE, acked=3, now=0.0)
    assert [2, 3] == sorted(state.view(0.0).history)
    assert {"a": 1.0, "b": 1.0} == state.view(0.0).history[2]
    state.heartbeat("b", "tb", lease=LEASE, acked=4, now=0.0)
    state.heartbeat("c", "tc", lease=LEASE, acked=4, now=0.0)
    assert [3] == sorted(state.view(0.0).history)
    state.leave("a", "ta", now=0.0)
    assert [4] == sorted(state.view(0.0).history)
    for name in "bcd":
        state.heartbeat(name, f"t{name}", lease=LEASE, acked=5, now=0.0)
    assert {} == state.view(0.0).history


def test_apply_runs_each_kind() -> None:
    """apply() dispatches join, heartbeat, leave and view."""
    state = GroupState("g")
    joined = state.apply(MembershipOp(kind="join", member="a", token="t", lease=LEASE), 0.0)
    assert isinstance(joined, MembershipView)
    assert 1 == joined.version
    beat = state.apply(
        MembershipOp(kind="heartbeat", member="a", token="t", lease=LEASE, acked=1), 2.0
    )
    assert isinstance(beat, MembershipView)
    assert LEASE == beat.members["a"].expires_in
    assert 3.0 == state.join("a", "u", weight=1, lease=LEASE, now=9.0)
    clash = state.apply(MembershipOp(kind="join", member="a", token="u", lease=LEASE), 9.0)
    assert 3.0 == clash
    seen = state.apply(MembershipOp(kind="view"), 3.0)
    assert isinstance(seen, MembershipView)
    assert ["a"] == list(seen.members)
    left = state.apply(MembershipOp(kind="leave", member="a", token="t"), 3.0)
    assert isinstance(left, MembershipView)
    assert 2 == left.version
    assert {} == left.members


def test_dumps_and_loads_round_trip() -> None:
    """A loaded state dumps the same text and shows the same view, from str or bytes."""
    state = GroupState("g")
    state.join("a", "ta", weight=1.5, lease=LEASE, now=0.0)
    state.join("b", "tb", weight=1, lease=LEASE, now=1.0)
    state.heartbeat("b", "tb", lease=LEASE, acked=2, now=2.0)
    text = state.dumps()
    for loaded in (GroupState.loads("g", text), GroupState.loads("g", text.encode())):
        assert text == loaded.dumps()
        assert state.view(3.0) == loaded.view(3.0)
        assert 2 == loaded.version


def test_loads_none_is_a_fresh_state() -> None:
    """No stored document means an empty group at version 0."""
    state = GroupState.loads("g", None)
    assert MembershipView(group="g", version=0) == state.view(0.0)
    assert GroupState("g").dumps() == state.dumps()


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "null",
        "[]",
        "{}",
        '{"version": "x", "members": {}, "history": {}}',
        '{"version": 1, "members": {"a": [1.0]}, "history": {}}',
        '{"version": 1, "members": [], "history": {}}',
        '{"version": 1, "members": {}, "history": {"one": {}}}',
        '{"version": 1, "members": {}, "history": {"1": {"a": "heavy"}}}',
        '{"version": 1, "members": {}, "history": {}, "quiet_until": "soon"}',
    ],
)
def test_loads_malformed_text_raises_value_error(text: str) -> None:
    """Text that is not a membership state raises ValueError naming the group."""
    with pytest.raises(ValueError, match="membership state of group 'g' is malformed"):
        GroupState.loads("g", text)


def test_view_drops_history_newer_than_the_version() -> None:
    """History entries above the version (a hand-edited document) are dropped on read."""
    text = (
        '{"version": 2, "members": {"a": [1.0, 1, 10.0, "t"]},'
        ' "history": {"1": {"a": 1.0}, "2": {"a": 1.0}, "7": {"z": 1.0}}}'
    )
    state = GroupState.loads("g", text)
    assert {1: {"a": 1.0}} == state.view(0.0).history
    assert "7" not in state.dumps()


def test_guarded_fresh_state_is_quiet_for_the_first_lease() -> None:
    """A guarded state that starts empty is quiet for one lease from its first grant."""
    state = GroupState("g", guarded=True)
    assert 0.0 == state.view(0.0).quiet_for
    view = state.join("a", "ta", weight=1, lease=LEASE, now=5.0)
    assert isinstance(view, MembershipView)
    assert LEASE == view.quiet_for
    state.join("b", "tb", weight=1, lease=LEASE, now=7.0)
    assert 15.0 == state.quiet_until
    assert 2.0 == state.view(13.0).quiet_for
    assert 0.0 == state.view(15.0).quiet_for


def test_guarded_heartbeat_also_starts_the_quiet() -> None:
    """The first heartbeat to a guarded empty state starts the quiet period too."""
    state = GroupState.loads("g", None, guarded=True)
    view = state.heartbeat("a", "ta", lease=4.0, acked=3, now=1.0)
    assert 4.0 == view.quiet_for
    assert {} == view.members


def test_guarded_loads_of_a_document_keeps_its_quiet() -> None:
    """A loaded document is not fresh: guarded starts no quiet, the stored one is kept."""
    quiet = GroupState.loads("g", '{"version": 0, "members": {}, "history": {}}', guarded=True)
    quiet.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    assert quiet.quiet_until is None
    state = GroupState("g", guarded=True)
    state.join("a", "ta", weight=1, lease=LEASE, now=0.0)
    loaded = GroupState.loads("g", state.dumps(), guarded=True)
    assert 10.0 == loaded.quiet_until
    assert 7.0 == loaded.view(3.0).quiet_for


# -- MembershipView, changes_between, may_own ------------------------------------------------


def make_view(
    version: int,
    acked: Mapping[str, int],
    history: Mapping[int, Mapping[str, float]] | None = None,
) -> MembershipView:
    """A view whose members (weight 1) have the given acked versions."""
    return MembershipView(
        group="g",
        version=version,
        members={name: Member(name=name, acked=a) for name, a in acked.items()},
        history=history or {},
    )


def test_view_weights_settled_and_contains() -> None:
    """weights, weights_at, settled and ``in`` read the members and the history."""
    view = make_view(3, {"a": 3, "b": 2}, {2: {"a": 1.0}})
    assert {"a": 1.0, "b": 1.0} == view.weights == view.weights_at(3)
    assert {"a": 1.0} == view.weights_at(2)
    assert view.weights_at(1) is None
    assert not view.settled
    assert make_view(3, {"a": 3, "b": 4}).settled
    assert MembershipView(group="g", version=0).settled
    assert "a" in view
    assert "z" not in view


def test_changes_between_reports_joins_leaves_and_weights() -> None:
    """Changes come sorted by member name and carry the newer version."""
    older = MembershipView(
        group="g",
        version=4,
        members={"a": Member(name="a"), "b": Member(name="b"), "c": Member(name="c")},
    )
    newer = MembershipView(
        group="g",
        version=6,
        members={
            "a": Member(name="a", acked=5),
            "c": Member(name="c", weight=2.0),
            "d": Member(name="d"),
        },
    )
    assert [
        MembershipChange(kind="left", member="b", version=6),
        MembershipChange(kind="reweighted", member="c", version=6),
        MembershipChange(kind="joined", member="d", version=6),
    ] == changes_between(older, newer)
    assert [] == changes_between(newer, newer)


def test_changes_from_nothing_are_all_joins() -> None:
    """With no older view, every member has joined."""
    view = make_view(2, {"b": 1, "a": 2})
    assert [
        MembershipChange(kind="joined", member="a", version=2),
        MembershipChange(kind="joined", member="b", version=2),
    ] == changes_between(None, view)


def routes(**owners: str | None) -> Callable[[int], str | None]:
    """owner_at from version to owner, written as v1="a", v2=None, ..."""
    table = {int(name[1:]): owner for name, owner in owners.items()}
    return lambda version: table[version]


def test_may_own_refuses_a_non_member() -> None:
    """A worker that is not in the view owns nothing, whatever the routes say."""
    assert not may_own(make_view(1, {"a": 1}), "b", routes(v1="b"))


def test_may_own_refuses_a_key_routed_elsewhere() -> None:
    """A key that routes to another member now is not mine."""
    assert not may_own(make_view(1, {"a": 1, "b": 1}), "a", routes(v1="b"))


def test_may_own_waits_for_the_old_owner_to_ack() -> None:
    """A key that moved to me waits while its old owner is live and has not acked."""
    history = {1: {"a": 1.0}}
    assert not may_own(make_view(2, {"a": 1, "b": 2}, history), "b", routes(v1="a", v2="b"))
    assert may_own(make_view(2, {"a": 2, "b": 2}, history), "b", routes(v2="b"))


def test_may_own_after_the_old_owner_is_gone() -> None:
    """A key whose old owner left or lost its lease is mine once it routes to me."""
    view = make_view(3, {"b": 3, "c": 1}, {1: {"a": 1.0, "c": 1.0}, 2: {"c": 1.0}})
    assert may_own(view, "b", routes(v1="a", v2="c", v3="b")) is False
    assert may_own(view, "b", routes(v1="a", v2="b", v3="b"))


def test_may_own_skips_empty_versions_and_my_own_routes() -> None:
    """Older versions that route to me, or had no members, block nothing."""
    view = make_view(3, {"b": 3, "c": 1}, {1: {}, 2: {"b": 1.0}})
    assert may_own(view, "b", routes(v1=None, v2="b", v3="b"))


def test_may_own_ignores_my_own_acked() -> None:
    """My own acked does not widen the versions checked: I act on my newest view."""
    assert may_own(make_view(2, {"a": 0, "b": 2}), "a", routes(v2="a"))


def test_may_own_without_the_history_refuses() -> None:
    """A version in play that the view does not hold makes ownership unprovable."""
    view = make_view(3, {"a": 1, "b": 3}, {2: {"a": 1.0}})
    assert not may_own(view, "b", routes(v3="b"))


def test_may_own_asks_the_current_version_first() -> None:
    """owner_at is called with the view's version first, then only with held versions."""
    asked: list[int] = []

    def owner_at(version: int) -> str:
        asked.append(version)
        return "b"

    view = make_view(4, {"a": 2, "b": 4}, {2: {"a": 1.0}, 3: {"a": 1.0}})
    assert may_own(view, "b", owner_at)
    assert [4, 2, 3] == asked


def test_may_own_treats_a_negative_acked_as_zero() -> None:
    """A nonsensical negative acked checks from version 0, not below it."""
    view = make_view(1, {"a": -3, "b": 1}, {0: {}})
    assert may_own(view, "b", routes(v0=None, v1="b"))


# -- stores ----------------------------------------------------------------------------------


def test_static_membership_lists_live_members_at_version_one() -> None:
    """Listed members are always live, with their weights, and the version is 1."""
    static = StaticMembership({"w0": 1, "w1": 2.5}, group="fixed")
    view = static.view()
    assert 1 == view.version
    assert "fixed" == static.group == view.group
    assert {"w0": 1.0, "w1": 2.5} == view.weights
    assert view.settled
    assert {None} == {m.expires_in for m in view.members.values()}
    assert view == static.join("w0", "t", weight=9, lease=1)
    assert view == static.heartbeat("w0", "t", lease=1, acked=0)
    assert view == static.leave("w0", "t")
    assert view == static.view()
    static.close()
    assert "StaticMembership({'w0': 1.0, 'w1': 2.5}, group='fixed')" == repr(static)


def test_static_membership_refuses_an_unlisted_member() -> None:
    """Joining under a name not in the list is a configuration error."""
    static = StaticMembership(["w0", "w1"])
    with pytest.raises(ConfigurationError, match="is not a member"):
        static.join("w9", "t", weight=1, lease=1)
    assert "static" == static.group


@pytest.mark.parametrize("members", [[], "w0", ["w0", ""], {"w0": 0}, ["w0", "w0"]])
def test_static_membership_validates_the_list(members: Any) -> None:
    """No members, a string, an empty name, a bad weight or a repeat is refused."""
    with pytest.raises(ConfigurationError):
        StaticMembership(members)


@in_loop
async def test_async_static_membership_is_the_same_list() -> None:
    """The async twin answers from the same fixed view."""
    static = AsyncStaticMembership(["w0", "w1"], group="fixed")
    view = await static.view()
    assert "fixed" == static.group
    assert 1 == view.version
    assert view == await static.join("w1", "t", weight=1, lease=1)
    assert view == await static.heartbeat("w1", "t", lease=1, acked=1)
    assert view == await static.leave("w1", "t")
    await static.close()
    with pytest.raises(ConfigurationError):
        await static.join("w2", "t", weight=1, lease=1)


def test_memory_membership_runs_the_group_state_on_its_clock() -> None:
    """The memory store grants leases on its clock and raises on a clash."""
    clock = ManualClock()
    store = MemoryMembership("g", clock=clock)
    assert "g" == store.group
    assert "MemoryMembership('g')" == repr(store)
    store.join("a", "ta", weight=1, lease=LEASE)
    clock.advance(4.0)
    with pytest.raises(MembershipConflictError) as caught:
        store.join("a", "tb", weight=1, lease=LEASE)
    assert ("g", "a", 6.0) == (caught.value.group, caught.value.member, caught.value.retry_after)
    assert 2 == store.join("b", "tb", weight=1, lease=LEASE).version
    assert 2 == store.heartbeat("a", "ta", lease=LEASE, acked=2).members["a"].acked
    assert ["b"] == list(store.leave("a", "ta").members)
    clock.advance(LEASE)
    assert 4 == store.view().version
    store.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.join("", "t", weight=1, lease=1),
        lambda s: s.join("a", "", weight=1, lease=1),
        lambda s: s.join("a" * 201, "t", weight=1, lease=1),
        lambda s: s.join("a", "t", weight=0, lease=1),
        lambda s: s.join("a", "t", weight=1, lease=float("inf")),
        lambda s: s.heartbeat("a", "t", lease=0, acked=0),
        lambda s: s.heartbeat("a", "t", lease=1, acked=-1),
        lambda s: s.heartbeat("a", "t", lease=1, acked=1.0),
        lambda s: s.leave(None, "t"),
    ],
)
def test_memory_membership_validates_operations(call: Callable[[MemoryMembership], object]) -> None:
    """Bad names, tokens, weights, leases and acked values are refused before any change."""
    store = MemoryMembership("g", clock=ManualClock())
    with pytest.raises(ConfigurationError):
        call(store)
    assert 0 == store.view().version


def test_memory_membership_refuses_a_bad_group() -> None:
    """A group name must be a valid namespace."""
    with pytest.raises(ConfigurationError):
        MemoryMembership("no spaces")


@in_loop
async def test_async_memory_membership_shares_the_sync_state() -> None:
    """The async view of a backend's group sees the same members as the sync one."""
    clock = ManualClock()
    backend = MemoryBackend(clock=clock)
    sync = backend.membership("g")
    assert sync is backend.membership("g")
    store = backend.async_membership("g")
    assert "g" == store.group
    assert "AsyncMemoryMembership('g')" == repr(store)
    await store.join("a", "ta", weight=1, lease=LEASE)
    assert ["a"] == list(sync.view().members)
    sync.join("b", "tb", weight=1, lease=LEASE)
    assert 2 == (await store.heartbeat("a", "ta", lease=LEASE, acked=2)).members["a"].acked
    assert ["b"] == list((await store.leave("a", "ta")).members)
    assert ["b"] == list((await store.view()).members)
    await store.close()
    alone = AsyncMemoryMembership()
    assert "default" == alone.group
    assert 0 == (await alone.view()).version


# -- ShardAssignment -------------------------------------------------------------------------


def group(
    *names: str, lease: float = LEASE, **kwargs: Any
) -> tuple[ManualClock, MemoryMembership, list[ShardAssignment]]:
    """A clock, a memory store on it, and an assignment per name on both (nobody joined)."""
    clock = ManualClock()
    store = MemoryMembership("workers", clock=clock)
    workers = [ShardAssignment(store, name, lease=lease, clock=clock, **kwargs) for name in names]
    return clock, store, workers


def test_before_joining_nothing_is_owned() -> None:
    """Before join() there is no view, no lease, no owner, and require() refuses."""
    _, _, (a,) = group("a")
    assert a.view is None
    assert 0 == a.version
    assert 0.0 == a.expires_in()
    assert "a" == a.member
    assert not a.owns("sku-1")
    with pytest.raises(NoShardOwnerError, match="not read yet"):
        a.owner("sku-1")
    with pytest.raises(
        NoShardOwnerError, match="'a' does not own 'sku-1' at membership version None"
    ):
        a.require("sku-1")


def test_a_lone_member_owns_every_key() -> None:
    """The only member owns every key, fenced by its version, with 98% of its lease."""
    _, store, (a,) = group("a")
    view = a.join()
    assert view == a.view
    assert 1 == a.version
    assert pytest.approx(LEASE * 0.98) == a.expires_in()
    assert set(KEYS) == owned(a)
    assert 1 == a.require("sku-1")
    assert "a" == a.owner("sku-1")
    assert ["a"] == list(store.view().members)


def test_a_handoff_waits_for_the_old_owner_to_ack() -> None:
    """A joining worker takes its keys only after the old owner has acked the new version."""
    _, _, (a, b) = group("a", "b")
    a.join()
    b.join()
    moving = {key for key in KEYS if "b" == b.owner(key)}
    assert 50 < len(moving) < 150
    assert set(KEYS) == owned(a)  # a still acts on version 1
    assert set() == owned(b)
    a.heartbeat()
    assert set(KEYS) - moving == owned(a)
    assert set() == owned(b)  # b's view still shows a on version 1
    b.heartbeat()
    assert moving == owned(b)
    assert 2 == a.version == b.version


def test_the_naive_rule_would_give_a_key_two_owners(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``route == me`` instead of the handoff rule, the joiner and the old owner both own."""

    def naive(view: MembershipView, me: str, owner_at: Callable[[int], str | None]) -> bool:
        return me in view.members and owner_at(view.version) == me

    _, _, (a, b) = group("a", "b")
    a.join()
    b.join()
    assert set() == owned(a) & owned(b)
    monkeypatch.setattr(sharding, "may_own", naive)
    assert {key for key in KEYS if "b" == b.owner(key)} == owned(a) & owned(b)


def test_a_leaving_member_owns_nothing_and_its_keys_move_at_once() -> None:
    """leave() ends ownership at once; the others take its keys at their next heartbeat."""
    _, store, (a, b) = group("a", "b")
    a.join()
    b.join()
    a.heartbeat()
    b.heartbeat()
    a.leave()
    assert set() == owned(a)
    assert 0.0 == a.expires_in()
    assert ["b"] == list(store.view().members)
    b.heartbeat()
    assert set(KEYS) == owned(b)


def test_the_last_member_leaving_leaves_no_owner() -> None:
    """After the last member leaves, its view is empty and owner() raises."""
    _, _, (a,) = group("a")
    a.join()
    a.leave()
    assert set() == owned(a)
    with pytest.raises(NoShardOwnerError, match="the view is empty"):
        a.owner("sku-1")


def test_own_lease_copy_ends_before_the_store_drops_the_member() -> None:
    """owns() turns false on the worker's own clock while the store still lists it."""
    clock, store, (a,) = group("a")
    a.join()
    clock.advance(9.75)
    assert a.owns("sku-1")
    clock.advance(0.0625)  # past 98% of the lease
    assert not a.owns("sku-1")
    assert 0.0 == a.expires_in()
    with pytest.raises(NoShardOwnerError):
        a.require("sku-1")
    assert ["a"] == list(store.view().members)
    assert 0.1875 == store.view().members["a"].expires_in


def test_heartbeats_keep_the_lease() -> None:
    """A heartbeat extends the worker's own copy of the lease from when it was sent."""
    clock, _, (a,) = group("a")
    a.join()
    for _ in range(5):
        clock.advance(5.0)
        view = a.heartbeat()
        assert 1 == view.version
    assert pytest.approx(LEASE * 0.98) == a.expires_in()
    assert set(KEYS) == owned(a)


def test_a_lost_lease_emits_lease_lost_and_rejoins() -> None:
    """A worker the store dropped sees itself leave, says lease_lost, and joins again."""
    clock, store, (a, b) = group("a", "b")
    a.join()
    b.join()
    a.heartbeat()
    clock.advance(6.0)
    b.heartbeat()
    clock.advance(6.0)
    assert not a.owns("sku-1")
    with testing() as timeline:
        view = a.heartbeat()
    assert [("left", "a", 3), ("lease_lost", "a", 3), ("joined", "a", 4)] == membership_events(
        timeline.events
    )
    assert {"workers"} == {e.source for e in timeline.events}
    assert 4 == view.version
    assert {"a", "b"} == set(store.view().members)
    assert pytest.approx(LEASE * 0.98) == a.expires_in()


def test_a_lost_lease_rejoins_quietly_without_listeners() -> None:
    """With no listener attached, a lost lease rejoins without building events."""
    clock, _, (a,) = group("a")
    a.join()
    clock.advance(LEASE)
    assert 3 == a.heartbeat().version
    assert set(KEYS) == owned(a)


def test_events_show_joins_leaves_and_nothing_for_quiet_heartbeats() -> None:
    """Joins, others' joins and leaves are events; heartbeats at the same version are not."""
    _, _, (a, b) = group("a", "b")
    with testing() as timeline:
        a.join()
        b.join()
        a.heartbeat()
        a.heartbeat()
        b.leave()
        a.heartbeat()
    assert [
        ("joined", "a", 1),
        ("joined", "a", 2),
        ("joined", "b", 2),
        ("joined", "b", 2),
        ("left", "b", 3),
        ("left", "b", 3),
    ] == membership_events(timeline.events)


def test_a_paused_worker_whose_name_was_taken_owns_nothing() -> None:
    """An old incarnation that resumes after a new process took its name stops and says so."""
    clock, store, (old, other) = group("w0", "w1")
    old.join()
    other.join()
    old.heartbeat()
    other.heartbeat()
    for _ in range(4):
        clock.advance(3.0)
        other.heartbeat()
    new = ShardAssignment(store, "w0", lease=LEASE, clock=clock)
    new.join()
    other.heartbeat()
    new.heartbeat()
    assert owned(new)
    with testing() as timeline, pytest.raises(MembershipConflictError):
        old.heartbeat()
    assert [("lease_lost", "w0", 4)] == membership_events(timeline.events)
    assert set() == owned(old)
    assert set() == owned(new) & owned(other)
    assert set(KEYS) == owned(new) | owned(other)


class ScriptedMembership:
    """A Membership that answers every call with the next of the given views (then the last)."""

    group = "g"

    def __init__(self, views: list[MembershipView]) -> None:
        self.views = views
        self.calls: list[tuple[str, int | None]] = []

    def _next(self) -> MembershipView:
        return self.views.pop(0) if len(self.views) > 1 else self.views[0]

    def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        self.calls.append(("join", None))
        return self._next()

    def heartbeat(self, member: str, token: str, *, lease: float, acked: int) -> MembershipView:
        self.calls.append(("heartbeat", acked))
        return self._next()

    def leave(self, member: str, token: str) -> MembershipView:
        self.calls.append(("leave", None))
        return self._next()

    def view(self) -> MembershipView:
        return self._next()

    def close(self) -> None:
        pass


def test_a_quiet_view_grants_nothing_until_it_ends() -> None:
    """While a view's quiet period runs (a store that lost its data), nobody owns keys."""
    clock = ManualClock()
    store = ScriptedMembership(
        [
            MembershipView(
                group="g", version=1, members={"a": Member(name="a", acked=1)}, quiet_for=4.0
            )
        ]
    )
    a = ShardAssignment(store, "a", lease=LEASE, clock=clock)
    a.join()
    assert not a.owns("sku-1")
    clock.advance(3.75)
    assert not a.owns("sku-1")
    clock.advance(0.25)
    assert a.owns("sku-1")


def test_a_member_without_incarnation_counts_as_live() -> None:
    """Members with no incarnation (static lists) are taken as this worker's own."""
    a = ShardAssignment(StaticMembership(["a", "b"]), "a", clock=ManualClock())
    view = a.join()
    assert "" == view.members["a"].incarnation
    assert {key for key in KEYS if "a" == a.owner(key)} == owned(a)
    assert 0 < len(owned(a)) < len(KEYS)


def test_static_members_split_every_key_between_them() -> None:
    """Over a static list every key has exactly one owner, with no handoff to wait for."""
    static = StaticMembership({"a": 1, "b": 1, "c": 2})
    clock = ManualClock()
    workers = [ShardAssignment(static, name, clock=clock) for name in "abc"]
    for worker in workers:
        worker.join()
    for key in KEYS:
        assert 1 == sum(worker.owns(key) for worker in workers)
    assert all(worker.heartbeat() == static.view() for worker in workers)


def test_a_reused_version_with_new_weights_rebuilds_its_router() -> None:
    """A version number seen before with other weights (a wiped store) routes by the new ones."""
    clock = ManualClock()

    def view(version: int, names: list[str]) -> MembershipView:
        members = {name: Member(name=name, acked=version) for name in names}
        return MembershipView(group="g", version=version, members=members)

    store = ScriptedMembership([view(1, ["a", "z"]), view(1, ["a"])])
    a = ShardAssignment(store, "a", lease=LEASE, clock=clock)
    a.join()
    assert 0 < len(owned(a)) < len(KEYS)
    a.heartbeat()
    assert set(KEYS) == owned(a)


def test_a_heartbeat_at_an_unchanged_version_is_one_call() -> None:
    """A heartbeat acks at once only when the version moved: one call otherwise, two if it did."""
    clock = ManualClock()
    v1 = MembershipView(group="g", version=1, members={"a": Member(name="a", acked=1)})
    v2 = MembershipView(group="g", version=2, members={"a": Member(name="a", acked=1)})
    store = ScriptedMembership([v1, v1, v2, v2])
    a = ShardAssignment(store, "a", lease=LEASE, clock=clock)
    a.join()
    a.heartbeat()
    a.heartbeat()
    assert [("join", None), ("heartbeat", 1), ("heartbeat", 1), ("heartbeat", 2)] == store.calls


def test_the_router_factory_builds_each_versions_router() -> None:
    """A custom router factory decides the routes; each worker builds a version's router once."""
    built: list[dict[str, float]] = []

    def slots(weights: Mapping[str, float]) -> Router[str]:
        built.append(dict(weights))
        return SlotRouter(weights, slots=1024)

    _, _, (a, b) = group("a", "b", router=slots, weight=2)
    a.join()
    b.join()
    a.heartbeat()
    b.heartbeat()
    expected = SlotRouter({"a": 2, "b": 2}, slots=1024)
    assert {key for key in KEYS if "a" == expected.route(key)} == owned(a)
    assert {key for key in KEYS if "b" == expected.route(key)} == owned(b)
    # a: version 1 at its join, version 2 at its heartbeat; b: both versions at its join.
    assert [{"a": 2.0}, {"a": 2.0}, {"a": 2.0, "b": 2.0}, {"a": 2.0, "b": 2.0}] == built


def test_weight_changes_the_share() -> None:
    """A heavier worker owns more keys, by the rendezvous weights."""
    clock = ManualClock()
    store = MemoryMembership("workers", clock=clock)
    heavy = ShardAssignment(store, "heavy", weight=3, clock=clock)
    light = ShardAssignment(store, "light", weight=1, clock=clock)
    heavy.join()
    light.join()
    heavy.heartbeat()
    light.heartbeat()
    router = RendezvousRouter({"heavy": 3, "light": 1})
    assert {key for key in KEYS if "heavy" == router.route(key)} == owned(heavy)
    assert len(owned(heavy)) > 2 * len(owned(light))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lease": 0}, "lease"),
        ({"lease": -1.0}, "lease"),
        ({"lease": float("inf")}, "lease"),
        ({"lease": float("nan")}, "lease"),
        ({"lease": "10"}, "lease"),
        ({"lease": True}, "lease"),
        ({"lease": 3.0, "heartbeat": 3.0}, "heartbeat"),
        ({"lease": 3.0, "heartbeat": 4}, "heartbeat"),
        ({"heartbeat": 0}, "heartbeat"),
        ({"heartbeat": "1"}, "heartbeat"),
        ({"lease": 3.0, "heartbeat": 2.95}, "heartbeat"),
        ({"weight": 0}, "weight"),
        ({"weight": float("nan")}, "weight"),
        ({"weight": "2"}, "weight"),
    ],
)
def test_assignment_validates_its_settings(kwargs: dict[str, Any], field: str) -> None:
    """A bad lease, heartbeat interval or weight is a configuration error naming the field."""
    store = MemoryMembership("workers", clock=ManualClock())
    with pytest.raises(ConfigurationError) as caught:
        ShardAssignment(store, "a", **kwargs)
    assert f"ShardAssignment.{field}" == caught.value.field
    with pytest.raises(ConfigurationError) as caught:
        AsyncShardAssignment(AsyncMemoryMembership(store), "a", **kwargs)
    assert f"AsyncShardAssignment.{field}" == caught.value.field


@pytest.mark.parametrize("member", ["", None, 3])
def test_assignment_validates_its_name(member: Any) -> None:
    """The member name must be a non-empty str."""
    with pytest.raises(ConfigurationError):
        ShardAssignment(StaticMembership(["a"]), member)


def test_assignment_takes_timedeltas() -> None:
    """Lease and heartbeat accept timedeltas."""
    clock = ManualClock()
    a = ShardAssignment(
        MemoryMembership("workers", clock=clock),
        "a",
        lease=datetime.timedelta(seconds=30),
        heartbeat=datetime.timedelta(seconds=5),
        clock=clock,
    )
    a.join()
    assert pytest.approx(30 * 0.98) == a.expires_in()


class CountingMembership:
    """A memory store that counts heartbeats (failing the first *failures*), for thread tests."""

    def __init__(self, store: MemoryMembership, *, failures: int = 0) -> None:
        self.store = store
        self.group = store.group
        self.beats = 0
        self.failures = failures
        self.changed = threading.Condition()

    def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        return self.store.join(member, token, weight=weight, lease=lease)

    def heartbeat(self, member: str, token: str, *, lease: float, acked: int) -> MembershipView:
        with self.changed:
            self.beats += 1
            self.changed.notify_all()
            if self.beats <= self.failures:
                raise ConnectionError("store unreachable")
        return self.store.heartbeat(member, token, lease=lease, acked=acked)

    def leave(self, member: str, token: str) -> MembershipView:
        return self.store.leave(member, token)

    def view(self) -> MembershipView:
        return self.store.view()

    def close(self) -> None:
        self.store.close()

    def wait_for(self, beats: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.beats >= beats, timeout=10.0)


def beating_threads(member: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"invresilience-membership-{member}"]


def test_with_heartbeats_on_a_thread_and_leaves_on_exit() -> None:
    """``with`` joins, heartbeats on a daemon thread, and leaves (stopping it) on exit."""
    clock = ManualClock()
    store = CountingMembership(MemoryMembership("workers", clock=clock))
    assignment = ShardAssignment(store, "a", lease=LEASE, heartbeat=0.002, clock=clock)
    with assignment as entered:
        assert entered is assignment
        assert ["a"] == list(store.view().members)
        assert [True] == [t.daemon for t in beating_threads("a")]
        assignment.start()  # already running: no second thread
        assert 1 == len(beating_threads("a"))
        store.wait_for(3)
    assert [] == beating_threads("a")
    assert {} == store.view().members
    assert set() == owned(assignment)
    assignment.stop()  # stopping a stopped assignment is harmless


def test_a_failed_heartbeat_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    """A heartbeat that raises on the thread is logged as a warning; the next tick tries again."""
    clock = ManualClock()
    store = CountingMembership(MemoryMembership("workers", clock=clock), failures=2)
    assignment = ShardAssignment(store, "a", lease=LEASE, heartbeat=0.002, clock=clock)
    with caplog.at_level(logging.WARNING, logger="invresilience"), assignment:
        store.wait_for(4)
    failures = [r for r in caplog.records if "membership heartbeat of 'a' failed" in r.getMessage()]
    assert 2 == len(failures)
    assert {ConnectionError} == {r.exc_info[0] for r in failures if r.exc_info}


# -- AsyncShardAssignment --------------------------------------------------------------------


def async_group(
    *names: str, lease: float = LEASE, **kwargs: Any
) -> tuple[ManualClock, MemoryMembership, list[AsyncShardAssignment]]:
    """A clock, a memory store on it, and an async assignment per name (nobody joined)."""
    clock = ManualClock()
    store = MemoryMembership("workers", clock=clock)
    workers = [
        AsyncShardAssignment(AsyncMemoryMembership(store), name, lease=lease, clock=clock, **kwargs)
        for name in names
    ]
    return clock, store, workers


@in_loop
async def test_async_handoff_waits_for_the_old_owner() -> None:
    """The async twin follows the same handoff: the joiner waits for the old owner's ack."""
    _, _, (a, b) = async_group("a", "b")
    assert a.view is None
    assert 0 == a.version
    assert 0.0 == a.expires_in()
    assert "a" == a.member
    with pytest.raises(NoShardOwnerError):
        a.owner("sku-1")
    await a.join()
    view = await b.join()
    assert view == b.view
    moving = {key for key in KEYS if "b" == b.owner(key)}
    assert set(KEYS) == owned(a)
    assert set() == owned(b)
    await a.heartbeat()
    await b.heartbeat()
    assert moving == owned(b)
    assert set(KEYS) - moving == owned(a)
    assert 2 == a.require(next(iter(set(KEYS) - moving)))
    with pytest.raises(NoShardOwnerError):
        b.require(next(iter(set(KEYS) - moving)))
    assert pytest.approx(LEASE * 0.98) == b.expires_in()
    await a.leave()
    assert set() == owned(a)


@in_loop
async def test_async_lost_lease_rejoins_with_events() -> None:
    """An async worker the store dropped says lease_lost and joins again."""
    clock, _, (a,) = async_group("a")
    await a.join()
    clock.advance(LEASE)
    with testing() as timeline:
        view = await a.heartbeat()
    assert [("left", "a", 2), ("lease_lost", "a", 2), ("joined", "a", 3)] == membership_events(
        timeline.events
    )
    assert 3 == view.version == a.version
    assert set(KEYS) == owned(a)


@in_loop
async def test_async_lost_lease_without_listeners() -> None:
    """With no listener attached, an async lost lease rejoins without building events."""
    clock, _, (a,) = async_group("a")
    await a.join()
    clock.advance(LEASE)
    assert 3 == (await a.heartbeat()).version


@in_loop
async def test_async_with_heartbeats_in_a_task_and_leaves() -> None:
    """``async with`` heartbeats in a task on the clock (here, moving it) and leaves on exit."""
    clock, store, (a,) = async_group("a", lease=3.0, heartbeat=1.0)
    async with a as entered:
        assert entered is a
        a.start()  # already running: no second task
        for _ in range(20):
            await asyncio.sleep(0)
        assert clock.monotonic() >= 10.0  # well past the first lease
        assert ["a"] == list(store.view().members)
        assert 1 == a.version
        assert a.owns("sku-1")
    assert {} == store.view().members
    assert set() == owned(a)
    moved = clock.monotonic()
    await asyncio.sleep(0)
    assert moved == clock.monotonic()  # the task is gone
    await a.stop()


class FailingAsyncMembership:
    """An async store whose first *failures* heartbeats raise."""

    def __init__(self, store: MemoryMembership, failures: int) -> None:
        self.inner = AsyncMemoryMembership(store)
        self.group = store.group
        self.failures = failures
        self.beats = 0

    async def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        return await self.inner.join(member, token, weight=weight, lease=lease)

    async def heartbeat(
        self, member: str, token: str, *, lease: float, acked: int
    ) -> MembershipView:
        self.beats += 1
        if self.beats <= self.failures:
            raise ConnectionError("store unreachable")
        return await self.inner.heartbeat(member, token, lease=lease, acked=acked)

    async def leave(self, member: str, token: str) -> MembershipView:
        return await self.inner.leave(member, token)

    async def view(self) -> MembershipView:
        return await self.inner.view()

    async def close(self) -> None:
        await self.inner.close()


def test_async_failed_heartbeat_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A heartbeat that raises in the task is logged as a warning and retried next tick."""

    async def run() -> int:
        clock = ManualClock()
        store = FailingAsyncMembership(MemoryMembership("workers", clock=clock), failures=2)
        async with AsyncShardAssignment(store, "a", lease=3.0, heartbeat=1.0, clock=clock):
            for _ in range(10):
                await asyncio.sleep(0)
        return store.beats

    with caplog.at_level(logging.WARNING, logger="invresilience"):
        beats = asyncio.run(run())
    assert beats > 2
    failures = [r for r in caplog.records if "membership heartbeat of 'a' failed" in r.getMessage()]
    assert 2 == len(failures)


# -- logging ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "level", "text"),
    [
        ("joined", logging.INFO, "group 'workers': w1 joined (version 3)"),
        ("left", logging.INFO, "group 'workers': w1 left (version 3)"),
        ("reweighted", logging.INFO, "group 'workers': w1 reweighted (version 3)"),
        ("lease_lost", logging.WARNING, "group 'workers': w1 lease lost (version 3)"),
    ],
)
def test_logging_listener_logs_membership_events(
    caplog: pytest.LogCaptureFixture, kind: Any, level: int, text: str
) -> None:
    """Membership changes log at INFO, a lost lease at WARNING, with the event attached."""
    event = MembershipEvent(source="workers", kind=kind, member="w1", version=3)
    logger = logging.getLogger("test.membership")
    with caplog.at_level(logging.DEBUG, logger="test.membership"):
        LoggingListener(logger)(event)
    assert [(level, text)] == [(r.levelno, r.getMessage()) for r in caplog.records]
    assert event is getattr(caplog.records[0], "invresilience_event", None)


def test_logging_listener_skips_disabled_levels(caplog: pytest.LogCaptureFixture) -> None:
    """A logger above INFO logs no joins, but still logs a lost lease."""
    logger = logging.getLogger("test.membership.quiet")
    with caplog.at_level(logging.WARNING, logger="test.membership.quiet"):
        LoggingListener(logger)(MembershipEvent(source="g", kind="joined", member="a", version=1))
        assert [] == caplog.records
        LoggingListener(logger)(
            MembershipEvent(source="g", kind="lease_lost", member="a", version=2)
        )
    assert ["group 'g': a lease lost (version 2)"] == [r.getMessage() for r in caplog.records]


@in_loop
async def test_async_heartbeat_at_an_unchanged_version() -> None:
    """An async heartbeat with nothing new renews the lease with one call."""
    clock, _, (a,) = async_group("a")
    await a.join()
    clock.advance(5.0)
    assert 1 == (await a.heartbeat()).version
    assert pytest.approx(LEASE * 0.98) == a.expires_in()
