"""Many workers sharing one membership store: no key ever has two owners, and settled views own every key.

The machine drives three to six :class:`~invresilience.ShardAssignment` objects over one
:class:`~invresilience.backends.memory.MemoryMembership` and one
:class:`~invresilience.testing.ManualClock` (the store's clock and every worker's, so a
worker's own copy of its lease is exactly as early as the handoff rule needs). Workers join,
heartbeat in any order, pause (stop heartbeating, and may resume later), are killed (stop
forever without leaving), leave gracefully, and the clock moves by random amounts, often
past a lease. After every step:

- safety: no key of a fixed set is owned (``owns()`` true) by two workers, counting every
  worker, killed or not, since a killed worker whose own lease has not run out could still act;
- a worker whose own lease copy has run out owns nothing, and an owner's
  :meth:`~invresilience.ShardAssignment.require` fences with its view's version;
- liveness: when every member of the store is running and each holds a settled view of the
  current version (everyone has acknowledged it: two rounds of heartbeats without a
  membership change give that), every key has exactly one owner, the one it routes to.

The last tests show that the machine has teeth: with :func:`may_own` replaced by the naive
``route == me`` it finds two owners of a key.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Literal

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import invresilience._sharding as sharding
from invresilience import MembershipView, RendezvousRouter, ShardAssignment, SlotRouter
from invresilience._core.membership import MembershipOp
from invresilience.backends._common import (
    check_membership_op,
    membership_result,
    membership_step,
)
from invresilience.backends.memory import MemoryMembership
from invresilience.exceptions import MembershipConflictError
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from invresilience.typing import Membership, Router

LEASE = 10.0
KEYS = [f"sku-{i}" for i in range(150)] + list(range(50))
# Sums of these stay exact in binary floating point; 9.75 and up cross a lease in one step.
ticks = st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 9.75, 10.0, 12.0])

Status = Literal["idle", "active", "paused", "killed"]


class Worker:
    """One worker process: its assignment and what the machine lets it do."""

    def __init__(self, assignment: ShardAssignment) -> None:
        self.assignment = assignment
        self.status: Status = "idle"


def _some(*statuses: Status) -> Callable[[OwnershipMachine], bool]:
    """A precondition: some worker is in one of *statuses*."""
    return lambda machine: any(worker.status in statuses for worker in machine.workers)


class OwnershipMachine(RuleBasedStateMachine):
    """Workers over one memory membership store; see the module docstring."""

    router: Callable[[Mapping[str, float]], Router[str]] = RendezvousRouter

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.store = self.make_store()
        self.workers: list[Worker] = []

    def make_store(self) -> Membership:
        """The group's store."""
        return MemoryMembership("workers", clock=self.clock)

    def _new(self, name: str, weight: float) -> Worker:
        return Worker(
            ShardAssignment(
                self.store,
                name,
                weight=weight,
                lease=LEASE,
                router=self.router,
                clock=self.clock,
            )
        )

    @initialize(
        weights=st.lists(st.sampled_from([1.0, 1.0, 2.0, 0.5]), min_size=3, max_size=6),
        joined=st.integers(1, 6),
    )
    def start(self, weights: list[float], joined: int) -> None:
        """Create the workers; some of them join and settle."""
        self.workers = [self._new(f"w{i}", weight) for i, weight in enumerate(weights)]
        for worker in self.workers[:joined]:
            worker.assignment.join()
            worker.status = "active"
        self.settle()

    def _pick(self, index: int, *statuses: Status) -> Worker:
        matching = [worker for worker in self.workers if worker.status in statuses]
        return matching[index % len(matching)]

    @precondition(_some("idle"))
    @rule(index=st.integers(0, 5))
    def join(self, index: int) -> None:
        """A worker that never joined, or left, joins (unless a restart took its name)."""
        worker = self._pick(index, "idle")
        try:
            worker.assignment.join()
        except MembershipConflictError:
            name = worker.assignment.member
            assert sum(w.assignment.member == name for w in self.workers) > 1
            return
        worker.status = "active"

    @precondition(_some("active"))
    @rule(index=st.integers(0, 5))
    def heartbeat(self, index: int) -> None:
        """A running worker heartbeats (rejoining if its lease was lost)."""
        self._beat(self._pick(index, "active"))

    def _beat(self, worker: Worker) -> None:
        try:
            worker.assignment.heartbeat()
        except MembershipConflictError:
            # Its lease ran out and a newer process took the name: it stops.
            name = worker.assignment.member
            assert sum(w.assignment.member == name for w in self.workers) > 1
            assert not any(worker.assignment.owns(key) for key in KEYS)
            worker.status = "idle"

    @precondition(_some("active"))
    @rule(index=st.integers(0, 5))
    def pause(self, index: int) -> None:
        """A running worker stops heartbeating for a while (a GC pause, a partition)."""
        worker = self._pick(index, "active")
        worker.status = "paused"

    @precondition(_some("paused"))
    @rule(index=st.integers(0, 5))
    def resume(self, index: int) -> None:
        """A paused worker runs again (its next heartbeat tells it whether it is still a member)."""
        worker = self._pick(index, "paused")
        worker.status = "active"

    @precondition(_some("active", "paused"))
    @rule(index=st.integers(0, 5))
    def kill(self, index: int) -> None:
        """A worker dies without leaving: only its lease running out removes it."""
        worker = self._pick(index, "active", "paused")
        worker.status = "killed"

    @precondition(_some("active"))
    @rule(index=st.integers(0, 5))
    def leave(self, index: int) -> None:
        """A running worker leaves gracefully."""
        worker = self._pick(index, "active")
        worker.assignment.leave()
        worker.status = "idle"

    @rule(seconds=ticks)
    def advance(self, seconds: float) -> None:
        """Time passes for everyone."""
        self.clock.advance(seconds)

    @rule()
    def observe(self) -> None:
        """Someone reads the view: the store removes members whose lease has run out."""
        self.store.view()

    @rule()
    def settle(self) -> None:
        """Running workers heartbeat round by round, until two rounds pass with no change.

        One round with no membership change has every running member acknowledge the
        version; in the next, each of them reads a view showing that.
        """
        quiet = 0
        while quiet < 2:
            before = self.store.view().version
            for worker in self.workers:
                if worker.status == "active":
                    self._beat(worker)
            quiet = quiet + 1 if self.store.view().version == before else 0
        assert self._settled() or self._quiet() or not self._all_members_running()

    def _all_members_running(self) -> bool:
        running = {w.assignment.member for w in self.workers if w.status == "active"}
        members = set(self.store.view().members)
        return bool(members) and members <= running

    def _settled(self) -> bool:
        """Whether the running workers are exactly the members of one settled view they all hold.

        Read from the workers' views alone (reading the store would remove expired members
        and change what the machine explores). Every change to the store is made by a
        worker's call, which hands that worker the new view, or is the removal of an expired
        member, who is then not running with lease time left: so this also means that the
        store is at that version.
        """
        running = [w.assignment for w in self.workers if w.status == "active"]
        views = [a.view for a in running]
        first = views[0] if views else None
        return (
            first is not None
            and set(first.members) == {a.member for a in running}
            and all(v is not None and v.version == first.version and v.settled for v in views)
            and all(a.expires_in() > 0 for a in running)
            and not self._quiet()
        )

    def _quiet(self) -> bool:
        """Whether the store has a quiet period running (only stores that can lose data do)."""
        return False

    @invariant()
    def no_key_has_two_owners(self) -> None:
        """No key is owned by two workers, and only workers with lease time left own keys."""
        owners: dict[object, str] = {}
        for worker in self.workers:
            assignment = worker.assignment
            has_lease = assignment.expires_in() > 0
            view = assignment.view
            for key in KEYS:
                if not assignment.owns(key):
                    continue
                assert has_lease, f"{assignment.member} owns {key!r} with no lease left"
                assert view is not None
                assert view.version == assignment.require(key)
                assert key not in owners, (
                    f"{key!r} owned by {owners.get(key)} and {assignment.member} "
                    f"(views {self._versions()})"
                )
                owners[key] = assignment.member

    @invariant()
    def settled_views_own_every_key(self) -> None:
        """When every member runs on a settled view, each key has exactly one owner: its route."""
        if not self.workers or not self._settled():
            return
        running = [w.assignment for w in self.workers if w.status == "active"]
        event(f"settled with {len(running)} running of {len(self.workers)}")
        for key in KEYS:
            owning = [a.member for a in running if a.owns(key)]
            assert [running[0].owner(key)] == owning

    def _versions(self) -> dict[str, tuple[int, dict[str, int]] | None]:
        return {
            w.assignment.member: _acks(w.assignment.view) for w in self.workers if w.assignment.view
        }


