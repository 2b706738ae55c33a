"""The conformance suite for :class:`~invresilience.typing.IdempotencyStore` and its async twin.

Subclass :class:`IdempotencyStoreContract` (or :class:`AsyncIdempotencyStoreContract`) in
a test module under a name pytest collects (``Test...``) and say how to make your store;
the inherited ``test_*`` methods check every rule of the Protocol: atomic claims, fences,
fingerprints in every state, stale leases, retention and the batch calls. See
:mod:`invresilience.contract` for a worked example.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .._clock import SYSTEM_CLOCK
from .._core.idempotency import Acquired, Completed, InProgress, Lease, Mismatch
from ..exceptions import ConfigurationError, LeaseLostError
from .breaker import _expect, _run_now, _unique

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Sequence

    from .._core.idempotency import Claim
    from ..typing import AsyncIdempotencyStore, IdempotencyStore

__all__ = ["AsyncIdempotencyStoreContract", "IdempotencyStoreContract"]

_C = TypeVar("_C")
#: A lease the suite never waits out.
LONG = 60.0
#: A retention the suite never waits out.
KEEP = 3600.0
#: Bytes no text codec would produce: NUL, invalid UTF-8, every byte value.
BINARY = bytes(range(256)) + b"\x00\xff\xfe"


class _Harness:
    """What a check gets: the store (async view), a way to let time pass, and the knobs."""

    __slots__ = ("advance", "exact", "short", "store")

    def __init__(
        self,
        store: AsyncIdempotencyStore,
        advance: Callable[[float], Awaitable[None]],
        *,
        exact: bool,
        short: float,
    ) -> None:
        self.store = store
        self.advance = advance
        self.exact = exact
        self.short = short

    def key(self) -> str:
        return _unique("idem")

    async def acquire(self, key: str, fingerprint: str = "fp-1", lease: float = LONG) -> Lease:
        claim = await self.store.claim(key, fingerprint, lease=lease, ttl=KEEP)
        return _is(Acquired, claim, f"claiming {key!r}").lease

    def expect_retry_after(self, expected: float, actual: float, what: str) -> None:
        """*actual* is *expected* seconds, less the real time that passed (none if exact)."""
        if self.exact:
            ok = math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-6)
        else:
            # Stores may round to their clock's resolution (milliseconds on Redis).
            ok = expected - 5.0 <= actual <= expected + 0.002
        if not ok:
            raise AssertionError(f"{what}: expected retry_after {expected!r} s, got {actual!r}")


def _is(kind: type[_C], value: object, what: str) -> _C:
    if not isinstance(value, kind):
        raise AssertionError(f"{what}: expected {kind.__name__}, got {value!r}")
    return value


async def _raises_lost(awaitable: Awaitable[Any], lease: Lease, what: str) -> None:
    try:
        await awaitable
    except LeaseLostError as exc:
        _expect(lease.key, exc.key, f"{what}: LeaseLostError.key")
    else:
        raise AssertionError(f"{what}: expected LeaseLostError, nothing was raised")


async def _raises_config(awaitable: Awaitable[Any], field: str, what: str) -> None:
    try:
        await awaitable
    except ConfigurationError as exc:
        _expect(field, exc.field, f"{what}: ConfigurationError.field")
    else:
        raise AssertionError(f"{what}: expected ConfigurationError, nothing was raised")


# -- the checks -------------------------------------------------------------------------------


async def _first_claim_acquires(h: _Harness) -> None:
    key = h.key()
    claim = await h.store.claim(key, "fp-1", lease=LONG, ttl=KEEP)
    lease = _is(Acquired, claim, "the first claim").lease
    _expect(key, lease.key, "lease.key")
    _expect("fp-1", lease.fingerprint, "lease.fingerprint")
    _expect(LONG, lease.duration, "lease.duration")
    fence: object = lease.fence
    if not (isinstance(fence, int) and fence >= 1):
        raise AssertionError(f"lease.fence: expected an int >= 1, got {fence!r}")
    token: object = lease.token
    if not (isinstance(token, str) and token):
        raise AssertionError(f"lease.token: expected a non-empty str, got {token!r}")


async def _a_running_lease_is_in_progress(h: _Harness) -> None:
    key = h.key()
    lease = await h.acquire(key, lease=LONG)
    claim = await h.store.claim(key, "fp-1", lease=LONG, ttl=KEEP)
    busy = _is(InProgress, claim, "a claim while the lease runs")
    _expect(key, busy.key, "InProgress.key")
    _expect(lease.fence, busy.fence, "InProgress.fence")
    h.expect_retry_after(LONG, busy.retry_after, "InProgress.retry_after")


async def _completed_replays_the_exact_bytes(h: _Harness) -> None:
    for result in (b"", b'{"ok":true}', BINARY):
        key = h.key()
        lease = await h.acquire(key)
        await h.store.complete(lease, result, ttl=KEEP)
        claim = await h.store.claim(key, "fp-1", lease=LONG, ttl=KEEP)
        done = _is(Completed, claim, "a claim after complete")
        _expect(result, done.result, "Completed.result")
        _expect("fp-1", done.fingerprint, "Completed.fingerprint")
        _expect(key, done.key, "Completed.key")


async def _a_large_result_round_trips(h: _Harness) -> None:
    key = h.key()
    result = BINARY * 4096  # about 1 MiB
    lease = await h.acquire(key)
    await h.store.complete(lease, result, ttl=KEEP)
    done = _is(Completed, await h.store.claim(key, "fp-1", lease=LONG, ttl=KEEP), "replay")
    _expect(len(result), len(done.result), "length of a 1 MiB result")
    _expect(result, done.result, "a 1 MiB result")


async def _a_different_fingerprint_is_a_mismatch_in_every_state(h: _Harness) -> None:
    pending = h.key()
    await h.acquire(pending)
    completed = h.key()
    await h.store.complete(await h.acquire(completed), b"r", ttl=KEEP)
    released = h.key()
    await h.store.release(await h.acquire(released))
    for key, state in ((pending, "pending"), (completed, "completed"), (released, "released")):
        claim = await h.store.claim(key, "fp-other", lease=LONG, ttl=KEEP)
        mismatch = _is(Mismatch, claim, f"another payload on a {state} key")
        _expect("fp-1", mismatch.fingerprint, f"Mismatch.fingerprint ({state})")
        _expect(key, mismatch.key, f"Mismatch.key ({state})")
    # The mismatch changed nothing: the completed record still replays.
    done = await h.store.claim(completed, "fp-1", lease=LONG, ttl=KEEP)
    _is(Completed, done, "the completed key after a mismatch")


async def _release_lets_the_next_claim_run_with_a_higher_fence(h: _Harness) -> None:
    key = h.key()
    first = await h.acquire(key)
    await h.store.release(first)
    second = await h.acquire(key)
    if not second.fence > first.fence:
        raise AssertionError(f"fence after release: expected > {first.fence}, got {second.fence}")
    if second.token == first.token:
        raise AssertionError("a new claim reused the previous claim's token")
    await _raises_lost(h.store.release(first), first, "releasing the old lease again")


async def _an_expired_lease_is_taken_over_and_the_old_one_is_lost(h: _Harness) -> None:
    key = h.key()
    old = await h.acquire(key, lease=h.short)
    await h.advance(h.short)
    new = await h.acquire(key, lease=LONG)
    if not new.fence > old.fence:
        raise AssertionError(f"fence after expiry: expected > {old.fence}, got {new.fence}")
    await _raises_lost(h.store.complete(old, b"late", ttl=KEEP), old, "completing the old lease")
    await _raises_lost(h.store.extend(old, LONG), old, "extending the old lease")
    await _raises_lost(h.store.release(old), old, "releasing the old lease")
    # The stale calls changed nothing: the new lease still runs and completes.
    claim = await h.store.claim(key, "fp-1", lease=LONG, ttl=KEEP)
    busy = _is(InProgress, claim, "the key after the stale calls")
    _expect(new.fence, busy.fence, "the fence after the stale calls")
    await h.store.complete(new, b"fresh", ttl=KEEP)
    done = _is(Completed, await h.store.claim(key, "fp-1", lease=LONG, ttl=KEEP), "replay")
    _expect(b"fresh", done.result, "the result after a takeover")


async def _an_expired_lease_nobody_took_over_still_completes(h: _Harness) -> None:
    key = h.key()
    lease = await h.acquire(key, lease=h.short)
    await h.advance(h.short)
    await h.store.complete(lease, b"late but alone", ttl=KEEP)
    done = _is(Completed, await h.store.claim(key, "fp-1", lease=LONG, ttl=KEEP), "replay")
    _expect(b"late but alone", done.result, "a late completion nobody raced")


async def _a_lease_is_used_up_by_complete(h: _Harness) -> None:
    key = h.key()
    lease = await h.acquire(key)
    await h.store.complete(lease, b"once", ttl=KEEP)
    await _raises_lost(h.store.complete(lease, b"twice", ttl=KEEP), lease, "completing twice")
    await _raises_lost(h.store.release(lease), lease, "releasing after complete")
    await _raises_lost(h.store.extend(lease, LONG), lease, "extending after complete")
    done = _is(Completed, await h.store.claim(key, "fp-1", lease=LONG, ttl=KEEP), "replay")
    _expect(b"once", done.result, "the first completion wins")


async def _extend_keeps_the_lease_running(h: _Harness) -> None:
    key = h.key()
    lease = await h.acquire(key, lease=h.short)
    extended = await h.store.extend(lease, LONG)
    _expect(
        (lease.key, lease.fence, lease.token, lease.fingerprint, LONG),
        (extended.key, extended.fence, extended.token, extended.fingerprint, extended.duration),
        "the extended lease",
    )
    await h.advance(h.short)
    busy = _is(InProgress, await h.store.claim(key, "fp-1", lease=LONG, ttl=KEEP), "extended")
    h.expect_retry_after(LONG - h.short, busy.retry_after, "retry_after of an extended lease")
    await h.store.complete(extended, b"r", ttl=KEEP)


async def _a_completed_record_expires_after_its_ttl(h: _Harness) -> None:
    key = h.key()
    lease = await h.acquire(key)
    await h.store.complete(lease, b"r", ttl=h.short)
    await h.advance(h.short)
    claim = await h.store.claim(key, "fp-other", lease=LONG, ttl=KEEP)
    again = _is(Acquired, claim, "a claim after the record's ttl").lease
    _expect("fp-other", again.fingerprint, "a new payload after expiry")
    if not again.fence >= 1:
        raise AssertionError(f"fence after expiry: expected >= 1, got {again.fence}")


async def _purge_keeps_live_records(h: _Harness) -> None:
    live = h.key()
    await h.store.complete(await h.acquire(live), b"kept", ttl=KEEP)
    gone = h.key()
    await h.store.complete(await h.acquire(gone), b"gone", ttl=h.short)
    await h.advance(h.short)
    purged: object = await h.store.purge_expired(1000)
    if not (isinstance(purged, int) and purged >= 0):
        raise AssertionError(f"purge_expired(): expected an int >= 0, got {purged!r}")
    done = _is(Completed, await h.store.claim(live, "fp-1", lease=LONG, ttl=KEEP), "live")
    _expect(b"kept", done.result, "a live record after purge_expired()")
    _is(Acquired, await h.store.claim(gone, "fp-1", lease=LONG, ttl=KEEP), "expired")


async def _keys_are_independent(h: _Harness) -> None:
    one, two = h.key(), h.key()
    await h.acquire(one, "fp-1")
    await h.acquire(two, "fp-2")
    _is(InProgress, await h.store.claim(one, "fp-1", lease=LONG, ttl=KEEP), "key one")
    _is(InProgress, await h.store.claim(two, "fp-2", lease=LONG, ttl=KEEP), "key two")


async def _claim_many_answers_in_order(h: _Harness) -> None:
    fresh, busy, done, other = h.key(), h.key(), h.key(), h.key()
    busy_lease = await h.acquire(busy)
    await h.store.complete(await h.acquire(done), b"done", ttl=KEEP)
    await h.acquire(other, "fp-other")
    items: Sequence[tuple[str, str]] = [
        (fresh, "fp-1"),
        (busy, "fp-1"),
        (done, "fp-1"),
        (other, "fp-1"),
    ]
    claims: list[Claim] = await h.store.claim_many(items, lease=LONG, ttl=KEEP)
    _expect(4, len(claims), "claim_many: number of answers")
    lease = _is(Acquired, claims[0], "claim_many: a fresh key").lease
    _expect(fresh, lease.key, "claim_many: the fresh key's lease")
    _expect(busy_lease.fence, _is(InProgress, claims[1], "claim_many: a busy key").fence, "fence")
    _expect(b"done", _is(Completed, claims[2], "claim_many: a done key").result, "result")
    _is(Mismatch, claims[3], "claim_many: another payload")
    _expect([], await h.store.claim_many([], lease=LONG, ttl=KEEP), "claim_many of nothing")


async def _complete_many_reports_lost_leases(h: _Harness) -> None:
    good, stale = h.key(), h.key()
    good_lease = await h.acquire(good)
    stale_lease = await h.acquire(stale)
    await h.store.release(stale_lease)
    stored = await h.store.complete_many([(good_lease, b"a"), (stale_lease, b"b")], ttl=KEEP)
    _expect([True, False], stored, "complete_many with one lost lease")
    done = _is(Completed, await h.store.claim(good, "fp-1", lease=LONG, ttl=KEEP), "good")
    _expect(b"a", done.result, "the completed key of a batch")
    _is(Acquired, await h.store.claim(stale, "fp-1", lease=LONG, ttl=KEEP), "the lost key")
    _expect([], await h.store.complete_many([], ttl=KEEP), "complete_many of nothing")


async def _bad_arguments_are_refused(h: _Harness) -> None:
    await _raises_config(h.store.claim("", "fp", lease=LONG, ttl=KEEP), "key", "an empty key")
    await _raises_config(
        h.store.claim("k" * 513, "fp", lease=LONG, ttl=KEEP), "key", "a 513-character key"
    )
    await _raises_config(h.store.claim(h.key(), "", lease=LONG, ttl=KEEP), "fingerprint", "fp")
    await _raises_config(h.store.claim(h.key(), "fp", lease=0, ttl=KEEP), "lease", "lease 0")
    await _raises_config(h.store.claim(h.key(), "fp", lease=LONG, ttl=-1.0), "ttl", "ttl -1")
    lease = await h.acquire(h.key())
    await _raises_config(h.store.extend(lease, math.inf), "seconds", "extending by inf")
    await _raises_config(h.store.complete(lease, b"r", ttl=math.nan), "ttl", "ttl nan")
    # None of that touched the lease.
    await h.store.complete(lease, b"r", ttl=KEEP)


# -- the test classes ---------------------------------------------------------------------------


class _IdempotencyChecks:
    """The ``test_*`` methods, written once for both suites."""

    def _check(self, check: Callable[[_Harness], Coroutine[Any, Any, None]]) -> None:
        raise NotImplementedError

    def test_first_claim_acquires(self) -> None:
        """The first claim of a key acquires a lease with a fence >= 1 and a token."""
        self._check(_first_claim_acquires)

    def test_a_running_lease_is_in_progress(self) -> None:
        """While a lease runs, a claim is in progress until the lease's end."""
        self._check(_a_running_lease_is_in_progress)

    def test_completed_replays_the_exact_bytes(self) -> None:
        """A completed key replays its result byte for byte, empty and binary included."""
        self._check(_completed_replays_the_exact_bytes)

    def test_a_large_result_round_trips(self) -> None:
        """A 1 MiB binary result is stored and replayed whole."""
        self._check(_a_large_result_round_trips)

    def test_a_different_fingerprint_is_a_mismatch_in_every_state(self) -> None:
        """Another payload on a pending, completed or released key is a mismatch."""
        self._check(_a_different_fingerprint_is_a_mismatch_in_every_state)

    def test_release_lets_the_next_claim_run_with_a_higher_fence(self) -> None:
        """After release the next claim acquires, with a higher fence and a new token."""
        self._check(_release_lets_the_next_claim_run_with_a_higher_fence)

    def test_an_expired_lease_is_taken_over_and_the_old_one_is_lost(self) -> None:
        """Once a lease ran out a claim takes over; the old lease then changes nothing."""
        self._check(_an_expired_lease_is_taken_over_and_the_old_one_is_lost)

    def test_an_expired_lease_nobody_took_over_still_completes(self) -> None:
        """A lease that ran out still completes while nobody claimed the key since."""
        self._check(_an_expired_lease_nobody_took_over_still_completes)

    def test_a_lease_is_used_up_by_complete(self) -> None:
        """After complete the lease is spent: complete, release and extend are refused."""
        self._check(_a_lease_is_used_up_by_complete)

    def test_extend_keeps_the_lease_running(self) -> None:
        """extend() makes the lease run the given seconds from now."""
        self._check(_extend_keeps_the_lease_running)

    def test_a_completed_record_expires_after_its_ttl(self) -> None:
        """After its ttl a completed record is gone: any payload may claim the key."""
        self._check(_a_completed_record_expires_after_its_ttl)

    def test_purge_keeps_live_records(self) -> None:
        """purge_expired() deletes only records past their ttl."""
        self._check(_purge_keeps_live_records)

    def test_keys_are_independent(self) -> None:
        """Records of different keys share nothing."""
        self._check(_keys_are_independent)

    def test_claim_many_answers_in_order(self) -> None:
        """claim_many() answers each item as claim() would, in order."""
        self._check(_claim_many_answers_in_order)

    def test_complete_many_reports_lost_leases(self) -> None:
        """complete_many() stores what it can and reports the lost leases as False."""
        self._check(_complete_many_reports_lost_leases)

    def test_bad_arguments_are_refused(self) -> None:
        """Bad keys, fingerprints and durations raise ConfigurationError naming the field."""
        self._check(_bad_arguments_are_refused)


