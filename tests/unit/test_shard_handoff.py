"""Handoffs at the edges: leaving, work in flight (hold), and incarnations after leave or loss."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from invresilience import AsyncShardAssignment, NoShardOwnerError, ShardAssignment
from invresilience.backends.memory import AsyncMemoryMembership, MemoryMembership
from invresilience.exceptions import BackendError
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from invresilience.typing import MembershipView

KEYS = [f"WH-{i:04d}" for i in range(200)]
LEASE = 10.0


class Spying:
    """A membership that records what its watched worker owned while each leave was in flight."""

    def __init__(self, inner: MemoryMembership, *, fail_after_leave: bool = False) -> None:
        self.inner = inner
        self.fail_after_leave = fail_after_leave
        self.watched: ShardAssignment | None = None
        self.owned_during_leave: list[int] = []

    @property
    def group(self) -> str:
        return self.inner.group

    def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        return self.inner.join(member, token, weight=weight, lease=lease)

    def heartbeat(self, member: str, token: str, *, lease: float, acked: int) -> MembershipView:
        return self.inner.heartbeat(member, token, lease=lease, acked=acked)

    def leave(self, member: str, token: str) -> MembershipView:
        assert self.watched is not None
        self.owned_during_leave.append(sum(self.watched.owns(k) for k in KEYS))
        view = self.inner.leave(member, token)
        if self.fail_after_leave:
            raise BackendError("the reply was lost after the store removed the member")
        return view

    def view(self) -> MembershipView:
        return self.inner.view()

    def close(self) -> None:
        pass


def _settle(*workers: ShardAssignment) -> None:
    for _ in range(2):
        for worker in workers:
            worker.heartbeat()


def _owned(worker: ShardAssignment) -> set[str]:
    return {key for key in KEYS if worker.owns(key)}


@pytest.mark.parametrize("fail", [False, True])
def test_a_leaving_worker_owns_nothing_while_its_leave_is_in_flight(fail: bool) -> None:
    """leave() gives the keys up before the request, and keeps them given up if the reply is lost."""
    clock = ManualClock()
    shared = MemoryMembership("g", clock=clock)
    spy = Spying(shared, fail_after_leave=fail)
    a = ShardAssignment(spy, "a", lease=LEASE, clock=clock)
    b = ShardAssignment(shared, "b", lease=LEASE, clock=clock)
    spy.watched = a
    a.join()
    b.join()
    _settle(a, b)
    assert _owned(a)
    if fail:
        with pytest.raises(BackendError):
            a.leave()
    else:
        a.leave()
    assert [0] == spy.owned_during_leave
    b.heartbeat()
    assert set(KEYS) == _owned(b)
    assert set() == _owned(a)


def test_a_held_key_is_not_handed_over_until_released() -> None:
    """While a worker holds a key that moves away, it does not acknowledge; the new owner waits."""
    clock = ManualClock()
    store = MemoryMembership("g", clock=clock)
    a = ShardAssignment(store, "a", lease=LEASE, clock=clock)
    a.join()
    c = ShardAssignment(store, "c", lease=LEASE, clock=clock)
    moving = None
    with a.hold(KEYS[0]) as fence:
        assert 1 == fence
        c.join()  # version 2: some keys, maybe KEYS[0], move to c
        a.heartbeat()
        c.heartbeat()
        if c.owner(KEYS[0]) == "c":
            moving = KEYS[0]
            # a may no longer start work on it, and c may not start either: a is finishing.
            assert not a.owns(moving)
            assert not c.owns(moving)
            assert 1 == store.view().members["a"].acked
            clock.advance(3.0)
            a.heartbeat()  # the lease is renewed all the while; the report stays at 1
            c.heartbeat()
            assert not c.owns(moving)
            assert 1 == store.view().members["a"].acked
    a.heartbeat()  # released: acknowledged now
    c.heartbeat()
    assert 2 == store.view().members["a"].acked
    assert set(KEYS) == _owned(a) | _owned(c)
    assert set() == _owned(a) & _owned(c)
    assert moving is not None, "the fixed keys put KEYS[0] on c at version 2"


def test_holding_a_key_this_worker_does_not_own_raises_and_leaves_nothing_held() -> None:
    """hold() on a key owned elsewhere raises NoShardOwnerError, and acknowledgements go on."""
    clock = ManualClock()
    store = MemoryMembership("g", clock=clock)
    a = ShardAssignment(store, "a", lease=LEASE, clock=clock)
    b = ShardAssignment(store, "b", lease=LEASE, clock=clock)
    a.join()
    b.join()
    _settle(a, b)
    theirs = next(key for key in KEYS if not a.owns(key))
    with pytest.raises(NoShardOwnerError), a.hold(theirs):
        pass  # pragma: no cover - hold raises first
    ShardAssignment(store, "c", lease=LEASE, clock=clock).join()
    a.heartbeat()
    assert store.view().version == store.view().members["a"].acked


def test_hold_accepts_bytearray_keys() -> None:
    """A bytearray key can be held like the bytes it equals."""
    clock = ManualClock()
    store = MemoryMembership("g", clock=clock)
    a = ShardAssignment(store, "a", lease=LEASE, clock=clock)
    a.join()
    with a.hold(bytearray(b"WH-1")) as fence:
        assert 1 == fence


def test_a_worker_joins_again_as_a_new_incarnation_after_leaving() -> None:
    """After leave(), a join uses a fresh token: a late leave of the old one removes nothing."""
    clock = ManualClock()
    store = MemoryMembership("g", clock=clock)
    a = ShardAssignment(store, "a", lease=LEASE, clock=clock)
    first = a.join().members["a"].incarnation
    old_token = a._own.token
    a.leave()
    second = a.join().members["a"].incarnation
    assert first != second
    store.leave("a", old_token)  # a delayed leave of the first incarnation
    assert "a" in store.view().members


def test_a_worker_whose_lease_ran_out_rejoins_as_a_new_incarnation() -> None:
    """After losing its lease, the worker rejoins under a fresh token."""
    clock = ManualClock()
    store = MemoryMembership("g", clock=clock)
    a = ShardAssignment(store, "a", lease=LEASE, clock=clock)
    first = a.join().members["a"].incarnation
    clock.advance(LEASE + 1)
    view = a.heartbeat()
    assert "a" in view.members
    assert first != view.members["a"].incarnation


def test_the_async_twin_leaves_and_holds_like_the_sync_one() -> None:
    """AsyncShardAssignment gives its keys up before the leave request and holds keys alike."""

    async def scenario() -> None:
        clock = ManualClock()
        shared = MemoryMembership("g", clock=clock)
        a = AsyncShardAssignment(AsyncMemoryMembership(shared), "a", lease=LEASE, clock=clock)
        b = AsyncShardAssignment(AsyncMemoryMembership(shared), "b", lease=LEASE, clock=clock)
        await a.join()
        await b.join()
        for _ in range(2):
            await a.heartbeat()
            await b.heartbeat()
        mine = next(key for key in KEYS if a.owns(key))
        with a.hold(mine) as fence:
            assert shared.view().version == fence
        a._own.relinquish()  # what leave() does first
        assert not any(a.owns(key) for key in KEYS)
        await a.leave()
        await b.heartbeat()
        assert all(b.owns(key) for key in KEYS)

    asyncio.run(scenario())


def test_a_heartbeat_interval_leaving_no_room_in_the_lease_is_refused() -> None:
    """A heartbeat at 99% of the lease would leave ownership gaps: it is refused."""
    with pytest.raises(ValueError, match=r"ShardAssignment\.heartbeat"):
        ShardAssignment(MemoryMembership("g"), "a", lease=10.0, heartbeat=9.9)