def _acks(view: MembershipView | None) -> tuple[int, dict[str, int]] | None:
    if view is None:
        return None
    return view.version, {name: member.acked for name, member in view.members.items()}


def _slots(weights: Mapping[str, float]) -> Router[str]:
    return SlotRouter(weights, slots=256)


class SlotOwnershipMachine(OwnershipMachine):
    """The same machine with every version's router a :class:`SlotRouter` built from its weights."""

    router = staticmethod(_slots)


class RestartingOwnershipMachine(OwnershipMachine):
    """The machine plus restarts: a new process takes the name of a paused or killed worker.

    A supervisor waits out the old incarnation's lease, then starts the new process. A
    paused old incarnation may then resume: its next heartbeat must tell it that it is no
    longer the member of that name.
    """

    @precondition(lambda self: len(self.workers) < 10 and _some("paused", "killed")(self))
    @rule(index=st.integers(0, 5))
    def restart(self, index: int) -> None:
        """A lease later, a new process joins under the name of a paused or killed worker."""
        old = self._pick(index, "paused", "killed")
        self.clock.advance(LEASE)
        new = self._new(old.assignment.member, 1.0)
        try:
            new.assignment.join()
        except MembershipConflictError:
            return
        new.status = "active"
        self.workers.append(new)


class DocumentMembership:
    """A store that keeps the group as one document, like Redis, and can lose it (a restart).

    It runs the backends' own step (:func:`membership_step`, guarded as Redis is), so a
    group found empty starts with a quiet period of one lease.
    """

    #: Whether a group found empty starts quiet (what the backends do for Redis).
    guarded = True

    def __init__(self, clock: ManualClock) -> None:
        self.group = "workers"
        self.document: str | None = None
        #: The end of the latest quiet period, on the store's clock (kept across wipes).
        self.quiet_until = -math.inf
        self._clock = clock

    def _apply(self, op: MembershipOp) -> MembershipView:
        check_membership_op(op)
        result, after = membership_step(
            "DocumentMembership",
            self.group,
            op,
            self.document,
            self._clock.monotonic(),
            guarded=self.guarded,
        )
        if after is not None:
            self.document = after
            quiet = json.loads(after)["quiet_until"]
            if quiet is not None:
                self.quiet_until = max(self.quiet_until, float(quiet))
        return membership_result(self.group, op, result)

    def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """Join, or renew."""
        return self._apply(
            MembershipOp(kind="join", member=member, token=token, weight=weight, lease=lease)
        )

    def heartbeat(self, member: str, token: str, *, lease: float, acked: int) -> MembershipView:
        """Renew and acknowledge."""
        return self._apply(
            MembershipOp(kind="heartbeat", member=member, token=token, lease=lease, acked=acked)
        )

    def leave(self, member: str, token: str) -> MembershipView:
        """Leave."""
        return self._apply(MembershipOp(kind="leave", member=member, token=token))

    def view(self) -> MembershipView:
        """The view."""
        return self._apply(MembershipOp(kind="view"))

    def close(self) -> None:
        """Nothing to close."""


