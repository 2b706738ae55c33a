"""Properties of backoff delays: every jitter mode stays within its bounds."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from hypothesis import given
from hypothesis import strategies as st

from invresilience._core.backoff import base_delay
from tests.strategies import attempt_numbers, backoffs

if TYPE_CHECKING:
    import invresilience as ir

seeds = st.integers(min_value=0, max_value=2**32)


@given(backoffs(), attempt_numbers, seeds)
def test_delay_within_the_mode_bounds(backoff: ir.Backoff, attempt: int, seed: int) -> None:
    """full ∈ [0, base], equal ∈ [base/2, base], none = base, decorrelated ∈ [initial, cap]."""
    rng = random.Random(seed)
    delay = backoff.delay(attempt, None, rng)
    base = base_delay(
        backoff.kind,
        backoff.initial,
        backoff.maximum,
        backoff.multiplier,
        backoff.increment,
        attempt,
    )
    assert 0.0 <= delay <= backoff.maximum
    if backoff.jitter == "full":
        assert delay <= base
    elif backoff.jitter == "equal":
        assert base / 2 <= delay <= base
    elif backoff.jitter == "none":
        assert base == delay
    else:
        assert backoff.initial <= delay


@given(backoffs(), seeds, st.integers(min_value=1, max_value=60))
def test_decorrelated_sequences_never_exceed_the_cap(
    backoff: ir.Backoff, seed: int, length: int
) -> None:
    """Chaining decorrelated delays (each from the previous) never passes the cap."""
    rng = random.Random(seed)
    previous: float | None = None
    for attempt in range(1, length + 1):
        previous = backoff.delay(attempt, previous, rng)
        assert previous <= backoff.maximum
        if backoff.jitter == "decorrelated":
            assert backoff.initial <= previous


@given(backoffs(), attempt_numbers)
def test_base_delay_is_monotonic_in_attempts(backoff: ir.Backoff, attempt: int) -> None:
    """Without jitter, a later attempt never waits less than an earlier one."""

    def base(n: int) -> float:
        return base_delay(
            backoff.kind, backoff.initial, backoff.maximum, backoff.multiplier, backoff.increment, n
        )

    assert base(attempt) <= base(attempt + 1) <= backoff.maximum
