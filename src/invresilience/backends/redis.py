"""Redis stores through redis-py (extra ``[redis]``): one atomic Lua script per operation.

- :class:`RedisBackend` -- a Redis server (a URL or clients) and the factories of the
  stores below, all under one key prefix.
- :class:`RedisIdempotencyStore` / :class:`AsyncRedisIdempotencyStore` -- idempotency
  records, an :class:`~invresilience.typing.IdempotencyStore` /
  :class:`~invresilience.typing.AsyncIdempotencyStore`.
- :class:`RedisBreakerStore` / :class:`AsyncRedisBreakerStore` -- shared circuit breaker
  state, a :class:`~invresilience.typing.BreakerStore` / :class:`~invresilience.typing.AsyncBreakerStore`.
- :class:`RedisRateLimitStore` / :class:`AsyncRedisRateLimitStore` -- GCRA buckets, a
  :class:`~invresilience.typing.RateLimitStore` / :class:`~invresilience.typing.AsyncRateLimitStore`.

Every operation is one ``EVALSHA`` (after a ``NOSCRIPT`` the script is loaded and the call
made again), so it is atomic and costs one round trip; the idempotency batches
(``claim_many``, ``complete_many``) send all their ``EVALSHA`` in one pipeline, one round
trip for the whole batch. Time is the server's: ``redis.call('TIME')``,
allowed in scripts since Redis 5 replicates their effects rather than the script, and the
default from Redis 7 on. Processes whose clocks disagree therefore still agree on when a
breaker reopens or a bucket refills. ``TIME`` is the server's *wall* clock with microsecond
resolution, so a server clock stepped by NTP moves open durations and leases with it.

The sync and async classes share the Lua text, the argument encoding and the decoding of
replies; they differ only in ``await``.

Errors: :exc:`redis.exceptions.ConnectionError` and :exc:`redis.exceptions.TimeoutError`
become :class:`~invresilience.exceptions.BackendUnavailableError`, any other
:exc:`redis.exceptions.RedisError` a :class:`~invresilience.exceptions.BackendError`; the
driver's exception is chained as ``__cause__``.

Breaker keys
------------

A breaker *name* under *prefix* owns three keys, all with the hash tag ``{name}`` so they
live in one cluster slot (a prefix holding ``{...}`` would set the tag itself, putting
every breaker in one slot)::

    <prefix>:{<name>}           hash: the state (fields below)
    <prefix>:{<name>}:ring      string: the count window, one byte per slot
    <prefix>:{<name>}:buckets   hash: the time window, c<i> / f<i> / s<i> per bucket

The state hash holds ``spec`` (the fingerprint of the :class:`~invresilience.typing.BreakerSpec`
last used; another spec starts the breaker afresh, its generation continuing + 1, as
:class:`~invresilience.backends.memory.MemoryBreakerStore` does), ``state``, ``gen``,
``until`` (end of the open period), ``opens``, ``ps`` (probe successes), the window's
running totals ``calls`` / ``fails`` / ``slow``, ``head`` (the count window's next slot),
``cur`` (the time window's current bucket number) and, per probe slot *i*, ``o<i>`` (its
owner) and ``e<i>`` (when its lease runs out). Times are integer microseconds of the
server's clock: about 1.8e15 today, exact in the 53-bit integers Lua's doubles hold.

The ring's bytes use :class:`~invresilience._core.breaker.BreakerCore`'s codes: bit 0 a
call, bit 1 a failure, bit 2 slow (success 1, failure 3, slow success 5, slow failure 7);
absent bytes are empty slots, so an emptied window is a deleted key.

Probe slots are leases elected inside the script: a slot is free when it has no owner or
its ``e<i>`` is at or before ``TIME``. This is the ``SET NX PX`` election in one hash,
atomic with the state transition it belongs to (a ``PX`` key could not expire in step with
a generation change, and would cost a key per slot).

Every operation, a read included, writes the state back, as
:class:`~invresilience.backends.memory.MemoryBreakerStore` keeps every breaker it has seen:
a breaker first seen by a read remembers its spec. Each write gives the three keys a time
to live of the longest of the window's span, the open durations and the probe lease, plus
*idle_ttl*: an abandoned breaker disappears, one in use (a healthy one still checks in)
never does. Once expired, a breaker starts again from generation 0. An isolated breaker
does not expire: isolation holds until someone resets it.

Rate-limit keys
---------------

A bucket *key* is the string ``<prefix>:<key>`` holding the bucket's theoretical arrival
time as a decimal count of nanoseconds since the epoch. The script never turns it into
one Lua number (1.8e18 is past the 2^53 that a double holds exactly): it splits every
value into seconds and nanoseconds and carries between them, so each answer is exact to
the nanosecond. ``now`` comes from ``TIME``, a multiple of 1000 ns. The key expires
(``PEXPIRE``, rounded up to the millisecond) when the bucket has rested.

Idempotency keys
----------------

A record is one hash, ``<prefix>:<namespace>:<key>`` (*prefix* ``invresilience:idem`` by
default; :class:`RedisBackend` uses ``<its prefix>:idem``), with the fields

- ``fingerprint``: the payload fingerprint the key was claimed with;
- ``state``: ``pending``, ``completed`` or ``released``;
- ``fence``: the last claim's fence, a decimal integer;
- ``token``: the last claim's token;
- ``lease_until`` / ``expires_at``: when the lease runs out and when the record expires,
  in integer microseconds of the server's ``TIME``;
- ``result``: the stored bytes, once completed.

The script applies the rules of :mod:`invresilience._core.idempotency` as they are and
sets the key to expire (``PEXPIREAT``) at ``expires_at``, rounded up to the millisecond,
so Redis itself drops expired records: :meth:`RedisIdempotencyStore.purge_expired` has
nothing to delete and returns 0. A fence continues past a record's expiry only while
Redis still holds the record; once it is gone the next claim starts again from 1.
Durations longer than 10^9 s (about 31 years) are capped at that.

Replies are read as raw bytes (redis-py's ``NEVER_DECODE``), so a client made with
``decode_responses=True`` works too and binary results round-trip either way.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import secrets
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

from typing_extensions import Self, final

from .._core import idempotency as rules
from .._core.breaker import (
    CLOSED,
    HALF_OPEN,
    ISOLATED,
    OPEN,
    BreakerSpec,
    BreakerState,
    SharedBreakerState,
)
from ..exceptions import BackendError, BackendUnavailableError, ConfigurationError
from ..typing import DEFAULT_TTL
from ._common import check_claim_args, check_lease, check_limit, check_namespace, check_ttl, lost

try:
    from redis.client import NEVER_DECODE
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "invresilience.backends.redis needs redis-py: pip install 'invresilience[redis]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    import redis
    import redis.asyncio

    from .._core.idempotency import Claim, Lease

__all__ = [
    "AsyncRedisBreakerStore",
    "AsyncRedisIdempotencyStore",
    "AsyncRedisRateLimitStore",
    "RedisBackend",
    "RedisBreakerStore",
    "RedisIdempotencyStore",
    "RedisRateLimitStore",
]

#: The longest breaker name or key prefix accepted (the in-process breaker's own limit).
MAX_NAME_LENGTH = 200
#: The longest rate-limit bucket key accepted.
MAX_KEY_LENGTH = 1024

# -- the breaker script ------------------------------------------------------------------------

BREAKER_LUA = r"""
-- One BreakerCore operation (see invresilience/_core/breaker.py) on the server's clock.
-- KEYS: [1] state hash, [2] count-window ring, [3] time-window buckets.
-- ARGV: [1] operation, [2] spec fingerprint, [3] 'count' | 'time', [4] window size (calls,
-- or seconds), [5] buckets, [6] failure rate, [7] slow-call rate, [8] minimum calls,
-- [9] probes, [10] probe lease (us), [11] key TTL (ms), [12] n, [13 .. 12 + n] open_for (us),
-- then the operation's own arguments.
-- Reply: {state, generation, retry_after (us), opens, calls, failures, slow, granted}.
local H, RING, BUCKETS = KEYS[1], KEYS[2], KEYS[3]
local op, fp, kind = ARGV[1], ARGV[2], ARGV[3]
local size = tonumber(ARGV[4])
local nbuckets = tonumber(ARGV[5])
local failure_rate = tonumber(ARGV[6])
local slow_rate = tonumber(ARGV[7])
local minimum = tonumber(ARGV[8])
local probes = tonumber(ARGV[9])
local lease = tonumber(ARGV[10])
local ttl = tonumber(ARGV[11])
local nopen = tonumber(ARGV[12])
local A = 12 + nopen
local width = size * 1000000 / nbuckets

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- Lua's tostring keeps 14 digits: integers past that (times in us) are written with %.0f.
local function int(x) return string.format('%.0f', x) end

