"""RedisBreakerStore and its async twin, beyond the contract: the Lua script against
BreakerCore, the keys it leaves, validation and driver errors.

The model-based test keeps time out of the comparison instead of adding a clock hook to
the production script: its specs open for 0 s (so the next probe always finds the time up)
or for 1000 s (never up during a test), lease probes for 10^6 s (never run out), and use
time-window buckets 10^9 s wide (the next boundary is in 2033). Every answer then depends
only on the operations, so the reference MemoryBreakerStore runs on a clock stopped at 0,
and only ``retry_after`` differs, by the few milliseconds of real time that passed.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

import pytest
import redis
import redis.asyncio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from redis.backoff import NoBackoff
from redis.retry import Retry

from invresilience._core.breaker import CLOSED, ISOLATED, OPEN, BreakerSpec
from invresilience.backends.memory import MemoryBreakerStore
from invresilience.backends.redis import (
    BREAKER_LUA,
    AsyncRedisBreakerStore,
    RedisBreakerStore,
)
from invresilience.exceptions import BackendError, BackendUnavailableError, ConfigurationError
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from invresilience._core.breaker import SharedBreakerState


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, whose keys are deleted afterwards."""
    prefix = f"invresilience-test:{uuid.uuid4().hex}"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client of the real Redis."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


def make_spec(**changes: Any) -> BreakerSpec:
    values: dict[str, Any] = {
        "window": "count",
        "size": 10,
        "buckets": 1,
        "failure_rate": 0.5,
        "slow_call_rate": 2.0,
        "minimum_calls": 4,
        "open_for": (60.0,),
        "probes": 1,
        "probe_lease": 60.0,
    }
    values.update(changes)
    return BreakerSpec(**values)


# -- the script against the reference ------------------------------------------------------------

MODEL_SPECS = [
    make_spec(
        size=5,
        failure_rate=0.5,
        slow_call_rate=0.6,
        minimum_calls=3,
        open_for=(0.0, 1000.0),
        probes=2,
        probe_lease=1e6,
    ),
    make_spec(size=3, failure_rate=0.34, minimum_calls=1, open_for=(0.0,), probe_lease=1e6),
    make_spec(
        window="time",
        size=3e9,
        buckets=3,
        failure_rate=0.3,
        slow_call_rate=0.7,
        minimum_calls=2,
        open_for=(0.0,),
        probes=3,
        probe_lease=1e6,
    ),
]
OWNERS = st.sampled_from(["a", "b", "c", "d"])
COUNTS = st.integers(0, 7)


