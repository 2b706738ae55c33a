"""Published test vectors for ``stable_hash`` v1 and the routers, and their cross-process checks.

The literals below are the contract: a change to any of them moves keys between workers of
a fleet that upgrades one process at a time, so it needs a new hash version, not an edit
here. Each vector is also re-derived from the specification with :mod:`hashlib` alone, so
the literals cannot silently follow a change in the code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import invresilience as ir
from invresilience._core.sharding import HASH_NAME, HASH_VERSION, encode_key, stable_hash

#: (key, hex of encode_key(key), stable_hash(key)).
VECTORS: list[tuple[str | bytes | int, str, int]] = [
    ("", "73", 16593940277942513374),
    ("a", "7361", 11881906679622767379),
    ("1", "7331", 9917286856640899412),
    ("WH-0042", "7357482d30303432", 16357522074581765986),
    ("warehouse-17", "7377617265686f7573652d3137", 11599784145713843153),
    ("\u00e9", "73c3a9", 13454443680327794163),  # é
    ("Gr\u00fc\u00dfe", "734772c3bcc39f65", 14685684401524534368),  # Grüße
    ("\u65e5\u672c\u8a9e", "73e697a5e69cace8aa9e", 12122168508605215491),  # 日本語
    ("\U0001f980", "73f09fa680", 2008599527085985098),  # crab emoji
    ("\U0001f4e6 SKU-9", "73f09f93a620534b552d39", 16626658417248001397),  # package emoji
    ("\x00", "7300", 17494686695784663760),
    ("x" * 100, "73" + "78" * 100, 10381552400160311162),
    (b"", "62", 9543904841865449333),
    (b"\x00", "6200", 10620257076761410194),
    (b"1", "6231", 11037929603529112794),
    (b"\xff", "62ff", 5134951669809098198),
    (b"WH-0042", "6257482d30303432", 3095994259007571608),
    (bytes(range(16)), "62000102030405060708090a0b0c0d0e0f", 9635540188154701360),
    (0, "6900", 13034997965643886849),
    (1, "6901", 18271081083466428482),
    (-1, "69ff", 16022196398629639873),
    (127, "697f", 2747099068975917448),
    (128, "690080", 12718289361580404818),
    (-128, "69ff80", 11150014765648115266),
    (-129, "69ff7f", 6918038335904998655),
    (255, "6900ff", 5290538007139684441),
    (256, "690100", 10246593010762767995),
    (2**63 - 1, "697fffffffffffffff", 4226103895663964494),
    (2**63, "69008000000000000000", 12976110830826391161),
    (-(2**63), "69ff8000000000000000", 2389900566620439922),
    (-(2**64), "69ff0000000000000000", 17102487674103039407),
    (10**40, "691d6329f1c35ca4bfabb9f5610000000000", 10769172152750102611),
    (-(10**40), "69e29cd60e3ca35b4054460a9f0000000000", 13587450008645847521),
]

#: The fixed routers of ROUTES.
RENDEZVOUS = ir.RendezvousRouter({"alpha": 1.0, "beta": 2.0, "gamma": 0.5, "delta": 1.5})
SLOTS = ir.SlotRouter(["a", "b", "c", "d", "e"])
JUMP = ir.JumpRouter(10)

#: (key, RENDEZVOUS route, SLOTS route, JUMP route).
ROUTES: list[tuple[str | bytes | int, str, str, int]] = [
    ("WH-0042", "gamma", "c", 6),
    ("warehouse-17", "beta", "b", 2),
    ("", "beta", "c", 7),
    ("\U0001f980", "alpha", "b", 5),
    (b"", "gamma", "b", 8),
    (b"\x00", "delta", "b", 7),
    (0, "beta", "d", 1),
    (1, "beta", "a", 9),
    (-1, "beta", "e", 9),
    (2**63, "alpha", "c", 3),
    (42, "beta", "a", 9),
    ("SKU-12345", "delta", "c", 0),
]

# -- an independent implementation of the specification ---------------------------------------


def spec_encoding(key: str | bytes | int) -> bytes:
    """The v1 encoding as the docs state it, written without the library's arithmetic."""
    if isinstance(key, str):
        return b"s" + key.encode("utf-8")
    if isinstance(key, bytes):
        return b"b" + key
    # (bit_length + 8) // 8 bytes of two's complement: key mod 2**(8 * size), unsigned.
    size = (key.bit_length() + 8) // 8
    return b"i" + (key % (1 << (8 * size))).to_bytes(size, "big")


def spec_hash(key: str | bytes | int) -> int:
    """BLAKE2b-64 of the spec encoding, read big-endian."""
    return int.from_bytes(hashlib.blake2b(spec_encoding(key), digest_size=8).digest(), "big")


def splitmix_finaliser(value: int) -> int:
    """SplitMix64's output function (Steele, Lea and Flood 2014)."""
    mask = (1 << 64) - 1
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & mask
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & mask
    return value ^ (value >> 31)


