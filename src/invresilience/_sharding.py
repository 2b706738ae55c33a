"""Shard routing: stable routers, route diffs, hot keys, bounded loads, and key ownership.

Routers are immutable values and pure functions of their nodes (plus, for
:class:`SlotRouter`, the table it carries): the same key goes to the same node in every
process. :class:`ShardAssignment` turns a :class:`~invresilience.typing.Membership` into
``owns(key)`` for one worker, with the handoff rule of :mod:`invresilience._core.membership`.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import itertools
import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeGuard, TypeVar, cast

import attrs
from typing_extensions import Self, final

from . import _events
from ._clock import SystemClock
from ._config import seconds
from ._core.membership import (
    Member,
    MembershipView,
    changes_between,
    incarnation_of,
    may_own,
)
from ._core.sharding import (
    HASH_NAME,
    MASK64,
    ShardKey,
    add_to_table,
    build_table,
    jump,
    mix64,
    probe,
    remove_from_table,
    reweight_table,
    stable_hash,
    tagged_hash,
    unit_float,
)
from .exceptions import ConfigurationError, NoShardOwnerError
from .typing import Router

if TYPE_CHECKING:
    from .typing import AsyncMembership, Clock, HashRouter, Membership

__all__ = [
    "AsyncShardAssignment",
    "AsyncStaticMembership",
    "BoundedLoadRouter",
    "HotKeyRouter",
    "JumpRouter",
    "RangeRouter",
    "RendezvousRouter",
    "RouteDiff",
    "ShardAssignment",
    "SlotRouter",
    "StaticMembership",
    "diff",
]

_N = TypeVar("_N")
RangeKey = int | str | bytes

#: The default number of slots in a :class:`SlotRouter`: 2**16.
DEFAULT_SLOTS = 65536
_NODE_TAG = b"invres-node"
_CHUNK_TAG = b"invres-chunk"


def _node_weights(owner: str, nodes: Mapping[str, float] | Iterable[str]) -> dict[str, float]:
    """Validate nodes (names, or names to weights) into a name-sorted dict of float weights."""
    if isinstance(nodes, (str, bytes)):
        raise ConfigurationError(
            f"{owner}.nodes",
            nodes,
            "must be node names or a mapping of names to weights, not one string",
        )
    pairs = list(nodes.items()) if isinstance(nodes, Mapping) else [(node, 1.0) for node in nodes]
    return _weights_of(owner, pairs, nodes)


def _weights_of(
    owner: str, pairs: Iterable[tuple[object, object]], given: object
) -> dict[str, float]:
    """Validate ``(name, weight)`` pairs (no name twice) into a name-sorted dict."""
    weights: dict[str, float] = {}
    for raw_name, raw_weight in pairs:
        _check_node(owner, raw_name)
        name = cast("str", raw_name)
        _check_weight(owner, name, raw_weight)
        if name in weights:
            raise ConfigurationError(f"{owner}.nodes", name, "names a node twice")
        weights[name] = float(cast("float", raw_weight))
    if not weights:
        raise ConfigurationError(f"{owner}.nodes", given, "must name at least one node")
    return dict(sorted(weights.items()))


def _check_node(owner: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{owner}.nodes", name, "node names must be non-empty str")


def _check_weight(owner: str, name: str, weight: object) -> None:
    if not _is_number(weight) or not math.isfinite(weight) or weight <= 0:
        raise ConfigurationError(
            f"{owner}.nodes[{name!r}]", weight, "weight must be a finite number > 0"
        )


class _Weighted:
    """What the name-keyed routers share: weights, equality, and the node-change helpers."""

    _weights: dict[str, float]

    @property
    def nodes(self) -> Mapping[str, float]:
        """Node name to weight, sorted by name."""
        return dict(self._weights)

    def _need(self, name: str) -> None:
        if name not in self._weights:
            raise KeyError(
                f"{type(self).__name__} has no node {name!r}; nodes: {sorted(self._weights)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._weights!r})"


@final
class RendezvousRouter(_Weighted):
    """Weighted rendezvous (highest random weight) hashing over named nodes.

    Each key scores every node and goes to the highest score, so the router holds no state
    beyond its nodes: any node may leave and only its keys move (each to its next choice);
    a node that joins takes only the keys it now wins; a weight change moves keys only to or
    from that node. A lookup costs one :func:`stable_hash` plus a few integer operations per
    node, so it is the router for a few dozen nodes; :class:`SlotRouter` is O(1).

    Args:
        nodes: Node names (weight 1), or a mapping of names to positive weights. A node of
            weight 2 gets twice the keys of a node of weight 1.

    Raises:
        ConfigurationError: no nodes, a duplicate or empty name, a weight that is not a
            finite number > 0.

    >>> router = RendezvousRouter({"worker-a": 1.0, "worker-b": 2.0})
    >>> router.route("WH-0042") == RendezvousRouter({"worker-b": 2.0, "worker-a": 1.0}).route(
    ...     "WH-0042"
    ... )
    True

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_equal", "_seeds", "_weights")

    def __init__(self, nodes: Mapping[str, float] | Iterable[str]) -> None:
        self._weights = _node_weights("RendezvousRouter", nodes)
        self._seeds = [(tagged_hash(_NODE_TAG, n.encode()), n, w) for n, w in self._weights.items()]
        self._equal = len(set(self._weights.values())) == 1

    def route(self, key: ShardKey) -> str:
        """The node *key* goes to.

        Raises:
            TypeError: *key* is not a ``str``, ``bytes`` or ``int``.
        """
        return self.route_hash(stable_hash(key))

    def route_hash(self, hashed: int) -> str:
        """The node a key whose :func:`stable_hash` is *hashed* goes to."""
        best = -1.0
        owner = ""
        if self._equal:
            top = -1
            for seed, name, _ in self._seeds:
                z = hashed ^ seed
                z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
                z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
                z ^= z >> 31
                if z > top:
                    top, owner = z, name
            return owner
        for seed, name, weight in self._seeds:
            score = weight / -math.log(unit_float(mix64(hashed ^ seed)))
            if score > best:
                best, owner = score, name
        return owner

    def ranked_hash(self, hashed: int) -> list[str]:
        """Every node, best first, for a key whose hash is *hashed* (its failover order)."""
        scored: list[tuple[float, str]]
        if self._equal:
            # Integer scores, as route_hash compares them: floats would round ties together.
            scored = [(mix64(hashed ^ seed), name) for seed, name, _ in self._seeds]
        else:
            scored = [
                (weight / -math.log(unit_float(mix64(hashed ^ seed))), name)
                for seed, name, weight in self._seeds
            ]
        # A stable sort on the score alone keeps ties in name order, as route_hash does.
        return [name for _, name in sorted(scored, key=lambda pair: -pair[0])]

    def ranked(self, key: ShardKey) -> list[str]:
        """Every node in *key*'s order of preference; ``ranked(key)[0] == route(key)``."""
        return self.ranked_hash(stable_hash(key))

    def with_node(self, name: str, weight: float = 1.0) -> RendezvousRouter:
        """A router with *name* added (or its weight set); only keys *name* wins move."""
        _check_node("RendezvousRouter", name)
        return RendezvousRouter({**self._weights, name: weight})

    def without_node(self, name: str) -> RendezvousRouter:
        """A router without *name*; only its keys move.

        Raises:
            KeyError: *name* is not a node.
            ConfigurationError: it is the last node.
        """
        self._need(name)
        return RendezvousRouter({n: w for n, w in self._weights.items() if n != name})

    def with_weight(self, name: str, weight: float) -> RendezvousRouter:
        """A router with *name*'s weight changed; keys move only to or from *name*."""
        self._need(name)
        return RendezvousRouter({**self._weights, name: weight})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RendezvousRouter):
            return NotImplemented
        return self._weights == other._weights

    def __hash__(self) -> int:
        return hash(tuple(self._weights.items()))


