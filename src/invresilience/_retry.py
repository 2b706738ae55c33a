"""Retry with backoff, one deadline, ``Retry-After`` hints and retry budgets.

The decisions live in :mod:`invresilience._core.retry`; this module holds the public
configuration classes and the thin shells that run attempts, sleep and report back:
``call`` / ``acall``, the decorator (``def``, ``async def``, generators and async
generators) and ``for`` / ``async for`` over :meth:`RetryPolicy.retrying`.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import random
import sys
import threading
from collections.abc import AsyncGenerator as AsyncGen
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import attrs
from typing_extensions import ParamSpec, Self, final

from . import _events
from ._clock import SYSTEM_CLOCK
from ._config import (
    duration,
    field_name,
    integer,
    number,
    optional_duration,
    optional_seconds,
    seconds,
)
from ._core.backoff import JITTERS, KINDS, delay_function
from ._core.budget import BudgetWindow
from ._core.retry import NOT_RETRYABLE, RETRY, SUCCESS, RetryDecision, RetryRun
from ._scope import DEADLINE, TESTING
from .exceptions import (
    CircuitOpenError,
    ConfigurationError,
    RetriesExhaustedError,
    RetryBudgetExhaustedError,
)
from .typing import Clock

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["Attempt", "Backoff", "Outcome", "RetryBudget", "RetryPolicy"]

P = ParamSpec("P")
T = TypeVar("T")
Y = TypeVar("Y")
S = TypeVar("S")

Jitter = Literal["full", "equal", "decorrelated", "none"]
Kind = Literal["exponential", "constant", "linear"]

_shared_random = random.Random()


@final
@attrs.frozen(kw_only=True)
class Backoff:
    """How long to wait between attempts.

    The default is exponential growth from *initial* by *multiplier*, capped at *maximum*,
    with full jitter. The cap applies *before* jitter, so no jittered delay exceeds it.
    Build the other shapes with :meth:`constant` and :meth:`linear`.

    Jitter modes, with ``base = min(maximum, raw delay)``:

    ``"full"``
        uniform in ``[0, base]`` -- the best spread for many competing clients.
    ``"equal"``
        uniform in ``[base / 2, base]`` -- never retries almost at once.
    ``"decorrelated"``
        uniform in ``[initial, min(maximum, 3 × previous delay)]``
        (exponential backoff only; *initial* must be > 0).
    ``"none"``
        exactly ``base``.

    Args:
        initial: The first delay in seconds (the base of the growth).
        maximum: The cap in seconds; ``>= initial``.
        multiplier: Growth factor per attempt for exponential backoff; ``>= 1``.
        jitter: One of ``"full"``, ``"equal"``, ``"decorrelated"``, ``"none"``.
        kind: ``"exponential"``, ``"constant"`` or ``"linear"``; prefer the class methods.
        increment: Seconds added per attempt for linear backoff.

    Raises:
        ConfigurationError: On negative or inverted delays or an unknown jitter.

    .. versionadded:: 0.1.0
    """

    initial: float = attrs.field(default=0.1, converter=seconds, validator=duration())
    maximum: float = attrs.field(default=10.0, converter=seconds, validator=duration())
    multiplier: float = attrs.field(default=2.0, validator=number(minimum=1.0))
    jitter: Jitter = "full"
    kind: Kind = "exponential"
    increment: float = attrs.field(default=0.0, converter=seconds, validator=duration())
    _delay: Callable[[int, float | None, random.Random], float] = attrs.field(
        init=False, repr=False, eq=False
    )

    def __attrs_post_init__(self) -> None:
        if self.jitter not in JITTERS:
            raise ConfigurationError(
                "Backoff.jitter", self.jitter, f"must be one of {', '.join(map(repr, JITTERS))}"
            )
        if self.kind not in KINDS:
            raise ConfigurationError(
                "Backoff.kind", self.kind, f"must be one of {', '.join(map(repr, KINDS))}"
            )
        if self.maximum < self.initial:
            raise ConfigurationError(
                "Backoff.maximum", self.maximum, f"must be >= initial ({self.initial})"
            )
        if self.jitter == "decorrelated":
            if self.kind != "exponential":
                raise ConfigurationError(
                    "Backoff.jitter",
                    self.jitter,
                    f"is defined for exponential backoff only, not {self.kind}",
                )
            if self.initial <= 0:
                raise ConfigurationError(
                    "Backoff.initial", self.initial, "must be > 0 with decorrelated jitter"
                )
        object.__setattr__(
            self,
            "_delay",
            delay_function(
                self.kind, self.jitter, self.initial, self.maximum, self.multiplier, self.increment
            ),
        )

    @classmethod
    def constant(cls, delay: float | datetime.timedelta, *, jitter: Jitter = "none") -> Self:
        """The same *delay* before every retry (optionally jittered).

        .. versionadded:: 0.1.0
        """
        value = seconds(delay)
        return cls(initial=value, maximum=value, kind="constant", jitter=jitter)

    @classmethod
    def linear(
        cls,
        initial: float | datetime.timedelta,
        increment: float | datetime.timedelta,
        maximum: float | datetime.timedelta,
        *,
        jitter: Jitter = "none",
    ) -> Self:
        """``initial``, ``initial + increment``, ``initial + 2 × increment``, ... capped at *maximum*.

        .. versionadded:: 0.1.0
        """
        return cls(
            initial=initial,
            increment=increment,
            maximum=maximum,
            kind="linear",
            jitter=jitter,
        )

    def delay(
        self, attempt: int, previous: float | None = None, rng: random.Random | None = None
    ) -> float:
        """The delay after failed attempt number *attempt* (1-based).

        Args:
            attempt: The number of the attempt that just failed.
            previous: The previous delay (used by decorrelated jitter).
            rng: The random source; a shared :class:`random.Random` by default.

        .. versionadded:: 0.1.0
        """
        return self._delay(attempt, previous, _shared_random if rng is None else rng)


@final
@attrs.frozen
class Outcome:
    """What an attempt produced, handed to a classifier and a ``Retry-After`` extractor.

    Exactly one of the two is meaningful: :attr:`exception` is ``None`` when the attempt
    returned, in which case :attr:`result` holds the value.

    .. versionadded:: 0.1.0
    """

    exception: BaseException | None
    result: Any = None

    @property
    def failed(self) -> bool:
        """Whether the attempt raised."""
        return self.exception is not None


Classifier = Callable[[Outcome], bool]
"""Decides whether an :class:`Outcome` is retried (``True``) or final (``False``).

