"""Backoff delay computation.

The cap (``maximum``) applies to the base delay *before* jitter, so jitter never pushes a
delay past the cap and the distribution does not pile up at it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

__all__ = ["JITTERS", "KINDS", "base_delay", "delay_function"]

KINDS = ("exponential", "constant", "linear")
JITTERS = ("full", "equal", "decorrelated", "none")

# AWS's "decorrelated jitter": each delay is drawn from [initial, previous * 3].
DECORRELATED_GROWTH = 3.0


def base_delay(
    kind: str, initial: float, maximum: float, multiplier: float, increment: float, attempt: int
) -> float:
    """The capped, un-jittered delay after failed attempt number *attempt* (1-based)."""
    if kind == "constant":
        raw = initial
    elif kind == "linear":
        raw = initial + increment * (attempt - 1)
    else:
        try:
            raw = initial * multiplier ** (attempt - 1)
        except OverflowError:
            return maximum
    return raw if raw < maximum else maximum


def delay_function(
    kind: str, jitter: str, initial: float, maximum: float, multiplier: float, increment: float
) -> Callable[[int, float | None, random.Random], float]:
    """``delay(attempt, previous, rng)``: the delay to sleep after failed attempt *attempt*.

    Specialised once per configuration, so computing a delay is one small call.
    Bounds, with ``base = min(maximum, raw)``:

    - ``none``: exactly ``base``;
    - ``full``: uniform in ``[0, base]``;
    - ``equal``: uniform in ``[base / 2, base]``;
    - ``decorrelated``: uniform in ``[initial, min(maximum, previous * 3)]``, where
      *previous* is the last delay (``initial`` before the first retry).
    """
    if jitter == "decorrelated":

        def decorrelated(attempt: int, previous: float | None, rng: random.Random) -> float:
            upper = (initial if previous is None else previous) * DECORRELATED_GROWTH
            if upper > maximum:
                upper = maximum
            if upper < initial:
                upper = initial
            return initial + rng.random() * (upper - initial)

        return decorrelated

    if kind == "constant" or initial == maximum:
        base = min(initial, maximum)
        if jitter == "none":
            return lambda attempt, previous, rng: base
        if jitter == "full":
            return lambda attempt, previous, rng: rng.random() * base
        half = base / 2.0
        return lambda attempt, previous, rng: half + rng.random() * half

    def growing(attempt: int, previous: float | None, rng: random.Random) -> float:
        base = base_delay(kind, initial, maximum, multiplier, increment, attempt)
        if jitter == "full":
            return rng.random() * base
        if jitter == "equal":
            return base / 2.0 + rng.random() * base / 2.0
        return base

    return growing