class WipedStoreOwnershipMachine(RestartingOwnershipMachine):
    """Restarts, over a document store that can lose everything while workers keep running.

    After a wipe the version counts from zero again, the workers of the lost state act on
    until their own leases run out, and whoever talks to the store first starts it anew: the
    quiet period keeps the new members from owning keys before the old ones have stopped.
    """

    store: DocumentMembership

    def make_store(self) -> DocumentMembership:
        """A document store."""
        return DocumentMembership(self.clock)

    @rule()
    def wipe(self) -> None:
        """The store loses its data (a Redis restarted without persistence)."""
        self.store.document = None

    def _quiet(self) -> bool:
        return self.clock.monotonic() < self.store.quiet_until


SETTINGS = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    # A failure's explanation replays hundreds of variants of a slow machine: minutes.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow],
)

OwnershipMachine.TestCase.settings = SETTINGS
SlotOwnershipMachine.TestCase.settings = settings(SETTINGS, max_examples=15)

TestRendezvousOwnership = OwnershipMachine.TestCase
TestSlotOwnership = SlotOwnershipMachine.TestCase

RestartingOwnershipMachine.TestCase.settings = SETTINGS
WipedStoreOwnershipMachine.TestCase.settings = SETTINGS

TestRestartOwnership = RestartingOwnershipMachine.TestCase
TestWipedStoreOwnership = WipedStoreOwnershipMachine.TestCase


def naive_may_own(view: MembershipView, me: str, owner_at: Callable[[int], str | None]) -> bool:
    """The rule ``hash(key) % n == me`` stands for: own what routes to you now, wait for nobody."""
    return me in view.members and owner_at(view.version) == me


def test_the_machine_catches_the_naive_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``may_own`` replaced by ``route == me`` the machine finds a key with two owners."""
    monkeypatch.setattr(sharding, "may_own", naive_may_own)
    with pytest.raises(AssertionError, match="owned by"):
        run_state_machine_as_test(
            OwnershipMachine,
            settings=settings(
                SETTINGS,
                max_examples=200,
                derandomize=True,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            ),
        )


def test_the_machine_catches_a_store_that_forgets_without_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the quiet period, a wiped store lets new members own keys old ones still act on."""
    monkeypatch.setattr(DocumentMembership, "guarded", False)
    with pytest.raises(AssertionError, match="owned by"):
        run_state_machine_as_test(
            WipedStoreOwnershipMachine,
            settings=settings(
                SETTINGS,
                max_examples=200,
                derandomize=True,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            ),
        )
