"""Shard routers: µs per lookup, balance and keys moved, beside the libraries people use.

Ours: :class:`~invresilience.SlotRouter` (the router the budget is on: O(1), for many
nodes), :class:`~invresilience.RendezvousRouter` (O(nodes) per lookup) and
:class:`~invresilience.JumpRouter` (numbered shards). The designs the issue named as the
alternatives to a slot table, AnchorHash and DxHash, in pure Python over the same
``stable_hash`` (``bench/_alternatives.py``), with room to double the nodes: AnchorHash
with ``2n`` buckets, DxHash with the smallest power of two ``≥ 2n`` positions. The anchors: uhashring's and
hashring's ``HashRing`` (consistent-hash rings on MD5, with their default virtual nodes),
jump-consistent-hash's ``jump.hash`` (fed ``zlib.crc32`` of the key, as it takes integers),
and plain modulo: ``nodes[crc32(key) % n]`` and ``nodes[hash(key) % n]``.

Nodes are ``worker-0000`` .. ``worker-0999`` (10, 100 and 1,000 of them); keys are the
1,000,000 strings ``"WH-0000000"`` .. ``"WH-0999999"``.

``lookup, <n> nodes, per key``
    Each timed call looks up the next 100 keys of the list (wrapping around), one public
    lookup per key (``router.route(key)``, ``ring.get_node(key)``, ...), and ``bench/run.py``
    divides its figures by 100. The baseline is ``nodes[hash(key) % n]``: Python caches a
    ``str``'s hash in the object, so it is the floor of any lookup, not what hashing a fresh
    key costs (and it differs between processes). A row's repeat covers ``loops × 100``
    keys: for the O(nodes) RendezvousRouter at 1,000 nodes that is a subsample of a few
    hundred keys (the verdict lines print how many).

Balance and keys moved are computed before the timing, over every key (a subsample, spread
evenly over the list, for RendezvousRouter at 100 and 1,000 nodes, whose lookups cost tens to
hundreds of µs; the table says how many keys each row used; ``--quick`` uses a tenth):

balance
    the most keys on one node ÷ the mean (keys ÷ nodes). Sampling alone gives a perfect
    random assignment a max/mean above 1; the table prints that expected floor beside it.
keys moved on add
    adding ``worker-<n>``: the fraction of keys whose node changed, and its ratio to the
    optimum ``1 / (n + 1)``. Our routers use ``with_node``; the rings ``add_node`` (or a
    ring built with the node, for hashring, which has no such method); modulo and jump use
    ``n + 1``.
keys moved on removing a middle node
    removing ``worker-<n // 2>``: the fraction moved and its ratio to that node's own
    keys. Jump hashing cannot remove a middle shard; its rows renumber the last shard into
    the gap (shards ``n - 1``), which moves the removed shard's keys and the last shard's.

``lookup, <n> nodes, <p>% removed, per key``
    SlotRouter, AnchorHash and DxHash after ``p``% of the ``n`` nodes (10% and 50%, at
    100 and 1,000 nodes) were removed one by one, in a fixed pseudo-random order, from
    the routers above (so AnchorHash and DxHash keep their capacity while their removed
    buckets or positions accumulate); the floor is ``hash(key) % m`` over the ``m`` nodes
    left. The run checks, over a subsample of keys, that after the removals every key goes
    to a node left, and that no key whose node is left moved.

A benchmark that measures the wrong thing exits 2: every row must return one of its nodes,
the timed lookup must agree with the one balance and movement were computed with, and our
routers' and the alternatives' moves must go only to the added node, or only from the
removed one(s).

Run it through ``bench/run.py``.
"""

from __future__ import annotations

import importlib
import itertools
import math
import random
import statistics
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from _alternatives import AnchorRouter, DxRouter
from _harness import BASELINE, Case, Gap, Mode, Result

if TYPE_CHECKING:
    from collections.abc import Awaitable, Hashable, Sequence
    from types import CodeType

__all__ = [
    "BASELINE_LABELS",
    "BUDGETS",
    "GAPS",
    "LIBRARIES",
    "NOTES",
    "PER_ITEM",
    "TITLE",
    "build_cases",
    "check_cases",
    "teardown",
]

TITLE = "Shard routers: µs per lookup, balance and keys moved"
OURS = "invresilience"
LIBRARIES = (OURS, "uhashring", "hashring", "jump-consistent-hash")
MODE: Mode = "sync"

NODE_COUNTS = (10, 100, 1000)
BUDGET_NODES = 100
KEYS = 1_000_000
CHUNK = 100  # keys per timed call
# Balance and movement use every SCALE-th key: 1, or 10 under run.py's --quick (configure).
SCALE = 1


def configure(*, quick: bool) -> None:
    """Take run.py's options: ``--quick`` measures balance and movement over a tenth of the keys."""
    global SCALE
    SCALE = 10 if quick else 1


