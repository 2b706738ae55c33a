"""Checked by mypy (never run): breakers keep signatures, and misuse is caught.

Every ``type: ignore`` below marks a misuse that must stay an error: with
``warn_unused_ignores`` a loosened signature makes the ignore unused and fails the check.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

import invresilience as ir
from invresilience.backends.memory import AsyncMemoryBreakerStore, MemoryBreakerStore
from invresilience.exceptions import CircuitOpenError

store = MemoryBreakerStore()
breaker = ir.CircuitBreaker(
    "erp",
    failure_rate=0.5,
    slow_call_rate=0.5,
    slow_call_duration=2.0,
    minimum_calls=20,
    window=ir.TimeWindow(60.0, buckets=12),
    open_for=ir.Backoff(initial=1.0, maximum=60.0, jitter="none"),
    half_open_probes=2,
    probe_timeout=10.0,
    failure_on=(ConnectionError, TimeoutError),
    ignore_on=KeyError,
    classify=lambda outcome: "failure" if outcome.result is None else None,
    store=store,
    async_store=AsyncMemoryBreakerStore(store),
    on_store_error="fail_closed",
)
plain = ir.CircuitBreaker("plain", window=ir.CountWindow(50), open_for=30.0)


@breaker
def fetch_stock(sku: str, *, warehouse: int = 1) -> int:
    return len(sku) * warehouse


@breaker
async def afetch_stock(sku: str) -> int:
    return len(sku)


assert_type(fetch_stock("A"), int)
assert_type(fetch_stock("A", warehouse=2), int)
pending = afetch_stock("A")
_ = assert_type(pending, Coroutine[Any, Any, int])
pending.close()

fetch_stock(1)  # type: ignore[arg-type]
fetch_stock("A", shelf=2)  # type: ignore[call-arg]
fetch_stock("A", warehouse="2")  # type: ignore[arg-type]
_ = afetch_stock(b"A")  # type: ignore[arg-type]
level: str = fetch_stock("A")  # type: ignore[assignment]

assert_type(breaker.call(fetch_stock, "A"), int)
assert_type(plain.call(lambda: "x"), str)
breaker.call(fetch_stock, 1)  # type: ignore[arg-type]
breaker.call(fetch_stock, "A", warehouse="x")  # type: ignore[arg-type]
breaker.call(fetch_stock, "A", shelf=1)  # type: ignore[call-arg]


async def use_async() -> None:
    assert_type(await afetch_stock("A"), int)
    assert_type(await breaker.acall(afetch_stock, "A"), int)
    await breaker.acall(afetch_stock, 1)  # type: ignore[arg-type]
    await breaker.acall(fetch_stock, "A")  # type: ignore[arg-type]
    async with breaker as entered:
        assert_type(entered, ir.CircuitBreaker)


def use_with() -> None:
    with breaker as entered:
        assert_type(entered, ir.CircuitBreaker)
    breaker.isolate()
    breaker.reset()
    assert_type(breaker.state, ir.BreakerState)
    assert_type(breaker.generation, int)
    metrics = breaker.metrics()
    assert_type(metrics, ir.BreakerMetrics)
    assert_type(metrics.failure_rate, float)
    try:
        fetch_stock("A")
    except CircuitOpenError as error:
        assert_type(error.name, str)
        assert_type(error.retry_after, float | None)


registry = ir.CircuitBreakerRegistry(lambda key: ir.CircuitBreaker(f"erp:{key}"), maximum=64)
assert_type(registry.get("a"), ir.CircuitBreaker)
assert_type(registry["a"], ir.CircuitBreaker)
assert_type(registry.call("a", fetch_stock, "A"), int)
assert_type(registry.metrics(), list[ir.BreakerMetrics])
registry.call("a", fetch_stock, 1)  # type: ignore[arg-type]
registry.get(1)  # type: ignore[arg-type]
ir.CircuitBreakerRegistry(lambda key: key)  # type: ignore[arg-type,return-value]
ir.CircuitBreakerRegistry(lambda key: plain, maximum="64")  # type: ignore[arg-type]


async def use_registry_async() -> None:
    assert_type(await registry.acall("a", afetch_stock, "A"), int)
    await registry.acall("a", afetch_stock, 1)  # type: ignore[arg-type]


ir.CircuitBreaker(3)  # type: ignore[arg-type]
ir.CircuitBreaker("erp", window=100)  # type: ignore[arg-type]
ir.CircuitBreaker("erp", on_store_error="retry")  # type: ignore[arg-type]
ir.CircuitBreaker("erp", failure_on=[ConnectionError])  # type: ignore[arg-type]
ir.CircuitBreaker("erp", failure_on=int)  # type: ignore[arg-type]
ir.CircuitBreaker("erp", store=object())  # type: ignore[arg-type]
ir.CircuitBreaker("erp", minimum_calls="20")  # type: ignore[arg-type]
ir.CircuitBreaker("erp", classify=lambda outcome: True)  # type: ignore[arg-type,return-value]
ir.CircuitBreaker("erp", rate=0.5)  # type: ignore[call-arg]
ir.CountWindow("100")  # type: ignore[arg-type]
ir.TimeWindow(60.0, buckets=2.5)  # type: ignore[arg-type]
