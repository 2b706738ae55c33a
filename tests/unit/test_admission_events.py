"""Admission limiters report rejections and limit changes as AdmissionEvent."""

from __future__ import annotations

import invresilience as ir
from invresilience._events import Event, scoped_listener
from invresilience.testing import ManualClock


def test_rejections_are_reported() -> None:
    """A refused rate limit, bulkhead and adaptive limiter each emit a ``rejected`` event."""
    seen: list[Event] = []
    with scoped_listener(seen.append):
        limiter = ir.RateLimiter(1, burst=1, clock=ManualClock(), name="erp")
        assert limiter.try_acquire() is not None
        assert limiter.try_acquire() is None
        bulkhead = ir.Bulkhead(1)
        permit = bulkhead.try_acquire()
        assert bulkhead.try_acquire() is None
        adaptive = ir.AdaptiveLimiter(initial_limit=1, min_limit=1, max_limit=2, name="db")
        held = adaptive.try_acquire()
        assert adaptive.try_acquire() is None
    assert permit is not None
    assert held is not None
    assert [
        ir.AdmissionEvent(source="erp", kind="rejected", retry_after=1.0),
        ir.AdmissionEvent(source="Bulkhead", kind="rejected"),
        ir.AdmissionEvent(source="db", kind="rejected", limit=1),
    ] == seen


def test_limit_changes_are_reported() -> None:
    """An adaptive limiter reports every move of its limit."""
    clock = ManualClock()
    seen: list[Event] = []
    limiter = ir.AdaptiveLimiter(
        ir.AIMD(backoff_ratio=0.5),
        initial_limit=8,
        min_limit=1,
        max_limit=16,
        window=1.0,
        min_samples=1,
        clock=clock,
        name="db",
    )
    with scoped_listener(seen.append):
        for _ in range(3):
            permit = limiter.try_acquire()
            assert permit is not None
            clock.advance(1.0)
            permit.release("dropped", 0.1)
    changes = [e for e in seen if isinstance(e, ir.AdmissionEvent) and e.kind == "limit_changed"]
    assert changes
    assert limiter.limit == changes[-1].limit
    assert all(change.limit is not None and change.limit < 8 for change in changes)
