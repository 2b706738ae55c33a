"""AnchorHash and DxHash in compact pure Python, to measure beside SlotRouter.

The issue asked for the large-N router to be chosen by measurement among a slot table,
AnchorHash and DxHash. These are the two published designs, written as plainly as their
papers give them, over the same 64-bit :func:`~invresilience.stable_hash` of the key as
:class:`~invresilience.SlotRouter`, so that ``bench_sharding`` compares the designs and
not their hashes. Each routes to node names, like ours, and has ``route(key)``,
``route_hash(hashed)``, ``with_node(name)`` and ``without_node(name)``; a change returns
a new router (the arrays are copied), so the routers before and after can be compared.

:class:`AnchorRouter`
    Mendelson, Vargaftik, Barabash, Lorenz, Keslassy and Orda, "AnchorHash: A Scalable
    Consistent Hash" (IEEE/ACM ToN 2021, arXiv:1812.09674), Algorithm 3, the
    memory-efficient form: arrays ``A`` (0 for a working bucket, else the size of the
    working set just after it was removed), ``K`` (successor), ``W`` (the working set),
    ``L`` (a bucket's last place in ``W``) and the stack ``R`` of removed buckets. A key
    goes to ``stable_hash(key) % a``; while that bucket is removed it draws
    ``h_b(k) % A[b]`` and follows ``K`` while ``A[h] >= A[b]``. ``h_b(k)`` is
    ``probe(stable_hash(key), b + 1)``, a SplitMix64 finaliser seeded with the bucket.
:class:`DxRouter`
    Dong, Wang and Feng, "DxHash: A Scalable Consistent Hash Based on the Pseudo-Random
    Sequence" (arXiv:2107.07930): an array of active flags whose size is a power of two at
    least the nodes, and a FIFO queue of inactive positions (a joining node takes the
    oldest one). A key draws the pseudo-random sequence ``probe(stable_hash(key), i)``,
    ``i = 0, 1, ...`` (``probe(h, 0)`` is ``h`` itself), masked to the array, and goes to
    the first active position. The draws are bounded at ``8 × capacity``, after which the
    lowest active position is taken (with a quarter of the array active, the chance of
    reaching the bound is below ``0.75 ** 8192``).

Both have a fixed capacity, given at construction: lookups slow down as the share of
removed buckets or inactive positions grows, which is why ``bench_sharding`` times them
with none, 10% and 50% of the nodes removed.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from invresilience._core.sharding import MASK64, stable_hash

if TYPE_CHECKING:
    from collections.abc import Sequence

    from invresilience.typing import ShardKey

__all__ = ["AnchorRouter", "DxRouter"]

# SplitMix64's constants, as in invresilience._core.sharding: probe(h, i) inlined below is
# mix64((h + i * GOLDEN) & MASK64).
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


class AnchorRouter:
    """AnchorHash (Algorithm 3) over named nodes, with *capacity* buckets."""

    __slots__ = ("_A", "_K", "_L", "_N", "_R", "_W", "_a", "_bucket", "_names")

    def __init__(self, nodes: Sequence[str], capacity: int) -> None:
        a, w = capacity, len(nodes)
        if not 0 < w <= a:
            raise ValueError(f"AnchorRouter needs 1 to {a} nodes, got {w}")
        # INITANCHOR(a, w): every bucket its own successor, place and entry in W; the
        # buckets past the working ones removed, from the last down (R's top is w).
        self._a = a
        self._A = [0] * a
        self._K = list(range(a))
        self._W = list(range(a))
        self._L = list(range(a))
        self._R: list[int] = []
        self._N = w
        for b in range(a - 1, w - 1, -1):
            self._R.append(b)
            self._A[b] = b
        self._names: list[str | None] = [*nodes, *([None] * (a - w))]
        self._bucket = {name: b for b, name in enumerate(nodes)}

    def _copy(self) -> AnchorRouter:
        other = AnchorRouter.__new__(AnchorRouter)
        other._a, other._N = self._a, self._N
        other._A, other._K, other._W, other._L = (
            self._A[:],
            self._K[:],
            self._W[:],
            self._L[:],
        )
        other._R = self._R[:]
        other._names = self._names[:]
        other._bucket = dict(self._bucket)
        return other

    @property
    def nodes(self) -> list[str]:
        """The working nodes, by bucket."""
        return [name for name in self._names if name is not None]

    def route(self, key: ShardKey) -> str:
        """The node *key* goes to: GETBUCKET over ``stable_hash(key)``.

        The body of :meth:`route_hash`, repeated: a second Python frame would cost more
        than SlotRouter's whole table index.
        """
        hashed = stable_hash(key)
        A, K = self._A, self._K  # noqa: N806 - the paper's names
        b = hashed % self._a
        while A[b] > 0:
            size = A[b]
            z = (hashed + (b + 1) * _GOLDEN) & MASK64
            z = ((z ^ (z >> 30)) * _C1) & MASK64
            z = ((z ^ (z >> 27)) * _C2) & MASK64
            h = (z ^ (z >> 31)) % size
            while A[h] >= size:
                h = K[h]
            b = h
        name = self._names[b]
        assert name is not None
        return name

    def route_hash(self, hashed: int) -> str:
        """GETBUCKET(k) for a key whose :func:`stable_hash` is *hashed*."""
        A, K = self._A, self._K  # noqa: N806 - the paper's names
        b = hashed % self._a
        while A[b] > 0:  # b is removed
            size = A[b]
            # h_b(k) = probe(hashed, b + 1) % A[b], mix64 inlined
            z = (hashed + (b + 1) * _GOLDEN) & MASK64
            z = ((z ^ (z >> 30)) * _C1) & MASK64
            z = ((z ^ (z >> 27)) * _C2) & MASK64
            h = (z ^ (z >> 31)) % size
            while A[h] >= size:  # h was removed before b: W_b[h] is further along K
                h = K[h]
            b = h
        name = self._names[b]
        assert name is not None  # a working bucket has a node
        return name

    def with_node(self, name: str) -> AnchorRouter:
        """ADDBUCKET(): *name* takes the last removed bucket."""
        if name in self._bucket or not self._R:
            raise ValueError(f"cannot add {name!r}: a node already, or no bucket to spare")
        other = self._copy()
        A, K, W, L, N = other._A, other._K, other._W, other._L, other._N  # noqa: N806
        b = other._R.pop()
        A[b] = 0
        L[W[N]] = N
        W[L[b]] = K[b] = b
        other._N = N + 1
        other._names[b] = name
        other._bucket[name] = b
        return other

    def without_node(self, name: str) -> AnchorRouter:
        """REMOVEBUCKET(b) for *name*'s bucket."""
        if self._N == 1:
            raise ValueError("cannot remove the last node")
        other = self._copy()
        A, K, W, L = other._A, other._K, other._W, other._L  # noqa: N806
        b = other._bucket.pop(name)
        other._R.append(b)
        N = other._N - 1  # noqa: N806
        other._N = N
        A[b] = N
        W[L[b]] = K[b] = W[N]
        L[W[N]] = L[b]
        other._names[b] = None
        return other


