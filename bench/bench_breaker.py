"""Circuit breaker overhead: invresilience beside pybreaker, circuitbreaker, purgatory and aiobreaker.

Two scenarios, each sync and async where the library has that API:

``closed``
    a closed breaker guards a function that returns at once; the baseline is the bare
    function. Every call succeeds, so the breakers stay closed.
``open rejection``
    the breaker is open, and each timed call is ``try: guarded() except <rejection>:``
    around a call it rejects, so the time is the whole rejected call, the raise and the
    ``except`` included. The baseline is the floor: the same ``try``/``except`` around a
    one-frame function that raises :class:`ValueError`. Every breaker is opened the way a
    failing dependency opens it -- one failing call through a breaker that trips on the
    first failure and stays open for an hour -- and invresilience also has a row held open
    by :meth:`~invresilience.CircuitBreaker.isolate`.

Run it through ``bench/run.py``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
import inspect
import itertools
import time
from typing import TYPE_CHECKING, Any

from _harness import BASELINE, Budget, Case, Gap, Mode

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from contextlib import AbstractContextManager
    from types import CodeType

__all__ = [
    "BASELINE_LABELS",
    "BUDGETS",
    "GAPS",
    "LIBRARIES",
    "NOTES",
    "OURS",
    "TITLE",
    "build_cases",
    "check_cases",
]

TITLE = "Circuit breakers"
CLOSED = "closed"
REJECTION = "open rejection"
SCENARIOS = (CLOSED, REJECTION)
MODES: tuple[Mode, ...] = ("sync", "async")
OURS = "invresilience"
ISOLATED = f"{OURS} (isolate())"
LIBRARIES = (OURS, "pybreaker", "circuitbreaker", "purgatory", "aiobreaker")
OPEN_FOR = 3600  # seconds: an opened breaker stays open for the whole run
FLOOR = "raise + except (floor)"
BASELINE_LABELS = {REJECTION: FLOOR}

NOTES = (
    (
        "pybreaker has no asyncio API (its `call_async` needs Tornado), so it has sync rows only;"
        " aiobreaker is asyncio-first and is timed async only."
    ),
    (
        "`pybreaker (.call)` is `functools.partial(breaker.call, fn)`: the decorator is the same"
        " call plus one frame."
    ),
    (
        "purgatory raises the same exception object (its open state) on every rejection, so each"
        " rejection adds its frames to that object's traceback and keeps them alive: memory grows"
        " by about 2 KB per rejected call until the breaker closes. The benchmark clears that"
        " traceback between timed loops (outside the timing) so the run's memory stays bounded;"
        " within a loop the growth is timed as it is."
    ),
    (
        "Each library catches its own rejection type: CircuitOpenError, pybreaker's and"
        " circuitbreaker's CircuitBreakerError, purgatory's OpenedState, aiobreaker's"
        " CircuitBreakerError."
    ),
)

GAPS = (
    Gap(CLOSED, "async", "pybreaker", "not timed: no asyncio API (Tornado only)"),
    Gap(REJECTION, "async", "pybreaker", "not timed: no asyncio API (Tornado only)"),
)


def _anchor(module: str) -> Any:
    """Import an anchor by name: mypy need not have it installed, and its types are Any."""
    return importlib.import_module(module)


# -- the targets -----------------------------------------------------------------------------


def ok() -> int:
    return 1


async def aok() -> int:
    return 1


def fail() -> int:
    raise ValueError("down")


async def afail() -> int:
    raise ValueError("down")


def catching(fn: Callable[[], Any], rejection: type[BaseException]) -> Callable[[], bool]:
    """``True`` when calling *fn* raised *rejection*, ``False`` when it returned."""

    def caught() -> bool:
        try:
            fn()
        except rejection:
            return True
        return False

    return caught


def acatching(
    fn: Callable[[], Awaitable[Any]], rejection: type[BaseException]
) -> Callable[[], Awaitable[bool]]:
    """The async twin of :func:`catching`."""

    async def caught() -> bool:
        try:
            await fn()
        except rejection:
            return True
        return False

    return caught


CAUGHT_CODE: CodeType = catching(ok, ValueError).__code__
ACAUGHT_CODE: CodeType = acatching(aok, ValueError).__code__


# -- each library's breaker, closed and open -------------------------------------------------

_names = itertools.count()


def _name(library: str) -> str:
    return f"bench-{library}-{next(_names)}"


class Guards:
    """One library's guarded targets: closed ones, and open ones with their rejection type."""

    def __init__(self) -> None:
        self.closed: dict[tuple[str, Mode], Callable[[], Any]] = {}
        self.open: dict[tuple[str, Mode], tuple[Callable[[], Any], type[BaseException]]] = {}
        self.contexts: dict[str, Callable[[], AbstractContextManager[object]]] = {}


