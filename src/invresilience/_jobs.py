"""Job handling: one queue message through idempotency, the pipeline and the dead-letter queue.

:class:`JobHandler` ties the capabilities together for a queue consumer:

validate → claim the idempotency key (counting the delivery) → run the handler under the
pipeline → complete, or release and decide: retry later, or dead-letter.

The steps are written once, in :meth:`JobHandler._steps`: a generator that makes every
decision and yields each I/O it needs (claim the key, look up or store a letter, run the
handler, complete or release the key) as an op. :meth:`~JobHandler.process` and
:meth:`~JobHandler.aprocess` only drive it: each op has a sync ``do`` and an async
``ado``, which differ only in the awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import math
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, TypeVar, cast

import attrs
from typing_extensions import final

from ._codec import fingerprint as fingerprint_of
from ._core.dlq import DeadLetter, Reason, letter_id_for_key
from ._core.idempotency import (
    MAX_FINGERPRINT_LENGTH,
    Acquired,
    Completed,
    InProgress,
    Lease,
    Mismatch,
    check_key,
)
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
    from ._core.idempotency import Claim
    from ._idempotency import _AsyncGuardStore
    from .typing import IdempotencyStore

__all__ = ["JobHandler"]

_T = TypeVar("_T")

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
class _Message:
    """One message to process: the job as received, its delivery count and headers; or,
    redriving a dead letter, the job and that letter."""

    job: Any
    deliveries: int | None = None
    headers: Mapping[str, str] | None = None
    redriving: DeadLetter | None = None


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
    :exc:`~invresilience.exceptions.PayloadTooLargeError`, or
    :exc:`~invresilience.exceptions.CodecError` for a job its codec cannot encode: pass
    the message as received, bytes are always kept), a store failed
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
            if not isinstance(fp, str) or not 0 < len(fp) <= MAX_FINGERPRINT_LENGTH:
                raise ConfigurationError(
                    "fingerprint(job)",
                    fp,
                    f"must be a non-empty str of at most {MAX_FINGERPRINT_LENGTH} characters",
                )
        except Exception as exc:  # noqa: BLE001 -- any validation failure means "invalid"
            return exc
        return _Prepared(value, key, fp)

    def _after_claim(self, claim: Claim, job: _Prepared) -> Lease | JobOutcome | Exception:
        """The lease to run under, an outcome already decided, or the poison error."""
        if isinstance(claim, Acquired):
            return claim.lease
        if isinstance(claim, Completed):
            guard = cast("Idempotency", self.idempotency)
            try:
                return Replayed(guard.codec.decode(claim.result))
            except CodecError:
                # The work is done; only its stored result no longer decodes (the codec
                # changed). Acknowledge it, with the bytes, rather than redeliver forever.
                return Replayed(claim.result)
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
        """The id a keyed, fingerprinted job's letter gets; ``None``: a random one.

        Without a fingerprint (no idempotency guard) two different jobs may share a key,
        and one id for both would keep only the first.
        """
        if job is None or job.key is None or job.fingerprint is None:
            return None
        return letter_id_for_key(f"{job.key}\n{job.fingerprint or ''}")

    @staticmethod
    def _count(deliveries: int | None, lease: Lease | None) -> int:
        """Deliveries so far, this one included: the broker's count or the claim's fence."""
        count = 1 if deliveries is None else deliveries
        return max(count, lease.fence) if lease is not None else count

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

    # -- the steps: everything but the I/O, which they yield -------------------------------------

    def _steps(self, message: _Message) -> _Steps[JobOutcome]:
        """:meth:`process` (or :meth:`process_letter`) with each I/O it needs yielded.

        Each I/O is yielded as an op and answered by :meth:`process` or :meth:`aprocess`
        with its result (or thrown in as the error it raised).
        """
        prepared = self._prepare(message.job)
        if isinstance(prepared, Exception):
            return (yield from self._refuse(message, None, "invalid", prepared))
        letter = message.redriving
        if letter is not None and letter.key is not None and letter.fingerprint is not None:
            # Redrive under the key and fingerprint recorded with the letter: the payload
            # may have been redacted since, and its own fingerprint would be a mismatch.
            prepared = _Prepared(prepared.value, letter.key, letter.fingerprint)
        lease: Lease | None = None
        if self.idempotency is not None:
            claim = yield _Claim(cast("str", prepared.key), cast("str", prepared.fingerprint))
            step = self._after_claim(claim, prepared)
            if isinstance(step, Exception):
                return (yield from self._refuse(message, prepared, "poison", step))
            if not isinstance(step, Lease):
                return step
            lease = step
        if message.redriving is not None:
            # A redrive is one deliberate attempt: no delivery count to check.
            count = message.redriving.attempts + 1
            return (yield from self._run(message, prepared, lease, count))
        count = self._count(message.deliveries, lease)
        letter_id = self._letter_id(prepared)
        if count > 1 and letter_id is not None:
            letter = yield _Lookup(letter_id)
            if letter is not None:
                yield from self._release(lease)
                return DeadLettered(letter.reason, letter.id, None, duplicate=True)
        if count > self.max_deliveries:
            outcome = yield from self._dead_letter(message, prepared, "crash_loop", None, count)
            yield from self._release(lease)
            return outcome
        return (yield from self._run(message, prepared, lease, count))

    def _refuse(
        self, message: _Message, prepared: _Prepared | None, reason: Reason, error: Exception
    ) -> _Steps[DeadLettered]:
        """A job that cannot run: dead-lettered, or, when redriven, left in its letter."""
        if message.redriving is not None:
            return DeadLettered(reason, message.redriving.id, error)
        count = message.deliveries or 1
        return (yield from self._dead_letter(message, prepared, reason, error, count))

    def _run(
        self, message: _Message, prepared: _Prepared, lease: Lease | None, count: int
    ) -> _Steps[JobOutcome]:
        """Run the handler under the lease (kept alive by the heartbeat), then settle the key.

        A redriven job is never dead-lettered again: its letter is still in its queue,
        which records the failure.
        """
        guard = self.idempotency
        beat = None
        if lease is not None and guard is not None and guard.heartbeat:
            beat = yield _Beat(lease)
        try:
            result = yield _Call(prepared.value)
        except Exception as exc:  # noqa: BLE001 -- classified below; BaseException propagates
            lease = yield from self._unbeat(beat, lease)
            yield from self._release(lease)
            decision = self._classify(exc, count)
            if isinstance(decision, RetryLater):
                return decision
            if message.redriving is not None:
                return DeadLettered(decision, None, exc)
            return (yield from self._dead_letter(message, prepared, decision, exc, count))
        except BaseException:
            lease = yield from self._unbeat(beat, lease)
            yield from self._release(lease)
            raise
        lease = yield from self._unbeat(beat, lease)
        if lease is None or guard is None:
            return Done(result)
        try:
            data = guard.codec.encode(result)
        except CodecError as exc:
            # The work ran, but its result cannot be kept: a bug to fix, not to retry.
            yield from self._release(lease)
            if message.redriving is not None:
                return DeadLettered("fatal", None, exc)
            return (yield from self._dead_letter(message, prepared, "fatal", exc, count))
        try:
            yield _Complete(lease, data)
        except LeaseLostError as exc:
            # Another delivery took the key over: let the broker redeliver, and the
            # next claim replays its result or waits for it. Never acknowledge blindly.
            return RetryLater(0.0, exc)
        return Done(result)

    @staticmethod
    def _unbeat(beat: object, lease: Lease | None) -> _Steps[Lease | None]:
        """Stop the heartbeat, if there is one; the lease as it last extended it."""
        if beat is None:
            return lease
        return cast("Lease", (yield _Unbeat(beat)))

    @staticmethod
    def _release(lease: Lease | None) -> _Steps[None]:
        """Give the key back (if it is held); a lost lease or a failing store is ignored."""
        if lease is not None:
            with contextlib.suppress(LeaseLostError, BackendError):
                yield _Release(lease)

    def _dead_letter(
        self,
        message: _Message,
        prepared: _Prepared | None,
        reason: Reason,
        error: BaseException | None,
        count: int,
    ) -> _Steps[DeadLettered]:
        args = self._letter_args(prepared, reason, error, count, message.headers)
        letter = cast("DeadLetter", (yield _Put(message.job, args)))
        return DeadLettered(letter.reason, letter.id, error)

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
        self._check_sync()
        return _SyncIO(self).drive(self._steps(_Message(job, deliveries, headers)))

    def _check_sync(self) -> None:
        """Refuse, before anything runs, what process() cannot drive."""
        if isinstance(self.dead_letters, AsyncDeadLetterQueue):
            raise ConfigurationError(
                "JobHandler.dead_letters", self.dead_letters, "is async: use aprocess()"
            )
        if inspect.iscoroutinefunction(self._call):
            raise ConfigurationError("JobHandler.handle", self.handle, "is async: use aprocess()")

    def process_letter(self, letter: DeadLetter, job: Any) -> JobOutcome:
        """Run a dead letter's job again: what :meth:`DeadLetterQueue.redrive
        <invresilience.DeadLetterQueue.redrive>` calls.

        Like :meth:`process`, but it never dead-letters (the letter is still in its
        queue, which records a failure) and skips the delivery count: a redrive is one
        deliberate attempt. Its key is the letter's, so a job that completed meanwhile
        is :class:`~invresilience.Replayed` and leaves the queue as skipped.

        .. versionadded:: 0.1.0
        """
        self._check_sync()
        return _SyncIO(self).drive(self._steps(_Message(job, redriving=letter)))

    # -- async ---------------------------------------------------------------------------------

    async def aprocess(
        self, job: Any, *, deliveries: int | None = None, headers: Mapping[str, str] | None = None
    ) -> JobOutcome:
        """The async twin of :meth:`process`; *handle* may be ``async def`` or ``def``.

        .. versionadded:: 0.1.0
        """
        _check_deliveries(deliveries)
        return await _AsyncIO(self).drive(self._steps(_Message(job, deliveries, headers)))

    async def aprocess_letter(self, letter: DeadLetter, job: Any) -> JobOutcome:
        """The async twin of :meth:`process_letter`.

        .. versionadded:: 0.1.0
        """
        return await _AsyncIO(self).drive(self._steps(_Message(job, redriving=letter)))


# -- the I/O the steps ask for: each op does it the sync way (do) or the async way (ado) -------


class _Claim(NamedTuple):
    """Claim the job's key (answer: the :data:`~invresilience._core.idempotency.Claim`).

    Always the first op that needs the idempotency store: the I/O takes the store here.
    """

    key: str
    fingerprint: str

    def do(self, io: _SyncIO) -> Claim:
        guard = io.guard
        io.store = guard._sync_store()
        return io.store.claim(self.key, self.fingerprint, lease=guard.lease, ttl=guard.ttl)

    async def ado(self, io: _AsyncIO) -> Claim:
        guard = io.guard
        io.store = guard._async_store()
        return await io.store.claim(self.key, self.fingerprint, lease=guard.lease, ttl=guard.ttl)


class _Lookup(NamedTuple):
    """Get the letter an earlier delivery stored (answer: it, or ``None``)."""

    letter_id: str

    def do(self, io: _SyncIO) -> DeadLetter | None:
        return cast("DeadLetterQueue", io.handler.dead_letters).get(self.letter_id)

    async def ado(self, io: _AsyncIO) -> DeadLetter | None:
        queue = io.handler.dead_letters
        if isinstance(queue, AsyncDeadLetterQueue):
            return await queue.get(self.letter_id)
        return await asyncio.to_thread(queue.get, self.letter_id)


class _Put(NamedTuple):
    """Store the job in the dead-letter queue (answer: the stored letter)."""

    job: Any
    args: dict[str, Any]

    def do(self, io: _SyncIO) -> DeadLetter:
        return cast("DeadLetterQueue", io.handler.dead_letters).put(self.job, **self.args)

    async def ado(self, io: _AsyncIO) -> DeadLetter:
        queue = io.handler.dead_letters
        if isinstance(queue, AsyncDeadLetterQueue):
            return await queue.put(self.job, **self.args)
        return await asyncio.to_thread(lambda: queue.put(self.job, **self.args))


class _Beat(NamedTuple):
    """Start extending the lease while the handler runs (answer: what :class:`_Unbeat` takes)."""

    lease: Lease

    def do(self, io: _SyncIO) -> object:
        return _HEARTS.start(io.store, self.lease)

    async def ado(self, io: _AsyncIO) -> object:
        holder = _Holder(self.lease)
        return asyncio.ensure_future(io.guard._abeat(io.store, holder)), holder


class _Unbeat(NamedTuple):
    """Stop the heartbeat (answer: the lease as last extended)."""

    beat: Any

    def do(self, io: _SyncIO) -> Lease:
        _HEARTS.stop(self.beat)
        return cast("Lease", self.beat.lease)

    async def ado(self, io: _AsyncIO) -> Lease:
        task, holder = self.beat
        await _cancel(task)
        return cast("Lease", holder.lease)


class _Call(NamedTuple):
    """Run the handler, under the pipeline, on the validated job (answer: its result)."""

    value: Any

    def do(self, io: _SyncIO) -> Any:
        result = io.handler._call(self.value)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            # Never acknowledge work that did not run: process() cannot await it.
            raise TypeError("the handler returned an awaitable: use aprocess()")
        return result

    async def ado(self, io: _AsyncIO) -> Any:
        call = io.handler._call
        if inspect.iscoroutinefunction(call):
            return await call(self.value)
        # A plain def would block the event loop, and with it the lease's heartbeat.
        result = await asyncio.to_thread(call, self.value)
        if inspect.isawaitable(result):
            result = await result
        return result


class _Complete(NamedTuple):
    """Record the encoded result under the key (answer: ``None``)."""

    lease: Lease
    data: bytes

    def do(self, io: _SyncIO) -> None:
        io.store.complete(self.lease, self.data, ttl=io.guard.ttl)

    async def ado(self, io: _AsyncIO) -> None:
        await io.store.complete(self.lease, self.data, ttl=io.guard.ttl)


class _Release(NamedTuple):
    """Give the key back (answer: ``None``)."""

    lease: Lease

    def do(self, io: _SyncIO) -> None:
        io.store.release(self.lease)

    async def ado(self, io: _AsyncIO) -> None:
        await io.store.release(self.lease)


_Op: TypeAlias = _Claim | _Lookup | _Put | _Beat | _Unbeat | _Call | _Complete | _Release
_Steps: TypeAlias = Generator[_Op, Any, _T]


class _Finished(NamedTuple):
    outcome: JobOutcome


def _next(steps: _Steps[JobOutcome], answer: Any, error: BaseException | None) -> _Op | _Finished:
    """The next op *steps* asks for, given the last one's answer or error; or the outcome."""
    try:
        return steps.send(answer) if error is None else steps.throw(error)
    except StopIteration as stop:
        return _Finished(stop.value)


class _IO:
    """One call's I/O: the handler and, once the key is claimed, its idempotency store."""

    __slots__ = ("handler", "store")

    def __init__(self, handler: JobHandler) -> None:
        self.handler = handler

    @property
    def guard(self) -> Idempotency:
        return cast("Idempotency", self.handler.idempotency)


class _SyncIO(_IO):
    __slots__ = ()
    store: IdempotencyStore

    def drive(self, steps: _Steps[JobOutcome]) -> JobOutcome:
        """Do each op *steps* asks for, and give it the answer (or the error)."""
        answer: Any = None
        error: BaseException | None = None
        while not isinstance(op := _next(steps, answer, error), _Finished):
            try:
                answer, error = op.do(self), None
            except BaseException as exc:  # noqa: BLE001 -- thrown into the steps: they handle it or re-raise
                answer, error = None, exc
        return op.outcome


class _AsyncIO(_IO):
    __slots__ = ()
    store: _AsyncGuardStore

    async def drive(self, steps: _Steps[JobOutcome]) -> JobOutcome:
        """See :meth:`_SyncIO.drive`."""
        answer: Any = None
        error: BaseException | None = None
        while not isinstance(op := _next(steps, answer, error), _Finished):
            try:
                answer, error = await op.ado(self), None
            except BaseException as exc:  # noqa: BLE001 -- thrown into the steps: they handle it or re-raise
                answer, error = None, exc
        return op.outcome


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
