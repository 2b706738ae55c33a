"""Stable hashing and the pure arithmetic behind the routers.

No I/O, no clock, no randomness: every function here is a function of its arguments, the
same in every process, on every platform and under every supported Python. Python's own
``hash()`` is none of these (``PYTHONHASHSEED`` salts ``str`` and ``bytes`` per process),
which is why :func:`stable_hash` exists.

The hash, version 1 (``"invres-blake2b64-v1"``), published with test vectors in the docs
and in ``tests/unit/test_sharding_vectors.py``:

- a key is encoded as one tag byte and a body: ``b"s"`` + UTF-8 for :class:`str`,
  ``b"b"`` + the bytes for :class:`bytes` / :class:`bytearray`, ``b"i"`` + the
  big-endian two's-complement bytes of an :class:`int` *n* in ``(n.bit_length() + 8) // 8``
  bytes (``0`` is ``b"\\x00"``, ``-128`` is ``b"\\xff\\x80"``: one byte more than the
  minimum for ``-2**(8k - 1)``, kept because it is the definition);
- the hash is the BLAKE2b digest of that encoding with ``digest_size=8``, read as an
  unsigned big-endian 64-bit integer.

So ``1``, ``"1"`` and ``b"1"`` are three different keys. ``bool`` is refused (``True`` would
silently be ``1``), as is every other type: a key must say what it is.
"""

from __future__ import annotations

import heapq
import math
from hashlib import blake2b
from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "HASH_NAME",
    "HASH_VERSION",
    "MASK64",
    "ShardKey",
    "add_to_table",
    "build_table",
    "encode_key",
    "jump",
    "mix64",
    "probe",
    "quotas",
    "remove_from_table",
    "reweight_table",
    "stable_hash",
    "tagged_hash",
    "unit_float",
]

ShardKey: TypeAlias = str | bytes | int
"""What may be routed: a :class:`str`, :class:`bytes` or :class:`int` (not :class:`bool`).

.. versionadded:: 0.1.0
"""

#: The version of :func:`stable_hash` this release computes (and the only one so far).
HASH_VERSION: Final = 1
#: The name of that version, for logs and stored router state.
HASH_NAME: Final = "invres-blake2b64-v1"

MASK64: Final = (1 << 64) - 1
_C1: Final = 0xBF58476D1CE4E5B9
_C2: Final = 0x94D049BB133111EB
_GOLDEN: Final = 0x9E3779B97F4A7C15
_JUMP_MULTIPLIER: Final = 2862933555777941757
_TWO_POW_52: Final = float(1 << 52)
_STR_TAGGED: Final = blake2b(b"s", digest_size=8)