def spec_seed(name: str) -> int:
    """A node's seed: BLAKE2b-64 of NUL, then the tag and the name, each after its length."""
    tag, body = b"invres-node", name.encode()
    material = b"\x00" + len(tag).to_bytes(4, "big") + tag + len(body).to_bytes(4, "big") + body
    return int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big")


def spec_rendezvous(weights: dict[str, float], hashed: int) -> str:
    """Weighted rendezvous: the node maximising weight / -ln(u), u from the top 52 bits."""

    def score(name: str) -> float:
        unit = ((splitmix_finaliser(hashed ^ spec_seed(name)) >> 12) + 0.5) / 2.0**52
        return weights[name] / -math.log(unit)

    return max(sorted(weights), key=score)


def spec_jump(hashed: int, buckets: int) -> int:
    """Lamping and Veach's JumpConsistentHash, transcribed from the paper."""
    b, j = -1, 0
    key = hashed
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) % 2**64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def spec_slot(names: list[str], slots: int, hashed: int) -> str:
    """An equal-weight slot table: contiguous runs by name, the first ``slots % n`` one longer."""
    base, extra = divmod(slots, len(names))
    index = hashed % slots
    for position, name in enumerate(sorted(names)):
        run = base + (1 if position < extra else 0)
        if index < run:
            return name
        index -= run
    raise AssertionError("unreachable")  # pragma: no cover


# -- the vectors ------------------------------------------------------------------------------


def test_the_hash_is_named_and_versioned() -> None:
    """Version 1 is the only version and carries the name stored with router state."""
    assert (1, "invres-blake2b64-v1") == (HASH_VERSION, HASH_NAME)


@pytest.mark.parametrize(("key", "encoded", "hashed"), VECTORS)
def test_encoding_and_hash_match_the_published_vector(
    key: str | bytes | int, encoded: str, hashed: int
) -> None:
    """encode_key and stable_hash give the checked-in literal for every vector."""
    assert (encoded, hashed) == (encode_key(key).hex(), stable_hash(key))
    assert hashed == stable_hash(key, version=1)


@pytest.mark.parametrize(("key", "encoded", "hashed"), VECTORS)
def test_vectors_agree_with_an_independent_derivation(
    key: str | bytes | int, encoded: str, hashed: int
) -> None:
    """hashlib.blake2b over the documented encoding reproduces each literal."""
    assert (encoded, hashed) == (spec_encoding(key).hex(), spec_hash(key))


@pytest.mark.parametrize(
    ("key", "body"),
    [
        (127, "7f"),
        (-128, "ff80"),
        (-129, "ff7f"),
        (-32768, "ff8000"),
        (-(2**63), "ff8000000000000000"),
        (2**63 - 1, "7fffffffffffffff"),
    ],
)
def test_an_int_takes_bit_length_plus_8_over_8_bytes(key: int, body: str) -> None:
    """An int takes (bit_length + 8) // 8 bytes: one more than the minimum at -2**(8k-1)."""
    assert "69" + body == encode_key(key).hex()
    assert key == int.from_bytes(bytes.fromhex(body), "big", signed=True)


def test_the_encoding_of_ints_is_injective_near_byte_boundaries() -> None:
    """Every int in a window around each byte boundary has its own encoding."""
    keys = [
        sign * (1 << bits) + delta
        for bits in range(0, 80, 8)
        for delta in range(-3, 4)
        for sign in (1, -1)
    ]
    encodings = {key: encode_key(key) for key in keys}
    assert len(set(encodings)) == len(set(encodings.values()))
    for key, encoded in encodings.items():
        assert key == int.from_bytes(encoded[1:], "big", signed=True)


def test_int_str_and_bytes_keys_are_different_keys() -> None:
    """1, "1" and b"1" have three encodings and three hashes."""
    keys: list[str | bytes | int] = [1, "1", b"1"]
    assert 3 == len({encode_key(key) for key in keys})
    assert 3 == len({stable_hash(key) for key in keys})


def test_bytearray_and_str_subclasses_hash_like_their_plain_values() -> None:
    """bytearray is bytes and a str subclass is its str: same encoding, same hash."""

    class Sku(str):
        __slots__ = ()

    assert stable_hash(b"WH-0042") == stable_hash(bytearray(b"WH-0042"))
    assert stable_hash("WH-0042") == stable_hash(Sku("WH-0042"))


@pytest.mark.parametrize(
    ("key", "type_name"),
    [
        (True, "bool"),
        (False, "bool"),
        (1.0, "float"),
        (None, "NoneType"),
        (("a", 1), "tuple"),
        (["a"], "list"),
        (memoryview(b"a"), "memoryview"),
    ],
)
def test_other_key_types_are_refused_naming_the_type(key: Any, type_name: str) -> None:
    """stable_hash, encode_key and every router raise TypeError naming the type."""
    for call in (stable_hash, encode_key, RENDEZVOUS.route, SLOTS.route, JUMP.route):
        with pytest.raises(TypeError, match=f"must be a str, bytes or int, got {type_name} "):
            call(key)