@final
class SlotRouter(_Weighted):
    """O(1) routing through a table of slots, for many nodes.

    A key goes to the node holding slot ``stable_hash(key) % slots``. Every node holds its
    weighted share of the slots to within one slot (when every share is at least one slot;
    a node whose share is smaller still gets one), so balance is as good as the hash.
    Changes are made with :meth:`with_node`, :meth:`without_node` and :meth:`with_weight`,
    which move the fewest slots possible: a joining node takes its share from the nodes most
    over theirs, a leaving node's slots go to the nodes most under theirs.

    The table is state: a router built from ``{a, b, c}`` and then given ``d`` differs from
    one built from ``{a, b, c, d}`` (both are balanced; only the first moved few keys). Every
    process must therefore reach its router the same way: build it from the same node list
    and apply the same changes, or share :meth:`to_state` and rebuild with
    :meth:`from_state`. For routing by a live membership, where each version's router must
    follow from the view alone, use :class:`RendezvousRouter` (the default of
    :class:`ShardAssignment`).

    Args:
        nodes: Node names (weight 1), or a mapping of names to positive weights.
        slots: The table size, a power of two at least the number of nodes. The default,
            65,536, keeps every node within 1% of its share up to about 650 nodes;
            balance within one slot is ``1 + nodes / slots``.

    Raises:
        ConfigurationError: bad nodes or weights; *slots* not a power of two, or fewer than
            the nodes.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_mask", "_table", "_weights")

    def __init__(
        self, nodes: Mapping[str, float] | Iterable[str], *, slots: int = DEFAULT_SLOTS
    ) -> None:
        self._weights = _node_weights("SlotRouter", nodes)
        _check_slots(slots, len(self._weights))
        self._table = build_table(self._weights, slots)
        self._mask = slots - 1

    @classmethod
    def _from(cls, weights: dict[str, float], table: list[str]) -> SlotRouter:
        router = cls.__new__(cls)
        router._weights = dict(sorted(weights.items()))
        router._table = table
        router._mask = len(table) - 1
        return router

    @property
    def slots(self) -> int:
        """The number of slots in the table."""
        return self._mask + 1

    def route(self, key: ShardKey) -> str:
        """The node *key* goes to.

        Raises:
            TypeError: *key* is not a ``str``, ``bytes`` or ``int``.
        """
        return self._table[stable_hash(key) & self._mask]

    def route_hash(self, hashed: int) -> str:
        """The node a key whose :func:`stable_hash` is *hashed* goes to."""
        return self._table[hashed & self._mask]

    def ranked_hash(self, hashed: int) -> list[str]:
        """Every node, in the order a key whose hash is *hashed* falls back through them.

        The owner first, then the owners of a pseudo-random sequence of further slots, then
        any node that sequence missed, by name.
        """
        order: list[str] = []
        seen: set[str] = set()
        for attempt in range(4 * len(self._weights) + 4):
            node = self._table[probe(hashed, attempt) & self._mask]
            if node not in seen:
                seen.add(node)
                order.append(node)
                if len(order) == len(self._weights):
                    return order
        order.extend(name for name in self._weights if name not in seen)
        return order

    def ranked(self, key: ShardKey) -> list[str]:
        """Every node in *key*'s order of preference; ``ranked(key)[0] == route(key)``."""
        return self.ranked_hash(stable_hash(key))

    def counts(self) -> dict[str, int]:
        """How many slots each node holds."""
        held = Counter(self._table)
        return {name: held[name] for name in self._weights}

    def with_node(self, name: str, weight: float = 1.0) -> SlotRouter:
        """A router with *name* added: it takes its share of slots; no other slot moves.

        Raises:
            ConfigurationError: *name* is already a node, or the table has no slot to spare.
        """
        _check_node("SlotRouter", name)
        _check_weight("SlotRouter", name, weight)
        if name in self._weights:
            raise ConfigurationError(
                "SlotRouter.nodes", name, "is already a node; use with_weight to change its weight"
            )
        _check_slots(self.slots, len(self._weights) + 1)
        table = add_to_table(self._table, self._weights, name, float(weight))
        return SlotRouter._from({**self._weights, name: float(weight)}, table)

    def without_node(self, name: str) -> SlotRouter:
        """A router without *name*: its slots go to the others; no other slot moves.

        Raises:
            KeyError: *name* is not a node.
            ConfigurationError: it is the last node.
        """
        self._need(name)
        if len(self._weights) == 1:
            raise ConfigurationError(
                "SlotRouter.nodes", name, "is the last node; a router needs one"
            )
        table = remove_from_table(self._table, self._weights, name)
        return SlotRouter._from({n: w for n, w in self._weights.items() if n != name}, table)

    def with_weight(self, name: str, weight: float) -> SlotRouter:
        """A router with *name*'s weight changed: slots move only to or from *name*."""
        self._need(name)
        _check_weight("SlotRouter", name, weight)
        if float(weight) == self._weights[name]:
            return self  # resending the same weight moves nothing
        table = reweight_table(self._table, self._weights, name, float(weight))
        return SlotRouter._from({**self._weights, name: float(weight)}, table)

    def to_state(self) -> dict[str, Any]:
        """The router as JSON-ready data, to share with :meth:`from_state`."""
        names = list(self._weights)
        index = {name: i for i, name in enumerate(names)}
        width = 1 if len(names) <= 256 else 2 if len(names) <= 65536 else 4
        packed = b"".join(index[node].to_bytes(width, "big") for node in self._table)
        return {
            "kind": "SlotRouter",
            "hash": HASH_NAME,
            "slots": self.slots,
            "nodes": [[name, self._weights[name]] for name in names],
            "width": width,
            "table": base64.b64encode(packed).decode("ascii"),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SlotRouter:
        """Rebuild a router from :meth:`to_state` output.

        Raises:
            ConfigurationError: the state is malformed, for another hash, or inconsistent.
        """
        try:
            if state["kind"] != "SlotRouter" or state["hash"] != HASH_NAME:
                raise ValueError(f"kind {state['kind']!r} / hash {state['hash']!r}")
            slots = int(state["slots"])
            pairs = [(name, weight) for name, weight in state["nodes"]]
            weights = _weights_of("SlotRouter", pairs, state["nodes"])
            names = [name for name, _ in pairs]
            width = int(state["width"])
            packed = base64.b64decode(state["table"], validate=True)
            if width not in (1, 2, 4) or len(packed) != slots * width:
                raise ValueError("table length does not match slots and width")
            table = [
                names[int.from_bytes(packed[i : i + width], "big")]
                for i in range(0, len(packed), width)
            ]
        except ConfigurationError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigurationError(
                "SlotRouter.from_state", "<state>", f"is not a SlotRouter state ({exc})"
            ) from None
        _check_slots(slots, len(weights))
        if set(table) != set(weights):
            raise ConfigurationError(
                "SlotRouter.from_state",
                "<state>",
                "has nodes that hold no slot, or slots of unknown nodes",
            )
        return cls._from(weights, table)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SlotRouter):
            return NotImplemented
        return self._weights == other._weights and self._table == other._table

    def __hash__(self) -> int:
        return hash((tuple(self._weights.items()), tuple(self._table)))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and type(value) is not bool


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and type(value) is not bool