def _trip(guarded_fail: Callable[[], object], run: Callable[[Awaitable[Any]], Any]) -> None:
    """Open a breaker with one failing call (whatever that call raises), sync or async."""
    with contextlib.suppress(Exception):
        outcome = guarded_fail()
        if inspect.isawaitable(outcome):
            run(outcome)


def _targets(mode: Mode) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """The function that returns and the one that raises, for *mode*."""
    return (ok, fail) if mode == "sync" else (aok, afail)


def _invresilience(run: Callable[[Awaitable[Any]], Any]) -> dict[str, Guards]:
    import invresilience as ir

    guards = Guards()
    isolated = Guards()
    for mode in MODES:
        target, failing = _targets(mode)
        guards.closed[CLOSED, mode] = ir.CircuitBreaker(_name(OURS))(target)
        tripped = ir.CircuitBreaker(_name(OURS), minimum_calls=1, open_for=OPEN_FOR)
        _trip(tripped(failing), run)
        guards.open[REJECTION, mode] = (tripped(target), ir.CircuitOpenError)
        held = ir.CircuitBreaker(_name(OURS))
        held.isolate()
        isolated.open[REJECTION, mode] = (held(target), ir.CircuitOpenError)
    return {OURS: guards, ISOLATED: isolated}


def _pybreaker(run: Callable[[Awaitable[Any]], Any]) -> dict[str, Guards]:
    pybreaker = _anchor("pybreaker")
    guards = Guards()
    guards.closed[CLOSED, "sync"] = pybreaker.CircuitBreaker(name=_name("pybreaker"))(ok)
    tripped = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=OPEN_FOR, name=_name("pybreaker"))
    _trip(tripped(fail), run)
    guards.open[REJECTION, "sync"] = (tripped(ok), pybreaker.CircuitBreakerError)
    call = Guards()
    call.closed[CLOSED, "sync"] = functools.partial(
        pybreaker.CircuitBreaker(name=_name("pybreaker")).call, ok
    )
    return {"pybreaker": guards, "pybreaker (.call)": call}


def _circuitbreaker(run: Callable[[Awaitable[Any]], Any]) -> dict[str, Guards]:
    circuitbreaker = _anchor("circuitbreaker")
    guards = Guards()
    for mode in MODES:
        target, failing = _targets(mode)
        guards.closed[CLOSED, mode] = circuitbreaker.circuit(name=_name("circuitbreaker"))(target)
        # circuit(...) with arguments is a CircuitBreaker: both functions share its state.
        tripped = circuitbreaker.circuit(
            failure_threshold=1, recovery_timeout=OPEN_FOR, name=_name("circuitbreaker")
        )
        guarded = tripped(target)
        _trip(tripped(failing), run)
        guards.open[REJECTION, mode] = (guarded, circuitbreaker.CircuitBreakerError)
    return {"circuitbreaker": guards}


def _purgatory(run: Callable[[Awaitable[Any]], Any]) -> dict[str, Guards]:
    purgatory = _anchor("purgatory")
    opened_state = _anchor("purgatory.domain.model").OpenedState
    guards = Guards()
    # The factories keep their state in purgatory's in-memory unit of work (the default).
    sync_factory = purgatory.SyncCircuitBreakerFactory(default_threshold=1, default_ttl=OPEN_FOR)
    async_factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=OPEN_FOR)
    run(async_factory.initialize())
    sync_factory.initialize()
    rejections: list[BaseException] = []
    factories: dict[Mode, Any] = {"sync": sync_factory, "async": async_factory}
    for mode, factory in factories.items():
        target, failing = _targets(mode)
        guards.closed[CLOSED, mode] = factory(_name("purgatory"))(target)
        circuit = _name("purgatory")
        guarded = factory(circuit)(target)
        _trip(factory(circuit)(failing), run)
        try:  # keep the exception object it will raise on every rejection
            outcome = guarded()
            if inspect.isawaitable(outcome):
                run(outcome)
        except opened_state as exc:
            rejections.append(exc)
        guards.open[REJECTION, mode] = (guarded, opened_state)

    @contextlib.contextmanager
    def drop_tracebacks() -> Iterator[None]:
        try:
            yield
        finally:
            for exc in rejections:  # see NOTES: the one exception object is re-raised
                exc.__traceback__ = None

    guards.contexts[REJECTION] = drop_tracebacks
    return {"purgatory": guards}


