"""Properties of admission control: GCRA never over-admits, stores agree with memory, limits stay in bounds."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import invresilience as ir
from invresilience._admission import AIMD, Gradient2, MemoryRateLimitStore, RateLimiter
from invresilience._core.admission import AdaptiveCore, SampleWindow, Slots, gcra
from invresilience.testing import ManualClock

#: (nanoseconds to advance, weight) pairs.
requests = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3_000), st.integers(min_value=1, max_value=4)),
    max_size=80,
)


@given(
    st.integers(min_value=1, max_value=1_000),
    st.integers(min_value=1, max_value=5),
    requests,
)
def test_gcra_never_admits_more_than_burst_plus_rate(
    interval: int, burst: int, schedule: list[tuple[int, int]]
) -> None:
    """In any span of T ns, admitted weight is at most burst + T / interval."""
    tat, now = 0, 10**6
    admitted: list[tuple[int, int]] = []
    for step, weight in schedule:
        now += step
        tat, wait = gcra(tat, now, interval, burst * interval, weight)
        if wait == 0:
            admitted.append((now, weight))
        else:
            assert wait > 0
            if weight <= burst:
                # The refusal is exact: waiting that long would admit the request.
                assert gcra(tat, now + wait, interval, burst * interval, weight)[1] == 0
                assert gcra(tat, now + wait - 1, interval, burst * interval, weight)[1] == 1
    for first, (start, _) in enumerate(admitted):
        total = 0
        for at, weight in admitted[first:]:
            total += weight
            assert total <= burst + (at - start) // interval


keys = st.sampled_from([None, "default", "WH-1", "WH-2"])
operations = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.5, allow_nan=False),
        st.integers(min_value=1, max_value=3),
        keys,
    ),
    max_size=60,
)


def _outcome(limiter: RateLimiter, weight: int, key: str | None) -> float:
    """0.0 when admitted, else the retry_after of the rejection."""
    try:
        limiter.acquire(weight, key=key)
    except ir.RateLimitedError as error:
        return error.retry_after
    return 0.0


@given(
    st.floats(min_value=0.5, max_value=50.0),
    st.integers(min_value=3, max_value=6),
    operations,
)
def test_store_agrees_with_memory(
    rate: float, burst: int, steps: list[tuple[float, int, str | None]]
) -> None:
    """The inlined memory buckets and a MemoryRateLimitStore answer every request alike."""
    clock = ManualClock()
    memory = RateLimiter(rate, burst=burst, clock=clock)
    stored = RateLimiter(rate, burst=burst, store=MemoryRateLimitStore(clock), clock=clock)
    for advance, weight, key in steps:
        clock.advance(advance)
        assert _outcome(memory, weight, key) == _outcome(stored, weight, key)


samples = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=2.0, allow_nan=False),  # time step
        st.floats(min_value=0.0, max_value=10.0, allow_nan=False),  # latency
        st.booleans(),  # dropped
        st.integers(min_value=0, max_value=500),  # in flight
    ),
    max_size=200,
)
algorithms = st.one_of(
    st.builds(
        AIMD,
        backoff_ratio=st.floats(min_value=0.5, max_value=0.99),
        latency_target=st.one_of(st.none(), st.floats(min_value=0.01, max_value=5.0)),
        percentile=st.floats(min_value=0.01, max_value=1.0),
    ),
    st.builds(
        Gradient2,
        tolerance=st.floats(min_value=1.0, max_value=3.0),
        smoothing=st.floats(min_value=0.01, max_value=1.0),
        queue_size=st.one_of(st.integers(min_value=0, max_value=50), st.just(math.sqrt)),
        long_window=st.integers(min_value=1, max_value=1000),
    ),
)


@given(
    algorithms,
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=1, max_value=20),
    samples,
)
def test_adaptive_limit_stays_within_bounds(
    algorithm: AIMD | Gradient2,
    minimum: int,
    span: int,
    min_samples: int,
    sequence: list[tuple[float, float, bool, int]],
) -> None:
    """Whatever the samples, the limit stays in [min_limit, max_limit] and moves are reported."""
    maximum = minimum + span
    core = AdaptiveCore(
        algorithm._build(minimum),
        SampleWindow(0.5, min_samples, 0.0),
        initial=minimum + span // 2,
        minimum=minimum,
        maximum=maximum,
    )
    now = 0.0
    for step, latency, dropped, in_flight in sequence:
        now += step
        before = core.limit
        moved = core.sample(now, latency, dropped, in_flight)
        assert minimum <= core.limit <= maximum
        assert minimum <= core.estimate <= maximum
        assert (moved is None) == (before == core.limit)


class _Waiter:
    def __init__(self, weight: int) -> None:
        self.weight = weight


class SlotsMachine(RuleBasedStateMachine):
    """The Slots core against a model: held weights, a FIFO queue, and no idle slot while anyone waits."""

    @initialize(
        limit=st.integers(min_value=1, max_value=6), max_queue=st.integers(min_value=0, max_value=4)
    )
    def start(self, limit: int, max_queue: int) -> None:
        self.slots: Slots[_Waiter] = Slots(limit, max_queue)
        self.limit = limit
        self.max_queue = max_queue
        self.held: list[int] = []
        self.queue: list[_Waiter] = []

    def _fits(self, weight: int) -> bool:
        used = sum(self.held)
        return used + weight <= self.limit or used == 0

    def _grant_model(self) -> list[_Waiter]:
        granted = []
        while self.queue and self._fits(self.queue[0].weight):
            waiter = self.queue.pop(0)
            self.held.append(waiter.weight)
            granted.append(waiter)
        return granted

    @rule(weight=st.integers(min_value=1, max_value=7))
    def arrive(self, weight: int) -> None:
        expected = not self.queue and self._fits(weight)
        assert expected == self.slots.try_take(weight)
        if expected:
            self.held.append(weight)
            return
        waiter = _Waiter(weight)
        queued = len(self.queue) < self.max_queue
        assert queued == self.slots.enqueue(waiter)
        if queued:
            self.queue.append(waiter)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(min_value=0))
    def leave(self, index: int) -> None:
        weight = self.held.pop(index % len(self.held))
        assert self._grant_model() == self.slots.give_back(weight)

    @precondition(lambda self: self.queue)
    @rule(index=st.integers(min_value=0))
    def give_up(self, index: int) -> None:
        waiter = self.queue.pop(index % len(self.queue))
        # Leaving the queue can unblock the waiters behind a heavy head.
        assert self._grant_model() == self.slots.withdraw(waiter)
        assert self.slots.withdraw(waiter) is None

    @rule(limit=st.integers(min_value=1, max_value=8))
    def resize(self, limit: int) -> None:
        self.limit = limit
        assert self._grant_model() == self.slots.set_limit(limit)

    @invariant()
    def agrees(self) -> None:
        assert sum(self.held) == self.slots.in_flight
        assert self.queue == list(self.slots.waiters)

    @invariant()
    def nobody_waits_for_a_free_slot(self) -> None:
        if self.queue:
            assert not self._fits(self.queue[0].weight)


TestSlots = SlotsMachine.TestCase