def _check_slots(slots: object, nodes: int) -> None:
    if not _is_int(slots) or slots < 1 or slots & (slots - 1):
        raise ConfigurationError("SlotRouter.slots", slots, "must be a power of two")
    if slots < nodes:
        raise ConfigurationError(
            "SlotRouter.slots", slots, f"must be at least the number of nodes ({nodes})"
        )


@final
class JumpRouter:
    """Jump consistent hashing onto numbered shards ``0 .. shards - 1``.

    No state, no memory, perfect balance, and growing from ``n`` to ``n + 1`` shards moves
    exactly the keys the new shard takes. Shards can only be added or removed at the end:
    use it for numbered partitions (queues, tables, files), not for workers that fail in
    any order. A lookup is O(log shards).

    Args:
        shards: How many shards, at least 1.

    >>> JumpRouter(10).route("WH-0042") in range(10)
    True

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_shards",)

    def __init__(self, shards: int) -> None:
        if not _is_int(shards) or shards < 1:
            raise ConfigurationError("JumpRouter.shards", shards, "must be an int >= 1")
        self._shards = shards

    @property
    def shards(self) -> int:
        """The number of shards."""
        return self._shards

    @property
    def nodes(self) -> range:
        """The shard numbers."""
        return range(self._shards)

    def route(self, key: ShardKey) -> int:
        """The shard *key* goes to."""
        return jump(stable_hash(key), self._shards)

    def route_hash(self, hashed: int) -> int:
        """The shard a key whose :func:`stable_hash` is *hashed* goes to."""
        return jump(hashed, self._shards)

    def ranked_hash(self, hashed: int) -> list[int]:
        """Every shard, in the order a key whose hash is *hashed* falls back through them."""
        order: list[int] = []
        seen: set[int] = set()
        for attempt in range(4 * self._shards + 4):
            shard = jump(probe(hashed, attempt), self._shards)
            if shard not in seen:
                seen.add(shard)
                order.append(shard)
                if len(order) == self._shards:
                    return order
        order.extend(s for s in range(self._shards) if s not in seen)
        return order

    def ranked(self, key: ShardKey) -> list[int]:
        """Every shard in *key*'s order of preference."""
        return self.ranked_hash(stable_hash(key))

    def with_shards(self, shards: int) -> JumpRouter:
        """A router over *shards* shards."""
        return JumpRouter(shards)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JumpRouter):
            return NotImplemented
        return self._shards == other._shards

    def __hash__(self) -> int:
        return hash(("JumpRouter", self._shards))

    def __repr__(self) -> str:
        return f"JumpRouter({self._shards})"


