"""Routers move only the keys that must move, stay balanced, and agree with brute force.

Hypothesis draws the nodes, weights and changes; the keys are a fixed sample (hashed once)
plus a few drawn ones, so that each example routes enough keys to see a wrong move. The
balance and movement-amount checks use 100,000 deterministic keys, not Hypothesis: they
are statistics, and a statistic is checked once on a sample large enough to be tight.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import invresilience as ir
from invresilience._core.sharding import stable_hash
from tests.strategies import (
    node_names,
    node_weights,
    range_boundaries,
    shard_keys,
    weighted_nodes,
)

if TYPE_CHECKING:
    from invresilience.typing import HashRouter, Router

#: A fixed sample of keys of every kind, and their hashes.
SAMPLE: list[Any] = [
    *(f"WH-{n:04d}" for n in range(300)),
    *(n.to_bytes(2, "big") for n in range(150)),
    *range(-75, 75),
]
HASHES = [stable_hash(key) for key in SAMPLE]
extra_keys = st.lists(shard_keys, max_size=20)

SLOT_COUNTS = st.sampled_from([64, 256, 1024])


def moves(old: HashRouter[Any], new: HashRouter[Any], hashes: list[int]) -> list[tuple[Any, Any]]:
    """(old node, new node) of every hash whose node changed."""
    pairs = ((old.route_hash(h), new.route_hash(h)) for h in hashes)
    return [(was, now) for was, now in pairs if was != now]


def with_extra(keys: list[Any]) -> list[int]:
    """The sample's hashes and those of *keys*."""
    return HASHES + [stable_hash(key) for key in keys]


def table(router: ir.SlotRouter) -> list[str]:
    """The slot table, read back through route_hash."""
    return [router.route_hash(slot) for slot in range(router.slots)]


# -- rendezvous -------------------------------------------------------------------------------


@given(weighted_nodes(), node_names, node_weights, extra_keys)
def test_rendezvous_add_moves_keys_only_to_the_new_node(
    nodes: dict[str, float], name: str, weight: float, keys: list[Any]
) -> None:
    """Adding a node moves exactly the keys it now wins, and only to it."""
    assume(name not in nodes)
    old = ir.RendezvousRouter(nodes)
    new = old.with_node(name, weight)
    for h in with_extra(keys):
        was, now = old.route_hash(h), new.route_hash(h)
        assert (was != now) == (now == name)


@given(weighted_nodes(min_size=2), st.data())
def test_rendezvous_remove_moves_only_its_keys_to_their_next_choice(
    nodes: dict[str, float], data: st.DataObject
) -> None:
    """Removing any node moves only its keys, each to its second choice."""
    gone = data.draw(st.sampled_from(sorted(nodes)))
    old = ir.RendezvousRouter(nodes)
    new = old.without_node(gone)
    for h in with_extra(data.draw(extra_keys)):
        ranked = old.ranked_hash(h)
        assert (ranked[1] if ranked[0] == gone else ranked[0]) == new.route_hash(h)


@given(weighted_nodes(min_size=2), node_weights, st.data())
def test_rendezvous_weight_change_moves_keys_only_to_or_from_that_node(
    nodes: dict[str, float], weight: float, data: st.DataObject
) -> None:
    """A heavier node only gains keys, a lighter one only loses them; nothing else moves."""
    name = data.draw(st.sampled_from(sorted(nodes)))
    old = ir.RendezvousRouter(nodes)
    new = old.with_weight(name, weight)
    for was, now in moves(old, new, with_extra(data.draw(extra_keys))):
        if weight > nodes[name]:
            assert now == name
        else:
            assert was == name
            assert weight < nodes[name]


# -- slot router ------------------------------------------------------------------------------


@given(weighted_nodes(), node_names, node_weights, SLOT_COUNTS)
def test_slot_add_moves_exactly_the_slots_the_new_node_takes(
    nodes: dict[str, float], name: str, weight: float, slots: int
) -> None:
    """The new node takes its rounded share of slots from others; no other slot changes hands."""
    assume(name not in nodes)
    old = ir.SlotRouter(nodes, slots=slots)
    new = old.with_node(name, weight)
    changed = [(a, b) for a, b in zip(table(old), table(new), strict=True) if a != b]
    ideal = slots * weight / (sum(nodes.values()) + weight)
    assert all(now == name for _, now in changed)
    assert new.counts()[name] == len(changed)
    assert abs(len(changed) - ideal) <= 0.5 or (ideal < 0.5 and len(changed) == 1)
    assert all(now == name for _, now in moves(old, new, HASHES))