class _SyncIdempotencyView:
    """A sync store seen through the async Protocol; its coroutines never suspend."""

    __slots__ = ("sync",)

    def __init__(self, store: IdempotencyStore) -> None:
        self.sync = store

    async def claim(self, key: str, fingerprint: str, *, lease: float, ttl: float) -> Claim:
        return self.sync.claim(key, fingerprint, lease=lease, ttl=ttl)

    async def claim_many(
        self, items: Sequence[tuple[str, str]], *, lease: float, ttl: float
    ) -> list[Claim]:
        return self.sync.claim_many(items, lease=lease, ttl=ttl)

    async def complete(self, lease: Lease, result: bytes, *, ttl: float) -> None:
        self.sync.complete(lease, result, ttl=ttl)

    async def complete_many(
        self, items: Sequence[tuple[Lease, bytes]], *, ttl: float
    ) -> list[bool]:
        return self.sync.complete_many(items, ttl=ttl)

    async def release(self, lease: Lease) -> None:
        self.sync.release(lease)

    async def extend(self, lease: Lease, seconds: float) -> Lease:
        return self.sync.extend(lease, seconds)

    async def purge_expired(self, limit: int = 1000) -> int:
        return self.sync.purge_expired(limit)

    async def close(self) -> None:
        self.sync.close()


