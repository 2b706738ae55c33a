"""The conformance suite for :class:`~invresilience.typing.BreakerStore` and its async twin.

Subclass :class:`BreakerStoreContract` (or :class:`AsyncBreakerStoreContract`) in a test
module under a name pytest collects (``Test...``) and say how to make your store; the
inherited ``test_*`` methods check every rule of the Protocol. See
:mod:`invresilience.contract` for a worked example.

Every check is written once, as a coroutine over the async Protocol; a sync store is
driven through an adapter whose coroutines never suspend, so the check runs to its end in
one step, in the test's own thread, with no event loop.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from .._clock import SYSTEM_CLOCK
from .._core.breaker import (
    CLOSED,
    HALF_OPEN,
    ISOLATED,
    OPEN,
    BreakerSpec,
    BreakerState,
    SharedBreakerState,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from ..typing import AsyncBreakerStore, BreakerStore

__all__ = ["AsyncBreakerStoreContract", "BreakerStoreContract"]

_T = TypeVar("_T")

#: A duration the suite never waits out: "still open", "lease still held".
LONG = 60.0


# -- plumbing shared with the rate-limit suite ---------------------------------------------------


def _run_now(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that never suspends (it only awaits sync calls) to its end."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coroutine.close()
    msg = "a check suspended while driving a sync store: the store must not await anything"
    raise RuntimeError(msg)


def _expect(expected: object, actual: object, what: str) -> None:
    # An explicit error, not ``assert``: the suite lives in the library, where pytest does
    # not rewrite asserts and ``python -O`` would strip them.
    if expected != actual:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def _expect_duration(expected: float, actual: float, what: str, *, exact: bool) -> None:
    """*actual* is *expected* seconds, less the real time that passed (none on exact clocks)."""
    if exact:
        ok = math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-6)
    else:
        # Stores may round to their clock's resolution (microseconds on Redis).
        ok = expected - 5.0 <= actual <= expected + 1e-6
    if not ok:
        where = "" if exact else " (or a little less: real time passes)"
        raise AssertionError(f"{what}: expected {expected!r} s{where}, got {actual!r} s")


def _unique(kind: str) -> str:
    return f"contract-{kind}-{uuid.uuid4().hex}"


# -- the harness every check runs with ----------------------------------------------------------


class _Harness:
    """What a check gets: the store (async view), a way to let time pass, and the knobs."""

    __slots__ = ("advance", "exact", "short", "store")

    def __init__(
        self,
        store: AsyncBreakerStore,
        advance: Callable[[float], Awaitable[None]],
        *,
        exact: bool,
        short: float,
    ) -> None:
        self.store = store
        self.advance = advance
        self.exact = exact
        self.short = short

    def spec(self, **changes: Any) -> BreakerSpec:
        """A count-window spec (10 calls, minimum 4, rate 0.5, one long probe), changed."""
        values: dict[str, Any] = {
            "window": "count",
            "size": 10,
            "buckets": 1,
            "failure_rate": 0.5,
            "slow_call_rate": 2.0,
            "minimum_calls": 4,
            "open_for": (LONG,),
            "probes": 1,
            "probe_lease": LONG,
        }
        values.update(changes)
        return BreakerSpec(**values)

    def expect(
        self,
        shared: SharedBreakerState,
        state: BreakerState,
        generation: int,
        what: str,
        *,
        retry_after: float | None = None,
        opens: int | None = None,
        calls: int | None = None,
        failures: int | None = None,
        slow: int | None = None,
    ) -> None:
        """Check *shared* field by field; ``None`` skips a field."""
        _expect(state, shared.state, f"{what}: state")
        _expect(generation, shared.generation, f"{what}: generation")
        for field, value in (("opens", opens), ("calls", calls), ("failures", failures)):
            if value is not None:
                _expect(value, getattr(shared, field), f"{what}: {field}")
        if slow is not None:
            _expect(slow, shared.slow, f"{what}: slow")
        if retry_after is not None:
            if retry_after == 0.0:
                _expect(0.0, shared.retry_after, f"{what}: retry_after")
            else:
                _expect_duration(
                    retry_after, shared.retry_after, f"{what}: retry_after", exact=self.exact
                )

    async def trip(self, name: str, spec: BreakerSpec, generation: int = 0) -> SharedBreakerState:
        """Record enough failures to open a closed breaker of *spec* (minimum calls, all failed)."""
        shared = await self.store.record(
            name, spec, generation, failures=max(spec.minimum_calls, 1)
        )
        self.expect(shared, OPEN, generation + 1, "tripped by failures", calls=0)
        return shared

    async def half_open(self, name: str, spec: BreakerSpec) -> tuple[SharedBreakerState, str]:
        """Trip a fresh breaker, wait out its first open_for, and take the first probe."""
        await self.trip(name, spec)
        await self.advance(spec.open_for[0])
        owner = _unique("owner")
        shared, granted = await self.store.probe(name, spec, owner)
        self.expect(shared, HALF_OPEN, 2, "first probe after open_for", opens=1)
        _expect(True, granted, "first probe after open_for: granted")
        return shared, owner


if TYPE_CHECKING:
    _Check = Callable[[_Harness], Coroutine[Any, Any, None]]


# -- the checks ---------------------------------------------------------------------------------


async def _unknown_name_reads_closed(h: _Harness) -> None:
    spec = h.spec()
    shared = await h.store.read(_unique("breaker"), spec)
    h.expect(shared, CLOSED, 0, "read of an unknown name", retry_after=0.0, opens=0, calls=0)
    _expect(0, shared.failures, "read of an unknown name: failures")
    _expect(0, shared.slow, "read of an unknown name: slow")


async def _closed_breaker_grants_no_probe(h: _Harness) -> None:
    spec, name = h.spec(), _unique("breaker")
    shared, granted = await h.store.probe(name, spec, "someone")
    h.expect(shared, CLOSED, 0, "probe of a closed breaker")
    _expect(False, granted, "probe of a closed breaker: granted")


async def _record_below_minimum_does_not_trip(h: _Harness) -> None:
    spec, name = h.spec(minimum_calls=4), _unique("breaker")
    shared = await h.store.record(name, spec, 0, failures=3)
    h.expect(shared, CLOSED, 0, "3 failures, minimum 4", calls=3, failures=3)
    shared = await h.store.read(name, spec)
    h.expect(shared, CLOSED, 0, "read after 3 failures", calls=3, failures=3, slow=0)


async def _failure_rate_trips(h: _Harness, spec: BreakerSpec) -> None:
    name = _unique("breaker")
    shared = await h.store.record(name, spec, 0, successes=3, failures=1)
    h.expect(shared, CLOSED, 0, "1 failure in 4 calls, rate 0.5", calls=4, failures=1)
    shared = await h.store.record(name, spec, 0, failures=1)
    h.expect(shared, CLOSED, 0, "2 failures in 5 calls, rate 0.5", calls=5, failures=2)
    shared = await h.store.record(name, spec, 0, failures=1)
    h.expect(
        shared,
        OPEN,
        1,
        "3 failures in 6 calls, rate 0.5",
        retry_after=spec.open_for[0],
        opens=1,
        calls=0,
        failures=0,
        slow=0,
    )


async def _trips_at_failure_rate_count_window(h: _Harness) -> None:
    await _failure_rate_trips(h, h.spec())


async def _trips_at_failure_rate_time_window(h: _Harness) -> None:
    await _failure_rate_trips(h, h.spec(window="time", size=LONG, buckets=6))


async def _slow_rate_trips(h: _Harness, spec: BreakerSpec) -> None:
    name = _unique("breaker")
    shared = await h.store.record(name, spec, 0, successes=2, slow_successes=1)
    h.expect(shared, CLOSED, 0, "1 slow call in 3", calls=3, failures=0, slow=1)
    # A slow failure is both: 2 slow in 4 reaches 0.5, while 1 failure in 4 stays under 1.0.
    shared = await h.store.record(name, spec, 0, slow_failures=1)
    h.expect(shared, OPEN, 1, "2 slow calls in 4, rate 0.5", opens=1, calls=0, slow=0)


async def _trips_at_slow_call_rate_count_window(h: _Harness) -> None:
    await _slow_rate_trips(h, h.spec(failure_rate=1.0, slow_call_rate=0.5))


async def _trips_at_slow_call_rate_time_window(h: _Harness) -> None:
    spec = h.spec(window="time", size=LONG, buckets=6, failure_rate=1.0, slow_call_rate=0.5)
    await _slow_rate_trips(h, spec)


async def _stale_generation_is_dropped(h: _Harness) -> None:
    spec, name = h.spec(), _unique("breaker")
    await h.trip(name, spec)
    shared = await h.store.record(name, spec, 0, failures=10)
    h.expect(shared, OPEN, 1, "generation-0 failures after the trip", opens=1, calls=0)
    shared = await h.store.force(name, spec, "closed")
    h.expect(shared, CLOSED, 2, "reset", opens=0, calls=0)
    for stale in (1, 3):
        shared = await h.store.record(name, spec, stale, failures=10)
        h.expect(shared, CLOSED, 2, f"failures for generation {stale} at 2", calls=0)
    shared = await h.store.record(name, spec, 2, successes=1, failures=1)
    h.expect(shared, CLOSED, 2, "outcomes for the current generation", calls=2, failures=1)


async def _counts_are_dropped_unless_closed(h: _Harness) -> None:
    spec, name = h.spec(), _unique("breaker")
    await h.trip(name, spec)
    shared = await h.store.record(name, spec, 1, failures=3, successes=2)
    h.expect(shared, OPEN, 1, "outcomes sent to an open breaker", opens=1, calls=0, failures=0)


async def _open_refuses_probes_until_open_for(h: _Harness) -> None:
    spec, name = h.spec(), _unique("breaker")
    await h.trip(name, spec)
    shared, granted = await h.store.probe(name, spec, "early")
    h.expect(shared, OPEN, 1, "probe right after the trip", retry_after=LONG, opens=1)
    _expect(False, granted, "probe right after the trip: granted")
    if h.exact:
        await h.advance(LONG - h.short)
        shared, granted = await h.store.probe(name, spec, "early")
        h.expect(shared, OPEN, 1, "probe just before open_for", retry_after=h.short)
        _expect(False, granted, "probe just before open_for: granted")


async def _open_becomes_half_open_after_open_for(h: _Harness) -> None:
    spec, name = h.spec(open_for=(h.short,)), _unique("breaker")
    await h.trip(name, spec)
    await h.advance(h.short)
    shared, granted = await h.store.probe(name, spec, "first")
    # Its one slot is now taken: the next probe may come when the lease runs out.
    h.expect(shared, HALF_OPEN, 2, "probe after open_for", retry_after=LONG, opens=1, calls=0)
    _expect(True, granted, "probe after open_for: granted")
    shared = await h.store.read(name, spec)
    h.expect(shared, HALF_OPEN, 2, "read after the first probe", retry_after=LONG)


async def _probes_are_granted_up_to_the_limit(h: _Harness) -> None:
    spec, name = h.spec(open_for=(h.short,), probes=3), _unique("breaker")
    shared, _ = await h.half_open(name, spec)
    h.expect(shared, HALF_OPEN, 2, "1 of 3 probe slots taken", retry_after=0.0)
    shared, granted = await h.store.probe(name, spec, "second")
    _expect(True, granted, "second of 3 probes: granted")
    h.expect(shared, HALF_OPEN, 2, "2 of 3 probe slots taken", retry_after=0.0)
    shared, granted = await h.store.probe(name, spec, "third")
    _expect(True, granted, "third of 3 probes: granted")
    h.expect(shared, HALF_OPEN, 2, "3 of 3 probe slots taken", retry_after=LONG)
    for owner in ("fourth", "second"):
        shared, granted = await h.store.probe(name, spec, owner)
        _expect(False, granted, f"probe by {owner!r} with every slot taken: granted")
        h.expect(shared, HALF_OPEN, 2, "every slot taken", retry_after=LONG, opens=1)


async def _expired_lease_is_granted_again(h: _Harness) -> None:
    spec = h.spec(open_for=(h.short,), probe_lease=h.short)
    name = _unique("breaker")
    _, first = await h.half_open(name, spec)
    await h.advance(h.short)
    shared, granted = await h.store.probe(name, spec, "second")
    _expect(True, granted, "probe after the first lease ran out: granted")
    h.expect(shared, HALF_OPEN, 2, "slot handed over")
    # The first owner's late verdict must not close (or re-open) the breaker for the second.
    for verdict in (True, False):
        shared = await h.store.settle(name, spec, first, 2, verdict)
        h.expect(shared, HALF_OPEN, 2, f"settle({verdict}) by the owner whose lease ran out")
    shared = await h.store.settle(name, spec, "second", 2, True)
    h.expect(shared, CLOSED, 3, "success by the slot's current owner", opens=0)


async def _settle_after_lease_expiry_does_not_count(h: _Harness) -> None:
    spec = h.spec(open_for=(h.short,), probe_lease=h.short)
    name = _unique("breaker")
    _, first = await h.half_open(name, spec)
    await h.advance(h.short)
    shared = await h.store.settle(name, spec, first, 2, True)
    h.expect(shared, HALF_OPEN, 2, "a success reported after its lease ran out", opens=1)
    shared, granted = await h.store.probe(name, spec, "next")
    _expect(True, granted, "probe after the expired slot was settled: granted")


async def _failed_probe_reopens_with_the_next_open_for(h: _Harness) -> None:
    spec = h.spec(open_for=(h.short, LONG))
    name = _unique("breaker")
    _, owner = await h.half_open(name, spec)
    shared = await h.store.settle(name, spec, owner, 2, False)
    h.expect(shared, OPEN, 3, "failed probe", retry_after=LONG, opens=2, calls=0)
    shared, granted = await h.store.probe(name, spec, "early")
    _expect(False, granted, "probe right after the re-opening: granted")
    h.expect(shared, OPEN, 3, "probe right after the re-opening", retry_after=LONG)
    if h.exact:
        # The last open_for repeats.
        await h.advance(LONG)
        shared, granted = await h.store.probe(name, spec, "again")
        _expect(True, granted, "probe after the second open_for: granted")
        h.expect(shared, HALF_OPEN, 4, "after the second open_for", opens=2)
        shared = await h.store.settle(name, spec, "again", 4, False)
        h.expect(shared, OPEN, 5, "third opening", retry_after=LONG, opens=3)


async def _successful_probes_close(h: _Harness) -> None:
    spec = h.spec(open_for=(h.short,), probes=2)
    name = _unique("breaker")
    _, first = await h.half_open(name, spec)
    shared, granted = await h.store.probe(name, spec, "second")
    _expect(True, granted, "second probe: granted")
    shared = await h.store.settle(name, spec, first, 2, True)
    h.expect(shared, HALF_OPEN, 2, "1 of 2 probes succeeded", retry_after=0.0, opens=1)
    # The success freed its slot.
    shared, granted = await h.store.probe(name, spec, "third")
    _expect(True, granted, "probe into the freed slot: granted")
    shared = await h.store.settle(name, spec, "third", 2, True)
    h.expect(
        shared, CLOSED, 3, "2 of 2 probes succeeded", retry_after=0.0, opens=0, calls=0, slow=0
    )
    shared = await h.store.settle(name, spec, "second", 2, False)
    h.expect(shared, CLOSED, 3, "a late failure from the half-open generation", opens=0)
    shared = await h.store.record(name, spec, 3, successes=1, failures=1)
    h.expect(shared, CLOSED, 3, "outcomes after closing", calls=2, failures=1)


async def _inconclusive_settle_only_frees_the_slot(h: _Harness) -> None:
    spec = h.spec(open_for=(h.short,), probes=1)
    name = _unique("breaker")
    _, first = await h.half_open(name, spec)
    shared, granted = await h.store.probe(name, spec, "second")
    _expect(False, granted, "probe while the only slot is taken: granted")
    shared = await h.store.settle(name, spec, first, 2, None)
    h.expect(shared, HALF_OPEN, 2, "settle(None)", retry_after=0.0, opens=1)
    shared, granted = await h.store.probe(name, spec, "second")
    _expect(True, granted, "probe after settle(None): granted")
    shared = await h.store.settle(name, spec, "second", 2, True)
    h.expect(shared, CLOSED, 3, "the one success that counted", opens=0)


async def _settle_by_stranger_or_old_generation_is_ignored(h: _Harness) -> None:
    spec = h.spec(open_for=(h.short,), probes=1)
    name = _unique("breaker")
    _, owner = await h.half_open(name, spec)
    shared = await h.store.settle(name, spec, "stranger", 2, False)
    h.expect(shared, HALF_OPEN, 2, "failure reported by a non-owner", opens=1)
    shared = await h.store.settle(name, spec, owner, 1, False)
    h.expect(shared, HALF_OPEN, 2, "failure reported for generation 1", opens=1)
    shared = await h.store.settle(name, spec, owner, 2, True)
    h.expect(shared, CLOSED, 3, "the owner's success", opens=0)


async def _isolation_holds_until_reset(h: _Harness) -> None:
    spec = h.spec(open_for=(h.short,))
    name = _unique("breaker")
    await h.trip(name, spec)
    shared = await h.store.force(name, spec, "isolated")
    h.expect(shared, ISOLATED, 2, "isolate an open breaker", opens=1, calls=0)
    await h.advance(h.short)
    shared, granted = await h.store.probe(name, spec, "prober")
    _expect(False, granted, "probe of an isolated breaker: granted")
    h.expect(shared, ISOLATED, 2, "probe after open_for while isolated")
    shared = await h.store.record(name, spec, 2, successes=5)
    h.expect(shared, ISOLATED, 2, "outcomes sent to an isolated breaker", calls=0)
    shared = await h.store.force(name, spec, "closed")
    h.expect(shared, CLOSED, 3, "reset", retry_after=0.0, opens=0, calls=0)
    shared = await h.store.force(name, spec, "isolated")
    h.expect(shared, ISOLATED, 4, "isolate a closed breaker")
    shared = await h.store.read(name, spec)
    h.expect(shared, ISOLATED, 4, "read of an isolated breaker")


async def _reset_closes_with_an_empty_window(h: _Harness) -> None:
    spec, name = h.spec(), _unique("breaker")
    shared = await h.store.record(name, spec, 0, successes=2, failures=1)
    h.expect(shared, CLOSED, 0, "before the reset", calls=3, failures=1)
    shared = await h.store.force(name, spec, "closed")
    h.expect(shared, CLOSED, 1, "reset of a closed breaker", opens=0, calls=0, failures=0)
    await h.trip(name, spec, 1)
    shared = await h.store.force(name, spec, "closed")
    h.expect(shared, CLOSED, 3, "reset of an open breaker", retry_after=0.0, opens=0, calls=0)
    shared = await h.store.record(name, spec, 3, failures=1)
    h.expect(shared, CLOSED, 3, "outcomes after the reset", calls=1, failures=1)


async def _count_window_forgets_the_oldest(h: _Harness) -> None:
    # Trips only when every call in the window failed.
    spec = h.spec(size=4, minimum_calls=4, failure_rate=1.0)
    name = _unique("breaker")
    steps: list[tuple[dict[str, int], int, int]] = [
        ({"failures": 1}, 1, 1),
        ({"successes": 3}, 4, 1),
        ({"successes": 1}, 4, 0),  # the failure was the oldest of the 5
        ({"failures": 2}, 4, 2),
        ({"successes": 2}, 4, 2),
        ({"successes": 2}, 4, 0),
        ({"successes": 9}, 4, 0),  # more than the window: only the last 4 count
        ({"failures": 3}, 4, 3),
    ]
    for counts, calls, failures in steps:
        shared = await h.store.record(name, spec, 0, **counts)
        h.expect(shared, CLOSED, 0, f"after {counts}", calls=calls, failures=failures)
    shared = await h.store.record(name, spec, 0, failures=1)
    h.expect(shared, OPEN, 1, "4 failures in the last 4 calls", opens=1)


async def _time_window_ages_out(h: _Harness) -> None:
    span = 2 * h.short
    spec = h.spec(window="time", size=span, buckets=2, minimum_calls=100)
    name = _unique("breaker")
    shared = await h.store.record(name, spec, 0, failures=2, slow_successes=1)
    h.expect(shared, CLOSED, 0, "outcomes in the window", calls=3, failures=2, slow=1)
    await h.advance(span)
    shared = await h.store.read(name, spec)
    h.expect(shared, CLOSED, 0, "read a span later", calls=0, failures=0, slow=0)
    shared = await h.store.record(name, spec, 0, successes=1)
    h.expect(shared, CLOSED, 0, "a new outcome after aging", calls=1, failures=0, slow=0)


async def _new_spec_starts_afresh(h: _Harness) -> None:
    spec, name = h.spec(), _unique("breaker")
    await h.trip(name, spec)
    other = h.spec(failure_rate=0.75)
    shared = await h.store.read(name, other)
    h.expect(shared, CLOSED, 2, "read with another spec", retry_after=0.0, opens=0, calls=0)
    shared = await h.store.record(name, other, 1, failures=5)
    h.expect(shared, CLOSED, 2, "outcomes from the old configuration", calls=0)
    shared = await h.store.record(name, other, 2, failures=1)
    h.expect(shared, CLOSED, 2, "outcomes under the new spec", calls=1, failures=1)
    shared = await h.store.read(name, spec)
    h.expect(shared, CLOSED, 3, "back to the first spec", calls=0)


async def _names_are_independent(h: _Harness) -> None:
    spec, tripped, other = h.spec(), _unique("breaker"), _unique("breaker")
    await h.store.record(other, spec, 0, successes=1)
    await h.trip(tripped, spec)
    shared = await h.store.read(other, spec)
    h.expect(shared, CLOSED, 0, "another name after a trip", opens=0, calls=1)


# -- the test classes ---------------------------------------------------------------------------


class _BreakerChecks:
    """The ``test_*`` methods, written once for both suites."""

    def _check(self, check: _Check) -> None:
        raise NotImplementedError

    def test_unknown_name_reads_closed(self) -> None:
        """A name never seen reads closed, generation 0, with an empty window."""
        self._check(_unknown_name_reads_closed)

    def test_closed_breaker_grants_no_probe(self) -> None:
        """probe() on a closed breaker grants nothing: callers just call."""
        self._check(_closed_breaker_grants_no_probe)

    def test_record_below_minimum_does_not_trip(self) -> None:
        """Failures below minimum_calls are counted but do not trip."""
        self._check(_record_below_minimum_does_not_trip)

    def test_trips_at_failure_rate_count_window(self) -> None:
        """A count window trips when the failure rate reaches the threshold, not before."""
        self._check(_trips_at_failure_rate_count_window)

    def test_trips_at_failure_rate_time_window(self) -> None:
        """A time window trips when the failure rate reaches the threshold, not before."""
        self._check(_trips_at_failure_rate_time_window)

    def test_trips_at_slow_call_rate_count_window(self) -> None:
        """A count window trips on the slow-call rate; a slow failure counts as both."""
        self._check(_trips_at_slow_call_rate_count_window)

    def test_trips_at_slow_call_rate_time_window(self) -> None:
        """A time window trips on the slow-call rate; a slow failure counts as both."""
        self._check(_trips_at_slow_call_rate_time_window)

    def test_stale_generation_is_dropped(self) -> None:
        """Outcomes for another generation change nothing."""
        self._check(_stale_generation_is_dropped)

    def test_counts_are_dropped_unless_closed(self) -> None:
        """Outcomes sent to an open breaker, even for its own generation, are dropped."""
        self._check(_counts_are_dropped_unless_closed)

    def test_open_refuses_probes_until_open_for(self) -> None:
        """An open breaker grants no probe before open_for is over."""
        self._check(_open_refuses_probes_until_open_for)

    def test_open_becomes_half_open_after_open_for(self) -> None:
        """After open_for the next probe moves the breaker to half-open (generation + 1)."""
        self._check(_open_becomes_half_open_after_open_for)

    def test_probes_are_granted_up_to_the_limit(self) -> None:
        """Half-open grants exactly spec.probes slots, then refuses with the lease as retry_after."""
        self._check(_probes_are_granted_up_to_the_limit)

    def test_expired_lease_is_granted_again(self) -> None:
        """A slot whose lease ran out goes to the next prober; the old owner's settle is ignored."""
        self._check(_expired_lease_is_granted_again)

    def test_settle_after_lease_expiry_does_not_count(self) -> None:
        """A success settled after its lease ran out frees the slot but does not count."""
        self._check(_settle_after_lease_expiry_does_not_count)

    def test_failed_probe_reopens_with_the_next_open_for(self) -> None:
        """A failed probe re-opens for the next open_for (the last one repeats)."""
        self._check(_failed_probe_reopens_with_the_next_open_for)

    def test_successful_probes_close(self) -> None:
        """spec.probes successes close the breaker: generation + 1, opens 0, window empty."""
        self._check(_successful_probes_close)

    def test_inconclusive_settle_only_frees_the_slot(self) -> None:
        """settle(None) frees the slot and counts as nothing."""
        self._check(_inconclusive_settle_only_frees_the_slot)

    def test_settle_by_stranger_or_old_generation_is_ignored(self) -> None:
        """Only the slot's owner, in the slot's generation, settles it."""
        self._check(_settle_by_stranger_or_old_generation_is_ignored)

    def test_isolation_holds_until_reset(self) -> None:
        """force('isolated') holds past open_for, refuses probes and outcomes, until reset."""
        self._check(_isolation_holds_until_reset)

    def test_reset_closes_with_an_empty_window(self) -> None:
        """force('closed') closes with an empty window and opens 0, bumping the generation."""
        self._check(_reset_closes_with_an_empty_window)

    def test_count_window_forgets_the_oldest(self) -> None:
        """A count window holds the last size outcomes: older ones are forgotten."""
        self._check(_count_window_forgets_the_oldest)

    def test_time_window_ages_out(self) -> None:
        """A time window forgets outcomes once its span has passed."""
        self._check(_time_window_ages_out)

    def test_new_spec_starts_afresh(self) -> None:
        """Another spec under the same name starts closed and empty, generation + 1."""
        self._check(_new_spec_starts_afresh)

    def test_names_are_independent(self) -> None:
        """Breakers of different names share nothing."""
        self._check(_names_are_independent)


