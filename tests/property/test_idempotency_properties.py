"""The idempotency stores against a reference model written independently of ``_core``.

The model is a dict from key to a small record, with the rules of the
``IdempotencyStore`` protocol spelled out again here (not imported), so that a slip in
the shared rules shows up as a disagreement. The memory store and the SQLite store are
driven with the same calls and clock ticks, and every answer must agree.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from invresilience.backends.memory import MemoryIdempotencyStore
from invresilience.backends.sqlite import SqliteIdempotencyStore
from invresilience.exceptions import LeaseLostError
from invresilience.testing import ManualClock
from invresilience.typing import Acquired, Completed, InProgress, Lease, Mismatch

KEYS = st.sampled_from(["a", "b", "c"])
FINGERPRINTS = st.sampled_from(["fp-1", "fp-2"])
DURATIONS = st.sampled_from([1.0, 5.0, 30.0])
TICKS = st.sampled_from([0.5, 1.0, 4.0, 31.0])


@dataclasses.dataclass
class ModelRecord:
    fingerprint: str
    state: str  # "pending", "completed" or "released"
    fence: int
    token: str
    lease_until: float
    expires_at: float
    result: bytes = b""


class Model:
    """The protocol's rules, restated as plainly as possible."""

    def __init__(self) -> None:
        self.records: dict[str, ModelRecord] = {}
        self.now = 0.0

    def live(self, key: str) -> ModelRecord | None:
        record = self.records.get(key)
        return record if record is not None and record.expires_at > self.now else None

    def claim(self, key: str, fp: str, token: str, lease: float, ttl: float) -> tuple[Any, ...]:
        record = self.live(key)
        if record is not None:
            if record.fingerprint != fp:
                return ("mismatch", record.fingerprint)
            if record.state == "completed":
                return ("completed", record.result)
            if record.state == "pending" and record.lease_until > self.now:
                return ("in_progress", record.fence, record.lease_until - self.now)
        old = self.records.get(key)
        fence = old.fence + 1 if old is not None else 1
        self.records[key] = ModelRecord(
            fp, "pending", fence, token, self.now + lease, self.now + max(ttl, lease)
        )
        return ("acquired", fence)

    def holds(self, lease: Lease) -> ModelRecord | None:
        record = self.live(lease.key)
        if (
            record is not None
            and record.state == "pending"
            and (record.fence, record.token) == (lease.fence, lease.token)
        ):
            return record
        return None

    def complete(self, lease: Lease, result: bytes, ttl: float) -> bool:
        record = self.holds(lease)
        if record is None:
            return False
        record.state, record.result, record.expires_at = "completed", result, self.now + ttl
        return True

    def release(self, lease: Lease) -> bool:
        record = self.holds(lease)
        if record is None:
            return False
        record.state = "released"
        return True

    def extend(self, lease: Lease, seconds: float) -> bool:
        record = self.holds(lease)
        if record is None:
            return False
        record.lease_until = self.now + seconds
        record.expires_at = max(record.expires_at, record.lease_until)
        return True


def answer(claim: Any) -> tuple[Any, ...]:
    """A store's claim answer in the model's shape (tokens differ, so they are left out)."""
    if isinstance(claim, Acquired):
        return ("acquired", claim.lease.fence)
    if isinstance(claim, Completed):
        return ("completed", claim.result)
    if isinstance(claim, InProgress):
        return ("in_progress", claim.fence, claim.retry_after)
    assert isinstance(claim, Mismatch)
    return ("mismatch", claim.fingerprint)


class StoresAgreeWithTheModel(RuleBasedStateMachine):
    """Claim, complete, release, extend and time passing, on two stores and the model."""

    leases = Bundle("leases")

    @initialize()
    def start(self) -> None:
        self.clock = ManualClock()
        self.model = Model()
        # The stores time records on the wall clock; the model does the same arithmetic
        # on the same floats, so even rounding agrees.
        self.model.now = self.clock.wall()
        self.directory = tempfile.TemporaryDirectory()
        self.stores: list[Any] = [
            MemoryIdempotencyStore(clock=self.clock),
            SqliteIdempotencyStore(Path(self.directory.name) / "idem.db", clock=self.clock),
        ]

    def teardown(self) -> None:
        if hasattr(self, "stores"):
            for store in self.stores:
                store.close()
            self.directory.cleanup()

    @rule(target=leases, key=KEYS, fp=FINGERPRINTS, lease=DURATIONS, ttl=DURATIONS)
    def claim(self, key: str, fp: str, lease: float, ttl: float) -> Any:
        answers = [store.claim(key, fp, lease=lease, ttl=ttl) for store in self.stores]
        leases = [a.lease for a in answers if isinstance(a, Acquired)]
        token = leases[0].token if leases else "-"
        expected = self.model.claim(key, fp, token, lease, ttl)
        for store, got in zip(self.stores, answers, strict=True):
            assert expected == answer(got), type(store).__name__
        if leases:
            # Each store gave its own token; the model adopts the first one's, and the
            # lease of every store travels together so the same call goes to each.
            return tuple(leases)
        return multiple()

    @rule(leases=consumes(leases), result=st.binary(max_size=8), ttl=DURATIONS)
    def complete(self, leases: tuple[Lease, ...], result: bytes, ttl: float) -> None:
        expected = self.model.complete(leases[0], result, ttl)
        for store, lease in zip(self.stores, leases, strict=True):
            assert expected == self._done(store.complete, lease, result, ttl=ttl)

    @rule(leases=consumes(leases))
    def release(self, leases: tuple[Lease, ...]) -> None:
        expected = self.model.release(leases[0])
        for store, lease in zip(self.stores, leases, strict=True):
            assert expected == self._done(store.release, lease)

    @rule(target=leases, leases=consumes(leases), seconds=DURATIONS)
    def extend(self, leases: tuple[Lease, ...], seconds: float) -> Any:
        expected = self.model.extend(leases[0], seconds)
        for store, lease in zip(self.stores, leases, strict=True):
            assert expected == self._done(store.extend, lease, seconds)
        return leases

    @rule(seconds=TICKS)
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now = self.clock.wall()

    @rule()
    def purge(self) -> None:
        for store in self.stores:
            store.purge_expired(1000)
        # A purge forgets expired records: the next claim of such a key starts at fence 1.
        for key in [k for k, r in self.model.records.items() if r.expires_at <= self.model.now]:
            del self.model.records[key]

    @invariant()
    def fences_only_grow(self) -> None:
        for record in self.model.records.values():
            assert record.fence >= 1

    @staticmethod
    def _done(call: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            call(*args, **kwargs)
        except LeaseLostError:
            return False
        return True


StoresAgreeWithTheModel.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoresAgreeWithTheModel = StoresAgreeWithTheModel.TestCase


def test_the_model_is_exercised() -> None:
    """A sanity check of the model itself: claim, lose, take over, complete, replay."""
    model = Model()
    assert ("acquired", 1) == model.claim("k", "fp", "t1", 5.0, 60.0)
    first = Lease("k", 1, "t1", "fp", 5.0)
    model.now = 6.0
    assert ("acquired", 2) == model.claim("k", "fp", "t2", 5.0, 60.0)
    assert not model.complete(first, b"late", 60.0)
    assert model.complete(Lease("k", 2, "t2", "fp", 5.0), b"r", 60.0)
    assert ("completed", b"r") == model.claim("k", "fp", "t3", 5.0, 60.0)
    assert ("mismatch", "fp") == model.claim("k", "other", "t4", 5.0, 60.0)


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