.. versionadded:: 0.1.0
"""

RetryAfter = Callable[[Outcome], "float | datetime.timedelta | None"]
"""Extracts a ``Retry-After`` hint in seconds from an :class:`Outcome`, or ``None``.

.. versionadded:: 0.1.0
"""


@final
@attrs.define(kw_only=True, eq=False)
class RetryBudget:
    """Caps retries to a fraction of calls, so a struggling dependency is not hit by a retry storm.

    Over a sliding window of *ttl* seconds, retries may be at most ``ratio`` × the calls
    made plus a reserve of ``minimum_per_second × ttl`` (so that low-traffic callers can
    still retry). Only retryable failures spend the budget. One budget may be shared by
    many policies and threads.

    When the budget is spent, a policy does not retry: the original exception is raised
    (with a note saying why) and an event with decision ``BUDGET_EXHAUSTED`` is emitted.

    Args:
        ratio: Retries allowed per call, in ``[0, 1]``.
        minimum_per_second: Retries always allowed per second regardless of traffic.
        ttl: The window in seconds.
        clock: The time source.

    .. versionadded:: 0.1.0
    """

    ratio: float = attrs.field(default=0.2, validator=number(minimum=0.0))
    minimum_per_second: float = attrs.field(default=10.0, validator=number(minimum=0.0))
    ttl: float = attrs.field(default=10.0, converter=seconds, validator=duration(positive=True))
    clock: Clock = SYSTEM_CLOCK
    _window: BudgetWindow = attrs.field(init=False, repr=False)
    _lock: threading.Lock = attrs.field(init=False, repr=False, factory=threading.Lock)

    def __attrs_post_init__(self) -> None:
        if self.ratio > 1.0:
            raise ConfigurationError("RetryBudget.ratio", self.ratio, "must be <= 1")
        self._window = BudgetWindow(
            self.ratio, self.minimum_per_second, self.ttl, self.clock.monotonic()
        )

    def deposit(self) -> None:
        """Count one call. Policies call this once per call, before its first attempt."""
        now = self.clock.monotonic()
        with self._lock:
            self._window.deposit(now)

    def try_withdraw(self) -> bool:
        """Spend one retry if the budget allows it; return whether it did."""
        now = self.clock.monotonic()
        with self._lock:
            return self._window.withdraw(now)

    @property
    def available(self) -> float:
        """How many retries the budget would allow right now."""
        now = self.clock.monotonic()
        with self._lock:
            return self._window.available(now)


def _exception_types(value: object) -> tuple[type[Exception], ...] | None:
    """*value* as a tuple of exception classes, or ``None`` if it is not one."""
    items = value if isinstance(value, tuple) else (value,)
    if not items or not all(isinstance(item, type) for item in items):
        return None
    return cast("tuple[type[Exception], ...]", items)


def _validate_on(instance: RetryPolicy, attribute: attrs.Attribute[Any], value: Any) -> None:
    name = field_name(instance, attribute)
    types = _exception_types(value)
    if types is not None:
        for item in types:
            if not issubclass(item, Exception):
                raise ConfigurationError(
                    name,
                    item,
                    "must hold Exception subclasses only (BaseException-only errors such as "
                    "KeyboardInterrupt and asyncio.CancelledError are never retried)",
                )
        return
    if isinstance(value, tuple) or not callable(value):
        raise ConfigurationError(
            name, value, "must be an exception class, a tuple of them, or a classifier callable"
        )


def _hint_seconds(hint: object) -> float | None:
    """A ``Retry-After`` hint as seconds, or ``None`` when it is not a duration."""
    if isinstance(hint, (int, float)) and not isinstance(hint, bool):
        return float(hint)
    if isinstance(hint, datetime.timedelta):
        return hint.total_seconds()
    return None


#: The target named in events and notes of a ``retrying()`` loop.
_LOOP = "retrying() loop"


def _target_name(fn: object) -> str:
    if isinstance(fn, str):
        return fn
    return getattr(fn, "__qualname__", None) or repr(fn)


def _add_note(exc: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10 keeps the note where 3.11+ would
        exc.__notes__ = [*getattr(exc, "__notes__", ()), note]  # type: ignore[attr-defined]


@final
@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Retry a call on chosen failures, with backoff, a total deadline and an optional budget.

    A policy is immutable and holds no per-call state, so one policy may serve many threads
    and tasks at once; every call gets its own attempt count. Use it as a decorator (on
    ``def``, ``async def``, generator and async generator functions), with :meth:`call` /
    :meth:`acall`, or as ``for attempt in policy.retrying(): with attempt: ...``.

    When it gives up on an exception, the **original** exception is re-raised with the
    attempt history added as a note. When it gives up on a *result* (a classifier said a
    returned value should be retried), :class:`~invresilience.exceptions.RetriesExhaustedError`
    is raised carrying the last result.

    Args:
        on: What to retry -- required. An exception class, a tuple of them, or a
            classifier ``(Outcome) -> bool`` that sees exceptions **and** return values.
        attempts: Total attempts, the first included; ``>= 1``.
        timeout: The total deadline in seconds (or a timedelta) from the first attempt;
            no sleep or attempt starts that could not begin before it. ``None`` disables
            it. Nested retried calls share the outermost deadline.
        backoff: The delay between attempts.
        budget: A shared :class:`RetryBudget`, or ``None``.
        retry_after: Extracts a ``Retry-After`` hint from an outcome; by default (``None``)
            the ``retry_after`` attribute of the exception (seconds or a timedelta) is used. A hint
            replaces the backoff delay; if it would end past the deadline, retrying stops.
        clock: The time source.
        random: The random source for jitter.
        name: A name for events and notes; defaults to the wrapped callable's name.

    Raises:
        ConfigurationError: On a bad value, naming the field and the value.

    .. versionadded:: 0.1.0
    """

    on: type[Exception] | tuple[type[Exception], ...] | Classifier = attrs.field(
        validator=_validate_on
    )
    attempts: int = attrs.field(default=3, validator=integer(minimum=1))
    timeout: float | None = attrs.field(
        default=30.0, converter=optional_seconds, validator=optional_duration(positive=True)
    )
    backoff: Backoff = attrs.field(factory=Backoff)
    budget: RetryBudget | None = None
    retry_after: RetryAfter | None = None
    clock: Clock = SYSTEM_CLOCK
    random: random.Random = attrs.field(factory=lambda: _shared_random)
    name: str | None = None
    # Derived once, so the hot path reads attributes instead of branching on `on`.
    _types: tuple[type[Exception], ...] = attrs.field(init=False, repr=False)
    _classifier: Classifier | None = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.backoff, Backoff):
            raise ConfigurationError("RetryPolicy.backoff", self.backoff, "must be a Backoff")
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise ConfigurationError("RetryPolicy.budget", self.budget, "must be a RetryBudget")
        if not isinstance(self.clock, Clock):
            raise ConfigurationError(
                "RetryPolicy.clock", self.clock, "must have monotonic, wall, sleep and asleep"
            )
        if not isinstance(self.random, random.Random):
            raise ConfigurationError("RetryPolicy.random", self.random, "must be a random.Random")
        if self.retry_after is not None and not callable(self.retry_after):
            raise ConfigurationError(
                "RetryPolicy.retry_after", self.retry_after, "must be a callable or None"
            )
        if self.name is not None and not isinstance(self.name, str):
            raise ConfigurationError("RetryPolicy.name", self.name, "must be a str or None")
        types = _exception_types(self.on)
        # A classifier sees every exception; exception types catch only their own.
        object.__setattr__(self, "_types", types if types is not None else (Exception,))
        object.__setattr__(self, "_classifier", None if types is not None else self.on)

    # -- the shared core glue --------------------------------------------------------------

    def _begin(self) -> tuple[float, float | None]:
        """Start a call: ``(start, deadline)``, the deadline joined with any outer one.

        The hot closures of :func:`_sync_caller` and :func:`_async_caller` inline these
        lines: a function call there would cost a fifth of the success-path budget.
        """
        clock = self.clock
        start = clock.monotonic()
        if self.budget is not None:
            self.budget.deposit()
        outer = DEADLINE.get()
        deadline = None if self.timeout is None else start + self.timeout
        if outer is not None and outer[0] is clock and (deadline is None or outer[1] < deadline):
            return start, outer[1]
        return start, deadline

    def _run(self, start: float, deadline: float | None) -> RetryRun:
        """The state of a call whose first attempt failed."""
        scope = TESTING.get()
        attempts = self.attempts
        if scope is not None and scope.attempts is not None and scope.attempts < attempts:
            attempts = scope.attempts
        return RetryRun(
            start,
            deadline,
            attempts,
            self.backoff._delay,
            self.random,
            None if self.budget is None else self.budget.try_withdraw,
            scope is None or scope.wait,
        )

    def _judge(
        self, run: RetryRun, fn: object, exc: BaseException | None, result: Any
    ) -> tuple[RetryDecision, float]:
        """Classify a failed attempt, ask the core what to do, and report it."""
        classifier = self._classifier
        outcome = None
        if classifier is None:
            retryable = True  # the shells only catch self._types
        else:
            outcome = Outcome(exc, result)
            retryable = bool(classifier(outcome))
        hint = None
        if retryable and isinstance(exc, CircuitOpenError):
            # Waiting for an open breaker is worth it only if the breaker will let a probe
            # through before the deadline; an isolated breaker (no retry_after) never will.
            wait = exc.retry_after
            retryable = wait is not None and (
                run.deadline is None or self.clock.monotonic() + wait < run.deadline
            )
        if retryable:
            if self.retry_after is None:
                hint = getattr(exc, "retry_after", None)
            else:
                hint = self.retry_after(outcome or Outcome(exc, result))
            if hint is not None:
                hint = _hint_seconds(hint)
        now = self.clock.monotonic()
        decision, delay = run.decide(retryable, exc if exc is not None else result, now, hint)
        if _events.active:
            self._emit(fn, run.history[-1][0], decision, delay, now - run.start, exc, result)
        if decision is not RETRY and exc is not None and retryable:
            _add_note(exc, run.note(self.name or _target_name(fn), now))
        return decision, delay

    def _emit(
        self,
        fn: object,
        attempt: int,
        decision: RetryDecision,
        delay: float,
        elapsed: float,
        exc: BaseException | None,
        result: Any,
    ) -> None:
        target = _target_name(fn)
        _events.emit(
            _events.RetryEvent(
                source=self.name or target,
                target=target,
                attempt=attempt,
                decision=decision,
                delay=delay,
                elapsed=elapsed,
                exception=exc,
                result=result,
            )
        )

    def _finished(
        self,
        fn: object,
        run: RetryRun | None,
        start: float,
        exc: BaseException | None = None,
        result: Any = None,
    ) -> None:
        """Report the final attempt: a success, or an exception ``on`` does not cover."""
        self._emit(
            fn,
            1 if run is None else run.attempt,
            SUCCESS if exc is None else NOT_RETRYABLE,
            0.0,
            self.clock.monotonic() - start,
            exc,
            result,
        )

    def _exhausted(
        self, run: RetryRun, decision: RetryDecision, fn: object, result: Any
    ) -> RetriesExhaustedError:
        cls = (
            RetryBudgetExhaustedError
            if decision is RetryDecision.BUDGET_EXHAUSTED
            else RetriesExhaustedError
        )
        return cls(
            run.note(self.name or _target_name(fn), self.clock.monotonic()),
            last_result=result,
            attempts=run.attempt,
        )

    # -- sync and async calls ----------------------------------------------------------------

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)``, retrying as configured.

        Decorating *fn* once is a little faster than calling through here every time.

        Returns:
            What *fn* returned on the attempt that succeeded.

        Raises:
            Exception: The original exception of the last attempt, with the history as a note.
            RetriesExhaustedError: When a classifier kept rejecting the returned value.

        .. versionadded:: 0.1.0
        """
        return _sync_caller(self, fn)(*args, **kwargs)

    def _call_again(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start: float,
        deadline: float | None,
        exc: Exception | None,
        result: Any,
    ) -> T:
        run = self._run(start, deadline)
        while True:
            decision, delay = self._judge(run, fn, exc, result)
            if decision is not RETRY:
                if exc is not None:
                    raise exc
                raise self._exhausted(run, decision, fn, result)
            if run.wait and delay > 0.0:
                self.clock.sleep(delay)
            try:
                result = fn(*args, **kwargs)
            except self._types as caught:
                exc = caught
                continue
            except Exception as other:
                if _events.active:
                    self._finished(fn, run, start, other)
                raise
            exc = None
            if self._classifier is not None and self._classifier(Outcome(None, result)):
                continue
            if _events.active:
                self._finished(fn, run, start, None, result)
            return result  # type: ignore[no-any-return]

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying as configured; the async twin of :meth:`call`.

        Cancellation is never retried: :class:`asyncio.CancelledError` is not an ``Exception``.

        .. versionadded:: 0.1.0
        """
        return await _async_caller(self, fn)(*args, **kwargs)

    async def _acall_again(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        start: float,
        deadline: float | None,
        exc: Exception | None,
        result: Any,
    ) -> T:
        run = self._run(start, deadline)
        while True:
            decision, delay = self._judge(run, fn, exc, result)
            if decision is not RETRY:
                if exc is not None:
                    raise exc
                raise self._exhausted(run, decision, fn, result)
            if run.wait and delay > 0.0:
                await self.clock.asleep(delay)
            try:
                result = await fn(*args, **kwargs)
            except self._types as caught:
                exc = caught
                continue
            except Exception as other:
                if _events.active:
                    self._finished(fn, run, start, other)
                raise
            exc = None
            if self._classifier is not None and self._classifier(Outcome(None, result)):
                continue
            if _events.active:
                self._finished(fn, run, start, None, result)
            return result  # type: ignore[no-any-return]

    # -- the decorator -------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]:
        """Decorate *fn* so that every call of it is retried; its signature is kept.

        Works on ``def``, ``async def``, generator and async generator functions (and on
        methods). A generator is retried only until it yields its first value: once a
        value has been handed out, a failure is raised to the consumer as is.

        .. versionadded:: 0.1.0
        """
        wrapper: Callable[..., Any]
        if inspect.isasyncgenfunction(fn):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                agen, value = await self.acall(_first_async_item(fn), *args, **kwargs)
                if agen is None:
                    return
                # Hand the rest through untouched, asend/athrow/aclose included.
                while True:
                    try:
                        sent = yield value
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as thrown:  # noqa: BLE001 - forwarded to the generator
                        try:
                            value = await agen.athrow(thrown)
                        except StopAsyncIteration:
                            return
                    else:
                        try:
                            value = await agen.asend(sent)
                        except StopAsyncIteration:
                            return

        elif inspect.iscoroutinefunction(fn):
            wrapper = _async_caller(self, fn)

        elif inspect.isgeneratorfunction(fn):

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                gen, value, done = self.call(_first_item(fn), *args, **kwargs)
                if done:
                    return value
                return (yield from _resume(gen, value))

        else:
            wrapper = _sync_caller(self, fn)

        functools.update_wrapper(wrapper, fn)
        return cast("Callable[P, T]", wrapper)

    # -- attempts as a loop ----------------------------------------------------------------------

    def retrying(self) -> Attempts:
        """Iterate over attempts, for code that cannot be wrapped in a function.

        .. code-block:: python

            for attempt in policy.retrying():  # or: async for
                with attempt:
                    stock = erp.fetch(sku)

        A retryable exception leaving the ``with`` block is swallowed and the loop
        continues after the backoff delay; when the policy gives up, the original
        exception propagates out of the ``with`` block. A block that completes ends the
        loop. Classifiers see exceptions only here: there is no return value to judge.

        (It is not called ``attempts()`` because ``attempts`` is the field holding the
        number of attempts.)

        .. versionadded:: 0.1.0
        """
        return Attempts(self)


