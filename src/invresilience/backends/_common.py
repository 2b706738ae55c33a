"""Argument checks and error helpers shared by every backend module (no driver imports)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from .._core.idempotency import MAX_FINGERPRINT_LENGTH, check_key, check_seconds
from .._core.membership import GroupState, MembershipOp, MembershipView
from ..exceptions import (
    BackendError,
    ConfigurationError,
    LeaseLostError,
    MembershipConflictError,
)

if TYPE_CHECKING:
    from .._core.idempotency import Lease

__all__ = [
    "check_claim_args",
    "check_lease",
    "check_letter",
    "check_limit",
    "check_max_letters",
    "check_membership_op",
    "check_namespace",
    "check_ttl",
    "lost",
    "membership_result",
    "membership_step",
]

_NAMESPACE = re.compile(r"[A-Za-z0-9_.:\-]{1,100}\Z")


def check_claim_args(key: object, fingerprint: object, lease: object, ttl: object) -> None:
    """Raise :exc:`ConfigurationError` naming the first bad argument of a claim."""
    problem = check_key(key)
    if problem is not None:
        raise ConfigurationError("key", key, problem)
    if not isinstance(fingerprint, str) or not 0 < len(fingerprint) <= MAX_FINGERPRINT_LENGTH:
        raise ConfigurationError(
            "fingerprint",
            fingerprint,
            f"must be a non-empty str of at most {MAX_FINGERPRINT_LENGTH} characters",
        )
    problem = check_seconds(lease)
    if problem is not None:
        raise ConfigurationError("lease", lease, problem)
    check_ttl(ttl)


def check_ttl(ttl: object, *, field: str = "ttl") -> None:
    """Raise :exc:`ConfigurationError` unless *ttl* is a positive, finite number of seconds."""
    problem = check_seconds(ttl)
    if problem is not None:
        raise ConfigurationError(field, ttl, problem)


def check_lease(lease: object) -> None:
    """Raise :exc:`ConfigurationError` unless *lease* is a :class:`Lease`."""
    from .._core.idempotency import Lease

    if not isinstance(lease, Lease):
        raise ConfigurationError("lease", lease, "must be the Lease a claim returned")


def check_limit(limit: object) -> None:
    """Raise :exc:`ConfigurationError` unless *limit* is a positive int."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError("limit", limit, "must be an int >= 1")


def check_namespace(field: str, value: object) -> str:
    """*value* if it is a valid namespace (letters, digits, ``_.:-``, 1 to 100), else raise."""
    if not isinstance(value, str) or not _NAMESPACE.match(value):
        raise ConfigurationError(field, value, "must be 1 to 100 letters, digits or any of '_.:-'")
    return value


def lost(lease: Lease) -> LeaseLostError:
    """The error for a lease that no longer holds its key."""
    return LeaseLostError(lease.key, lease.fence)


def check_letter(letter: object, queue: str) -> None:
    """Raise :exc:`ConfigurationError` unless *letter* is a :class:`DeadLetter` of *queue*."""
    from .._core.dlq import DeadLetter, check_letter_id

    if not isinstance(letter, DeadLetter):
        raise ConfigurationError("letter", letter, "must be a DeadLetter")
    problem = check_letter_id(letter.id)
    if problem is not None:
        raise ConfigurationError("letter.id", letter.id, problem)
    if letter.queue != queue:
        raise ConfigurationError(
            "letter.queue", letter.queue, f"must be this store's queue {queue!r}"
        )


def check_max_letters(value: object) -> None:
    """Raise :exc:`ConfigurationError` unless *value* is ``None`` or an int >= 1."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError("max_letters", value, "must be None or an int >= 1")


def check_membership_op(op: MembershipOp) -> MembershipOp:
    """*op* if its member, token, weight, lease and acked are well formed, else raise."""
    if op.kind != "view":
        _check_text("member", op.member)
        _check_text("token", op.token)
    if op.kind in ("join", "heartbeat") and not _positive(op.lease):
        raise ConfigurationError("lease", op.lease, "must be a finite number of seconds > 0")
    if op.kind == "join" and not _positive(op.weight):
        raise ConfigurationError("weight", op.weight, "must be a finite number > 0")
    acked: object = op.acked
    if op.kind == "heartbeat" and (type(acked) is not int or op.acked < 0):
        raise ConfigurationError("acked", op.acked, "must be an int >= 0")
    return op


def _check_text(field: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ConfigurationError(field, value, "must be a non-empty str of at most 200 characters")


def _positive(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def membership_step(
    where: str,
    group: str,
    op: MembershipOp,
    stored: str | bytes | None,
    now: float,
    *,
    guarded: bool = False,
) -> tuple[MembershipView | float, str | None]:
    """Apply *op* to a group's stored document at the store's time *now*.

    Every document store (SQLite, Redis, PostgreSQL) runs this one step inside its own
    atomic section. *guarded* is for stores that can lose data (see
    :meth:`GroupState.loads`).

    Returns:
        What :meth:`GroupState.apply` returned, and the document to write back, or ``None``
        when nothing changed.

    Raises:
        BackendError: the stored document is malformed (naming *where* and the group).
    """
    try:
        state = GroupState.loads(group, stored, guarded=guarded)
    except ValueError as exc:
        raise BackendError(f"{where}: {exc}") from exc
    result = state.apply(op, now)
    after = state.dumps()
    if stored is None:
        changed = after != GroupState(group).dumps()
    else:
        changed = (after.encode() if isinstance(stored, bytes) else after) != stored
    return result, after if changed else None


def membership_result(
    group: str, op: MembershipOp, result: MembershipView | float
) -> MembershipView:
    """The view :meth:`GroupState.apply` returned, or the conflict it reported, raised."""
    if isinstance(result, MembershipView):
        return result
    raise MembershipConflictError(group, op.member, max(0.0, float(result)))
