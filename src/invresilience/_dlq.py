"""Dead-letter queues: keep the jobs that could not be processed, inspect, redrive, purge.

:class:`DeadLetterQueue` (and its async twin) is the shell: it encodes and redacts
payloads, enforces the size limit, the size cap and retention, pages through listings
and drives redrives. The letters live in a :class:`~invresilience.typing.DeadLetterStore`
(memory, SQLite, Redis or PostgreSQL), which only stores and selects.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import math
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, cast

import attrs
from typing_extensions import final

from . import _events
from ._clock import SYSTEM_CLOCK
from ._codec import JsonCodec
from ._core.dlq import (
    DEFAULT_TRACEBACK_LIMIT,
    REASONS,
    DeadLetter,
    LetterFilter,
    QueueStats,
    Reason,
    check_letter_id,
    decode_cursor,
    encode_cursor,
    reasons_of,
    storable,
    truncate,
)
from ._core.idempotency import check_key
from ._core.jobs import DeadLettered, Replayed, RetryLater
from ._events import DeadLetterEvent
from .exceptions import (
    CodecError,
    ConfigurationError,
    DeadLetterQueueFullError,
    PayloadTooLargeError,
)

if TYPE_CHECKING:
    from ._core.dlq import Added
    from .typing import (
        Admission,
        AsyncDeadLetterStore,
        Clock,
        Codec,
        DeadLetterStore,
        Permit,
    )

__all__ = [
    "AsyncDeadLetterQueue",
    "DeadLetterQueue",
    "LetterPage",
    "RedriveReport",
]

#: The header that marks a payload stored as given (bytes) or as its repr (unencodable).
PAYLOAD_HEADER = "invresilience-payload"

When = float | datetime.datetime | None

_S = TypeVar("_S", bound="DeadLetterStore | AsyncDeadLetterStore")


@final
@attrs.frozen(kw_only=True)
class LetterPage:
    """One page of a listing, oldest first.

    Attributes:
        letters: The letters of this page.
        cursor: Pass it back as ``cursor=`` for the next page; ``None`` when this page
            was the last.

    .. versionadded:: 0.1.0
    """

    letters: tuple[DeadLetter, ...]
    cursor: str | None


@final
@attrs.frozen(kw_only=True)
class RedriveReport:
    """What a redrive did, letter by letter.

    Attributes:
        redriven: Ids of letters whose job was handled (or handed on); they left the queue.
        skipped: Ids of letters whose work had completed already (replayed by their
            idempotency key); they left the queue too.
        failed: ``(id, error)`` of letters that failed again; they stay, with one more
            attempt recorded.

    .. versionadded:: 0.1.0
    """

    redriven: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()

    @property
    def total(self) -> int:
        """How many letters were tried."""
        return len(self.redriven) + len(self.skipped) + len(self.failed)


def _epoch(field: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ConfigurationError(field, value, "must be timezone-aware (or epoch seconds)")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(field, value, "must be epoch seconds or an aware datetime")
    return float(value)


def _headers(value: object) -> dict[str, str]:
    """*value* (``None`` or a mapping of ``str`` to ``str``) as a dict, without the reserved header.

    :data:`PAYLOAD_HEADER` says how the queue stored the payload; a caller's own value for
    it (copied from another letter, say) would make :meth:`~DeadLetterQueue.decode` lie.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError("headers", value, "must be a mapping of str to str or None")
    out: dict[str, str] = {}
    for name, text in cast("Mapping[object, object]", value).items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise ConfigurationError("headers", value, "must map str to str")
        if name != PAYLOAD_HEADER:
            out[storable(name)] = storable(text)
    return out


