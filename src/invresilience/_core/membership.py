"""Membership views and the ownership rule, as data and pure functions.

A membership store (static, memory, Redis) hands out :class:`MembershipView` values: the
live members of a group at one *version*, each with the newest version it has confirmed
acting on (``acked``), plus the member weights of every version some live member may still
be acting on (``history``). :func:`may_own` decides, from a view alone, whether a worker may
act on a key.

The rule. Every member acts on the newest view it has received and reports that view's
version as ``acked`` on its next heartbeat, so a member with ``acked = u`` acts on some
version in ``[u, latest]``. Worker *W* holding view *v* owns key *k* when

1. *k* routes to *W* under version *v*, and
2. for every version ``u < v`` still in play, the member *M* that *k* routes to under *u*
   is *W*, or is no longer live, or has acknowledged a version newer than *u*.

Two workers can therefore never own a key together: if *A* acts on version *u* and *B* on a
newer version *w*, then *A*'s ``acked`` is at most *u*, so *B*'s check at *u* (where *k*
routes to *A*) refuses. A dead member stops counting once its lease has expired; it stopped
acting before that, because a member stops acting when its own, earlier-starting copy of the
lease runs out. That is the handoff: keys move when the old owner has moved on or its lease
has run out, never before.

The rule relies on the store remembering leases. A store that can lose its data (Redis
without persistence, restarted) would forget members that are still acting, so such stores
start a group they find empty with a quiet period of one lease (``quiet_for``), during which
nobody owns anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias

import attrs
from typing_extensions import final

__all__ = [
    "Change",
    "GroupState",
    "Member",
    "MembershipChange",
    "MembershipOp",
    "MembershipView",
    "changes_between",
    "incarnation_of",
    "may_own",
]

Change: TypeAlias = Literal["joined", "left", "reweighted"]
"""How a member changed between two views.

