"""Every error invresilience raises, in one tree.

.. code-block:: text

    ResilienceError
    ├── ConfigurationError (also ValueError)       bad configuration, raised at construction
    ├── RetriesExhaustedError                      result-based retrying gave up
    │   └── RetryBudgetExhaustedError              ... because the retry budget was spent
    ├── CircuitOpenError                           a breaker rejected the call
    ├── RateLimitedError                           a rate limiter rejected the call
    ├── BulkheadFullError                          a bulkhead had no room
    ├── CodecError (also ValueError)               a value could not be encoded or decoded
    ├── IdempotencyError
    │   ├── IdempotencyInProgressError             the same key is running elsewhere
    │   ├── IdempotencyKeyReuseError               the same key came with another payload
    │   └── LeaseLostError                         another claim took the key over
    ├── DeadLetterError
    │   ├── DeadLetterQueueFullError               a dead-letter queue is at its size cap
    │   └── PayloadTooLargeError (also ValueError) a payload is over the queue's size limit
    ├── NoShardOwnerError                          no live worker owns a key
    ├── MembershipConflictError                    a live worker already holds that name
    └── BackendError                               a store failed
        └── BackendUnavailableError                a store could not be reached

When retries run out on an *exception*, invresilience re-raises the **original**
exception, with the attempt history added as a note (:pep:`678`); it is not wrapped.
Only result-based retrying, where there is no exception to re-raise, raises
:class:`RetriesExhaustedError`.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "BulkheadFullError",
    "CircuitOpenError",
    "CodecError",
    "ConfigurationError",
    "DeadLetterError",
    "DeadLetterQueueFullError",
    "IdempotencyError",
    "IdempotencyInProgressError",
    "IdempotencyKeyReuseError",
    "LeaseLostError",
    "MembershipConflictError",
    "NoShardOwnerError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ResilienceError",
    "RetriesExhaustedError",
    "RetryBudgetExhaustedError",
]


class ResilienceError(Exception):
    """Root of every error raised by invresilience itself.

    .. versionadded:: 0.1.0
    """


class ConfigurationError(ResilienceError, ValueError):
    """A configuration value was rejected at construction.

    Attributes:
        field: The qualified name of the offending field, such as ``"RetryPolicy.attempts"``.
        value: The rejected value.

    .. versionadded:: 0.1.0
    """

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field} {problem}, got {value!r}")


class RetriesExhaustedError(ResilienceError):
    """Result-based retrying gave up: the last *result* was still classified as retryable.

    Attributes:
        last_result: The value the final attempt returned.
        attempts: How many attempts were made.

    .. versionadded:: 0.1.0
    """

    def __init__(self, message: str, *, last_result: Any, attempts: int) -> None:
        self.last_result = last_result
        self.attempts = attempts
        super().__init__(message)


class RetryBudgetExhaustedError(RetriesExhaustedError):
    """Result-based retrying stopped because the shared :class:`~invresilience.RetryBudget` was spent.

    For exception-based retrying the original exception is re-raised instead.

    .. versionadded:: 0.1.0
    """


class CircuitOpenError(ResilienceError):
    """A circuit breaker rejected the call without running it.

    A fresh instance is raised every time, so tracebacks never accumulate.

    Attributes:
        name: The breaker's name.
        retry_after: Seconds until the breaker will next admit a probe, if known.

    .. versionadded:: 0.1.0
    """

    def __init__(self, name: str, retry_after: float | None = None) -> None:
        super().__init__(name, retry_after)

    # A rejection is a hot path: breakers build this error with ``__new__`` (which stores
    # ``args``) and skip ``__init__``, so the attributes read ``args`` and the message is
    # built only when printed.

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self.args[0]  # type: ignore[no-any-return]

    @property
    def retry_after(self) -> float | None:
        """Seconds until the breaker will next admit a probe, if known."""
        return self.args[1]  # type: ignore[no-any-return]

    def __str__(self) -> str:
        hint = "" if self.retry_after is None else f"; retry in {self.retry_after:.3g} s"
        return f"circuit {self.name!r} is open{hint}"


class RateLimitedError(ResilienceError):
    """A rate limiter rejected the call.

    Attributes:
        retry_after: Seconds until a permit is expected to be available.

    .. versionadded:: 0.1.0
    """

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        self.retry_after = retry_after
        self.message = message
        super().__init__(retry_after, message)

    def __str__(self) -> str:
        return self.message or f"rate limited; retry in {self.retry_after:.3g} s"


class BulkheadFullError(ResilienceError):
    """A bulkhead had no free slot and its waiting queue was full or timed out.

    .. versionadded:: 0.1.0
    """


class CodecError(ResilienceError, ValueError):
    """A codec could not encode a value (or decode stored bytes); the message says which.

    .. versionadded:: 0.1.0
    """


class IdempotencyError(ResilienceError):
    """Base class of the idempotency errors.

    Attributes:
        key: The idempotency key concerned.

    .. versionadded:: 0.1.0
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


