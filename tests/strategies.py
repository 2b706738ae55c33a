"""Shared hypothesis strategies."""

from __future__ import annotations

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