def _seconds(field: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(field, value, "must be a positive, finite number of seconds")
    return float(value)


def _positive_int(field: str, value: object, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            field, value, "must be an int >= 1" + (" or None" if allow_none else "")
        )
    return value


class _Shell(Generic[_S]):
    """Configuration and the steps shared by the sync and async queues.

    Every decision is made here; :class:`DeadLetterQueue` and :class:`AsyncDeadLetterQueue`
    only call their store between these steps (and differ only in the awaits).
    """

    __slots__ = (
        "_next_sweep",
        "clock",
        "codec",
        "max_letters",
        "max_payload_bytes",
        "redact",
        "retention",
        "store",
        "traceback_limit",
        "when_full",
    )

    #: Whether the store's methods are coroutine functions.
    _ASYNC_STORE: ClassVar[bool]
    #: What the store must be, and what to say to a caller who passed the other kind.
    _STORE_KIND: ClassVar[str]
    _OTHER_KIND: ClassVar[str]

    def __init__(
        self,
        store: _S,
        *,
        codec: Codec[Any] | None,
        redact: Callable[[Any], Any] | None,
        max_payload_bytes: int,
        max_letters: int | None,
        when_full: Literal["reject", "drop_oldest"],
        retention: float | datetime.timedelta | None,
        traceback_limit: int,
        clock: Clock,
    ) -> None:
        name = type(self).__name__
        add = getattr(store, "add", None)
        if not callable(add) or not isinstance(getattr(store, "queue", None), str):
            raise ConfigurationError(f"{name}.store", store, f"must be {self._STORE_KIND}")
        if inspect.iscoroutinefunction(add) != self._ASYNC_STORE:
            raise ConfigurationError(f"{name}.store", store, self._OTHER_KIND)
        if codec is None:
            codec = JsonCodec()
        elif not (
            callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))
        ):
            raise ConfigurationError(f"{name}.codec", codec, "must have encode() and decode()")
        if redact is not None and not callable(redact):
            raise ConfigurationError(f"{name}.redact", redact, "must be callable or None")
        if when_full not in ("reject", "drop_oldest"):
            raise ConfigurationError(
                f"{name}.when_full", when_full, "must be 'reject' or 'drop_oldest'"
            )
        self.codec = codec
        self.redact = redact
        self.max_payload_bytes = cast(
            "int", _positive_int(f"{name}.max_payload_bytes", max_payload_bytes)
        )
        self.max_letters = _positive_int(f"{name}.max_letters", max_letters, allow_none=True)
        self.when_full = when_full
        self.retention = _seconds(f"{name}.retention", retention)
        self.traceback_limit = cast(
            "int", _positive_int(f"{name}.traceback_limit", traceback_limit)
        )
        if not all(
            callable(getattr(clock, m, None)) for m in ("monotonic", "wall", "sleep", "asleep")
        ):
            raise ConfigurationError(
                f"{name}.clock", clock, "must have monotonic, wall, sleep and asleep"
            )
        self.clock = clock
        self._next_sweep = -math.inf
        self.store = store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, store={self.store!r})"

    @property
    def name(self) -> str:
        """The queue's name."""
        return self.store.queue

    # -- building letters -------------------------------------------------------------------

    def _letter(
        self,
        queue: str,
        payload: Any,
        *,
        reason: Reason,
        error: BaseException | None,
        id: str | None,
        key: str | None,
        fingerprint: str | None,
        attempts: int,
        first_failed_at: When,
        headers: Mapping[str, str] | None,
    ) -> DeadLetter:
        if reason not in REASONS:
            raise ConfigurationError("reason", reason, f"must be one of {', '.join(REASONS)}")
        if id is not None and (problem := check_letter_id(id)) is not None:
            raise ConfigurationError("id", id, problem)
        if key is not None and (problem := check_key(key)) is not None:
            raise ConfigurationError("key", key, problem)
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ConfigurationError("fingerprint", fingerprint, "must be a str or None")
        all_headers = _headers(headers)
        count: object = attempts
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigurationError("attempts", attempts, "must be an int >= 0")
        first = _epoch("first_failed_at", first_failed_at)
        extra: dict[str, str] = {}
        data = self._encode(payload, reason, extra)
        if len(data) > self.max_payload_bytes:
            raise PayloadTooLargeError(queue, len(data), self.max_payload_bytes)
        all_headers.update(extra)
        return DeadLetter.from_exception(
            error,
            queue=queue,
            payload=data,
            reason=reason,
            now=self.clock.wall(),
            id=id,
            key=key,
            fingerprint=fingerprint,
            attempts=attempts,
            first_failed_at=first,
            headers=all_headers,
            traceback_limit=self.traceback_limit,
        )

    def _encode(self, payload: Any, reason: Reason, extra: dict[str, str]) -> bytes:
        if isinstance(payload, (bytes, bytearray, memoryview)):
            # Raw bytes (a body that did not even decode) are kept exactly as they came.
            extra[PAYLOAD_HEADER] = "raw"
            return bytes(payload)
        if self.redact is not None:
            payload = self.redact(payload)
        try:
            return self.codec.encode(payload)
        except CodecError:
            if reason != "invalid":
                raise
            # A malformed job must never be dropped: keep what can be kept.
            extra[PAYLOAD_HEADER] = "repr"
            return repr(payload).encode("utf-8", "backslashreplace")

    def decode(self, letter: DeadLetter) -> Any:
        """The letter's payload as the job it was: decoded by the codec, or the raw bytes.

        A payload that was stored raw (bytes) comes back as bytes; one that could not be
        encoded and was kept as its ``repr`` comes back as that text.

        Raises:
            CodecError: The payload does not decode with this queue's codec.

        .. versionadded:: 0.1.0
        """
        kind = letter.headers.get(PAYLOAD_HEADER)
        if kind == "raw":
            return letter.payload
        if kind == "repr":
            return letter.payload.decode("utf-8", "replace")
        return self.codec.decode(letter.payload)

    # -- filters ----------------------------------------------------------------------------

    @staticmethod
    def _where(
        reason: Reason | Iterable[Reason] | None,
        key: str | None,
        since: When,
        before: When,
    ) -> LetterFilter:
        try:
            reasons = reasons_of(reason)
        except ValueError as exc:
            raise ConfigurationError(
                "reason", reason, str(exc).split("; ", 1)[0].removeprefix("reason ")
            ) from None
        if key is not None and not isinstance(key, str):
            raise ConfigurationError("key", key, "must be a str or None")
        return LetterFilter(
            reasons=reasons, key=key, since=_epoch("since", since), before=_epoch("before", before)
        )

    def _purge_filter(
        self,
        reason: Reason | Iterable[Reason] | None,
        key: str | None,
        since: When,
        older_than: float | datetime.timedelta | None,
        everything: bool,
    ) -> LetterFilter:
        cutoff = _seconds("older_than", older_than)
        before = None if cutoff is None else self.clock.wall() - cutoff
        where = self._where(reason, key, since, before)
        if where.is_everything and not everything:
            raise ConfigurationError(
                "purge()", "no filter", "needs ids, a filter, older_than, or everything=True"
            )
        return where

    @staticmethod
    def _limit(value: object, field: str = "limit") -> int:
        return cast("int", _positive_int(field, value))

    @staticmethod
    def _after(cursor: str | None) -> int:
        try:
            return decode_cursor(cursor)
        except ValueError as exc:
            raise ConfigurationError(
                "cursor", cursor, "must be a cursor a listing returned"
            ) from exc

    def _sweep_due(self) -> float | None:
        """The retention cutoff if a sweep is due now (at most every retention / 10, <= 60 s)."""
        if self.retention is None:
            return None
        now = self.clock.monotonic()
        if now < self._next_sweep:
            return None
        self._next_sweep = now + min(self.retention / 10, 60.0)
        return self.clock.wall() - self.retention

    # -- the steps around the store calls ----------------------------------------------------

    @contextlib.contextmanager
    def _rejecting(self, letter: DeadLetter) -> Iterator[None]:
        """Around ``store.add``: a refusal at the cap emits a ``"rejected"`` event."""
        try:
            yield
        except DeadLetterQueueFullError:
            self._emit(self.name, "rejected", (letter.id,))
            raise

    def _added(self, letter: DeadLetter, added: Added) -> DeadLetter:
        """What :meth:`put` returns once *letter* was added; emits what the store did."""
        if added.evicted:
            self._emit(self.name, "evicted", added.evicted)
        if added.created:
            self._emit(self.name, "stored", (letter.id,), reason=letter.reason)
        return added.letter

    def _listing(
        self,
        reason: Reason | Iterable[Reason] | None,
        key: str | None,
        since: When,
        before: When,
        limit: object,
        cursor: str | None,
    ) -> tuple[LetterFilter, int, int]:
        """A listing's filter, page size and the sequence it starts after, all checked."""
        where = self._where(reason, key, since, before)
        limit = self._limit(limit)
        return where, limit, self._after(cursor)

    @staticmethod
    def _page(letters: Sequence[DeadLetter], limit: int) -> LetterPage:
        """The page of *letters*, fetched ``limit + 1`` at a time: one more means a next page."""
        more = len(letters) > limit
        letters = letters[:limit]
        return LetterPage(
            letters=tuple(letters),
            cursor=encode_cursor(letters[-1].sequence) if more else None,
        )

    @staticmethod
    def _next_after(letters: Sequence[DeadLetter], page_size: int) -> int | None:
        """Where the page after *letters* starts; ``None`` after a short (the last) page."""
        return None if len(letters) < page_size else letters[-1].sequence

    def _purged(self, kind: Literal["purged", "expired"], count: int) -> int:
        """*count* letters were deleted: emit the event if there were any."""
        if count:
            self._emit(self.name, kind, count=count)
        return count

    @staticmethod
    def _emit(
        queue: str,
        kind: str,
        ids: Iterable[str] = (),
        count: int | None = None,
        reason: Reason | None = None,
    ) -> None:
        if _events.active:
            ids = tuple(ids)
            _events.emit(
                DeadLetterEvent(
                    source=queue,
                    kind=kind,  # type: ignore[arg-type]
                    count=len(ids) if count is None else count,
                    ids=ids,
                    reason=reason,
                )
            )


