"""Admission control decisions: pure, ``now`` passed in.

- :func:`gcra` and :class:`GcraTable`: the generic cell rate algorithm on integer
  nanoseconds, the rule behind :class:`~invresilience.RateLimiter` and every
  :class:`~invresilience.typing.RateLimitStore`.
- :class:`Slots`: a counted pool of concurrency slots with a bounded FIFO queue of
  waiters, the rule behind :class:`~invresilience.Bulkhead` and
  :class:`~invresilience.AdaptiveLimiter`.
- :class:`SampleWindow`, :class:`AimdLimit`, :class:`Gradient2Limit` and
  :class:`AdaptiveCore`: how an adaptive limiter turns latencies and drops into a
  concurrency limit.

Nothing here locks, sleeps or reads a clock; the shells in
:mod:`invresilience._admission` do.
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, Generic, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "AdaptiveCore",
    "AimdLimit",
    "GcraTable",
    "Gradient2Limit",
    "LimitAlgorithm",
    "SampleWindow",
    "Slots",
    "WindowSummary",
    "gcra",
]


# -- GCRA ------------------------------------------------------------------------------------


def gcra(tat: int, now: int, interval: int, capacity: int, weight: int) -> tuple[int, int]:
    """One GCRA decision: ``(new_tat, 0)`` when admitted, else ``(tat, wait)``.

    Args:
        tat: The bucket's theoretical arrival time in nanoseconds (``now`` or less when
            rested).
        now: The current time in nanoseconds.
        interval: Nanoseconds between two requests at the sustained rate.
        capacity: ``burst * interval``: how far ahead of ``now`` the bucket may run.
        weight: How many requests this one counts as.

    Returns:
        The bucket's new ``tat`` and ``0``, or the unchanged ``tat`` and the nanoseconds
        to wait until the request would be admitted (always ``> 0``).
    """
    # Integers throughout: a request arriving exactly on the boundary compares equal,
    # where float seconds could land a hair late and be refused.
    start = tat if tat > now else now
    new = start + weight * interval
    wait = new - now - capacity
    if wait > 0:
        return tat, wait
    return new, 0


class GcraTable:
    """Many GCRA buckets by key, forgetting rested ones so the table stays bounded.

    A bucket whose ``tat`` is at or before ``now`` is indistinguishable from a bucket
    never seen, so dropping it changes no answer. Rested buckets are swept when the
    table has doubled since the last sweep: amortised O(1) per request, and at most
    about twice the busy buckets (or :attr:`minimum`) are kept.

    Not thread-safe: the shells hold a lock around :meth:`acquire`.
    """

    __slots__ = ("buckets", "minimum", "sweep_at")

    def __init__(self, minimum: int = 1024) -> None:
        self.buckets: dict[str, int] = {}
        self.minimum = minimum
        self.sweep_at = minimum

    def acquire(self, key: str, now: int, interval: int, capacity: int, weight: int) -> int:
        """Try *key*'s bucket: ``0`` if admitted (and recorded), else the nanoseconds to wait."""
        buckets = self.buckets
        tat = buckets.get(key, now)
        start = tat if tat > now else now
        new = start + weight * interval
        wait = new - now - capacity
        if wait > 0:
            return wait
        buckets[key] = new
        if len(buckets) > self.sweep_at:
            self.sweep(now)
        return 0

    def sweep(self, now: int) -> None:
        """Forget every rested bucket."""
        self.buckets = {key: tat for key, tat in self.buckets.items() if tat > now}
        self.sweep_at = max(self.minimum, 2 * len(self.buckets))

    def __len__(self) -> int:
        return len(self.buckets)


# -- concurrency slots -----------------------------------------------------------------------


class Waiter(Protocol):
    """Anything queued for slots: only its weight matters here."""

    @property
    def weight(self) -> int: ...


W = TypeVar("W", bound=Waiter)


