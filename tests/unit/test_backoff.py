"""Backoff shapes, the cap before jitter, and the jitter modes."""

from __future__ import annotations

import datetime
import random

import pytest

import invresilience as ir


def test_exponential_without_jitter() -> None:
    """Exponential delays grow by the multiplier and stop at the cap."""
    b = ir.Backoff(initial=0.5, maximum=5, multiplier=3, jitter="none")
    assert [0.5, 1.5, 4.5, 5.0, 5.0] == [b.delay(n) for n in range(1, 6)]


def test_linear_and_constant() -> None:
    """Linear adds the increment up to the cap; constant never changes."""
    linear = ir.Backoff.linear(1, 2, 6)
    assert [1.0, 3.0, 5.0, 6.0] == [linear.delay(n) for n in range(1, 5)]
    constant = ir.Backoff.constant(datetime.timedelta(milliseconds=250))
    assert [0.25, 0.25] == [constant.delay(1), constant.delay(9)]


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    """An attempt number that would overflow the float power returns the cap."""
    assert 10.0 == ir.Backoff(jitter="none").delay(5000)


def test_cap_applies_before_jitter() -> None:
    """Equal jitter at the cap stays within [cap/2, cap], never above."""
    b = ir.Backoff(initial=1, maximum=4, jitter="equal")
    rng = random.Random(1)
    delays = [b.delay(20, rng=rng) for _ in range(1000)]
    assert 2.0 <= min(delays)
    assert max(delays) <= 4.0


def test_decorrelated_grows_from_the_previous_delay() -> None:
    """Decorrelated jitter draws from [initial, 3 × previous], capped."""
    b = ir.Backoff(initial=1, maximum=100, jitter="decorrelated")
    rng = random.Random(2)
    for previous in (1.0, 2.0, 10.0, 50.0):
        draws = [b.delay(3, previous, rng) for _ in range(500)]
        assert 1.0 <= min(draws)
        assert max(draws) <= min(100.0, 3 * previous)


def test_injected_random_is_used() -> None:
    """The same seed gives the same delays."""
    b = ir.Backoff()
    first = [b.delay(n, rng=random.Random(7)) for n in range(1, 5)]
    second = [b.delay(n, rng=random.Random(7)) for n in range(1, 5)]
    assert first == second


@pytest.mark.parametrize("jitter", ["full", "equal", "decorrelated", "none"])
def test_policy_uses_its_random(jitter: str) -> None:
    """A policy's random source drives its jitter, so seeded policies repeat exactly."""
    runs = []
    for _ in range(2):
        clock = ir.testing.ManualClock()
        p = ir.RetryPolicy(
            on=ValueError,
            attempts=5,
            clock=clock,
            random=random.Random(3),
            backoff=ir.Backoff(jitter=jitter),  # type: ignore[arg-type]
        )
        with pytest.raises(ValueError, match="x"):
            p.call(_fail)
        runs.append(clock.sleeps)
    assert runs[0] == runs[1]
    assert 4 == len(runs[0])


def _fail() -> None:
    raise ValueError("x")
