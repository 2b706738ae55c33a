"""A sliding-window retry budget (the gRPC / Finagle kind).

Retries within the window may be at most ``ratio`` times the calls within it, plus a
reserve of ``minimum_per_second * ttl`` so that low-traffic callers can still retry.
"""

from __future__ import annotations

__all__ = ["BudgetWindow"]


class BudgetWindow:
    """Counts calls and retries over the last *ttl* seconds in *slots* rolling buckets.

    Not thread-safe: :class:`invresilience.RetryBudget` wraps it in a lock.
    """

    __slots__ = (
        "calls",
        "current",
        "ratio",
        "reserve",
        "retries",
        "slot_calls",
        "slot_retries",
        "slot_width",
    )

    def __init__(
        self, ratio: float, minimum_per_second: float, ttl: float, now: float, slots: int = 10
    ) -> None:
        self.ratio = ratio
        self.reserve = minimum_per_second * ttl
        self.slot_width = ttl / slots
        self.slot_calls = [0] * slots
        self.slot_retries = [0] * slots
        self.calls = 0
        self.retries = 0
        self.current = int(now // self.slot_width)

    def _advance(self, now: float) -> int:
        """Expire the buckets that fell out of the window; return the index of the live one."""
        index = int(now // self.slot_width)
        size = len(self.slot_calls)
        if index > self.current:
            if index - self.current >= size:
                self.slot_calls = [0] * size
                self.slot_retries = [0] * size
                self.calls = self.retries = 0
            else:
                for stale in range(self.current + 1, index + 1):
                    slot = stale % size
                    self.calls -= self.slot_calls[slot]
                    self.retries -= self.slot_retries[slot]
                    self.slot_calls[slot] = self.slot_retries[slot] = 0
            self.current = index
        return self.current % size

    def deposit(self, now: float) -> None:
        """Count one call (a first attempt)."""
        slot = self._advance(now)
        self.slot_calls[slot] += 1
        self.calls += 1

    def withdraw(self, now: float) -> bool:
        """Spend one retry if the budget allows it; return whether it did."""
        slot = self._advance(now)
        if self.retries + 1 > self.ratio * self.calls + self.reserve:
            return False
        self.slot_retries[slot] += 1
        self.retries += 1
        return True

    def available(self, now: float) -> float:
        """How many retries the window would allow right now."""
        self._advance(now)
        return max(0.0, self.ratio * self.calls + self.reserve - self.retries)