class DxRouter:
    """DxHash over named nodes: active flags over *capacity* positions, a power of two."""

    __slots__ = ("_active", "_bound", "_inactive", "_mask", "_names", "_position")

    def __init__(self, nodes: Sequence[str], capacity: int) -> None:
        if capacity & (capacity - 1) or not 0 < len(nodes) <= capacity:
            raise ValueError(f"DxRouter needs a power-of-two capacity ≥ the nodes, got {capacity}")
        self._mask = capacity - 1
        self._bound = 8 * capacity
        self._active = bytearray(capacity)
        self._active[: len(nodes)] = b"\x01" * len(nodes)
        self._names: list[str | None] = [*nodes, *([None] * (capacity - len(nodes)))]
        self._position = {name: i for i, name in enumerate(nodes)}
        self._inactive = deque(range(len(nodes), capacity))

    def _copy(self) -> DxRouter:
        other = DxRouter.__new__(DxRouter)
        other._mask, other._bound = self._mask, self._bound
        other._active = bytearray(self._active)
        other._names = self._names[:]
        other._position = dict(self._position)
        other._inactive = deque(self._inactive)
        return other

    @property
    def nodes(self) -> list[str]:
        """The active nodes, by position."""
        return [name for name in self._names if name is not None]

    def route(self, key: ShardKey) -> str:
        """The node *key* goes to: :meth:`route_hash`'s body over ``stable_hash(key)``."""
        hashed = stable_hash(key)
        active, mask = self._active, self._mask
        position = hashed & mask
        attempt = 1
        while not active[position]:
            if attempt == self._bound:
                position = active.index(1)
                break
            z = (hashed + attempt * _GOLDEN) & MASK64
            z = ((z ^ (z >> 30)) * _C1) & MASK64
            z = ((z ^ (z >> 27)) * _C2) & MASK64
            position = (z ^ (z >> 31)) & mask
            attempt += 1
        name = self._names[position]
        assert name is not None
        return name

    def route_hash(self, hashed: int) -> str:
        """The first active position of the sequence drawn from *hashed*, by name."""
        active, mask = self._active, self._mask
        position = hashed & mask
        attempt = 1
        while not active[position]:
            if attempt == self._bound:
                position = active.index(1)
                break
            # probe(hashed, attempt), mix64 inlined
            z = (hashed + attempt * _GOLDEN) & MASK64
            z = ((z ^ (z >> 30)) * _C1) & MASK64
            z = ((z ^ (z >> 27)) * _C2) & MASK64
            position = (z ^ (z >> 31)) & mask
            attempt += 1
        name = self._names[position]
        assert name is not None  # an active position has a node
        return name

    def with_node(self, name: str) -> DxRouter:
        """*name* takes the oldest inactive position."""
        if name in self._position or not self._inactive:
            raise ValueError(f"cannot add {name!r}: a node already, or no position to spare")
        other = self._copy()
        position = other._inactive.popleft()
        other._active[position] = 1
        other._names[position] = name
        other._position[name] = position
        return other

    def without_node(self, name: str) -> DxRouter:
        """*name*'s position goes inactive, at the back of the queue."""
        if len(self._position) == 1:
            raise ValueError("cannot remove the last node")
        other = self._copy()
        position = other._position.pop(name)
        other._active[position] = 0
        other._names[position] = None
        other._inactive.append(position)
        return other
