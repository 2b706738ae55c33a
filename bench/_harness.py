"""A small, stdlib-only timing harness for per-call overhead.

Method, in short (``docs/performance.md`` has the long form):

- every case is a zero-argument callable (``sync``) or coroutine function (``async``),
  timed as ``for _ in range(n): fn()`` (or ``await fn()`` inside one coroutine) with
  :func:`time.perf_counter_ns`;
- ``n`` is calibrated per case so that one repeat takes about ``target`` seconds;
- repeats are interleaved round-robin over all cases (the order rotates each repeat), so
  the noise of a shared machine hits every library alike;
- the garbage collector is off while a loop runs and collected between loops, as
  :mod:`timeit` does;
- a case's result is the median over repeats; "added" and "ratio" are medians of the
  per-repeat differences and quotients against the baseline timed in the same repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from types import CodeType, FrameType

__all__ = ["BASELINE", "Budget", "Case", "Gap", "Mode", "Result", "Runner", "count_calls"]

Mode = Literal["sync", "async"]

BASELINE = "bare"


@dataclass(eq=False)
class Case:
    """One thing to time.

    Attributes:
        scenario: What the call does, e.g. ``"success"``.
        mode: ``"sync"`` (``fn()``) or ``"async"`` (``await fn()``).
        library: Who wraps the call; :data:`BASELINE` for the unwrapped baseline.
        fn: The zero-argument callable (sync) or coroutine function (async) to time.
        own_code: The code object of the undecorated target: its frames are the work
            itself, not overhead, when counting Python calls.
        context: Entered around every timed loop and call count of this case (e.g. to
            stub out a sleep).
    """

    scenario: str
    mode: Mode
    library: str
    fn: Callable[[], Any]
    own_code: CodeType
    context: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
    loops: int = 0
    samples: list[float] = field(default_factory=list)  # ns per call, one per repeat

    @property
    def label(self) -> str:
        return f"{self.scenario}/{self.mode}/{self.library}"


@dataclass(frozen=True)
class Result:
    """A case's figures, relative to the baseline of its scenario and mode."""

    scenario: str
    mode: Mode
    library: str
    loops: int
    us_per_call: float
    us_added: float
    ratio: float
    spread_us: float  # half the interquartile range of the per-call times
    calls_added: int  # Python frames entered per call besides the target's own
    samples_ns: tuple[float, ...]


def _time_sync(fn: Callable[[], Any], loops: int) -> int:
    iterations = range(loops)
    start = time.perf_counter_ns()
    for _ in iterations:
        fn()
    return time.perf_counter_ns() - start


async def _time_async(fn: Callable[[], Any], loops: int) -> int:
    iterations = range(loops)
    start = time.perf_counter_ns()
    for _ in iterations:
        await fn()
    return time.perf_counter_ns() - start


def count_calls(case: Case, loop: asyncio.AbstractEventLoop) -> int:
    """Python frames entered by one call of *case*, minus those of the target itself.

    Counts the ``"call"`` events of :func:`sys.setprofile` (C functions raise
    ``"c_call"`` instead and are not counted; every resumption of a generator or
    coroutine is counted, as it enters a frame again).
    """
    total = own = 0
    own_code = case.own_code

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal total, own
        if event == "call":
            total += 1
            if frame.f_code is own_code:
                own += 1

    async def once() -> None:
        sys.setprofile(profile)
        try:
            await case.fn()
        finally:
            sys.setprofile(None)

    with case.context():
        if case.mode == "sync":
            sys.setprofile(profile)
            try:
                case.fn()
            finally:
                sys.setprofile(None)
        else:
            loop.run_until_complete(once())
    return total - own


