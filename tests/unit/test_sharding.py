"""Routers: configuration errors, preference orders, hot keys, bounded loads and route diffs.

The movement and balance properties are in ``tests/property/test_sharding_properties.py``
and the hash's test vectors in ``tests/unit/test_sharding_vectors.py``.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import threading
from collections import Counter
from typing import Any

import pytest

import invresilience as ir
from invresilience._core.sharding import (
    MASK64,
    add_to_table,
    build_table,
    jump,
    mix64,
    probe,
    quotas,
    remove_from_table,
    reweight_table,
    stable_hash,
    tagged_hash,
    unit_float,
)
from invresilience.exceptions import ConfigurationError

KEYS: list[Any] = [*(f"WH-{n:04d}" for n in range(300)), *range(-50, 50), b"", b"\x00"]
FIVE = ["a", "b", "c", "d", "e"]


def configuration_error(call: Any, *args: Any, **kwargs: Any) -> ConfigurationError:
    """The ConfigurationError *call* raises."""
    with pytest.raises(ConfigurationError) as caught:
        call(*args, **kwargs)
    return caught.value


# -- node lists and weights -------------------------------------------------------------------

NAMED_ROUTERS = [ir.RendezvousRouter, ir.SlotRouter]


@pytest.mark.parametrize("cls", NAMED_ROUTERS)
@pytest.mark.parametrize(
    ("nodes", "field", "value", "problem"),
    [
        ([], "nodes", [], "must name at least one node"),
        ({}, "nodes", {}, "must name at least one node"),
        (["a", "b", "a"], "nodes", "a", "names a node twice"),
        (["a", ""], "nodes", "", "node names must be non-empty str"),
        (["a", 3], "nodes", 3, "node names must be non-empty str"),
        ({"a": 1.0, b"b": 1.0}, "nodes", b"b", "node names must be non-empty str"),
        ("abc", "nodes", "abc", "not one string"),
        (b"abc", "nodes", b"abc", "not one string"),
        ({"a": 0}, "nodes['a']", 0, "weight must be a finite number > 0"),
        ({"a": -1.0}, "nodes['a']", -1.0, "weight must be a finite number > 0"),
        ({"a": math.inf}, "nodes['a']", math.inf, "weight must be a finite number > 0"),
        ({"a": True}, "nodes['a']", True, "weight must be a finite number > 0"),
        ({"a": "1"}, "nodes['a']", "1", "weight must be a finite number > 0"),
    ],
)
def test_bad_nodes_are_refused_naming_the_field_and_value(
    cls: Any, nodes: Any, field: str, value: Any, problem: str
) -> None:
    """Empty, duplicate, unnamed, one-string or badly weighted nodes raise ConfigurationError."""
    error = configuration_error(cls, nodes)
    assert (f"{cls.__name__}.{field}", value) == (error.field, error.value)
    assert f"{cls.__name__}.{field} " in str(error)
    assert problem in str(error)
    assert f"got {value!r}" in str(error)


@pytest.mark.parametrize("cls", NAMED_ROUTERS)
def test_a_nan_weight_is_refused(cls: Any) -> None:
    """NaN is not a weight: ConfigurationError naming the node."""
    error = configuration_error(cls, {"a": 1.0, "b": math.nan})
    assert f"{cls.__name__}.nodes['b']" == error.field
    assert math.isnan(error.value)


@pytest.mark.parametrize("cls", NAMED_ROUTERS)
def test_nodes_may_be_any_iterable_and_weights_ints(cls: Any) -> None:
    """A generator of names and a mapping with int weights both work; weights become floats."""
    router = cls(name for name in ("b", "a"))
    assert {"a": 1.0, "b": 1.0} == router.nodes
    weighted = cls({"b": 2, "a": 1})
    assert ["a", "b"] == list(weighted.nodes)
    assert all(type(w) is float for w in weighted.nodes.values())


@pytest.mark.parametrize(
    ("slots", "problem"),
    [
        (0, "must be a power of two"),
        (-4, "must be a power of two"),
        (3, "must be a power of two"),
        (96, "must be a power of two"),
        (64.0, "must be a power of two"),
        (True, "must be a power of two"),
        (4, "must be at least the number of nodes (5)"),
    ],
)
def test_bad_slot_counts_are_refused(slots: Any, problem: str) -> None:
    """slots must be an int power of two, at least the number of nodes."""
    error = configuration_error(ir.SlotRouter, FIVE, slots=slots)
    assert ("SlotRouter.slots", slots) == (error.field, error.value)
    assert problem in str(error)
    assert f"got {slots!r}" in str(error)


# -- RendezvousRouter -------------------------------------------------------------------------


def test_rendezvous_routes_every_key_to_a_node_and_route_is_route_hash_of_stable_hash() -> None:
    """route(key) is route_hash(stable_hash(key)), weighted or not."""
    for router in (ir.RendezvousRouter(FIVE), ir.RendezvousRouter({"a": 1, "b": 3})):
        for key in KEYS:
            assert router.route_hash(stable_hash(key)) == router.route(key)
            assert router.route(key) in router.nodes


def test_rendezvous_does_not_depend_on_the_order_nodes_are_given() -> None:
    """Nodes in any order make an equal router with the same routes, hash and repr."""
    one = ir.RendezvousRouter({"a": 1.0, "b": 2.0, "c": 1.0})
    other = ir.RendezvousRouter({"c": 1.0, "b": 2.0, "a": 1.0})
    assert one == other
    assert hash(one) == hash(other)
    assert repr(one) == repr(other) == "RendezvousRouter({'a': 1.0, 'b': 2.0, 'c': 1.0})"
    assert [one.route(k) for k in KEYS] == [other.route(k) for k in KEYS]


def test_rendezvous_with_one_node_routes_everything_to_it() -> None:
    """A single node owns every key and is the whole preference order."""
    router = ir.RendezvousRouter(["only"])
    assert {"only"} == {router.route(k) for k in KEYS}
    assert ["only"] == router.ranked("WH-0001")


@pytest.mark.parametrize(
    "router",
    [
        ir.RendezvousRouter(FIVE),
        ir.RendezvousRouter({"a": 1.0, "b": 2.0, "c": 0.5, "d": 1.0}),
        ir.RendezvousRouter({"a": 3.0, "b": 3.0}),
    ],
    ids=["equal", "weighted", "equal-not-one"],
)
def test_rendezvous_ranked_starts_with_the_route_and_lists_every_node_once(
    router: ir.RendezvousRouter,
) -> None:
    """ranked()[0] is route(); ranked() is a permutation of the nodes; ranked_hash agrees."""
    firsts: Counter[str] = Counter()
    for key in KEYS:
        ranked = router.ranked(key)
        assert router.route(key) == ranked[0]
        assert sorted(router.nodes) == sorted(ranked)
        assert ranked == router.ranked_hash(stable_hash(key))
        firsts[ranked[-1]] += 1
    assert set(router.nodes) == set(firsts)  # every node is somebody's last choice


def test_rendezvous_ranked_is_the_failover_order() -> None:
    """Removing a key's owner sends it to its second choice, removing that to its third."""
    router = ir.RendezvousRouter({"a": 1.0, "b": 2.0, "c": 0.5, "d": 1.0, "e": 1.5})
    for key in KEYS:
        first, second, third, *_ = router.ranked(key)
        smaller = router.without_node(first)
        assert second == smaller.route(key)
        assert third == smaller.without_node(second).route(key)


