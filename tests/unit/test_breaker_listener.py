"""Listeners may call back into the breaker that emitted the event."""

from __future__ import annotations

import contextlib
import threading

import invresilience as ir
from invresilience._events import Event, scoped_listener
from invresilience.testing import ManualClock


def test_a_listener_may_read_metrics_on_a_state_change() -> None:
    """Events are emitted after the breaker's lock is released: no deadlock."""
    clock = ManualClock()
    breaker = ir.CircuitBreaker("erp", minimum_calls=1, open_for=5.0, clock=clock)
    states: list[ir.BreakerState] = []

    def listener(event: Event) -> None:
        if isinstance(event, ir.BreakerEvent) and event.kind == "state_changed":
            states.append(breaker.metrics().state)

    def trip() -> None:
        with scoped_listener(listener), contextlib.suppress(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)

    thread = threading.Thread(target=trip, daemon=True)
    thread.start()
    thread.join(10.0)
    assert not thread.is_alive()
    assert [ir.BreakerState.OPEN] == states
