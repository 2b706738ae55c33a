"""The idempotency guard, the JSON codec and fingerprints, on the memory store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import inspect
import sqlite3
import threading
from typing import Any

import pytest

import invresilience as ir
from invresilience.backends.memory import (
    AsyncMemoryIdempotencyStore,
    MemoryBackend,
    MemoryIdempotencyStore,
)
from invresilience.testing import ManualClock
from invresilience.typing import Acquired, Completed, InProgress, Lease


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock: ManualClock) -> MemoryIdempotencyStore:
    return MemoryIdempotencyStore(clock=clock)


class Counter:
    """A function that counts its calls and returns its arguments."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, sku: str, qty: int = 1) -> dict[str, Any]:
        self.calls += 1
        return {"sku": sku, "qty": qty, "call": self.calls}


# -- fingerprints and the codec ---------------------------------------------------------------


def test_fingerprint_is_canonical_json_sha256() -> None:
    """The fingerprint is sha256 over sorted, compact JSON: a pinned vector."""
    # sha256(b'{"args":["SKU-1",2],"kwargs":{"a":1,"b":"x"}}'), pinned: a change of
    # encoding would make every stored record a mismatch.
    expected = "sha256:b57fac61a0216adb5cc5435804d293a8dec04f3ffd17e6ee7776ba63af7525f4"
    assert expected == ir.fingerprint(("SKU-1", 2), {"b": "x", "a": 1})
    # Non-ASCII text is hashed as UTF-8, not as \u escapes.
    accented = "sha256:a2d6d3ae819aaf22b7e17b99ad32f7b218fef5d504512aa6cdf3d151e4f0400c"
    assert accented == ir.fingerprint(("été",))


def test_fingerprint_ignores_keyword_order_and_tells_types_apart() -> None:
    """Keyword order does not matter; 1 and "1" are different payloads."""
    assert ir.fingerprint((), {"a": 1, "b": 2}) == ir.fingerprint((), {"b": 2, "a": 1})
    assert ir.fingerprint((1,)) != ir.fingerprint(("1",))


def test_fingerprint_refuses_non_json_arguments() -> None:
    """An argument JSON cannot hold raises CodecError saying to pass a fingerprint."""
    with pytest.raises(ir.CodecError, match="fingerprint"):
        ir.fingerprint((object(),))


def test_json_codec_round_trips_with_user_hooks() -> None:
    """default= and object_hook= carry a user type through the JSON codec."""

    @dataclasses.dataclass
    class Receipt:
        sku: str
        at: datetime.date

    def default(value: object) -> object:
        assert isinstance(value, Receipt)
        return {"__receipt__": [value.sku, value.at.isoformat()]}

    def hook(obj: dict[str, Any]) -> object:
        if "__receipt__" in obj:
            sku, at = obj["__receipt__"]
            return Receipt(sku, datetime.date.fromisoformat(at))
        return obj

    codec = ir.JsonCodec(default=default, object_hook=hook)
    receipt = Receipt("SKU-1", datetime.date(2026, 11, 24))
    assert receipt == codec.decode(codec.encode(receipt))


def test_json_codec_errors_name_what_failed() -> None:
    """Unencodable values, NaN and undecodable bytes raise CodecError with the reason."""
    codec = ir.JsonCodec()
    with pytest.raises(ir.CodecError, match="cannot encode a set"):
        codec.encode({1, 2})
    with pytest.raises(ir.CodecError, match="cannot encode a float"):
        codec.encode(float("nan"))
    with pytest.raises(ir.CodecError, match="cannot decode 3 bytes"):
        codec.decode(b"\xff\xfe{")


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"ttl": -1.0}, "Idempotency.ttl"),
        ({"ttl": 0}, "Idempotency.ttl"),
        ({"lease": float("inf")}, "Idempotency.lease"),
        ({"on_in_progress": "block"}, "Idempotency.on_in_progress"),
        ({"wait_timeout": -1}, "Idempotency.wait_timeout"),
        ({"codec": object()}, "Idempotency.codec"),
    ],
)
def test_bad_configuration_names_the_field(
    store: MemoryIdempotencyStore, changes: dict[str, Any], field: str
) -> None:
    """Bad settings raise ConfigurationError naming the field and the value."""
    with pytest.raises(ir.ConfigurationError) as info:
        ir.Idempotency(store, **changes)
    assert field == info.value.field
    assert next(iter(changes.values())) == info.value.value or field == "Idempotency.codec"