def test_rendezvous_weights_scale_the_share_of_keys() -> None:
    """A node of weight 3 gets about three times the keys of a node of weight 1."""
    router = ir.RendezvousRouter({"light": 1.0, "heavy": 3.0})
    loads = Counter(router.route(f"item-{n}") for n in range(20_000))
    assert 2.8 < loads["heavy"] / loads["light"] < 3.2


def test_rendezvous_with_node_adds_or_reweights_and_validates() -> None:
    """with_node adds a node (or sets its weight); bad names and weights raise."""
    router = ir.RendezvousRouter(["a", "b"])
    assert {"a": 1.0, "b": 1.0, "c": 2.0} == router.with_node("c", 2.0).nodes
    assert {"a": 1.0, "b": 4.0} == router.with_node("b", 4.0).nodes
    assert {"a": 1.0, "b": 1.0} == router.nodes  # routers are values: the original is unchanged
    error = configuration_error(router.with_node, "")
    assert ("RendezvousRouter.nodes", "") == (error.field, error.value)
    error = configuration_error(router.with_node, "c", 0.0)
    assert ("RendezvousRouter.nodes['c']", 0.0) == (error.field, error.value)


def test_rendezvous_without_node_and_with_weight_need_a_known_node() -> None:
    """Unknown names raise KeyError listing the nodes; removing the last node is refused."""
    router = ir.RendezvousRouter(["a", "b"])
    with pytest.raises(KeyError, match=r"RendezvousRouter has no node 'z'; nodes: \['a', 'b'\]"):
        router.without_node("z")
    with pytest.raises(KeyError, match="has no node 'z'"):
        router.with_weight("z", 2.0)
    assert {"a": 1.0, "b": 2.0} == router.with_weight("b", 2.0).nodes
    assert {"b": 1.0} == router.without_node("a").nodes
    error = configuration_error(router.without_node("a").without_node, "b")
    assert ("RendezvousRouter.nodes", {}) == (error.field, error.value)
    assert "must name at least one node" in str(error)
    error = configuration_error(router.with_weight, "a", -2)
    assert ("RendezvousRouter.nodes['a']", -2) == (error.field, error.value)


def test_internal_tags_never_collide_with_a_key_encoding() -> None:
    """No user key hashes to a node seed or chunk hash: the tags are domain-separated."""
    forged = int.from_bytes(b"nvres-node\x00alpha", "big")  # the old b"invres-node\0alpha"
    assert stable_hash(forged) != tagged_hash(b"invres-node", b"alpha")
    for key in (0, "", b"", "invres-node", b"invres-node"):
        assert stable_hash(key) != tagged_hash(b"invres-node", b"")


def test_tagged_hash_parts_are_length_prefixed() -> None:
    """Moving bytes between the tag and the parts, or between parts, changes the hash."""
    hashes = {
        tagged_hash(b"ab", b"c"),
        tagged_hash(b"a", b"bc"),
        tagged_hash(b"abc"),
        tagged_hash(b"ab", b"", b"c"),
        tagged_hash(b"ab", b"c", b""),
    }
    assert 5 == len(hashes)


# -- SlotRouter -------------------------------------------------------------------------------


def test_slot_router_defaults_to_65536_slots_spread_within_one() -> None:
    """The default table has 2**16 slots and every node holds its share to within one."""
    router = ir.SlotRouter(FIVE)
    assert 65536 == router.slots
    assert {"a": 13108, "b": 13107, "c": 13107, "d": 13107, "e": 13107} == router.counts()
    weighted = ir.SlotRouter({"a": 1.0, "b": 2.0, "c": 3.0}, slots=64)
    assert {"a": 11, "b": 21, "c": 32} == weighted.counts()


def test_slot_router_route_ranked_and_route_hash_agree() -> None:
    """route is the table entry of the hash's low bits; ranked starts there and has every node."""
    router = ir.SlotRouter(FIVE, slots=64)
    for key in KEYS:
        hashed = stable_hash(key)
        assert router.route_hash(hashed) == router.route(key)
        assert router.route_hash(hashed & 63) == router.route(key)
        ranked = router.ranked(key)
        assert router.route(key) == ranked[0]
        assert sorted(FIVE) == sorted(ranked)
        assert ranked == router.ranked_hash(hashed)


def test_slot_router_ranked_falls_back_to_name_order_for_nodes_the_probes_miss() -> None:
    """Nodes no probe reaches (here: 40 nodes, most with one slot of 64) come last, by name."""
    nodes = {f"n{i:02d}": 1.0 for i in range(40)}
    nodes["n00"] = 30.0
    router = ir.SlotRouter(nodes, slots=64)
    for key in KEYS[:50]:
        ranked = router.ranked(key)
        assert router.route(key) == ranked[0]
        assert sorted(nodes) == sorted(ranked)


