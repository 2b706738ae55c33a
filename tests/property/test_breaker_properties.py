"""A circuit breaker driven side by side with a small reference model: they never disagree.

The model below is plain Python with no tricks: a list of every recorded outcome with its
time (the window is recomputed from scratch on every question), a list of probe slots,
and the transitions as the design describes them. The machine drives a real
:class:`~invresilience.CircuitBreaker` on a :class:`~invresilience.testing.ManualClock`
through the same steps -- calls of every shape and outcome, probes left hanging and
finished late, clock ticks, isolate and reset -- and checks after every step that both
agree on the state, the generation, which calls were admitted, the ``retry_after`` of
every rejection, the window counts and the state-change events.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from typing import Any, Literal

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

import invresilience as ir
from invresilience.backends.memory import AsyncMemoryBreakerStore, MemoryBreakerStore
from invresilience.exceptions import BulkheadFullError, CircuitOpenError, RateLimitedError
from invresilience.testing import ManualClock

CLOSED, OPEN, HALF_OPEN, ISOLATED = (
    ir.BreakerState.CLOSED,
    ir.BreakerState.OPEN,
    ir.BreakerState.HALF_OPEN,
    ir.BreakerState.ISOLATED,
)

# Every time in the machine is a sum of these: dyadic fractions, so float sums are exact.
ticks = st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 20.0])
durations = st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0, 4.0])

#: What a call does: its name, and how a breaker configured by the machine counts it.
OUTCOMES = [
    "ok",  # returns "fine": a success
    "bad",  # returns "bad": a failure when classify is on (and a value is seen)
    "failure",  # ConnectionError: in failure_on
    "timeout",  # TimeoutError: in failure_on, but classify calls it a success
    "ignored",  # KeyError: in ignore_on
    "other",  # ValueError: not in failure_on, so the dependency answered: a success
    "perm",  # PermissionError: classify ignores it; without classify a success
    "bulkhead",  # our own BulkheadFullError: local, inconclusive
    "limited",  # our own RateLimitedError: local, inconclusive
    "inner_open",  # an inner breaker's CircuitOpenError: local, inconclusive
    "cancel",  # asyncio.CancelledError (a BaseException): inconclusive
]
# Successes and failures drive the transitions: draw them more often than the rest.
outcomes = st.sampled_from(["ok"] * 6 + ["failure"] * 4 + OUTCOMES)
SHAPES = ["decorated", "call", "with", "adecorated", "acall", "async_with"]


def make_error(outcome: str) -> BaseException:
    errors: dict[str, BaseException] = {
        "failure": ConnectionError("refused"),
        "timeout": TimeoutError("slow answer"),
        "ignored": KeyError("sku"),
        "other": ValueError("bad sku"),
        "perm": PermissionError("denied"),
        "bulkhead": BulkheadFullError("full"),
        "limited": RateLimitedError(1.0),
        "inner_open": CircuitOpenError("inner", 1.0),
        "cancel": asyncio.CancelledError(),
    }
    return errors[outcome]


def classify(outcome: ir.Outcome) -> ir.Verdict | None:
    """The machine's classifier: each verdict, and ``None`` to fall back to the type rules."""
    if outcome.result == "bad":
        return "failure"
    if isinstance(outcome.exception, TimeoutError):
        return "success"
    if isinstance(outcome.exception, PermissionError):
        return "ignore"
    return None


Verdict = Literal["success", "failure", "ignore"]


def expected_verdict(outcome: str, *, classified: bool, sees_result: bool) -> Verdict:
    """How the design says an outcome counts (written out, not derived from the code)."""
    if outcome in ("bulkhead", "limited", "inner_open", "cancel", "ignored"):
        return "ignore"
    if outcome == "failure":
        return "failure"
    if outcome == "timeout":
        return "success" if classified else "failure"
    if outcome == "perm":
        return "ignore" if classified else "success"
    if outcome == "bad":
        return "failure" if classified and sees_result else "success"
    return "success"  # "ok", "other"