def test_a_store_must_be_a_store() -> None:
    """Something without claim() and complete() is refused as the store."""
    with pytest.raises(ir.ConfigurationError, match="IdempotencyStore"):
        ir.Idempotency(object())  # type: ignore[arg-type]


def test_durations_accept_timedelta(store: MemoryIdempotencyStore) -> None:
    """ttl and lease accept a timedelta, stored as seconds."""
    guard = ir.Idempotency(store, ttl=datetime.timedelta(hours=1), lease=datetime.timedelta(0, 5))
    assert (3600.0, 5.0) == (guard.ttl, guard.lease)


@pytest.mark.parametrize("key", ["", "k" * 513, 42, None])
def test_bad_keys_are_refused_before_anything_runs(store: MemoryIdempotencyStore, key: Any) -> None:
    """An empty, over-long or non-str key raises ConfigurationError; fn never runs."""
    fn = Counter()
    with pytest.raises(ir.ConfigurationError) as info:
        ir.Idempotency(store).run(key, fn, "SKU-1")
    assert "key" == info.value.field
    assert 0 == fn.calls


# -- run ----------------------------------------------------------------------------------------


def test_run_calls_once_and_replays_the_stored_result(store: MemoryIdempotencyStore) -> None:
    """The second run of a key returns the stored result without calling fn."""
    fn = Counter()
    guard = ir.Idempotency(store, heartbeat=False)
    first = guard.run("job-1", fn, "SKU-1", qty=2)
    again = guard.run("job-1", fn, "SKU-1", qty=2)
    assert {"sku": "SKU-1", "qty": 2, "call": 1} == first == again
    assert 1 == fn.calls


def test_replay_returns_what_the_codec_decodes(store: MemoryIdempotencyStore) -> None:
    """The first call returns fn's own value; a replay the decoded one (a tuple as a list)."""
    guard = ir.Idempotency(store, heartbeat=False)
    assert (1, 2) == guard.run("job-1", lambda: (1, 2))
    replayed: Any = guard.run("job-1", lambda: (1, 2))
    assert [1, 2] == replayed


def test_other_arguments_under_the_same_key_are_a_reuse_error(
    store: MemoryIdempotencyStore,
) -> None:
    """The same key with a different payload raises IdempotencyKeyReuseError, also after completion."""
    fn = Counter()
    guard = ir.Idempotency(store, heartbeat=False)
    guard.run("job-1", fn, "SKU-1")
    with pytest.raises(ir.IdempotencyKeyReuseError) as info:
        guard.run("job-1", fn, "SKU-2")
    assert "job-1" == info.value.key
    assert 1 == fn.calls


def test_a_failed_call_releases_its_claim(store: MemoryIdempotencyStore) -> None:
    """When fn raises, the claim is released and the next run calls fn again."""
    guard = ir.Idempotency(store, heartbeat=False)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("ERP down")
        return "ok"

    with pytest.raises(ConnectionError):
        guard.run("job-1", flaky)
    assert "ok" == guard.run("job-1", flaky)
    assert 2 == len(calls)


def test_an_unencodable_result_releases_the_claim_and_says_what(
    store: MemoryIdempotencyStore,
) -> None:
    """A result the codec cannot encode raises CodecError naming it; the key is free again."""
    guard = ir.Idempotency(store, heartbeat=False)
    with pytest.raises(ir.CodecError, match="cannot encode a set"):
        guard.run("job-1", lambda: {1, 2})
    assert isinstance(store.claim("job-1", ir.fingerprint(()), lease=5.0), Acquired)


def test_in_progress_raises_with_retry_after(
    store: MemoryIdempotencyStore, clock: ManualClock
) -> None:
    """A key held by another worker raises IdempotencyInProgressError with its lease's end."""
    store.claim("job-1", ir.fingerprint(("SKU-1",)), lease=30.0)
    clock.advance(10.0)
    fn = Counter()
    with pytest.raises(ir.IdempotencyInProgressError) as info:
        ir.Idempotency(store).run("job-1", fn, "SKU-1")
    assert 20.0 == info.value.retry_after
    assert 0 == fn.calls