def test_slot_router_with_node_takes_its_share_and_validates() -> None:
    """with_node takes about an even share; an existing name, bad weight or full table raise."""
    router = ir.SlotRouter(["a", "b", "c"], slots=64)
    grown = router.with_node("d")
    assert 16 == grown.counts()["d"]
    assert 64 == sum(grown.counts().values())
    error = configuration_error(router.with_node, "a")
    assert ("SlotRouter.nodes", "a") == (error.field, error.value)
    assert "is already a node; use with_weight" in str(error)
    error = configuration_error(router.with_node, "d", math.nan)
    assert "SlotRouter.nodes['d']" == error.field
    error = configuration_error(router.with_node, "")
    assert ("SlotRouter.nodes", "") == (error.field, error.value)
    full = ir.SlotRouter(["a", "b", "c", "d"], slots=4)
    error = configuration_error(full.with_node, "e")
    assert ("SlotRouter.slots", 4) == (error.field, error.value)
    assert "at least the number of nodes (5)" in str(error)


def test_slot_router_without_node_hands_on_its_slots_and_keeps_the_last() -> None:
    """without_node gives its slots away; unknown names raise KeyError; the last node stays."""
    router = ir.SlotRouter(["a", "b", "c"], slots=64)
    smaller = router.without_node("b")
    assert {"a": 32, "c": 32} == smaller.counts()
    with pytest.raises(KeyError, match="SlotRouter has no node 'z'"):
        router.without_node("z")
    error = configuration_error(smaller.without_node("a").without_node, "c")
    assert ("SlotRouter.nodes", "c") == (error.field, error.value)
    assert "is the last node" in str(error)


def test_slot_router_with_weight_moves_slots_to_and_from_the_node() -> None:
    """with_weight grows or shrinks the node's slot count to its new share."""
    router = ir.SlotRouter(["a", "b", "c", "d"], slots=64)
    heavier = router.with_weight("a", 5.0)
    assert {"a": 40, "b": 8, "c": 8, "d": 8} == heavier.counts()
    assert {"a": 16, "b": 16, "c": 16, "d": 16} == heavier.with_weight("a", 1.0).counts()
    assert router.counts() == router.with_weight("a", 1.0).counts()
    with pytest.raises(KeyError, match="has no node 'z'"):
        router.with_weight("z", 2.0)
    error = configuration_error(router.with_weight, "a", 0)
    assert ("SlotRouter.nodes['a']", 0) == (error.field, error.value)


def test_slot_router_a_donor_keeps_its_last_slot() -> None:
    """A node down to one slot gives none to a joiner, even when it is the most over its share."""
    router = ir.SlotRouter(["a", "b"], slots=4).with_weight("a", 0.01)
    assert {"a": 1, "b": 3} == router.counts()
    grown = router.with_node("c")
    assert {"a": 1, "b": 1, "c": 2} == grown.counts()
    assert router.route_hash(0) == grown.route_hash(0) == "a"


def test_slot_router_a_node_can_reach_every_slot_but_the_others_last() -> None:
    """Reweighting to a huge weight leaves each other node exactly one slot."""
    router = ir.SlotRouter(["a", "b", "c"], slots=8).with_weight("a", 1e9)
    assert {"a": 6, "b": 1, "c": 1} == router.counts()


def test_slot_router_depends_on_its_history() -> None:
    """A router grown to {a..e} equals {a..e} in nodes but not in table: both are balanced."""
    grown = ir.SlotRouter(["a", "b", "c", "d"], slots=64).with_node("e")
    built = ir.SlotRouter(FIVE, slots=64)
    assert grown.nodes == built.nodes
    assert grown != built
    assert sorted(grown.counts().values()) == sorted(built.counts().values())


def test_slot_router_equality_hash_and_repr() -> None:
    """Routers with the same nodes and table are equal and hash alike; others are not."""
    one, other = ir.SlotRouter(["a", "b"], slots=8), ir.SlotRouter(["b", "a"], slots=8)
    assert one == other
    assert hash(one) == hash(other)
    assert "SlotRouter({'a': 1.0, 'b': 1.0})" == repr(one)
    assert one != ir.SlotRouter(["a", "b"], slots=16)
    assert one != ir.RendezvousRouter(["a", "b"])
    assert ir.RendezvousRouter(["a", "b"]) != one
    assert one.__eq__("SlotRouter") is NotImplemented


def test_slot_router_state_is_json_and_round_trips() -> None:
    """to_state is JSON-ready, names the hash, and from_state rebuilds an equal router."""
    router = ir.SlotRouter({"a": 1.0, "b": 2.0}, slots=8).with_node("c")
    state = router.to_state()
    assert state == json.loads(json.dumps(state))
    assert ("SlotRouter", "invres-blake2b64-v1", 8, 1) == (
        state["kind"],
        state["hash"],
        state["slots"],
        state["width"],
    )
    assert [["a", 1.0], ["b", 2.0], ["c", 1.0]] == state["nodes"]
    assert router == ir.SlotRouter.from_state(state)


def test_slot_router_state_of_more_than_256_nodes_uses_two_bytes_per_slot() -> None:
    """Past 256 nodes a slot's node index takes two bytes, and still round-trips."""
    router = ir.SlotRouter([f"n{i:03d}" for i in range(300)], slots=512)
    state = router.to_state()
    assert 2 == state["width"]
    assert 1024 == len(base64.b64decode(state["table"]))
    assert router == ir.SlotRouter.from_state(state)


