"""The circuit breaker's state machine and sliding windows: pure, ``now`` passed in.

One :class:`BreakerCore` is the whole behaviour of a breaker. The in-process
:class:`~invresilience.CircuitBreaker` drives one directly; the memory
:class:`~invresilience.typing.BreakerStore` keeps one per name; the Redis store runs the
same rules in Lua. Every transition increases :attr:`BreakerCore.generation`, and outcomes
reported for another generation are dropped, so a late result admitted before a
transition cannot flip the state that followed it.
"""

from __future__ import annotations

import enum
import math
from typing import Literal

import attrs

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "ISOLATED",
    "OPEN",
    "BreakerCore",
    "BreakerSpec",
    "BreakerState",
    "CountWindowState",
    "SharedBreakerState",
    "TimeWindowState",
]


class BreakerState(enum.Enum):
    """The state of a circuit breaker.

    .. versionadded:: 0.1.0
    """

    #: Calls pass; outcomes are recorded in the window.
    CLOSED = "closed"
    #: Calls are rejected until the open duration is over.
    OPEN = "open"
    #: A limited number of probe calls pass; the rest are rejected.
    HALF_OPEN = "half_open"
    #: Held open by :meth:`~invresilience.CircuitBreaker.isolate` until reset.
    ISOLATED = "isolated"


# Reading an enum member through its class costs ~80 ns on CPython 3.11: hot paths use these.
CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN
ISOLATED = BreakerState.ISOLATED


@attrs.frozen(kw_only=True)
class BreakerSpec:
    """What a :class:`~invresilience.typing.BreakerStore` needs to run a breaker's shared state.

    Built by :class:`~invresilience.CircuitBreaker` from its configuration; stores take it
    on every operation, so they hold no configuration of their own.

    Attributes:
        window: ``"count"`` (the last *size* recorded calls) or ``"time"`` (the calls of
            the last *size* seconds, kept in *buckets* buckets).
        size: Calls (count window) or seconds (time window).
        buckets: The time window's bucket count (``1`` for a count window).
        failure_rate: Trip when failures / calls reaches this.
        slow_call_rate: Trip when slow calls / calls reaches this (above ``1`` never trips).
        minimum_calls: No tripping before the window holds this many calls.
        open_for: Seconds to stay open after the 1st, 2nd, ... consecutive opening (the
            last value repeats).
        probes: Probe permits in half-open; the circuit closes when this many succeeded.
        probe_lease: Seconds after which an unsettled probe permit is handed out again.

    .. versionadded:: 0.1.0
    """

    window: Literal["count", "time"]
    size: float
    buckets: int
    failure_rate: float
    slow_call_rate: float
    minimum_calls: int
    open_for: tuple[float, ...]
    probes: int
    probe_lease: float


@attrs.frozen(kw_only=True)
class SharedBreakerState:
    """A breaker's state as a :class:`~invresilience.typing.BreakerStore` reports it.

    Attributes:
        state: The state.
        generation: Increases on every transition.
        retry_after: Seconds (on the store's clock) until an open breaker admits a probe,
            or until a busy half-open probe slot's lease runs out; ``0.0`` otherwise.
        opens: Consecutive openings without a successful recovery.
        calls: Calls in the window.
        failures: Failures in the window.
        slow: Slow calls in the window.

    .. versionadded:: 0.1.0
    """

    state: BreakerState
    generation: int
    retry_after: float = 0.0
    opens: int = 0
    calls: int = 0
    failures: int = 0
    slow: int = 0


