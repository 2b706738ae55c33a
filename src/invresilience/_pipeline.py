"""Policies stacked around a call, and fallbacks.

A policy is anything that decorates a callable and keeps its signature: a
:class:`~invresilience.RetryPolicy`, a :class:`~invresilience.CircuitBreaker`, a rate
limiter, a bulkhead, a timeout, a :class:`Fallback` -- or another :class:`Pipeline`.
:class:`Pipeline` applies them outermost first, so it reads in the order a call meets them.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

from typing_extensions import ParamSpec, final

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .typing import Policy

__all__ = ["Fallback", "Pipeline"]

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")


def _is_policy(candidate: Any) -> bool:
    # A plain function or a class is a classic mistake (`Pipeline(RetryPolicy)`): refuse
    # them, though both are callable.
    return (
        callable(candidate) and not inspect.isroutine(candidate) and not inspect.isclass(candidate)
    )


@final
class Pipeline:
    """Compose policies around a call, outermost first.

    ``Pipeline(a, b, c)(fn)`` is ``a(b(c(fn)))``: a call meets *a* first and *fn* last.
    The recommended order, from the outside in::

        Fallback  ->  RetryPolicy (with a RetryBudget)  ->  CircuitBreaker
                  ->  RateLimiter  ->  Bulkhead / AdaptiveLimiter  ->  Timeout  ->  the call

    - The fallback sees only what everything inside gave up on.
    - Retry wraps the breaker, so every attempt is judged by it, and an open breaker
      rejects attempts at once; retry treats the resulting
      :class:`~invresilience.exceptions.CircuitOpenError` as final unless its
      ``retry_after`` fits the deadline.
    - The breaker wraps the admission layers, whose rejections are local and never count
      against the dependency.
    - The timeout is innermost, so it bounds one attempt; a ``Timeout`` placed outside
      the retry bounds the whole call instead.

    A pipeline is itself a policy: pipelines nest.

    Args:
        policies: The policies, outermost first.

    Raises:
        ConfigurationError: When a policy is not a decorator.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("policies",)

    def __init__(self, *policies: Policy | Fallback[Any]) -> None:
        for index, policy in enumerate(policies):
            if not _is_policy(policy):
                raise ConfigurationError(
                    f"Pipeline.policies[{index}]",
                    policy,
                    "must be a policy instance (RetryPolicy, CircuitBreaker, RateLimiter, "
                    "Bulkhead, AdaptiveLimiter, Timeout, Fallback, Pipeline, ...)",
                )
        #: The policies, outermost first.
        self.policies: tuple[Policy | Fallback[Any], ...] = policies

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(map(repr, self.policies))})"

    def __call__(self, fn: Callable[P, T], /) -> Callable[P, T]:
        """Decorate *fn* with every policy; its signature is kept.

        .. versionadded:: 0.1.0
        """
        wrapped: Callable[P, Any] = fn
        for policy in reversed(self.policies):
            wrapped = policy(wrapped)
        return cast("Callable[P, T]", wrapped)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` through every policy.

        This wraps *fn* on every call; decorating it once is faster.

        .. versionadded:: 0.1.0
        """
        return self(fn)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through every policy.

        .. versionadded:: 0.1.0
        """
        return await self(fn)(*args, **kwargs)


@final
class Fallback(Generic[R]):
    """Answer with *handler*'s value when a call fails with one of *on*.

    The handler receives the exception; for an ``async def`` it may be a plain or an
    ``async`` function. Its return type must match the protected function's (mypy checks
    it). Put it outermost, so it sees only what the other policies gave up on.

    .. code-block:: python

        stale_ok = ir.Fallback(
            lambda exc: cache.get(sku), on=(ir.CircuitOpenError, ConnectionError)
        )

    Args:
        handler: ``(exception) -> value`` (or an awaitable of it, for async functions).
        on: The exception types answered by the fallback; others propagate.

    Raises:
        ConfigurationError: When *handler* is not callable or *on* not exception types.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("handler", "on")

    def __init__(
        self,
        handler: Callable[[Exception], R] | Callable[[Exception], Awaitable[R]],
        *,
        on: type[Exception] | tuple[type[Exception], ...] = Exception,
    ) -> None:
        if not callable(handler):
            raise ConfigurationError("Fallback.handler", handler, "must be callable")
        types = on if isinstance(on, tuple) else (on,)
        items: tuple[object, ...] = types
        if not items or not all(isinstance(t, type) and issubclass(t, Exception) for t in items):
            raise ConfigurationError(
                "Fallback.on", on, "must be an Exception subclass or a tuple of them"
            )
        self.handler = handler
        self.on = types

    def __repr__(self) -> str:
        names = ", ".join(t.__qualname__ for t in self.on)
        return f"Fallback({getattr(self.handler, '__qualname__', self.handler)!r}, on=({names}))"

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any], /) -> Callable[P, Any]:
        """Decorate *fn* (``def`` or ``async def``) with the fallback; its signature is kept.

        .. versionadded:: 0.1.0
        """
        handler, on = self.handler, self.on
        wrapper: Callable[..., Any]
        if inspect.iscoroutinefunction(fn):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(*args, **kwargs)
                except on as exc:
                    answer = handler(exc)
                    if inspect.isawaitable(answer):
                        return await answer
                    return answer

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except on as exc:
                    answer = handler(exc)
                    if inspect.isawaitable(answer):
                        close = getattr(answer, "close", None)
                        if close is not None:
                            close()  # do not leave "coroutine was never awaited" behind
                        raise TypeError(
                            f"the fallback for the sync function {fn.__qualname__} returned an "
                            "awaitable; use a plain function as the handler"
                        ) from exc
                    return answer

        functools.update_wrapper(wrapper, fn)
        return cast("Callable[P, Any]", wrapper)

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)``, answering with the fallback on failure.

        .. versionadded:: 0.1.0
        """
        return self(fn)(*args, **kwargs)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)``, answering with the fallback on failure.

        .. versionadded:: 0.1.0
        """
        return await self(fn)(*args, **kwargs)