class CompletingStore:
    """A store that lets the holder of a key complete it on the n-th claim."""

    def __init__(self, store: MemoryIdempotencyStore, lease: Lease, on_claim: int) -> None:
        self.store = store
        self.lease = lease
        self.on_claim = on_claim
        self.claims = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def claim(self, key: str, fingerprint: str, *, lease: float, ttl: float = 86400.0) -> Any:
        self.claims += 1
        if self.claims == self.on_claim:
            self.store.complete(self.lease, b'"theirs"')
        return self.store.claim(key, fingerprint, lease=lease, ttl=ttl)


def test_wait_returns_the_holders_result(store: MemoryIdempotencyStore, clock: ManualClock) -> None:
    """on_in_progress="wait" polls with growing pauses and replays the holder's result."""
    held = store.claim("job-1", ir.fingerprint(()), lease=30.0)
    assert isinstance(held, Acquired)
    waiting = CompletingStore(store, held.lease, on_claim=4)
    guard = ir.Idempotency(waiting, on_in_progress="wait", clock=clock)
    assert "theirs" == guard.run("job-1", lambda: "mine")
    assert [0.05, 0.1, 0.2] == clock.sleeps


def test_wait_is_bounded(store: MemoryIdempotencyStore, clock: ManualClock) -> None:
    """A wait longer than wait_timeout raises IdempotencyInProgressError after exactly that long."""
    store.claim("job-1", ir.fingerprint(()), lease=30.0)
    guard = ir.Idempotency(store, on_in_progress="wait", wait_timeout=3.0, clock=clock)
    with pytest.raises(ir.IdempotencyInProgressError):
        guard.run("job-1", lambda: "mine")
    assert 3.0 == pytest.approx(sum(clock.sleeps))
    assert 1.0 == max(clock.sleeps)


def test_wait_takes_over_a_dead_workers_claim(
    store: MemoryIdempotencyStore, clock: ManualClock
) -> None:
    """A waiter runs the work itself once the dead holder's lease has run out."""
    store.claim("job-1", ir.fingerprint(()), lease=2.0)
    guard = ir.Idempotency(store, on_in_progress="wait", wait_timeout=10.0, clock=clock)
    assert "mine" == guard.run("job-1", lambda: "mine")
    assert 2.0 <= sum(clock.sleeps) < 3.0


def test_a_lease_taken_over_mid_call_is_lost(
    store: MemoryIdempotencyStore, clock: ManualClock
) -> None:
    """If another worker takes the key over while fn runs, complete raises LeaseLostError."""
    guard = ir.Idempotency(store, lease=5.0, heartbeat=False)
    fp = ir.fingerprint(())

    def slow() -> str:
        clock.advance(6.0)
        other = store.claim("job-1", fp, lease=5.0)
        assert isinstance(other, Acquired)
        store.complete(other.lease, b'"theirs"')
        return "mine"

    with pytest.raises(ir.LeaseLostError) as info:
        guard.run("job-1", slow)
    assert 1 == info.value.fence
    replay = store.claim("job-1", fp, lease=5.0)
    assert isinstance(replay, Completed)
    assert b'"theirs"' == replay.result


def test_run_fingerprinted_takes_any_arguments(store: MemoryIdempotencyStore) -> None:
    """run_fingerprinted() accepts arguments JSON cannot hold, under the given fingerprint."""
    guard = ir.Idempotency(store, heartbeat=False)
    marker = object()
    assert "ok" == guard.run_fingerprinted("job-1", "fp-v1", lambda m: "ok", marker)
    with pytest.raises(ir.IdempotencyKeyReuseError):
        guard.run_fingerprinted("job-1", "fp-v2", lambda m: "ok", marker)


def test_run_needs_a_sync_store(clock: ManualClock) -> None:
    """run() on an async store raises ConfigurationError pointing to arun()."""
    guard = ir.Idempotency(AsyncMemoryIdempotencyStore(clock=clock))
    with pytest.raises(ir.ConfigurationError, match="arun"):
        guard.run("job-1", lambda: 1)


def test_run_in_transaction_needs_a_transactional_store(store: MemoryIdempotencyStore) -> None:
    """run_in_transaction() on a store without transaction() raises ConfigurationError."""
    with pytest.raises(ir.ConfigurationError, match="transaction"):
        ir.Idempotency(store).run_in_transaction("job-1", lambda conn: 1)