_Verdict = tuple[Literal["redriven", "skipped", "failed"], BaseException | None, Reason | None]


class _Redrive:
    """One redrive's bookkeeping: the limit, the pace, each letter's fate and the report.

    The queues' loops only fetch a letter, wait for :attr:`pacer`, call the target and
    do the store operation :meth:`record` returns.
    """

    __slots__ = ("failed", "limit", "pacer", "queue", "redriven", "skipped")

    def __init__(self, queue: _Shell[Any], rate: float | Admission | None, limit: int | None):
        self.queue = queue
        self.pacer = _Pacer(rate, queue.clock)
        self.limit = None if limit is None else queue._limit(limit)
        self.redriven: list[str] = []
        self.skipped: list[str] = []
        self.failed: list[tuple[str, str]] = []

    def done(self) -> bool:
        """Whether the limit has been reached."""
        tried = len(self.redriven) + len(self.skipped) + len(self.failed)
        return self.limit is not None and tried >= self.limit

    @staticmethod
    def verdict(result: object) -> _Verdict:
        """``("redriven" | "skipped" | "failed", error, reason)`` for what a target returned."""
        if isinstance(result, Replayed):
            return "skipped", None, None
        if isinstance(result, RetryLater):
            return "failed", result.error, None
        if isinstance(result, DeadLettered):
            return "failed", result.error, result.reason
        return "redriven", None, None

    def record(
        self, letter: DeadLetter, verdict: _Verdict
    ) -> tuple[Literal["delete", "replace"], DeadLetter]:
        """Book *letter*'s *verdict*; the store operation that settles it, and its letter.

        A letter that failed again is replaced by itself with one more attempt and the
        new error; any other leaves the queue.
        """
        outcome, error, reason = verdict
        if outcome == "failed":
            self.failed.append((letter.id, _describe(error)))
            return "replace", self._failed_again(letter, error, reason)
        (self.redriven if outcome == "redriven" else self.skipped).append(letter.id)
        return "delete", letter

    def report(self) -> RedriveReport:
        """The report, after emitting a ``"redriven"`` event if any letter left the queue."""
        if self.redriven or self.skipped:
            self.queue._emit(self.queue.name, "redriven", (*self.redriven, *self.skipped))
        return RedriveReport(
            redriven=tuple(self.redriven), skipped=tuple(self.skipped), failed=tuple(self.failed)
        )

    def _failed_again(
        self, letter: DeadLetter, error: BaseException | None, reason: Reason | None
    ) -> DeadLetter:
        now = self.queue.clock.wall()
        changes: dict[str, Any] = {"attempts": letter.attempts + 1, "last_failed_at": now}
        if reason is not None:
            changes["reason"] = reason
        if error is not None:
            fresh = DeadLetter.from_exception(
                error,
                queue=letter.queue,
                payload=b"",
                reason=letter.reason,
                now=now,
                id=letter.id,
                traceback_limit=self.queue.traceback_limit,
            )
            changes.update(
                error_type=fresh.error_type,
                error_message=fresh.error_message,
                traceback=fresh.traceback,
            )
        return attrs.evolve(letter, **changes)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "failed again"
    return truncate(f"{type(error).__qualname__}: {error}", 500)


