"""Rate limiter acquire, in memory: invresilience beside aiolimiter, limits and pyrate-limiter.

One scenario, ``acquire``, sync and async: take one permit from an in-memory limiter whose
rate is so high that every call is admitted (the admitted path, the one every call of a
healthy service takes). Each timed call is the acquire itself, called directly:

- invresilience: ``RateLimiter(1e9, burst=10**9).try_acquire()`` (sync) and
  ``await limiter.aacquire()`` (async);
- aiolimiter: ``await AsyncLimiter(1e12, 1).acquire()`` (async only);
- limits: ``FixedWindowRateLimiter(MemoryStorage()).hit(item)`` and the moving window
  twin (sync), with ``item = RateLimitItemPerSecond(10**12)``; the fixed window through
  ``limits.aio`` (async);
- pyrate-limiter: ``Limiter(...).try_acquire("bench", blocking=False)`` (sync) and
  ``await limiter.try_acquire_async("bench", blocking=False)`` (async), with its default
  in-memory bucket (a sliding-window log) and with its GCRA state bucket, the same
  algorithm as invresilience's.

The baseline is a call of a function that does nothing, so "added" is what an acquire
costs over calling a no-op; the budget is judged on the whole time per acquire.

Run it through ``bench/run.py``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import time
from typing import TYPE_CHECKING, Any, TypeAlias

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
    "teardown",
]

TITLE = "Rate limiters"
ACQUIRE = "acquire"
MODES: tuple[Mode, ...] = ("sync", "async")
OURS = "invresilience"
LIBRARIES = (OURS, "aiolimiter", "limits", "pyrate-limiter")
BASELINE_LABELS = {ACQUIRE: "bare (a no-op call)"}
HUGE = 10**12

NOTES = (
    "aiolimiter is asyncio-only: it has async rows only.",
    (
        "limits' moving window keeps one entry per admitted hit for the window (1 s at the"
        " least) and inserts each new one at the front of a list, so a hit costs more the more"
        " hits the window holds: its figure depends on how many calls a timed loop makes, and is"
        " not comparable across machines or with `--quick`. Every timed loop of limits starts"
        " from an empty storage, and waits for the storage's expiry timer thread after the loop,"
        " so that thread does not run inside another case's timing."
    ),
    (
        "limits' async storage schedules an expiry task on the event loop; the benchmark cancels"
        " it after each timed loop, outside the timing, so it does not run inside another case's"
        " timing. Its moving window is not timed async (the same list as the sync one)."
    ),
    (
        "pyrate-limiter's `Limiter(Rate(...))` default bucket is an in-memory sliding-window log;"
        " the `GCRA` row uses `StateBucket([rate], algorithm=GCRA())`. Its leaker thread runs every"
        " 10 s in the background of the whole run."
    ),
)

GAPS = (
    Gap(ACQUIRE, "sync", "aiolimiter", "not timed: asyncio only"),
    Gap(ACQUIRE, "async", "limits (moving window)", "not timed: see the notes"),
)


def _anchor(module: str) -> Any:
    """Import an anchor by name: mypy need not have it installed, and its types are Any."""
    return importlib.import_module(module)


def ok() -> int:
    return 1


async def aok() -> int:
    return 1


# One acquire: the zero-argument callable to time, and the context entered around its loop.
Acquire: TypeAlias = "tuple[Callable[[], Any], Callable[[], AbstractContextManager[object]]]"
_teardowns: list[Callable[[], None]] = []


def teardown() -> None:
    """Stop the anchors' background threads and tasks (after the run)."""
    while _teardowns:
        _teardowns.pop()()


def _invresilience(run: Callable[[Awaitable[Any]], Any]) -> dict[tuple[str, Mode], Acquire]:
    import invresilience as ir

    nothing = contextlib.nullcontext
    sync_limiter = ir.RateLimiter(1e9, burst=10**9)
    async_limiter = ir.RateLimiter(1e9, burst=10**9)
    return {
        (OURS, "sync"): (sync_limiter.try_acquire, nothing),
        (OURS, "async"): (async_limiter.aacquire, nothing),
    }


def _aiolimiter(run: Callable[[Awaitable[Any]], Any]) -> dict[tuple[str, Mode], Acquire]:
    aiolimiter = _anchor("aiolimiter")
    limiter = aiolimiter.AsyncLimiter(HUGE, 1)
    return {("aiolimiter", "async"): (limiter.acquire, contextlib.nullcontext)}


def _cancel_timer(storage: Any) -> None:
    storage.timer.cancel()


