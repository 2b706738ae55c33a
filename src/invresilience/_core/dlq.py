"""Dead letters as data: the letter, the filter every store applies, and the pure helpers.

No I/O and no clock reads: times are passed in. The stores (memory, SQLite, Redis,
PostgreSQL) keep :class:`DeadLetter` values and answer :class:`LetterFilter` queries;
:mod:`invresilience._dlq` builds letters, encodes payloads and drives redrives.
"""

from __future__ import annotations

import hashlib
import json
import linecache
import math
import re
import traceback as _traceback
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, TypeAlias, cast

import attrs
from typing_extensions import final

__all__ = [
    "DEFAULT_TRACEBACK_LIMIT",
    "MAX_LETTER_ID_LENGTH",
    "REASONS",
    "Added",
    "DeadLetter",
    "LetterFilter",
    "QueueStats",
    "Reason",
    "check_letter_id",
    "check_queue_name",
    "decode_cursor",
    "encode_cursor",
    "letter_from_json",
    "letter_id_for_key",
    "letter_to_json",
    "new_letter_id",
    "reasons_of",
    "storable",
    "truncate",
]

Reason: TypeAlias = Literal["exhausted", "fatal", "poison", "crash_loop", "invalid", "manual"]
"""Why a job was dead-lettered.

- ``"exhausted"``: it failed with a retryable error on its last allowed delivery.
- ``"fatal"``: it failed with an error classified as fatal (retrying cannot help).
- ``"poison"``: it conflicts with work already recorded (its idempotency key was used
  with another payload), or the consumer judged it unprocessable for its own reasons.
- ``"crash_loop"``: it was delivered more than ``max_deliveries`` times without any
  delivery finishing: it probably kills its worker.
- ``"invalid"``: it could not be decoded or failed validation.
- ``"manual"``: an operator or a program put it there directly.

.. versionadded:: 0.1.0
"""

#: Every :data:`Reason`, in the order above.
REASONS: Final[tuple[Reason, ...]] = (
    "exhausted",
    "fatal",
    "poison",
    "crash_loop",
    "invalid",
    "manual",
)

#: Tracebacks and messages stored in a letter are cut to this many characters by default.
DEFAULT_TRACEBACK_LIMIT: Final = 8192
#: Letter ids are at most this many characters of ``[A-Za-z0-9_.:-]``.
MAX_LETTER_ID_LENGTH: Final = 128

_LETTER_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}\Z")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,100}\Z")


def check_letter_id(value: object) -> str | None:
    """Why *value* is not a valid letter id, or ``None`` when it is."""
    if not isinstance(value, str):
        return f"must be a str, got {type(value).__name__}"
    if not _LETTER_ID.match(value):
        return f"must be 1 to {MAX_LETTER_ID_LENGTH} letters, digits or any of '_.:-'"
    return None


def check_queue_name(value: object) -> str | None:
    """Why *value* is not a valid queue name, or ``None`` when it is."""
    if not isinstance(value, str) or not _QUEUE_NAME.match(value):
        return "must be 1 to 100 letters, digits or any of '_.:-'"
    return None


def new_letter_id() -> str:
    """A fresh random letter id (32 hex digits)."""
    return uuid.uuid4().hex


def letter_id_for_key(key: str) -> str:
    """The letter id a job handler uses for idempotency key *key*.

    Deterministic, so a job dead-lettered twice (its worker died between storing the
    letter and acknowledging the job) is stored once: at most one letter per key and
    queue at a time.
    """
    return "key-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def truncate(text: str, limit: int) -> str:
    """*text*, cut in the middle to at most *limit* characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    marker = f"\n... [{len(text) - limit} characters cut] ...\n"
    keep = max(limit - len(marker), 0)
    head = keep // 3
    return text[:head] + marker + text[len(text) - (keep - head) :] if keep else text[:limit]


def storable(text: str) -> str:
    """*text* that every store can hold: NUL and lone surrogates escaped as ``\\x00`` / ``\\udc80``.

    PostgreSQL's text refuses both, and an exception's message is whatever the failing
    code put in it: a job must never be impossible to dead-letter because of it.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _check_attempts(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"DeadLetter.attempts must be an int >= 0, got {value!r}")


