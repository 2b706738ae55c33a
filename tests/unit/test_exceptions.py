"""The error tree: shape, context attributes and messages."""

from __future__ import annotations

import invresilience as ir
from invresilience import exceptions


def test_every_error_descends_from_resilience_error() -> None:
    """Catching ResilienceError catches everything the library raises itself."""
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), ir.ResilienceError)
        assert name.endswith("Error")


def test_tree() -> None:
    """The documented parent of each error."""
    assert issubclass(ir.ConfigurationError, ValueError)
    assert issubclass(ir.RetryBudgetExhaustedError, ir.RetriesExhaustedError)
    for child in (ir.IdempotencyInProgressError, ir.IdempotencyKeyReuseError, ir.LeaseLostError):
        assert issubclass(child, ir.IdempotencyError)
    assert issubclass(ir.BackendUnavailableError, ir.BackendError)


def test_context_attributes_and_messages() -> None:
    """Errors carry their context as attributes and say it in the message."""
    opened = ir.CircuitOpenError("erp", retry_after=2.5)
    assert ("erp", 2.5) == (opened.name, opened.retry_after)
    assert "circuit 'erp' is open; retry in 2.5 s" == str(opened)
    assert "circuit 'erp' is open" == str(ir.CircuitOpenError("erp"))
    limited = ir.RateLimitedError(0.25)
    assert 0.25 == limited.retry_after
    assert "rate limited; retry in 0.25 s" == str(limited)
    busy = ir.IdempotencyInProgressError("job-1", retry_after=10.0)
    assert ("job-1", 10.0) == (busy.key, busy.retry_after)
    assert "idempotency key 'job-1' is in progress elsewhere; its lease ends in 10 s" == str(busy)
    assert "job-1" in str(ir.IdempotencyInProgressError("job-1"))
    assert issubclass(ir.CodecError, ValueError)
    assert "job-1" in str(ir.IdempotencyKeyReuseError("job-1"))
    lost = ir.LeaseLostError("job-1", fence=3)
    assert 3 == lost.fence
    assert "fence 3" in str(lost)
    exhausted = ir.RetriesExhaustedError("gave up", last_result=None, attempts=3)
    assert (None, 3) == (exhausted.last_result, exhausted.attempts)