def _limits(run: Callable[[Awaitable[Any]], Any]) -> dict[tuple[str, Mode], Acquire]:
    limits = _anchor("limits")
    strategies = _anchor("limits.strategies")
    aio_strategies = _anchor("limits.aio.strategies")
    aio_storage = _anchor("limits.aio.storage")
    item = limits.RateLimitItemPerSecond(HUGE)
    acquires: dict[tuple[str, Mode], Acquire] = {}
    for label, strategy in (
        ("limits (fixed window)", strategies.FixedWindowRateLimiter),
        ("limits (moving window)", strategies.MovingWindowRateLimiter),
    ):
        storage = limits.storage.MemoryStorage()

        @contextlib.contextmanager
        def fresh(storage: Any = storage) -> Iterator[None]:
            storage.timer.join()
            storage.reset()
            try:
                yield
            finally:
                storage.timer.join()

        acquires[label, "sync"] = (functools.partial(strategy(storage).hit, item), fresh)
        _teardowns.append(functools.partial(_cancel_timer, storage))

    astorage = aio_storage.MemoryStorage()

    @contextlib.contextmanager
    def no_expiry_task() -> Iterator[None]:
        try:
            yield
        finally:
            if astorage.timer is not None:
                astorage.timer.cancel()

    limiter = aio_strategies.FixedWindowRateLimiter(astorage)
    acquires["limits (fixed window)", "async"] = (
        functools.partial(limiter.hit, item),
        no_expiry_task,
    )
    return acquires


def _pyrate(run: Callable[[Awaitable[Any]], Any]) -> dict[tuple[str, Mode], Acquire]:
    pyrate = _anchor("pyrate_limiter")
    acquires: dict[tuple[str, Mode], Acquire] = {}

    def log() -> Any:  # Limiter(rate) builds its default bucket, an InMemoryBucket
        return pyrate.Limiter(pyrate.Rate(HUGE, pyrate.Duration.SECOND))

    def gcra() -> Any:
        rate = pyrate.Rate(HUGE, pyrate.Duration.SECOND, burst=HUGE)
        return pyrate.Limiter(pyrate.StateBucket([rate], algorithm=pyrate.GCRA()))

    makers: dict[str, Callable[[], Any]] = {"pyrate-limiter": log, "pyrate-limiter (GCRA)": gcra}
    for label, make in makers.items():
        sync_limiter, async_limiter = make(), make()
        _teardowns.extend((sync_limiter.close, async_limiter.close))
        acquires[label, "sync"] = (
            functools.partial(sync_limiter.try_acquire, "bench", blocking=False),
            contextlib.nullcontext,
        )
        acquires[label, "async"] = (
            functools.partial(async_limiter.try_acquire_async, "bench", blocking=False),
            contextlib.nullcontext,
        )
    return acquires


FACTORIES: dict[
    str, Callable[[Callable[[Awaitable[Any]], Any]], dict[tuple[str, Mode], Acquire]]
] = {
    OURS: _invresilience,
    "aiolimiter": _aiolimiter,
    "limits": _limits,
    "pyrate-limiter": _pyrate,
}


def _code(fn: Callable[..., Any]) -> CodeType:
    code: CodeType = fn.__code__
    return code


def build_cases(
    run: Callable[[Awaitable[Any]], Any], libraries: tuple[str, ...] = LIBRARIES
) -> tuple[list[Case], list[str]]:
    """Every (mode, library) case, baselines first; and the libraries skipped."""
    acquires: dict[tuple[str, Mode], Acquire] = {}
    skipped = []
    for name in libraries:
        try:
            acquires.update(FACTORIES[name](run))
        except ImportError:
            if name == OURS:
                raise
            skipped.append(name)
    cases = []
    for mode in MODES:
        target = ok if mode == "sync" else aok
        # A no-op's code: no acquire runs it, so every frame an acquire enters is counted.
        cases.append(Case(ACQUIRE, mode, BASELINE, target, _code(target)))
        for (label, row_mode), (fn, context) in acquires.items():
            if row_mode == mode:
                cases.append(Case(ACQUIRE, mode, label, fn, _code(target), context))
    return cases, skipped


def check_cases(cases: list[Case], run: Callable[[Awaitable[Any]], Any]) -> list[str]:
    """Problems found by calling every case a few times (an empty list when all is well).

    Every acquire must be admitted: a permit or ``True`` (aiolimiter's ``acquire`` returns
    ``None`` and would wait instead, so it must not take long).
    """
    problems = []
    for case in cases:
        for _ in range(3):
            try:
                with case.context():  # not timed: it may wait for an anchor's thread
                    start = time.perf_counter()
                    value = case.fn() if case.mode == "sync" else run(case.fn())
                    elapsed = time.perf_counter() - start
            except Exception as exc:  # noqa: BLE001 - reported, not handled
                problems.append(f"{case.label}: raised {exc!r}")
                break
            rejected = (case.library == OURS and value is None) or value is False
            if case.library != BASELINE and rejected:
                problems.append(f"{case.label}: rejected ({value!r})")
                break
            if elapsed > 0.1:  # a gross check: a loaded machine can stall a thread start
                problems.append(f"{case.label}: a call took over 100 ms: it waited")
                break
    return problems


BUDGETS = tuple(Budget(ACQUIRE, mode, "us_per_call", 0.5) for mode in MODES)
