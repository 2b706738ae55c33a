"""invresilience: retries, circuit breakers, admission control, idempotency, dead letters
and shard routing for Python bots and workers, behind one typed API.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import Any

from . import backends, exceptions, testing, typing
from ._admission import (
    AIMD,
    AdaptiveLimiter,
    Bulkhead,
    Gradient2,
    MemoryRateLimitStore,
    RateLimiter,
)
from ._breaker import (
    BreakerMetrics,
    CircuitBreaker,
    CircuitBreakerRegistry,
    CountWindow,
    TimeWindow,
    Verdict,
)
from ._clock import SystemClock
from ._codec import JsonCodec, fingerprint
from ._core.breaker import BreakerState
from ._core.dlq import DeadLetter
from ._core.jobs import DeadLettered, Done, JobOutcome, Replayed, RetryLater
from ._core.membership import MembershipView
from ._core.retry import RetryDecision
from ._core.sharding import stable_hash
from ._dlq import AsyncDeadLetterQueue, DeadLetterQueue, LetterPage, RedriveReport
from ._events import (
    AdmissionEvent,
    BreakerEvent,
    DeadLetterEvent,
    Event,
    Listener,
    LoggingListener,
    MembershipEvent,
    RetryEvent,
    add_listener,
    remove_listener,
)
from ._idempotency import Idempotency
from ._jobs import JobHandler
from ._pipeline import Fallback, Pipeline
from ._retry import Attempt, Attempts, Backoff, Outcome, RetryBudget, RetryPolicy
from ._sharding import (
    AsyncShardAssignment,
    AsyncStaticMembership,
    BoundedLoadRouter,
    HotKeyRouter,
    JumpRouter,
    RangeRouter,
    RendezvousRouter,
    RouteDiff,
    ShardAssignment,
    SlotRouter,
    StaticMembership,
    diff,
)
from ._timeout import Timeout, remaining
from .backends import open_backend
from .exceptions import (
    BackendError,
    BackendUnavailableError,
    BulkheadFullError,
    CircuitOpenError,
    CodecError,
    ConfigurationError,
    DeadLetterError,
    DeadLetterQueueFullError,
    IdempotencyError,
    IdempotencyInProgressError,
    IdempotencyKeyReuseError,
    LeaseLostError,
    MembershipConflictError,
    NoShardOwnerError,
    PayloadTooLargeError,
    RateLimitedError,
    ResilienceError,
    RetriesExhaustedError,
    RetryBudgetExhaustedError,
)
from .typing import Clock

__all__ = [
    "AIMD",
    "AdaptiveLimiter",
    "AdmissionEvent",
    "AsyncDeadLetterQueue",
    "AsyncShardAssignment",
    "AsyncStaticMembership",
    "Attempt",
    "Attempts",
    "BackendError",
    "BackendUnavailableError",
    "Backoff",
    "BoundedLoadRouter",
    "BreakerEvent",
    "BreakerMetrics",
    "BreakerState",
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreaker",
    "CircuitBreakerRegistry",
    "CircuitOpenError",
    "Clock",
    "CodecError",
    "ConfigurationError",
    "CountWindow",
    "DeadLetter",
    "DeadLetterError",
    "DeadLetterEvent",
    "DeadLetterQueue",
    "DeadLetterQueueFullError",
    "DeadLettered",
    "Done",
    "Event",
    "Fallback",
    "Gradient2",
    "HotKeyRouter",
    "Idempotency",
    "IdempotencyError",
    "IdempotencyInProgressError",
    "IdempotencyKeyReuseError",
    "JobHandler",
    "JobOutcome",
    "JsonCodec",
    "JumpRouter",
    "LeaseLostError",
    "LetterPage",
    "Listener",
    "LoggingListener",
    "MembershipConflictError",
    "MembershipEvent",
    "MembershipView",
    "MemoryRateLimitStore",
    "NoShardOwnerError",
    "Outcome",
    "PayloadTooLargeError",
    "Pipeline",
    "RangeRouter",
    "RateLimitedError",
    "RateLimiter",
    "RedriveReport",
    "RendezvousRouter",
    "Replayed",
    "ResilienceError",
    "RetriesExhaustedError",
    "RetryBudget",
    "RetryBudgetExhaustedError",
    "RetryDecision",
    "RetryEvent",
    "RetryLater",
    "RetryPolicy",
    "RouteDiff",
    "ShardAssignment",
    "SlotRouter",
    "StaticMembership",
    "SystemClock",
    "TimeWindow",
    "Timeout",
    "Verdict",
    "add_listener",
    "backends",
    "diff",
    "exceptions",
    "fingerprint",
    "open_backend",
    "remaining",
    "remove_listener",
    "stable_hash",
    "testing",
    "typing",
]


def __getattr__(name: str) -> Any:
    # The version is read from the installed metadata only when asked for: importing the
    # package stays cheap.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("invresilience")
        except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
            return "0.0.0+unknown"
    raise AttributeError(f"module 'invresilience' has no attribute {name!r}")