class IdempotencyStoreContract(_IdempotencyChecks):
    """The conformance suite for an :class:`~invresilience.typing.IdempotencyStore`.

    Subclass it as ``Test...`` and implement :meth:`make_store`; pytest runs the
    inherited ``test_*`` methods, each on a fresh store (and fresh keys).

    Attributes:
        exact_clock: ``True`` when :meth:`advance` moves the store's clock exactly (a
            :class:`~invresilience.testing.ManualClock`): durations are then checked
            exactly.
        short: The lease and retention the suite waits out, in seconds (a handful of
            times in all on a real clock).

    .. versionadded:: 0.1.0
    """

    exact_clock: ClassVar[bool] = False
    short: ClassVar[float] = 0.25

    def make_store(self) -> IdempotencyStore:
        """A store for one test. Use an autouse fixture to hand it what it needs."""
        raise NotImplementedError

    def close_store(self, store: IdempotencyStore) -> None:
        """Release *store* after its test; calls ``store.close()`` by default."""
        store.close()

    def advance(self, seconds: float) -> None:
        """Let at least *seconds* pass on the store's clock; by default sleeps (plus 20 ms)."""
        SYSTEM_CLOCK.sleep(seconds + 0.02)

    def _check(self, check: Callable[[_Harness], Coroutine[Any, Any, None]]) -> None:
        store = self.make_store()
        try:

            async def advance(seconds: float) -> None:
                self.advance(seconds)

            view: Any = _SyncIdempotencyView(store)
            harness = _Harness(view, advance, exact=self.exact_clock, short=self.short)
            _run_now(check(harness))
        finally:
            self.close_store(store)


