"""The rules of an idempotency record: claim, complete, release, extend, expire.

One record per key. Every store follows these rules: the memory and SQLite stores call
these functions; the Redis Lua and the PostgreSQL SQL spell the same rules in their own
language, and the property tests hold all of them to the reference model, which is
these functions over a dict.

A record is *live* until ``expires_at``; after that it is as good as absent (a store may
delete it any time), except that a store that still has it continues its fence.

- **claim** on no live record, on a released record or on a pending record whose lease
  ran out, with the same fingerprint, *acquires*: the fence goes up by one, a new token
  is written, and the lease runs for ``lease`` seconds. A live record with a different
  fingerprint is a *mismatch*, whatever its state. A completed record *replays* its
  result. A pending record whose lease is still running is *in progress*.
- **complete**, **release** and **extend** present a lease. The lease *holds* while the
  record is pending with the lease's fence and token, even after its time ran out, as
  long as nobody claimed the key again: nobody else ran the work, so finishing it is
  safe. Otherwise the lease is *lost* and nothing changes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "COMPLETED",
    "MAX_FINGERPRINT_LENGTH",
    "MAX_KEY_LENGTH",
    "PENDING",
    "RELEASED",
    "Acquired",
    "Claim",
    "Completed",
    "InProgress",
    "Lease",
    "Mismatch",
    "Record",
    "check_key",
    "check_seconds",
    "claim",
    "complete",
    "extend",
    "holds",
    "release",
    "unique_keys",
]

RecordState = Literal["pending", "completed", "released"]
PENDING: Final = "pending"
COMPLETED: Final = "completed"
RELEASED: Final = "released"

#: Keys are at most this many characters: long enough for a namespaced UUID or a hash,
#: short enough for every backend's index.
MAX_KEY_LENGTH: Final = 512
#: Fingerprints are at most this many characters (``"sha256:"`` and 64 hex digits fit).
MAX_FINGERPRINT_LENGTH: Final = 256


@attrs.frozen
class Lease:
    """The right to run the work of one key, handed out by a successful claim.

    Present it to ``complete``, ``release`` or ``extend``. Pass :attr:`fence` along to
    any system you write to: it is larger for every later claim of the key, so that
    system can refuse a write from a worker whose lease was taken over.

    Attributes:
        key: The idempotency key.
        fence: The fencing token; every claim of the key gets a larger one.
        token: A random string naming this claim: two claims never share one.
        fingerprint: The payload fingerprint the claim was made with.
        duration: How many seconds the lease ran for when it was granted or last extended.

    .. versionadded:: 0.1.0
    """

    key: str
    fence: int
    token: str
    fingerprint: str
    duration: float


@attrs.frozen
class Acquired:
    """The claim succeeded: run the work under ``lease``, a :class:`Lease`.

    .. versionadded:: 0.1.0
    """

    lease: Lease


@attrs.frozen
class Completed:
    """The work was done before: ``result`` is what it returned, as stored bytes.

    .. versionadded:: 0.1.0
    """

    key: str
    fingerprint: str
    result: bytes


@attrs.frozen
class InProgress:
    """Another claim holds the key; its lease ends in ``retry_after`` seconds.

    .. versionadded:: 0.1.0
    """

    key: str
    fence: int
    retry_after: float


@attrs.frozen
class Mismatch:
    """The key is live with a different payload: ``fingerprint`` is the stored one.

    .. versionadded:: 0.1.0
    """

    key: str
    fingerprint: str


#: What a claim returns; match on the class.
Claim: TypeAlias = Acquired | Completed | InProgress | Mismatch


@attrs.frozen
class Record:
    """One key's stored record, in the store's time (seconds).

    ``lease_until`` is meaningful only while pending; ``result`` only when completed.
    """

    fingerprint: str
    state: RecordState
    fence: int
    token: str
    lease_until: float
    expires_at: float
    result: bytes | None = None


def holds(record: Record | None, lease: Lease, now: float) -> bool:
    """Whether *lease* is still the claim on *record*: pending, same fence and token."""
    return (
        record is not None
        and record.expires_at > now
        and record.state == PENDING
        and record.fence == lease.fence
        and record.token == lease.token
    )


def claim(
    record: Record | None,
    key: str,
    fingerprint: str,
    token: str,
    *,
    now: float,
    lease: float,
    ttl: float,
) -> tuple[Record | None, Claim]:
    """Claim *key*: the record to store (``None`` to leave it as it is) and the answer."""
    if record is not None and record.expires_at > now:
        if record.fingerprint != fingerprint:
            return None, Mismatch(key, record.fingerprint)
        if record.state == COMPLETED:
            assert record.result is not None
            return None, Completed(key, fingerprint, record.result)
        if record.state == PENDING and record.lease_until > now:
            return None, InProgress(key, record.fence, record.lease_until - now)
    fence = 1 if record is None else record.fence + 1
    lease_until = now + lease
    new = Record(
        fingerprint=fingerprint,
        state=PENDING,
        fence=fence,
        token=token,
        lease_until=lease_until,
        expires_at=now + max(ttl, lease),
    )
    return new, Acquired(Lease(key, fence, token, fingerprint, lease))


def complete(
    record: Record | None, lease: Lease, result: bytes, *, now: float, ttl: float
) -> Record | None:
    """The completed record, or ``None`` when *lease* was lost."""
    if not holds(record, lease, now):
        return None
    assert record is not None
    return attrs.evolve(
        record, state=COMPLETED, result=result, lease_until=0.0, expires_at=now + ttl
    )


def release(record: Record | None, lease: Lease, *, now: float) -> Record | None:
    """The released record, or ``None`` when *lease* was lost."""
    if not holds(record, lease, now):
        return None
    assert record is not None
    return attrs.evolve(record, state=RELEASED, lease_until=0.0)


def extend(record: Record | None, lease: Lease, seconds: float, *, now: float) -> Record | None:
    """The record with the lease running *seconds* from *now*, or ``None`` when lost."""
    if not holds(record, lease, now):
        return None
    assert record is not None
    until = now + seconds
    return attrs.evolve(record, lease_until=until, expires_at=max(record.expires_at, until))


def check_key(key: object) -> str | None:
    """Why *key* is not a valid idempotency key, or ``None`` when it is."""
    if not isinstance(key, str):
        return f"must be a str, got {type(key).__name__}"
    if not key:
        return "must not be empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"must be at most {MAX_KEY_LENGTH} characters, got {len(key)}"
    if "\x00" in key:
        return "must not contain NUL characters (PostgreSQL cannot store them)"
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate)"
    return None


def check_seconds(value: object) -> str | None:
    """Why *value* is not a positive, finite number of seconds, or ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number of seconds, got {type(value).__name__}"
    if not math.isfinite(value) or value <= 0:
        return f"must be a positive, finite number of seconds, got {value!r}"
    return None


def unique_keys(keys: Sequence[str]) -> str | None:
    """The first key that appears twice in *keys*, or ``None``."""
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            return key
        seen.add(key)
    return None