@given(weighted_nodes(min_size=2), SLOT_COUNTS, st.data())
def test_slot_remove_moves_exactly_the_removed_nodes_slots(
    nodes: dict[str, float], slots: int, data: st.DataObject
) -> None:
    """Removing any node (a middle one too) hands on its slots and moves no other."""
    gone = data.draw(st.sampled_from(sorted(nodes)))
    old = ir.SlotRouter(nodes, slots=slots)
    new = old.without_node(gone)
    changed = [(a, b) for a, b in zip(table(old), table(new), strict=True) if a != b]
    assert all(was == gone for was, _ in changed)
    assert old.counts()[gone] == len(changed)
    assert gone not in table(new)


@given(weighted_nodes(min_size=2), node_weights, SLOT_COUNTS, st.data())
def test_slot_weight_change_moves_slots_only_to_or_from_that_node(
    nodes: dict[str, float], weight: float, slots: int, data: st.DataObject
) -> None:
    """Reweighting moves slots only to or from the node, and only as many as its count changes."""
    name = data.draw(st.sampled_from(sorted(nodes)))
    old = ir.SlotRouter(nodes, slots=slots)
    new = old.with_weight(name, weight)
    changed = [(a, b) for a, b in zip(table(old), table(new), strict=True) if a != b]
    assert all(name in pair for pair in changed)
    assert abs(new.counts()[name] - old.counts()[name]) == len(changed)


def deviation(router: ir.SlotRouter) -> float:
    """The largest gap between a node's slot count and its weighted share."""
    total = math.fsum(router.nodes.values())
    counts = router.counts()
    return max(abs(counts[n] - router.slots * w / total) for n, w in router.nodes.items())