# RendezvousRouter costs ~35 µs per lookup at 100 nodes and ~300 µs at 1,000 on the
# reference machine: balance and movement use this many keys for it (three passes each).
RENDEZVOUS_KEYS = {10: KEYS, 100: 250_000, 1000: 25_000}

LOOKUP_BUDGET_US = 1.0
BALANCE_BUDGET = 1.03
MOVEMENT_BUDGET = 1.05

SLOT = f"{OURS} SlotRouter"
RENDEZVOUS = f"{OURS} RendezvousRouter"
JUMP = f"{OURS} JumpRouter"
UHASHRING = "uhashring HashRing"
HASHRING = "hashring HashRing"
JUMP_HASH = "jump-consistent-hash jump.hash(crc32(key))"
CRC_MODULO = "crc32(key) % n"
HASH_MODULO = "hash(key) % n"
FLOOR_LABEL = "hash(key) % n (floor: Python's str hash, cached in the str)"
ANCHOR = "AnchorHash (pure Python)"
DX = "DxHash (pure Python)"
#: The alternatives to a slot table: checked, like ours, to move only the keys that must.
ALTERNATIVES = (ANCHOR, DX)
#: Lookups are also timed after this many percent of the nodes were removed, at these counts.
REMOVED_PERCENTS = (10, 50)
REMOVAL_NODES = (100, 1000)
REMOVAL_CHECK_KEYS = 50_000  # keys the removal check follows (÷ SCALE)


def anchor_capacity(nodes: int) -> int:
    """AnchorHash's buckets: room for twice the initial nodes."""
    return 2 * nodes


def dx_capacity(nodes: int) -> int:
    """DxHash's positions: the smallest power of two with room for twice the initial nodes."""
    return 1 << (2 * nodes - 1).bit_length()


def scenario(nodes: int) -> str:
    return f"lookup, {nodes:,} nodes, per key"


def removed_scenario(nodes: int, percent: int) -> str:
    return f"lookup, {nodes:,} nodes, {percent}% removed, per key"


#: Every scenario, to its initial number of nodes.
SCENARIO_NODES = {scenario(n): n for n in NODE_COUNTS} | {
    removed_scenario(n, p): n for n in REMOVAL_NODES for p in REMOVED_PERCENTS
}
BASELINE_LABELS = dict.fromkeys(SCENARIO_NODES, FLOOR_LABEL)
#: Every scenario's timed call looks up CHUNK keys: run.py divides its figures by it.
PER_ITEM = dict.fromkeys(SCENARIO_NODES, CHUNK)

NOTES = (
    (
        "Keys are the 1,000,000 strs 'WH-0000000' .. 'WH-0999999'; nodes 'worker-0000' .."
        " 'worker-0999'. Each timed call looks up the next 100 keys (wrapping around), so µs"
        " are per lookup, loop included; the Python calls column counts frames per 100"
        " lookups."
    ),
    (
        "Ours route through the public route(key) (stable_hash, BLAKE2b, included);"
        " uhashring.HashRing(nodes) (160 virtual nodes each, MD5) and hashring.HashRing(nodes)"
        " (120 points each, MD5) through get_node(key); jump-consistent-hash's jump.hash takes"
        " an int, so its key is zlib.crc32(key.encode()); crc32(key) % n and hash(key) % n"
        " index the node list."
    ),
    (
        "AnchorHash and DxHash are bench/_alternatives.py, pure Python over the same"
        " stable_hash, routing through route(key) like ours: AnchorHash (Algorithm 3) with"
        " 2n buckets, DxHash with the smallest power of two >= 2n positions, so both have"
        " room to double the nodes. The 'p% removed' scenarios time SlotRouter, AnchorHash"
        " and DxHash after p% of the nodes were removed; their floor indexes the nodes left."
    ),
    (
        "The floor, nodes[hash(key) % n], reads the hash Python cached in each str the first"
        " time it was hashed: the least a lookup can cost, and not stable across processes"
        " (PYTHONHASHSEED)."
    ),
)

#: Rows that could not be timed (none: every router is timed or not installed).
GAPS: list[Gap] = []

Node = Any  # a node name (str) or a shard number (int)
Lookup = Callable[[str], Node]


def _anchor(module: str) -> Any:
    """Import an anchor by name: mypy need not have it installed, and its types are Any."""
    return importlib.import_module(module)


def node_names(count: int) -> list[str]:
    return [f"worker-{i:04d}" for i in range(count)]


def expected_floor(keys: int, nodes: int) -> float:
    """The expected max/mean of *keys* keys thrown uniformly at random on *nodes* nodes.

    Each node's load is about normal with mean ``keys / nodes`` and standard deviation
    ``sqrt(keys * p * (1 - p))``, ``p = 1 / nodes``; the expected maximum of *nodes* of
    them is ``E[max Z]`` standard deviations above the mean, integrated numerically.
    """
    if nodes == 1:
        return 1.0
    step = 0.002
    total = 0.0
    for i in range(-4000, 4000):
        z = (i + 0.5) * step
        cdf = 0.5 * (1 + math.erf(z / math.sqrt(2)))
        pdf = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
        total += z * nodes * pdf * cdf ** (nodes - 1) * step
    p = 1 / nodes
    return 1 + total * math.sqrt(keys * p * (1 - p)) / (keys * p)