def _sync_caller(policy: RetryPolicy, fn: Callable[P, T]) -> Callable[P, T]:
    """The hot path of one retried callable: a closure with the policy's fields pre-bound.

    Success costs a clock read, publishing the deadline for nested calls, and the call;
    everything else happens in :meth:`RetryPolicy._call_again` after a first failure.
    """
    monotonic = policy.clock.monotonic
    clock, timeout, budget = policy.clock, policy.timeout, policy.budget
    types, classifier = policy._types, policy._classifier
    get_deadline, set_deadline, reset_deadline = DEADLINE.get, DEADLINE.set, DEADLINE.reset
    again, finished = policy._call_again, policy._finished

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        start = monotonic()
        # Inlined RetryPolicy._begin: join the outer deadline, or publish our own.
        if budget is not None:
            budget.deposit()
        outer = get_deadline()
        token = None
        if (
            outer is not None
            and outer[0] is clock
            and (timeout is None or outer[1] < start + timeout)
        ):
            deadline: float | None = outer[1]
        elif timeout is None:
            deadline = None
        else:
            deadline = start + timeout
            token = set_deadline((clock, deadline))
        try:
            try:
                result = fn(*args, **kwargs)
            except types as exc:
                return again(fn, args, kwargs, start, deadline, exc, None)
            except Exception as exc:
                if _events.active:
                    finished(fn, None, start, exc)
                raise
            if classifier is not None and classifier(Outcome(None, result)):
                return again(fn, args, kwargs, start, deadline, None, result)
            if _events.active:
                finished(fn, None, start, None, result)
            return result
        finally:
            if token is not None:
                reset_deadline(token)

    return run