# -- the reference model -------------------------------------------------------------------


@attrs.define
class Config:
    window: Literal["count", "time"]
    size: int  # calls, or seconds
    buckets: int
    failure_rate: float
    slow_rate: float | None
    slow_after: float
    minimum_calls: int
    schedule: list[float]  # open durations of the 1st, 2nd, ... opening; the last repeats
    probes: int
    lease: float


@attrs.define
class Ticket:
    """A call the model admitted."""

    generation: int
    start: float
    owner: int | None  # a probe's slot owner; None for a closed call


@attrs.define
class Model:
    config: Config
    state: ir.BreakerState = CLOSED
    generation: int = 0
    opens: int = 0
    open_until: float = 0.0
    # (time, failed, slow) of every outcome recorded since the window was last emptied.
    outcomes: list[tuple[float, bool, bool]] = attrs.field(factory=list)
    slots: list[tuple[int, float] | None] = attrs.field(factory=list)
    probe_successes: int = 0
    owners: int = 0
    rejected: int = 0
    transitions: list[tuple[ir.BreakerState, ir.BreakerState, int]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.slots = [None] * self.config.probes

    def window(self, now: float) -> list[tuple[bool, bool]]:
        """The (failed, slow) outcomes the window holds at *now*."""
        config = self.config
        if config.window == "count":
            kept = self.outcomes[-config.size :]
        else:
            width = config.size / config.buckets
            first_bucket = math.floor(now / width) - config.buckets + 1
            kept = [o for o in self.outcomes if math.floor(o[0] / width) >= first_bucket]
        return [(failed, slow) for _, failed, slow in kept]

    def counts(self, now: float) -> tuple[int, int, int]:
        window = self.window(now)
        return len(window), sum(f for f, _ in window), sum(s for _, s in window)

    def visible_state(self, now: float) -> ir.BreakerState:
        if self.state is OPEN and now >= self.open_until:
            return HALF_OPEN
        return self.state

    def _move(self, state: ir.BreakerState) -> None:
        self.transitions.append((self.state, state, self.generation + 1))
        self.state = state
        self.generation += 1
        self.outcomes = []
        self.slots = [None] * self.config.probes
        self.probe_successes = 0

    def _open(self, now: float) -> None:
        self.opens += 1
        schedule = self.config.schedule
        self.open_until = now + schedule[min(self.opens, len(schedule)) - 1]
        self._move(OPEN)

    def admit(self, now: float) -> Ticket | float | None:
        """A ticket, or the rejection's retry_after (``None`` when isolated)."""
        if self.state is CLOSED:
            return Ticket(self.generation, now, None)
        if self.state is ISOLATED:
            self.rejected += 1
            return None
        if self.state is OPEN:
            if now < self.open_until:
                self.rejected += 1
                return self.open_until - now
            self._move(HALF_OPEN)
        for index, slot in enumerate(self.slots):
            if slot is None or slot[1] <= now:
                self.owners += 1
                self.slots[index] = (self.owners, now + self.config.lease)
                return Ticket(self.generation, now, self.owners)
        self.rejected += 1
        return min(slot[1] for slot in self.slots if slot is not None) - now

    def finish(self, ticket: Ticket, now: float, verdict: Verdict) -> None:
        """The admitted call *ticket* ended at *now* with *verdict*."""
        slow = now - ticket.start >= self.config.slow_after
        if ticket.generation != self.generation:
            return  # admitted before a transition: a late result changes nothing
        if ticket.owner is None:
            if self.state is not CLOSED or verdict == "ignore":
                return
            failed = verdict == "failure"
            self.outcomes.append((now, failed, slow))
            if failed or slow:
                calls, failures, slows = self.counts(now)
                slow_rate = self.config.slow_rate
                if calls >= self.config.minimum_calls and (
                    failures / calls >= self.config.failure_rate
                    or (slow_rate is not None and slows / calls >= slow_rate)
                ):
                    self._open(now)
            return
        if self.state is not HALF_OPEN:
            return
        index = next(
            (i for i, s in enumerate(self.slots) if s is not None and s[0] == ticket.owner), None
        )
        if index is None:
            return  # its lease ran out and the slot went to another probe
        slot = self.slots[index]
        assert slot is not None
        self.slots[index] = None
        if slot[1] <= now or verdict == "ignore":
            return  # too late to count, or inconclusive: the slot is simply free again
        if verdict == "failure" or slow:
            self._open(now)
            return
        self.probe_successes += 1
        if self.probe_successes >= self.config.probes:
            self._move(CLOSED)
            self.opens = 0

    def force(self, state: ir.BreakerState) -> None:
        self._move(state)
        if state is CLOSED:
            self.opens = 0


# -- the machine -------------------------------------------------------------------------


@st.composite
def configs(draw: st.DrawFn) -> tuple[Config, dict[str, Any]]:
    """A small breaker configuration, as the model's Config and as CircuitBreaker kwargs."""
    kwargs: dict[str, Any] = {}
    kind = draw(st.sampled_from(["count", "time"]))
    if kind == "count":
        size, buckets = draw(st.integers(1, 5)), 1
        kwargs["window"] = ir.CountWindow(size)
        # A count window behaves the same through a store (a time window only roughly: a
        # store files a batch of successes when it arrives), so it may run on one.
        if draw(st.booleans()):
            kwargs["store"] = "memory"
            kwargs["flush_interval"] = draw(st.sampled_from([0.5, 2.0]))
    else:
        size, buckets = draw(st.sampled_from([2, 4, 8])), draw(st.sampled_from([1, 2, 4]))
        kwargs["window"] = ir.TimeWindow(size, buckets=buckets)
    failure_rate = draw(
        st.one_of(
            st.sampled_from([0.25, 0.5, 2 / 3, 0.75, 1.0]),
            st.floats(min_value=0.01, max_value=1.0),
        )
    )
    slow_rate = draw(st.one_of(st.none(), st.sampled_from([0.25, 0.5, 1.0])))
    slow_after = math.inf
    if slow_rate is not None:
        slow_after = draw(st.sampled_from([1.0, 2.0]))
        kwargs["slow_call_rate"] = slow_rate
        kwargs["slow_call_duration"] = slow_after
    minimum_calls = draw(st.integers(1, 4))
    if draw(st.booleans()):
        open_for: float | ir.Backoff = draw(st.sampled_from([1.0, 2.0, 5.0]))
        schedule = [float(open_for)]  # type: ignore[arg-type]
    else:
        open_for = ir.Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter="none")
        schedule = [1.0, 2.0, 4.0, 8.0]
    probes = draw(st.integers(1, 3))
    lease = draw(st.sampled_from([1.0, 3.0, 10.0]))
    classified = draw(st.booleans())
    kwargs.update(
        failure_rate=failure_rate,
        minimum_calls=minimum_calls,
        open_for=open_for,
        half_open_probes=probes,
        probe_timeout=lease,
        failure_on=(ConnectionError, TimeoutError),
        ignore_on=LookupError,
        classify=classify if classified else None,
    )
    config = Config(
        window=kind,
        size=size,
        buckets=buckets,
        failure_rate=failure_rate,
        slow_rate=slow_rate,
        slow_after=slow_after,
        minimum_calls=minimum_calls,
        schedule=schedule,
        probes=probes,
        lease=lease,
    )
    return config, kwargs