class _Pacer:
    """Spaces redriven letters: a rate (letters per second) or an :class:`Admission`."""

    __slots__ = ("admission", "clock", "interval", "next_at")

    def __init__(self, rate: float | Admission | None, clock: Clock) -> None:
        self.clock = clock
        self.admission: Admission | None = None
        self.interval = 0.0
        self.next_at = -math.inf
        if rate is None:
            return
        if isinstance(rate, (int, float)) and not isinstance(rate, bool):
            if not math.isfinite(rate) or rate <= 0:
                raise ConfigurationError(
                    "rate", rate, "must be a positive number of letters per second"
                )
            self.interval = 1.0 / rate
        elif callable(getattr(rate, "acquire", None)):
            self.admission = cast("Admission", rate)
        else:
            raise ConfigurationError(
                "rate", rate, "must be letters per second, an Admission or None"
            )

    def wait(self) -> float:
        """Seconds to sleep before the next letter (and book its slot)."""
        now = self.clock.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        return at - now

    def acquire(self) -> Permit | None:
        """A permit from the admission, if there is one (waiting up to an hour)."""
        return None if self.admission is None else self.admission.acquire(timeout=3600.0)

    async def aacquire(self) -> Permit | None:
        """The async twin of :meth:`acquire`."""
        return None if self.admission is None else await self.admission.aacquire(timeout=3600.0)


_Target = Callable[[DeadLetter], object]