def test_a_lone_surrogate_is_refused_with_a_value_error() -> None:
    """A str holding a lone surrogate has no UTF-8 encoding: ValueError, pointing to bytes."""
    for call in (stable_hash, encode_key, RENDEZVOUS.route):
        with pytest.raises(ValueError, match=r"lone surrogate.*route its bytes instead"):
            call("WH-\ud800")


def test_an_unknown_hash_version_is_refused() -> None:
    """Only version 1 exists; asking for another raises ValueError naming it."""
    with pytest.raises(ValueError, match="version must be 1, got 2"):
        stable_hash("WH-0042", version=2)


@pytest.mark.parametrize(("key", "rendezvous", "slot", "shard"), ROUTES)
def test_routes_match_the_published_vector(
    key: str | bytes | int, rendezvous: str, slot: str, shard: int
) -> None:
    """The fixed weighted rendezvous, slot and jump routers route each key to its literal."""
    assert (rendezvous, slot, shard) == (RENDEZVOUS.route(key), SLOTS.route(key), JUMP.route(key))


@pytest.mark.parametrize(("key", "rendezvous", "slot", "shard"), ROUTES)
def test_routes_agree_with_an_independent_derivation(
    key: str | bytes | int, rendezvous: str, slot: str, shard: int
) -> None:
    """The documented algorithms, written here from scratch, reproduce each route."""
    hashed = spec_hash(key)
    assert rendezvous == spec_rendezvous(dict(RENDEZVOUS.nodes), hashed)
    assert slot == spec_slot(list(SLOTS.nodes), SLOTS.slots, hashed)
    assert shard == spec_jump(hashed, JUMP.shards)


def test_many_routes_agree_with_the_independent_derivation() -> None:
    """Over 2,000 keys of every kind the routers match the from-scratch algorithms."""
    keys = [*(f"WH-{n:05d}" for n in range(700)), *(n.to_bytes(3, "big") for n in range(600))]
    keys += [n * 7919 - 10**6 for n in range(700)]
    for key in keys:
        hashed = spec_hash(key)
        assert spec_rendezvous(dict(RENDEZVOUS.nodes), hashed) == RENDEZVOUS.route(key)
        assert spec_slot(list(SLOTS.nodes), SLOTS.slots, hashed) == SLOTS.route(key)
        assert spec_jump(hashed, JUMP.shards) == JUMP.route(key)


# -- the same routes in every process ---------------------------------------------------------

#: Prints, as JSON, Python's own hash of a str and the routes of 1,000 keys under each router.
CHILD = textwrap.dedent(
    """
    import json
    import invresilience as ir

    keys = [f"WH-{n:04d}" for n in range(400)]
    keys += [f"sku-{n}".encode() for n in range(300)]
    keys += [n * 104729 - 15_000_000 for n in range(300)]
    routers = {
        "rendezvous": ir.RendezvousRouter([f"worker-{n}" for n in range(10)]),
        "weighted": ir.RendezvousRouter({f"worker-{n}": 1.0 + n % 3 for n in range(10)}),
        "slot": ir.SlotRouter([f"worker-{n}" for n in range(10)])
        .with_node("worker-10", 2.0)
        .without_node("worker-3")
        .with_weight("worker-5", 0.5),
        "jump": ir.JumpRouter(37),
        "range": ir.RangeRouter(["WH-0100", "WH-0200"], ["low", "mid", "high"]),
        "hot": ir.HotKeyRouter(
            ir.RendezvousRouter([f"worker-{n}" for n in range(10)]), {"WH-0001": 8}
        ),
    }
    routes = {
        name: [router.route(key) for key in keys]
        for name, router in routers.items()
        if name not in ("range", "hot")
    }
    routes["range"] = [routers["range"].route(key) for key in keys[:400]]
    routes["hot"] = [routers["hot"].route("WH-0001", part) for part in keys]
    routes["hash"] = [ir.stable_hash(key) for key in keys]
    print(json.dumps({"builtin": hash("WH-0042"), "routes": routes}))
    """
)


def _run_child(seed: str) -> subprocess.Popen[str]:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_routes_are_the_same_in_processes_with_different_hash_seeds() -> None:
    """Processes with PYTHONHASHSEED 0, 1, 12345 and random route 1,000 keys as this one does."""
    seeds = ["0", "1", "12345", "random"]
    children = [_run_child(seed) for seed in seeds]  # run side by side: about 0.3 s in all
    reports: dict[str, dict[str, Any]] = {}
    for seed, child in zip(seeds, children, strict=True):
        out, err = child.communicate(timeout=60)
        assert 0 == child.returncode, err
        reports[seed] = json.loads(out)
    namespace: dict[str, Any] = {}
    exec(CHILD.replace("print(", "result = ("), namespace)  # the same script, in this process
    expected = json.loads(namespace["result"])["routes"]

    # The seeds took effect: Python's own str hash differs between the children...
    assert reports["0"]["builtin"] != reports["1"]["builtin"]
    # ...and every router still routes every key the same way in all of them.
    for seed in seeds:
        assert expected == reports[seed]["routes"], seed
    assert 1000 == len(expected["slot"])
    assert 10 <= len(set(expected["slot"]))