class IdempotencyInProgressError(IdempotencyError):
    """Another worker holds the claim on this key.

    Attributes:
        retry_after: Seconds until that claim's lease ends, by the store's clock
            (``None`` when unknown): the key may be claimed again then, unless the
            holder extends its lease or finishes.

    .. versionadded:: 0.1.0
    """

    def __init__(self, key: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        when = "" if retry_after is None else f"; its lease ends in {retry_after:.3g} s"
        super().__init__(key, f"idempotency key {key!r} is in progress elsewhere{when}")


class IdempotencyKeyReuseError(IdempotencyError):
    """The key was seen before with a different payload fingerprint.

    .. versionadded:: 0.1.0
    """

    def __init__(self, key: str) -> None:
        super().__init__(key, f"idempotency key {key!r} was already used with a different payload")


class LeaseLostError(IdempotencyError):
    """The presented lease no longer holds its key: another claim took it over.

    Nothing was changed. The work may have run twice: pass :attr:`Lease.fence
    <invresilience.typing.Lease.fence>` to the systems you write to, so that they can
    refuse the writes of a lease that was taken over.

    Attributes:
        fence: The fence of the lost lease.

    .. versionadded:: 0.1.0
    """

    def __init__(self, key: str, fence: int | None = None) -> None:
        self.fence = fence
        super().__init__(key, f"the lease on idempotency key {key!r} (fence {fence}) was lost")


class DeadLetterError(ResilienceError):
    """Base class of the dead-letter queue errors.

    Attributes:
        queue: The name of the dead-letter queue concerned.

    .. versionadded:: 0.1.0
    """

    def __init__(self, queue: str, message: str) -> None:
        self.queue = queue
        super().__init__(message)


class DeadLetterQueueFullError(DeadLetterError):
    """The queue holds ``max_letters`` letters and its policy is ``when_full="reject"``.

    Nothing was stored. A job handler lets this propagate, so the job is not
    acknowledged and its broker keeps it: redrive or purge letters to make room.

    Attributes:
        limit: The queue's ``max_letters``.

    .. versionadded:: 0.1.0
    """

    def __init__(self, queue: str, limit: int) -> None:
        self.limit = limit
        super().__init__(
            queue,
            f"dead-letter queue {queue!r} is full ({limit} letters): redrive or purge "
            "letters, or raise max_letters",
        )


class PayloadTooLargeError(DeadLetterError, ValueError):
    """An encoded payload is larger than the queue's ``max_payload_bytes``; nothing was stored.

    Attributes:
        size: The encoded (and redacted) payload's size in bytes.
        limit: The queue's ``max_payload_bytes``.

    .. versionadded:: 0.1.0
    """

    def __init__(self, queue: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            queue,
            f"payload of {size} bytes is over dead-letter queue {queue!r}'s limit of "
            f"{limit} bytes (max_payload_bytes); it was not stored, nor truncated",
        )


class NoShardOwnerError(ResilienceError):
    """No live worker owns the key at the current membership version.

    .. versionadded:: 0.1.0
    """


class MembershipConflictError(ResilienceError):
    """A worker tried to join a group under a name a live worker already holds.

    Names must be unique among live workers: two processes acting as one member would both
    own its keys. A worker restarted under its old name can join once the old lease has
    run out.

    Attributes:
        group: The group.
        member: The name in use.
        retry_after: Seconds left on the other holder's lease, on the store's clock.

    .. versionadded:: 0.1.0
    """

    def __init__(self, group: str, member: str, retry_after: float) -> None:
        self.group = group
        self.member = member
        self.retry_after = retry_after
        super().__init__(
            f"member {member!r} of group {group!r} is live in another process; "
            f"its lease ends in {retry_after:.3g} s (names must be unique among live workers)"
        )


class BackendError(ResilienceError):
    """A backend store failed; the driver's exception is chained as ``__cause__``.

    .. versionadded:: 0.1.0
    """


class BackendUnavailableError(BackendError):
    """A backend store could not be reached.

    .. versionadded:: 0.1.0
    """