class SlotTableStaysBalanced(RuleBasedStateMachine):
    """Any sequence of joins, leaves and reweights keeps the table within a slot of its shares.

    The model is the weight of each node; after every step the machine checks the counts
    against the weighted ideal, that every node keeps a slot, that the step moved slots
    only to or from the node it named and no more than the counts changed, and that the
    state round-trips through JSON.

    Weights are 0.5 to 4 and tables hold at least 64 slots for at most 8 nodes, so every
    share is at least one slot. Below that the one-slot minimum can push a node further
    (a node with a share of 0.3 holds 1, and the others pay for it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.router: ir.SlotRouter
        self.weights: dict[str, float] = {}

    @initialize(nodes=weighted_nodes(max_size=6), slots=st.sampled_from([64, 256]))
    def build(self, nodes: dict[str, float], slots: int) -> None:
        self.router = ir.SlotRouter(nodes, slots=slots)
        self.weights = dict(nodes)

    def step(self, new: ir.SlotRouter, name: str) -> None:
        before, after = table(self.router), table(new)
        changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert all(name in pair for pair in changed)
        old_count = self.router.counts().get(name, 0)
        assert abs(new.counts().get(name, 0) - old_count) == len(changed)
        self.router = new

    @precondition(lambda self: len(self.weights) < 8)
    @rule(name=node_names, weight=node_weights)
    def join(self, name: str, weight: float) -> None:
        if name in self.weights:
            return
        self.weights[name] = weight
        self.step(self.router.with_node(name, weight), name)

    @precondition(lambda self: len(self.weights) > 1)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.weights)))
        del self.weights[name]
        self.step(self.router.without_node(name), name)

    @rule(data=st.data(), weight=node_weights)
    def reweight(self, data: st.DataObject, weight: float) -> None:
        name = data.draw(st.sampled_from(sorted(self.weights)))
        self.weights[name] = weight
        self.step(self.router.with_weight(name, weight), name)

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.weights == dict(self.router.nodes)
        assert self.router.slots == sum(self.router.counts().values())
        assert min(self.router.counts().values()) >= 1

    @invariant()
    def within_one_slot_of_the_share(self) -> None:
        assert deviation(self.router) < 1

    @invariant()
    def round_trips_through_json(self) -> None:
        state = json.loads(json.dumps(self.router.to_state()))
        assert self.router == ir.SlotRouter.from_state(state)


SlotTableStaysBalanced.TestCase.settings = settings(
    stateful_step_count=25, suppress_health_check=[HealthCheck.too_slow]
)
TestSlotTableStaysBalanced = SlotTableStaysBalanced.TestCase


@given(weighted_nodes(), SLOT_COUNTS, st.lists(st.tuples(node_names, node_weights), max_size=4))
def test_slot_state_round_trips(
    nodes: dict[str, float], slots: int, changes: list[tuple[str, float]]
) -> None:
    """from_state(to_state()) rebuilds an equal router that routes every slot the same."""
    router = ir.SlotRouter(nodes, slots=slots)
    for name, weight in changes:
        if name not in router.nodes:
            router = router.with_node(name, weight)
        elif len(router.nodes) > 1:
            router = router.without_node(name)
        else:
            router = router.with_weight(name, weight)
    again = ir.SlotRouter.from_state(json.loads(json.dumps(router.to_state())))
    assert router == again
    assert hash(router) == hash(again)
    assert table(router) == table(again)


# -- jump -------------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=300), extra_keys)
def test_jump_growth_moves_keys_only_to_the_new_shard(shards: int, keys: list[Any]) -> None:
    """Growing n -> n+1 shards moves only keys to shard n (and shrinking back only those)."""
    old, new = ir.JumpRouter(shards), ir.JumpRouter(shards + 1)
    assert all(now == shards for _, now in moves(old, new, with_extra(keys)))


# -- diff -------------------------------------------------------------------------------------


routers_over_abc = st.one_of(
    weighted_nodes(min_size=1, max_size=4).map(ir.RendezvousRouter),
    st.builds(ir.SlotRouter, weighted_nodes(min_size=1, max_size=4), slots=st.just(64)),
)


@given(routers_over_abc, routers_over_abc, st.lists(shard_keys, max_size=60))
def test_diff_reports_exactly_the_changed_keys(
    old: Router[str], new: Router[str], keys: list[Any]
) -> None:
    """diff() lists every key routed differently, with both nodes, in order, and no other."""
    keys += SAMPLE[::10]
    expected: dict[Any, tuple[str, str]] = {}
    for key in keys:
        if old.route(key) != new.route(key):
            expected[key] = (old.route(key), new.route(key))
    found = ir.diff(old, new, iter(keys))
    assert list(expected.items()) == list(found.moved.items())
    distinct = {bytes(k) if isinstance(k, bytearray) else k for k in keys}
    assert len(distinct) == found.total
    assert len(expected) == len(found)


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=1, max_value=50))
def test_diff_of_jump_routers_matches_brute_force(before: int, after: int) -> None:
    """Between any two shard counts diff() agrees with comparing routes one by one."""
    old, new = ir.JumpRouter(before), ir.JumpRouter(after)
    found = ir.diff(old, new, SAMPLE[:300])
    expected = {
        k: (old.route(k), new.route(k)) for k in SAMPLE[:300] if old.route(k) != new.route(k)
    }
    assert expected == dict(found.moved)
    assert Counter(expected.values()) == found.flows()


# -- range router -----------------------------------------------------------------------------


def scan(router: ir.RangeRouter, key: Any) -> str:
    """The node of the range holding *key*, by a linear scan over ranges()."""
    for low, high, node in router.ranges():
        if (low is None or low <= key) and (high is None or key < high):
            return node
    raise AssertionError(f"no range holds {key!r}")  # pragma: no cover


def probes_for(bounds: list[Any], drawn: list[Any]) -> list[Any]:
    """Drawn keys plus each boundary and its neighbours, of the boundaries' type."""
    if not bounds:
        return drawn
    if isinstance(bounds[0], int):
        return drawn + [b + d for b in bounds for d in (-1, 0, 1)]
    return drawn + bounds + [b + b[:1] for b in bounds] + [b[:-1] for b in bounds]


def key_like(bounds: list[Any]) -> st.SearchStrategy[Any]:
    """Keys of the boundaries' type (ints when there are no boundaries)."""
    if bounds and isinstance(bounds[0], str):
        return st.text(alphabet="abcyz", max_size=4)
    if bounds and isinstance(bounds[0], bytes):
        return st.binary(max_size=3)
    return st.integers(min_value=-1100, max_value=1100)


