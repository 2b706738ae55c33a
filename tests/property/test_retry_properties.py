"""Properties of retrying: deadlines, attempt counts and budgets hold for any schedule."""

from __future__ import annotations

import contextlib
import random

from hypothesis import given
from hypothesis import strategies as st

import invresilience as ir
from invresilience.testing import ManualClock
from tests.strategies import backoffs

durations = st.lists(
    st.floats(min_value=0.0, max_value=50.0, allow_nan=False), min_size=1, max_size=40
)


@given(
    backoffs(),
    durations,
    st.floats(min_value=0.01, max_value=200.0, allow_nan=False),
    st.integers(min_value=1, max_value=30),
    st.integers(min_value=0, max_value=2**32),
    st.lists(st.one_of(st.none(), st.floats(min_value=-5, max_value=500)), max_size=40),
)
def test_deadline_is_never_exceeded(
    backoff: ir.Backoff,
    attempt_times: list[float],
    timeout: float,
    attempts: int,
    seed: int,
    hints: list[float | None],
) -> None:
    """No attempt and no sleep starts at or after the deadline; no sleep ends past it."""
    clock = ManualClock()
    starts: list[float] = []

    class HintedError(Exception):
        def __init__(self, retry_after: float | None) -> None:
            self.retry_after = retry_after

    def attempt() -> None:
        index = len(starts)
        starts.append(clock.monotonic())
        clock.advance(attempt_times[index % len(attempt_times)])
        raise HintedError(hints[index] if index < len(hints) else None)

    policy = ir.RetryPolicy(
        on=HintedError,
        attempts=attempts,
        timeout=timeout,
        backoff=backoff,
        clock=clock,
        random=random.Random(seed),
    )
    with contextlib.suppress(HintedError):
        policy.call(attempt)
    assert 1 <= len(starts) <= attempts
    assert all(start < timeout for start in starts)
    # Every sleep ended before the deadline: the sleeps plus the attempt times before
    # the last attempt started fit inside it.
    assert starts[-1] < timeout
    assert sum(clock.sleeps) < timeout


@given(
    st.integers(min_value=1, max_value=500),
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=5.0),
    st.integers(min_value=1, max_value=5),
)
def test_budget_bounds_retries(calls: int, ratio: float, per_second: float, attempts: int) -> None:
    """Within one window, retries never exceed ratio × calls + minimum_per_second × ttl."""
    clock = ManualClock()
    budget = ir.RetryBudget(ratio=ratio, minimum_per_second=per_second, ttl=10, clock=clock)
    policy = ir.RetryPolicy(
        on=ConnectionError,
        attempts=attempts,
        budget=budget,
        clock=clock,
        timeout=None,
        backoff=ir.Backoff.constant(0),
    )
    made = 0

    def fail() -> None:
        nonlocal made
        made += 1
        raise ConnectionError

    for _ in range(calls):
        with contextlib.suppress(ConnectionError):
            policy.call(fail)
    retries = made - calls
    assert retries <= ratio * calls + per_second * 10 + 1e-9
    assert retries <= (attempts - 1) * calls