def _state(**changes: Any) -> dict[str, Any]:
    state = ir.SlotRouter(["a", "b"], slots=4).to_state()
    state.update(changes)
    return state


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({}, "is not a SlotRouter state ('kind')"),
        (_state(kind="RendezvousRouter"), "kind 'RendezvousRouter' / hash"),
        (_state(hash="invres-blake2b64-v2"), "hash 'invres-blake2b64-v2'"),
        (_state(slots="many"), "is not a SlotRouter state"),
        (_state(nodes=[["a"]]), "is not a SlotRouter state"),
        (_state(width=3), "table length does not match"),
        (_state(table="not base64!"), "is not a SlotRouter state"),
        (_state(table=base64.b64encode(b"\x00\x01\x00").decode()), "table length does not match"),
        (_state(table=base64.b64encode(b"\x00\x01\x00\x07").decode()), "is not a SlotRouter"),
        (_state(table=base64.b64encode(b"\x00\x00\x00\x00").decode()), "hold no slot"),
        (_state(nodes=[["a", 1.0]], table=base64.b64encode(bytes(3)).decode(), slots=3), "power"),
        (_state(nodes=[["a", 1.0], ["b", -1.0]]), "weight must be a finite number > 0"),
    ],
)
def test_a_malformed_state_is_refused(state: dict[str, Any], problem: str) -> None:
    """from_state raises ConfigurationError for anything to_state would not have written."""
    error = configuration_error(ir.SlotRouter.from_state, state)
    assert problem in str(error)
    assert error.field.startswith("SlotRouter.")


@pytest.mark.parametrize(
    ("weights", "slots", "counts"),
    [
        ({"a": 100.0, "b": 1.0}, 2, {"a": 1, "b": 1}),
        ({"a": 1000.0, "b": 1.0, "c": 1.0}, 4, {"a": 2, "b": 1, "c": 1}),
        ({"a": 1e9, "b": 1.0, "c": 1e9}, 4, {"a": 2, "b": 1, "c": 1}),
    ],
)
def test_a_very_light_node_still_gets_a_slot(
    weights: dict[str, float], slots: int, counts: dict[str, int]
) -> None:
    """Every node holds at least one slot, taken from the node furthest over its share."""
    router = ir.SlotRouter(weights, slots=slots)
    assert counts == router.counts()
    assert set(weights) == {router.route_hash(slot) for slot in range(slots)}


def test_a_built_router_with_a_very_light_node_round_trips() -> None:
    """Every router from_state can rebuild what to_state wrote, however skewed its weights."""
    router = ir.SlotRouter({"a": 100.0, "b": 1.0}, slots=2)
    assert router == ir.SlotRouter.from_state(router.to_state())


def test_a_very_light_node_can_be_removed() -> None:
    """without_node of a node holding one slot gives that slot away."""
    router = ir.SlotRouter({"a": 100.0, "b": 1.0, "c": 100.0}, slots=4)
    assert 1 == router.counts()["b"]
    assert 4 == sum(router.without_node("b").counts().values())
    assert "b" not in router.without_node("b").counts()


def test_setting_a_node_to_its_current_weight_changes_nothing() -> None:
    """with_weight to the weight a node already has returns an equal router: no key moves."""
    router = ir.SlotRouter(["a", "b", "c"], slots=8)
    assert router == router.with_weight("c", 1.0)


def test_a_state_naming_a_node_twice_is_refused() -> None:
    """from_state refuses a state whose node list repeats a name."""
    state = ir.SlotRouter(["a", "b"], slots=4).to_state()
    state["nodes"] = [["a", 1.0], ["a", 1.0]]
    error = configuration_error(ir.SlotRouter.from_state, state)
    assert "names a node twice" in str(error)


# -- JumpRouter -------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [0, -1, True, 2.0, "3", None])
def test_jump_router_needs_an_int_of_at_least_one_shard(shards: Any) -> None:
    """shards must be an int >= 1: ConfigurationError naming JumpRouter.shards and the value."""
    error = configuration_error(ir.JumpRouter, shards)
    assert ("JumpRouter.shards", shards) == (error.field, error.value)
    assert f"must be an int >= 1, got {shards!r}" in str(error)


def test_jump_router_routes_into_its_shards_and_describes_itself() -> None:
    """Routes lie in range(shards); nodes, shards, with_shards, equality, hash and repr."""
    router = ir.JumpRouter(7)
    assert (7, range(7)) == (router.shards, router.nodes)
    for key in KEYS:
        assert router.route(key) in range(7)
        assert router.route_hash(stable_hash(key)) == router.route(key)
    assert {0} == {ir.JumpRouter(1).route(k) for k in KEYS}
    assert ir.JumpRouter(8) == router.with_shards(8)
    assert router == ir.JumpRouter(7)
    assert hash(router) == hash(ir.JumpRouter(7))
    assert router != ir.JumpRouter(8)
    assert router.__eq__(7) is NotImplemented
    assert "JumpRouter(7)" == repr(router)


@pytest.mark.parametrize("shards", [1, 2, 10, 1000])
def test_jump_router_ranked_starts_with_the_route_and_lists_every_shard(shards: int) -> None:
    """ranked()[0] is route(); every shard appears once (by name order past the probes)."""
    router = ir.JumpRouter(shards)
    for key in KEYS[:5] if shards > 10 else KEYS[:40]:
        ranked = router.ranked(key)
        assert router.route(key) == ranked[0]
        assert list(range(shards)) == sorted(ranked)
        assert ranked == router.ranked_hash(stable_hash(key))


