"""Shared hypothesis strategies."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

import invresilience as ir

delays = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
positive_delays = st.floats(min_value=1e-6, max_value=1e4, allow_nan=False, allow_infinity=False)
multipliers = st.floats(min_value=1.0, max_value=10.0, allow_nan=False)
jitters = st.sampled_from(["full", "equal", "decorrelated", "none"])
attempt_numbers = st.integers(min_value=1, max_value=2000)


@st.composite
def backoffs(draw: st.DrawFn) -> ir.Backoff:
    """Any valid Backoff."""
    jitter = draw(jitters)
    kind = (
        "exponential"
        if jitter == "decorrelated"
        else draw(st.sampled_from(["exponential", "constant", "linear"]))
    )
    initial = draw(positive_delays if jitter == "decorrelated" else delays)
    maximum = draw(st.floats(min_value=initial, max_value=max(initial, 1e5), allow_nan=False))
    if kind == "constant":
        return ir.Backoff.constant(initial, jitter=jitter)  # type: ignore[arg-type]
    if kind == "linear":
        return ir.Backoff.linear(initial, draw(delays), maximum, jitter=jitter)  # type: ignore[arg-type]
    return ir.Backoff(
        initial=initial,
        maximum=maximum,
        multiplier=draw(multipliers),
        jitter=jitter,  # type: ignore[arg-type]
    )


# -- shard routers --------------------------------------------------------------------------

#: Keys a router accepts: text (no lone surrogates), bytes and ints of any size.
shard_keys = st.one_of(
    st.text(max_size=12),
    st.binary(max_size=12),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
)
#: Node names: short, so that draws collide and exercise "already a node" paths.
node_names = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
#: Weights a SlotRouter keeps within one slot of their share (no share below one slot).
node_weights = st.sampled_from([0.5, 1.0, 1.0, 1.5, 2.0, 3.0, 4.0])


def weighted_nodes(min_size: int = 1, max_size: int = 8) -> st.SearchStrategy[dict[str, float]]:
    """A mapping of distinct node names to weights."""
    return st.dictionaries(node_names, node_weights, min_size=min_size, max_size=max_size)


@st.composite
def range_boundaries(draw: st.DrawFn) -> list[Any]:
    """Strictly increasing RangeRouter boundaries, all int, all str or all bytes."""
    elements: st.SearchStrategy[Any] = draw(
        st.sampled_from(
            [
                st.integers(min_value=-1000, max_value=1000),
                st.text(alphabet="abcz", max_size=3),
                st.binary(max_size=2),
            ]
        )
    )
    return sorted(draw(st.sets(elements, max_size=8)))
