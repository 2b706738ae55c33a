"""Bad configuration is refused at construction, naming the field and the value."""

from __future__ import annotations

import math
from typing import Any

import pytest

import invresilience as ir


@pytest.mark.parametrize(
    ("build", "field", "value"),
    [
        (lambda: ir.RetryPolicy(on=ValueError, attempts=0), "RetryPolicy.attempts", 0),
        (lambda: ir.RetryPolicy(on=ValueError, attempts=-3), "RetryPolicy.attempts", -3),
        (lambda: ir.RetryPolicy(on=ValueError, attempts=2.5), "RetryPolicy.attempts", 2.5),
        (lambda: ir.RetryPolicy(on=ValueError, attempts=True), "RetryPolicy.attempts", True),
        (lambda: ir.RetryPolicy(on=ValueError, timeout=0), "RetryPolicy.timeout", 0),
        (lambda: ir.RetryPolicy(on=ValueError, timeout=-1), "RetryPolicy.timeout", -1),
        (lambda: ir.RetryPolicy(on=ValueError, timeout=math.inf), "RetryPolicy.timeout", math.inf),
        (lambda: ir.RetryPolicy(on=ValueError, timeout="30"), "RetryPolicy.timeout", "30"),
        (lambda: ir.RetryPolicy(on=int), "RetryPolicy.on", int),
        (lambda: ir.RetryPolicy(on="ValueError"), "RetryPolicy.on", "ValueError"),
        (lambda: ir.RetryPolicy(on=(ValueError, int)), "RetryPolicy.on", int),
        (lambda: ir.RetryPolicy(on=()), "RetryPolicy.on", ()),
        (lambda: ir.RetryPolicy(on=KeyboardInterrupt), "RetryPolicy.on", KeyboardInterrupt),
        (lambda: ir.RetryPolicy(on=ValueError, backoff=1.0), "RetryPolicy.backoff", 1.0),
        (lambda: ir.RetryPolicy(on=ValueError, budget=0.2), "RetryPolicy.budget", 0.2),
        (lambda: ir.RetryPolicy(on=ValueError, clock="system"), "RetryPolicy.clock", "system"),
        (lambda: ir.RetryPolicy(on=ValueError, random=7), "RetryPolicy.random", 7),
        (lambda: ir.RetryPolicy(on=ValueError, retry_after=5), "RetryPolicy.retry_after", 5),
        (lambda: ir.RetryPolicy(on=ValueError, name=3), "RetryPolicy.name", 3),
        (lambda: ir.Backoff(initial=-1), "Backoff.initial", -1),
        (lambda: ir.Backoff(initial=5, maximum=1), "Backoff.maximum", 1),
        (lambda: ir.Backoff(multiplier=0.5), "Backoff.multiplier", 0.5),
        (lambda: ir.Backoff(multiplier=math.nan), "Backoff.multiplier", math.nan),
        (lambda: ir.Backoff(jitter="random"), "Backoff.jitter", "random"),
        (lambda: ir.Backoff(kind="cubic"), "Backoff.kind", "cubic"),
        (lambda: ir.Backoff.constant(1, jitter="decorrelated"), "Backoff.jitter", "decorrelated"),
        (lambda: ir.Backoff(initial=0, jitter="decorrelated"), "Backoff.initial", 0),
        (lambda: ir.Backoff.linear(1, -1, 5), "Backoff.increment", -1),
        (lambda: ir.RetryBudget(ratio=1.5), "RetryBudget.ratio", 1.5),
        (lambda: ir.RetryBudget(ratio=-0.1), "RetryBudget.ratio", -0.1),
        (lambda: ir.RetryBudget(minimum_per_second=-1), "RetryBudget.minimum_per_second", -1),
        (lambda: ir.RetryBudget(ttl=0), "RetryBudget.ttl", 0),
        (lambda: ir.testing.testing(attempts=0).__enter__(), "testing.attempts", 0),
    ],
)
def test_bad_values_name_field_and_value(build: Any, field: str, value: object) -> None:
    """Each bad value raises ConfigurationError carrying and naming the field and the value."""
    with pytest.raises(ir.ConfigurationError) as info:
        build()
    error = info.value
    assert field == error.field
    assert repr(value) in str(error)
    assert str(error).startswith(field)
    if not (isinstance(value, float) and math.isnan(value)):
        assert value == error.value
    assert isinstance(error, ValueError)


def test_message_reads_as_a_sentence() -> None:
    """The message says what was wrong and what was given."""
    with pytest.raises(ir.ConfigurationError, match=r"^RetryPolicy.attempts must be >= 1, got 0$"):
        ir.RetryPolicy(on=ValueError, attempts=0)


def test_on_is_required() -> None:
    """There is no default for what to retry on."""
    with pytest.raises(TypeError):
        ir.RetryPolicy()  # type: ignore[call-arg]


def test_policies_are_frozen() -> None:
    """Policies cannot be changed after construction; evolve a copy instead."""
    import attrs

    p = ir.RetryPolicy(on=ValueError)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        p.attempts = 10  # type: ignore[misc]
    assert 10 == attrs.evolve(p, attempts=10).attempts
    with pytest.raises(ir.ConfigurationError):
        attrs.evolve(p, attempts=0)