# -- RangeRouter ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("boundaries", "nodes", "field", "problem"),
    [
        ([2000, 1000], ["a", "b", "c"], "RangeRouter.boundaries", "must be strictly increasing"),
        ([1000, 1000], ["a", "b", "c"], "RangeRouter.boundaries", "must be strictly increasing"),
        (["b", "a"], ["a", "b", "c"], "RangeRouter.boundaries", "must be strictly increasing"),
        (
            [1000, "m"],
            ["a", "b", "c"],
            "RangeRouter.boundaries",
            "must all be int, all str or all bytes",
        ),
        (
            [b"m", "n"],
            ["a", "b", "c"],
            "RangeRouter.boundaries",
            "must all be int, all str or all bytes",
        ),
        ([1.5], ["a", "b"], "RangeRouter.boundaries", "must all be int, all str or all bytes"),
        ([True], ["a", "b"], "RangeRouter.boundaries", "must all be int, all str or all bytes"),
        ([None], ["a", "b"], "RangeRouter.boundaries", "must all be int, all str or all bytes"),
        ([1000], ["a"], "RangeRouter.nodes", "must list 2 nodes, one per range"),
        ([1000], ["a", "b", "c"], "RangeRouter.nodes", "must list 2 nodes, one per range"),
        ([1000], "ab", "RangeRouter.nodes", "must list 2 nodes, one per range"),
        ([], "a", "RangeRouter.nodes", "must list 1 nodes, one per range"),
        ([1000], ["a", ""], "RangeRouter.nodes", "node names must be non-empty str"),
    ],
)
def test_bad_ranges_are_refused_naming_the_field_and_value(
    boundaries: list[Any], nodes: Any, field: str, problem: str
) -> None:
    """Unsorted, mixed or untyped boundaries and a wrong node count raise ConfigurationError."""
    error = configuration_error(ir.RangeRouter, boundaries, nodes)
    assert field == error.field
    assert problem in str(error)
    assert f"got {error.value!r}" in str(error)


def test_range_router_routes_by_range() -> None:
    """Keys below the first boundary go to the first node; each boundary opens its range."""
    router = ir.RangeRouter([1000, 2000], ["a", "b", "c"])
    assert ["a", "a", "b", "b", "c", "c"] == [
        router.route(k) for k in (-(10**30), 999, 1000, 1999, 2000, 10**30)
    ]
    assert [1000, 2000] == router.boundaries
    assert ["a", "b", "c"] == router.nodes
    assert [(None, 1000, "a"), (1000, 2000, "b"), (2000, None, "c")] == router.ranges()
    words = ir.RangeRouter(["m"], ["early", "late"])
    assert ["early", "late", "late"] == [words.route(k) for k in ("apple", "m", "zebra")]
    raw = ir.RangeRouter([b"\x80"], ["low", "high"])
    assert ["low", "high"] == [raw.route(k) for k in (b"\x7f\xff", b"\x80")]


def test_a_node_may_own_several_ranges_and_properties_are_copies() -> None:
    """Nodes repeat freely; mutating the returned lists does not change the router."""
    router = ir.RangeRouter([10, 20], ["a", "b", "a"])
    assert ["a", "b", "a"] == [router.route(k) for k in (5, 15, 25)]
    router.boundaries.append(30)
    router.nodes.append("z")
    assert ([10, 20], ["a", "b", "a"]) == (router.boundaries, router.nodes)


@pytest.mark.parametrize(
    ("router", "key", "message"),
    [
        (ir.RangeRouter([1000], ["a", "b"]), "1500", "over int boundaries cannot route str key"),
        (ir.RangeRouter([1000], ["a", "b"]), True, "over int boundaries cannot route bool key"),
        (ir.RangeRouter([1000], ["a", "b"]), 1500.0, "cannot route float key 1500.0"),
        (ir.RangeRouter(["m"], ["a", "b"]), b"m", "over str boundaries cannot route bytes key"),
        (ir.RangeRouter([b"m"], ["a", "b"]), "m", "over bytes boundaries cannot route str key"),
    ],
)
def test_range_router_refuses_keys_of_another_type(
    router: ir.RangeRouter, key: Any, message: str
) -> None:
    """A key not of the boundaries' type raises TypeError naming both types."""
    with pytest.raises(TypeError, match=message):
        router.route(key)


def test_a_range_router_without_boundaries_sends_everything_to_its_node() -> None:
    """No boundaries: one range, one node, any key."""
    router = ir.RangeRouter([], ["only"])
    assert ["only"] * 3 == [router.route(k) for k in (5, "x", b"y")]
    assert [(None, None, "only")] == router.ranges()
    assert ir.RangeRouter([7], ["only", "new"]) == router.split(7, "new")


def test_split_and_merge() -> None:
    """split sends [at, next) to a node; merge joins a range into the one below."""
    router = ir.RangeRouter([1000, 2000], ["a", "b", "c"])
    split = router.split(1500, "d")
    assert ir.RangeRouter([1000, 1500, 2000], ["a", "b", "d", "c"]) == split
    assert ir.RangeRouter([500, 1000, 2000], ["a", "x", "b", "c"]) == router.split(500, "x")
    assert ir.RangeRouter([1000, 2000, 3000], ["a", "b", "c", "y"]) == router.split(3000, "y")
    assert router == split.merge(1500)
    assert ir.RangeRouter([2000], ["a", "c"]) == router.merge(1000)
    assert ir.RangeRouter([1000], ["a", "b"]) == router.merge(2000)


def test_split_and_merge_refuse_bad_boundaries() -> None:
    """split on a boundary or of another type, and merge of a non-boundary, raise."""
    router = ir.RangeRouter([1000, 2000], ["a", "b", "c"])
    error = configuration_error(router.split, 1000, "d")
    assert ("RangeRouter.split", 1000) == (error.field, error.value)
    assert "is already a boundary" in str(error)
    error = configuration_error(router.split, "1500", "d")
    assert ("RangeRouter.split", "1500") == (error.field, error.value)
    assert "must be a int like the boundaries" in str(error)
    error = configuration_error(router.split, 1500, "")
    assert "RangeRouter.nodes" == error.field
    error = configuration_error(router.merge, 1500)
    assert ("RangeRouter.merge", 1500) == (error.field, error.value)
    assert "is not a boundary; boundaries: [1000, 2000]" in str(error)


def test_merge_refuses_a_bool_or_float_equal_to_a_boundary() -> None:
    """merge and split of True or 1.0 on int boundaries raise, as route(True) does."""
    router = ir.RangeRouter([1, 2], ["a", "b", "c"])
    for wrong in (True, 1.0):
        error = configuration_error(router.merge, wrong)
        assert ("RangeRouter.merge", wrong) == (error.field, error.value)
        assert "must be a int like the boundaries" in str(error)
        error = configuration_error(router.split, wrong, "d")
        assert ("RangeRouter.split", wrong) == (error.field, error.value)
    error = configuration_error(router.merge, "1")
    assert ("RangeRouter.merge", "1") == (error.field, error.value)