def chance_above(balance: float, keys: int, nodes: int) -> float:
    """The chance that a perfect random assignment has a max/mean of at least *balance*.

    ``1 - Φ(z) ** nodes``, with *z* the standard deviations between *balance* and the mean,
    under the same normal approximation as :func:`expected_floor`.
    """
    p = 1 / nodes
    z = (balance - 1) * keys * p / math.sqrt(keys * p * (1 - p))
    return 1 - (0.5 * (1 + math.erf(z / math.sqrt(2)))) ** nodes


def add_spread(keys: int, nodes: int) -> float:
    """One standard deviation of the keys a perfect router gives an added node, relative."""
    return math.sqrt((nodes + 1) / keys)


# -- the key set, with the hashes the assignments reuse ------------------------------------------


@dataclass
class Sample:
    """Keys, with their ``stable_hash`` and their ``crc32`` (each computed once)."""

    keys: list[str]
    hashes: list[int]
    crcs: list[int]

    def every(self, count: int) -> Sample:
        """About *count* keys spread evenly over this sample (all of them if it is smaller)."""
        stride = max(1, len(self.keys) // count)
        if stride == 1:
            return self
        return Sample(self.keys[::stride], self.hashes[::stride], self.crcs[::stride])


# -- the routers, as families: build, add a node, remove a node, assign every key -------------


@dataclass(frozen=True)
class Family:
    """One router design, seen the same way whatever its API.

    *make* builds the router over a list of node names (a numbered family, jump hashing,
    over ``len(nodes)`` shards). *add* and *remove* return a router with a node more or
    less (``None``: *make* over the new list; numbered families grow by one shard and
    renumber their last shard into a removed one's place). *assign* returns the node of
    every key of a sample, as balance and movement count them; *lookup* is the public
    per-key lookup the timing uses, and *expected* (default *lookup*) what the timed
    lookup must agree with: for ours, ``route_hash(stable_hash(key))``, as *assign* uses.
    """

    label: str
    make: Callable[[list[str]], Any]
    assign: Callable[[Any, Sample], list[Node]]
    lookup: Callable[[Any], Lookup]
    add: Callable[[Any, list[str], str], Any] | None = None
    remove: Callable[[Any, list[str], str], Any] | None = None
    expected: Callable[[Any], Lookup] | None = None
    numbered: bool = False
    keys: Callable[[int], int] = lambda nodes: KEYS

    @property
    def ours(self) -> bool:
        return self.label.startswith(OURS)

    @property
    def checked(self) -> bool:
        """Ours and the alternatives: checked to move only the keys that must move."""
        return self.ours or self.label in ALTERNATIVES


def _families() -> tuple[list[Family], list[str]]:
    """Every family whose library imports; and the libraries that did not."""
    from invresilience import JumpRouter, RendezvousRouter, SlotRouter
    from invresilience._core.sharding import stable_hash

    def route(router: Any) -> Lookup:
        lookup: Lookup = router.route
        return lookup

    def route_hashes(router: Any, sample: Sample) -> list[Node]:
        return list(map(router.route_hash, sample.hashes))

    def route_hash(router: Any) -> Lookup:
        by_hash = router.route_hash
        return lambda key: by_hash(stable_hash(key))

    def with_node(router: Any, nodes: list[str], name: str) -> Any:
        return router.with_node(name)

    def without_node(router: Any, nodes: list[str], name: str) -> Any:
        return router.without_node(name)

    families = [
        Family(SLOT, SlotRouter, route_hashes, route, with_node, without_node, route_hash),
        Family(
            RENDEZVOUS,
            RendezvousRouter,
            route_hashes,
            route,
            with_node,
            without_node,
            route_hash,
            keys=lambda nodes: RENDEZVOUS_KEYS[nodes],
        ),
        Family(
            JUMP,
            lambda nodes: JumpRouter(len(nodes)),
            route_hashes,
            route,
            expected=route_hash,
            numbered=True,
        ),
        Family(
            ANCHOR,
            lambda nodes: AnchorRouter(nodes, anchor_capacity(len(nodes))),
            route_hashes,
            route,
            with_node,
            without_node,
            route_hash,
        ),
        Family(
            DX,
            lambda nodes: DxRouter(nodes, dx_capacity(len(nodes))),
            route_hashes,
            route,
            with_node,
            without_node,
            route_hash,
        ),
    ]
    skipped = []
    anchors: dict[str, Any] = {}
    for module, name in (
        ("uhashring", "uhashring"),
        ("hashring", "hashring"),
        ("jump", "jump-consistent-hash"),
    ):
        try:
            anchors[module] = _anchor(module)
        except ImportError:
            skipped.append(name)

    def get_node(ring: Any) -> Lookup:
        lookup: Lookup = ring.get_node
        return lookup

    def get_nodes(ring: Any, sample: Sample) -> list[Node]:
        return list(map(ring.get_node, sample.keys))

    if "uhashring" in anchors:
        uhashring = anchors["uhashring"]

        def add_node(ring: Any, nodes: list[str], name: str) -> Any:
            grown = uhashring.HashRing(list(nodes))
            grown.add_node(name)
            return grown

        def remove_node(ring: Any, nodes: list[str], name: str) -> Any:
            shrunk = uhashring.HashRing(list(nodes))
            shrunk.remove_node(name)
            return shrunk

        families.append(
            Family(
                UHASHRING,
                lambda nodes: uhashring.HashRing(list(nodes)),
                get_nodes,
                get_node,
                add_node,
                remove_node,
            )
        )
    if "hashring" in anchors:
        hashring = anchors["hashring"]
        # No add or remove method: a ring built over the new list (40 x 3 points per node
        # whatever their number, so the other nodes' points do not change).
        families.append(
            Family(HASHRING, lambda nodes: hashring.HashRing(list(nodes)), get_nodes, get_node)
        )
    if "jump" in anchors:
        jump_hash = anchors["jump"].hash

        def jump_assign(buckets: int, sample: Sample) -> list[Node]:
            return [jump_hash(crc, buckets) for crc in sample.crcs]

        def jump_lookup(buckets: int) -> Lookup:
            return lambda key: jump_hash(zlib.crc32(key.encode()), buckets)

        families.append(Family(JUMP_HASH, len, jump_assign, jump_lookup, numbered=True))

    def crc_assign(nodes: list[str], sample: Sample) -> list[Node]:
        count = len(nodes)
        return [nodes[crc % count] for crc in sample.crcs]

    def crc_lookup(nodes: list[str]) -> Lookup:
        count = len(nodes)
        return lambda key: nodes[zlib.crc32(key.encode()) % count]

    def hash_assign(nodes: list[str], sample: Sample) -> list[Node]:
        count = len(nodes)
        return [nodes[hash(key) % count] for key in sample.keys]

    def hash_lookup(nodes: list[str]) -> Lookup:
        count = len(nodes)
        return lambda key: nodes[hash(key) % count]

    families += [
        Family(CRC_MODULO, list, crc_assign, crc_lookup),
        Family(HASH_MODULO, list, hash_assign, hash_lookup),
    ]
    return families, skipped


# -- balance and movement ---------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """Balance and keys moved for one family at one node count."""

    family: str
    nodes: int
    keys: int
    balance: float
    floor: float
    added: float  # fraction of keys moved by adding a node
    add_ratio: float  # ÷ 1 / (nodes + 1)
    removed: float  # fraction of keys moved by removing the middle node
    remove_ratio: float  # ÷ the fraction of keys that node held
    renumbered: bool  # the removal renumbered the last shard into the gap (jump hashing)
    seconds: float


_measured: list[Measured] = []
_problems: list[str] = []
_checks: dict[Case, Callable[[], str | None]] = {}
_slot_tables: dict[int, tuple[int, int]] = {}  # nodes -> (most slots on one node, slots)


def teardown() -> None:
    """Nothing to close: the routers are in memory."""


def _moved(before: Sequence[Node], after: Sequence[Node]) -> int:
    return sum(1 for a, b in zip(before, after, strict=True) if a != b)


def _measure(family: Family, count: int, sample: Sample) -> Measured:
    """Assign every key of *sample* before and after a node is added, and one removed."""
    started = time.perf_counter()
    nodes = node_names(count)
    # Numbered families route to shard numbers: worker-<i> is shard i.
    new, middle = f"worker-{count:04d}", nodes[count // 2]
    ids: list[Hashable] = list(range(count + 1)) if family.numbered else [*nodes, new]
    new_id, gone = ids[count], ids[count // 2]
    node_set = set(ids[:count])
    where = f"{family.label}, {count} nodes"
    total = len(sample.keys)

    router = family.make(nodes)
    before = family.assign(router, sample)
    if not set(before) <= node_set:
        _problems.append(f"{where}: routed keys to {sorted(set(before) - node_set)[:3]!r}")
    loads = Counter(before)
    balance = max(loads.values()) * count / total

    grown = family.make([*nodes, new]) if family.add is None else family.add(router, nodes, new)
    after = family.assign(grown, sample)
    moved_add = _moved(before, after)
    if not set(after) <= node_set | {new_id}:
        _problems.append(f"{where}: after adding {new}, routed keys outside the nodes")
    if family.checked:
        strays = sum(1 for a, b in zip(before, after, strict=True) if a != b and b != new_id)
        if strays:
            _problems.append(f"{where}: adding {new} moved {strays} keys to other nodes")
    del after, grown

    if family.numbered:
        # A middle shard cannot be removed: n - 1 shards, the last renumbered into the gap.
        rename = list(range(count - 1))
        rename[count // 2] = count - 1
        shrunk = family.make(nodes[:-1])
        after = [rename[shard] for shard in family.assign(shrunk, sample)]
    else:
        rest = [node for node in nodes if node != middle]
        shrunk = (
            family.make(rest) if family.remove is None else family.remove(router, nodes, middle)
        )
        after = family.assign(shrunk, sample)
    held = loads[gone]
    moved_remove = _moved(before, after)
    if not set(after) <= node_set - {gone}:
        _problems.append(f"{where}: after removing {middle}, routed keys outside the nodes left")
    if family.checked and not family.numbered:
        strays = sum(1 for a, b in zip(before, after, strict=True) if a != b and a != gone)
        if strays or moved_remove != held:
            _problems.append(
                f"{where}: removing {middle} moved {moved_remove} keys, {strays} of them"
                f" from other nodes (it held {held})"
            )
    if family.label == SLOT:
        slots = router.counts()
        _slot_tables[count] = (max(slots.values()), router.slots)
    return Measured(
        family=family.label,
        nodes=count,
        keys=total,
        balance=balance,
        floor=expected_floor(total, count),
        added=moved_add / total,
        add_ratio=moved_add / total * (count + 1),
        removed=moved_remove / total,
        remove_ratio=moved_remove / held if held else math.inf,
        renumbered=family.numbered,
        seconds=time.perf_counter() - started,
    )


# -- the timed cases --------------------------------------------------------------------------


def _code(fn: Callable[..., Any]) -> CodeType:
    code: CodeType = fn.__code__
    return code


def _cycle(chunks: list[list[str]]) -> Callable[[], list[str]]:
    return itertools.cycle(chunks).__next__


def _calls(get: Lookup, chunks: list[list[str]]) -> Callable[[], tuple[str, Node]]:
    """Look up the next chunk of keys, one ``get(key)`` each; return the last key and node."""
    chunk = _cycle(chunks)

    def lookups() -> tuple[str, Node]:
        key, node = "", None
        for key in chunk():
            node = get(key)
        return key, node

    return lookups


def _jump_calls(
    jump_hash: Callable[[int, int], int], buckets: int, chunks: list[list[str]]
) -> Callable[[], tuple[str, Node]]:
    chunk = _cycle(chunks)
    crc32 = zlib.crc32

    def lookups() -> tuple[str, Node]:
        key, node = "", None
        for key in chunk():
            node = jump_hash(crc32(key.encode()), buckets)
        return key, node

    return lookups


def _crc_calls(nodes: list[str], chunks: list[list[str]]) -> Callable[[], tuple[str, Node]]:
    chunk = _cycle(chunks)
    crc32 = zlib.crc32
    count = len(nodes)

    def lookups() -> tuple[str, Node]:
        key, node = "", None
        for key in chunk():
            node = nodes[crc32(key.encode()) % count]
        return key, node

    return lookups


def _hash_calls(nodes: list[str], chunks: list[list[str]]) -> Callable[[], tuple[str, Node]]:
    chunk = _cycle(chunks)
    count = len(nodes)

    def lookups() -> tuple[str, Node]:
        key, node = "", None
        for key in chunk():
            node = nodes[hash(key) % count]
        return key, node

    return lookups


def _case(
    cases: list[Case],
    name: str,
    library: str,
    lookups: Callable[[], tuple[str, Node]],
    expected: Lookup,
    node_set: set[Hashable],
) -> None:
    case = Case(name, MODE, library, lookups, _code(lookups))

    def check() -> str | None:
        key, node = lookups()
        if node not in node_set:
            return f"{key!r} went to {node!r}, not one of its {len(node_set)} nodes"
        if node != expected(key):
            return f"{key!r} went to {node!r}, but balance and movement used {expected(key)!r}"
        return None

    cases.append(case)
    _checks[case] = check


def build_cases(run: Callable[[Awaitable[Any]], Any]) -> tuple[list[Case], list[str]]:
    """Measure balance and movement, then build every timed case, the floor first per scenario.

    Returns the cases and the anchors that are not installed.
    """
    from invresilience._core.sharding import stable_hash

    _measured.clear()
    _problems.clear()
    _checks.clear()
    families, skipped = _families()
    keys = [f"WH-{i:07d}" for i in range(KEYS)]
    measured_keys = keys[::SCALE]
    print(f"hashing {len(measured_keys):,} keys ...", file=sys.stderr, flush=True)
    sample = Sample(
        measured_keys,
        [stable_hash(key) for key in measured_keys],
        [zlib.crc32(key.encode()) for key in measured_keys],
    )
    for count in NODE_COUNTS:
        for family in families:
            subset = sample.every(family.keys(count) // SCALE)
            print(
                f"balance and movement: {family.label}, {count} nodes, {len(subset.keys):,} keys",
                file=sys.stderr,
                flush=True,
            )
            _measured.append(_measure(family, count, subset))
    del sample

    chunks = [keys[i : i + CHUNK] for i in range(0, KEYS, CHUNK)]
    jump = next((f for f in families if f.label == JUMP_HASH), None)
    cases: list[Case] = []
    for count in NODE_COUNTS:
        nodes = node_names(count)
        names: set[Hashable] = set(nodes)
        shards: set[Hashable] = set(range(count))
        # The floor first; then ours and the anchors, each checked against what was measured.
        for family in sorted(families, key=lambda f: f.label != HASH_MODULO):
            router = family.make(nodes)
            expected = (family.expected or family.lookup)(router)
            node_set = shards if family.numbered else names
            if family.label == HASH_MODULO:
                library, lookups = BASELINE, _hash_calls(nodes, chunks)
            elif family.label == CRC_MODULO:
                library, lookups = family.label, _crc_calls(nodes, chunks)
            elif family is jump:
                library = family.label
                lookups = _jump_calls(_anchor("jump").hash, count, chunks)
            else:
                library, lookups = family.label, _calls(family.lookup(router), chunks)
            _case(cases, scenario(count), library, lookups, expected, node_set)
    removable = [f for f in families if f.label == SLOT or f.label in ALTERNATIVES]
    for count in REMOVAL_NODES:
        _removal_cases(cases, removable, count, keys, chunks)
    return cases, skipped


def _modulo(nodes: list[str]) -> Lookup:
    count = len(nodes)
    return lambda key: nodes[hash(key) % count]


def _removal_cases(
    cases: list[Case], families: list[Family], count: int, keys: list[str], chunks: list[list[str]]
) -> None:
    """Time SlotRouter and the alternatives after some of *count* nodes were removed.

    The nodes go one by one, in a fixed pseudo-random order, from the router built over
    all of them (AnchorHash and DxHash keep their capacity). Over a subsample of keys,
    every key must go to a node left, and a key whose node is left must not move.
    """
    from invresilience._core.sharding import stable_hash

    nodes = node_names(count)
    order = random.Random(count).sample(nodes, count * max(REMOVED_PERCENTS) // 100)
    probe_keys = keys[:: max(1, len(keys) // (REMOVAL_CHECK_KEYS // SCALE))]
    hashes = [stable_hash(key) for key in probe_keys]
    routers: dict[tuple[str, int], Any] = {}
    for family in families:
        print(f"removing nodes: {family.label}, {count} nodes", file=sys.stderr, flush=True)
        router = family.make(nodes)
        before = list(map(router.route_hash, hashes))
        done = 0
        for percent in REMOVED_PERCENTS:
            target = count * percent // 100
            for name in order[done:target]:
                router = router.without_node(name)
            done = target
            gone = set(order[:target])
            after = list(map(router.route_hash, hashes))
            where = f"{family.label}, {count} nodes, {percent}% removed"
            lost = sum(1 for node in after if node in gone or node not in nodes)
            strays = sum(1 for a, b in zip(before, after, strict=True) if a != b and a not in gone)
            if lost or strays:
                _problems.append(
                    f"{where}: {lost} of {len(hashes):,} keys went to a removed or unknown node,"
                    f" {strays} moved although their node is left"
                )
            routers[family.label, percent] = router
    for percent in REMOVED_PERCENTS:
        left = [node for node in nodes if node not in set(order[: count * percent // 100])]
        name = removed_scenario(count, percent)
        node_set: set[Hashable] = set(left)
        _case(cases, name, BASELINE, _hash_calls(left, chunks), _modulo(left), node_set)
        for family in families:
            router = routers[family.label, percent]
            expected = (family.expected or family.lookup)(router)
            _case(
                cases, name, family.label, _calls(family.lookup(router), chunks), expected, node_set
            )


def check_cases(cases: list[Case], run: Callable[[Awaitable[Any]], Any]) -> list[str]:
    """Problems found while measuring, and by looking up one chunk through every case.

    Every row must return one of its nodes (or shards), and the node the timed lookup
    returns must be the one balance and movement counted; our routers must move keys only
    to an added node and only from a removed one.
    """
    problems = list(_problems)
    for case in cases:
        check = _checks.get(case)
        if check is None:
            continue
        try:
            problem = check()
        except Exception as exc:  # noqa: BLE001 - reported, not handled
            problem = f"raised {exc!r}"
        if problem is not None:
            problems.append(f"{case.label}: {problem}")
    return problems


# -- verdicts ---------------------------------------------------------------------------------


def _per_key(result: Result) -> float:
    return result.us_per_call / CHUNK


def _ratio(ours: Result, anchor: Result) -> str:
    """``"2.1× faster than X"``: the median over repeats of the anchor's time ÷ ours."""
    ratio = statistics.median(
        theirs / mine for theirs, mine in zip(anchor.samples_ns, ours.samples_ns, strict=True)
    )
    name = HASH_MODULO if anchor.library == BASELINE else anchor.library
    if ratio >= 1:
        return f"{ratio:.1f}× faster than {name}"
    return f"{1 / ratio:.1f}× slower than {name}"


def _short(library: str) -> str:
    """``"SlotRouter"`` for ``"invresilience SlotRouter"``; anchors unchanged."""
    return library.removeprefix(OURS).strip()


def _find(family: str, nodes: int) -> Measured | None:
    for row in _measured:
        if (row.family, row.nodes) == (family, nodes):
            return row
    return None


@dataclass(frozen=True)
class LookupTime:
    """SlotRouter's µs per lookup at *nodes* nodes, with every anchor as a ratio."""

    nodes: int
    limit: float | None = None

    def verdict(self, results: list[Result]) -> tuple[bool, str]:
        rows = {r.library: r for r in results if r.scenario == scenario(self.nodes)}
        ours = rows[SLOT]
        us = _per_key(ours)
        where = f"lookup, {self.nodes:,} nodes"
        anchors = [r for name, r in rows.items() if not name.startswith(OURS)]
        tail = ", ".join(_ratio(ours, r) for r in anchors)
        others = ", ".join(
            f"{_short(name)} {_per_key(r):.2f} µs"
            for name, r in rows.items()
            if name.startswith(OURS) and name != SLOT
        )
        if self.limit is None:
            within, head = True, f"INFO  {where}: SlotRouter {us:.2f} µs per lookup"
        else:
            within = us <= self.limit
            head = (
                f"{'PASS' if within else 'OVER'}  {where}: SlotRouter {us:.2f} µs per lookup"
                f" (budget ≤ {self.limit:g} µs)"
            )
        return within, f"{head}; it is {tail}; {others}"


@dataclass(frozen=True)
class Balance:
    """SlotRouter's max/mean load at *nodes* nodes, beside sampling's floor."""

    nodes: int
    limit: float

    def verdict(self, results: list[Result]) -> tuple[bool, str]:
        row = _find(SLOT, self.nodes)
        if row is None:
            return False, f"OVER  balance, {self.nodes} nodes: not measured"
        within = row.balance <= self.limit
        most, slots = _slot_tables[self.nodes]
        others = ", ".join(
            f"{_short(m.family)} {m.balance:.3f}"
            for m in _measured
            if m.nodes == self.nodes and m.family != SLOT
        )
        return within, (
            f"{'PASS' if within else 'OVER'}  balance, {self.nodes:,} nodes: SlotRouter max/mean"
            f" {row.balance:.3f} over {row.keys:,} keys (budget ≤ {self.limit:g}); sampling alone"
            f" puts a perfect random assignment of {row.keys:,} keys at ≈ {row.floor:.3f}, over"
            f" {self.limit:g} {chance_above(self.limit, row.keys, self.nodes):.0%} of the time and at"
            f" {row.balance:.3f} or more {chance_above(row.balance, row.keys, self.nodes):.0%} of"
            f" the time; its slot table is within {most * self.nodes / slots:.4f} ({most} of"
            f" {slots:,} slots on the fullest node); {others}"
        )


@dataclass(frozen=True)
class Movement:
    """SlotRouter's keys moved on add and on removing a middle node, ÷ the optimum."""

    nodes: int
    limit: float

    def verdict(self, results: list[Result]) -> tuple[bool, str]:
        row = _find(SLOT, self.nodes)
        if row is None:
            return False, f"OVER  keys moved, {self.nodes} nodes: not measured"
        within = row.add_ratio <= self.limit and row.remove_ratio <= self.limit
        others = ", ".join(
            f"{_short(m.family)} {m.add_ratio:.2f}× / "
            + (f"{m.remove_ratio:.2f}×" + (" (renumbered)" if m.renumbered else ""))
            for m in _measured
            if m.nodes == self.nodes and m.family != SLOT
        )
        return within, (
            f"{'PASS' if within else 'OVER'}  keys moved, {self.nodes:,} nodes: SlotRouter moved"
            f" {row.added:.3%} of keys adding a node, {row.add_ratio:.2f}× optimal (1/{self.nodes + 1}"
            f" = {1 / (self.nodes + 1):.3%}), and {row.removed:.3%} removing a middle node,"
            f" {row.remove_ratio:.2f}× its keys (budget ≤ {self.limit:g}× optimal; with"
            f" {row.keys:,} keys, how many a perfect router gives the new node varies by"
            f" ±{add_spread(row.keys, self.nodes):.1%}, one standard deviation); on add /"
            f" on remove: {others}"
        )


def _cell(value: float, renumbered: bool) -> str:
    return f"{value:.2f}× (renumbered)" if renumbered else f"{value:.2f}×"


@dataclass(frozen=True)
class MovementTable:
    """Every family's balance and keys moved, as a Markdown table (INFO)."""

    def verdict(self, results: list[Result]) -> tuple[bool, str]:
        lines = [
            (
                "INFO  balance and keys moved, computed before the timing; the moves of our"
                " routers, AnchorHash and DxHash were checked to go only to the added node and"
                " only from the removed one."
                " Jump hashing cannot remove a middle shard: its removal renumbers the last"
                " shard into the gap, which moves the last shard's keys too (renumbered):"
            ),
            "",
            (
                "| nodes | router | keys | balance (max/mean) | random floor | add: moved"
                " | × optimal ± 1 sd | remove middle: moved | × its keys |"
            ),
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for m in _measured:
            name = f"**{m.family}**" if m.family.startswith(OURS) else m.family
            lines.append(
                f"| {m.nodes:,} | {name} | {m.keys:,} | {m.balance:.3f} | {m.floor:.3f}"
                f" | {m.added:.2%} | {m.add_ratio:.2f}× ±{add_spread(m.keys, m.nodes):.3f}"
                f" | {m.removed:.2%}"
                f" | {_cell(m.remove_ratio, m.renumbered)} |"
            )
        return True, "\n".join(lines)


@dataclass(frozen=True)
class TimedKeys:
    """How many keys each row's timing covered per repeat (INFO): the subsample, said."""

    def verdict(self, results: list[Result]) -> tuple[bool, str]:
        nodes = SCENARIO_NODES
        spans = sorted((r.loops * CHUNK, r.library, nodes[r.scenario]) for r in results)
        fewest = ", ".join(
            f"{keys:,} for {_short(library)} at {count:,} nodes"
            for keys, library, count in spans[:3]
        )
        seconds = sum(m.seconds for m in _measured)
        return True, (
            f"INFO  each repeat timed loops × {CHUNK} keys of the {KEYS:,}, a subsample for the"
            f" slow rows: fewest {fewest}; most {spans[-1][0]:,}. Balance and movement took"
            f" {seconds:.0f} s before the timing"
            + (f", over every {SCALE}th key (--quick)" if SCALE > 1 else "")
        )


def _times(ours: Result, other: Result) -> float:
    """The median over repeats of *other*'s time ÷ *ours* (timed in the same repeats)."""
    return statistics.median(
        theirs / mine for theirs, mine in zip(other.samples_ns, ours.samples_ns, strict=True)
    )


@dataclass(frozen=True)
class Alternatives:
    """SlotRouter beside AnchorHash and DxHash: lookup, with nodes removed, balance, moves (INFO)."""

    def verdict(self, results: list[Result]) -> tuple[bool, str]:
        rows = {(r.scenario, r.library): r for r in results}
        lines = [
            (
                "INFO  SlotRouter beside the alternatives the issue named, AnchorHash (2n"
                " buckets) and DxHash (the smallest power of two >= 2n positions), pure Python"
                " over the same stable_hash: µs per lookup with every node and after 10% and"
                " 50% of them were removed (× SlotRouter: the median over repeats of the"
                " row's time ÷ SlotRouter's in the same repeat and scenario); balance and keys"
                " moved from the table below:"
            ),
            "",
            (
                "| nodes | router | every node: µs | × Slot | 10% removed: µs | × Slot"
                " | 50% removed: µs | × Slot | balance | add: × optimal | remove: × its keys |"
            ),
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for count in REMOVAL_NODES:
            names = [scenario(count)] + [removed_scenario(count, p) for p in REMOVED_PERCENTS]
            for label in (SLOT, *ALTERNATIVES):
                cells = []
                for name in names:
                    mine, slot = rows.get((name, label)), rows.get((name, SLOT))
                    if mine is None or slot is None:
                        cells += ["–", "–"]
                    else:
                        cells += [f"{_per_key(mine):.2f}", f"{_times(slot, mine):.2f}×"]
                m = _find(label, count)
                moved = (
                    ["–"] * 3
                    if m is None
                    else [f"{m.balance:.3f}", f"{m.add_ratio:.2f}×", f"{m.remove_ratio:.2f}×"]
                )
                name = f"**{label}**" if label.startswith(OURS) else label
                lines.append(f"| {count:,} | {name} | " + " | ".join(cells + moved) + " |")
        return True, "\n".join(lines)


BUDGETS = (
    LookupTime(BUDGET_NODES, LOOKUP_BUDGET_US),
    Balance(BUDGET_NODES, BALANCE_BUDGET),
    Movement(BUDGET_NODES, MOVEMENT_BUDGET),
    LookupTime(10),
    LookupTime(1000),
    TimedKeys(),
    Alternatives(),
    MovementTable(),
)