class BreakerAgreement(RuleBasedStateMachine):
    """The Redis store and MemoryBreakerStore, fed the same operations, answer the same."""

    def __init__(self, call: Callable[..., Any], prefix: str) -> None:
        super().__init__()
        self.call = call
        self.model = MemoryBreakerStore(clock=ManualClock())
        self.name = f"{prefix}-{uuid.uuid4().hex}"
        self.spec = MODEL_SPECS[0]
        self.generation = 0
        self.granted: list[str] = []

    def compare(self, expected: SharedBreakerState, actual: SharedBreakerState) -> None:
        for field in ("state", "generation", "opens", "calls", "failures", "slow"):
            assert getattr(expected, field) == getattr(actual, field), field
        # Redis's clock moved on a little since the lease or the opening; the model's did not.
        assert expected.retry_after - 60 <= actual.retry_after <= expected.retry_after
        assert (expected.retry_after == 0) == (actual.retry_after == 0)
        self.generation = expected.generation

    @initialize(spec=st.sampled_from(MODEL_SPECS))
    def start(self, spec: BreakerSpec) -> None:
        self.spec = spec

    # Mostly None (keep the spec): a new spec starts afresh, and too many would keep the
    # breaker from getting anywhere.
    @rule(spec=st.sampled_from([*MODEL_SPECS, None, None, None, None, None, None]))
    def switch_spec(self, spec: BreakerSpec | None) -> None:
        if spec is not None:
            self.spec = spec

    @rule(
        delta=st.sampled_from([0, 0, 0, -1, 1]),
        successes=COUNTS,
        failures=COUNTS,
        slow_successes=COUNTS,
        slow_failures=COUNTS,
    )
    def record(
        self, delta: int, successes: int, failures: int, slow_successes: int, slow_failures: int
    ) -> None:
        counts = {
            "successes": successes,
            "failures": failures,
            "slow_successes": slow_successes,
            "slow_failures": slow_failures,
        }
        generation = self.generation + delta
        expected = self.model.record(self.name, self.spec, generation, **counts)
        self.compare(expected, self.call("record", self.name, self.spec, generation, **counts))

    @rule(owner=OWNERS)
    def probe(self, owner: str) -> None:
        expected, expected_granted = self.model.probe(self.name, self.spec, owner)
        actual, granted = self.call("probe", self.name, self.spec, owner)
        self.compare(expected, actual)
        assert expected_granted == granted
        if granted:
            self.granted.append(owner)

    @rule(
        owner=OWNERS,
        delta=st.sampled_from([0, 0, 0, -1]),
        success=st.sampled_from([True, False, None]),
    )
    def settle(self, owner: str, delta: int, success: bool | None) -> None:
        generation = self.generation + delta
        expected = self.model.settle(self.name, self.spec, owner, generation, success)
        actual = self.call("settle", self.name, self.spec, owner, generation, success)
        self.compare(expected, actual)

    @rule(
        index=st.integers(0, 3),
        success=st.sampled_from([True, True, False, None]),
    )
    def settle_a_prober(self, index: int, success: bool | None) -> None:
        """Settle as a probe that was granted, in the current generation."""
        if self.granted:
            self.settle(self.granted[-1 - index % len(self.granted)], 0, success)

    @rule(state=st.sampled_from(["isolated", "closed", "closed"]))
    def force(self, state: Literal["isolated", "closed"]) -> None:
        expected = self.model.force(self.name, self.spec, state)
        self.compare(expected, self.call("force", self.name, self.spec, state))

    @invariant()
    def reads_agree(self) -> None:
        self.compare(self.model.read(self.name, self.spec), self.call("read", self.name, self.spec))