def _check_reason(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in REASONS:
        raise ValueError(f"DeadLetter.reason must be one of {', '.join(REASONS)}; got {value!r}")


def _check_time(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"DeadLetter.{attribute.name} must be a finite number, got {value!r}")


def _headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    if value is None:
        return {}
    headers: dict[object, object] = dict(cast("Mapping[object, object]", value))
    for name, text in headers.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise ValueError(
                f"DeadLetter.headers must map str to str, got {name!r}: {type(text).__name__}"
            )
    return cast("dict[str, str]", headers)


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def format_error(exc: BaseException) -> str:
    """*exc*'s traceback with its chained causes, as Python prints it, minus 3.11's carets.

    :func:`traceback.format_exception` locates the ``^^^^`` under each line by parsing
    the source, which is most of the cost of dead-lettering a job; the frames, the
    source lines and the chain are what an operator reads. Exception groups, whose
    layout is intricate, still go through :mod:`traceback`.
    """
    chain: list[tuple[BaseException, str]] = []  # each exception and how it follows its cause
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _is_group(current):
            return "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
        seen.add(id(current))
        if current.__cause__ is not None:
            chain.append((current, _CAUSE))
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            chain.append((current, _CONTEXT))
            current = current.__context__
        else:
            chain.append((current, ""))
            current = None
    parts: list[str] = []
    for printed, (error, link) in enumerate(reversed(chain)):
        if printed:  # how it follows the exception printed just before (its cause)
            parts.append(link)
        if error.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            for frame, lineno in _traceback.walk_tb(error.__traceback__):
                code = frame.f_code
                parts.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}\n')
                line = linecache.getline(code.co_filename, lineno, frame.f_globals).strip()
                if line:
                    parts.append(f"    {line}\n")
        parts.extend(_traceback.format_exception_only(type(error), error))
    return "".join(parts)


def _is_group(exc: BaseException) -> bool:
    """Whether *exc* is an exception group (built in, or the ``exceptiongroup`` backport)."""
    return isinstance(getattr(exc, "exceptions", None), tuple)


