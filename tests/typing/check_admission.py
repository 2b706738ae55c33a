"""Checked by mypy (never run): admission control and timeouts keep signatures and protocols.

Every ``type: ignore`` below marks a misuse that must stay an error: with
``warn_unused_ignores`` a loosened signature makes the ignore unused and fails the check.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

from invresilience._admission import (
    AIMD,
    AdaptiveLimiter,
    Bulkhead,
    Gradient2,
    MemoryRateLimitStore,
    RateLimiter,
)
from invresilience._timeout import Timeout, remaining
from invresilience.testing import ManualClock
from invresilience.typing import Admission, Permit, RateLimitStore

clock = ManualClock()
limiter = RateLimiter(50, per=datetime.timedelta(seconds=1), burst=10, clock=clock)
bulkhead = Bulkhead(3, max_queue=5, queue_timeout=0.5)
adaptive = AdaptiveLimiter(AIMD(latency_target=0.3), initial_limit=10, max_limit=100)
gradient = AdaptiveLimiter(Gradient2(tolerance=1.2, queue_size=math.sqrt))
timeout = Timeout(2.0, strict=True, clock=clock)

# Every limiter is an Admission; the memory store is a RateLimitStore.
admissions: list[Admission] = [limiter, bulkhead, adaptive, gradient]
store: RateLimitStore = MemoryRateLimitStore(clock)
shared = RateLimiter(10, burst=1, store=store)


@limiter
@bulkhead
@adaptive
@timeout
def push(sku: str, *, quantity: int = 1) -> int:
    return quantity


@limiter
@bulkhead
@adaptive
@timeout
async def apush(sku: str) -> int:
    return 0


assert_type(push("A"), int)
assert_type(push("A", quantity=2), int)
pending = apush("A")
_ = assert_type(pending, Coroutine[Any, Any, int])
pending.close()
push(1)  # type: ignore[arg-type]
push("A", shelf=2)  # type: ignore[call-arg]
_ = apush(b"A")  # type: ignore[arg-type]

for admission in admissions:
    assert_type(admission.try_acquire(), Permit | None)
    assert_type(admission.acquire(2, key="WH-1", timeout=1.0), Permit)

permit = limiter.acquire()
permit.release("dropped", latency=0.25)
permit.release("failed")  # type: ignore[arg-type]
with bulkhead.acquire() as held:
    assert_type(held, Permit)
limiter.acquire(key=1)  # type: ignore[arg-type]
bulkhead.acquire(timeout="1")  # type: ignore[arg-type]

assert_type(limiter.call(push, "A"), int)
assert_type(bulkhead.call(push, "A", quantity=3), int)
assert_type(adaptive.call(push, "A"), int)
assert_type(timeout.call(push, "A"), int)
limiter.call(push, 1)  # type: ignore[arg-type]
timeout.call(push, "A", quantity="3")  # type: ignore[arg-type]


async def use_async() -> None:
    assert_type(await limiter.acall(apush, "A"), int)
    assert_type(await bulkhead.acall(apush, "A"), int)
    assert_type(await adaptive.acall(apush, "A"), int)
    assert_type(await timeout.acall(apush, "A"), int)
    assert_type(await limiter.aacquire(), Permit)
    await limiter.acall(apush, 1)  # type: ignore[arg-type]
    await timeout.acall(push, "A")  # type: ignore[arg-type]


assert_type(adaptive.limit, int)
assert_type(bulkhead.in_flight, int)
assert_type(bulkhead.queued, int)
assert_type(remaining(), float | None)

RateLimiter(10)  # type: ignore[call-arg]
RateLimiter("10", burst=1)  # type: ignore[arg-type]
RateLimiter(10, burst=1.5)  # type: ignore[arg-type]
Bulkhead(max_concurrent="3")  # type: ignore[arg-type]
AdaptiveLimiter("aimd")  # type: ignore[arg-type]
AIMD(backoff_ratio="0.9")  # type: ignore[arg-type]
Gradient2(queue_size="4")  # type: ignore[arg-type]
Timeout("2")  # type: ignore[arg-type]
Timeout(2.0, clock="system")  # type: ignore[arg-type]
