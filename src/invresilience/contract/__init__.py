"""Conformance suites for the store Protocols of :mod:`invresilience.typing`.

Every backend invresilience ships passes these, sync and async; run them against your own
store to know it behaves the same. Each suite is a base class whose ``test_*`` methods
pytest collects once you subclass it under a ``Test...`` name:

- :class:`BreakerStoreContract` checks a :class:`~invresilience.typing.BreakerStore`,
  :class:`AsyncBreakerStoreContract` an :class:`~invresilience.typing.AsyncBreakerStore`;
- :class:`DeadLetterStoreContract` checks a :class:`~invresilience.typing.DeadLetterStore`,
  :class:`AsyncDeadLetterStoreContract` an :class:`~invresilience.typing.AsyncDeadLetterStore`
  (their ``make_store(queue)`` takes the queue's name: see :mod:`invresilience.contract.dlq`);
- :class:`IdempotencyStoreContract` checks an :class:`~invresilience.typing.IdempotencyStore`,
  :class:`AsyncIdempotencyStoreContract` an :class:`~invresilience.typing.AsyncIdempotencyStore`;
- :class:`MembershipContract` checks a :class:`~invresilience.typing.Membership`,
  :class:`AsyncMembershipContract` an :class:`~invresilience.typing.AsyncMembership`
  (their ``make_membership(group)`` takes a group's name, and ``expire(seconds)`` lets
  leases run out: see :mod:`invresilience.contract.membership`);
- :class:`RateLimitStoreContract` checks a :class:`~invresilience.typing.RateLimitStore`,
  :class:`AsyncRateLimitStoreContract` an :class:`~invresilience.typing.AsyncRateLimitStore`.

Implement ``make_store()`` (a coroutine in the async suites), and optionally
``close_store(store)`` and ``advance(seconds)``. ``make_store`` takes no arguments (the
dead-letter suites' takes the name of a fresh queue, and need no ``advance``): hand it
what it needs from an autouse fixture. A store on a network server keeps the server's
time, which a test cannot move, so by default ``advance`` sleeps for real and the suite
keeps its waits short (a few seconds in all); a store that takes a
:class:`~invresilience.testing.ManualClock` moves it instead and sets
``exact_clock = True``, which also checks durations and boundaries to the last digit::

    import pytest
    import redis

    from invresilience.backends.memory import MemoryBreakerStore
    from invresilience.backends.redis import RedisBreakerStore
    from invresilience.contract import BreakerStoreContract
    from invresilience.testing import ManualClock


    class TestMyBreakerStore(BreakerStoreContract):
        @pytest.fixture(autouse=True)
        def _server(self, redis_url: str) -> None:
            self.client = redis.Redis.from_url(redis_url)

        def make_store(self) -> RedisBreakerStore:
            return RedisBreakerStore(self.client, prefix="test")

        def close_store(self, store: RedisBreakerStore) -> None:
            self.client.close()


    class TestMemoryBreakerStore(BreakerStoreContract):
        exact_clock = True

        def make_store(self) -> MemoryBreakerStore:
            self.clock = ManualClock()
            return MemoryBreakerStore(clock=self.clock)

        def advance(self, seconds: float) -> None:
            self.clock.advance(seconds)

The async suites need no pytest plugin: each test runs its own event loop with
:func:`asyncio.run`, and awaits ``make_store`` inside it, so loop-bound clients work.
Every check uses fresh breaker names and bucket keys, so one server can serve them all.
The suites use plain Python (no pytest import); a failed check raises
:exc:`AssertionError` saying what was expected.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from .breaker import AsyncBreakerStoreContract, BreakerStoreContract
from .dlq import AsyncDeadLetterStoreContract, DeadLetterStoreContract
from .idempotency import AsyncIdempotencyStoreContract, IdempotencyStoreContract
from .membership import AsyncMembershipContract, MembershipContract
from .ratelimit import AsyncRateLimitStoreContract, RateLimitStoreContract

__all__ = [
    "AsyncBreakerStoreContract",
    "AsyncDeadLetterStoreContract",
    "AsyncIdempotencyStoreContract",
    "AsyncMembershipContract",
    "AsyncRateLimitStoreContract",
    "BreakerStoreContract",
    "DeadLetterStoreContract",
    "IdempotencyStoreContract",
    "MembershipContract",
    "RateLimitStoreContract",
]