@final
class RangeRouter:
    """Route ordered keys (item ids) by ranges: sorted boundaries, one node per range.

    With boundaries ``[b1, b2, ...]`` and nodes ``[n0, n1, n2, ...]``, keys below ``b1`` go
    to ``n0``, keys in ``[b1, b2)`` to ``n1``, and so on; the last node takes everything from
    the last boundary up. Keys are compared, not hashed, so neighbouring ids stay together
    (good for range scans, bad for hot ranges: :meth:`split` them).

    Args:
        boundaries: Strictly increasing, all ``int``, all ``str`` or all ``bytes``.
        nodes: One more node than boundaries; a node may own several ranges.

    Raises:
        ConfigurationError: unsorted or mixed boundaries, or the wrong number of nodes.

    >>> router = RangeRouter([1000, 2000], ["a", "b", "c"])
    >>> [router.route(k) for k in (5, 1000, 1999, 2000)]
    ['a', 'b', 'b', 'c']

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_boundaries", "_nodes", "_type")

    def __init__(self, boundaries: Sequence[RangeKey], nodes: Sequence[str]) -> None:
        bounds = list(boundaries)
        kinds = {_range_kind(b) for b in bounds}
        if len(kinds) > 1 or None in kinds:
            raise ConfigurationError(
                "RangeRouter.boundaries", boundaries, "must all be int, all str or all bytes"
            )
        if any(not a < b for a, b in itertools.pairwise(bounds)):  # type: ignore[operator]
            raise ConfigurationError(
                "RangeRouter.boundaries", boundaries, "must be strictly increasing"
            )
        names = list(nodes)
        if isinstance(nodes, str) or len(names) != len(bounds) + 1:
            raise ConfigurationError(
                "RangeRouter.nodes", nodes, f"must list {len(bounds) + 1} nodes, one per range"
            )
        for name in names:
            _check_node("RangeRouter", name)
        self._boundaries: list[RangeKey] = bounds
        self._nodes = names
        self._type = kinds.pop() if kinds else None

    @property
    def boundaries(self) -> list[RangeKey]:
        """The boundaries, ascending."""
        return list(self._boundaries)

    @property
    def nodes(self) -> list[str]:
        """The node of each range, lowest range first."""
        return list(self._nodes)

    def ranges(self) -> list[tuple[RangeKey | None, RangeKey | None, str]]:
        """``(low, high, node)`` per range, ``low`` inclusive, ``high`` exclusive, ``None`` unbounded."""
        lows: list[RangeKey | None] = [None, *self._boundaries]
        highs: list[RangeKey | None] = [*self._boundaries, None]
        return list(zip(lows, highs, self._nodes, strict=True))

    def route(self, key: RangeKey) -> str:
        """The node of the range holding *key*.

        Raises:
            TypeError: *key* is not of the boundaries' type.
        """
        kind = _range_kind(key)
        if kind is None or (self._type is not None and kind is not self._type):
            expected = "int, str or bytes" if self._type is None else self._type.__name__
            raise TypeError(
                f"RangeRouter over {expected} boundaries cannot route "
                f"{type(key).__name__} key {key!r}"
            )
        return self._nodes[bisect.bisect_right(self._boundaries, key)]

    def split(self, at: RangeKey, node: str) -> RangeRouter:
        """A router where keys from *at* to the end of its range go to *node*.

        Raises:
            ConfigurationError: *at* is already a boundary or has the wrong type.
        """
        self._check_kind("RangeRouter.split", at)
        if at in self._boundaries:
            raise ConfigurationError("RangeRouter.split", at, "is already a boundary")
        index = bisect.bisect_right(self._boundaries, at)
        bounds = [*self._boundaries[:index], at, *self._boundaries[index:]]
        nodes = [*self._nodes[: index + 1], node, *self._nodes[index + 1 :]]
        return RangeRouter(bounds, nodes)

    def _check_kind(self, field: str, value: object) -> None:
        # Checked before any `in` test: True == 1 == 1.0 would otherwise find boundary 1.
        kind = _range_kind(value)
        if kind is None or (self._type is not None and kind is not self._type):
            expected = "an int, str or bytes" if self._type is None else f"a {self._type.__name__}"
            raise ConfigurationError(field, value, f"must be {expected} like the boundaries")

    def merge(self, boundary: RangeKey) -> RangeRouter:
        """A router without *boundary*: the range above it joins the one below (and its node).

        Raises:
            ConfigurationError: *boundary* is not a boundary.
        """
        self._check_kind("RangeRouter.merge", boundary)
        if boundary not in self._boundaries:
            raise ConfigurationError(
                "RangeRouter.merge",
                boundary,
                f"is not a boundary; boundaries: {self._boundaries!r}",
            )
        index = self._boundaries.index(boundary)
        bounds = [*self._boundaries[:index], *self._boundaries[index + 1 :]]
        nodes = [*self._nodes[: index + 1], *self._nodes[index + 2 :]]
        return RangeRouter(bounds, nodes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeRouter):
            return NotImplemented
        return self._boundaries == other._boundaries and self._nodes == other._nodes

    def __hash__(self) -> int:
        return hash((tuple(self._boundaries), tuple(self._nodes)))

    def __repr__(self) -> str:
        return f"RangeRouter({self._boundaries!r}, {self._nodes!r})"


def _range_kind(value: object) -> type | None:
    if isinstance(value, bool):
        return None
    for kind in (int, str, bytes):
        if isinstance(value, kind):
            return kind
    return None


@final
class HotKeyRouter(Generic[_N]):
    """Spread chosen hot keys over several chunks, each routed like a key of its own.

    A key listed in *hot* with ``k`` chunks is served by up to ``k`` nodes: an item of it
    goes to chunk ``stable_hash(part) % k``, and each chunk is routed by *router*. Other
    keys route exactly as through *router*. Work on a hot key is then no longer serialised
    on one worker; only work on the same ``(key, part)`` is.

    Args:
        router: A hashing router (:class:`RendezvousRouter`, :class:`SlotRouter`,
            :class:`JumpRouter`).
        hot: Key to number of chunks (at least 2).

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_hot", "_router")

    def __init__(self, router: HashRouter[_N], hot: Mapping[ShardKey, int]) -> None:
        checked: dict[int, int] = {}
        for key, chunks in hot.items():
            if not _is_int(chunks) or chunks < 2:
                raise ConfigurationError(
                    f"HotKeyRouter.hot[{key!r}]",
                    chunks,
                    "must be an int >= 2 (a key in one chunk is not hot: leave it out)",
                )
            checked[stable_hash(key)] = chunks
        self._router = router
        self._hot = checked

    @property
    def router(self) -> HashRouter[_N]:
        """The router every chunk and every other key goes through."""
        return self._router

    def chunks(self, key: ShardKey) -> int:
        """How many chunks *key* is spread over (1 for a key that is not hot)."""
        return self._hot.get(stable_hash(key), 1)

    def route(self, key: ShardKey, part: ShardKey | None = None) -> _N:
        """The node serving *part* of *key* (*part* is ignored for keys that are not hot).

        Raises:
            ValueError: *key* is hot and no *part* was given.
        """
        hashed = stable_hash(key)
        chunks = self._hot.get(hashed)
        if chunks is None:
            return self._router.route_hash(hashed)
        if part is None:
            raise ValueError(
                f"key {key!r} is spread over {chunks} chunks; pass the part of it to route"
            )
        return self._router.route_hash(self._chunk_hash(hashed, stable_hash(part) % chunks))

    def owners(self, key: ShardKey) -> list[_N]:
        """The distinct nodes serving *key*'s chunks, in chunk order."""
        hashed = stable_hash(key)
        chunks = self._hot.get(hashed)
        if chunks is None:
            return [self._router.route_hash(hashed)]
        found: list[_N] = []
        for chunk in range(chunks):
            node = self._router.route_hash(self._chunk_hash(hashed, chunk))
            if node not in found:
                found.append(node)
        return found

    @staticmethod
    def _chunk_hash(hashed: int, chunk: int) -> int:
        return tagged_hash(_CHUNK_TAG, hashed.to_bytes(8, "big"), chunk.to_bytes(4, "big"))


