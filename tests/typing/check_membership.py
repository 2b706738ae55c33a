"""Checked by mypy (never run): membership stores and shard assignments keep their types.

Every ``type: ignore`` below marks a misuse that must stay an error: with
``warn_unused_ignores`` a loosened signature makes the ignore unused and fails the check.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING

from typing_extensions import assert_type

import invresilience as ir
from invresilience.backends.memory import AsyncMemoryMembership, MemoryBackend, MemoryMembership
from invresilience.testing import ManualClock
from invresilience.typing import AsyncMembership, Member, Membership, MembershipView, Router

if TYPE_CHECKING:
    from invresilience.backends.redis import AsyncRedisMembership, RedisMembership

clock = ManualClock()
backend = MemoryBackend(clock=clock)

# Every store satisfies its protocol.
sync_store: Membership = backend.membership("workers")
async_store: AsyncMembership = backend.async_membership("workers")
memory: Membership = MemoryMembership("workers", clock=clock)
async_memory: AsyncMembership = AsyncMemoryMembership(MemoryMembership("workers"))
static: Membership = ir.StaticMembership(["a", "b"])
async_static: AsyncMembership = ir.AsyncStaticMembership({"a": 1.0, "b": 2.0})


def redis_stores(sync: RedisMembership, asynchronous: AsyncRedisMembership) -> None:
    """The Redis stores are memberships too."""
    first: Membership = sync
    second: AsyncMembership = asynchronous
    del first, second


# A sync store is not an async one, nor the reverse.
wrong_async: AsyncMembership = MemoryMembership("workers")  # type: ignore[assignment]
wrong_sync: Membership = AsyncMemoryMembership()  # type: ignore[assignment]


def slot_router(weights: Mapping[str, float]) -> Router[str]:
    """A router factory: any function of a version's weights."""
    return ir.SlotRouter(weights)


assignment = ir.ShardAssignment(
    sync_store,
    "a",
    weight=2.0,
    lease=datetime.timedelta(seconds=10),
    heartbeat=2.0,
    router=slot_router,
    clock=clock,
)
assert_type(assignment.join(), MembershipView)
assert_type(assignment.heartbeat(), MembershipView)
assert_type(assignment.owns("WH-0042"), bool)
assert_type(assignment.owns(42), bool)
assert_type(assignment.require(b"WH"), int)
assert_type(assignment.owner("WH-0042"), str)
assert_type(assignment.version, int)
assert_type(assignment.view, MembershipView | None)
with assignment.hold("WH-0042") as fence:
    assert_type(fence, int)
with assignment as same:
    assert_type(same, ir.ShardAssignment)
assignment.owns(4.2)  # type: ignore[arg-type]
assignment.hold(None)  # type: ignore[arg-type]
ir.ShardAssignment(async_store, "a")  # type: ignore[arg-type]
ir.ShardAssignment(sync_store, "a", router=ir.JumpRouter)  # type: ignore[arg-type]

view = assignment.view
if view is not None:
    member = view.members["a"]
    assert_type(member, Member)
    assert_type(member.incarnation, str)
    assert_type(view.quiet_for, float)
    assert_type(view.weights_at(1), Mapping[str, float] | None)


async def use_async() -> None:
    """The async twin awaits its I/O and answers owns() without it."""
    twin = ir.AsyncShardAssignment(async_store, "b", lease=10.0)
    assert_type(await twin.join(), MembershipView)
    assert_type(await twin.heartbeat(), MembershipView)
    assert_type(twin.owns("WH-0042"), bool)
    with twin.hold("WH-0042") as fence:
        assert_type(fence, int)
    async with twin as same:
        assert_type(same, ir.AsyncShardAssignment)
    await twin.leave()
    ir.AsyncShardAssignment(sync_store, "b")  # type: ignore[arg-type]