def _text_of(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when its ``__str__`` raises (the letter must be kept)."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 -- a broken __str__ must not lose the job
        return f"<{type(exc).__qualname__}: str() failed>"


@final
@attrs.frozen(kw_only=True)
class DeadLetter:
    """One job that could not be processed, with everything needed to decide its fate.

    Letters are values: stores keep them, :meth:`DeadLetterQueue.list
    <invresilience.DeadLetterQueue.list>` returns them. The payload is kept as the
    bytes the queue's codec made of it; :meth:`DeadLetterQueue.decode
    <invresilience.DeadLetterQueue.decode>` turns it back.

    Times are seconds since the Unix epoch, read from the clock of the queue that stored
    the letter.

    Attributes:
        id: Unique within the queue: random, or derived from the idempotency key (so
            one key has at most one letter at a time).
        queue: The dead-letter queue's name.
        payload: The job, encoded (and redacted) by the queue's codec.
        reason: Why it was dead-lettered: a :data:`~invresilience.typing.Reason`.
        key: The job's idempotency key, if it has one; kept through redrives so work
            that already completed is skipped.
        fingerprint: The payload fingerprint recorded with the key, if any.
        error_type: The qualified name of the last exception's class (``"builtins.ValueError"``).
        error_message: ``str()`` of the last exception, truncated.
        traceback: The last exception's formatted traceback, truncated in the middle.
        attempts: How many times the job was tried (deliveries plus redrives).
        first_failed_at: When it first failed.
        last_failed_at: When it last failed.
        dead_lettered_at: When it entered this queue (retention and ``since`` use it).
        headers: Free-form ``str`` to ``str`` metadata (message ids, tenant, trace id).
        sequence: The store's position for it: larger for letters stored later; ``0``
            until a store has it.

    .. versionadded:: 0.1.0
    """

    id: str
    queue: str
    payload: bytes = attrs.field(converter=bytes)
    reason: Reason = attrs.field(validator=_check_reason)
    key: str | None = None
    fingerprint: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    attempts: int = attrs.field(default=1, validator=_check_attempts)
    first_failed_at: float = attrs.field(validator=_check_time)
    last_failed_at: float = attrs.field(validator=_check_time)
    dead_lettered_at: float = attrs.field(validator=_check_time)
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers, hash=False)
    sequence: int = 0

    @classmethod
    def from_exception(
        cls,
        exc: BaseException | None,
        *,
        queue: str,
        payload: bytes,
        reason: Reason,
        now: float,
        id: str | None = None,
        key: str | None = None,
        fingerprint: str | None = None,
        attempts: int = 1,
        first_failed_at: float | None = None,
        headers: Mapping[str, str] | None = None,
        traceback_limit: int = DEFAULT_TRACEBACK_LIMIT,
    ) -> DeadLetter:
        """A letter for a job that failed with *exc* (``None``: no exception, such as a crash loop).

        The exception's type, message and traceback (with its chained causes) are
        recorded, each cut to *traceback_limit* characters.

        .. versionadded:: 0.1.0
        """
        error_type = error_message = text = None
        if exc is not None:
            kind = type(exc)
            error_type = f"{kind.__module__}.{kind.__qualname__}"
            error_message = truncate(storable(_text_of(exc)), traceback_limit)
            text = truncate(
                storable(format_error(exc)),
                traceback_limit,
            )
        return cls(
            id=new_letter_id() if id is None else id,
            queue=queue,
            payload=payload,
            reason=reason,
            key=key,
            fingerprint=fingerprint,
            error_type=error_type,
            error_message=error_message,
            traceback=text,
            attempts=attempts,
            first_failed_at=now if first_failed_at is None else first_failed_at,
            last_failed_at=now,
            dead_lettered_at=now,
            headers=headers,
        )


@final
@attrs.frozen(kw_only=True)
class LetterFilter:
    """Which letters a query selects; every given condition must hold.

    Attributes:
        reasons: The letter's reason is one of these (``None``: any).
        key: The letter's idempotency key is exactly this.
        since: ``dead_lettered_at >= since``.
        before: ``dead_lettered_at < before``.

    .. versionadded:: 0.1.0
    """

    reasons: frozenset[Reason] | None = None
    key: str | None = None
    since: float | None = None
    before: float | None = None

    @property
    def is_everything(self) -> bool:
        """Whether the filter selects every letter."""
        return (
            self.reasons is None and self.key is None and self.since is None and self.before is None
        )

    def matches(self, letter: DeadLetter) -> bool:
        """Whether *letter* is selected (the reference every store must agree with)."""
        return (
            (self.reasons is None or letter.reason in self.reasons)
            and (self.key is None or letter.key == self.key)
            and (self.since is None or letter.dead_lettered_at >= self.since)
            and (self.before is None or letter.dead_lettered_at < self.before)
        )


@final
@attrs.frozen(kw_only=True)
class Added:
    """What :meth:`~invresilience.typing.DeadLetterStore.add` did.

    Attributes:
        letter: The stored letter (with its sequence), or the one already stored under
            that id when *created* is false.
        created: Whether the letter was new.
        evicted: Ids of the oldest letters deleted to make room (policy ``"drop_oldest"``).

    .. versionadded:: 0.1.0
    """

    letter: DeadLetter
    created: bool
    evicted: tuple[str, ...] = ()