class Runner:
    """Times a list of cases, interleaved, in one event loop for the async ones."""

    def __init__(self, *, repeats: int, target: float, progress: bool = True) -> None:
        self.repeats = repeats
        self.target_ns = target * 1e9
        self.progress = progress
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()

    def _note(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def measure(self, case: Case, loops: int) -> int:
        """Nanoseconds for *loops* calls of *case*, the collector off."""
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        try:
            with case.context():
                if case.mode == "sync":
                    return _time_sync(case.fn, loops)
                return self.loop.run_until_complete(_time_async(case.fn, loops))
        finally:
            if enabled:
                gc.enable()

    def calibrate(self, case: Case) -> int:
        """The loop count that makes one repeat of *case* last about the target."""
        loops = 1
        while True:
            elapsed = self.measure(case, loops)
            if elapsed >= self.target_ns / 4:
                break
            # Grow fast while the loop is too short to time, then extrapolate.
            factor = 10.0 if elapsed < 1e6 else self.target_ns / 2 / elapsed
            loops = max(loops + 1, math.ceil(loops * factor))
        return max(1, round(loops * self.target_ns / elapsed))

    def run(self, cases: list[Case]) -> None:
        """Calibrate (which warms up) every case, then time them round-robin."""
        self._note(f"calibrating {len(cases)} cases ...")
        for case in cases:
            case.loops = self.calibrate(case)
            case.samples.clear()
        for repeat in range(self.repeats):
            self._note(f"repeat {repeat + 1}/{self.repeats}")
            shift = repeat % len(cases)
            for case in cases[shift:] + cases[:shift]:
                case.samples.append(self.measure(case, case.loops) / case.loops)

    def results(self, cases: list[Case]) -> list[Result]:
        """Medians per case against the baseline of the same scenario and mode."""
        baselines = {(c.scenario, c.mode): c for c in cases if c.library == BASELINE}
        results = []
        for case in cases:
            base = baselines[case.scenario, case.mode]
            pairs = list(zip(case.samples, base.samples, strict=True))
            quartiles = statistics.quantiles(case.samples, n=4) if len(pairs) > 1 else [0, 0, 0]
            results.append(
                Result(
                    scenario=case.scenario,
                    mode=case.mode,
                    library=case.library,
                    loops=case.loops,
                    us_per_call=statistics.median(case.samples) / 1e3,
                    us_added=statistics.median(ours - theirs for ours, theirs in pairs) / 1e3,
                    ratio=statistics.median(ours / theirs for ours, theirs in pairs),
                    spread_us=(quartiles[2] - quartiles[0]) / 2 / 1e3,
                    calls_added=count_calls(case, self.loop),
                    samples_ns=tuple(case.samples),
                )
            )
        return results


# -- budgets and gaps, shared by the breaker and admission benchmarks -------------------------

Metric = Literal["us_added", "us_per_call"]

# Below this the difference between two medians is noise on a shared VM.
NOISE_US = 0.01


@dataclass(frozen=True)
class Gap:
    """A row that could not be timed, and why (shown in the table instead of the figures)."""

    scenario: str
    mode: Mode
    library: str
    reason: str


@dataclass(frozen=True)
class Budget:
    """A limit on one invresilience row, judged on the time it adds or on its whole time.

    ``metric="us_added"`` judges the median time added over the scenario's baseline and
    compares the anchors by what they add; ``metric="us_per_call"`` judges the median time
    per call, everything included, and compares the anchors by theirs. Rows whose library
    starts with *ours* are invresilience's: only the one named exactly *ours* is judged,
    and none of them is an anchor. *floor*, when set, names the baseline in the verdict
    (for a baseline that is the least the scenario can cost, not a bare call).
    """

    scenario: str
    mode: Mode
    metric: Metric
    limit: float
    ours: str = "invresilience"
    floor: str | None = None

    def verdict(self, results: list[Result]) -> tuple[bool, str]:
        """``(within budget, one line that says so and compares with the anchors)``."""
        rows = {r.library: r for r in results if (r.scenario, r.mode) == (self.scenario, self.mode)}
        ours = rows[self.ours]
        base = rows[BASELINE]
        anchors = [
            row for name, row in rows.items() if name != BASELINE and not name.startswith(self.ours)
        ]
        where = f"{self.scenario}, {self.mode}"
        if self.metric == "us_added":
            value = ours.us_added
            head = f"{where}: {ours.us_added:.2f} µs added (budget ≤ {self.limit:g} µs added)"
            tail = ", ".join(_less_overhead(ours.us_added, a) for a in anchors)
        else:
            value = ours.us_per_call
            head = (
                f"{where}: {ours.us_per_call:.2f} µs per call (budget ≤ {self.limit:g} µs per call)"
            )
            if self.floor is not None:
                head += (
                    f"; the floor, {self.floor}, is {base.us_per_call:.2f} µs on this machine,"
                    f" so invresilience adds {ours.us_added:.2f} µs to it"
                )
            tail = ", ".join(_less_time(ours, a) for a in anchors)
        within = value <= self.limit
        line = f"{'PASS' if within else 'OVER'}  {head}"
        if tail:
            line += f"; invresilience is {tail}"
        return within, line


def _times(ratio: float) -> str:
    return f"{ratio:.1f}×" if ratio < 100 else f"{ratio:.0f}×"


def _less_overhead(ours: float, anchor: Result) -> str:
    theirs = anchor.us_added
    if ours <= NOISE_US:
        return f"≥ {max(theirs, 0.0) / NOISE_US:.0f}× less overhead than {anchor.library}"
    ratio = theirs / ours
    if ratio >= 1:
        return f"{_times(ratio)} less overhead than {anchor.library}"
    inverse = 1 / ratio if ratio > 0 else math.inf
    return f"{_times(inverse)} more overhead than {anchor.library}"


def _less_time(ours: Result, anchor: Result) -> str:
    ratio = anchor.us_per_call / ours.us_per_call
    if ratio >= 1:
        return f"{_times(ratio)} faster than {anchor.library}"
    return f"{_times(1 / ratio)} slower than {anchor.library}"