class CountingStore:
    """A store wrapper counting extend() calls and signalling after the n-th."""

    def __init__(self, store: MemoryIdempotencyStore, after: int) -> None:
        self.store = store
        self.extends = 0
        self.after = after
        self.enough = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def extend(self, lease: Lease, seconds: float) -> Lease:
        new = self.store.extend(lease, seconds)
        self.extends += 1
        if self.extends >= self.after:
            self.enough.set()
        return new


def test_heartbeat_extends_a_long_sync_call() -> None:
    """While a sync call runs, the heartbeat thread extends its lease; complete uses the new one."""
    counting = CountingStore(MemoryIdempotencyStore(), after=2)
    guard = ir.Idempotency(counting, lease=0.06)

    def long_call() -> str:
        assert counting.enough.wait(10.0), "the heartbeat never extended the lease"
        return "done"

    assert "done" == guard.run("job-1", long_call)
    assert counting.extends >= 2
    assert isinstance(counting.store.claim("job-1", ir.fingerprint(()), lease=1.0), Completed)


# -- async ----------------------------------------------------------------------------------------


def test_arun_calls_once_and_replays(clock: ManualClock) -> None:
    """arun() awaits fn once per key and replays afterwards."""
    guard = ir.Idempotency(AsyncMemoryIdempotencyStore(clock=clock), clock=clock)
    calls = []

    async def fetch(sku: str) -> str:
        calls.append(sku)
        return sku.lower()

    async def main() -> list[str]:
        return [await guard.arun("job-1", fetch, "SKU-1") for _ in range(3)]

    assert ["sku-1"] * 3 == asyncio.run(main())
    assert ["SKU-1"] == calls


def test_arun_releases_on_failure_and_on_cancellation(clock: ManualClock) -> None:
    """A failed or cancelled arun() releases its claim, so the next one runs."""
    store = AsyncMemoryIdempotencyStore(clock=clock)
    guard = ir.Idempotency(store, clock=clock)

    async def boom() -> str:
        raise ConnectionError("down")

    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    async def ok() -> str:
        return "ok"

    async def main() -> str:
        with pytest.raises(ConnectionError):
            await guard.arun("job-1", boom)
        task = asyncio.ensure_future(guard.arun("job-2", hang))
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await guard.arun("job-1", ok) + await guard.arun("job-2", ok)

    assert "okok" == asyncio.run(main())


def test_async_heartbeat_extends_the_lease(clock: ManualClock) -> None:
    """While an async call runs, its heartbeat task extends the lease on the guard's clock."""
    extends = []
    store = AsyncMemoryIdempotencyStore(clock=clock)
    real_extend = store.extend

    async def extend(lease: Lease, seconds: float) -> Lease:
        extends.append(seconds)
        return await real_extend(lease, seconds)

    store.extend = extend  # type: ignore[method-assign]
    guard = ir.Idempotency(store, lease=9.0, clock=clock)

    async def long_call() -> str:
        for _ in range(10):
            await asyncio.sleep(0)
        return "done"

    assert "done" == asyncio.run(guard.arun("job-1", long_call))
    assert extends
    assert {9.0} == set(extends)
    assert all(3.0 == pause for pause in clock.sleeps)


def test_arun_with_a_sync_store_uses_a_thread(store: MemoryIdempotencyStore) -> None:
    """arun() on a sync store calls it in a worker thread and behaves the same."""
    guard = ir.Idempotency(store, heartbeat=False)

    async def fetch() -> int:
        return 7

    assert 7 == asyncio.run(guard.arun("job-1", fetch))
    assert 7 == asyncio.run(guard.arun("job-1", fetch))


def test_async_wait_and_reuse(clock: ManualClock) -> None:
    """arun() raises on reuse, and with wait polls until the holder's lease runs out."""
    store = AsyncMemoryIdempotencyStore(clock=clock)
    guard = ir.Idempotency(store, on_in_progress="wait", clock=clock)

    async def main() -> str:
        await store.claim("job-1", ir.fingerprint(()), lease=1.0)

        async def mine() -> str:
            return "mine"

        result = await guard.arun("job-1", mine)
        with pytest.raises(ir.IdempotencyKeyReuseError):
            await guard.arun("job-1", mine, "other")  # type: ignore[call-arg]
        return result

    assert "mine" == asyncio.run(main())
    assert 1.0 <= sum(clock.sleeps) < 2.0


# -- the decorator --------------------------------------------------------------------------------