class Slots(Generic[W]):
    """A pool of *limit* slots and a FIFO queue of at most *max_queue* waiters.

    Admission is fair: nobody is admitted ahead of a queued waiter, even when their
    smaller weight would fit. A request heavier than the whole limit is admitted when
    nothing else is in flight, so a shrinking adaptive limit never starves it.
    Granting a waiter counts its slots as taken at once: the waiter owns them from that
    moment, even before it wakes up.

    Not thread-safe: the shells hold a lock around every method.
    """

    __slots__ = ("in_flight", "limit", "max_queue", "waiters")

    def __init__(self, limit: int, max_queue: int) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.in_flight = 0
        self.waiters: collections.deque[W] = collections.deque()

    def try_take(self, weight: int) -> bool:
        """Take *weight* slots if they are free and nobody is queued; return whether it did."""
        if not self.waiters and (self.in_flight + weight <= self.limit or not self.in_flight):
            self.in_flight += weight
            return True
        return False

    def enqueue(self, waiter: W) -> bool:
        """Queue *waiter*; ``False`` when the queue is full."""
        if len(self.waiters) >= self.max_queue:
            return False
        self.waiters.append(waiter)
        return True

    def withdraw(self, waiter: W) -> list[W] | None:
        """Take *waiter* out of the queue (it gave up); the waiters granted as a result.

        Returns ``None`` if it was no longer queued: it was granted meanwhile and holds
        its slots. Otherwise the waiters behind it that fit now that it is gone (a heavy
        waiter at the head blocks lighter ones).
        """
        try:
            self.waiters.remove(waiter)
        except ValueError:
            return None
        return self._grant()

    def give_back(self, weight: int) -> list[W]:
        """Return *weight* slots; the waiters granted as a result, in order."""
        self.in_flight -= weight
        return self._grant()

    def set_limit(self, limit: int) -> list[W]:
        """Move the limit; the waiters granted as a result, in order."""
        self.limit = limit
        return self._grant()

    def _grant(self) -> list[W]:
        granted: list[W] = []
        waiters = self.waiters
        while waiters:
            weight = waiters[0].weight
            if self.in_flight + weight > self.limit and self.in_flight:
                break
            self.in_flight += weight
            granted.append(waiters.popleft())
        return granted


# -- adaptive limits -------------------------------------------------------------------------


class WindowSummary(NamedTuple):
    """What one closed sample window saw.

    Attributes:
        samples: Samples in the window, drops included.
        drops: How many of them were drops.
        mean: The mean latency of the others, in seconds (``0.0`` if every one dropped).
        latencies: Their most recent latencies (up to the window's capacity), sorted.
        max_in_flight: The most calls in flight when any of them started.
    """

    samples: int
    drops: int
    mean: float
    latencies: tuple[float, ...]
    max_in_flight: int

    def percentile(self, q: float) -> float:
        """The nearest-rank *q*-quantile (``0 < q <= 1``) of :attr:`latencies` (``0.0`` if none)."""
        latencies = self.latencies
        if not latencies:
            return 0.0
        return latencies[max(0, math.ceil(q * len(latencies)) - 1)]


class SampleWindow:
    """Collects samples until a window of at least *length* seconds and *min_samples* closes.

    A dropped call's latency is not a latency sample: a shed request fails fast, a timed
    out one slowly, and neither says how long the dependency takes to serve. Latencies
    are kept in a ring of the last *capacity* samples, so a window's memory and the cost
    of its percentile are bounded however busy the limiter is.
    """

    __slots__ = (
        "count",
        "drops",
        "end",
        "latencies",
        "length",
        "max_in_flight",
        "min_samples",
        "total",
    )

    def __init__(self, length: float, min_samples: int, now: float, capacity: int = 1000) -> None:
        self.length = length
        self.min_samples = min_samples
        self.latencies: collections.deque[float] = collections.deque(maxlen=capacity)
        self.end = now + length
        self.count = self.drops = self.max_in_flight = 0
        self.total = 0.0

    def add(
        self, now: float, latency: float, dropped: bool, in_flight: int
    ) -> WindowSummary | None:
        """Record one sample; the window's summary if this sample closed it."""
        self.count += 1
        if dropped:
            self.drops += 1
        else:
            self.total += latency
            self.latencies.append(latency)
        if in_flight > self.max_in_flight:
            self.max_in_flight = in_flight
        if now < self.end or self.count < self.min_samples:
            return None
        served = self.count - self.drops
        summary = WindowSummary(
            self.count,
            self.drops,
            self.total / served if served else 0.0,
            tuple(sorted(self.latencies)),
            self.max_in_flight,
        )
        self.latencies.clear()
        self.end = now + self.length
        self.count = self.drops = self.max_in_flight = 0
        self.total = 0.0
        return summary


class LimitAlgorithm(Protocol):
    """How a limit moves after a window: ``update(limit, window) -> new limit``."""

    def update(self, limit: float, window: WindowSummary) -> float: ...