def keys_like(bounds: list[Any]) -> st.SearchStrategy[list[Any]]:
    """Up to 20 keys of the boundaries' type."""
    return st.lists(key_like(bounds), max_size=20)


range_nodes = st.sampled_from(["n0", "n1", "n2", "n3"])


@given(range_boundaries(), st.data())
def test_range_routing_matches_a_linear_scan(bounds: list[Any], data: st.DataObject) -> None:
    """route() returns the node of the one range that holds the key, for int, str and bytes."""
    nodes = data.draw(st.lists(range_nodes, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    router = ir.RangeRouter(bounds, nodes)
    for key in probes_for(bounds, data.draw(keys_like(bounds))):
        assert scan(router, key) == router.route(key)


@given(range_boundaries(), st.data())
def test_split_and_merge_keep_the_scan_true_and_round_trip(
    bounds: list[Any], data: st.DataObject
) -> None:
    """A split sends [at, next boundary) to the new node, a merge undoes it exactly."""
    nodes = data.draw(st.lists(range_nodes, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    router = ir.RangeRouter(bounds, nodes)
    at = data.draw(key_like(bounds).filter(lambda key: key not in bounds))
    split = router.split(at, "new")
    keys = probes_for(split.boundaries, data.draw(keys_like(bounds)))
    higher = [b for b in bounds if b > at]
    for key in keys:
        assert scan(split, key) == split.route(key)
        inside = at <= key and (not higher or key < higher[0])
        assert ("new" if inside else router.route(key)) == split.route(key)
    assert router == split.merge(at)
    for boundary in split.boundaries:
        merged = split.merge(boundary)
        for key in keys:
            assert scan(merged, key) == merged.route(key)


# -- balance and the amount of movement (deterministic, 100,000 keys) ------------------------

BIG = [stable_hash(f"item-{n}") for n in range(100_000)]
TEN = [f"worker-{n}" for n in range(10)]


def _loads(router: HashRouter[Any]) -> Counter[Any]:
    """How many of the 100,000 keys each node gets."""
    return Counter(router.route_hash(h) for h in BIG)


def test_balance_over_100000_keys_on_10_nodes_is_within_five_percent() -> None:
    """Rendezvous, slot and jump routers put at most 1.05 x the mean on any of 10 nodes."""
    for router in (ir.RendezvousRouter(TEN), ir.SlotRouter(TEN), ir.JumpRouter(10)):
        loads = _loads(router)
        assert 10 == len(loads)
        assert max(loads.values()) / (len(BIG) / 10) <= 1.05, (router, loads)


def test_weighted_balance_follows_the_weights() -> None:
    """With weights 1, 2 and 3 each node's load is within 5% of its weighted share."""
    weights = {f"worker-{n}": 1.0 + n % 3 for n in range(10)}
    total = sum(weights.values())
    for router in (ir.RendezvousRouter(weights), ir.SlotRouter(weights)):
        loads = _loads(router)
        for name, weight in weights.items():
            assert abs(loads[name] / (len(BIG) * weight / total) - 1) <= 0.05, (router, name)


def test_movement_on_adding_and_removing_a_middle_node_is_near_optimal() -> None:
    """Adding an 11th node, or removing the 6th of 10, moves within 5% of the optimal keys."""
    for old in (ir.RendezvousRouter(TEN), ir.SlotRouter(TEN)):
        before = [old.route_hash(h) for h in BIG]
        for new, optimal in (
            (old.with_node("worker-10"), 1 / 11),
            (old.without_node("worker-5"), 0.1),
        ):
            moved = sum(was != new.route_hash(h) for was, h in zip(before, BIG, strict=True))
            assert 0.95 <= moved / (len(BIG) * optimal) <= 1.05, (old, new)
    grown = len(moves(ir.JumpRouter(10), ir.JumpRouter(11), BIG))
    assert 0.95 <= grown / (len(BIG) / 11) <= 1.05
    modulo = sum(h % 10 != h % 11 for h in BIG)  # what this replaces: about 10 times as many
    assert modulo > 9 * grown