def test_decorator_keys_calls_and_keeps_the_signature(store: MemoryIdempotencyStore) -> None:
    """@guard(key=...) runs each key once and keeps the function's name and signature."""
    guard = ir.Idempotency(store, heartbeat=False)
    calls = []

    @guard(key=lambda sku, qty: f"adjust:{sku}")
    def adjust(sku: str, qty: int) -> int:
        calls.append((sku, qty))
        return qty

    assert 5 == adjust("SKU-1", 5)
    assert 5 == adjust("SKU-1", 5)
    with pytest.raises(ir.IdempotencyKeyReuseError):
        adjust("SKU-1", 6)
    assert [("SKU-1", 5)] == calls
    assert "adjust" == adjust.__name__
    assert "(sku: 'str', qty: 'int') -> 'int'" == str(inspect.signature(adjust))


def test_decorator_with_a_custom_fingerprint_on_async(clock: ManualClock) -> None:
    """An async function decorated with key= and fingerprint= is awaited once per key."""
    guard = ir.Idempotency(AsyncMemoryIdempotencyStore(clock=clock), clock=clock)
    calls = []

    @guard(key=lambda order: order["id"], fingerprint=lambda order: str(order["sku"]))
    async def ship(order: dict[str, Any]) -> str:
        calls.append(order["id"])
        return "shipped"

    async def main() -> list[str]:
        return [await ship({"id": "o-1", "sku": "A", "note": n}) for n in ("x", "y")]

    assert ["shipped", "shipped"] == asyncio.run(main())
    assert ["o-1"] == calls
    assert inspect.iscoroutinefunction(ship)


def test_decorator_needs_a_key_function(store: MemoryIdempotencyStore) -> None:
    """key= must be callable, and fingerprint= callable or None."""
    guard = ir.Idempotency(store)
    with pytest.raises(ir.ConfigurationError):
        guard(key="job-1")  # type: ignore[arg-type]
    with pytest.raises(ir.ConfigurationError):
        guard(key=lambda: "k", fingerprint="fp")  # type: ignore[arg-type]


def test_open_backend_memory_and_errors() -> None:
    """open_backend() opens memory://, and names the supported schemes for unknown ones."""
    backend = ir.open_backend("memory://")
    store = backend.idempotency_store("orders")
    assert store is backend.idempotency_store("orders")
    guard = ir.Idempotency(store, heartbeat=False)
    assert 1 == guard.run("k", lambda: 1)
    with pytest.raises(ir.ConfigurationError, match="supported: memory://, sqlite://"):
        ir.open_backend("mysql://localhost/db")
    with pytest.raises(ir.ConfigurationError, match="\\*\\*\\*"):
        ir.open_backend("mysql://user:secret@localhost/db")
    with pytest.raises(ir.ConfigurationError):
        ir.open_backend("memory://somewhere")
    with pytest.raises(ir.ConfigurationError):
        ir.open_backend(42)  # type: ignore[arg-type]
    with pytest.raises(ir.ConfigurationError, match="not a URL") as unparsable:
        ir.open_backend("postgresql://u:hunter2@[::1")
    assert "hunter2" not in str(unparsable.value)
    from invresilience.backends._url import _redact

    assert "<unparsable URL>" == _redact("postgresql://u:hunter2@[::1")
    with pytest.raises(ir.ConfigurationError):
        backend.idempotency_store("bad namespace!")
    with backend:
        assert isinstance(backend, MemoryBackend)
        assert backend.breaker_store() is backend.breaker_store()
        assert backend.rate_limit_store() is backend.rate_limit_store()
    assert isinstance(store.claim("k2", "fp", lease=1.0), Acquired)
    assert isinstance(store.claim("k2", "fp", lease=1.0), InProgress)


# -- transactions, heartbeat failures, drivers ---------------------------------------------------