@final
class BoundedLoadRouter(Generic[_N]):
    """Consistent hashing with bounded loads: no node is given more than ``factor`` × its share.

    :meth:`assign` gives a key the first node in its order of preference (the wrapped
    router's ``ranked``) whose load is under its cap, ``ceil(factor × (assigned + 1) ×
    weight / total weight)``, and remembers it until :meth:`release`. The cap holds when a
    key is assigned; keys keep their node while assigned, so after many releases a node can
    sit above the cap of the smaller total until its keys are released too. A cap trades
    some of the minimal movement of the plain router for a bound on load. Thread-safe; the
    state is this process's own.

    Args:
        router: A hashing router (:class:`RendezvousRouter`, :class:`SlotRouter`,
            :class:`JumpRouter`).
        factor: The cap over an even share, > 1 (1.25 is the usual choice).

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_assigned", "_factor", "_load", "_lock", "_router", "_share")

    def __init__(self, router: HashRouter[_N], *, factor: float = 1.25) -> None:
        if not _is_number(factor) or not math.isfinite(factor) or factor <= 1:
            raise ConfigurationError(
                "BoundedLoadRouter.factor", factor, "must be a finite number > 1"
            )
        nodes = router.nodes
        weights = dict(nodes) if isinstance(nodes, Mapping) else dict.fromkeys(nodes, 1.0)
        total = math.fsum(weights.values())
        self._router = router
        self._factor = float(factor)
        self._share: dict[Any, float] = {node: weight / total for node, weight in weights.items()}
        self._load: Counter[_N] = Counter()
        self._assigned: dict[int, _N] = {}
        self._lock = threading.Lock()

    @property
    def factor(self) -> float:
        """The cap over an even share."""
        return self._factor

    def assign(self, key: ShardKey) -> _N:
        """The node *key* is assigned to, assigning it first if it is new."""
        hashed = stable_hash(key)
        with self._lock:
            node = self._assigned.get(hashed)
            if node is not None:
                return node
            total = len(self._assigned) + 1
            # The caps sum to factor x (assigned + 1) > assigned: some node is under its cap.
            candidate = next(
                node
                for node in self._router.ranked_hash(hashed)
                if self._load[node] < math.ceil(self._factor * total * self._share[node])
            )
            self._assigned[hashed] = candidate
            self._load[candidate] += 1
            return candidate

    def release(self, key: ShardKey) -> bool:
        """Forget *key*'s assignment; ``False`` if it had none."""
        hashed = stable_hash(key)
        with self._lock:
            node = self._assigned.pop(hashed, None)
            if node is None:
                return False
            self._load[node] -= 1
            return True

    def loads(self) -> dict[_N, int]:
        """How many keys each node holds now."""
        with self._lock:
            return {node: count for node, count in self._load.items() if count}


@final
@attrs.frozen(kw_only=True)
class RouteDiff(Generic[_N]):
    """Which keys move between two routers, and where.

    Attributes:
        moved: Moved key to ``(old node, new node)``, in the order the keys were given.
        total: How many keys were compared.

    .. versionadded:: 0.1.0
    """

    moved: Mapping[Any, tuple[_N, _N]]
    total: int

    @property
    def fraction(self) -> float:
        """The share of the compared keys that moved (0.0 for no keys)."""
        return len(self.moved) / self.total if self.total else 0.0

    def flows(self) -> Counter[tuple[_N, _N]]:
        """How many keys moved along each ``(old, new)`` pair."""
        return Counter(self.moved.values())

    def __len__(self) -> int:
        return len(self.moved)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.moved)


def diff(old: Router[_N], new: Router[_N], keys: Iterable[Any]) -> RouteDiff[_N]:
    """Report exactly which of *keys* route differently under *new* than under *old*.

    A key given twice counts once; ``bytearray`` keys are reported as ``bytes``.

    >>> before = RendezvousRouter(["a", "b", "c"])
    >>> moved = diff(before, before.without_node("b"), range(1000))
    >>> all(old == "b" for old, _ in moved.moved.values())
    True

    .. versionadded:: 0.1.0
    """
    moved: dict[Any, tuple[_N, _N]] = {}
    seen: set[Any] = set()
    for key in keys:
        key = _hashable(key)  # a bytearray is compared, and reported, as its bytes
        if key in seen:
            continue  # a key given twice is one key
        seen.add(key)
        was, now = old.route(key), new.route(key)
        if was != now:
            moved[key] = (was, now)
    return RouteDiff(moved=moved, total=len(seen))


# -- ownership ------------------------------------------------------------------------------

RouterFactory = Callable[[Mapping[str, float]], "Router[str]"]

# A worker stops owning keys this fraction of a lease before its lease ends on its own clock:
# the handoff stays safe as long as the store's clock runs less than 2% faster than the
# worker's (so that the store cannot expire the lease before the worker stops).
_DRIFT = 0.02


@attrs.frozen
class _Held:
    """One worker's view with its lease deadline and routers: swapped as one value."""

    view: MembershipView | None
    deadline: float
    not_before: float  # the end of the view's quiet period, on this worker's clock
    routers: Mapping[int, tuple[Mapping[str, float], Router[str] | None]]
    settled: Router[str] | None  # the current router, when no handoff is in flight


