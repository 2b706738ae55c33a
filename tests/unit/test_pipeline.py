"""Pipeline composition, Fallback, and how retry treats an open breaker."""

from __future__ import annotations

import asyncio
from typing import NoReturn

import pytest

import invresilience as ir
from invresilience.testing import ManualClock


def _failing(exc: Exception) -> NoReturn:
    raise exc


def test_pipeline_applies_policies_outermost_first() -> None:
    """``Pipeline(a, b)(fn)`` is ``a(b(fn))``: a call meets the first policy first."""
    order: list[str] = []

    class Tracer:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, fn):  # type: ignore[no-untyped-def]
            def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
                order.append(self.name)
                return fn(*args, **kwargs)

            return wrapper

    pipeline = ir.Pipeline(Tracer("outer"), Tracer("middle"), Tracer("inner"))  # type: ignore[arg-type]
    assert 3 == pipeline.call(lambda: 3)
    assert ["outer", "middle", "inner"] == order


def test_pipelines_nest_and_keep_the_signature() -> None:
    """A pipeline is a policy: it nests, and decorated functions keep their metadata."""
    clock = ManualClock()
    inner = ir.Pipeline(ir.CircuitBreaker("erp", clock=clock))
    outer = ir.Pipeline(ir.RetryPolicy(on=ConnectionError, clock=clock), inner)

    @outer
    def fetch(sku: str) -> str:
        """Fetch a SKU."""
        return sku.lower()

    assert "wh-1" == fetch("WH-1")
    assert "fetch" == fetch.__name__
    assert "Fetch a SKU." == fetch.__doc__
    assert "Pipeline(" in repr(outer)


def test_empty_pipeline_calls_through() -> None:
    """A pipeline with no policies is the identity."""
    assert 5 == ir.Pipeline().call(lambda x: x + 1, 4)


@pytest.mark.parametrize("bad", [len, ir.RetryPolicy, 3, "retry"])
def test_pipeline_rejects_non_policies(bad: object) -> None:
    """Plain functions, classes and non-callables are refused, naming the position."""
    with pytest.raises(ir.ConfigurationError) as info:
        ir.Pipeline(ir.Pipeline(), bad)  # type: ignore[arg-type]
    assert "Pipeline.policies[1]" == info.value.field
    assert bad is info.value.value


def test_retry_around_breaker_waits_for_the_probe_when_it_fits() -> None:
    """Retry waits out an open breaker when ``retry_after`` fits the deadline, then probes."""
    clock = ManualClock()
    breaker = ir.CircuitBreaker("erp", minimum_calls=2, open_for=5.0, clock=clock)
    retry = ir.RetryPolicy(
        on=(ConnectionError, ir.CircuitOpenError),
        attempts=5,
        timeout=30.0,
        backoff=ir.Backoff.constant(0.1),
        clock=clock,
    )
    calls: list[float] = []

    @ir.Pipeline(retry, breaker)
    def fetch() -> int:
        calls.append(clock.monotonic())
        if len(calls) < 3:
            raise ConnectionError("down")
        return 7

    assert 7 == fetch()
    # Two failures trip the breaker; the third attempt is rejected with retry_after 4.9,
    # which retry sleeps instead of its backoff; the fourth attempt is the probe.
    assert [0.0, 0.1, 5.1] == pytest.approx(calls)
    assert [0.1, 0.1, 4.9] == pytest.approx(clock.sleeps)
    assert ir.BreakerState.CLOSED is breaker.state


def test_retry_gives_up_on_an_open_breaker_past_the_deadline() -> None:
    """An open breaker whose ``retry_after`` ends past the deadline is final at once."""
    clock = ManualClock()
    breaker = ir.CircuitBreaker("erp", minimum_calls=1, open_for=60.0, clock=clock)
    retry = ir.RetryPolicy(
        on=(ConnectionError, ir.CircuitOpenError),
        attempts=10,
        timeout=10.0,
        backoff=ir.Backoff.constant(0.1),
        clock=clock,
    )
    calls = 0

    @ir.Pipeline(retry, breaker)
    def fetch() -> int:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    with ir.testing.testing(wait=True) as timeline, pytest.raises(ir.CircuitOpenError) as info:
        fetch()
    assert 1 == calls
    assert [0.1] == clock.sleeps
    assert [ir.RetryDecision.RETRY, ir.RetryDecision.NOT_RETRYABLE] == timeline.decisions
    assert info.value.retry_after == pytest.approx(59.9)


