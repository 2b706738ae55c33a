"""Checked by mypy (never run): decorated signatures are kept, misuse is caught.

Every ``type: ignore`` below marks a misuse that must stay an error: with
``warn_unused_ignores`` a loosened signature makes the ignore unused and fails the check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

from typing_extensions import assert_type

import invresilience as ir

policy = ir.RetryPolicy(on=ConnectionError)
classified = ir.RetryPolicy(on=lambda outcome: outcome.result is None)


@policy
def fetch_stock(sku: str, *, warehouse: int = 1) -> int:
    return 0


@policy
async def afetch_stock(sku: str) -> int:
    return 0


@policy
def rows(limit: int) -> Iterator[str]:
    yield "row"


@policy
async def arows(limit: int) -> AsyncIterator[str]:
    yield "row"


assert_type(fetch_stock("A"), int)
assert_type(fetch_stock("A", warehouse=2), int)
pending = afetch_stock("A")
_ = assert_type(pending, Coroutine[Any, Any, int])
pending.close()
assert_type(rows(3), Iterator[str])
assert_type(arows(3), AsyncIterator[str])

fetch_stock(1)  # type: ignore[arg-type]
fetch_stock("A", shelf=2)  # type: ignore[call-arg]
_ = afetch_stock(b"A")  # type: ignore[arg-type]
rows("3")  # type: ignore[arg-type]

assert_type(policy.call(fetch_stock, "A"), int)
policy.call(fetch_stock, 1)  # type: ignore[arg-type]
policy.call(fetch_stock, "A", warehouse="x")  # type: ignore[arg-type]


async def use_acall() -> None:
    assert_type(await policy.acall(afetch_stock, "A"), int)
    await policy.acall(afetch_stock, 1)  # type: ignore[arg-type]
    await policy.acall(fetch_stock, "A")  # type: ignore[arg-type]
    async for attempt in policy.retrying():
        assert_type(attempt, ir.Attempt)


for attempt in policy.retrying():
    with attempt:
        assert_type(attempt.number, int)

ir.RetryPolicy(on=ConnectionError, attempts="3")  # type: ignore[arg-type]
ir.RetryPolicy(on=ConnectionError, backoff=ir.Backoff(jitter="random"))  # type: ignore[arg-type]
ir.Backoff(initial="1")  # type: ignore[arg-type]
assert_type(ir.Backoff.constant(1).delay(1), float)