class _Ownership:
    """What both assignment shells share: the view, the lease deadline, and routers by version."""

    def __init__(
        self,
        owner: str,
        member: str,
        *,
        weight: float,
        lease: float | Any,
        heartbeat: float | Any | None,
        router: RouterFactory,
        clock: Clock,
    ) -> None:
        name: object = member
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"{owner}.member", member, "must be a non-empty str")
        if not _is_number(weight) or not math.isfinite(weight) or weight <= 0:
            raise ConfigurationError(f"{owner}.weight", weight, "must be a finite number > 0")
        lease = seconds(lease)
        if not _is_number(lease) or not math.isfinite(lease) or lease <= 0:
            raise ConfigurationError(
                f"{owner}.lease", lease, "must be a finite number of seconds > 0"
            )
        beat = lease / 3 if heartbeat is None else seconds(heartbeat)
        if not _is_number(beat) or not 0 < beat < lease * (1 - _DRIFT):
            raise ConfigurationError(
                f"{owner}.heartbeat",
                heartbeat,
                f"must be > 0 and shorter than {1 - _DRIFT:g} of the lease ({lease} s), with room"
                " for a round trip: a third of the lease is the usual choice",
            )
        self.member = member
        self.weight = float(weight)
        self.lease = float(lease)
        self.interval = float(beat)
        self.token = self.incarnation = ""
        self.new_incarnation()
        self._factory = router
        self._clock = clock
        # Replaced whole, so that owns() never sees a view with another view's deadline.
        self._state = _Held(None, -math.inf, -math.inf, {}, None)
        # Keys with work in flight (hold), and the newest version reported as acted on.
        self._held: Counter[ShardKey] = Counter()
        self._held_lock = threading.Lock()
        self.acked = 0

    def new_incarnation(self) -> None:
        """A fresh token: the next join is a new member, which an old leave cannot remove."""
        self.token = uuid.uuid4().hex
        self.incarnation = incarnation_of(self.token)

    def relinquish(self) -> None:
        """Own nothing from now on, whatever becomes of the request that follows."""
        held = self._state
        self._state = _Held(held.view, -math.inf, -math.inf, held.routers, None)

    def joined(self, view: MembershipView, sent_at: float) -> list[Any]:
        """Adopt the view a join returned (the store records the join's version as acked)."""
        _, events = self.adopt(view, sent_at)
        self.acked = view.version
        return events

    def ack_to_send(self) -> int:
        """The version to report as acted on: the newest held, unless work in flight forbids.

        A key held by :meth:`hold` that routes elsewhere under the newest view keeps the
        report at the last version sent, so the key's next owner waits until it is released.
        """
        view = self._state.view
        if view is None or view.version <= self.acked:
            return self.acked
        with self._held_lock:
            keys = list(self._held)
        entry = self._state.routers.get(view.version)
        router = None if entry is None else entry[1]
        if keys and (router is None or any(router.route(k) != self.member for k in keys)):
            return self.acked
        return view.version

    def beat(
        self, view: MembershipView, sent_at: float, acked: int
    ) -> tuple[bool, bool, list[Any]]:
        """Adopt a heartbeat's view: whether still a member, whether to acknowledge it now, events."""
        self.acked = max(self.acked, acked)
        live, events = self.adopt(view, sent_at)
        if not live:
            if _events.active:
                events.append(self.lost(view))
            self.new_incarnation()
            return False, False, events
        return True, self.ack_to_send() > self.acked, events

    @contextlib.contextmanager
    def hold(self, key: ShardKey) -> Iterator[int]:
        # Registered before the ownership check: an acknowledgement computed meanwhile
        # either sees the key, or was computed after a view in which the check then fails.
        name = _hashable(key)
        with self._held_lock:
            self._held[name] += 1
        try:
            yield self.require(key)
        finally:
            with self._held_lock:
                self._held[name] -= 1
                if self._held[name] <= 0:
                    del self._held[name]

    @property
    def view(self) -> MembershipView | None:
        return self._state.view

    def expires_in(self) -> float:
        return max(0.0, self._state.deadline - self._clock.monotonic())

    def sent(self) -> float:
        return self._clock.monotonic()

    def adopt(self, view: MembershipView, sent_at: float) -> tuple[bool, list[Any]]:
        """Take *view* (read by a call sent at *sent_at*); whether the member is in it, and events."""
        # The lease started when the store handled the call, after sent_at: counting from
        # sent_at ends this worker's copy first. A quiet period is counted from now, after
        # the store's reading, so it ends last.
        not_before = self._clock.monotonic() + view.quiet_for if view.quiet_for > 0 else -math.inf
        old = self._state.view
        # The name alone is not enough: after this worker's lease ran out, a newer process
        # may hold it; heartbeats under a stale token are ignored, so only the incarnation
        # tells.
        holder = view.members.get(self.member)
        live = holder is not None and holder.incarnation in (self.incarnation, "")
        deadline = sent_at + self.lease * (1 - _DRIFT) if live else -math.inf
        routers: dict[int, tuple[Mapping[str, float], Router[str] | None]] = {}
        for version, weights in (*view.history.items(), (view.version, view.weights)):
            cached = self._state.routers.get(version)
            # A version's weights never change, unless the store was wiped and counts again.
            if cached is not None and cached[0] == weights:
                routers[version] = cached
            else:
                routers[version] = (weights, self._factory(weights) if weights else None)
        # When no other live member may still act on an older version, ownership is just
        # "routes to me": owns() then skips the handoff rule.
        settled = live and all(
            member.acked >= view.version
            for name, member in view.members.items()
            if name != self.member
        )
        current = routers[view.version][1]
        self._state = _Held(view, deadline, not_before, routers, current if settled else None)
        events: list[Any] = []
        if _events.active and (old is None or old.version != view.version):
            events = [
                _events.MembershipEvent(
                    source=view.group,
                    kind=change.kind,
                    member=change.member,
                    version=change.version,
                )
                for change in changes_between(old, view)
            ]
        return live, events

    def lost(self, view: MembershipView) -> Any:
        return _events.MembershipEvent(
            source=view.group, kind="lease_lost", member=self.member, version=view.version
        )

    def owns(self, key: ShardKey) -> bool:
        return self._owns(self._state, key)

    def _owns(self, held: _Held, key: ShardKey) -> bool:
        view = held.view
        now = self._clock.monotonic()
        if view is None or now >= held.deadline or now < held.not_before:
            return False
        if held.settled is not None:
            return held.settled.route(key) == self.member
        routers = held.routers

        def owner_at(version: int) -> str | None:
            router = routers[version][1]
            return None if router is None else router.route(key)

        return may_own(view, self.member, owner_at)

    def owner(self, key: ShardKey) -> str:
        held = self._state
        entry = None if held.view is None else held.routers.get(held.view.version)
        if entry is None or entry[1] is None:
            raise NoShardOwnerError(
                f"no live member of the group owns {key!r}: the view is empty or not read yet"
            )
        return entry[1].route(key)

    def require(self, key: ShardKey) -> int:
        held = self._state
        if held.view is None or not self._owns(held, key):
            version = None if held.view is None else held.view.version
            raise NoShardOwnerError(
                f"{self.member!r} does not own {key!r} at membership version {version}"
            )
        return held.view.version