def _async_caller(policy: RetryPolicy, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """The async twin of :func:`_sync_caller`."""
    monotonic = policy.clock.monotonic
    clock, timeout, budget = policy.clock, policy.timeout, policy.budget
    types, classifier = policy._types, policy._classifier
    get_deadline, set_deadline, reset_deadline = DEADLINE.get, DEADLINE.set, DEADLINE.reset
    again, finished = policy._acall_again, policy._finished

    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        start = monotonic()
        # Inlined RetryPolicy._begin: join the outer deadline, or publish our own.
        if budget is not None:
            budget.deposit()
        outer = get_deadline()
        token = None
        if (
            outer is not None
            and outer[0] is clock
            and (timeout is None or outer[1] < start + timeout)
        ):
            deadline: float | None = outer[1]
        elif timeout is None:
            deadline = None
        else:
            deadline = start + timeout
            token = set_deadline((clock, deadline))
        try:
            try:
                result = await fn(*args, **kwargs)
            except types as exc:
                return await again(fn, args, kwargs, start, deadline, exc, None)
            except Exception as exc:
                if _events.active:
                    finished(fn, None, start, exc)
                raise
            if classifier is not None and classifier(Outcome(None, result)):
                return await again(fn, args, kwargs, start, deadline, None, result)
            if _events.active:
                finished(fn, None, start, None, result)
            return result
        finally:
            if token is not None:
                reset_deadline(token)

    return run


def _first_item(fn: Callable[..., Generator[Y, S, T]]) -> Callable[..., tuple[Any, Any, bool]]:
    """A function running *fn*'s generator to its first yield: ``(generator, value, done)``."""

    def first(*args: Any, **kwargs: Any) -> tuple[Any, Any, bool]:
        gen = fn(*args, **kwargs)
        try:
            return gen, next(gen), False
        except StopIteration as stop:
            return gen, stop.value, True

    functools.update_wrapper(first, fn)
    return first


def _first_async_item(
    fn: Callable[..., AsyncGen[Y, S]],
) -> Callable[..., Awaitable[tuple[AsyncGen[Y, S] | None, Any]]]:
    """The async twin of :func:`_first_item`: ``(generator or None when empty, value)``."""

    async def first(*args: Any, **kwargs: Any) -> tuple[AsyncGen[Y, S] | None, Any]:
        agen = fn(*args, **kwargs)
        try:
            return agen, await agen.__anext__()
        except StopAsyncIteration:
            return None, None

    functools.update_wrapper(first, fn)
    return first


def _resume(gen: Generator[Y, S, T], value: Y) -> Generator[Y, S, T]:
    """Behave exactly like *gen*, which has already produced *value*."""
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            gen.close()
            raise
        except BaseException as thrown:  # noqa: BLE001 - forwarded to the generator
            try:
                value = gen.throw(thrown)
            except StopIteration as stop:
                return cast("T", stop.value)
        else:
            try:
                value = gen.send(sent)
            except StopIteration as stop:
                return cast("T", stop.value)


@final
class Attempt:
    """One attempt of a :meth:`RetryPolicy.retrying` loop; use it as a ``with`` block.

    Attributes:
        number: The attempt's number, starting at 1.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_loop", "_token", "number")

    def __init__(self, loop: Attempts, number: int) -> None:
        self._loop = loop
        self._token: Any = None
        self.number = number

    def __repr__(self) -> str:
        return f"<Attempt {self.number}>"

    def __enter__(self) -> Self:
        self._token = self._loop._publish()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if self._token is not None:
            DEADLINE.reset(self._token)
            self._token = None
        return self._loop._finished(exc)


@final
class Attempts:
    """The iterable returned by :meth:`RetryPolicy.retrying`; iterate it once, sync or async.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_delay", "_policy", "_run")

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._run: RetryRun | None = None
        self._delay: float | None = None

    def _publish(self) -> object:
        """Publish the loop's deadline for calls nested in the block, unless already visible."""
        assert self._run is not None
        deadline = self._run.deadline
        if deadline is None:
            return None
        outer = DEADLINE.get()
        if outer is not None and outer[1] == deadline:
            return None
        return DEADLINE.set((self._policy.clock, deadline))

    def _finished(self, exc: BaseException | None) -> bool:
        """Record an attempt's end; return whether to swallow its exception."""
        policy = self._policy
        assert self._run is not None
        if exc is None or not isinstance(exc, policy._types):
            if _events.active and (exc is None or isinstance(exc, Exception)):
                policy._finished(_LOOP, self._run, self._run.start, exc)
            return False
        decision, delay = policy._judge(self._run, _LOOP, exc, None)
        if decision is RETRY:
            self._delay = delay
            return True
        return False

    def _next(self) -> tuple[Attempt | None, float]:
        """The next attempt and the delay to sleep first, or ``None`` when the loop is over."""
        if self._run is None:
            self._run = self._policy._run(*self._policy._begin())
            return Attempt(self, 1), 0.0
        if self._delay is None:
            return None, 0.0
        delay, self._delay = self._delay, None
        return Attempt(self, self._run.attempt), delay if self._run.wait else 0.0

    def __iter__(self) -> Iterator[Attempt]:
        while True:
            attempt, delay = self._next()
            if attempt is None:
                return
            if delay > 0.0:
                self._policy.clock.sleep(delay)
            yield attempt

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        while True:
            attempt, delay = self._next()
            if attempt is None:
                return
            if delay > 0.0:
                await self._policy.clock.asleep(delay)
            yield attempt