def test_split_of_a_router_without_boundaries_needs_a_range_key() -> None:
    """With no boundaries any int, str or bytes splits; a bool or float does not."""
    router = ir.RangeRouter([], ["only"])
    assert ir.RangeRouter(["m"], ["only", "new"]) == router.split("m", "new")
    for wrong in (True, 1.5, None):
        error = configuration_error(router.split, wrong, "new")
        assert ("RangeRouter.split", wrong) == (error.field, error.value)
        assert "must be an int, str or bytes like the boundaries" in str(error)


def test_range_router_equality_hash_and_repr() -> None:
    """Equal boundaries and nodes make equal routers; repr shows both."""
    router = ir.RangeRouter([10], ["a", "b"])
    assert router == ir.RangeRouter([10], ["a", "b"])
    assert hash(router) == hash(ir.RangeRouter([10], ["a", "b"]))
    assert router != ir.RangeRouter([10], ["a", "c"])
    assert router != ir.RangeRouter([11], ["a", "b"])
    assert router.__eq__([10]) is NotImplemented
    assert "RangeRouter([10], ['a', 'b'])" == repr(router)


# -- HotKeyRouter -----------------------------------------------------------------------------


def test_keys_that_are_not_hot_route_as_through_the_wrapped_router() -> None:
    """A key not listed as hot goes where the router sends it, with or without a part."""
    router = ir.RendezvousRouter([f"w{n}" for n in range(20)])
    hot = ir.HotKeyRouter(router, {"WH-HOT": 8})
    assert router is hot.router
    for key in KEYS:
        assert router.route(key) == hot.route(key)
        assert router.route(key) == hot.route(key, "part-1")
        assert [router.route(key)] == hot.owners(key)
        assert 1 == hot.chunks(key)


@pytest.mark.parametrize(
    "router",
    [
        ir.RendezvousRouter([f"w{n}" for n in range(20)]),
        ir.SlotRouter([f"w{n}" for n in range(20)], slots=256),
        ir.JumpRouter(20),
    ],
    ids=["rendezvous", "slot", "jump"],
)
def test_a_hot_key_spreads_over_about_k_nodes(router: Any) -> None:
    """A hot key's parts land on its owners only, about k of them, the same part on one node."""
    hot = ir.HotKeyRouter(router, {"WH-HOT": 8, 42: 3})
    assert (8, 3) == (hot.chunks("WH-HOT"), hot.chunks(42))
    owners = hot.owners("WH-HOT")
    assert 5 <= len(owners) <= 8
    assert len(owners) == len(set(owners))
    served = {hot.route("WH-HOT", part) for part in range(1000)}
    assert set(owners) == served
    for part in ("order-1", b"order-2", 3):
        assert hot.route("WH-HOT", part) == hot.route("WH-HOT", part)
    assert {hot.route(42, part) for part in range(300)} == set(hot.owners(42))


def test_parts_spread_evenly_over_the_chunks() -> None:
    """With k chunks on many nodes each chunk gets about 1/k of the parts."""
    router = ir.SlotRouter([f"w{n}" for n in range(1000)])
    hot = ir.HotKeyRouter(router, {"WH-HOT": 4})
    assert 4 == len(hot.owners("WH-HOT"))
    loads = Counter(hot.route("WH-HOT", f"line-{n}") for n in range(8000))
    assert all(1800 < load < 2200 for load in loads.values())


def test_a_hot_key_without_a_part_is_a_value_error() -> None:
    """Routing a hot key needs the part of it: ValueError saying so."""
    hot = ir.HotKeyRouter(ir.JumpRouter(4), {"WH-HOT": 8})
    with pytest.raises(ValueError, match="key 'WH-HOT' is spread over 8 chunks; pass the part"):
        hot.route("WH-HOT")


@pytest.mark.parametrize("chunks", [1, 0, -1, True, 2.0, "8", None])
def test_hot_key_chunks_must_be_an_int_of_at_least_two(chunks: Any) -> None:
    """chunks must be an int >= 2: ConfigurationError naming the key and the value."""
    error = configuration_error(ir.HotKeyRouter, ir.JumpRouter(4), {"WH-HOT": chunks})
    assert ("HotKeyRouter.hot['WH-HOT']", chunks) == (error.field, error.value)
    assert "must be an int >= 2" in str(error)
    assert f"got {chunks!r}" in str(error)


def test_hot_keys_must_be_shard_keys() -> None:
    """A hot key of another type is refused like any key."""
    with pytest.raises(TypeError, match="got float"):
        ir.HotKeyRouter(ir.JumpRouter(4), {1.5: 2})  # type: ignore[dict-item]


# -- BoundedLoadRouter ------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 1.0, 0.5, 0, -2, math.inf, math.nan, True, "1.25"])
def test_bounded_load_factor_must_exceed_one(factor: Any) -> None:
    """factor must be a finite number > 1: ConfigurationError naming it."""
    error = configuration_error(ir.BoundedLoadRouter, ir.JumpRouter(4), factor=factor)
    assert "BoundedLoadRouter.factor" == error.field
    assert "must be a finite number > 1" in str(error)