class AimdLimit:
    """Additive increase, multiplicative decrease, on windows.

    A window with a drop, or whose *percentile* latency exceeds *latency_target*,
    shrinks the limit to ``limit * backoff_ratio`` (by at least one); a healthy window
    in which the limit was at least half used grows it by one. A window that used less
    than half the limit says nothing about a larger one, so it changes nothing.
    """

    __slots__ = ("backoff_ratio", "latency_target", "percentile")

    def __init__(
        self, backoff_ratio: float, latency_target: float | None, percentile: float
    ) -> None:
        self.backoff_ratio = backoff_ratio
        self.latency_target = latency_target
        self.percentile = percentile

    def update(self, limit: float, window: WindowSummary) -> float:
        """The limit after *window*."""
        target = self.latency_target
        if window.drops or (target is not None and window.percentile(self.percentile) > target):
            current = math.floor(limit)
            return float(min(current - 1, math.floor(limit * self.backoff_ratio)))
        if window.max_in_flight * 2 >= limit:
            return float(math.floor(limit) + 1)
        return limit


class Gradient2Limit:
    """Netflix's Gradient2: the limit follows the ratio of a long-term to the current latency.

    ``short`` is the window's mean latency; ``long`` an exponential moving average of
    the windows' means over about *long_window* windows (a plain average over the first
    *warmup* windows). Then::

        gradient = clamp(tolerance * long / short, 0.5, 1.0)  # 0.5 on a drop
        target = limit * gradient + (queue_size(limit) if gradient == 1 else 0)
        limit = limit * (1 - smoothing) + target * smoothing

    When ``long`` exceeds twice ``short`` -- latency fell back after a long overload --
    ``long`` is cut by 5 % per window to catch up. A window that used less than half the
    limit does not move it.

    Three departures from Netflix's code. A drop counts as the steepest gradient (0.5):
    Netflix's version ignores drops and keeps growing while the dependency sheds load.
    The queue allowance is added only while no queueing is seen (gradient 1): added
    under a modest gradient (say 0.8) it makes the limit creep up forever. And after the
    warm-up, ``long`` learns only from windows that can show the unloaded latency --
    latency below ``long``, a limit less than half used, or a limit at its *minimum* --
    because learning from saturated windows teaches it that the overloaded latency is
    normal, and the limit drifts up with it.
    """

    __slots__ = (
        "factor",
        "long",
        "minimum",
        "queue_size",
        "seen",
        "smoothing",
        "tolerance",
        "warmup",
    )

    def __init__(
        self,
        tolerance: float,
        smoothing: float,
        queue_size: Callable[[int], float],
        long_window: int,
        minimum: int,
        warmup: int = 10,
    ) -> None:
        self.minimum = minimum
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.queue_size = queue_size
        self.factor = 2.0 / (long_window + 1)
        self.warmup = warmup
        self.seen = 0
        self.long = 0.0

    def update(self, limit: float, window: WindowSummary) -> float:
        """The limit after *window*."""
        short = window.mean
        idle = window.max_in_flight * 2 < limit
        if window.samples == window.drops:
            pass  # every call dropped: no latency to learn from
        elif self.seen < self.warmup:
            self.seen += 1
            self.long += (short - self.long) / self.seen
        elif short < self.long or idle or limit <= self.minimum:
            self.long += (short - self.long) * self.factor
        long = self.long
        if short > 0.0 and long > 2.0 * short:
            self.long = long = long * 0.95
        if window.drops:
            gradient = 0.5
        elif idle:
            return limit
        elif short <= 0.0:
            gradient = 1.0
        else:
            gradient = max(0.5, min(1.0, self.tolerance * long / short))
        target = limit * gradient
        if gradient >= 1.0:
            target += self.queue_size(math.floor(limit))
        return limit * (1.0 - self.smoothing) + target * self.smoothing


class AdaptiveCore:
    """An adaptive limit: samples in, an integer limit within ``[minimum, maximum]`` out.

    The algorithm works on a float estimate (Gradient2 moves by fractions); the limit
    handed out is its floor, clamped.
    """

    __slots__ = ("algorithm", "estimate", "limit", "maximum", "minimum", "window")

    def __init__(
        self,
        algorithm: LimitAlgorithm,
        window: SampleWindow,
        *,
        initial: int,
        minimum: int,
        maximum: int,
    ) -> None:
        self.algorithm = algorithm
        self.window = window
        self.minimum = minimum
        self.maximum = maximum
        self.estimate = float(initial)
        self.limit = initial

    def sample(self, now: float, latency: float, dropped: bool, in_flight: int) -> int | None:
        """Record one released call; the new limit if it moved, else ``None``."""
        summary = self.window.add(now, latency, dropped, in_flight)
        if summary is None:
            return None
        estimate = self.algorithm.update(self.estimate, summary)
        if not estimate >= self.minimum:  # also catches NaN
            estimate = float(self.minimum)
        elif estimate > self.maximum:
            estimate = float(self.maximum)
        self.estimate = estimate
        limit = math.floor(estimate)
        if limit == self.limit:
            return None
        self.limit = limit
        return limit