class _SyncBreakerView:
    """A sync store seen through the async Protocol; its coroutines never suspend."""

    __slots__ = ("sync",)

    def __init__(self, store: BreakerStore) -> None:
        self.sync = store

    async def record(
        self,
        name: str,
        spec: BreakerSpec,
        generation: int,
        *,
        successes: int = 0,
        failures: int = 0,
        slow_successes: int = 0,
        slow_failures: int = 0,
    ) -> SharedBreakerState:
        return self.sync.record(
            name,
            spec,
            generation,
            successes=successes,
            failures=failures,
            slow_successes=slow_successes,
            slow_failures=slow_failures,
        )

    async def probe(
        self, name: str, spec: BreakerSpec, owner: str
    ) -> tuple[SharedBreakerState, bool]:
        return self.sync.probe(name, spec, owner)

    async def settle(
        self, name: str, spec: BreakerSpec, owner: str, generation: int, success: bool | None
    ) -> SharedBreakerState:
        return self.sync.settle(name, spec, owner, generation, success)

    async def force(
        self, name: str, spec: BreakerSpec, state: Literal["isolated", "closed"]
    ) -> SharedBreakerState:
        return self.sync.force(name, spec, state)

    async def read(self, name: str, spec: BreakerSpec) -> SharedBreakerState:
        return self.sync.read(name, spec)