@final
class DeadLetterQueue(_Shell["DeadLetterStore"]):
    """A dead-letter queue: jobs that could not be processed, kept to be inspected, fixed,
    redriven or purged.

    Usually made by a backend: ``backend.dead_letter_queue("adjustments")``.

    Args:
        store: Where the letters live (a :class:`~invresilience.typing.DeadLetterStore`).
        codec: Encodes payloads (:class:`JsonCodec` by default). Raw ``bytes`` payloads
            are stored as they are, whatever the codec.
        redact: Called with each payload before it is encoded; returns the payload to
            store (strip card numbers, tokens, personal data here).
        max_payload_bytes: Encoded payloads larger than this are refused with
            :exc:`~invresilience.exceptions.PayloadTooLargeError` (default 1 MiB);
            never truncated.
        max_letters: The size cap (default 100,000; ``None``: no cap).
        when_full: At the cap, ``"reject"`` refuses new letters with
            :exc:`~invresilience.exceptions.DeadLetterQueueFullError` (a job handler
            then leaves the job with its broker: nothing is lost), or ``"drop_oldest"``
            deletes the oldest letters to make room. Either emits a
            :class:`~invresilience.DeadLetterEvent`.
        retention: Letters older than this (seconds or a ``timedelta``) are deleted, by
            :meth:`expire` and every so often by :meth:`put`; ``None`` (the default)
            keeps them until purged.
        traceback_limit: Messages and tracebacks are cut to this many characters.
        clock: Timestamps letters (``wall()``) and paces redrives.

    Raises:
        ConfigurationError: A setting is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ()
    _ASYNC_STORE = False
    _STORE_KIND = "a DeadLetterStore"
    _OTHER_KIND = "is an AsyncDeadLetterStore: use AsyncDeadLetterQueue"

    def __init__(
        self,
        store: DeadLetterStore,
        *,
        codec: Codec[Any] | None = None,
        redact: Callable[[Any], Any] | None = None,
        max_payload_bytes: int = 1 << 20,
        max_letters: int | None = 100_000,
        when_full: Literal["reject", "drop_oldest"] = "reject",
        retention: float | datetime.timedelta | None = None,
        traceback_limit: int = DEFAULT_TRACEBACK_LIMIT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            store,
            codec=codec,
            redact=redact,
            max_payload_bytes=max_payload_bytes,
            max_letters=max_letters,
            when_full=when_full,
            retention=retention,
            traceback_limit=traceback_limit,
            clock=clock,
        )

    def put(
        self,
        payload: Any,
        *,
        reason: Reason = "manual",
        error: BaseException | None = None,
        key: str | None = None,
        fingerprint: str | None = None,
        attempts: int = 1,
        first_failed_at: When = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
    ) -> DeadLetter:
        """Store a job that could not be processed; the stored letter.

        The payload is redacted, then encoded; *error*'s type, message and traceback are
        recorded. With an *id* already in the queue nothing changes and the stored letter
        is returned (so a job dead-lettered twice is kept once).

        Raises:
            PayloadTooLargeError: The encoded payload is over ``max_payload_bytes``.
            DeadLetterQueueFullError: The queue is at ``max_letters`` with ``when_full="reject"``.
            CodecError: The codec cannot encode the payload (for ``reason="invalid"``
                the payload's ``repr`` is stored instead).
            ConfigurationError: An argument is invalid.
            BackendError: The store failed.

        .. versionadded:: 0.1.0
        """
        letter = self._letter(
            self.name,
            payload,
            reason=reason,
            error=error,
            id=id,
            key=key,
            fingerprint=fingerprint,
            attempts=attempts,
            first_failed_at=first_failed_at,
            headers=headers,
        )
        cutoff = self._sweep_due()
        if cutoff is not None:
            self._expire(cutoff)
        with self._rejecting(letter):
            added = self.store.add(
                letter, max_letters=self.max_letters, evict_oldest=self.when_full == "drop_oldest"
            )
        return self._added(letter, added)

    def get(self, letter_id: str) -> DeadLetter | None:
        """The letter with *letter_id*, or ``None``.

        .. versionadded:: 0.1.0
        """
        return self.store.get(letter_id)

    def list(
        self,
        *,
        reason: Reason | Iterable[Reason] | None = None,
        key: str | None = None,
        since: When = None,
        before: When = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> LetterPage:
        """One page of letters, oldest first, filtered by reason(s), key and time.

        *since* and *before* (epoch seconds or aware datetimes) bound ``dead_lettered_at``.
        Pass the page's ``cursor`` back for the next page; letters stored meanwhile
        appear on later pages, in order.

        .. versionadded:: 0.1.0
        """
        where, limit, after = self._listing(reason, key, since, before, limit, cursor)
        return self._page(self.store.list(where, after=after, limit=limit + 1), limit)

    def iter(
        self,
        *,
        reason: Reason | Iterable[Reason] | None = None,
        key: str | None = None,
        since: When = None,
        before: When = None,
        page_size: int = 100,
    ) -> Iterator[DeadLetter]:
        """Every selected letter, oldest first, fetched *page_size* at a time.

        The arguments are checked at the call, not at the first ``next()``.

        .. versionadded:: 0.1.0
        """
        where = self._where(reason, key, since, before)
        return self._pages(where, self._limit(page_size, "page_size"))

    def _pages(self, where: LetterFilter, page_size: int) -> Iterator[DeadLetter]:
        after: int | None = 0
        while after is not None:
            letters = self.store.list(where, after=after, limit=page_size)
            yield from letters
            after = self._next_after(letters, page_size)

    def _found(self, ids: Iterable[str]) -> Iterator[DeadLetter]:
        for letter_id in ids:
            letter = self.store.get(letter_id)
            if letter is not None:
                yield letter

    def count(
        self,
        *,
        reason: Reason | Iterable[Reason] | None = None,
        key: str | None = None,
        since: When = None,
        before: When = None,
    ) -> int:
        """How many letters the filter selects (all of them without one).

        .. versionadded:: 0.1.0
        """
        return self.store.count(self._where(reason, key, since, before))

    def stats(self) -> QueueStats:
        """Totals per reason and the oldest and newest letters' times.

        .. versionadded:: 0.1.0
        """
        return self.store.stats()

    def purge(
        self,
        *,
        ids: Iterable[str] | None = None,
        reason: Reason | Iterable[Reason] | None = None,
        key: str | None = None,
        since: When = None,
        older_than: float | datetime.timedelta | None = None,
        everything: bool = False,
    ) -> int:
        """Delete letters for good: by *ids*, or those a filter selects; how many.

        A call without ids or a filter refuses to run unless ``everything=True``.

        .. versionadded:: 0.1.0
        """
        if ids is not None:
            count = self.store.delete(_purge_ids(ids, reason, key, since, older_than, everything))
        else:
            count = self.store.purge(self._purge_filter(reason, key, since, older_than, everything))
        return self._purged("purged", count)

    def expire(self) -> int:
        """Delete the letters older than ``retention`` now; how many (``0`` without retention).

        .. versionadded:: 0.1.0
        """
        if self.retention is None:
            return 0
        return self._expire(self.clock.wall() - self.retention)

    def _expire(self, cutoff: float) -> int:
        return self._purged("expired", self.store.purge(LetterFilter(before=cutoff)))

    def redrive(
        self,
        to: _Target | Any,
        *,
        ids: Iterable[str] | None = None,
        reason: Reason | Iterable[Reason] | None = None,
        key: str | None = None,
        since: When = None,
        before: When = None,
        limit: int | None = None,
        rate: float | Admission | None = None,
    ) -> RedriveReport:
        """Hand letters back, oldest first, and remove each one only once it was handled.

        *to* is a :class:`~invresilience.JobHandler` (its
        :meth:`~invresilience.JobHandler.process_letter` runs the decoded job under its
        idempotency key, so work that completed meanwhile is skipped), or any callable
        taking the :class:`~invresilience.typing.DeadLetter` -- publish it to a work
        queue with its key in a header, for example. A callable that returns normally
        has redriven the letter; one that raises has failed; one that returns a job
        outcome is read like a handler's.

        A letter leaves the queue only after *to* succeeded, so a redrive that dies
        midway loses nothing; run again, it skips (by their idempotency keys) the jobs
        that completed before the crash, so each job takes effect once.

        Args:
            to: A job handler or a callable taking a letter.
            ids: Only these letters (in this order); otherwise those the filter selects.
            limit: At most this many letters.
            rate: At most this many letters per second, or an
                :class:`~invresilience.typing.Admission` (a shared
                :class:`~invresilience.RateLimiter`) to acquire a permit from.

        .. versionadded:: 0.1.0
        """
        call = _sync_target(to, self)
        run = _Redrive(self, rate, limit)
        letters = (
            self._found(_selected_ids(ids, "redrive()", reason, key, since, before))
            if ids is not None
            else self.iter(reason=reason, key=key, since=since, before=before)
        )
        for letter in letters:
            if run.done():
                break
            pause = run.pacer.wait()
            if pause > 0:
                self.clock.sleep(pause)
            permit = run.pacer.acquire()
            verdict: _Verdict
            try:
                result = call(letter)
            except Exception as exc:  # noqa: BLE001 -- any failure keeps the letter
                verdict = ("failed", exc, None)
            else:
                if inspect.isawaitable(result):
                    # An async target did not run (nothing awaits it here): the letter
                    # must stay, and the caller must learn of the mistake.
                    if inspect.iscoroutine(result):
                        result.close()
                    raise ConfigurationError(
                        "to", to, "is async: redrive with an AsyncDeadLetterQueue"
                    )
                verdict = run.verdict(result)
            finally:
                if permit is not None:
                    permit.release()
            op, settled = run.record(letter, verdict)
            if op == "delete":
                self.store.delete([settled.id])
            else:
                self.store.replace(settled)
        return run.report()

    def close(self) -> None:
        """Close the store.

        .. versionadded:: 0.1.0
        """
        self.store.close()


@final
class AsyncDeadLetterQueue(_Shell["AsyncDeadLetterStore"]):
    """The async twin of :class:`DeadLetterQueue`, over an
    :class:`~invresilience.typing.AsyncDeadLetterStore`.

    Same arguments; every method is a coroutine (``iter`` returns an async iterator), and
    :meth:`redrive` takes a :class:`~invresilience.JobHandler` (run with
    :meth:`~invresilience.JobHandler.aprocess_letter`) or an async callable.

    .. versionadded:: 0.1.0
    """

    __slots__ = ()
    _ASYNC_STORE = True
    _STORE_KIND = "an AsyncDeadLetterStore"
    _OTHER_KIND = (
        "is a DeadLetterStore (its add() is not a coroutine function): use DeadLetterQueue"
    )

    def __init__(
        self,
        store: AsyncDeadLetterStore,
        *,
        codec: Codec[Any] | None = None,
        redact: Callable[[Any], Any] | None = None,
        max_payload_bytes: int = 1 << 20,
        max_letters: int | None = 100_000,
        when_full: Literal["reject", "drop_oldest"] = "reject",
        retention: float | datetime.timedelta | None = None,
        traceback_limit: int = DEFAULT_TRACEBACK_LIMIT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(
            store,
            codec=codec,
            redact=redact,
            max_payload_bytes=max_payload_bytes,
            max_letters=max_letters,
            when_full=when_full,
            retention=retention,
            traceback_limit=traceback_limit,
            clock=clock,
        )

    async def put(
        self,
        payload: Any,
        *,
        reason: Reason = "manual",
        error: BaseException | None = None,
        key: str | None = None,
        fingerprint: str | None = None,
        attempts: int = 1,
        first_failed_at: When = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
    ) -> DeadLetter:
        """See :meth:`DeadLetterQueue.put`."""
        letter = self._letter(
            self.name,
            payload,
            reason=reason,
            error=error,
            id=id,
            key=key,
            fingerprint=fingerprint,
            attempts=attempts,
            first_failed_at=first_failed_at,
            headers=headers,
        )
        cutoff = self._sweep_due()
        if cutoff is not None:
            await self._expire(cutoff)
        with self._rejecting(letter):
            added = await self.store.add(
                letter, max_letters=self.max_letters, evict_oldest=self.when_full == "drop_oldest"
            )
        return self._added(letter, added)

    async def get(self, letter_id: str) -> DeadLetter | None:
        """See :meth:`DeadLetterQueue.get`."""
        return await self.store.get(letter_id)

    async def list(
        self,
        *,
        reason: Reason | Iterable[Reason] | None = None,
        key: str | None = None,
        since: When = None,
        before: When = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> LetterPage:
        """See :meth:`DeadLetterQueue.list`."""
        where, limit, after = self._listing(reason, key, since, before, limit, cursor)
        return self._page(await self.store.list(where, after=after, limit=limit + 1), limit)

    def iter(
        self,
        *,
        reason: Reason | Iterable[Reason] | None = None,
        key: str | None = None,
        since: When = None,
        before: When = None,
        page_size: int = 100,
    ) -> AsyncIterator[DeadLetter]:
        """See :meth:`DeadLetterQueue.iter` (an async iterator: ``async for letter in ...``)."""
        where = self._where(reason, key, since, before)
        return self._pages(where, self._limit(page_size, "page_size"))

    async def _pages(self, where: LetterFilter, page_size: int) -> AsyncIterator[DeadLetter]:
        after: int | None = 0
        while after is not None:
            letters = await self.store.list(where, after=after, limit=page_size)
            for letter in letters:
                yield letter
            after = self._next_after(letters, page_size)

    async def _found(self, ids: Iterable[str]) -> AsyncIterator[DeadLetter]:
        for letter_id in ids:
            letter = await self.store.get(letter_id)
            if letter is not None:
                yield letter

    async def count(
        self,
        *,
        reason: Reason | Iterable[Reason] | None = None,
        key: str | None = None,
        since: When = None,
        before: When = None,
    ) -> int:
        """See :meth:`DeadLetterQueue.count`."""
        return await self.store.count(self._where(reason, key, since, before))

    async def stats(self) -> QueueStats:
        """See :meth:`DeadLetterQueue.stats`."""
        return await self.store.stats()

    async def purge(
        self,
        *,
        ids: Iterable[str] | None = None,
        reason: Reason | Iterable[Reason] | None = None,
        key: str | None = None,
        since: When = None,
        older_than: float | datetime.timedelta | None = None,
        everything: bool = False,
    ) -> int:
        """See :meth:`DeadLetterQueue.purge`."""
        if ids is not None:
            count = await self.store.delete(
                _purge_ids(ids, reason, key, since, older_than, everything)
            )
        else:
            count = await self.store.purge(
                self._purge_filter(reason, key, since, older_than, everything)
            )
        return self._purged("purged", count)

    async def expire(self) -> int:
        """See :meth:`DeadLetterQueue.expire`."""
        if self.retention is None:
            return 0
        return await self._expire(self.clock.wall() - self.retention)

    async def _expire(self, cutoff: float) -> int:
        return self._purged("expired", await self.store.purge(LetterFilter(before=cutoff)))

    async def redrive(
        self,
        to: Callable[[DeadLetter], Awaitable[object]] | Any,
        *,
        ids: Iterable[str] | None = None,
        reason: Reason | Iterable[Reason] | None = None,
        key: str | None = None,
        since: When = None,
        before: When = None,
        limit: int | None = None,
        rate: float | Admission | None = None,
    ) -> RedriveReport:
        """See :meth:`DeadLetterQueue.redrive`; *to* is a job handler or an async callable.

        A plain (non-async) callable is accepted too: it has run when it returns, so its
        result is read like an awaited one's (it blocks the event loop while it runs).
        """
        call = _async_target(to, self)
        run = _Redrive(self, rate, limit)
        letters = (
            self._found(_selected_ids(ids, "redrive()", reason, key, since, before))
            if ids is not None
            else self.iter(reason=reason, key=key, since=since, before=before)
        )
        async for letter in letters:
            if run.done():
                break
            pause = run.pacer.wait()
            if pause > 0:
                await self.clock.asleep(pause)
            permit = await run.pacer.aacquire()
            verdict: _Verdict
            try:
                result = call(letter)
                if inspect.isawaitable(result):
                    result = await result
                # A plain callable has run already: read its result like an async one's.
                verdict = run.verdict(result)
            except Exception as exc:  # noqa: BLE001 -- any failure keeps the letter
                verdict = ("failed", exc, None)
            finally:
                if permit is not None:
                    permit.release()
            op, settled = run.record(letter, verdict)
            if op == "delete":
                await self.store.delete([settled.id])
            else:
                await self.store.replace(settled)
        return run.report()

    async def close(self) -> None:
        """See :meth:`DeadLetterQueue.close`."""
        await self.store.close()


def _purge_ids(ids: Iterable[str], *selection: object) -> list[str]:
    """*ids*, checked, for a purge that must not be given a filter as well."""
    return _selected_ids(ids, "purge()", *selection)


def _selected_ids(ids: Iterable[str], where: str, *selection: object) -> list[str]:
    """*ids*, checked; a filter given as well would be silently ignored, so it is refused."""
    if any(part is not None and part is not False for part in selection):
        raise ConfigurationError(
            where, "ids and a filter", "takes ids or a filter (or everything=True), not both"
        )
    return _ids(ids)


def _ids(ids: Iterable[str]) -> list[str]:
    if isinstance(ids, str):
        raise ConfigurationError("ids", ids, "must be an iterable of letter ids, not one str")
    out = list(ids)
    for letter_id in out:
        problem = check_letter_id(letter_id)
        if problem is not None:
            raise ConfigurationError("ids", letter_id, problem)
    # An id given twice is still one letter: redriving it twice would record two failures.
    return list(dict.fromkeys(out))


def _sync_target(to: Any, queue: DeadLetterQueue) -> Callable[[DeadLetter], object]:
    process = getattr(to, "process_letter", None)
    if callable(process):
        # The letters were encoded by the handler's own queue: decode with its codec.
        decode = getattr(getattr(to, "dead_letters", None), "decode", queue.decode)
        return lambda letter: process(letter, decode(letter))
    if callable(to):
        return cast("Callable[[DeadLetter], object]", to)
    raise ConfigurationError("to", to, "must be a JobHandler or a callable taking a DeadLetter")


def _async_target(
    to: Any, queue: AsyncDeadLetterQueue
) -> Callable[[DeadLetter], Awaitable[object] | object]:
    process = getattr(to, "aprocess_letter", None)
    if callable(process):
        decode = getattr(getattr(to, "dead_letters", None), "decode", queue.decode)
        return lambda letter: process(letter, decode(letter))
    if callable(to):
        return cast("Callable[[DeadLetter], Awaitable[object] | object]", to)
    raise ConfigurationError(
        "to", to, "must be a JobHandler or an async callable taking a DeadLetter"
    )