@final
class StaticMembership:
    """A fixed list of members: every listed member is always live, and the version is 1.

    For a fixed set of workers configured by hand (``worker-0`` .. ``worker-3``), or for
    tests. Nothing expires and nothing hands off, so two workers own the same key only if
    you start two under one name, or change the list while workers run on the old one:
    restart all of them to change it. For workers that come and go, use a backend's
    ``membership(group)``.

    Args:
        members: Member names (weight 1), or names to weights. The weights given to
            :meth:`join` are ignored: the list decides.
        group: The group's name, for events.

    Raises:
        ConfigurationError: no members, a bad name or weight.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_group", "_view")

    def __init__(
        self, members: Mapping[str, float] | Iterable[str], *, group: str = "static"
    ) -> None:
        weights = _node_weights("StaticMembership", members)
        self._group = group
        self._view = MembershipView(
            group=group,
            version=1,
            members={
                name: Member(name=name, weight=weight, acked=1) for name, weight in weights.items()
            },
        )

    @property
    def group(self) -> str:
        """The group's name."""
        return self._group

    def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """The view, if *member* is listed.

        Raises:
            ConfigurationError: *member* is not in the list.
        """
        if member not in self._view.members:
            raise ConfigurationError(
                "StaticMembership.members",
                member,
                f"is not a member; members: {sorted(self._view.members)}",
            )
        return self._view

    def heartbeat(self, member: str, token: str, *, lease: float, acked: int) -> MembershipView:
        """The view (a static member never expires)."""
        return self._view

    def leave(self, member: str, token: str) -> MembershipView:
        """The view, unchanged: a static member stays in the list."""
        return self._view

    def view(self) -> MembershipView:
        """The view."""
        return self._view

    def close(self) -> None:
        """Nothing to close."""

    def __repr__(self) -> str:
        return f"StaticMembership({self._view.weights!r}, group={self._group!r})"


@final
class AsyncStaticMembership:
    """The async twin of :class:`StaticMembership`, for :class:`AsyncShardAssignment`.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_static",)

    def __init__(
        self, members: Mapping[str, float] | Iterable[str], *, group: str = "static"
    ) -> None:
        self._static = StaticMembership(members, group=group)

    @property
    def group(self) -> str:
        """The group's name."""
        return self._static.group

    async def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """See :meth:`StaticMembership.join`."""
        return self._static.join(member, token, weight=weight, lease=lease)

    async def heartbeat(
        self, member: str, token: str, *, lease: float, acked: int
    ) -> MembershipView:
        """See :meth:`StaticMembership.heartbeat`."""
        return self._static.view()

    async def leave(self, member: str, token: str) -> MembershipView:
        """See :meth:`StaticMembership.leave`."""
        return self._static.view()

    async def view(self) -> MembershipView:
        """See :meth:`StaticMembership.view`."""
        return self._static.view()

    async def close(self) -> None:
        """Nothing to close."""


def _hashable(key: ShardKey) -> ShardKey:
    # bytes-like keys are accepted like bytes, but a bytearray cannot be a dict key.
    value: object = key
    return bytes(value) if isinstance(value, bytearray) else key


def _emit(events: Iterable[Any]) -> None:
    for event in events:
        _events.emit(event)


@final
class ShardAssignment:
    """Which keys one worker owns, from a group's membership, with safe handoffs.

    The worker joins the group, renews its lease with heartbeats, and asks :meth:`owns`
    before acting on a key. :meth:`owns` reads no store: it answers from the newest view
    and the worker's own copy of its lease. At one membership version no key is owned by
    two live workers, and a key that moves waits until its old owner has acknowledged the
    new version, has left, or has let its lease run out (see :doc:`/sharding`).

    ``with assignment:`` joins, heartbeats every *heartbeat* seconds on a daemon thread, and
    leaves on exit; or call :meth:`join`, :meth:`heartbeat` and :meth:`leave` yourself.

    Args:
        membership: The group's store (:class:`~invresilience.StaticMembership`,
            ``backend.membership(group)``).
        member: This worker's name: unique among live workers (a host name plus a process
            number is a good choice).
        weight: Its routing weight.
        lease: Seconds the worker stays a member without a heartbeat (float or timedelta).
        heartbeat: Seconds between heartbeats; a third of the lease by default.
        router: Builds each version's router from its member weights; any function of the
            weights alone. :class:`RendezvousRouter` by default.
        clock: The worker's clock for its own lease.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        membership: Membership,
        member: str,
        *,
        weight: float = 1.0,
        lease: float | Any = 10.0,
        heartbeat: float | Any | None = None,
        router: RouterFactory = RendezvousRouter,
        clock: Clock | None = None,
    ) -> None:
        self._membership = membership
        self._own = _Ownership(
            "ShardAssignment",
            member,
            weight=weight,
            lease=lease,
            heartbeat=heartbeat,
            router=router,
            clock=clock or SystemClock(),
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def member(self) -> str:
        """This worker's name."""
        return self._own.member

    @property
    def view(self) -> MembershipView | None:
        """The newest view read, or ``None`` before :meth:`join`."""
        return self._own.view

    @property
    def version(self) -> int:
        """The newest membership version read (0 before :meth:`join`)."""
        view = self._own.view
        return 0 if view is None else view.version

    def expires_in(self) -> float:
        """Seconds left on this worker's own copy of its lease (0.0 when it holds none)."""
        return self._own.expires_in()

    def join(self) -> MembershipView:
        """Join the group (or renew the membership); the view after joining.

        Raises:
            MembershipConflictError: another live worker holds this name.
            BackendError: the store failed.
        """
        with self._lock:
            sent = self._own.sent()
            view = self._membership.join(
                self.member, self._own.token, weight=self._own.weight, lease=self._own.lease
            )
            events = self._own.joined(view, sent)
        _emit(events)
        return view

    def heartbeat(self) -> MembershipView:
        """Renew the lease, report the version acted on, and take the newest view.

        A new version is acknowledged at once, with a second request, since the workers
        taking keys over from this one wait for it; unless a key held by :meth:`hold` moves
        away in it, in which case the acknowledgement waits until the key is released.
        A worker whose lease ran out (it was paused, or cut off from the store) is no longer
        a member: it emits a ``lease_lost`` event and joins again, as a new member.
        """
        with self._lock:
            view, live, ack, events = self._beat_once()
            if ack:
                view, live, _, more = self._beat_once()
                events += more
        _emit(events)
        return view if live else self.join()

    def _beat_once(self) -> tuple[MembershipView, bool, bool, list[Any]]:
        acked = self._own.ack_to_send()
        sent = self._own.sent()
        view = self._membership.heartbeat(
            self.member, self._own.token, lease=self._own.lease, acked=acked
        )
        return (view, *self._own.beat(view, sent, acked))

    def leave(self) -> None:
        """Leave the group: this worker owns nothing from the call on, and its keys move.

        The worker gives its keys up before the request is sent, so that whether the store
        answers or not, it never owns a key that another worker may already have taken.
        """
        self.stop()
        self._own.relinquish()
        with self._lock:
            view = self._membership.leave(self.member, self._own.token)
            self._own.new_incarnation()
            _, events = self._own.adopt(view, self._own.sent())
        _emit(events)

    def owns(self, key: ShardKey) -> bool:
        """Whether this worker may act on *key* now (no I/O)."""
        return self._own.owns(key)

    def require(self, key: ShardKey) -> int:
        """The membership version to fence work on *key* with, if this worker owns it.

        Raises:
            NoShardOwnerError: it does not own *key* now.
        """
        return self._own.require(key)

    def hold(self, key: ShardKey) -> contextlib.AbstractContextManager[int]:
        """Do work on *key* while owning it; the fence (membership version) for its writes.

        While the block runs, the worker does not acknowledge a membership version under
        which *key* moves away, so the key's next owner waits until the block ends (or this
        worker's lease runs out). Work that can outlast a handoff belongs in such a block:
        ``owns()`` alone says who may *start* work, not who may still be finishing it.

        Raises:
            NoShardOwnerError: this worker does not own *key* now.
        """
        return self._own.hold(key)

    def owner(self, key: ShardKey) -> str:
        """The member *key* routes to at the newest version (it may still be taking over).

        Raises:
            NoShardOwnerError: no view yet, or no live member.
        """
        return self._own.owner(key)

    def start(self) -> None:
        """Heartbeat on a daemon thread every *heartbeat* seconds until :meth:`stop`.

        The thread waits in real time (an interruptible wait, so :meth:`stop` is prompt),
        whatever the clock; in tests on a ``ManualClock``, call :meth:`heartbeat` yourself.
        """
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._beat, name=f"invresilience-membership-{self.member}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the heartbeat thread (the lease then runs out unless renewed)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._own.interval):
            try:
                self.heartbeat()
            except Exception:  # noqa: BLE001 - a failed beat is retried at the next tick
                _events.logger.warning(
                    "membership heartbeat of %r failed", self.member, exc_info=True
                )

    def __enter__(self) -> Self:
        self.join()
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.leave()