-- unpack() is bounded by the Lua stack: long argument lists go in chunks.
local function chunked(cmd, key, args)
  local out = {}
  for i = 1, #args, 1000 do
    local part = redis.call(cmd, key, unpack(args, i, math.min(i + 999, #args)))
    if type(part) == 'table' then
      for j = 1, #part do out[#out + 1] = part[j] end
    end
  end
  return out
end

local function blank(gen)
  local s = {state = 'closed', gen = gen, open_until = 0, opens = 0, ps = 0,
             calls = 0, fails = 0, slow = 0, head = 0, cur = false, owner = {}, expiry = {}}
  for i = 1, probes do s.owner[i] = false; s.expiry[i] = 0 end
  return s
end

local s
local raw = redis.call('HGETALL', H)
if #raw == 0 then
  s = blank(0)
else
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  if h.spec ~= fp then
    -- Reconfigured: start afresh, but keep counting generations so that outcomes
    -- reported under the old configuration are dropped.
    redis.call('DEL', H, RING, BUCKETS)
    s = blank((tonumber(h.gen) or 0) + 1)
  else
    s = {state = h.state, gen = tonumber(h.gen), open_until = tonumber(h['until']),
         opens = tonumber(h.opens), ps = tonumber(h.ps), calls = tonumber(h.calls),
         fails = tonumber(h.fails), slow = tonumber(h.slow), head = tonumber(h.head),
         cur = h.cur and tonumber(h.cur) or false, owner = {}, expiry = {}}
    for i = 1, probes do
      local owner = h['o' .. i]
      if owner then
        s.owner[i] = owner
        s.expiry[i] = tonumber(h['e' .. i])
      else
        s.owner[i] = false
        s.expiry[i] = 0
      end
    end
  end
end

-- -- the windows --

local function roll()
  if kind ~= 'time' then return end
  local index = math.floor(now / width)
  local cur = s.cur
  if not cur then s.cur = index; return end
  if index <= cur then return end
  local steps = math.min(index - cur, nbuckets)
  if steps == nbuckets then
    -- Every bucket ends before the window does: nothing is left.
    redis.call('DEL', BUCKETS)
    s.calls, s.fails, s.slow = 0, 0, 0
  else
    local fields = {}
    for step = 1, steps do
      local slot = (cur + step) % nbuckets
      fields[#fields + 1] = 'c' .. slot
      fields[#fields + 1] = 'f' .. slot
      fields[#fields + 1] = 's' .. slot
    end
    local values = chunked('HMGET', BUCKETS, fields)
    for i = 1, #fields, 3 do
      s.calls = s.calls - (tonumber(values[i]) or 0)
      s.fails = s.fails - (tonumber(values[i + 1]) or 0)
      s.slow = s.slow - (tonumber(values[i + 2]) or 0)
    end
    chunked('HDEL', BUCKETS, fields)
  end
  s.cur = index
end

local function failed(code) return code == 3 or code == 7 end
local function is_slow(code) return code >= 5 end

local function occurrences(text, code)
  local _, n = string.gsub(text, string.char(code), '')
  return n
end

-- Take the outcomes in ring[first .. first + n - 1] out of the totals.
local function forget(first, n)
  local old = redis.call('GETRANGE', RING, first, first + n - 1)
  if old == '' then return end
  local n1, n3, n5, n7 = occurrences(old, 1), occurrences(old, 3),
    occurrences(old, 5), occurrences(old, 7)
  s.calls = s.calls - (n1 + n3 + n5 + n7)
  s.fails = s.fails - (n3 + n7)
  s.slow = s.slow - (n5 + n7)
end

local function add(code, count)
  if kind == 'time' then
    local slot = s.cur % nbuckets
    redis.call('HINCRBY', BUCKETS, 'c' .. slot, count)
    if failed(code) then redis.call('HINCRBY', BUCKETS, 'f' .. slot, count) end
    if is_slow(code) then redis.call('HINCRBY', BUCKETS, 's' .. slot, count) end
  elseif count >= size then
    redis.call('SET', RING, string.rep(string.char(code), size))
    s.head = 0
    s.calls = size
    s.fails = failed(code) and size or 0
    s.slow = is_slow(code) and size or 0
    return
  else
    local head = s.head
    local first = math.min(count, size - head)
    forget(head, first)
    redis.call('SETRANGE', RING, head, string.rep(string.char(code), first))
    local rest = count - first
    if rest > 0 then
      forget(0, rest)
      redis.call('SETRANGE', RING, 0, string.rep(string.char(code), rest))
    end
    s.head = (head + count) % size
  end
  s.calls = s.calls + count
  if failed(code) then s.fails = s.fails + count end
  if is_slow(code) then s.slow = s.slow + count end
end

-- -- transitions --

local function clear()
  redis.call('DEL', RING, BUCKETS)
  s.calls, s.fails, s.slow, s.head, s.ps = 0, 0, 0, 0, 0
  for i = 1, probes do s.owner[i] = false; s.expiry[i] = 0 end
end

local function trip()
  s.opens = s.opens + 1
  s.state = 'open'
  s.gen = s.gen + 1
  s.open_until = now + tonumber(ARGV[12 + math.min(s.opens, nopen)])
  clear()
end

-- -- the operation --

local granted = 0
if op == 'record' then
  local generation = tonumber(ARGV[A + 1])
  local successes, slow_successes = tonumber(ARGV[A + 2]), tonumber(ARGV[A + 3])
  local failures, slow_failures = tonumber(ARGV[A + 4]), tonumber(ARGV[A + 5])
  if s.state == 'closed' and generation == s.gen then
    roll()
    local codes = {1, 5, 3, 7}
    local counts = {successes, slow_successes, failures, slow_failures}
    for i = 1, 4 do
      if counts[i] > 0 then add(codes[i], counts[i]) end
    end
    -- Rates, not counts against rate * calls: 7 failures in 100 calls reach a 0.07 rate.
    if failures + slow_successes + slow_failures ~= 0 and s.calls >= minimum
        and (s.fails / s.calls >= failure_rate or s.slow / s.calls >= slow_rate) then
      trip()
    end
  end
elseif op == 'probe' then
  local owner = ARGV[A + 1]
  if s.state == 'open' and now >= s.open_until then
    s.state = 'half_open'
    s.gen = s.gen + 1
    clear()
  end
  if s.state == 'half_open' then
    for i = 1, probes do
      if not s.owner[i] or s.expiry[i] <= now then
        s.owner[i] = owner
        s.expiry[i] = now + lease
        granted = 1
        break
      end
    end
  end
elseif op == 'settle' then
  local owner, generation, success = ARGV[A + 1], tonumber(ARGV[A + 2]), ARGV[A + 3]
  if s.state == 'half_open' and generation == s.gen then
    local index = false
    for i = 1, probes do
      if s.owner[i] == owner then index = i; break end
    end
    -- A lease that ran out frees its slot, but its outcome does not count: the slot may
    -- already have been handed to someone else.
    if index then
      local expiry = s.expiry[index]
      s.owner[index] = false
      s.expiry[index] = 0
      if expiry > now then
        if success == '0' then
          trip()
        elseif success == '1' then
          s.ps = s.ps + 1
          if s.ps >= probes then
            s.state = 'closed'
            s.gen = s.gen + 1
            s.opens = 0
            clear()
          end
        end
      end
    end
  end
elseif op == 'force' then
  s.gen = s.gen + 1
  clear()
  if ARGV[A + 1] == 'isolated' then
    s.state = 'isolated'
  else
    s.state = 'closed'
    s.opens = 0
  end
  s.open_until = now
elseif op ~= 'read' then
  return redis.error_reply('invresilience: unknown breaker operation ' .. tostring(op))
end

roll()

-- -- save: every operation, a read too, so the keys' TTL runs from the last use and a
-- breaker first seen by a read remembers its spec (as MemoryBreakerStore does) --

do
  local fields = {'spec', fp, 'state', s.state, 'gen', int(s.gen), 'until', int(s.open_until),
                  'opens', int(s.opens), 'ps', int(s.ps), 'calls', int(s.calls),
                  'fails', int(s.fails), 'slow', int(s.slow), 'head', int(s.head)}
  if s.cur then
    fields[#fields + 1] = 'cur'
    fields[#fields + 1] = int(s.cur)
  end
  local free = {}
  for i = 1, probes do
    if s.owner[i] then
      fields[#fields + 1] = 'o' .. i
      fields[#fields + 1] = s.owner[i]
      fields[#fields + 1] = 'e' .. i
      fields[#fields + 1] = int(s.expiry[i])
    else
      free[#free + 1] = 'o' .. i
      free[#free + 1] = 'e' .. i
    end
  end
  chunked('HSET', H, fields)
  chunked('HDEL', H, free)
  for _, key in ipairs({H, RING, BUCKETS}) do
    if s.state == 'isolated' then
      redis.call('PERSIST', key)
    else
      redis.call('PEXPIRE', key, ttl)
    end
  end
end

-- -- reply --

local retry_after = 0
if s.state == 'open' then
  retry_after = math.max(0, s.open_until - now)
elseif s.state == 'half_open' then
  local soonest = false
  for i = 1, probes do
    if not s.owner[i] then soonest = false; break end
    if not soonest or s.expiry[i] < soonest then soonest = s.expiry[i] end
  end
  if soonest then retry_after = math.max(0, soonest - now) end
end
local codes = {closed = 0, open = 1, half_open = 2, isolated = 3}
return {codes[s.state], s.gen, retry_after, s.opens, s.calls, s.fails, s.slow, granted}
"""

_STATES: tuple[BreakerState, ...] = (CLOSED, OPEN, HALF_OPEN, ISOLATED)


def _check_name(field: str, value: object) -> str:
    if type(value) is not str or not value or len(value) > MAX_NAME_LENGTH:
        raise ConfigurationError(
            field, value, f"must be a non-empty str of at most {MAX_NAME_LENGTH} characters"
        )
    if not value.isprintable():
        raise ConfigurationError(field, value, "must be printable")
    return value


def _check_idle_ttl(field: str, value: object) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(field, value, "must be a finite number of seconds > 0")
    return float(value)


def _microseconds(seconds: float) -> int:
    return round(seconds * 1_000_000)


@functools.lru_cache(maxsize=256)
def _spec_args(spec: BreakerSpec, idle_ttl: float) -> tuple[str, ...]:
    """ARGV[2 ..] for *spec*: its fingerprint, its values as the script reads them, the TTL."""
    if spec.window not in ("count", "time"):
        raise ConfigurationError("BreakerSpec.window", spec.window, "must be 'count' or 'time'")
    if spec.window == "count" and int(spec.size) < 1:
        raise ConfigurationError("BreakerSpec.size", spec.size, "must be >= 1 call")
    if not (spec.size > 0 and math.isfinite(spec.size)):
        raise ConfigurationError("BreakerSpec.size", spec.size, "must be finite and > 0")
    if spec.buckets < 1:
        raise ConfigurationError("BreakerSpec.buckets", spec.buckets, "must be >= 1")
    if spec.probes < 1:
        raise ConfigurationError("BreakerSpec.probes", spec.probes, "must be >= 1")
    if not spec.open_for:
        raise ConfigurationError("BreakerSpec.open_for", spec.open_for, "must not be empty")
    size = str(int(spec.size)) if spec.window == "count" else repr(float(spec.size))
    values = (
        spec.window,
        size,
        str(spec.buckets),
        repr(float(spec.failure_rate)),
        repr(float(spec.slow_call_rate)),
        str(spec.minimum_calls),
        str(spec.probes),
        str(_microseconds(spec.probe_lease)),
    )
    open_for = tuple(str(_microseconds(seconds)) for seconds in spec.open_for)
    # The fingerprint is the spec's exact values: float reprs round-trip, so two specs
    # compare equal exactly when their fingerprints do.
    fingerprint = "|".join(
        (
            *values[:7],
            repr(float(spec.probe_lease)),
            *(repr(float(seconds)) for seconds in spec.open_for),
        )
    )
    span = float(spec.size) if spec.window == "time" else 0.0
    longest = max(span, max(spec.open_for), spec.probe_lease)
    ttl_ms = math.ceil((longest + idle_ttl) * 1000)
    return (fingerprint, *values, str(ttl_ms), str(len(open_for)), *open_for)


def _breaker_keys(prefix: str, field: str, name: str) -> list[str]:
    _check_name(field, name)
    base = f"{prefix}:{{{name}}}"
    return [base, base + ":ring", base + ":buckets"]


def _decode_breaker(reply: Sequence[Any]) -> tuple[SharedBreakerState, bool]:
    """The script's reply as the Protocol's types."""
    code, generation, retry_after_us, opens, calls, failures, slow, granted = reply
    state = SharedBreakerState(
        state=_STATES[int(code)],
        generation=int(generation),
        retry_after=int(retry_after_us) / 1_000_000,
        opens=int(opens),
        calls=int(calls),
        failures=int(failures),
        slow=int(slow),
    )
    return state, bool(granted)


def _record_args(
    generation: int, successes: int, slow_successes: int, failures: int, slow_failures: int
) -> tuple[str, ...]:
    # The order the core adds them in: it decides what a count window forgets first.
    return tuple(
        str(operator.index(value))
        for value in (generation, successes, slow_successes, failures, slow_failures)
    )


def _settle_args(owner: str, generation: int, success: bool | None) -> tuple[str, ...]:
    verdict = "" if success is None else "1" if success else "0"
    return (str(owner), str(operator.index(generation)), verdict)


def _force_arg(state: str) -> str:
    if state not in ("isolated", "closed"):
        raise ValueError(f"state must be 'isolated' or 'closed', got {state!r}")
    return state


def _backend_error(store: str, operation: str, exc: RedisError) -> BackendError:
    """The invresilience error for a driver error (the caller chains *exc*)."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return BackendUnavailableError(f"{store}.{operation}: Redis is unreachable: {exc}")
    return BackendError(f"{store}.{operation}: Redis failed: {exc}")


@final
class RedisBreakerStore:
    """A :class:`~invresilience.typing.BreakerStore` in Redis, shared by every process using it.

    Each operation is one atomic Lua script on the server's clock; the module
    documentation describes the keys.

    Args:
        client: A ``redis.Redis`` (or cluster) client; ``decode_responses`` may be either.
        prefix: Prepended to every key (non-empty, printable, at most 200 characters).
        idle_ttl: Seconds a breaker's keys outlive its longest window span, open duration
            or probe lease once nobody uses it (every operation renews them).

    Raises:
        ConfigurationError: *prefix* or *idle_ttl* is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_script", "client", "idle_ttl", "prefix")

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        *,
        prefix: str = "invresilience:breaker",
        idle_ttl: float = 86400.0,
    ) -> None:
        self.client = client
        self.prefix = _check_name("RedisBreakerStore.prefix", prefix)
        self.idle_ttl = _check_idle_ttl("RedisBreakerStore.idle_ttl", idle_ttl)
        self._script = client.register_script(BREAKER_LUA)

    def __repr__(self) -> str:
        return f"RedisBreakerStore(prefix={self.prefix!r})"

    def _run(
        self, operation: str, name: str, spec: BreakerSpec, args: Sequence[str]
    ) -> tuple[SharedBreakerState, bool]:
        keys = _breaker_keys(self.prefix, "RedisBreakerStore.name", name)
        argv = (operation, *_spec_args(spec, self.idle_ttl), *args)
        try:
            reply = self._script(keys=keys, args=argv)
        except RedisError as exc:
            raise _backend_error("RedisBreakerStore", operation, exc) from exc
        return _decode_breaker(reply)

    def record(
        self,
        name: str,
        spec: BreakerSpec,
        generation: int,
        *,
        successes: int = 0,
        failures: int = 0,
        slow_successes: int = 0,
        slow_failures: int = 0,
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.record`.

        Raises:
            BackendUnavailableError: Redis could not be reached.
            BackendError: Redis failed otherwise.
        """
        args = _record_args(generation, successes, slow_successes, failures, slow_failures)
        return self._run("record", name, spec, args)[0]

    def probe(self, name: str, spec: BreakerSpec, owner: str) -> tuple[SharedBreakerState, bool]:
        """See :meth:`~invresilience.typing.BreakerStore.probe`."""
        return self._run("probe", name, spec, (str(owner),))

    def settle(
        self, name: str, spec: BreakerSpec, owner: str, generation: int, success: bool | None
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.settle`."""
        return self._run("settle", name, spec, _settle_args(owner, generation, success))[0]

    def force(
        self, name: str, spec: BreakerSpec, state: Literal["isolated", "closed"]
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.force`."""
        return self._run("force", name, spec, (_force_arg(state),))[0]

    def read(self, name: str, spec: BreakerSpec) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.read`."""
        return self._run("read", name, spec, ())[0]


@final
class AsyncRedisBreakerStore:
    """The async twin of :class:`RedisBreakerStore`: same keys, same script.

    Args:
        client: A ``redis.asyncio.Redis`` (or cluster) client.
        prefix: Prepended to every key (non-empty, printable, at most 200 characters).
        idle_ttl: Seconds a breaker's keys outlive its longest window span, open duration
            or probe lease once nobody uses it.

    Raises:
        ConfigurationError: *prefix* or *idle_ttl* is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_script", "client", "idle_ttl", "prefix")

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster,
        *,
        prefix: str = "invresilience:breaker",
        idle_ttl: float = 86400.0,
    ) -> None:
        self.client = client
        self.prefix = _check_name("AsyncRedisBreakerStore.prefix", prefix)
        self.idle_ttl = _check_idle_ttl("AsyncRedisBreakerStore.idle_ttl", idle_ttl)
        self._script = client.register_script(BREAKER_LUA)

    def __repr__(self) -> str:
        return f"AsyncRedisBreakerStore(prefix={self.prefix!r})"

    async def _run(
        self, operation: str, name: str, spec: BreakerSpec, args: Sequence[str]
    ) -> tuple[SharedBreakerState, bool]:
        keys = _breaker_keys(self.prefix, "AsyncRedisBreakerStore.name", name)
        argv = (operation, *_spec_args(spec, self.idle_ttl), *args)
        try:
            reply = await self._script(keys=keys, args=argv)
        except RedisError as exc:
            raise _backend_error("AsyncRedisBreakerStore", operation, exc) from exc
        return _decode_breaker(reply)

    async def record(
        self,
        name: str,
        spec: BreakerSpec,
        generation: int,
        *,
        successes: int = 0,
        failures: int = 0,
        slow_successes: int = 0,
        slow_failures: int = 0,
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.record`.

        Raises:
            BackendUnavailableError: Redis could not be reached.
            BackendError: Redis failed otherwise.
        """
        args = _record_args(generation, successes, slow_successes, failures, slow_failures)
        return (await self._run("record", name, spec, args))[0]

    async def probe(
        self, name: str, spec: BreakerSpec, owner: str
    ) -> tuple[SharedBreakerState, bool]:
        """See :meth:`~invresilience.typing.BreakerStore.probe`."""
        return await self._run("probe", name, spec, (str(owner),))

    async def settle(
        self, name: str, spec: BreakerSpec, owner: str, generation: int, success: bool | None
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.settle`."""
        return (await self._run("settle", name, spec, _settle_args(owner, generation, success)))[0]

    async def force(
        self, name: str, spec: BreakerSpec, state: Literal["isolated", "closed"]
    ) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.force`."""
        return (await self._run("force", name, spec, (_force_arg(state),)))[0]

    async def read(self, name: str, spec: BreakerSpec) -> SharedBreakerState:
        """See :meth:`~invresilience.typing.BreakerStore.read`."""
        return (await self._run("read", name, spec, ()))[0]


# -- the rate-limit script ---------------------------------------------------------------------

RATE_LIMIT_LUA = r"""
-- GCRA (see RateLimitStore) on the server's clock, exact to the nanosecond.
-- KEYS: [1] the bucket. ARGV: [1] weight * interval_ns, [2] capacity_ns, as decimals.
-- Reply: 0 when admitted, else the nanoseconds to wait, as a decimal string.
-- A nanosecond count since the epoch (1.8e18) is past what a Lua double holds exactly
-- (2^53), so every value is a pair (seconds, nanoseconds) with 0 <= nanoseconds < 1e9.
local B = 1000000000

local function parse(text)
  local n = #text
  if n <= 9 then return 0, tonumber(text) end
  return tonumber(string.sub(text, 1, n - 9)), tonumber(string.sub(text, n - 8))
end

local function norm(s, ns)
  local carry = math.floor(ns / B)
  return s + carry, ns - carry * B
end

local function positive(s, ns) return s > 0 or (s == 0 and ns > 0) end

local function decimal(s, ns)
  if s == 0 then return string.format('%d', ns) end
  return string.format('%.0f%09d', s, ns)
end

local t = redis.call('TIME')
local now_s, now_ns = tonumber(t[1]), tonumber(t[2]) * 1000
local cost_s, cost_ns = parse(ARGV[1])
local cap_s, cap_ns = parse(ARGV[2])

-- How far the bucket's start, max(tat, now), is ahead of now.
local ahead_s, ahead_ns = 0, 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local tat_s, tat_ns = parse(stored)
  local d_s, d_ns = norm(tat_s - now_s, tat_ns - now_ns)
  if positive(d_s, d_ns) then ahead_s, ahead_ns = d_s, d_ns end
end
local new_s, new_ns = norm(ahead_s + cost_s, ahead_ns + cost_ns)
local wait_s, wait_ns = norm(new_s - cap_s, new_ns - cap_ns)
if positive(wait_s, wait_ns) then
  return decimal(wait_s, wait_ns)
end
local tat_s, tat_ns = norm(now_s + new_s, now_ns + new_ns)
-- The bucket is rested, and may be forgotten, once now reaches its new tat.
local ms = math.max(1, new_s * 1000 + math.ceil(new_ns / 1000000))
redis.call('SET', KEYS[1], decimal(tat_s, tat_ns), 'PX', string.format('%.0f', ms))
return 0
"""

# Keeps every value's seconds part far inside the 2^53 that a Lua double holds exactly.
_MAX_NS = 10**24


def _gcra_args(
    store: str, key: str, interval_ns: int, capacity_ns: int, weight: int
) -> tuple[list[str], tuple[str, str]]:
    if type(key) is not str or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"{store} keys must be str of at most {MAX_KEY_LENGTH} characters")
    interval_ns = operator.index(interval_ns)
    capacity_ns = operator.index(capacity_ns)
    weight = operator.index(weight)
    # The same rule as MemoryRateLimitStore: anything else is a caller's bug.
    if interval_ns < 1 or capacity_ns < interval_ns or weight < 1:
        raise ValueError(
            "need interval_ns >= 1, capacity_ns >= interval_ns and weight >= 1, got "
            f"{interval_ns}, {capacity_ns} and {weight}"
        )
    cost = weight * interval_ns
    if cost + capacity_ns >= _MAX_NS:
        raise ValueError(
            f"{store}: weight * interval_ns + capacity_ns must be below 10**24 ns, got "
            f"{cost + capacity_ns}"
        )
    return [key], (str(cost), str(capacity_ns))


@final
class RedisRateLimitStore:
    """A :class:`~invresilience.typing.RateLimitStore` in Redis: one atomic script per acquire.

    The bucket for *key* is the string ``<prefix>:<key>``; the module documentation
    describes the arithmetic.

    Args:
        client: A ``redis.Redis`` (or cluster) client; ``decode_responses`` may be either.
        prefix: Prepended to every key (non-empty, printable, at most 200 characters).

    Raises:
        ConfigurationError: *prefix* is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_script", "client", "prefix")

    def __init__(
        self, client: redis.Redis | redis.RedisCluster, *, prefix: str = "invresilience:ratelimit"
    ) -> None:
        self.client = client
        self.prefix = _check_name("RedisRateLimitStore.prefix", prefix)
        self._script = client.register_script(RATE_LIMIT_LUA)

    def __repr__(self) -> str:
        return f"RedisRateLimitStore(prefix={self.prefix!r})"

    def acquire(self, key: str, *, interval_ns: int, capacity_ns: int, weight: int) -> int:
        """See :meth:`~invresilience.typing.RateLimitStore.acquire`.

        Raises:
            ValueError: When ``interval_ns < 1``, ``capacity_ns < interval_ns``,
                ``weight < 1``, or *key* is not a str of at most 1024 characters.
            BackendUnavailableError: Redis could not be reached.
            BackendError: Redis failed otherwise.
        """
        keys, args = _gcra_args("RedisRateLimitStore", key, interval_ns, capacity_ns, weight)
        try:
            reply = self._script(keys=[f"{self.prefix}:{keys[0]}"], args=args)
        except RedisError as exc:
            raise _backend_error("RedisRateLimitStore", "acquire", exc) from exc
        return int(reply)


@final
class AsyncRedisRateLimitStore:
    """The async twin of :class:`RedisRateLimitStore`: same keys, same script.

    Args:
        client: A ``redis.asyncio.Redis`` (or cluster) client.
        prefix: Prepended to every key (non-empty, printable, at most 200 characters).

    Raises:
        ConfigurationError: *prefix* is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_script", "client", "prefix")

    def __init__(
        self,
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster,
        *,
        prefix: str = "invresilience:ratelimit",
    ) -> None:
        self.client = client
        self.prefix = _check_name("AsyncRedisRateLimitStore.prefix", prefix)
        self._script = client.register_script(RATE_LIMIT_LUA)

    def __repr__(self) -> str:
        return f"AsyncRedisRateLimitStore(prefix={self.prefix!r})"

    async def acquire(self, key: str, *, interval_ns: int, capacity_ns: int, weight: int) -> int:
        """See :meth:`RedisRateLimitStore.acquire`."""
        keys, args = _gcra_args("AsyncRedisRateLimitStore", key, interval_ns, capacity_ns, weight)
        try:
            reply = await self._script(keys=[f"{self.prefix}:{keys[0]}"], args=args)
        except RedisError as exc:
            raise _backend_error("AsyncRedisRateLimitStore", "acquire", exc) from exc
        return int(reply)


# -- the idempotency script --------------------------------------------------------------------

IDEMPOTENCY_LUA = r"""
-- One rule of invresilience/_core/idempotency.py on the server's clock.
-- KEYS[1]: the record's hash. ARGV[1]: the operation. Times are integer microseconds.
--   claim     ARGV [2] fingerprint, [3] the new claim's token, [4] lease, [5] ttl.
--             Reply: {0, fence} acquired | {1, fence, 0, fingerprint, result} completed
--             | {2, fence, retry_after} in progress | {3, fence, 0, fingerprint} mismatch.
--   complete  ARGV [2] fence, [3] token, [4] ttl, [5] result.  Reply: 1, or 0 when lost.
--   release   ARGV [2] fence, [3] token.                       Reply: 1, or 0 when lost.
--   extend    ARGV [2] fence, [3] token, [4] seconds.          Reply: 1, or 0 when lost.
local K, op = KEYS[1], ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

-- Lua's tostring keeps 14 digits: integers past that (times in us) are written with %.0f.
local function int(x) return string.format('%.0f', x) end

-- Redis drops the record by itself once it expires (rounded up to the millisecond).
local function expire_at(us) redis.call('PEXPIREAT', K, int(math.ceil(us / 1000))) end

local r = redis.call('HMGET', K, 'fingerprint', 'state', 'fence', 'token', 'lease_until',
                      'expires_at')
local fp, state, fence, token = r[1], r[2], r[3], r[4]
local live = fp and tonumber(r[6]) > now

if op == 'claim' then
  -- An expired record Redis still holds continues its fence.
  local n = fp and tonumber(fence) or 0
  if live then
    if fp ~= ARGV[2] then return {3, n, 0, fp} end
    if state == 'completed' then return {1, n, 0, fp, redis.call('HGET', K, 'result')} end
    local lease_until = tonumber(r[5])
    if state == 'pending' and lease_until > now then return {2, n, lease_until - now} end
  end
  n = n + 1
  local lease, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
  local expires = now + math.max(ttl, lease)
  redis.call('HDEL', K, 'result')
  redis.call('HSET', K, 'fingerprint', ARGV[2], 'state', 'pending', 'fence', int(n),
             'token', ARGV[3], 'lease_until', int(now + lease), 'expires_at', int(expires))
  expire_at(expires)
  return {0, n}
end

-- The lease holds while the record is live and pending with the lease's fence and token,
-- even once its time ran out: nobody claimed the key since.
if not (live and state == 'pending' and fence == ARGV[2] and token == ARGV[3]) then
  return 0
end
if op == 'complete' then
  local expires = now + tonumber(ARGV[4])
  redis.call('HSET', K, 'state', 'completed', 'result', ARGV[5], 'lease_until', '0',
             'expires_at', int(expires))
  expire_at(expires)
elseif op == 'release' then
  redis.call('HSET', K, 'state', 'released', 'lease_until', '0')
elseif op == 'extend' then
  local lease_until = now + tonumber(ARGV[4])
  redis.call('HSET', K, 'lease_until', int(lease_until))
  if lease_until > tonumber(r[6]) then
    redis.call('HSET', K, 'expires_at', int(lease_until))
    expire_at(lease_until)
  end
else
  return redis.error_reply('invresilience: unknown idempotency operation ' .. tostring(op))
end
return 1
"""

#: The SHA1 that ``EVALSHA`` names :data:`IDEMPOTENCY_LUA` by.
IDEMPOTENCY_SHA: Final = hashlib.sha1(IDEMPOTENCY_LUA.encode()).hexdigest()

# Read the reply as bytes whatever the client's decode_responses: results are binary.
_RAW: Final[dict[str, Any]] = {NEVER_DECODE: True}
# 10**9 s: with the server's TIME (1.8e15 us) every sum stays an exact Lua double (< 2**53).
_MAX_US: Final = 10**15

_ACQUIRED, _COMPLETED, _IN_PROGRESS, _MISMATCH = 0, 1, 2, 3

_Command = tuple[Any, ...]


def _us(seconds: float) -> str:
    """A validated duration as the script's whole microseconds (rounded up, capped)."""
    return str(min(math.ceil(seconds * 1_000_000), _MAX_US))


def _record_key(base: str, key: str) -> str:
    return base + key


def _claim_command(base: str, key: str, fingerprint: str, lease: float, ttl: float) -> _Command:
    """The ``EVALSHA`` of one claim; its last argument is the new claim's token."""
    check_claim_args(key, fingerprint, lease, ttl)
    token = secrets.token_hex(16)
    return (
        "EVALSHA",
        IDEMPOTENCY_SHA,
        1,
        _record_key(base, key),
        "claim",
        fingerprint,
        token,
        _us(lease),
        _us(ttl),
    )


def _decode_claim(command: _Command, reply: Sequence[Any], key: str, lease: float) -> Claim:
    """The script's answer to *command* (from :func:`_claim_command`) as a :data:`Claim`."""
    fingerprint, token = command[5], command[6]
    code, fence = int(reply[0]), int(reply[1])
    if code == _ACQUIRED:
        return rules.Acquired(rules.Lease(key, fence, token, fingerprint, lease))
    if code == _COMPLETED:
        return rules.Completed(key, fingerprint, bytes(reply[4]))
    if code == _IN_PROGRESS:
        return rules.InProgress(key, fence, int(reply[2]) / 1_000_000)
    return rules.Mismatch(key, bytes(reply[3]).decode())


def _lease_command(base: str, operation: str, lease: Lease, *args: Any) -> _Command:
    """The ``EVALSHA`` of *operation* on a lease: complete, release or extend."""
    return (
        "EVALSHA",
        IDEMPOTENCY_SHA,
        1,
        _record_key(base, lease.key),
        operation,
        str(lease.fence),
        lease.token,
        *args,
    )


def _complete_command(base: str, lease: Lease, result: bytes, ttl: float) -> _Command:
    check_lease(lease)
    return _lease_command(base, "complete", lease, _us(ttl), bytes(result))


def _extended(lease: Lease, seconds: float) -> Lease:
    return rules.Lease(lease.key, lease.fence, lease.token, lease.fingerprint, seconds)


def _noscript(replies: Sequence[Any]) -> list[int]:
    """The positions of the pipeline replies that found no script (those did not run)."""
    return [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]


def _checked(store: str, operation: str, replies: list[Any]) -> list[Any]:
    """*replies*, or the first error among them as a :exc:`BackendError`."""
    for reply in replies:
        if isinstance(reply, RedisError):
            raise _backend_error(store, operation, reply) from reply
    return replies


def _base(store: str, prefix: str, namespace: str) -> str:
    prefix = _check_name(f"{store}.prefix", prefix)
    namespace = check_namespace(f"{store}.namespace", namespace)
    return f"{prefix}:{namespace}:"


@final
class RedisIdempotencyStore:
    """An :class:`~invresilience.typing.IdempotencyStore` in Redis, shared by every process.

    Each operation is one atomic Lua script on the server's clock (one round trip), and
    each batch one pipeline of them (one round trip); the module documentation
    describes the keys. Records expire in Redis by themselves, so
    :meth:`purge_expired` always returns 0.

    The store does not own *client*: :meth:`close` leaves it open, for whoever made it
    (you, or a :class:`RedisBackend`) to close. The client's own retry policy applies:
    a claim retried after a dropped connection whose first attempt had run answers
    :class:`~invresilience.typing.InProgress`, and that first lease simply runs out.

    Args:
        client: A ``redis.Redis`` client; ``decode_responses`` may be either.
        prefix: Prepended to every key (non-empty, printable, at most 200 characters).
        namespace: Separates the records of different uses of one Redis (1 to 100
            letters, digits or ``_.:-``).

    Raises:
        ConfigurationError: *prefix* or *namespace* is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_base", "client", "namespace", "prefix")

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "invresilience:idem",
        namespace: str = "default",
    ) -> None:
        self.client = client
        self._base = _base("RedisIdempotencyStore", prefix, namespace)
        self.prefix = prefix
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"RedisIdempotencyStore(prefix={self.prefix!r}, namespace={self.namespace!r})"

    def _eval(self, operation: str, command: _Command) -> Any:
        execute: Callable[..., Any] = self.client.execute_command
        try:
            try:
                return execute(*command, **_RAW)
            except NoScriptError:
                self.client.script_load(IDEMPOTENCY_LUA)
                return execute(*command, **_RAW)
        except RedisError as exc:
            raise _backend_error("RedisIdempotencyStore", operation, exc) from exc

    def _pipeline(self, commands: Sequence[_Command]) -> list[Any]:
        with self.client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.pipeline_execute_command(*command, **_RAW)
            return pipe.execute(raise_on_error=False)

    def _eval_many(self, operation: str, commands: Sequence[_Command]) -> list[Any]:
        if not commands:
            return []
        try:
            replies = self._pipeline(commands)
            missing = _noscript(replies)
            if missing:
                self.client.script_load(IDEMPOTENCY_LUA)
                again = self._pipeline([commands[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except RedisError as exc:
            raise _backend_error("RedisIdempotencyStore", operation, exc) from exc
        return _checked("RedisIdempotencyStore", operation, replies)

    def claim(self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL) -> Claim:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim`.

        Raises:
            ConfigurationError: An argument is invalid.
            BackendUnavailableError: Redis could not be reached.
            BackendError: Redis failed otherwise.
        """
        command = _claim_command(self._base, key, fingerprint, lease, ttl)
        return _decode_claim(command, self._eval("claim", command), key, lease)

    def claim_many(
        self, items: Sequence[tuple[str, str]], *, lease: float, ttl: float = DEFAULT_TTL
    ) -> list[Claim]:
        """See :meth:`~invresilience.typing.IdempotencyStore.claim_many`; one round trip.

        A driver error raises for the whole batch, although some claims may have been
        made: their leases run out.
        """
        commands = [_claim_command(self._base, k, fp, lease, ttl) for k, fp in items]
        replies = self._eval_many("claim_many", commands)
        return [
            _decode_claim(command, reply, key, lease)
            for command, reply, (key, _) in zip(commands, replies, items, strict=True)
        ]

    def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete`.

        Raises:
            LeaseLostError: The lease no longer holds its key; nothing changed.
        """
        check_ttl(ttl)
        if not self._eval("complete", _complete_command(self._base, lease, result, ttl)):
            raise lost(lease)

    def complete_many(
        self, items: Sequence[tuple[Lease, bytes]], *, ttl: float = DEFAULT_TTL
    ) -> list[bool]:
        """See :meth:`~invresilience.typing.IdempotencyStore.complete_many`; one round trip."""
        check_ttl(ttl)
        commands = [_complete_command(self._base, lease, result, ttl) for lease, result in items]
        return [bool(reply) for reply in self._eval_many("complete_many", commands)]

    def release(self, lease: Lease) -> None:
        """See :meth:`~invresilience.typing.IdempotencyStore.release`."""
        check_lease(lease)
        if not self._eval("release", _lease_command(self._base, "release", lease)):
            raise lost(lease)

    def extend(self, lease: Lease, seconds: float) -> Lease:
        """See :meth:`~invresilience.typing.IdempotencyStore.extend`."""
        check_lease(lease)
        check_ttl(seconds, field="seconds")
        if not self._eval("extend", _lease_command(self._base, "extend", lease, _us(seconds))):
            raise lost(lease)
        return _extended(lease, seconds)

    def purge_expired(self, limit: int = 1000) -> int:
        """Return 0: Redis deletes expired records by itself (``PEXPIREAT``)."""
        check_limit(limit)
        return 0

    def close(self) -> None:
        """Do nothing: the client belongs to whoever made it, who closes it."""


@final
class AsyncRedisIdempotencyStore:
    """The async twin of :class:`RedisIdempotencyStore`: same keys, same script.

    Args:
        client: A ``redis.asyncio.Redis`` client; ``decode_responses`` may be either.
        prefix: Prepended to every key (non-empty, printable, at most 200 characters).
        namespace: Separates the records of different uses of one Redis.

    Raises:
        ConfigurationError: *prefix* or *namespace* is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_base", "client", "namespace", "prefix")

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = "invresilience:idem",
        namespace: str = "default",
    ) -> None:
        self.client = client
        self._base = _base("AsyncRedisIdempotencyStore", prefix, namespace)
        self.prefix = prefix
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"AsyncRedisIdempotencyStore(prefix={self.prefix!r}, namespace={self.namespace!r})"

    async def _eval(self, operation: str, command: _Command) -> Any:
        execute: Callable[..., Awaitable[Any]] = self.client.execute_command
        try:
            try:
                return await execute(*command, **_RAW)
            except NoScriptError:
                await self.client.script_load(IDEMPOTENCY_LUA)
                return await execute(*command, **_RAW)
        except RedisError as exc:
            raise _backend_error("AsyncRedisIdempotencyStore", operation, exc) from exc

    async def _pipeline(self, commands: Sequence[_Command]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command, **_RAW)
            return await pipe.execute(raise_on_error=False)

    async def _eval_many(self, operation: str, commands: Sequence[_Command]) -> list[Any]:
        if not commands:
            return []
        try:
            replies = await self._pipeline(commands)
            missing = _noscript(replies)
            if missing:
                await self.client.script_load(IDEMPOTENCY_LUA)
                again = await self._pipeline([commands[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except RedisError as exc:
            raise _backend_error("AsyncRedisIdempotencyStore", operation, exc) from exc
        return _checked("AsyncRedisIdempotencyStore", operation, replies)

    async def claim(
        self, key: str, fingerprint: str, *, lease: float, ttl: float = DEFAULT_TTL
    ) -> Claim:
        """See :meth:`RedisIdempotencyStore.claim`."""
        command = _claim_command(self._base, key, fingerprint, lease, ttl)
        return _decode_claim(command, await self._eval("claim", command), key, lease)

    async def claim_many(
        self, items: Sequence[tuple[str, str]], *, lease: float, ttl: float = DEFAULT_TTL
    ) -> list[Claim]:
        """See :meth:`RedisIdempotencyStore.claim_many`; one round trip."""
        commands = [_claim_command(self._base, k, fp, lease, ttl) for k, fp in items]
        replies = await self._eval_many("claim_many", commands)
        return [
            _decode_claim(command, reply, key, lease)
            for command, reply, (key, _) in zip(commands, replies, items, strict=True)
        ]

    async def complete(self, lease: Lease, result: bytes, *, ttl: float = DEFAULT_TTL) -> None:
        """See :meth:`RedisIdempotencyStore.complete`."""
        check_ttl(ttl)
        if not await self._eval("complete", _complete_command(self._base, lease, result, ttl)):
            raise lost(lease)

    async def complete_many(
        self, items: Sequence[tuple[Lease, bytes]], *, ttl: float = DEFAULT_TTL
    ) -> list[bool]:
        """See :meth:`RedisIdempotencyStore.complete_many`; one round trip."""
        check_ttl(ttl)
        commands = [_complete_command(self._base, lease, result, ttl) for lease, result in items]
        return [bool(reply) for reply in await self._eval_many("complete_many", commands)]

    async def release(self, lease: Lease) -> None:
        """See :meth:`RedisIdempotencyStore.release`."""
        check_lease(lease)
        if not await self._eval("release", _lease_command(self._base, "release", lease)):
            raise lost(lease)

    async def extend(self, lease: Lease, seconds: float) -> Lease:
        """See :meth:`RedisIdempotencyStore.extend`."""
        check_lease(lease)
        check_ttl(seconds, field="seconds")
        command = _lease_command(self._base, "extend", lease, _us(seconds))
        if not await self._eval("extend", command):
            raise lost(lease)
        return _extended(lease, seconds)

    async def purge_expired(self, limit: int = 1000) -> int:
        """Return 0: Redis deletes expired records by itself (``PEXPIREAT``)."""
        check_limit(limit)
        return 0

    async def close(self) -> None:
        """Do nothing: the client belongs to whoever made it, who closes it."""


# -- the backend ------------------------------------------------------------------------------


def _redact(url: str) -> str:
    """*url* with its password, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()


def _check_url(url: object) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss"):
        shown = _redact(url) if isinstance(url, str) else url
        raise ConfigurationError("RedisBackend.url", shown, "must be a redis:// or rediss:// URL")
    return url


def _client_url(client: redis.Redis) -> str:
    """A URL naming *client*'s server, without its password."""
    pool = client.connection_pool
    options = pool.connection_kwargs
    db = options.get("db", 0)
    if "path" in options:
        return f"unix://{options['path']}?db={db}"
    scheme = "rediss" if "SSL" in pool.connection_class.__name__ else "redis"
    host = options.get("host", "localhost")
    return f"{scheme}://{host}:{options.get('port', 6379)}/{db}"


@final
class RedisBackend:
    """A Redis server and the factories of every Redis store, under one key prefix.

    Build it from a URL (:meth:`from_url`, or a URL string as *client_or_url*): the
    backend then makes its clients -- the async one on first use -- and owns them:
    :meth:`close` / :meth:`aclose` close them. Built around clients you pass, it owns
    nothing and closes nothing: the clients stay yours. Stores made by the factories
    never close the client either.

    The keys: ``<prefix>:idem:<namespace>:<key>`` for idempotency records,
    ``<prefix>:breaker:{<name>}...`` for breakers and ``<prefix>:ratelimit:<key>`` for
    rate-limit buckets (the module documentation describes each).

    An async client is bound to the event loop it first runs in: use the async stores of
    one backend from one event loop, and close it there with :meth:`aclose`.

    Args:
        client_or_url: A ``redis://`` or ``rediss://`` URL (options such as
            ``socket_timeout`` go in its query string), or a ``redis.Redis`` client.
        async_client: A ``redis.asyncio.Redis`` client for the async stores, when
            *client_or_url* is a client (made from the URL otherwise).
        prefix: The common prefix of every key (non-empty, printable, at most 200
            characters).

    Attributes:
        url: The URL the backend was built from; built around a client, a URL naming
            its server (without the password).
        client: The sync client.
        prefix: The common key prefix.

    Raises:
        ConfigurationError: The URL's scheme is not ``redis`` or ``rediss``, or *prefix*
            is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_async_client", "_owned", "client", "prefix", "url")

    def __init__(
        self,
        client_or_url: str | redis.Redis,
        *,
        async_client: redis.asyncio.Redis | None = None,
        prefix: str = "invresilience",
    ) -> None:
        self.prefix = _check_name("RedisBackend.prefix", prefix)
        self._async_client = async_client
        if isinstance(client_or_url, str):
            from redis import Redis

            self.url = _check_url(client_or_url)
            self.client = Redis.from_url(self.url)
            self._owned = True
        else:
            self.client = client_or_url
            self.url = _client_url(client_or_url)
            self._owned = False

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "invresilience") -> RedisBackend:
        """A backend that owns clients made from *url* (``redis://`` or ``rediss://``).

        Args:
            url: The server, as ``redis.Redis.from_url`` reads it, such as
                ``rediss://:password@host:6380/0?socket_timeout=5``.
            prefix: The common prefix of every key.

        Raises:
            ConfigurationError: The URL's scheme is not ``redis`` or ``rediss``.

        .. versionadded:: 0.1.0
        """
        return cls(_check_url(url), prefix=prefix)

    def __repr__(self) -> str:
        return f"RedisBackend(url={_redact(self.url)!r}, prefix={self.prefix!r})"

    @property
    def async_client(self) -> redis.asyncio.Redis:
        """The async client, made from the URL on first use.

        Raises:
            ConfigurationError: The backend was built around a sync client and no
                *async_client*.

        .. versionadded:: 0.1.0
        """
        if self._async_client is None:
            if not self._owned:
                raise ConfigurationError(
                    "RedisBackend.async_client",
                    None,
                    "pass async_client=redis.asyncio.Redis(...) to use async stores",
                )
            from redis.asyncio import Redis

            self._async_client = Redis.from_url(self.url)
        return self._async_client

    def idempotency_store(self, namespace: str = "default") -> RedisIdempotencyStore:
        """A :class:`RedisIdempotencyStore` on this server, keys under ``<prefix>:idem``.

        .. versionadded:: 0.1.0
        """
        return RedisIdempotencyStore(self.client, prefix=f"{self.prefix}:idem", namespace=namespace)

    def async_idempotency_store(self, namespace: str = "default") -> AsyncRedisIdempotencyStore:
        """An :class:`AsyncRedisIdempotencyStore` over the same records as :meth:`idempotency_store`.

        .. versionadded:: 0.1.0
        """
        return AsyncRedisIdempotencyStore(
            self.async_client, prefix=f"{self.prefix}:idem", namespace=namespace
        )

    def breaker_store(self) -> RedisBreakerStore:
        """A :class:`RedisBreakerStore` on this server, keys under ``<prefix>:breaker``.

        .. versionadded:: 0.1.0
        """
        return RedisBreakerStore(self.client, prefix=f"{self.prefix}:breaker")

    def async_breaker_store(self) -> AsyncRedisBreakerStore:
        """An :class:`AsyncRedisBreakerStore` sharing the breakers of :meth:`breaker_store`.

        .. versionadded:: 0.1.0
        """
        return AsyncRedisBreakerStore(self.async_client, prefix=f"{self.prefix}:breaker")

    def rate_limit_store(self) -> RedisRateLimitStore:
        """A :class:`RedisRateLimitStore` on this server, keys under ``<prefix>:ratelimit``.

        .. versionadded:: 0.1.0
        """
        return RedisRateLimitStore(self.client, prefix=f"{self.prefix}:ratelimit")

    def async_rate_limit_store(self) -> AsyncRedisRateLimitStore:
        """An :class:`AsyncRedisRateLimitStore` sharing the buckets of :meth:`rate_limit_store`.

        .. versionadded:: 0.1.0
        """
        return AsyncRedisRateLimitStore(self.async_client, prefix=f"{self.prefix}:ratelimit")

    def close(self) -> None:
        """Close the sync client if the backend made it.

        An async client it made needs an event loop to close: use :meth:`aclose`.

        .. versionadded:: 0.1.0
        """
        if self._owned:
            self.client.close()

    async def aclose(self) -> None:
        """Close the clients the backend made, the async one included.

        .. versionadded:: 0.1.0
        """
        if self._owned and self._async_client is not None:
            await self._async_client.aclose()
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
