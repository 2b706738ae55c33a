"""Checked by mypy (never run): the routers keep their signatures, and misuse is caught.

Every ``type: ignore`` below marks a misuse that must stay an error: with
``warn_unused_ignores`` a loosened signature makes the ignore unused and fails the check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from typing_extensions import assert_type

import invresilience as ir
from invresilience.typing import HashRouter, Router, ShardKey

# -- stable_hash ------------------------------------------------------------------------------

assert_type(ir.stable_hash("WH-0042"), int)
assert_type(ir.stable_hash(b"WH-0042"), int)
assert_type(ir.stable_hash(42), int)
assert_type(ir.stable_hash(42, version=1), int)
key: ShardKey = "WH-0042"
ir.stable_hash(key)
ir.stable_hash(1.5)  # type: ignore[arg-type]
ir.stable_hash(None)  # type: ignore[arg-type]
ir.stable_hash(("WH", 42))  # type: ignore[arg-type]
ir.stable_hash("WH-0042", version="1")  # type: ignore[arg-type]
ir.stable_hash("WH-0042", 1)  # type: ignore[call-arg]

# -- RendezvousRouter -------------------------------------------------------------------------

rendezvous = ir.RendezvousRouter(["worker-a", "worker-b"])
weighted = ir.RendezvousRouter({"worker-a": 1.0, "worker-b": 2})
ir.RendezvousRouter(name for name in ("a", "b"))
assert_type(rendezvous.route("WH-0042"), str)
assert_type(rendezvous.route(b"raw"), str)
assert_type(rendezvous.route(42), str)
assert_type(rendezvous.route_hash(12345), str)
assert_type(rendezvous.ranked("WH-0042"), list[str])
assert_type(rendezvous.ranked_hash(12345), list[str])
assert_type(rendezvous.nodes, Mapping[str, float])
assert_type(rendezvous.with_node("worker-c", 2.0), ir.RendezvousRouter)
assert_type(rendezvous.without_node("worker-a"), ir.RendezvousRouter)
assert_type(rendezvous.with_weight("worker-a", 3.0), ir.RendezvousRouter)
ir.RendezvousRouter(nodes=3)  # type: ignore[arg-type]
ir.RendezvousRouter([1, 2])  # type: ignore[list-item]
rendezvous.route(1.5)  # type: ignore[arg-type]
rendezvous.route(None)  # type: ignore[arg-type]
rendezvous.route_hash("WH-0042")  # type: ignore[arg-type]
rendezvous.with_node("worker-c", "heavy")  # type: ignore[arg-type]
rendezvous.with_weight("worker-a")  # type: ignore[call-arg]

# -- SlotRouter -------------------------------------------------------------------------------

slot = ir.SlotRouter(["worker-a", "worker-b"], slots=1024)
assert_type(ir.SlotRouter({"worker-a": 1.0}), ir.SlotRouter)
assert_type(slot.route("WH-0042"), str)
assert_type(slot.route_hash(12345), str)
assert_type(slot.ranked(7), list[str])
assert_type(slot.slots, int)
assert_type(slot.counts(), dict[str, int])
assert_type(slot.with_node("worker-c"), ir.SlotRouter)
assert_type(slot.without_node("worker-a"), ir.SlotRouter)
assert_type(slot.with_weight("worker-a", 2.0), ir.SlotRouter)
assert_type(slot.to_state(), dict[str, Any])
assert_type(ir.SlotRouter.from_state(slot.to_state()), ir.SlotRouter)
ir.SlotRouter(["worker-a"], 1024)  # type: ignore[call-arg]
ir.SlotRouter(["worker-a"], slots="many")  # type: ignore[arg-type]
ir.SlotRouter.from_state("state")  # type: ignore[arg-type]
slot.route(1.5)  # type: ignore[arg-type]

# -- JumpRouter -------------------------------------------------------------------------------

shards = ir.JumpRouter(16)
assert_type(shards.route("WH-0042"), int)
assert_type(shards.route_hash(12345), int)
assert_type(shards.ranked(b"raw"), list[int])
assert_type(shards.shards, int)
assert_type(shards.nodes, range)
assert_type(shards.with_shards(17), ir.JumpRouter)
ir.JumpRouter("16")  # type: ignore[arg-type]
ir.JumpRouter(16.0)  # type: ignore[arg-type]
shards.route(1.5)  # type: ignore[arg-type]
shard_name: str = shards.route("WH-0042")  # type: ignore[assignment]

# -- RangeRouter ------------------------------------------------------------------------------

ranges = ir.RangeRouter([1000, 2000], ["a", "b", "c"])
ir.RangeRouter(["m"], ["early", "late"])
ir.RangeRouter([b"m"], ["early", "late"])
assert_type(ranges.route(1500), str)
assert_type(ranges.split(1500, "d"), ir.RangeRouter)
assert_type(ranges.merge(1000), ir.RangeRouter)
assert_type(ranges.nodes, list[str])
ranges.route(1.5)  # type: ignore[arg-type]
ranges.split(1500)  # type: ignore[call-arg]
ir.RangeRouter([1.5], ["a", "b"])  # type: ignore[list-item]
ir.RangeRouter([1000], [1, 2])  # type: ignore[list-item]

# -- the protocols ----------------------------------------------------------------------------

as_router: Router[str] = rendezvous
as_router = slot
as_router = ranges
numbered: Router[int] = shards
as_hash_router: HashRouter[str] = slot
as_hash_router = rendezvous
numbered_hash: HashRouter[int] = shards
wrong_kind: Router[int] = rendezvous  # type: ignore[assignment]
not_hashing: HashRouter[str] = ranges  # type: ignore[assignment]


def owner_of(router: Router[str], item: ShardKey) -> str:
    return router.route(item)


owner_of(ranges, 1500)
owner_of(shards, 1500)  # type: ignore[arg-type]

# -- hot keys and bounded loads ---------------------------------------------------------------

hot = ir.HotKeyRouter(rendezvous, {"WH-HOT": 8, 42: 4})
assert_type(hot, ir.HotKeyRouter[str])
assert_type(hot.route("WH-HOT", "order-1"), str)
assert_type(hot.route("WH-0042"), str)
assert_type(hot.owners("WH-HOT"), list[str])
assert_type(hot.chunks("WH-HOT"), int)
assert_type(hot.router, HashRouter[str])
hot_shards = ir.HotKeyRouter(shards, {"WH-HOT": 8})
assert_type(hot_shards.route("WH-HOT", 3), int)
ir.HotKeyRouter(ranges, {"WH-HOT": 8})  # type: ignore[arg-type]
ir.HotKeyRouter(rendezvous, {"WH-HOT": "8"})  # type: ignore[dict-item]
ir.HotKeyRouter(rendezvous, {1.5: 8})  # type: ignore[dict-item]
hot.route("WH-HOT", 1.5)  # type: ignore[arg-type]

bounded = ir.BoundedLoadRouter(slot, factor=1.25)
assert_type(bounded, ir.BoundedLoadRouter[str])
assert_type(bounded.assign("WH-0042"), str)
assert_type(bounded.release("WH-0042"), bool)
assert_type(bounded.loads(), dict[str, int])
assert_type(bounded.factor, float)
assert_type(ir.BoundedLoadRouter(shards).assign(7), int)
ir.BoundedLoadRouter(slot, 1.25)  # type: ignore[call-arg]
ir.BoundedLoadRouter(ranges)  # type: ignore[arg-type]
bounded.assign(1.5)  # type: ignore[arg-type]

# -- diff -------------------------------------------------------------------------------------

moved = ir.diff(rendezvous, rendezvous.without_node("worker-a"), ["WH-0001", b"raw", 7])
assert_type(moved, ir.RouteDiff[str])
assert_type(moved.fraction, float)
assert_type(moved.total, int)
assert_type(moved.flows(), Counter[tuple[str, str]])
assert_type(len(moved), int)
assert_type(ir.diff(shards, shards.with_shards(20), range(100)), ir.RouteDiff[int])
moves: Sequence[tuple[str, str]] = list(moved.moved.values())
ir.diff(rendezvous, "new", ["WH-0001"])  # type: ignore[arg-type]