class CountWindowState:
    """The last *size* outcomes in a ring, with running totals: O(1) per outcome."""

    __slots__ = ("calls", "failures", "head", "ring", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        # One byte per slot: bit 0 = a call is there, bit 1 = failed, bit 2 = slow.
        self.ring = bytearray(size)
        self.head = 0
        self.calls = self.failures = self.slow = 0

    def add(self, now: float, code: int, count: int) -> None:
        """Push *count* outcomes coded *code*; only the last *size* can matter."""
        del now  # a count window does not care when
        size = self.size
        if count >= size:
            self.ring[:] = bytes((code,)) * size
            self.head = 0
            self.calls = size
            self.failures = size if code & 2 else 0
            self.slow = size if code & 4 else 0
            return
        ring = self.ring
        head = self.head
        for _ in range(count):
            old = ring[head]
            if old:
                self.calls -= 1
                if old & 2:
                    self.failures -= 1
                if old & 4:
                    self.slow -= 1
            ring[head] = code
            head = head + 1 if head + 1 < size else 0
        self.head = head
        self.calls += count
        if code & 2:
            self.failures += count
        if code & 4:
            self.slow += count

    def roll(self, now: float) -> None:
        """Nothing ages out of a count window."""

    def boundary(self, now: float) -> float:
        """When outcomes start to belong elsewhere: never, for a count window."""
        return math.inf

    def clear(self) -> None:
        """Forget every outcome."""
        self.ring[:] = bytes(self.size)
        self.head = 0
        self.calls = self.failures = self.slow = 0


class TimeWindowState:
    """The outcomes of the last *span* seconds in *buckets* buckets: O(1) amortised."""

    __slots__ = (
        "bucket_calls",
        "bucket_failures",
        "bucket_slow",
        "buckets",
        "calls",
        "current",
        "failures",
        "slow",
        "width",
    )

    def __init__(self, span: float, buckets: int) -> None:
        self.buckets = buckets
        self.width = span / buckets
        self.bucket_calls = [0] * buckets
        self.bucket_failures = [0] * buckets
        self.bucket_slow = [0] * buckets
        self.current: int | None = None
        self.calls = self.failures = self.slow = 0

    def roll(self, now: float) -> None:
        """Age out the buckets that ended at or before *now* minus the span."""
        index = math.floor(now / self.width)
        current = self.current
        if current is None:
            self.current = index
            return
        if index <= current:
            return
        steps = min(index - current, self.buckets)
        for step in range(1, steps + 1):
            slot = (current + step) % self.buckets
            self.calls -= self.bucket_calls[slot]
            self.failures -= self.bucket_failures[slot]
            self.slow -= self.bucket_slow[slot]
            self.bucket_calls[slot] = self.bucket_failures[slot] = self.bucket_slow[slot] = 0
        self.current = index

    def add(self, now: float, code: int, count: int) -> None:
        """Add *count* outcomes coded *code* at *now*.

        Outcomes from an earlier bucket go to that bucket while it is in the window, and
        nowhere once it has aged out.
        """
        self.roll(now)
        current = self.current
        assert current is not None
        index = math.floor(now / self.width)
        if index < current:
            if index <= current - self.buckets:
                return
            current = index
        slot = current % self.buckets
        self.bucket_calls[slot] += count
        self.calls += count
        if code & 2:
            self.bucket_failures[slot] += count
            self.failures += count
        if code & 4:
            self.bucket_slow[slot] += count
            self.slow += count

    def boundary(self, now: float) -> float:
        """The end of the bucket *now* falls in."""
        return (math.floor(now / self.width) + 1) * self.width

    def clear(self) -> None:
        """Forget every outcome."""
        for array in (self.bucket_calls, self.bucket_failures, self.bucket_slow):
            array[:] = [0] * self.buckets
        self.calls = self.failures = self.slow = 0


#: Outcome codes for the windows: bit 0 a call, bit 1 a failure, bit 2 slow.
SUCCESS_CODE, FAILURE_CODE, SLOW_SUCCESS_CODE, SLOW_FAILURE_CODE = 1, 3, 5, 7


class BreakerCore:
    """The state machine of one breaker, as :class:`~invresilience.typing.BreakerStore` spells it.

    Not thread-safe: callers hold a lock around every method. Probe slots are owned by
    opaque *owner* values; a slot whose lease ran out is handed to the next caller, and its
    first owner's late outcome is ignored.
    """

    __slots__ = (
        "generation",
        "open_until",
        "opens",
        "probe_successes",
        "slots",
        "spec",
        "state",
        "window",
    )

    def __init__(self, spec: BreakerSpec) -> None:
        self.spec = spec
        self.window: CountWindowState | TimeWindowState = (
            CountWindowState(int(spec.size))
            if spec.window == "count"
            else TimeWindowState(spec.size, spec.buckets)
        )
        self.state = CLOSED
        self.generation = 0
        self.open_until = 0.0
        self.opens = 0
        self.slots: list[tuple[object, float] | None] = [None] * spec.probes
        self.probe_successes = 0

    # -- closed: outcomes and tripping ----------------------------------------------------

    def record(
        self,
        now: float,
        generation: int,
        *,
        successes: int = 0,
        failures: int = 0,
        slow_successes: int = 0,
        slow_failures: int = 0,
        successes_at: float | None = None,
    ) -> bool:
        """Add outcomes of calls admitted in *generation*; ``True`` if this tripped the breaker.

        *successes_at*, when given, is the earlier time the plain *successes* belong to (a
        batch folded late); the other outcomes happened at *now*.
        """
        if self.state is not CLOSED or generation != self.generation:
            return False
        window = self.window
        window.roll(now)
        if successes > 0 and successes_at is not None and successes_at < now:
            window.add(successes_at, SUCCESS_CODE, successes)
            successes = 0
        for code, count in (
            (SUCCESS_CODE, successes),
            (SLOW_SUCCESS_CODE, slow_successes),
            (FAILURE_CODE, failures),
            (SLOW_FAILURE_CODE, slow_failures),
        ):
            if count > 0:
                window.add(now, code, count)
        if failures + slow_successes + slow_failures == 0 or window.calls < self.spec.minimum_calls:
            return False
        calls = window.calls
        # Compare rates, not counts against rate * calls: 0.07 * 100 is 7.000000000000001,
        # and 7 failures in 100 calls must trip a 0.07 breaker (7 / 100 == 0.07 exactly).
        if (
            window.failures / calls >= self.spec.failure_rate
            or window.slow / calls >= self.spec.slow_call_rate
        ):
            self._open(now)
            return True
        return False

    def _open(self, now: float) -> None:
        open_for = self.spec.open_for
        self.opens += 1
        self.state = OPEN
        self.generation += 1
        self.open_until = now + open_for[min(self.opens, len(open_for)) - 1]
        self._clear()

    def _clear(self) -> None:
        self.window.clear()
        self.slots = [None] * self.spec.probes
        self.probe_successes = 0

    # -- open and half-open: probes ---------------------------------------------------------

    def probe(self, now: float, owner: object) -> bool:
        """Move an open breaker whose time is up to half-open, and try to give *owner* a slot."""
        if self.state is OPEN and now >= self.open_until:
            self.state = HALF_OPEN
            self.generation += 1
            self._clear()
        if self.state is not HALF_OPEN:
            return False
        slots = self.slots
        for index, slot in enumerate(slots):
            if slot is None or slot[1] <= now:
                slots[index] = (owner, now + self.spec.probe_lease)
                return True
        return False

    def settle(self, now: float, owner: object, generation: int, success: bool | None) -> bool:
        """Report the outcome of *owner*'s probe; ``True`` if it counted."""
        if self.state is not HALF_OPEN or generation != self.generation:
            return False
        slots = self.slots
        index = next(
            (i for i, slot in enumerate(slots) if slot is not None and slot[0] == owner), None
        )
        if index is None:
            return False
        slot = slots[index]
        assert slot is not None
        slots[index] = None
        if slot[1] <= now:
            return False  # its lease ran out: the slot may already be someone else's
        if success is None:
            return True
        if not success:
            self._open(now)
            return True
        self.probe_successes += 1
        if self.probe_successes >= self.spec.probes:
            self.state = CLOSED
            self.generation += 1
            self.opens = 0
            self._clear()
        return True

    def force(self, now: float, state: Literal["isolated", "closed"]) -> None:
        """Isolate (hold open until reset) or reset (close with an empty window)."""
        self.generation += 1
        self._clear()
        if state == "isolated":
            self.state = ISOLATED
        else:
            self.state = CLOSED
            self.opens = 0
        self.open_until = now

    # -- reading ------------------------------------------------------------------------

    def retry_after(self, now: float) -> float:
        """Seconds until this breaker could admit a probe (``0.0`` when it could now)."""
        if self.state is OPEN:
            return max(0.0, self.open_until - now)
        if self.state is HALF_OPEN:
            leases = [slot[1] for slot in self.slots if slot is not None]
            if len(leases) == len(self.slots):
                return max(0.0, min(leases) - now)
        return 0.0

    def shared(self, now: float) -> SharedBreakerState:
        """The state as a store reports it."""
        self.window.roll(now)
        return SharedBreakerState(
            state=self.state,
            generation=self.generation,
            retry_after=self.retry_after(now),
            opens=self.opens,
            calls=self.window.calls,
            failures=self.window.failures,
            slow=self.window.slow,
        )