@final
class AsyncShardAssignment:
    """The async twin of :class:`ShardAssignment`, over an :class:`~invresilience.typing.AsyncMembership`.

    :meth:`owns` and :meth:`require` do no I/O and are plain methods; ``async with`` joins,
    heartbeats in a task, and leaves.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        membership: AsyncMembership,
        member: str,
        *,
        weight: float = 1.0,
        lease: float | Any = 10.0,
        heartbeat: float | Any | None = None,
        router: RouterFactory = RendezvousRouter,
        clock: Clock | None = None,
    ) -> None:
        self._membership = membership
        self._clock = clock or SystemClock()
        self._own = _Ownership(
            "AsyncShardAssignment",
            member,
            weight=weight,
            lease=lease,
            heartbeat=heartbeat,
            router=router,
            clock=self._clock,
        )
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def member(self) -> str:
        """This worker's name."""
        return self._own.member

    @property
    def view(self) -> MembershipView | None:
        """The newest view read, or ``None`` before :meth:`join`."""
        return self._own.view

    @property
    def version(self) -> int:
        """The newest membership version read (0 before :meth:`join`)."""
        view = self._own.view
        return 0 if view is None else view.version

    def expires_in(self) -> float:
        """Seconds left on this worker's own copy of its lease (0.0 when it holds none)."""
        return self._own.expires_in()

    async def join(self) -> MembershipView:
        """Join the group; see :meth:`ShardAssignment.join`."""
        async with self._lock:
            sent = self._own.sent()
            view = await self._membership.join(
                self.member, self._own.token, weight=self._own.weight, lease=self._own.lease
            )
            events = self._own.joined(view, sent)
        _emit(events)
        return view

    async def heartbeat(self) -> MembershipView:
        """Renew the lease and take the newest view; see :meth:`ShardAssignment.heartbeat`."""
        async with self._lock:
            view, live, ack, events = await self._beat_once()
            if ack:
                view, live, _, more = await self._beat_once()
                events += more
        _emit(events)
        return view if live else await self.join()

    async def _beat_once(self) -> tuple[MembershipView, bool, bool, list[Any]]:
        acked = self._own.ack_to_send()
        sent = self._own.sent()
        view = await self._membership.heartbeat(
            self.member, self._own.token, lease=self._own.lease, acked=acked
        )
        return (view, *self._own.beat(view, sent, acked))

    async def leave(self) -> None:
        """Leave the group; see :meth:`ShardAssignment.leave`."""
        await self.stop()
        self._own.relinquish()
        async with self._lock:
            view = await self._membership.leave(self.member, self._own.token)
            self._own.new_incarnation()
            _, events = self._own.adopt(view, self._own.sent())
        _emit(events)

    def owns(self, key: ShardKey) -> bool:
        """Whether this worker may act on *key* now (no I/O)."""
        return self._own.owns(key)

    def require(self, key: ShardKey) -> int:
        """The membership version to fence work on *key* with; see :meth:`ShardAssignment.require`."""
        return self._own.require(key)

    def hold(self, key: ShardKey) -> contextlib.AbstractContextManager[int]:
        """Do work on *key* while owning it; see :meth:`ShardAssignment.hold` (no I/O)."""
        return self._own.hold(key)

    def owner(self, key: ShardKey) -> str:
        """The member *key* routes to at the newest version; see :meth:`ShardAssignment.owner`."""
        return self._own.owner(key)

    def start(self) -> None:
        """Heartbeat in a task on the running loop until :meth:`stop`.

        The task sleeps on the injected clock, so on a ``ManualClock`` each turn of the
        loop moves time on by one heartbeat interval.
        """
        if self._task is None:
            self._task = asyncio.ensure_future(self._beat())

    async def stop(self) -> None:
        """Stop the heartbeat task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait((task,))

    async def _beat(self) -> None:
        while True:
            await self._clock.asleep(self._own.interval)
            try:
                await self.heartbeat()
            except Exception:  # noqa: BLE001 - a failed beat is retried at the next tick
                _events.logger.warning(
                    "membership heartbeat of %r failed", self.member, exc_info=True
                )

    async def __aenter__(self) -> Self:
        await self.join()
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.leave()
