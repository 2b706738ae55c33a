"""Checked by mypy, never run: pipelines and fallbacks keep signatures and return types."""

from __future__ import annotations

import invresilience as ir

retry = ir.RetryPolicy(on=ConnectionError)
breaker = ir.CircuitBreaker("erp")
pipeline = ir.Pipeline(ir.Fallback(lambda exc: 0), retry, breaker, ir.Pipeline(breaker))


@pipeline
def stock(sku: str, *, warehouse: int = 1) -> int:
    return len(sku) + warehouse


@pipeline
async def astock(sku: str) -> int:
    return len(sku)


def use() -> None:
    level: int = stock("WH-1", warehouse=2)
    stock(1)  # type: ignore[arg-type]
    stock("WH-1", shelf=2)  # type: ignore[call-arg]
    name: str = stock("WH-1")  # type: ignore[assignment]
    del level, name


async def ause() -> None:
    level: int = await astock("WH-1")
    again: int = await pipeline.acall(astock, "WH-2")
    await pipeline.acall(astock, 3)  # type: ignore[arg-type]
    del level, again


cached = ir.Fallback(lambda exc: 0)


@cached
def count(sku: str) -> int:
    return len(sku)


@cached  # type: ignore[arg-type]
def label(sku: str) -> str:
    return sku


async def cached_count(sku: str) -> int:
    return len(sku)


async def fallback_async() -> None:
    value: int = await cached(cached_count)("WH-1")
    direct: int = cached.call(count, "WH-1")
    del value, direct


# Every policy is a Policy.
policies: list[ir.typing.Policy] = [retry, breaker, pipeline]