def test_run_in_transaction_commits_effects_and_result_together(tmp_path: Any) -> None:
    """On SQLite, fn's writes and the completion commit together; a failure rolls both back."""
    from invresilience.backends.sqlite import SqliteIdempotencyStore

    with _setup_stock(tmp_path / "bot.db"):
        pass
    store = SqliteIdempotencyStore(tmp_path / "bot.db")
    guard = ir.Idempotency(store)

    def apply(conn: Any, sku: str, delta: int) -> int:
        conn.execute("UPDATE stock SET on_hand = on_hand + ? WHERE sku = ?", (delta, sku))
        if delta < 0:
            raise ValueError("no negative adjustments")
        return int(conn.execute("SELECT on_hand FROM stock WHERE sku = ?", (sku,)).fetchone()[0])

    assert 140 == guard.run_in_transaction("adj-1", apply, "SKU-1", 20)
    assert 140 == guard.run_in_transaction("adj-1", apply, "SKU-1", 20)
    with pytest.raises(ValueError, match="negative"):
        guard.run_in_transaction("adj-2", apply, "SKU-1", -5)
    assert 140 == _on_hand(tmp_path / "bot.db")
    assert isinstance(store.claim("adj-2", ir.fingerprint(("SKU-1", -5)), lease=5.0), Acquired)
    store.close()


def _setup_stock(path: Any) -> Any:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, on_hand INTEGER)")
    conn.execute("INSERT INTO stock VALUES ('SKU-1', 120)")
    conn.commit()
    return contextlib.closing(conn)


def _on_hand(path: Any) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT on_hand FROM stock").fetchone()[0])


class FlakyExtendStore:
    """A store whose extend() fails in a scripted way, then behaves."""

    def __init__(self, store: MemoryIdempotencyStore, failures: list[Exception]) -> None:
        self.store = store
        self.failures = failures
        self.extends = 0
        self.done = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def extend(self, lease: Lease, seconds: float) -> Lease:
        self.extends += 1
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, ir.LeaseLostError):
                self.done.set()  # nothing follows a lost lease
            raise failure
        self.done.set()
        return self.store.extend(lease, seconds)


def test_sync_heartbeat_survives_an_outage_and_stops_when_lost() -> None:
    """A heartbeat retries after BackendError, and stops for good after LeaseLostError."""
    flaky = FlakyExtendStore(MemoryIdempotencyStore(), [ir.BackendUnavailableError("down")])
    guard = ir.Idempotency(flaky, lease=0.03)

    def call() -> str:
        assert flaky.done.wait(10.0)
        return "ok"

    assert "ok" == guard.run("job-1", call)
    assert flaky.extends >= 2

    lost = FlakyExtendStore(MemoryIdempotencyStore(), [ir.LeaseLostError("job-2", 1)])
    guard = ir.Idempotency(lost, lease=0.03)

    def call_lost() -> str:
        assert lost.done.wait(10.0)
        return "ok"

    assert "ok" == guard.run("job-2", call_lost)
    assert 1 == lost.extends


def test_async_heartbeat_survives_an_outage_and_stops_when_lost(clock: ManualClock) -> None:
    """The async heartbeat retries after BackendError and returns after LeaseLostError."""
    store = AsyncMemoryIdempotencyStore(clock=clock)
    failures: list[Exception] = [ir.BackendUnavailableError("down"), ir.LeaseLostError("k", 1)]
    calls = []

    async def extend(lease: Lease, seconds: float) -> Lease:
        calls.append(seconds)
        raise failures.pop(0)

    store.extend = extend  # type: ignore[method-assign]
    guard = ir.Idempotency(store, lease=3.0, clock=clock)

    async def call() -> str:
        for _ in range(20):
            await asyncio.sleep(0)
        return "ok"

    assert "ok" == asyncio.run(guard.arun("k", call))
    assert 2 == len(calls)


def test_arun_releases_an_unencodable_result(clock: ManualClock) -> None:
    """An async result the codec cannot encode raises CodecError and frees the key."""
    store = AsyncMemoryIdempotencyStore(clock=clock)
    guard = ir.Idempotency(store, clock=clock, heartbeat=False)

    async def bad() -> object:
        return {1, 2}

    with pytest.raises(ir.CodecError):
        asyncio.run(guard.arun("k", bad))
    assert isinstance(store.store.claim("k", ir.fingerprint(()), lease=1.0), Acquired)


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """open_backend() on a URL whose driver is missing says which extra to install."""
    import importlib

    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> Any:
        if name.endswith(".redis"):
            raise ImportError("No module named 'redis'", name="redis")
        if name.endswith(".sqlite"):
            raise ImportError("broken", name="something_else")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r'pip install "invresilience\[redis\]"'):
        ir.open_backend("redis://localhost:6379/0")
    with pytest.raises(ImportError, match="broken"):
        ir.open_backend("sqlite:///x.db")
