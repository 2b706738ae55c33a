"""Job handling: one queue message through idempotency, the pipeline and the dead-letter queue.

:class:`JobHandler` ties the capabilities together for a queue consumer:

validate → claim the idempotency key (counting the delivery) → run the handler under the
pipeline → complete, or release and decide: retry later, or dead-letter.

The decisions (:meth:`JobHandler._classify`, :meth:`JobHandler._after_claim`) are made
once, in plain methods; :meth:`~JobHandler.process` and :meth:`~JobHandler.aprocess` only
do the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs
from typing_extensions import final

from ._codec import fingerprint as fingerprint_of
from ._core.dlq import Reason, letter_id_for_key
from ._core.idempotency import Acquired, Completed, InProgress, Lease, Mismatch, check_key
from ._core.jobs import DeadLettered, Done, JobOutcome, Replayed, RetryLater
from ._dlq import AsyncDeadLetterQueue, DeadLetterQueue
from ._idempotency import _HEARTS, Idempotency, _cancel, _Holder
from ._retry import Backoff
from .exceptions import (
    BackendError,
    CodecError,
    ConfigurationError,
    IdempotencyKeyReuseError,
    LeaseLostError,
)

if TYPE_CHECKING:
    from ._core.dlq import DeadLetter
    from ._core.idempotency import Claim
    from .typing import IdempotencyStore

__all__ = ["JobHandler"]

Fatal = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


def _callable(
    field: str, *, optional: bool = False
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        if not callable(value):
            raise ConfigurationError(
                f"JobHandler.{field}", value, "must be callable" + (" or None" if optional else "")
            )

    return check


def _check_idempotency(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, Idempotency):
        raise ConfigurationError(
            "JobHandler.idempotency", value, "must be an Idempotency guard or None"
        )


def _check_dead_letters(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, (DeadLetterQueue, AsyncDeadLetterQueue)):
        raise ConfigurationError(
            "JobHandler.dead_letters",
            value,
            "must be a DeadLetterQueue (backend.dead_letter_queue(name)): where bad jobs go",
        )


def _check_max_deliveries(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError("JobHandler.max_deliveries", value, "must be an int >= 1")


def _fatal(value: Any) -> Callable[[BaseException], bool]:
    if isinstance(value, type) and issubclass(value, BaseException):
        value = (value,)
    if isinstance(value, tuple):
        for kind in value:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise ConfigurationError(
                    "JobHandler.fatal", value, "must be exception types or a callable"
                )
        kinds = value
        return lambda exc: isinstance(exc, kinds)
    if callable(value):
        return cast("Callable[[BaseException], bool]", value)
    raise ConfigurationError("JobHandler.fatal", value, "must be exception types or a callable")


def _check_backoff(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, Backoff):
        raise ConfigurationError("JobHandler.backoff", value, "must be a Backoff")


@attrs.frozen
class _Prepared:
    """A job that passed validation, with its key and fingerprint."""

    value: Any
    key: str | None
    fingerprint: str | None


@final
@attrs.frozen(kw_only=True)
class JobHandler:
    """Process queue messages so that each job takes effect once, or lands in a dead-letter queue.

    ``handler.process(job, deliveries=n)`` returns what the consumer should do with the
    message:

    - :class:`~invresilience.Done` / :class:`~invresilience.Replayed`: acknowledge it (the
      job ran now, or had run already: its key's stored result is replayed);
    - :class:`~invresilience.RetryLater`: have the broker deliver it again after
      ``delay`` seconds (from *backoff*, or the error's ``retry_after``);
    - :class:`~invresilience.DeadLettered`: acknowledge it: it is in *dead_letters*.

    Each outcome has ``.ack``. Steps:

    1. *validate* turns the message into a job (parse, check fields, build your model);
       if it raises, or *key* cannot be computed, the message is dead-lettered as
       ``"invalid"`` with the error. The worker keeps running and nothing is dropped.
    2. With *idempotency*, the job's key is claimed. A key already done replays; a key
       reused with another payload is dead-lettered as ``"poison"``; a key another
       worker is running is retried later. The claim's fence counts the deliveries, so
       the count includes deliveries whose worker died: a job that has been delivered
       more than *max_deliveries* times without finishing is dead-lettered as
       ``"crash_loop"`` without running again.
    3. The handler runs under *pipeline*. Success completes the key. A failure releases
       it, then: an error *fatal* says is fatal is dead-lettered as ``"fatal"`` at once;
       another, on the last allowed delivery, as ``"exhausted"``; otherwise the job is
       retried later.

    A job dead-lettered by an earlier delivery (its worker died before acknowledging)
    is recognised on redelivery and acknowledged, not stored twice: the letter's id is
    derived from the key and fingerprint. :meth:`process` raises only when the job
    could not be kept anywhere: the dead-letter queue refused it
    (:exc:`~invresilience.exceptions.DeadLetterQueueFullError`,
    :exc:`~invresilience.exceptions.PayloadTooLargeError`), a store failed
    (:exc:`~invresilience.exceptions.BackendError`), or a :class:`BaseException` such as
    :exc:`KeyboardInterrupt` stopped the worker. Leave the message unacknowledged then.

    Args:
        handle: The work, called with the validated job (``def`` for :meth:`process`;
            ``def`` or ``async def`` for :meth:`aprocess`).
        key: The job's idempotency key (required: a silent default would run jobs twice).
        dead_letters: Where jobs that cannot be processed go (required).
        pipeline: A policy (:class:`~invresilience.Pipeline`, :class:`~invresilience.RetryPolicy`,
            a breaker ...) wrapped around *handle*.
        idempotency: The guard whose store, lease, ttl and codec are used; without it,
            jobs are not deduplicated and only the broker's *deliveries* are counted.
        max_deliveries: Deliveries allowed before a retryable failure dead-letters.
        fatal: Exception types (or a predicate) that are not worth retrying.
        validate: Turns the raw message into the job, raising on malformed input.
        fingerprint: The job's payload fingerprint (default: :func:`~invresilience.fingerprint`
            of the validated job; give one when the job is not JSON).
        backoff: The redelivery delays (attempt = delivery number).

    Raises:
        ConfigurationError: A setting is invalid.

    .. versionadded:: 0.1.0
    """

    handle: Callable[[Any], Any] = attrs.field(kw_only=False, validator=_callable("handle"))
    key: Callable[[Any], str] = attrs.field(validator=_callable("key"))
    dead_letters: DeadLetterQueue | AsyncDeadLetterQueue = attrs.field(
        validator=_check_dead_letters
    )
    pipeline: Callable[[Callable[..., Any]], Callable[..., Any]] | None = attrs.field(
        default=None, validator=_callable("pipeline", optional=True)
    )
    idempotency: Idempotency | None = attrs.field(default=None, validator=_check_idempotency)
    max_deliveries: int = attrs.field(default=5, validator=_check_max_deliveries)
    fatal: Fatal = ()
    validate: Callable[[Any], Any] | None = attrs.field(
        default=None, validator=_callable("validate", optional=True)
    )
    fingerprint: Callable[[Any], str] | None = attrs.field(
        default=None, validator=_callable("fingerprint", optional=True)
    )
    backoff: Backoff = attrs.field(
        factory=lambda: Backoff(initial=1.0, maximum=300.0, jitter="full"), validator=_check_backoff
    )
    _call: Callable[[Any], Any] = attrs.field(init=False, repr=False, eq=False)
    _is_fatal: Callable[[BaseException], bool] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        call = self.handle if self.pipeline is None else self.pipeline(self.handle)
        object.__setattr__(self, "_call", call)
        object.__setattr__(self, "_is_fatal", _fatal(self.fatal))

    # -- the decisions (no I/O) -----------------------------------------------------------------

    def _prepare(self, job: Any) -> _Prepared | Exception:
        """Validate *job* and compute its key and fingerprint, or the error that stopped it."""
        try:
            value = job if self.validate is None else self.validate(job)
            key = self.key(value)
            problem = check_key(key)
            if problem is not None:
                raise ConfigurationError("key(job)", key, problem)
            if self.idempotency is None:
                return _Prepared(value, key, None)
            fp: object = (
                fingerprint_of((value,)) if self.fingerprint is None else self.fingerprint(value)
            )
            if not isinstance(fp, str) or not fp:
                raise ConfigurationError("fingerprint(job)", fp, "must be a non-empty str")
        except Exception as exc:  # noqa: BLE001 -- any validation failure means "invalid"
            return exc
        return _Prepared(value, key, fp)

    def _after_claim(self, claim: Claim, job: _Prepared) -> Lease | JobOutcome | Exception:
        """The lease to run under, an outcome already decided, or the poison error."""
        if isinstance(claim, Acquired):
            return claim.lease
        if isinstance(claim, Completed):
            guard = cast("Idempotency", self.idempotency)
            return Replayed(guard.codec.decode(claim.result))
        if isinstance(claim, InProgress):
            return RetryLater(claim.retry_after, None)
        assert isinstance(claim, Mismatch)
        return IdempotencyKeyReuseError(cast("str", job.key))

    def _classify(self, exc: Exception, deliveries: int) -> RetryLater | Reason:
        """A failed delivery: retry later (and when), or the dead-letter reason."""
        if self._is_fatal(exc):
            return "fatal"
        if deliveries >= self.max_deliveries:
            return "exhausted"
        return RetryLater(_hint(exc) or self.backoff.delay(deliveries), exc)

    @staticmethod
    def _letter_id(job: _Prepared | None) -> str | None:
        if job is None or job.key is None:
            return None
        return letter_id_for_key(f"{job.key}\n{job.fingerprint or ''}")

    @staticmethod
    def _count(deliveries: int | None, lease: Lease | None) -> int:
        """Deliveries so far, this one included: the broker's count or the claim's fence."""
        count = 1 if deliveries is None else deliveries
        return max(count, lease.fence) if lease is not None else count

    # -- sync ----------------------------------------------------------------------------------

    def process(
        self, job: Any, *, deliveries: int | None = None, headers: Mapping[str, str] | None = None
    ) -> JobOutcome:
        """Process one message; what to do with it (see the class).

        Args:
            job: The message as received (or as decoded by your consumer).
            deliveries: The broker's delivery count for it, this delivery included
                (RabbitMQ quorum queues: ``x-delivery-count + 1``), if known.
            headers: Stored with the letter if the job is dead-lettered (message id,
                trace id, tenant).

        .. versionadded:: 0.1.0
        """
        _check_deliveries(deliveries)
        if isinstance(self.dead_letters, AsyncDeadLetterQueue):
            raise ConfigurationError(
                "JobHandler.dead_letters", self.dead_letters, "is async: use aprocess()"
            )
        prepared = self._prepare(job)
        if isinstance(prepared, Exception):
            return self._dead_letter(job, None, "invalid", prepared, deliveries or 1, headers)
        store = self._store()
        lease: Lease | None = None
        if store is not None:
            guard = cast("Idempotency", self.idempotency)
            claim = store.claim(
                cast("str", prepared.key),
                cast("str", prepared.fingerprint),
                lease=guard.lease,
                ttl=guard.ttl,
            )
            step = self._after_claim(claim, prepared)
            if isinstance(step, Exception):
                return self._dead_letter(job, prepared, "poison", step, deliveries or 1, headers)
            if not isinstance(step, Lease):
                return step
            lease = step
        count = self._count(deliveries, lease)
        if count > 1:
            letter = self._existing(prepared)
            if letter is not None:
                self._release(store, lease)
                return DeadLettered(letter.reason, letter.id, None, duplicate=True)
        if count > self.max_deliveries:
            outcome = self._dead_letter(job, prepared, "crash_loop", None, count, headers)
            self._release(store, lease)
            return outcome
        return self._run(job, prepared, store, lease, count, headers, redrive=False)

    def process_letter(self, letter: DeadLetter, job: Any) -> JobOutcome:
        """Run a dead letter's job again: what :meth:`DeadLetterQueue.redrive
        <invresilience.DeadLetterQueue.redrive>` calls.

        Like :meth:`process`, but it never dead-letters (the letter is still in its
        queue, which records a failure) and skips the delivery count: a redrive is one
        deliberate attempt. Its key is the letter's, so a job that completed meanwhile
        is :class:`~invresilience.Replayed` and leaves the queue as skipped.

        .. versionadded:: 0.1.0
        """
        prepared = self._prepare(job)
        if isinstance(prepared, Exception):
            return DeadLettered("invalid", letter.id, prepared)
        store = self._store()
        lease: Lease | None = None
        if store is not None:
            guard = cast("Idempotency", self.idempotency)
            step = self._after_claim(
                store.claim(
                    cast("str", prepared.key),
                    cast("str", prepared.fingerprint),
                    lease=guard.lease,
                    ttl=guard.ttl,
                ),
                prepared,
            )
            if isinstance(step, Exception):
                return DeadLettered("poison", letter.id, step)
            if not isinstance(step, Lease):
                return step
            lease = step
        return self._run(job, prepared, store, lease, letter.attempts + 1, None, redrive=True)

    def _store(self) -> IdempotencyStore | None:
        return None if self.idempotency is None else self.idempotency._sync_store()

    def _existing(self, job: _Prepared) -> DeadLetter | None:
        letter_id = cast("str", self._letter_id(job))  # a validated job always has its key
        return cast("DeadLetterQueue", self.dead_letters).get(letter_id)

    def _run(
        self,
        job: Any,
        prepared: _Prepared,
        store: IdempotencyStore | None,
        lease: Lease | None,
        count: int,
        headers: Mapping[str, str] | None,
        *,
        redrive: bool,
    ) -> JobOutcome:
        guard = self.idempotency
        beat = (
            _HEARTS.start(store, lease)
            if store is not None and lease is not None and guard is not None and guard.heartbeat
            else None
        )
        try:
            result = self._call(prepared.value)
        except Exception as exc:  # noqa: BLE001 -- classified below; BaseException propagates
            if beat is not None:
                _HEARTS.stop(beat)
                lease = beat.lease
            self._release(store, lease)
            decision = self._classify(exc, count)
            if isinstance(decision, RetryLater):
                return decision
            if redrive:
                return DeadLettered(decision, None, exc)
            return self._dead_letter(job, prepared, decision, exc, count, headers)
        except BaseException:
            if beat is not None:
                _HEARTS.stop(beat)
                lease = beat.lease
            self._release(store, lease)
            raise
        if beat is not None:
            _HEARTS.stop(beat)
            lease = beat.lease
        if store is None or lease is None or guard is None:
            return Done(result)
        try:
            data = guard.codec.encode(result)
        except CodecError as exc:
            # The work ran, but its result cannot be kept: a bug to fix, not to retry.
            self._release(store, lease)
            if redrive:
                return DeadLettered("fatal", None, exc)
            return self._dead_letter(job, prepared, "fatal", exc, count, headers)
        try:
            store.complete(lease, data, ttl=guard.ttl)
        except LeaseLostError as exc:
            # Another delivery took the key over: let the broker redeliver, and the
            # next claim replays its result or waits for it. Never acknowledge blindly.
            return RetryLater(0.0, exc)
        return Done(result)

    def _release(self, store: IdempotencyStore | None, lease: Lease | None) -> None:
        if store is not None and lease is not None:
            with contextlib.suppress(LeaseLostError, BackendError):
                store.release(lease)

    def _dead_letter(
        self,
        job: Any,
        prepared: _Prepared | None,
        reason: Reason,
        error: BaseException | None,
        count: int,
        headers: Mapping[str, str] | None,
    ) -> DeadLettered:
        queue = cast("DeadLetterQueue", self.dead_letters)
        letter = queue.put(job, **self._letter_args(prepared, reason, error, count, headers))
        return DeadLettered(letter.reason, letter.id, error)

    def _letter_args(
        self,
        prepared: _Prepared | None,
        reason: Reason,
        error: BaseException | None,
        count: int,
        headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        return {
            "reason": reason,
            "error": error,
            "key": None if prepared is None else prepared.key,
            "fingerprint": None if prepared is None else prepared.fingerprint,
            "attempts": count,
            "headers": headers,
            "id": self._letter_id(prepared),
        }

    # -- async ---------------------------------------------------------------------------------

    async def aprocess(
        self, job: Any, *, deliveries: int | None = None, headers: Mapping[str, str] | None = None
    ) -> JobOutcome:
        """The async twin of :meth:`process`; *handle* may be ``async def`` or ``def``.

        .. versionadded:: 0.1.0
        """
        _check_deliveries(deliveries)
        prepared = self._prepare(job)
        if isinstance(prepared, Exception):
            return await self._adead_letter(
                job, None, "invalid", prepared, deliveries or 1, headers
            )
        store = None if self.idempotency is None else self.idempotency._async_store()
        lease: Lease | None = None
        if store is not None:
            guard = cast("Idempotency", self.idempotency)
            claim = await store.claim(
                cast("str", prepared.key),
                cast("str", prepared.fingerprint),
                lease=guard.lease,
                ttl=guard.ttl,
            )
            step = self._after_claim(claim, prepared)
            if isinstance(step, Exception):
                return await self._adead_letter(
                    job, prepared, "poison", step, deliveries or 1, headers
                )
            if not isinstance(step, Lease):
                return step
            lease = step
        count = self._count(deliveries, lease)
        if count > 1:
            letter = await self._aexisting(prepared)
            if letter is not None:
                await self._arelease(store, lease)
                return DeadLettered(letter.reason, letter.id, None, duplicate=True)
        if count > self.max_deliveries:
            outcome = await self._adead_letter(job, prepared, "crash_loop", None, count, headers)
            await self._arelease(store, lease)
            return outcome
        return await self._arun(job, prepared, store, lease, count, headers, redrive=False)

    async def aprocess_letter(self, letter: DeadLetter, job: Any) -> JobOutcome:
        """The async twin of :meth:`process_letter`.

        .. versionadded:: 0.1.0
        """
        prepared = self._prepare(job)
        if isinstance(prepared, Exception):
            return DeadLettered("invalid", letter.id, prepared)
        store = None if self.idempotency is None else self.idempotency._async_store()
        lease: Lease | None = None
        if store is not None:
            guard = cast("Idempotency", self.idempotency)
            step = self._after_claim(
                await store.claim(
                    cast("str", prepared.key),
                    cast("str", prepared.fingerprint),
                    lease=guard.lease,
                    ttl=guard.ttl,
                ),
                prepared,
            )
            if isinstance(step, Exception):
                return DeadLettered("poison", letter.id, step)
            if not isinstance(step, Lease):
                return step
            lease = step
        return await self._arun(
            job, prepared, store, lease, letter.attempts + 1, None, redrive=True
        )

    async def _aexisting(self, job: _Prepared) -> DeadLetter | None:
        letter_id = cast("str", self._letter_id(job))  # a validated job always has its key
        queue = self.dead_letters
        if isinstance(queue, AsyncDeadLetterQueue):
            return await queue.get(letter_id)
        return await asyncio.to_thread(queue.get, letter_id)

    async def _arun(
        self,
        job: Any,
        prepared: _Prepared,
        store: Any,
        lease: Lease | None,
        count: int,
        headers: Mapping[str, str] | None,
        *,
        redrive: bool,
    ) -> JobOutcome:
        guard = self.idempotency
        holder = None if lease is None else _Holder(lease)
        beat = (
            asyncio.ensure_future(guard._abeat(store, holder))
            if guard is not None and guard.heartbeat and holder is not None
            else None
        )
        try:
            result = self._call(prepared.value)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # noqa: BLE001 -- classified below; BaseException propagates
            await _cancel(beat)
            await self._arelease(store, None if holder is None else holder.lease)
            decision = self._classify(exc, count)
            if isinstance(decision, RetryLater):
                return decision
            if redrive:
                return DeadLettered(decision, None, exc)
            return await self._adead_letter(job, prepared, decision, exc, count, headers)
        except BaseException:
            await _cancel(beat)
            await self._arelease(store, None if holder is None else holder.lease)
            raise
        await _cancel(beat)
        if store is None or holder is None or guard is None:
            return Done(result)
        try:
            data = guard.codec.encode(result)
        except CodecError as exc:
            await self._arelease(store, holder.lease)
            if redrive:
                return DeadLettered("fatal", None, exc)
            return await self._adead_letter(job, prepared, "fatal", exc, count, headers)
        try:
            await store.complete(holder.lease, data, ttl=guard.ttl)
        except LeaseLostError as exc:
            return RetryLater(0.0, exc)
        return Done(result)

    @staticmethod
    async def _arelease(store: Any, lease: Lease | None) -> None:
        if store is not None and lease is not None:
            with contextlib.suppress(LeaseLostError, BackendError):
                await store.release(lease)

    async def _adead_letter(
        self,
        job: Any,
        prepared: _Prepared | None,
        reason: Reason,
        error: BaseException | None,
        count: int,
        headers: Mapping[str, str] | None,
    ) -> DeadLettered:
        args = self._letter_args(prepared, reason, error, count, headers)
        queue = self.dead_letters
        if isinstance(queue, AsyncDeadLetterQueue):
            letter = await queue.put(job, **args)
        else:
            letter = await asyncio.to_thread(lambda: queue.put(job, **args))
        return DeadLettered(letter.reason, letter.id, error)


def _hint(exc: BaseException) -> float | None:
    """The error's own ``retry_after`` (seconds or a timedelta), if it has a usable one."""
    hint = getattr(exc, "retry_after", None)
    if isinstance(hint, datetime.timedelta):
        hint = hint.total_seconds()
    if isinstance(hint, bool) or not isinstance(hint, (int, float)) or not math.isfinite(hint):
        return None
    return max(float(hint), 0.0) or None


def _check_deliveries(deliveries: object) -> None:
    if deliveries is not None and (
        isinstance(deliveries, bool) or not isinstance(deliveries, int) or deliveries < 1
    ):
        raise ConfigurationError("deliveries", deliveries, "must be None or an int >= 1")