AGREEMENT = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_script_agrees_with_the_core(client: redis.Redis, prefix: str) -> None:
    """Any sequence of operations answers as MemoryBreakerStore (BreakerCore) does."""
    store = RedisBreakerStore(client, prefix=prefix)

    def call(method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(store, method)(*args, **kwargs)

    run_state_machine_as_test(lambda: BreakerAgreement(call, "sync"), settings=AGREEMENT)


def test_async_script_agrees_with_the_core(redis_url: str, prefix: str) -> None:
    """The async store answers as MemoryBreakerStore does, too."""
    loop = asyncio.new_event_loop()
    client = redis.asyncio.Redis.from_url(redis_url)
    store = AsyncRedisBreakerStore(client, prefix=prefix)

    def call(method: str, *args: Any, **kwargs: Any) -> Any:
        return loop.run_until_complete(getattr(store, method)(*args, **kwargs))

    try:
        settings_ = settings(AGREEMENT, max_examples=20)
        run_state_machine_as_test(lambda: BreakerAgreement(call, "async"), settings=settings_)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


# -- what it leaves in Redis ---------------------------------------------------------------------


def test_keys_share_one_hash_tag(client: redis.Redis, prefix: str) -> None:
    """A breaker's keys are <prefix>:{name}, :ring and :buckets: one cluster slot."""
    store = RedisBreakerStore(client, prefix=prefix)
    store.record("erp", make_spec(), 0, successes=1, failures=1)
    store.record("stock", make_spec(window="time", size=60.0, buckets=6), 0, failures=1)
    keys = {key.decode() for key in client.scan_iter(match=f"{prefix}:*")}
    assert {
        f"{prefix}:{{erp}}",
        f"{prefix}:{{erp}}:ring",
        f"{prefix}:{{stock}}",
        f"{prefix}:{{stock}}:buckets",
    } == keys
    assert b"\x01\x03" == client.get(f"{prefix}:{{erp}}:ring")


def test_first_read_remembers_the_spec(client: redis.Redis, prefix: str) -> None:
    """A breaker first seen by a read is stored, so another spec later bumps the generation."""
    store = RedisBreakerStore(client, prefix=prefix)
    assert 0 == store.read("erp", make_spec()).generation
    assert 1 == client.exists(f"{prefix}:{{erp}}")
    assert 1 == store.read("erp", make_spec(failure_rate=0.75)).generation


def test_keys_expire_after_the_longest_duration_plus_idle_ttl(
    client: redis.Redis, prefix: str
) -> None:
    """Every write sets a TTL of max(span, open_for, lease) + idle_ttl on each key."""
    store = RedisBreakerStore(client, prefix=prefix, idle_ttl=100.0)
    spec = make_spec(window="time", size=50.0, buckets=5, open_for=(30.0, 500.0))
    store.record("erp", spec, 0, successes=1)
    for key in (f"{prefix}:{{erp}}", f"{prefix}:{{erp}}:buckets"):
        assert 590_000 < client.pttl(key) <= 600_000


def test_isolated_breaker_does_not_expire(client: redis.Redis, prefix: str) -> None:
    """Isolation holds until a reset, so its key has no TTL; the reset restores one."""
    store = RedisBreakerStore(client, prefix=prefix, idle_ttl=10.0)
    store.force("erp", make_spec(), "isolated")
    assert -1 == client.pttl(f"{prefix}:{{erp}}")
    store.force("erp", make_spec(), "closed")
    assert 0 < client.pttl(f"{prefix}:{{erp}}") <= 70_000


def test_reads_renew_the_ttl(client: redis.Redis, prefix: str) -> None:
    """A breaker that is only read (a healthy one checking in) does not expire."""
    store = RedisBreakerStore(client, prefix=prefix, idle_ttl=10.0)
    store.record("erp", make_spec(), 0, successes=1)
    client.pexpire(f"{prefix}:{{erp}}", 5)
    store.read("erp", make_spec())
    assert client.pttl(f"{prefix}:{{erp}}") > 60_000


def test_state_fields(client: redis.Redis, prefix: str) -> None:
    """The hash holds the state, generation, open time and leases in microseconds."""
    store = RedisBreakerStore(client, prefix=prefix)
    spec = make_spec(open_for=(0.0,), probes=2, probe_lease=7.0)
    store.record("erp", spec, 0, failures=4)
    store.probe("erp", spec, "owner-1")
    fields = client.hgetall(f"{prefix}:{{erp}}")
    seconds, micros = client.time()
    now = seconds * 1_000_000 + micros
    assert b"half_open" == fields[b"state"]
    assert b"2" == fields[b"gen"]
    assert b"owner-1" == fields[b"o1"]
    assert 0 <= now + 7_000_000 - int(fields[b"e1"]) < 5_000_000
    assert b"o2" not in fields
    assert b"count|10|1|0.5|2.0|4|2|7.0|0.0" == fields[b"spec"]


def test_big_windows_and_many_probes(client: redis.Redis, prefix: str) -> None:
    """Windows of 10^4 calls and 300 probe slots (past 1000 HSET arguments) stay within Lua's limits."""
    store = RedisBreakerStore(client, prefix=prefix)
    spec = make_spec(
        size=10_000, minimum_calls=10_000, failure_rate=1.0, probes=300, open_for=(0.0,)
    )
    store.record("erp", spec, 0, successes=6_000)
    # 4000 failures fill the tail, 2000 wrap around over the oldest successes.
    shared = store.record("erp", spec, 0, failures=6_000)
    assert (10_000, 6_000) == (shared.calls, shared.failures)
    # From slot 2000: 4000 successes over successes, 1000 over failures.
    shared = store.record("erp", spec, 0, successes=5_000)
    assert (10_000, 5_000) == (shared.calls, shared.failures)
    shared = store.record("erp", spec, 0, failures=10_000)
    assert (OPEN, 1) == (shared.state, shared.generation)
    granted = [store.probe("erp", spec, f"p{i}")[1] for i in range(301)]
    assert [True] * 300 + [False] == granted


def test_time_window_with_thousands_of_buckets(client: redis.Redis, prefix: str) -> None:
    """Rolling past ~1000 of 4000 buckets at once (chunked HMGET / HDEL) keeps the totals."""
    store = RedisBreakerStore(client, prefix=prefix)
    spec = make_spec(window="time", size=0.4, buckets=4_000, minimum_calls=100)
    store.record("erp", spec, 0, failures=3, slow_successes=2)
    time.sleep(0.1)  # the server's clock: about 1000 buckets of 100 us each
    shared = store.record("erp", spec, 0, successes=1)
    assert (6, 3, 2) == (shared.calls, shared.failures, shared.slow)
    assert 4 == client.hlen(f"{prefix}:{{erp}}:buckets")  # c f s of the first, c of the last
    time.sleep(0.4)
    shared = store.read("erp", spec)
    assert (0, 0, 0) == (shared.calls, shared.failures, shared.slow)
    assert 0 == client.exists(f"{prefix}:{{erp}}:buckets")


def test_decode_responses_client(redis_url: str, prefix: str) -> None:
    """A client that decodes replies to str works the same."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        store = RedisBreakerStore(client, prefix=prefix)
        store.record("erp", make_spec(), 0, failures=4)
        shared, granted = store.probe("erp", make_spec(), "me")
    assert (OPEN, 1, False) == (shared.state, shared.generation, granted)
    assert 59.0 < shared.retry_after <= 60.0


def test_script_is_loaded_again_after_a_flush(client: redis.Redis, prefix: str) -> None:
    """EVALSHA falls back to loading the script when the server forgot it (NOSCRIPT)."""
    store = RedisBreakerStore(client, prefix=prefix)
    store.read("erp", make_spec())
    sha = store._script.sha
    client.script_flush()
    assert [False] == client.script_exists(sha)
    assert CLOSED is store.record("erp", make_spec(), 0, successes=1).state
    assert [True] == client.script_exists(sha)


def test_script_rejects_an_unknown_operation(client: redis.Redis, prefix: str) -> None:
    """The script answers an operation it does not know with an error."""
    script = client.register_script(BREAKER_LUA)
    keys = [f"{prefix}:{{x}}", f"{prefix}:{{x}}:ring", f"{prefix}:{{x}}:buckets"]
    args = ["jump", "fp", "count", "10", "1", "0.5", "2.0", "4", "1", "1", "1000", "1", "1"]
    with pytest.raises(redis.ResponseError, match="unknown breaker operation jump"):
        script(keys=keys, args=args)


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "x" * 201, "tab\there", 42])
def test_bad_prefix_is_rejected(client: redis.Redis, bad: Any) -> None:
    """The prefix must be a non-empty printable str of at most 200 characters."""
    with pytest.raises(ConfigurationError, match=r"RedisBreakerStore\.prefix") as info:
        RedisBreakerStore(client, prefix=bad)
    assert "RedisBreakerStore.prefix" == info.value.field


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, True, "10"])
def test_bad_idle_ttl_is_rejected(client: redis.Redis, bad: Any) -> None:
    """idle_ttl must be a finite positive number of seconds."""
    with pytest.raises(ConfigurationError, match=r"RedisBreakerStore\.idle_ttl"):
        RedisBreakerStore(client, idle_ttl=bad)


@pytest.mark.parametrize("bad", ["", "x" * 201, "line\nbreak", None])
def test_bad_name_is_rejected(client: redis.Redis, prefix: str, bad: Any) -> None:
    """A breaker name must be a non-empty printable str of at most 200 characters."""
    store = RedisBreakerStore(client, prefix=prefix)
    with pytest.raises(ConfigurationError, match=r"RedisBreakerStore\.name"):
        store.read(bad, make_spec())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"window": "sliding"}, "window"),
        ({"size": 0.5}, "size"),
        ({"window": "time", "size": math.inf}, "size"),
        ({"buckets": 0}, "buckets"),
        ({"probes": 0}, "probes"),
        ({"open_for": ()}, "open_for"),
    ],
)
def test_bad_spec_is_rejected(
    client: redis.Redis, prefix: str, changes: dict[str, Any], field: str
) -> None:
    """A spec the script could not run is refused before reaching Redis."""
    store = RedisBreakerStore(client, prefix=prefix)
    with pytest.raises(ConfigurationError, match=rf"BreakerSpec\.{field}"):
        store.read("erp", make_spec(**changes))


def test_bad_arguments_are_rejected(client: redis.Redis, prefix: str) -> None:
    """Counts and generations must be ints; force takes 'isolated' or 'closed'."""
    store = RedisBreakerStore(client, prefix=prefix)
    with pytest.raises(TypeError):
        store.record("erp", make_spec(), 0, failures=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'isolated' or 'closed'"):
        store.force("erp", make_spec(), "open")  # type: ignore[arg-type]


# -- driver errors -------------------------------------------------------------------------------


def _refused() -> dict[str, Any]:
    # Nothing listens on port 1; no retries, so the error comes at once.
    return {"host": "127.0.0.1", "port": 1, "socket_connect_timeout": 1.0}


def test_unreachable_redis_is_backend_unavailable() -> None:
    """Connection refused raises BackendUnavailableError naming the store and operation."""
    client = redis.Redis(**_refused(), retry=Retry(NoBackoff(), 0))
    store = RedisBreakerStore(client)
    with pytest.raises(BackendUnavailableError, match=r"RedisBreakerStore\.record") as info:
        store.record("erp", make_spec(), 0, failures=1)
    assert isinstance(info.value.__cause__, redis.ConnectionError)


def test_unreachable_redis_is_backend_unavailable_async() -> None:
    """The async store raises BackendUnavailableError too, chaining the driver's error."""
    from redis.asyncio.retry import Retry as AsyncRetry

    async def main() -> None:
        client = redis.asyncio.Redis(**_refused(), retry=AsyncRetry(NoBackoff(), 0))
        store = AsyncRedisBreakerStore(client)
        try:
            with pytest.raises(BackendUnavailableError, match=r"AsyncRedisBreakerStore\.probe"):
                await store.probe("erp", make_spec(), "me")
            with pytest.raises(
                BackendUnavailableError, match=r"AsyncRedisBreakerStore\.read"
            ) as info:
                await store.read("erp", make_spec())
            assert isinstance(info.value.__cause__, redis.ConnectionError)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_other_redis_errors_are_backend_errors(client: redis.Redis, prefix: str) -> None:
    """A key of the wrong type raises BackendError (not Unavailable), chaining the cause."""
    client.set(f"{prefix}:{{erp}}", "not a hash")
    store = RedisBreakerStore(client, prefix=prefix)
    with pytest.raises(BackendError, match=r"RedisBreakerStore\.read") as info:
        store.read("erp", make_spec())
    assert not isinstance(info.value, BackendUnavailableError)
    assert isinstance(info.value.__cause__, redis.ResponseError)


def test_other_redis_errors_are_backend_errors_async(redis_url: str, prefix: str) -> None:
    """The async store maps other driver errors to BackendError as well."""

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.set(f"{prefix}:{{erp}}", "not a hash")
            store = AsyncRedisBreakerStore(client, prefix=prefix)
            with pytest.raises(BackendError, match=r"AsyncRedisBreakerStore\.settle") as info:
                await store.settle("erp", make_spec(), "me", 0, None)
            assert not isinstance(info.value, BackendUnavailableError)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_async_store_round_trip(redis_url: str, prefix: str) -> None:
    """The async store trips, isolates and resets through the same script."""

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            store = AsyncRedisBreakerStore(client, prefix=prefix)
            assert "AsyncRedisBreakerStore(prefix=" in repr(store)
            shared = await store.record("erp", make_spec(), 0, failures=4)
            assert (OPEN, 1) == (shared.state, shared.generation)
            assert ISOLATED is (await store.force("erp", make_spec(), "isolated")).state
            assert CLOSED is (await store.force("erp", make_spec(), "closed")).state
            shared = await store.read("erp", make_spec())
            assert (CLOSED, 3, 0) == (shared.state, shared.generation, shared.calls)
        finally:
            await client.aclose()

    asyncio.run(main())