.. versionadded:: 0.1.0
"""


@final
@attrs.frozen(kw_only=True)
class Member:
    """One live member of a group, as a membership store saw it.

    Attributes:
        name: The member's name, unique in its group.
        weight: Its routing weight (``1.0`` unless it joined with another).
        acked: The newest membership version it has confirmed acting on.
        expires_in: Seconds left on its lease when the view was read (on the store's
            clock), or ``None`` for members that hold no lease
            (:class:`~invresilience.StaticMembership`).
        incarnation: Which join holds the name: :func:`incarnation_of` the joining token
            (a digest, so members do not learn each other's tokens); empty for static members.

    .. versionadded:: 0.1.0
    """

    name: str
    weight: float = 1.0
    acked: int = 0
    expires_in: float | None = None
    incarnation: str = ""


@final
@attrs.frozen(kw_only=True)
class MembershipChange:
    """A member joined, left or changed weight between two views.

    Attributes:
        kind: ``"joined"``, ``"left"`` or ``"reweighted"``.
        member: The member's name.
        version: The version of the newer view.

    .. versionadded:: 0.1.0
    """

    kind: Change
    member: str
    version: int


@final
@attrs.frozen(kw_only=True)
class MembershipView:
    """The live members of a group at one version: what every routing decision is made from.

    Attributes:
        group: The group's name.
        version: Bumped by every join, leave (or lease expiry) and weight change.
        members: The live members by name.
        history: Member weights for each older version some live member may still act on
            (``acked`` up to ``version - 1``); the current version's are in *members*.
        quiet_for: Seconds before any member may own a key. A store that can lose its data
            (Redis without persistence) starts a group it finds empty with one lease of
            quiet: members of the lost state may still be acting until their leases end.

    .. versionadded:: 0.1.0
    """

    group: str
    version: int
    members: Mapping[str, Member] = attrs.field(factory=dict)
    history: Mapping[int, Mapping[str, float]] = attrs.field(factory=dict)
    quiet_for: float = 0.0

    @property
    def weights(self) -> dict[str, float]:
        """Member name to weight at this version."""
        return {name: member.weight for name, member in self.members.items()}

    @property
    def settled(self) -> bool:
        """Whether every live member has acknowledged this version (no handoff in flight)."""
        return all(member.acked >= self.version for member in self.members.values())

    def weights_at(self, version: int) -> Mapping[str, float] | None:
        """Member weights at *version*: this view's, a kept older version's, or ``None``."""
        if version == self.version:
            return self.weights
        return self.history.get(version)

    def __contains__(self, member: object) -> bool:
        return member in self.members


def incarnation_of(token: str) -> str:
    """The public digest of a member's token that :attr:`Member.incarnation` shows.

    A worker compares it with its own to tell whether the name in a view is still its own,
    or was taken by a newer process after its lease ran out. A store written outside
    invresilience must fill :attr:`Member.incarnation` with it.

    .. versionadded:: 0.1.0
    """
    return hashlib.blake2b(token.encode(), digest_size=8).hexdigest()


def changes_between(older: MembershipView | None, newer: MembershipView) -> list[MembershipChange]:
    """The joins, leaves and weight changes from *older* to *newer*, sorted by member name.

    With no *older* view, every member of *newer* has joined.
    """
    before = {} if older is None else older.weights
    after = newer.weights
    changes: list[MembershipChange] = []
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            changes.append(MembershipChange(kind="joined", member=name, version=newer.version))
        elif name not in after:
            changes.append(MembershipChange(kind="left", member=name, version=newer.version))
        elif before[name] != after[name]:
            changes.append(MembershipChange(kind="reweighted", member=name, version=newer.version))
    return changes


def may_own(view: MembershipView, me: str, owner_at: Callable[[int], str | None]) -> bool:
    """Whether *me* may act on a key now, by the rule in the module docstring.

    Args:
        view: The newest view *me* holds.
        me: The member asking.
        owner_at: The key's owner under the member weights of a version (``None`` if that
            version had no members); called with ``view.version`` first, then only with
            versions whose weights *view* holds.

    Returns:
        ``False`` when *me* is not live in *view*, when the key routes elsewhere, when a live
        member may still own it under a version it has not moved past, or when a version in
        play is missing from the history (then safety cannot be shown).
    """
    if me not in view.members or owner_at(view.version) != me:
        return False
    oldest = min(
        (member.acked for name, member in view.members.items() if name != me),
        default=view.version,
    )
    for version in range(max(oldest, 0), view.version):
        if view.weights_at(version) is None:
            return False
        owner = owner_at(version)
        if owner is None or owner == me:
            continue
        other = view.members.get(owner)
        if other is not None and other.acked <= version:
            return False
    return True


@final
@attrs.frozen(kw_only=True)
class MembershipOp:
    """One request to a membership store, as data (what the backends pass to :class:`GroupState`).

    Attributes:
        kind: ``"join"``, ``"heartbeat"``, ``"leave"`` or ``"view"``.
        member: The member's name (empty for ``"view"``).
        token: The member's incarnation: a join with another token clashes while the
            member is live, and heartbeats or leaves with another token change nothing.
        weight: The weight to join with.
        lease: Seconds of lease to grant, on the store's clock.
        acked: For heartbeats, the version the member acts on.
    """

    kind: Literal["join", "heartbeat", "leave", "view"]
    member: str = ""
    token: str = ""
    weight: float = 1.0
    lease: float = 0.0
    acked: int = 0


@attrs.define
class _Entry:
    weight: float
    acked: int
    expires_at: float
    token: str


class GroupState:
    """One group's membership as a store keeps it: the rules every store runs.

    The stores do not reimplement these rules: memory holds a :class:`GroupState` under a
    lock, and Redis, PostgreSQL and SQLite load it from one JSON document per group, apply
    the operation on their own clock, and write it back in one atomic step.

    Times are the store's clock, passed in as *now* (seconds). Every operation first
    removes members whose lease has run out; each join, leave, removal or weight change
    bumps the version once and records the new weights in the history, which is trimmed to
    the versions some live member may still act on.
    """

    def __init__(self, group: str, *, guarded: bool = False) -> None:
        self.group = group
        self.version = 0
        #: Store time before which no member may own keys (see :attr:`MembershipView.quiet_for`).
        self.quiet_until: float | None = None
        self._members: dict[str, _Entry] = {}
        self._history: dict[int, dict[str, float]] = {}
        self._guard = guarded

    def _start_quiet(self, lease: float, now: float) -> None:
        # A guarded store that finds no state may have lost it (a Redis restarted without
        # persistence): members of the lost state may act until their leases end, so the
        # new state grants no ownership for one lease.
        if self._guard:
            self._guard = False
            self.quiet_until = now + lease

    def _sweep(self, now: float) -> None:
        expired = [name for name, entry in self._members.items() if entry.expires_at <= now]
        for name in expired:
            del self._members[name]
        if expired:
            self._bump()

    def _bump(self) -> None:
        self.version += 1
        self._history[self.version] = {n: e.weight for n, e in self._members.items()}

    def join(
        self, member: str, token: str, *, weight: float, lease: float, now: float
    ) -> MembershipView | float:
        """Add or renew *member*; the seconds its other incarnation's lease has left on a clash."""
        self._sweep(now)
        self._start_quiet(lease, now)
        entry = self._members.get(member)
        if entry is not None and entry.token != token:
            return entry.expires_at - now
        if entry is None:
            self._members[member] = _Entry(float(weight), 0, now + lease, token)
            self._bump()
            self._members[member].acked = self.version
        else:
            entry.expires_at = now + lease
            if entry.weight != weight:
                entry.weight = float(weight)
                self._bump()
        return self.view(now)

    def heartbeat(
        self, member: str, token: str, *, lease: float, acked: int, now: float
    ) -> MembershipView:
        """Renew *member*'s lease and record *acked*; a view without it if its lease was lost."""
        self._sweep(now)
        self._start_quiet(lease, now)
        if acked > self.version:
            self._rolled_back(acked, lease, now)
        entry = self._members.get(member)
        if entry is not None and entry.token == token:
            entry.expires_at = now + lease
            entry.acked = max(entry.acked, min(acked, self.version))
        return self.view(now)

    def _rolled_back(self, acked: int, lease: float, now: float) -> None:
        # A member has acted on a version this state never reached: the store came back
        # from an older copy (a snapshot, a lagging replica). Members it forgot may still be
        # acting, and its version numbers were handed out before with other members: move
        # the version past every one a member has seen, and own nothing for one lease.
        self.version = acked
        self._bump()
        quiet = now + lease
        self.quiet_until = quiet if self.quiet_until is None else max(self.quiet_until, quiet)

    def leave(self, member: str, token: str, *, now: float) -> MembershipView:
        """Remove *member* if *token* is its current incarnation."""
        self._sweep(now)
        entry = self._members.get(member)
        if entry is not None and entry.token == token:
            del self._members[member]
            self._bump()
        return self.view(now)

    def apply(self, op: MembershipOp, now: float) -> MembershipView | float:
        """Run *op*: a view, or (for a join that clashes) the other incarnation's lease left."""
        if op.kind == "join":
            return self.join(op.member, op.token, weight=op.weight, lease=op.lease, now=now)
        if op.kind == "heartbeat":
            return self.heartbeat(op.member, op.token, lease=op.lease, acked=op.acked, now=now)
        if op.kind == "leave":
            return self.leave(op.member, op.token, now=now)
        return self.view(now)

    def dumps(self) -> str:
        """The state as JSON text, for stores that keep one document per group."""
        return json.dumps(
            {
                "version": self.version,
                "members": {
                    n: [e.weight, e.acked, e.expires_at, e.token] for n, e in self._members.items()
                },
                "history": {str(v): w for v, w in self._history.items()},
                "quiet_until": self.quiet_until,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def loads(cls, group: str, text: str | bytes | None, *, guarded: bool = False) -> GroupState:
        """A state from :meth:`dumps` output (a fresh one for ``None``).

        Args:
            group: The group's name.
            text: The stored document, or ``None`` if there is none.
            guarded: For stores that can lose their data: a fresh state then makes the
                group quiet for the first lease granted (see :attr:`MembershipView.quiet_for`).

        Raises:
            ValueError: the text is not a membership state.
        """
        state = cls(group, guarded=guarded)
        if text is None:
            return state
        state._guard = False
        try:
            data: Any = json.loads(text)
            state.version = int(data["version"])
            for name, (weight, acked, expires_at, token) in data["members"].items():
                state._members[str(name)] = _Entry(
                    float(weight), int(acked), float(expires_at), str(token)
                )
            for version, weights in data["history"].items():
                state._history[int(version)] = {str(n): float(w) for n, w in weights.items()}
            quiet = data.get("quiet_until")
            state.quiet_until = None if quiet is None else float(quiet)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"membership state of group {group!r} is malformed: {exc}") from None
        return state

    def view(self, now: float) -> MembershipView:
        """The current view, after removing expired members."""
        self._sweep(now)
        oldest = min((e.acked for e in self._members.values()), default=self.version)
        for version in [v for v in self._history if v < oldest or v > self.version]:
            del self._history[version]
        members = {
            name: Member(
                name=name,
                weight=e.weight,
                acked=e.acked,
                expires_in=e.expires_at - now,
                incarnation=incarnation_of(e.token),
            )
            for name, e in sorted(self._members.items())
        }
        history = {v: dict(w) for v, w in self._history.items() if v < self.version}
        quiet = 0.0 if self.quiet_until is None else max(0.0, self.quiet_until - now)
        return MembershipView(
            group=self.group,
            version=self.version,
            members=members,
            history=history,
            quiet_for=quiet,
        )
