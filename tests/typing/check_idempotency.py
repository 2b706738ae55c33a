"""Checked by mypy (never run): the idempotency guard keeps signatures, and misuse is caught.

Every ``type: ignore`` below marks a misuse that must stay an error: with
``warn_unused_ignores`` a loosened signature makes the ignore unused and fails the check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import assert_type

import invresilience as ir
from invresilience.backends.memory import AsyncMemoryIdempotencyStore, MemoryIdempotencyStore
from invresilience.backends.sqlite import SqliteIdempotencyStore
from invresilience.typing import (
    Acquired,
    AsyncIdempotencyStore,
    Backend,
    Claim,
    Completed,
    IdempotencyStore,
    InProgress,
    Lease,
    Mismatch,
)

if TYPE_CHECKING:
    import sqlite3

store: IdempotencyStore = MemoryIdempotencyStore()
async_store: AsyncIdempotencyStore = AsyncMemoryIdempotencyStore()
sqlite_store: IdempotencyStore = SqliteIdempotencyStore("state.db")
guard = ir.Idempotency(store, ttl=86400, lease=30.0, on_in_progress="wait", wait_timeout=5.0)
ir.Idempotency(store, on_in_progress="block")  # type: ignore[arg-type]
ir.Idempotency(store, ttl="1d")  # type: ignore[arg-type]


def adjust(sku: str, delta: int) -> dict[str, int]:
    return {sku: delta}


async def reserve(sku: str) -> str:
    return sku


assert_type(guard.run("job-1", adjust, "SKU-1", 3), dict[str, int])
assert_type(guard.run_fingerprinted("job-1", "fp", adjust, "SKU-1", delta=3), dict[str, int])
guard.run("job-1", adjust, "SKU-1", "3")  # type: ignore[arg-type]
guard.run("job-1", adjust, "SKU-1")  # type: ignore[call-arg]


async def main() -> None:
    assert_type(await guard.arun("job-2", reserve, "SKU-2"), str)
    await guard.arun("job-2", reserve, 2)  # type: ignore[arg-type]
    await guard.arun("job-2", adjust, "SKU-2", 1)  # type: ignore[arg-type]
    assert_type(await decorated_async("SKU-1"), str)


def apply(conn: sqlite3.Connection, sku: str, delta: int) -> int:
    return delta


assert_type(guard.run_in_transaction("job-3", apply, "SKU-3", 1), int)
guard.run_in_transaction("job-3", apply, "SKU-3")  # type: ignore[call-arg]


@guard(key=lambda sku, delta: f"adjust:{sku}")
def decorated(sku: str, delta: int) -> int:
    return delta


assert_type(decorated("SKU-1", 2), int)
decorated("SKU-1")  # type: ignore[call-arg]


@guard(key=lambda sku: sku, fingerprint=lambda sku: sku.upper())
async def decorated_async(sku: str) -> str:
    return sku


claim: Claim = store.claim("k", "fp", lease=5.0)
if isinstance(claim, Acquired):
    assert_type(claim.lease, Lease)
    assert_type(claim.lease.fence, int)
    store.complete(claim.lease, b"result", ttl=60.0)
    store.complete(claim.lease, "text")  # type: ignore[arg-type]
elif isinstance(claim, Completed):
    assert_type(claim.result, bytes)
elif isinstance(claim, InProgress):
    assert_type(claim.retry_after, float)
else:
    assert_type(claim, Mismatch)

assert_type(store.complete_many([], ttl=1.0), list[bool])
backend: Backend = ir.open_backend("sqlite:///state.db")
assert_type(backend.idempotency_store("orders"), IdempotencyStore)
assert_type(ir.fingerprint(("SKU-1",), {"delta": 3}), str)
codec = ir.JsonCodec(default=str)
assert_type(codec.encode({"a": 1}), bytes)