class AsyncIdempotencyStoreContract(_IdempotencyChecks):
    """The conformance suite for an :class:`~invresilience.typing.AsyncIdempotencyStore`.

    Like :class:`IdempotencyStoreContract`, with coroutine hooks; each test runs in its
    own event loop (``asyncio.run``), inside which :meth:`make_store` is awaited.

    .. versionadded:: 0.1.0
    """

    exact_clock: ClassVar[bool] = False
    short: ClassVar[float] = 0.25

    async def make_store(self) -> AsyncIdempotencyStore:
        """A store for one test, made inside the test's event loop."""
        raise NotImplementedError

    async def close_store(self, store: AsyncIdempotencyStore) -> None:
        """Release *store* after its test; awaits ``store.close()`` by default."""
        await store.close()

    async def advance(self, seconds: float) -> None:
        """Let at least *seconds* pass on the store's clock; by default sleeps (plus 20 ms)."""
        await asyncio.sleep(seconds + 0.02)

    def _check(self, check: Callable[[_Harness], Coroutine[Any, Any, None]]) -> None:
        async def main() -> None:
            store = await self.make_store()
            try:
                harness = _Harness(store, self.advance, exact=self.exact_clock, short=self.short)
                await check(harness)
            finally:
                await self.close_store(store)

        asyncio.run(main())