@attrs.define
class Hanging:
    """A call entered with ``with breaker:`` (in its own context) and not finished yet."""

    context: contextvars.Context
    ticket: Ticket


class BreakerMachine(RuleBasedStateMachine):
    hanging = Bundle("hanging")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(start=1000.0)
        self.loop = asyncio.new_event_loop()
        self.events: list[ir.Event] = []
        self.remove_listener: Any = None

    @initialize(config=configs(), with_events=st.booleans(), start=st.sampled_from([0.0, 0.5]))
    def build(self, config: tuple[Config, dict[str, Any]], with_events: bool, start: float) -> None:
        self.config, kwargs = config
        self.clock.advance(start)
        self.classified = kwargs["classify"] is not None
        self.shared = "store" in kwargs
        if self.shared:
            kwargs["store"] = MemoryBreakerStore(clock=self.clock)
            kwargs["async_store"] = AsyncMemoryBreakerStore(kwargs["store"])
        self.breaker = ir.CircuitBreaker("machine", clock=self.clock, **kwargs)
        self.model = Model(self.config)
        if with_events:
            self.remove_listener = ir.add_listener(self.events.append)
        clock = self.clock

        def dependency(outcome: str, duration: float) -> str:
            clock.advance(duration)
            if outcome in ("ok", "bad"):
                return "fine" if outcome == "ok" else "bad"
            raise make_error(outcome)

        async def adependency(outcome: str, duration: float) -> str:
            await asyncio.sleep(0)
            return dependency(outcome, duration)

        self.dependency = dependency
        self.adependency = adependency
        self.decorated = self.breaker(dependency)
        self.adecorated = self.breaker(adependency)

    def teardown(self) -> None:
        if self.remove_listener is not None:
            self.remove_listener()
        self.loop.close()

    # -- helpers ---------------------------------------------------------------------------

    def run_shape(self, shape: str, outcome: str, duration: float) -> None:
        breaker, dependency, adependency = self.breaker, self.dependency, self.adependency
        if shape == "decorated":
            self.decorated(outcome, duration)
        elif shape == "call":
            breaker.call(dependency, outcome, duration)
        elif shape == "with":
            with breaker:
                dependency(outcome, duration)
        else:

            async def run() -> None:
                if shape == "adecorated":
                    await self.adecorated(outcome, duration)
                elif shape == "acall":
                    await breaker.acall(adependency, outcome, duration)
                else:
                    async with breaker:
                        await adependency(outcome, duration)

            self.loop.run_until_complete(run())

    def check_rejection(self, error: CircuitOpenError, expected: float | None) -> None:
        assert "machine" == error.name
        if expected is None:
            assert None is error.retry_after
        elif self.shared and self.model.state is HALF_OPEN:
            # A shared breaker asks its store again sooner than a lease's end: a peer's
            # probe may close the circuit at any time.
            assert error.retry_after is not None
            assert 0 < error.retry_after <= expected
        else:
            assert error.retry_after is not None
            assert math.isclose(expected, error.retry_after, abs_tol=1e-9)

    # -- rules -----------------------------------------------------------------------------

    @rule(shape=st.sampled_from(SHAPES), outcome=outcomes, duration=durations)
    def call(self, shape: str, outcome: str, duration: float) -> None:
        """A call of any shape: admitted or rejected as the model says, and counted so."""
        now = self.clock.monotonic()
        admission = self.model.admit(now)
        raised: BaseException | None = None
        try:
            self.run_shape(shape, outcome, duration)
        except BaseException as error:  # noqa: BLE001 -- checked just below
            raised = error
        if isinstance(raised, CircuitOpenError) and raised.name == "machine":
            assert not isinstance(admission, Ticket), "rejected, the model admitted"
            self.check_rejection(raised, admission)
            return
        assert isinstance(admission, Ticket), "admitted, the model rejected"
        if outcome in ("ok", "bad"):
            assert raised is None
        else:  # the dependency's own exception, untouched
            assert type(make_error(outcome)) is type(raised)
        sees_result = shape not in ("with", "async_with")
        verdict = expected_verdict(outcome, classified=self.classified, sees_result=sees_result)
        self.model.finish(admission, self.clock.monotonic(), verdict)

    @rule(shape=st.sampled_from(SHAPES), duration=durations)
    def fail(self, shape: str, duration: float) -> None:
        """A failing call (the commonest way to move a breaker)."""
        self.call(shape, "failure", duration)

    @rule(target=hanging)
    def start_hanging(self) -> Hanging | None:
        """Enter ``with breaker:`` in a context of its own and leave the call running."""
        now = self.clock.monotonic()
        admission = self.model.admit(now)
        context = contextvars.copy_context()
        try:
            context.run(self.breaker.__enter__)
        except CircuitOpenError as error:
            assert not isinstance(admission, Ticket), "rejected, the model admitted"
            self.check_rejection(error, admission)
            return None
        assert isinstance(admission, Ticket), "admitted, the model rejected"
        return Hanging(context, admission)

    @rule(call=consumes(hanging), outcome=outcomes)
    def finish_hanging(self, call: Hanging | None, outcome: str) -> None:
        """A hanging call ends, possibly after transitions: its result counts only if current."""
        if call is None:
            return
        error = None if outcome in ("ok", "bad") else make_error(outcome)
        call.context.run(self.breaker.__exit__, None if error is None else type(error), error, None)
        verdict = expected_verdict(outcome, classified=self.classified, sees_result=False)
        self.model.finish(call.ticket, self.clock.monotonic(), verdict)

    @rule(seconds=ticks)
    def tick(self, seconds: float) -> None:
        """Time passes."""
        self.clock.advance(seconds)

    @rule(which=st.sampled_from(["open_until", "lease", "bucket"]))
    def wait_for_edge(self, which: str) -> None:
        """Time passes exactly to an edge: the end of the open time, of a lease, of a bucket."""
        now, model, config = self.clock.monotonic(), self.model, self.config
        if which == "open_until":
            edge = model.open_until
        elif which == "lease":
            edge = min((s[1] for s in model.slots if s is not None), default=now)
        else:
            width = config.size / config.buckets if config.window == "time" else 1.0
            edge = (math.floor(now / width) + 1) * width
        if edge > now:
            self.clock.advance(edge - now)

    @rule(isolate=st.booleans())
    def force(self, isolate: bool) -> None:
        """Isolate (every call rejected until reset) or reset (closed, empty window)."""
        if isolate:
            self.breaker.isolate()
            self.model.force(ISOLATED)
        else:
            self.breaker.reset()
            self.model.force(CLOSED)

    @rule()
    def metrics(self) -> None:
        """The metrics agree with the model (reading them changes nothing)."""
        now = self.clock.monotonic()
        metrics = self.breaker.metrics()
        model = self.model
        calls, failures, slow = model.counts(now) if model.state is CLOSED else (0, 0, 0)
        assert (calls, failures, slow) == (metrics.calls, metrics.failures, metrics.slow)
        assert model.opens == metrics.opens
        assert model.rejected == metrics.rejected
        assert model.visible_state(now) == metrics.state
        assert model.generation == metrics.generation
        if metrics.state is OPEN:
            assert math.isclose(model.open_until - now, metrics.retry_after, abs_tol=1e-9)
        else:
            assert 0.0 == metrics.retry_after

    @invariant()
    def agree(self) -> None:
        """Breaker and model agree on the state and its generation after every step."""
        if not hasattr(self, "model"):
            return
        now = self.clock.monotonic()
        assert self.model.visible_state(now) == self.breaker.state
        assert self.model.generation == self.breaker.generation

    @invariant()
    def events_agree(self) -> None:
        """With a listener attached, every transition was reported once, in order."""
        if self.remove_listener is None:
            return
        changes = [
            (e.previous, e.state, e.generation)
            for e in self.events
            if isinstance(e, ir.BreakerEvent) and e.kind == "state_changed"
        ]
        assert self.model.transitions == changes
        rejections = [
            e for e in self.events if isinstance(e, ir.BreakerEvent) and e.kind == "rejected"
        ]
        assert self.model.rejected == len(rejections)


TestBreakerMachine = BreakerMachine.TestCase