def encode_key(key: ShardKey) -> bytes:
    """The tagged bytes :func:`stable_hash` hashes (see the module docstring).

    Raises:
        TypeError: *key* is not a ``str``, ``bytes``, ``bytearray`` or ``int`` (``bool`` is
            refused too).
        ValueError: a ``str`` key holds a lone surrogate, which has no UTF-8 encoding.
    """
    if isinstance(key, str):
        try:
            return b"s" + key.encode()
        except UnicodeEncodeError:
            raise ValueError(
                f"shard key {key!r} holds a lone surrogate and has no UTF-8 encoding; "
                "route its bytes instead"
            ) from None
    if isinstance(key, (bytes, bytearray)):
        return b"b" + bytes(key)
    if isinstance(key, int) and not isinstance(key, bool):  # type: ignore[redundant-expr]
        return b"i" + key.to_bytes((key.bit_length() + 8) // 8, "big", signed=True)
    raise TypeError(
        f"a shard key must be a str, bytes or int, got {type(key).__name__} ({key!r}); "
        "convert it explicitly (str(...) for ids, .encode() for text) so every process "
        "routes it the same way"
    )


def stable_hash(key: ShardKey, *, version: int = HASH_VERSION) -> int:
    """The 64-bit hash every router uses, identical in every process, platform and Python.

    Args:
        key: A ``str``, ``bytes`` or ``int``; ``1`` and ``"1"`` hash differently.
        version: The hash version; only ``1`` exists. Pass it to pin the algorithm in code
            that stores hashes.

    Returns:
        An integer in ``[0, 2**64)``.

    Raises:
        TypeError: *key* has another type (``bool`` included).
        ValueError: *version* is unknown, or a ``str`` key holds a lone surrogate.

    >>> stable_hash("WH-0042") == stable_hash("WH-0042")
    True
    >>> stable_hash(1) == stable_hash("1")
    False

    .. versionadded:: 0.1.0
    """
    if version != HASH_VERSION:
        raise ValueError(f"stable_hash version must be {HASH_VERSION}, got {version!r}")
    # The str branch inlined: it is the common case and this is the router's hot path.
    # Copying a hasher that has already absorbed the tag gives the same digest as hashing
    # tag + body, a third faster than building the concatenation.
    if type(key) is str:
        try:
            body = key.encode()
        except UnicodeEncodeError:
            encode_key(key)  # raises the error that names the problem
            raise  # pragma: no cover - encode_key always raises here
        hasher = _STR_TAGGED.copy()
        hasher.update(body)
        return int.from_bytes(hasher.digest(), "big")
    return int.from_bytes(blake2b(encode_key(key), digest_size=8).digest(), "big")


def tagged_hash(tag: bytes, *parts: bytes) -> int:
    """A 64-bit hash of internal material that no user key's encoding can equal.

    User keys encode to ``s``, ``b`` or ``i`` followed by their body; internal material
    (node seeds, hot-key chunks) starts with a NUL byte, then the tag and each part with
    its length, so it can collide neither with a key nor with other material.
    """
    pieces = [b"\x00", len(tag).to_bytes(4, "big"), tag]
    for part in parts:
        pieces += (len(part).to_bytes(4, "big"), part)
    data = b"".join(pieces)
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def mix64(value: int) -> int:
    """SplitMix64's finaliser: a cheap, well-mixed bijection on 64-bit integers."""
    value = ((value ^ (value >> 30)) * _C1) & MASK64
    value = ((value ^ (value >> 27)) * _C2) & MASK64
    return value ^ (value >> 31)


def unit_float(value: int) -> float:
    """Map a 64-bit integer to a float in the open interval (0, 1) using its top 52 bits.

    52, not 53: ``(2**53 - 1 + 0.5) / 2**53`` is not representable and rounds to 1.0,
    while every ``(k + 0.5) / 2**52`` is exact and strictly inside the interval.
    """
    return ((value >> 12) + 0.5) / _TWO_POW_52


def probe(hashed: int, attempt: int) -> int:
    """The *attempt*-th pseudo-random 64-bit value derived from a key's hash (0 is the hash)."""
    if attempt == 0:
        return hashed
    return mix64((hashed + attempt * _GOLDEN) & MASK64)


def jump(hashed: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash of a 64-bit value into ``range(buckets)``.

    Growing from ``n`` to ``n + 1`` buckets moves exactly the keys that land in bucket
    ``n``: about ``1 / (n + 1)`` of them, all to the new bucket.
    """
    b, j = -1, 0
    key = hashed
    while j < buckets:
        b = j
        key = (key * _JUMP_MULTIPLIER + 1) & MASK64
        j = int((b + 1) * (2147483648.0 / float((key >> 33) + 1)))
    return b


# -- slot tables ----------------------------------------------------------------------------
#
# A slot table maps ``slots`` (a power of two) slots to nodes; a key goes to the node of slot
# ``stable_hash(key) & (slots - 1)``. Each node's slot count stays within one slot of its
# weighted share, and every change moves the fewest slots it can: a joining node takes its
# share from the nodes most over theirs, a leaving node's slots go to the nodes most under,
# and a weight change moves slots only to or from the node whose weight changed.


def quotas(weights: Mapping[str, float], slots: int) -> dict[str, int]:
    """Largest-remainder apportionment of *slots* to nodes by weight; ties by node name.

    Every node gets at least one slot (taken from the node furthest over its share), so a
    very light node is still a node; *slots* must be at least the number of nodes.
    """
    total = math.fsum(weights.values())
    ideal = {node: slots * weight / total for node, weight in weights.items()}
    counts = {node: int(share) for node, share in ideal.items()}
    left = slots - sum(counts.values())
    by_remainder = sorted(ideal, key=lambda node: (-(ideal[node] - counts[node]), node))
    for node in by_remainder[:left]:
        counts[node] += 1
    for node in sorted(node for node, count in counts.items() if count == 0):
        donor = max(
            (other for other in counts if counts[other] > 1),
            key=lambda other: (counts[other] - ideal[other], other),
        )
        counts[donor] -= 1
        counts[node] = 1
    return counts


def build_table(weights: Mapping[str, float], slots: int) -> list[str]:
    """The canonical table for a set of nodes: a function of the nodes and weights only.

    Nodes get contiguous runs in name order. That is as good as any layout: a key's slot
    comes from its hash, so which slots a node holds does not affect balance.
    """
    table: list[str] = []
    counts = quotas(weights, slots)
    for node in sorted(weights):
        table.extend([node] * counts[node])
    return table


def _slots_of(table: Sequence[str]) -> dict[str, list[int]]:
    held: dict[str, list[int]] = {}
    for index, node in enumerate(table):
        held.setdefault(node, []).append(index)
    return held


def _ideal(weights: Mapping[str, float], slots: int) -> dict[str, float]:
    total = math.fsum(weights.values())
    return {node: slots * weight / total for node, weight in weights.items()}


def _target(share: float) -> int:
    """The slot count a node moving to *share* aims for: *share* rounded half up, at least 1."""
    return max(1, math.floor(share + 0.5))


def _take(
    table: list[str],
    held: dict[str, list[int]],
    donors: Mapping[str, float],
    receiver: str,
    count: int,
) -> None:
    """Move *count* slots to *receiver*, one at a time from the donor most over its share.

    A donor gives its highest-numbered slot; ties go to the smaller node name.
    """
    heap = [(-(len(held.get(node, ())) - share), node) for node, share in donors.items()]
    heapq.heapify(heap)
    mine = held.setdefault(receiver, [])
    moved = 0
    while moved < count:
        _, node = heapq.heappop(heap)
        if len(held.get(node, ())) <= 1:
            continue  # a node keeps its last slot; the caller leaves enough elsewhere
        index = held[node].pop()
        table[index] = receiver
        mine.append(index)
        moved += 1
        heapq.heappush(heap, (-(len(held[node]) - donors[node]), node))


def _give(
    table: list[str],
    held: dict[str, list[int]],
    giver: str,
    receivers: Mapping[str, float],
    count: int,
) -> None:
    """Move *count* of *giver*'s slots (highest first), each to the receiver most under its share."""
    heap = [(len(held.get(node, ())) - share, node) for node, share in receivers.items()]
    heapq.heapify(heap)
    mine = held.get(giver, [])
    for _ in range(count):
        _, node = heapq.heappop(heap)
        index = mine.pop()
        table[index] = node
        held.setdefault(node, []).append(index)
        heapq.heappush(heap, (len(held[node]) - receivers[node], node))


def add_to_table(
    table: Sequence[str], weights: Mapping[str, float], node: str, weight: float
) -> list[str]:
    """*table* with *node* added: it takes its share, and no other slot changes hands.

    A new node is a node whose weight goes from nothing to *weight*.
    """
    return reweight_table(table, weights, node, weight)


def remove_from_table(table: Sequence[str], weights: Mapping[str, float], node: str) -> list[str]:
    """*table* without *node*: its slots go to the others, and no other slot changes hands."""
    rest = {other: weight for other, weight in weights.items() if other != node}
    ideal = _ideal(rest, len(table))
    result = list(table)
    held = _slots_of(result)
    _give(result, held, node, ideal, len(held.get(node, ())))
    return result


def reweight_table(
    table: Sequence[str], weights: Mapping[str, float], node: str, weight: float
) -> list[str]:
    """*table* with *node*'s weight set (*node* may be new): slots move only to or from it."""
    new_weights = {**weights, node: weight}
    ideal = _ideal(new_weights, len(table))
    result = list(table)
    held = _slots_of(result)
    have = len(held.get(node, ()))
    # Every other node keeps at least one slot.
    want = min(_target(ideal[node]), len(table) - (len(new_weights) - 1))
    others = {other: share for other, share in ideal.items() if other != node}
    if want > have:
        _take(result, held, others, node, want - have)
    elif want < have:
        _give(result, held, node, others, have - want)
    return result
