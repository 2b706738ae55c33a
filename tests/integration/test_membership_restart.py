"""A Redis that loses the group's membership (restarted without persistence) never creates two owners.

Three workers share 60 keys through :class:`ShardAssignment` on a private, non-persistent
Redis. The server is killed and started again empty: the workers' leases are forgotten
while the workers may still be acting on them. The store starts the group it finds empty
with one lease of quiet, so nobody who joins the new state owns anything until every old
lease has run out. A sampler thread checks, throughout, that no key is ever owned by two
workers; afterwards the three workers own every key again.

The first test is the same story told deterministically on a :class:`ManualClock`, with and
without the quiet period for an empty state, to show that it is what keeps a worker that
joins the wiped store from overlapping the old owners; and that a surviving member's next
heartbeat (acting on a version the store never reached) starts a quiet period anyway.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import pytest

import invresilience as ir
from invresilience._core.membership import GroupState, MembershipOp
from invresilience.backends._common import membership_result
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator

    from invresilience.typing import MembershipView
    from tests.servers import PrivateRedis

KEYS = [f"WH-{i:04d}" for i in range(60)]
LEASE = 1.0


class WipeableMembership:
    """A membership over one :class:`GroupState` that can be wiped, like a Redis restart."""

    def __init__(self, clock: ManualClock, *, guarded: bool) -> None:
        self.clock = clock
        self.guarded = guarded
        self.state = GroupState.loads("g", None, guarded=guarded)

    @property
    def group(self) -> str:
        return "g"

    def wipe(self) -> None:
        self.state = GroupState.loads("g", None, guarded=self.guarded)

    def _apply(self, op: MembershipOp) -> MembershipView:
        return membership_result("g", op, self.state.apply(op, self.clock.monotonic()))

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


def _doubly_owned(workers: list[ir.ShardAssignment]) -> set[str]:
    owned = [{key for key in KEYS if worker.owns(key)} for worker in workers]
    return {key for key in KEYS if sum(key in mine for mine in owned) > 1}


@pytest.mark.parametrize("guarded", [True, False])
def test_quiet_period_is_what_keeps_a_wiped_store_from_making_two_owners(guarded: bool) -> None:
    """After a wipe, a worker that joins the empty state waits out the old leases only if guarded."""
    clock = ManualClock()
    store = WipeableMembership(clock, guarded=guarded)
    a = ir.ShardAssignment(store, "a", lease=10.0, clock=clock)
    b = ir.ShardAssignment(store, "b", lease=10.0, clock=clock)
    a.join()
    b.join()
    clock.advance(10.0)  # the guarded store's first quiet period ends
    a.heartbeat()
    b.heartbeat()
    assert set(KEYS) == {key for key in KEYS if a.owns(key) or b.owns(key)}
    assert set() == _doubly_owned([a, b])

    store.wipe()  # "a" and "b" still hold their leases locally and keep acting
    c = ir.ShardAssignment(store, "c", lease=10.0, clock=clock)
    c.join()  # a new worker joins the empty state: the store cannot know of "a" and "b"
    assert {c.member} == set(c.view.members if c.view else ())
    overlap = _doubly_owned([a, b, c])
    if guarded:
        assert set() == overlap
        assert not any(c.owns(key) for key in KEYS)
        clock.advance(10.0)  # past every old lease: "a" and "b" have stopped on their clocks
        assert not any(a.owns(key) or b.owns(key) for key in KEYS)
        c.heartbeat()
        assert set(KEYS) == {key for key in KEYS if c.owns(key)}
    else:
        assert overlap, "without the quiet period the new owner overlaps the old ones"
    # Once "b" beats, any store learns that it went back: b acted on a version it never
    # reached. It moves past that version and is quiet for a lease.
    b.heartbeat()
    assert b.view is not None
    assert b.view.version > 2
    assert b.view.quiet_for > 0


@pytest.fixture
def workers(private_redis: PrivateRedis) -> Iterator[list[ir.ShardAssignment]]:
    """Three workers heartbeating on a private, non-persistent Redis."""
    backends = [ir.open_backend(private_redis.url) for _ in range(3)]
    assignments = [
        ir.ShardAssignment(backend.membership("restart"), f"w{i}", lease=LEASE, heartbeat=LEASE / 5)
        for i, backend in enumerate(backends)
    ]
    try:
        yield assignments
    finally:
        for assignment in assignments:
            assignment.stop()
        for backend in backends:
            backend.close()


def _wait(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.services
def test_redis_restarted_empty_under_running_workers_never_makes_two_owners(
    private_redis: PrivateRedis, workers: list[ir.ShardAssignment]
) -> None:
    """Kill Redis, start it empty: no key has two owners at any sampled moment, then all resume."""
    for worker in workers:
        worker.join()
        worker.start()

    def covered() -> bool:
        owners = [sum(worker.owns(key) for worker in workers) for key in KEYS]
        return all(count == 1 for count in owners)

    # One lease of quiet (the group was new to this Redis), then a settled view.
    assert _wait(covered, 10 * LEASE), "the workers never came to own every key"

    violations: list[tuple[float, str, list[str]]] = []
    stop = threading.Event()
    owned_counts: list[tuple[float, int]] = []

    def sample() -> None:
        # Each round asks every worker twice, in order. A key owned by X in both of X's
        # answers and by Y in between was owned by both at Y's answer: ownership of a key
        # within one view is one interval, and a new view cannot both drop and regain it
        # without an answer of X in between showing the gap.
        while not stop.is_set():
            first = [(time.monotonic(), {k for k in KEYS if w.owns(k)}) for w in workers]
            second = [(time.monotonic(), {k for k in KEYS if w.owns(k)}) for w in workers]
            for x in range(len(workers)):
                for y in range(len(workers)):
                    if x == y:
                        continue
                    held = first[x][1] & second[x][1]
                    # y's first answer lies between x's two answers when y > x; else its second.
                    between = first[y][1] if y > x else second[y][1]
                    both = held & between
                    if both:
                        violations.append((first[x][0], f"w{x}&w{y}", sorted(both)))
            owned_counts.append((first[0][0], sum(len(owned) for _, owned in first)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        time.sleep(0.3)
        private_redis.kill()  # data gone: no persistence
        time.sleep(0.3)
        private_redis.start()
        restarted = time.monotonic()
        # Every lease granted before the kill has ended by now on the workers' clocks.
        time.sleep(1.5 * LEASE)
        assert _wait(covered, 15 * LEASE), "the workers did not recover every key"
        recovered = time.monotonic()
    finally:
        stop.set()
        sampler.join()
    assert [] == violations[:5]
    after = [(t, count) for t, count in owned_counts if restarted <= t <= recovered]
    # The old leases ran out and the new state was quiet: a stretch where nobody owned
    # anything, then every key owned again.
    assert any(count == 0 for _, count in after)
    assert len(KEYS) == after[-1][1]
    # They rejoined a fresh group: a small version, and every worker is a member again.
    view = workers[0].view
    assert view is not None
    assert {"w0", "w1", "w2"} == set(view.members)