def skewed_keys(router: Any, count: int) -> list[str]:
    """*count* keys of which nine in ten go to the first third of the router's nodes."""
    favoured = sorted(router.nodes)[: max(1, len(router.nodes) // 3)]
    keys: list[str] = []
    for n in itertools.count():
        key = f"item-{n}"
        if router.route(key) in favoured or n % 10 == 0:
            keys.append(key)
            if len(keys) == count:
                return keys
    raise AssertionError("unreachable")  # pragma: no cover


def _caps_hold(router: ir.BoundedLoadRouter[Any], shares: dict[Any, float], total: int) -> bool:
    loads = router.loads()
    return all(load <= math.ceil(router.factor * total * shares[n]) for n, load in loads.items())


@pytest.mark.parametrize(
    ("inner", "shares"),
    [
        (ir.RendezvousRouter([f"w{n}" for n in range(10)]), {f"w{n}": 0.1 for n in range(10)}),
        (ir.RendezvousRouter({"a": 1.0, "b": 3.0}), {"a": 0.25, "b": 0.75}),
        (ir.SlotRouter([f"w{n}" for n in range(10)], slots=64), {f"w{n}": 0.1 for n in range(10)}),
        (ir.JumpRouter(10), dict.fromkeys(range(10), 0.1)),
    ],
    ids=["rendezvous", "weighted", "slot", "jump"],
)
def test_no_node_exceeds_its_cap_over_10000_assignments(
    inner: Any, shares: dict[Any, float]
) -> None:
    """After every one of 10,000 assignments each load is at most ceil(factor x total x share)."""
    router = ir.BoundedLoadRouter(inner, factor=1.1)
    assert 1.1 == router.factor
    keys = skewed_keys(inner, 10_000)
    spilled = 0
    for count, key in enumerate(keys, start=1):
        node = router.assign(key)
        assert node in shares
        spilled += node != inner.route(key)
        if count % 97 == 0 or count < 50:
            assert _caps_hold(router, shares, count)
    assert _caps_hold(router, shares, len(keys))
    assert len(keys) == sum(router.loads().values())
    assert spilled > 1000  # the plain router would have overloaded the favoured nodes


def test_bounded_load_keeps_the_plain_route_while_under_the_cap() -> None:
    """A key goes to its first choice when that node is under its cap."""
    inner = ir.RendezvousRouter(FIVE)
    router = ir.BoundedLoadRouter(inner, factor=2.0)
    assert inner.route("WH-0001") == router.assign("WH-0001")


def test_assignments_are_sticky_until_released() -> None:
    """A key keeps its node while others pile up; release frees it and its load."""
    router = ir.BoundedLoadRouter(ir.JumpRouter(4), factor=1.25)
    first = router.assign("WH-0001")
    for n in range(500):
        router.assign(f"other-{n}")
        assert first == router.assign("WH-0001")
    before = router.loads()[first]
    assert router.release("WH-0001") is True
    assert before - 1 == router.loads().get(first, 0)
    assert router.release("WH-0001") is False
    assert router.release("never-assigned") is False


def test_loads_leave_out_nodes_with_nothing() -> None:
    """loads() lists only nodes that hold a key, including shard 0 of a jump router."""
    router = ir.BoundedLoadRouter(ir.JumpRouter(3))
    assert {} == router.loads()
    key = next(k for k in KEYS if ir.JumpRouter(3).route(k) == 0)
    assert 0 == router.assign(key)
    assert 0 == router.assign(key)  # shard 0 is falsy and still remembered
    assert {0: 1} == router.loads()
    router.release(key)
    assert {} == router.loads()


def test_concurrent_assignments_agree_and_respect_the_cap() -> None:
    """Eight threads assigning overlapping keys see one node per key and capped loads."""
    router = ir.BoundedLoadRouter(ir.RendezvousRouter(FIVE), factor=1.1)
    keys = [f"item-{n}" for n in range(2000)]
    seen: list[dict[str, str]] = [{} for _ in range(8)]
    barrier = threading.Barrier(8)

    def work(index: int) -> None:
        barrier.wait()
        for key in keys[index * 100 :] + keys[: index * 100]:
            seen[index][key] = router.assign(key)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(seen[0] == other for other in seen[1:])
    assert len(keys) == sum(router.loads().values())
    assert Counter(seen[0].values()) == Counter(router.loads())
    assert max(router.loads().values()) <= math.ceil(1.1 * len(keys) / 5)


# -- RouteDiff and diff -----------------------------------------------------------------------


def test_diff_reports_moves_fraction_flows_len_and_iteration() -> None:
    """diff lists the moved keys in order with (old, new), and summarises them."""
    old = ir.RangeRouter([10, 20], ["a", "b", "c"])
    new = ir.RangeRouter([15, 20], ["a", "b", "c"])
    moved = ir.diff(old, new, [5, 12, 11, 16, 25, 14, 12])
    assert {12: ("b", "a"), 11: ("b", "a"), 14: ("b", "a")} == moved.moved
    assert [12, 11, 14] == list(moved)
    assert 3 == len(moved)
    assert 6 == moved.total  # 12 was given twice: one key
    assert 3 / 6 == moved.fraction
    assert Counter({("b", "a"): 3}) == moved.flows()


def test_diff_of_nothing_or_of_equal_routers_is_empty() -> None:
    """No keys, or routers that agree, give an empty diff with fraction 0."""
    router = ir.RendezvousRouter(FIVE)
    empty = ir.diff(router, router, [])
    assert (0, 0, 0.0, []) == (len(empty), empty.total, empty.fraction, list(empty))
    same = ir.diff(router, ir.RendezvousRouter(list(reversed(FIVE))), KEYS)
    assert (0, len(KEYS), 0.0) == (len(same), same.total, same.fraction)


def test_diff_across_router_kinds_and_flows() -> None:
    """A rendezvous-to-rendezvous removal shows flows only out of the removed node."""
    old = ir.RendezvousRouter(FIVE)
    moved = ir.diff(old, old.without_node("c"), (f"WH-{n}" for n in range(5000)))
    assert {"c"} == {was for was, _ in moved.flows()}
    assert 0.17 < moved.fraction < 0.23
    assert sum(moved.flows().values()) == len(moved)


def test_route_diff_is_a_frozen_value() -> None:
    """RouteDiff compares by value and cannot be changed."""
    one = ir.RouteDiff(moved={"k": ("a", "b")}, total=3)
    assert ir.RouteDiff(moved={"k": ("a", "b")}, total=3) == one
    assert "RouteDiff(moved={'k': ('a', 'b')}, total=3)" == repr(one)
    with pytest.raises(AttributeError):
        one.total = 4  # type: ignore[misc]


# -- the pure arithmetic ----------------------------------------------------------------------


def test_mix64_is_splitmix64s_finaliser() -> None:
    """mix64 matches SplitMix64's reference outputs and stays within 64 bits."""
    # SplitMix64 seeded with 0 yields mix64(0x9E3779B97F4A7C15) first.
    assert 0xE220A8397B1DCDAF == mix64(0x9E3779B97F4A7C15)
    assert 0 == mix64(0)
    assert mix64(MASK64) <= MASK64


def test_unit_float_is_inside_zero_and_one() -> None:
    """unit_float maps 0 above zero and anything short of the top 53 bits set below one."""
    assert 0.0 < unit_float(0) < 1e-15
    assert 1.0 - 1e-15 < unit_float(MASK64 - (1 << 11)) < 1.0


def unmix64(value: int) -> int:
    """The inverse of mix64 (each xorshift and odd multiplication is a bijection)."""

    def unshift(result: int, shift: int) -> int:
        original = result
        for _ in range(64 // shift + 1):
            original = result ^ (original >> shift)
        return original

    value = unshift(value, 31)
    value = (value * pow(0x94D049BB133111EB, -1, 1 << 64)) & MASK64
    value = unshift(value, 27)
    value = (value * pow(0xBF58476D1CE4E5B9, -1, 1 << 64)) & MASK64
    return unshift(value, 30)


def test_unmix64_inverts_mix64() -> None:
    """Sanity for the tests below: unmix64 undoes mix64."""
    for value in (0, 1, 12345, MASK64, 0xDEADBEEF << 20):
        assert value == unmix64(mix64(value))


def test_unit_float_never_reaches_one() -> None:
    """unit_float's documented open interval holds at the top: unit_float(2**64 - 1) < 1."""
    assert unit_float(MASK64) < 1.0
    assert 1.0 - unit_float(MASK64) == unit_float(0)


@pytest.mark.parametrize(
    "router",
    [ir.RendezvousRouter({"a": 1.0, "b": 2.0}), ir.RendezvousRouter(["a", "b"])],
    ids=["weighted", "equal"],
)
def test_rendezvous_routes_every_64_bit_hash(router: ir.RendezvousRouter) -> None:
    """A hash whose mix at a node has every bit set (u nearest 1) still routes and ranks."""
    hashed = unmix64(MASK64) ^ tagged_hash(b"invres-node", b"a")
    assert router.route_hash(hashed) in router.nodes
    assert sorted(router.nodes) == sorted(router.ranked_hash(hashed))


def test_probe_zero_is_the_hash_and_later_probes_differ() -> None:
    """Attempt 0 is the hash itself; attempts 1.. are distinct pseudo-random values."""
    assert 12345 == probe(12345, 0)
    assert 100 == len({probe(12345, attempt) for attempt in range(100)})


def test_jump_matches_the_papers_reference_values() -> None:
    """jump() reproduces values of the Lamping-Veach reference implementation."""
    assert 0 == jump(0, 1)
    assert [0] * 10 == [jump(h, 1) for h in range(10)]
    assert all(0 <= jump(h, 7) < 7 for h in range(0, MASK64, MASK64 // 1000))
    # Guava's and the paper's test vectors for key 0 under growing bucket counts stay 0.
    assert {0} == {jump(0, buckets) for buckets in (1, 2, 10, 1000)}


def test_quotas_apportion_by_largest_remainder_with_ties_by_name() -> None:
    """quotas sums to the slots; remainders are handed out largest first, then by name."""
    assert {"a": 2, "b": 1, "c": 1} == quotas({"c": 1.0, "b": 1.0, "a": 1.0}, 4)
    assert {"a": 1, "b": 2} == quotas({"a": 1.0, "b": 2.0}, 3)
    assert {"a": 3, "b": 5} == quotas({"a": 1.0, "b": 1.7}, 8)


def test_tables_keep_runs_by_name_and_change_only_the_named_node() -> None:
    """build_table lays out runs by name; add/remove/reweight touch only their node's slots."""
    weights = {"b": 1.0, "a": 1.0}
    table = build_table(weights, 8)
    assert ["a"] * 4 + ["b"] * 4 == table
    added = add_to_table(table, weights, "c", 2.0)
    assert 4 == added.count("c")
    assert all(old == new or new == "c" for old, new in zip(table, added, strict=True))
    removed = remove_from_table(added, {**weights, "c": 2.0}, "a")
    assert "a" not in removed
    assert all(old == new or old == "a" for old, new in zip(added, removed, strict=True))
    reweighted = reweight_table(removed, {"b": 1.0, "c": 2.0}, "b", 2.0)
    assert {"b": 4, "c": 4} == Counter(reweighted)
    assert all(
        "b" in (old, new) for old, new in zip(removed, reweighted, strict=True) if old != new
    )


def test_ranked_hash_of_equal_weights_starts_with_the_owner_on_integer_scores() -> None:
    """With equal weights, ranked_hash orders by the same integer scores route_hash compares."""
    router = ir.RendezvousRouter([f"n{i}" for i in range(50)])
    for key in range(2000):
        hashed = ir.stable_hash(key)
        assert router.route_hash(hashed) == router.ranked_hash(hashed)[0]


def test_range_router_without_boundaries_refuses_keys_of_other_types() -> None:
    """A RangeRouter with one range still refuses keys that are not int, str or bytes."""
    router = ir.RangeRouter([], ["only"])
    assert "only" == router.route(5)
    with pytest.raises(TypeError, match="cannot route NoneType key None"):
        router.route(None)  # type: ignore[arg-type]


def test_diff_counts_a_repeated_key_once_and_reports_bytearrays_as_bytes() -> None:
    """A key listed twice is one key; a moved bytearray key is reported as its bytes."""
    before = ir.RendezvousRouter(["a", "b", "c"])
    after = before.without_node("b")
    moved_key = next(k for k in (f"k{i}".encode() for i in range(100)) if before.route(k) == "b")
    result = ir.diff(before, after, [bytearray(moved_key), moved_key, bytearray(moved_key)])
    assert 1 == result.total
    assert 1.0 == result.fraction
    assert [moved_key] == list(result)