class BreakerStoreContract(_BreakerChecks):
    """The conformance suite for a :class:`~invresilience.typing.BreakerStore`.

    Subclass it as ``Test...`` and implement :meth:`make_store`; pytest runs the
    inherited ``test_*`` methods, each on a fresh store (and fresh breaker names).

    Attributes:
        exact_clock: ``True`` when :meth:`advance` moves the store's clock exactly (a
            :class:`~invresilience.testing.ManualClock`): durations are then checked to
            the last digit and a few boundaries are checked too.
        short: The short durations (open_for, probe lease, time-window span) the suite
            waits out, in seconds. On a real clock the suite waits about 15 of them; raise
            it for a store slower than a few milliseconds per operation. The default,
            0.125, is a binary fraction, so exact clocks add it up without rounding.

    .. versionadded:: 0.1.0
    """

    exact_clock: ClassVar[bool] = False
    short: ClassVar[float] = 0.125

    def make_store(self) -> BreakerStore:
        """A store for one test. Use an autouse fixture to hand it what it needs."""
        raise NotImplementedError

    def close_store(self, store: BreakerStore) -> None:
        """Release *store* after its test (close a client); does nothing by default."""

    def advance(self, seconds: float) -> None:
        """Let at least *seconds* pass on the store's clock; by default sleeps (plus 10 ms)."""
        SYSTEM_CLOCK.sleep(seconds + 0.01)

    def _check(self, check: _Check) -> None:
        store = self.make_store()
        try:

            async def advance(seconds: float) -> None:
                self.advance(seconds)

            harness = _Harness(
                _SyncBreakerView(store), advance, exact=self.exact_clock, short=self.short
            )
            _run_now(check(harness))
        finally:
            self.close_store(store)


class AsyncBreakerStoreContract(_BreakerChecks):
    """The conformance suite for an :class:`~invresilience.typing.AsyncBreakerStore`.

    Like :class:`BreakerStoreContract`, with coroutine hooks. Each test runs in its own
    event loop (``asyncio.run``), and :meth:`make_store` is awaited inside it, so a client
    bound to a loop can be created there; no pytest plugin is needed.

    .. versionadded:: 0.1.0
    """

    exact_clock: ClassVar[bool] = False
    short: ClassVar[float] = 0.125

    async def make_store(self) -> AsyncBreakerStore:
        """A store for one test, made inside the test's event loop."""
        raise NotImplementedError

    async def close_store(self, store: AsyncBreakerStore) -> None:
        """Release *store* after its test; does nothing by default."""

    async def advance(self, seconds: float) -> None:
        """Let at least *seconds* pass on the store's clock; by default sleeps (plus 10 ms)."""
        await asyncio.sleep(seconds + 0.01)

    def _check(self, check: _Check) -> None:
        async def main() -> None:
            store = await self.make_store()
            try:
                harness = _Harness(store, self.advance, exact=self.exact_clock, short=self.short)
                await check(harness)
            finally:
                await self.close_store(store)

        asyncio.run(main())