@final
@attrs.frozen(kw_only=True)
class QueueStats:
    """A dead-letter queue at a glance.

    Attributes:
        total: How many letters it holds.
        by_reason: How many of them per reason (reasons with none are left out).
        oldest: The earliest ``dead_lettered_at``, ``None`` when empty.
        newest: The latest ``dead_lettered_at``, ``None`` when empty.

    .. versionadded:: 0.1.0
    """

    total: int
    by_reason: Mapping[str, int] = attrs.field(factory=dict, hash=False)
    oldest: float | None = None
    newest: float | None = None

    @classmethod
    def of(cls, letters: Iterable[DeadLetter]) -> QueueStats:
        """The stats of *letters* (the reference every store must agree with)."""
        by_reason: dict[str, int] = {}
        oldest = newest = None
        total = 0
        for letter in letters:
            total += 1
            by_reason[letter.reason] = by_reason.get(letter.reason, 0) + 1
            at = letter.dead_lettered_at
            oldest = at if oldest is None or at < oldest else oldest
            newest = at if newest is None or at > newest else newest
        ordered: dict[str, int] = {r: by_reason[r] for r in REASONS if r in by_reason}
        return cls(total=total, by_reason=ordered, oldest=oldest, newest=newest)


def reasons_of(value: object) -> frozenset[Reason] | None:
    """*value* (``None``, one reason or an iterable of them) as a set; ``ValueError`` if unknown."""
    if value is None:
        return None
    try:
        items = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    except TypeError:
        items = [value]
    unknown = [item for item in items if item not in REASONS]
    if unknown or not items:
        raise ValueError(f"reason must be one or more of {', '.join(REASONS)}; got {value!r}")
    return frozenset(items)


def encode_cursor(sequence: int) -> str:
    """The opaque cursor that continues a listing after *sequence*."""
    return f"s{sequence}"


def decode_cursor(cursor: object) -> int:
    """The sequence a cursor continues after (``0`` for ``None``); ``ValueError`` if malformed."""
    if cursor is None:
        return 0
    if not isinstance(cursor, str) or not re.fullmatch(r"s(0|[1-9][0-9]{0,18})", cursor):
        raise ValueError(f"cursor must be one a listing returned, got {cursor!r}")
    return int(cursor[1:])


_META_FIELDS = (
    "id",
    "queue",
    "reason",
    "key",
    "fingerprint",
    "error_type",
    "error_message",
    "traceback",
    "attempts",
    "first_failed_at",
    "last_failed_at",
    "dead_lettered_at",
    "sequence",
)


def letter_to_json(letter: DeadLetter, *, payload: bool = True) -> dict[str, Any]:
    """*letter* as a JSON-ready dict; the payload as UTF-8 text when it is, else base64.

    The payload goes in ``"payload"`` (text) or ``"payload_base64"``.
    """
    out: dict[str, Any] = {name: getattr(letter, name) for name in _META_FIELDS}
    out["headers"] = dict(letter.headers)
    if payload:
        try:
            out["payload"] = letter.payload.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            out["payload_base64"] = base64.b64encode(letter.payload).decode("ascii")
    return out


def letter_from_json(data: Mapping[str, Any], payload: bytes | None = None) -> DeadLetter:
    """The letter :func:`letter_to_json` described (*payload* overrides the one in *data*)."""
    if payload is None:
        if "payload_base64" in data:
            import base64

            payload = base64.b64decode(data["payload_base64"])
        else:
            payload = str(data.get("payload", "")).encode("utf-8")
    fields = {name: data[name] for name in _META_FIELDS if name in data}
    return DeadLetter(payload=payload, headers=data.get("headers") or {}, **fields)


def meta_to_text(letter: DeadLetter) -> str:
    """*letter* without its payload as compact JSON (for stores that keep a text column)."""
    return json.dumps(letter_to_json(letter, payload=False), separators=(",", ":"), sort_keys=True)