def _aiobreaker(run: Callable[[Awaitable[Any]], Any]) -> dict[str, Guards]:
    aiobreaker = _anchor("aiobreaker")
    guards = Guards()
    guards.closed[CLOSED, "async"] = aiobreaker.CircuitBreaker(name=_name("aiobreaker"))(aok)
    tripped = aiobreaker.CircuitBreaker(
        fail_max=1, timeout_duration=datetime.timedelta(seconds=OPEN_FOR), name=_name("aiobreaker")
    )
    _trip(tripped(afail), run)
    guards.open[REJECTION, "async"] = (tripped(aok), aiobreaker.CircuitBreakerError)
    return {"aiobreaker": guards}


FACTORIES: dict[str, Callable[[Callable[[Awaitable[Any]], Any]], dict[str, Guards]]] = {
    OURS: _invresilience,
    "pybreaker": _pybreaker,
    "circuitbreaker": _circuitbreaker,
    "purgatory": _purgatory,
    "aiobreaker": _aiobreaker,
}


def _code(fn: Callable[..., Any]) -> CodeType:
    code: CodeType = fn.__code__
    return code


def build_cases(
    run: Callable[[Awaitable[Any]], Any], libraries: tuple[str, ...] = LIBRARIES
) -> tuple[list[Case], list[str]]:
    """Every (scenario, mode, library) case, baselines first; and the libraries skipped.

    *run* runs a coroutine to completion on the event loop that will time the async
    cases (to trip the async breakers on it).
    """
    guards: dict[str, Guards] = {}
    skipped = []
    for name in libraries:
        try:
            guards.update(FACTORIES[name](run))
        except ImportError:
            if name == OURS:  # the rows everything else is compared with
                raise
            skipped.append(name)
    cases = []
    for mode in MODES:
        target = ok if mode == "sync" else aok
        cases.append(Case(CLOSED, mode, BASELINE, target, _code(target)))
        for label, guard in guards.items():
            if (CLOSED, mode) in guard.closed:
                cases.append(Case(CLOSED, mode, label, guard.closed[CLOSED, mode], _code(target)))
    cases.append(Case(REJECTION, "sync", BASELINE, catching(fail, ValueError), CAUGHT_CODE))
    for label, guard in guards.items():
        if (REJECTION, "sync") in guard.open:
            fn, rejection = guard.open[REJECTION, "sync"]
            context = guard.contexts.get(REJECTION, contextlib.nullcontext)
            caught = catching(fn, rejection)
            cases.append(Case(REJECTION, "sync", label, caught, CAUGHT_CODE, context))
    cases.append(Case(REJECTION, "async", BASELINE, acatching(afail, ValueError), ACAUGHT_CODE))
    for label, guard in guards.items():
        if (REJECTION, "async") in guard.open:
            fn, rejection = guard.open[REJECTION, "async"]
            context = guard.contexts.get(REJECTION, contextlib.nullcontext)
            acaught = acatching(fn, rejection)
            cases.append(Case(REJECTION, "async", label, acaught, ACAUGHT_CODE, context))
    return cases, skipped


def check_cases(cases: list[Case], run: Callable[[Awaitable[Any]], Any]) -> list[str]:
    """Problems found by calling every case a few times (an empty list when all is well).

    A closed case must return 1 (the breaker let the call through); an open rejection
    case must return True (the call was rejected, or the floor raised) and stay fast.
    """
    problems = []
    for case in cases:
        expected: object = 1 if case.scenario == CLOSED else True
        for _ in range(3):
            try:
                with case.context():  # not timed: it may wait for an anchor's thread
                    start = time.perf_counter()
                    value = case.fn() if case.mode == "sync" else run(case.fn())
                    elapsed = time.perf_counter() - start
            except Exception as exc:  # noqa: BLE001 - reported, not handled
                problems.append(f"{case.label}: raised {exc!r}")
                break
            if value != expected or type(value) is not type(expected):
                what = "was not rejected" if case.scenario == REJECTION else f"returned {value!r}"
                problems.append(f"{case.label}: {what}")
                break
            if elapsed > 0.02:
                problems.append(f"{case.label}: a call took over 20 ms")
                break
    return problems


BUDGETS = tuple(
    budget
    for mode in MODES
    for budget in (
        Budget(CLOSED, mode, "us_added", 0.3),
        Budget(
            REJECTION,
            mode,
            "us_per_call",
            0.5,
            floor="a try/except around a one-frame function that raises",
        ),
    )
)
