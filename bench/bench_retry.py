"""Retry decorator overhead: invresilience beside tenacity, backoff and stamina.

Two scenarios, each sync and async, every library configured to wait zero seconds:

``success``
    the decorated function returns at once; the baseline is the bare function.
``fail-fail-succeed``
    the function raises :class:`ValueError` twice, then returns (a counter that fails the
    first 2 of every 3 calls, so every decorated call sees exactly that); the baseline is
    a hand-written ``while True: try: return fn() except ValueError: continue`` loop.

Run it through ``bench/run.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from _harness import BASELINE, Case, Mode, Result

if TYPE_CHECKING:
    from types import CodeType

__all__ = ["BUDGETS", "LIBRARIES", "SCENARIOS", "Budget", "build_cases", "check_cases"]

SUCCESS = "success"
FAIL_FAIL_SUCCEED = "fail-fail-succeed"
SCENARIOS = (SUCCESS, FAIL_FAIL_SUCCEED)
MODES: tuple[Mode, ...] = ("sync", "async")
OURS = "invresilience"
LIBRARIES = (OURS, "backoff", "tenacity", "stamina")
ATTEMPTS = 5

SyncFn = Callable[[], int]
AsyncFn = Callable[[], Awaitable[int]]
Decorator = Callable[[Callable[[], Any]], Callable[[], Any]]


# -- the targets -----------------------------------------------------------------------------


def ok() -> int:
    return 1


async def aok() -> int:
    return 1


def flaky() -> SyncFn:
    """A fresh function that raises on the first 2 of every 3 calls and returns the count."""
    calls = 0

    def fail_fail_succeed() -> int:
        nonlocal calls
        calls += 1
        if calls % 3:
            raise ValueError("transient")
        return calls

    return fail_fail_succeed


def aflaky() -> AsyncFn:
    """The async twin of :func:`flaky`."""
    calls = 0

    async def fail_fail_succeed() -> int:
        nonlocal calls
        calls += 1
        if calls % 3:
            raise ValueError("transient")
        return calls

    return fail_fail_succeed


def hand_loop(fn: SyncFn) -> SyncFn:
    """The least a retry can cost: call again on ValueError, nothing else."""

    def retried() -> int:
        while True:
            try:
                return fn()
            except ValueError:
                continue

    return retried


def ahand_loop(fn: AsyncFn) -> AsyncFn:
    """The async twin of :func:`hand_loop`."""

    async def retried() -> int:
        while True:
            try:
                return await fn()
            except ValueError:
                continue

    return retried


# -- each library's idiomatic zero-wait retry on ValueError, 5 attempts ------------------------


def _invresilience() -> Decorator:
    import invresilience as ir

    return ir.RetryPolicy(on=ValueError, attempts=ATTEMPTS, backoff=ir.Backoff.constant(0))


def _backoff() -> Decorator:
    import backoff

    # Sleeps with time.sleep(0) / asyncio.sleep(0) between attempts. By default it logs
    # every retry through the "backoff" logger, which it sets to INFO with a NullHandler:
    # a LogRecord per retry. logger=None turns that off, like invresilience with no listener.
    return backoff.on_exception(
        backoff.constant, ValueError, max_tries=ATTEMPTS, interval=0, jitter=None, logger=None
    )


def _tenacity() -> Decorator:
    import tenacity

    # Sleeps with time.sleep(0) / asyncio.sleep(0) between attempts.
    return tenacity.retry(
        retry=tenacity.retry_if_exception_type(ValueError),
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        wait=tenacity.wait_none(),
    )


def _stamina() -> Decorator:
    import stamina

    # Testing mode (stamina.set_testing) would also zero the waits, but it copies
    # stamina's tenacity settings on every call and caps attempts: explicit zero waits
    # are the fairer production-shaped configuration. The default on-retry hook logs a
    # warning per retry; turned off, like invresilience with no listener registered.
    stamina.instrumentation.set_on_retry_hooks([])
    return stamina.retry(
        on=ValueError, attempts=ATTEMPTS, wait_initial=0, wait_max=0, wait_jitter=0
    )


DECORATORS: dict[str, Callable[[], Decorator]] = {
    OURS: _invresilience,
    "backoff": _backoff,
    "tenacity": _tenacity,
    "stamina": _stamina,
}


def _code(fn: Callable[..., Any]) -> CodeType:
    code: CodeType = fn.__code__
    return code


def _no_sleep(seconds: float) -> None:
    return None


async def _no_asleep(seconds: float, result: Any = None) -> Any:
    return result


@contextlib.contextmanager
def stubbed_sleep() -> Iterator[None]:
    """Make :func:`time.sleep` and :func:`asyncio.sleep` return at once, for this block.

    On Linux ``time.sleep(0)`` still sleeps for the timer slack (50 µs by default) and
    ``asyncio.sleep(0)`` goes once round the event loop: with these stubbed, the
    anchors' rows show what their own code costs.
    """
    patches = ((time, "sleep", _no_sleep), (asyncio, "sleep", _no_asleep))
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, stub in patches:
        setattr(module, name, stub)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


STUBBED = " (sleep stubbed)"


def build_cases(libraries: tuple[str, ...] = LIBRARIES) -> tuple[list[Case], list[str]]:
    """Every (scenario, mode, library) case, baselines first; and the libraries skipped.

    In the fail-fail-succeed scenario, every anchor also gets a row with its sleep(0)
    stubbed out (see :func:`stubbed_sleep`); invresilience does not sleep for a zero delay.
    """
    decorators: dict[str, Decorator] = {}
    skipped = []
    for name in libraries:
        try:
            decorators[name] = DECORATORS[name]()
        except ImportError:
            if name == OURS:  # the rows everything else is compared with
                raise
            skipped.append(name)
    cases = []
    for scenario in SCENARIOS:
        for mode in MODES:
            target: Callable[[], Any]
            if scenario == SUCCESS:
                target = ok if mode == "sync" else aok
                cases.append(Case(scenario, mode, BASELINE, target, _code(target)))
            elif mode == "sync":
                target = flaky()
                cases.append(Case(scenario, mode, BASELINE, hand_loop(target), _code(target)))
            else:
                target = aflaky()
                cases.append(Case(scenario, mode, BASELINE, ahand_loop(target), _code(target)))
            variants: list[tuple[str, Callable[[], AbstractContextManager[object]]]]
            variants = [(name, contextlib.nullcontext) for name in decorators]
            if scenario == FAIL_FAIL_SUCCEED:
                variants += [(name + STUBBED, stubbed_sleep) for name in decorators if name != OURS]
            for label, context in variants:
                if scenario == FAIL_FAIL_SUCCEED:  # a fresh counter for every case
                    target = flaky() if mode == "sync" else aflaky()
                decorate = decorators[label.removesuffix(STUBBED)]
                cases.append(Case(scenario, mode, label, decorate(target), _code(target), context))
    return cases, skipped


def check_cases(cases: list[Case], run: Callable[[Awaitable[Any]], Any]) -> list[str]:
    """Problems found by calling every case a few times (an empty list when all is well).

    Each success call must return 1; each fail-fail-succeed call must take exactly three
    attempts (its result is the next multiple of 3) and must not really sleep.
    """
    problems = []
    for case in cases:
        previous = None
        for _ in range(3):
            start = time.perf_counter()
            try:
                with case.context():
                    value = case.fn() if case.mode == "sync" else run(case.fn())
            except Exception as exc:  # noqa: BLE001 - reported, not handled
                problems.append(f"{case.label}: raised {exc!r}")
                break
            elapsed = time.perf_counter() - start
            if case.scenario == SUCCESS:
                good = value == 1
            else:
                good = value % 3 == 0 and (previous is None or value == previous + 3)
                previous = value
            if not good:
                problems.append(f"{case.label}: returned {value!r}")
                break
            if elapsed > 0.02:
                problems.append(f"{case.label}: a call took {elapsed * 1e3:.0f} ms: it slept")
                break
    return problems


# -- budgets (docs: DESIGN "Performance budgets") ---------------------------------------------

Metric = Literal["us_added", "us_per_call", "calls_added"]


@dataclass(frozen=True)
class Budget:
    """A limit on one of invresilience's figures for one scenario and mode."""

    scenario: str
    mode: Mode
    metric: Metric
    limit: float

    def verdict(self, results: list[Result]) -> tuple[bool, str]:
        """``(within budget, one line that says so and compares with the anchors)``."""
        rows = {r.library: r for r in results if (r.scenario, r.mode) == (self.scenario, self.mode)}
        ours = rows[OURS]
        anchors = [row for name, row in rows.items() if name not in (OURS, BASELINE)]
        # Where the anchors also ran with their sleep(0) stubbed, compare with those only:
        # the smaller, fairer ratios.
        stubbed = [row for row in anchors if row.library.endswith(STUBBED)]
        anchors = stubbed or anchors
        where = f"{self.scenario}, {self.mode}"
        if self.metric == "calls_added":
            value: float = ours.calls_added
            head = f"{where}, Python calls: {ours.calls_added} (budget ≤ {self.limit:g})"
            tail = ", ".join(f"{a.library} {a.calls_added}" for a in anchors)
        else:
            value = ours.us_added if self.metric == "us_added" else ours.us_per_call
            if self.metric == "us_added":
                head = f"{where}: {ours.us_added:.2f} µs added (budget ≤ {self.limit:g} µs added)"
            else:
                head = (
                    f"{where}: {ours.us_per_call:.2f} µs per call, {ours.us_added:.2f} µs added"
                    f" (budget ≤ {self.limit:g} µs per call)"
                )
            tail = ", ".join(_compare(ours.us_added, a) for a in anchors)
        within = value <= self.limit
        status = "PASS" if within else "OVER"
        line = f"{status}  {head}"
        if tail:
            line += f"; {tail}" if self.metric == "calls_added" else f"; invresilience is {tail}"
        return within, line


# Below this the difference between two medians is noise on a shared VM.
_NOISE_US = 0.01


def _compare(ours: float, anchor: Result) -> str:
    theirs = anchor.us_added
    if ours <= _NOISE_US:
        return f"≥ {max(theirs, 0.0) / _NOISE_US:.0f}× less overhead than {anchor.library}"
    ratio = theirs / ours
    if ratio >= 1:
        return f"{_times(ratio)} less overhead than {anchor.library}"
    return f"{_times(1 / ratio if ratio > 0 else float('inf'))} more overhead than {anchor.library}"


def _times(ratio: float) -> str:
    return f"{ratio:.1f}×" if ratio < 100 else f"{ratio:.0f}×"


BUDGETS = tuple(
    budget
    for mode in MODES
    for budget in (
        Budget(SUCCESS, mode, "us_added", 0.5),
        Budget(SUCCESS, mode, "calls_added", 10),
        Budget(FAIL_FAIL_SUCCEED, mode, "us_added", 4.0),
    )
)


def library_versions(libraries: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions (``"missing"`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": sys.version.split()[0]}
    for name in libraries:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "source tree" if name == OURS else "missing"
    return versions