def test_retry_never_waits_for_an_isolated_breaker() -> None:
    """An isolated breaker has no ``retry_after``: retry treats its rejection as final."""
    clock = ManualClock()
    breaker = ir.CircuitBreaker("erp", clock=clock)
    breaker.isolate()
    retry = ir.RetryPolicy(on=Exception, attempts=5, timeout=None, clock=clock)
    with pytest.raises(ir.CircuitOpenError):
        ir.Pipeline(retry, breaker).call(lambda: 1)
    assert [] == clock.sleeps


def test_retry_without_circuit_open_in_on_fails_fast() -> None:
    """Retry not told about CircuitOpenError lets the rejection through untouched."""
    clock = ManualClock()
    breaker = ir.CircuitBreaker("erp", clock=clock)
    breaker.isolate()
    retry = ir.RetryPolicy(on=ConnectionError, attempts=5, clock=clock)
    with pytest.raises(ir.CircuitOpenError):
        ir.Pipeline(retry, breaker).call(lambda: 1)
    assert [] == clock.sleeps


def test_async_pipeline() -> None:
    """Pipelines wrap ``async def`` and ``acall`` awaits through every policy."""
    clock = ManualClock()
    pipeline = ir.Pipeline(
        ir.Fallback(lambda exc: -1, on=ir.CircuitOpenError),
        ir.RetryPolicy(on=ConnectionError, attempts=3, clock=clock),
        ir.CircuitBreaker("erp", minimum_calls=2, open_for=60.0, clock=clock),
    )
    attempts = 0

    async def fetch() -> int:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    # Two failures open the breaker; the third attempt is rejected and the fallback answers.
    assert -1 == asyncio.run(pipeline.acall(fetch))
    assert 2 == attempts
    assert -1 == asyncio.run(pipeline.acall(fetch))
    assert 2 == attempts


def test_fallback_answers_only_for_its_exceptions() -> None:
    """The handler receives the exception; exceptions outside ``on`` propagate."""
    seen: list[Exception] = []

    def handler(exc: Exception) -> str:
        seen.append(exc)
        return "cached"

    fallback = ir.Fallback(handler, on=(ConnectionError, ir.CircuitOpenError))
    error = ConnectionError("down")
    assert "cached" == fallback.call(_failing, error)
    assert [error] == seen
    with pytest.raises(KeyError):
        fallback.call(_failing, KeyError("sku"))
    assert "fresh" == fallback.call(lambda: "fresh")
    assert "ConnectionError" in repr(fallback)


def test_fallback_on_async_functions_accepts_sync_and_async_handlers() -> None:
    """An ``async def`` may fall back to a plain or an async handler."""

    async def down() -> int:
        raise ConnectionError("down")

    async def async_handler(exc: Exception) -> int:
        return 2

    assert 1 == asyncio.run(ir.Fallback(lambda exc: 1).acall(down))
    assert 2 == asyncio.run(ir.Fallback(async_handler).acall(down))


def test_async_handler_on_a_sync_function_is_a_type_error() -> None:
    """A sync function cannot await its fallback: the mistake is reported, not returned."""

    async def async_handler(exc: Exception) -> int:
        return 2

    with pytest.raises(TypeError, match="returned an awaitable"):
        ir.Fallback(async_handler).call(_failing, ConnectionError())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"handler": 3}, "Fallback.handler"),
        ({"handler": len, "on": ()}, "Fallback.on"),
        ({"handler": len, "on": KeyboardInterrupt}, "Fallback.on"),
        ({"handler": len, "on": "x"}, "Fallback.on"),
    ],
)
def test_fallback_configuration_errors(kwargs: dict[str, object], field: str) -> None:
    """Bad handlers and exception types are refused at construction, naming the field."""
    with pytest.raises(ir.ConfigurationError) as info:
        ir.Fallback(**kwargs)  # type: ignore[arg-type]
    assert field == info.value.field
