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
- :class:`RedisDeadLetterStore` / :class:`AsyncRedisDeadLetterStore` -- the letters of a
  dead-letter queue, a :class:`~invresilience.typing.DeadLetterStore` /
  :class:`~invresilience.typing.AsyncDeadLetterStore`.
- :class:`RedisMembership` / :class:`AsyncRedisMembership` -- a group's members, leases
  and versioned view, a :class:`~invresilience.typing.Membership` /
  :class:`~invresilience.typing.AsyncMembership` (no script: see below).

Every operation but the membership's is one ``EVALSHA`` (after a ``NOSCRIPT`` the script is loaded and the call
made again), so it is atomic and costs one round trip -- except the dead-letter scans,
which are a series of bounded ones (see below); the idempotency batches
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

Dead-letter keys
----------------

Dead-letter queue *queue* under *prefix* (``invresilience:dlq`` by default;
:class:`RedisBackend` uses ``<its prefix>:dlq``) owns these keys, all with the hash tag
``{queue}`` so a cluster keeps them in one slot and can run the scripts::

    <prefix>:{<queue>}:seq           string: the last sequence handed out (INCR)
    <prefix>:{<queue>}:ids           zset: letter id -> sequence
    <prefix>:{<queue>}:at            zset: letter id -> dead_lettered_at
    <prefix>:{<queue>}:reasons       hash: reason -> how many letters have it
    <prefix>:{<queue>}:letter:<id>   hash: one letter

A letter's hash holds ``id``, ``reason``, ``attempts``, ``sequence``, the three times
(an ``int`` as its digits, a ``float`` as its exact ``repr``), ``headers`` (JSON),
``payload`` (the bytes as they are) and, when not ``None``, ``key``, ``fingerprint``,
``error_type``, ``error_message`` and ``traceback`` (UTF-8). The counter is never
decremented, so sequences are never reused, even once every letter is gone; an empty
queue leaves nothing else behind. Letters do not expire in Redis: retention is
:meth:`DeadLetterQueue.expire <invresilience.DeadLetterQueue.expire>`'s job.

``add`` is one script: the id check, the cap (refusing, or deleting the lowest
sequences), the ``INCR`` and the writes. ``get``, ``replace``, ``stats`` and ``delete``
(per 500 ids) are one script each. ``count`` of everything, of reasons alone or of a
time range alone reads the indexes in one call, and ``purge`` of everything or of a time
range deletes from the ``at`` index 500 letters per call. Any other filter is applied by
a scanning script that examines at most :data:`SCAN_CHUNK` letters in sequence order
per call and answers where to continue, so a filter matching one letter of a million
never blocks Redis: the client loops, and stops at the highest sequence the first call
saw.

Membership keys
---------------

Group *group* under *prefix* (``invresilience`` by default, and :class:`RedisBackend`'s
prefix) is one string, ``<prefix>:{<group>}:membership``, holding the JSON document of
``GroupState.dumps()``: the version, each live member's weight, acked version, lease end
and token, and the kept history. Each operation is an optimistic transaction: ``WATCH``
the key, ``GET`` it, read the server's ``TIME``, apply the operation with
:class:`~invresilience._core.membership.GroupState` (the rules the memory store runs, not
a Lua copy of them), then ``MULTI``, ``SET`` (only when the document changed) and
``EXEC``, which fails if another client wrote the key since the ``WATCH``; the operation
then starts over, up to :data:`MEMBERSHIP_ATTEMPTS` times. Lease ends are seconds of the
server's ``TIME``, so workers whose clocks disagree still agree on when a lease runs out.
The key never expires: the version must never go back, even once every member has left.
A Redis that restarts without persistence loses the key all the same, and forgets
members that may still be acting; so a group found without its key starts with a quiet
period of one lease (the view's ``quiet_for``), in which no member owns anything.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import operator
import secrets
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast
from urllib.parse import urlsplit

import attrs
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
from .._core.dlq import REASONS, Added, DeadLetter, QueueStats, check_letter_id
from .._core.membership import MembershipOp
from .._dlq import AsyncDeadLetterQueue, DeadLetterQueue
from ..exceptions import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    DeadLetterQueueFullError,
)
from ..typing import DEFAULT_TTL
from ._common import (
    check_claim_args,
    check_lease,
    check_letter,
    check_limit,
    check_max_letters,
    check_membership_op,
    check_namespace,
    check_ttl,
    lost,
    membership_result,
    membership_step,
)

try:
    from redis.client import NEVER_DECODE
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, RedisError, WatchError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "invresilience.backends.redis needs redis-py: pip install 'invresilience[redis]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    import redis
    import redis.asyncio

    from .._core.dlq import LetterFilter, Reason
    from .._core.idempotency import Claim, Lease
    from .._core.membership import MembershipView

__all__ = [
    "AsyncRedisBreakerStore",
    "AsyncRedisDeadLetterStore",
    "AsyncRedisIdempotencyStore",
    "AsyncRedisMembership",
    "AsyncRedisRateLimitStore",
    "RedisBackend",
    "RedisBreakerStore",
    "RedisDeadLetterStore",
    "RedisIdempotencyStore",
    "RedisMembership",
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


def _eval_script(
    client: redis.Redis, script: str, store: str, operation: str, command: _Command
) -> Any:
    """Run one EVALSHA *command*, loading *script* once if the server forgot it (NOSCRIPT)."""
    execute: Callable[..., Any] = client.execute_command
    try:
        try:
            return execute(*command, **_RAW)
        except NoScriptError:
            client.script_load(script)
            return execute(*command, **_RAW)
    except RedisError as exc:
        raise _backend_error(store, operation, exc) from exc


async def _aeval_script(
    client: redis.asyncio.Redis, script: str, store: str, operation: str, command: _Command
) -> Any:
    """The async twin of :func:`_eval_script`."""
    execute: Callable[..., Awaitable[Any]] = client.execute_command
    try:
        try:
            return await execute(*command, **_RAW)
        except NoScriptError:
            await client.script_load(script)
            return await execute(*command, **_RAW)
    except RedisError as exc:
        raise _backend_error(store, operation, exc) from exc


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
        return _eval_script(
            self.client, IDEMPOTENCY_LUA, "RedisIdempotencyStore", operation, command
        )

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
        return await _aeval_script(
            self.client, IDEMPOTENCY_LUA, "AsyncRedisIdempotencyStore", operation, command
        )

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


# -- the dead-letter script ---------------------------------------------------------------------

DEAD_LETTER_LUA = r"""
-- One DeadLetterStore operation on the letters of one queue (see the module documentation).
-- KEYS: [1] the sequence counter, [2] ids by sequence (zset), [3] ids by dead_lettered_at
-- (zset), [4] letters per reason (hash); add, get and replace: [5] the letter's hash.
-- ARGV: [1] the operation, [2] the prefix of the letter hashes, then the operation's own.
local SEQ, IDS, AT, REASONS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, base = ARGV[1], ARGV[2]

-- Lua's tostring keeps 14 digits: sequences are written with %.0f.
local function int(x) return string.format('%.0f', x) end

local function tally(reason, n)
  if redis.call('HINCRBY', REASONS, reason, n) <= 0 then redis.call('HDEL', REASONS, reason) end
end

-- Delete the letter *id* and its index entries; 1 if it was stored, else 0.
local function forget(id)
  local k = base .. id
  local reason = redis.call('HGET', k, 'reason')
  local removed = redis.call('ZREM', IDS, id)
  redis.call('ZREM', AT, id)
  redis.call('DEL', k)
  if reason then tally(reason, -1) end
  return removed
end

if op == 'add' then
  -- ARGV [3] max_letters ('' for none), [4] '1' to evict the oldest, [5] id, [6] reason,
  -- [7] dead_lettered_at, [8 ..] the letter's fields and values.
  -- Reply: {0, the stored letter} id taken | {1, sequence, {evicted ids}} stored | {2} full.
  local K = KEYS[5]
  if redis.call('EXISTS', K) == 1 then return {0, redis.call('HGETALL', K)} end
  local evicted = {}
  if ARGV[3] ~= '' then
    local max = tonumber(ARGV[3])
    local n = redis.call('ZCARD', IDS)
    if n >= max then
      if ARGV[4] ~= '1' then return {2} end
      local old = redis.call('ZRANGE', IDS, 0, n - max)
      for i = 1, #old do
        forget(old[i])
        evicted[i] = old[i]
      end
    end
  end
  local seq = redis.call('INCR', SEQ)
  redis.call('HSET', K, 'sequence', int(seq), unpack(ARGV, 8))
  redis.call('ZADD', IDS, int(seq), ARGV[5])
  redis.call('ZADD', AT, ARGV[7], ARGV[5])
  tally(ARGV[6], 1)
  return {1, seq, evicted}
elseif op == 'get' then
  return redis.call('HGETALL', KEYS[5])
elseif op == 'replace' then
  -- ARGV [3] id, [4] reason, [5] dead_lettered_at, [6 ..] fields and values. Reply: 1 or 0.
  local K = KEYS[5]
  local old = redis.call('HMGET', K, 'reason', 'sequence')
  if not old[2] then return 0 end
  redis.call('DEL', K)
  redis.call('HSET', K, 'sequence', old[2], unpack(ARGV, 6))
  redis.call('ZADD', AT, ARGV[5], ARGV[3])
  if old[1] ~= ARGV[4] then
    if old[1] then tally(old[1], -1) end
    tally(ARGV[4], 1)
  end
  return 1
elseif op == 'delete' then
  -- ARGV [3 ..] ids. Reply: how many were stored.
  local n = 0
  for i = 3, #ARGV do n = n + forget(ARGV[i]) end
  return n
elseif op == 'stats' then
  -- Reply: {total, {reason, count, ...}, oldest dead_lettered_at, newest dead_lettered_at}.
  local function at(index)
    local id = redis.call('ZRANGE', AT, index, index)[1]
    if not id then return false end
    return redis.call('HGET', base .. id, 'dead_lettered_at')
  end
  return {redis.call('ZCARD', IDS), redis.call('HGETALL', REASONS), at(0), at(-1)}
elseif op == 'tally' then
  -- ARGV [3] 'all' | 'reasons' (then [4 ..] reasons) | 'at' (then [4] min, [5] max).
  local kind = ARGV[3]
  if kind == 'all' then return redis.call('ZCARD', IDS) end
  if kind == 'at' then return redis.call('ZCOUNT', AT, ARGV[4], ARGV[5]) end
  local n = 0
  for i = 4, #ARGV do n = n + (tonumber(redis.call('HGET', REASONS, ARGV[i])) or 0) end
  return n
elseif op == 'purge_at' then
  -- ARGV [3] min, [4] max dead_lettered_at, [5] chunk. Reply: how many were deleted.
  local ids = redis.call('ZRANGEBYSCORE', AT, ARGV[3], ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
  for i = 1, #ids do forget(ids[i]) end
  return #ids
elseif op == 'scan' then
  -- Examine at most *chunk* letters with after < sequence <= top, in sequence order.
  -- ARGV [3] 'list' | 'count' | 'purge', [4] after, [5] top ('': the counter now),
  -- [6] matches wanted (0: all), [7] chunk, [8] byte budget for payloads (list),
  -- [9] reasons ('|a|b|', '': any), [10] '1' when [11] is the key wanted,
  -- [12] since, [13] before ('': none).
  -- Reply: {last sequence examined, top, 1 when nothing is left, matches, {letters}}.
  local mode, after, top = ARGV[3], ARGV[4], ARGV[5]
  if top == '' then top = redis.call('GET', SEQ) or '0' end
  local want, chunk, budget = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
  local reasons, keyed, key = ARGV[9], ARGV[10] == '1', ARGV[11]
  local since, before = tonumber(ARGV[12]), tonumber(ARGV[13])
  local page = redis.call('ZRANGEBYSCORE', IDS, '(' .. after, top, 'WITHSCORES', 'LIMIT', 0,
                          chunk)
  local done = (#page < 2 * chunk) and 1 or 0
  local found, bytes, out = 0, 0, {}
  for i = 1, #page, 2 do
    local id = page[i]
    after = page[i + 1]
    local k = base .. id
    local f = redis.call('HMGET', k, 'reason', 'key', 'dead_lettered_at')
    local at = tonumber(f[3])
    if f[1] and at
        and (reasons == '' or string.find(reasons, '|' .. f[1] .. '|', 1, true))
        and (not keyed or f[2] == key)
        and (not since or at >= since) and (not before or at < before) then
      found = found + 1
      if mode == 'list' then
        out[#out + 1] = redis.call('HGETALL', k)
        bytes = bytes + redis.call('HSTRLEN', k, 'payload')
      elseif mode == 'purge' then
        forget(id)
      end
      if (want > 0 and found >= want) or bytes >= budget then
        if i + 1 < #page then done = 0 end
        break
      end
    end
  end
  return {after, top, done, found, out}
end
return redis.error_reply('invresilience: unknown dead-letter operation ' .. tostring(op))
"""

#: The SHA1 that ``EVALSHA`` names :data:`DEAD_LETTER_LUA` by.
DEAD_LETTER_SHA: Final = hashlib.sha1(DEAD_LETTER_LUA.encode()).hexdigest()

#: Letters one scanning script call examines at most (list, count and purge by filter).
SCAN_CHUNK: Final = 500
# A listing call stops early once the payloads it returns reach this many bytes.
_LIST_BYTES: Final = 4 << 20
_OPTIONAL_TEXT: Final = ("key", "fingerprint", "error_type", "error_message", "traceback")
_TIMES: Final = ("first_failed_at", "last_failed_at", "dead_lettered_at")

_T = TypeVar("_T")
# A store operation as a plan: it yields the commands to run and receives their replies,
# so the sync and async stores share every decision and differ only in how they send.
_Plan = Generator[_Command, Any, _T]


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _untext(value: bytes) -> str:
    return bytes(value).decode("utf-8", "surrogatepass")


def _number(value: object) -> str:
    """A time as the letter hash keeps it: ints as ints, floats by their exact ``repr``."""
    if isinstance(value, float):
        return repr(value)
    return str(operator.index(cast("int", value)))


def _unnumber(value: bytes) -> float:
    text = bytes(value).decode("ascii")
    try:
        return int(text)
    except ValueError:
        return float(text)


def _letter_fields(letter: DeadLetter) -> list[str | bytes]:
    """*letter*'s hash fields and values (not its sequence, queue or absent ``None`` fields)."""
    out: list[str | bytes] = ["id", letter.id, "reason", letter.reason]
    for name in _OPTIONAL_TEXT:
        value = getattr(letter, name)
        if value is not None:
            out += [name, _text(value)]
    out += ["attempts", str(letter.attempts)]
    for name in _TIMES:
        out += [name, _number(getattr(letter, name))]
    out += ["headers", json.dumps(dict(letter.headers), separators=(",", ":"))]
    out += ["payload", letter.payload]
    return out


def _decode_letter(queue: str, row: Sequence[Any]) -> DeadLetter:
    """The letter a flat ``HGETALL`` reply holds."""
    fields = {_untext(row[i]): bytes(row[i + 1]) for i in range(0, len(row) - 1, 2)}

    def text(name: str) -> str | None:
        value = fields.get(name)
        return None if value is None else _untext(value)

    try:
        return DeadLetter(
            id=_untext(fields["id"]),
            queue=queue,
            payload=fields.get("payload", b""),
            reason=cast("Reason", _untext(fields["reason"])),
            key=text("key"),
            fingerprint=text("fingerprint"),
            error_type=text("error_type"),
            error_message=text("error_message"),
            traceback=text("traceback"),
            attempts=int(fields["attempts"]),
            first_failed_at=_unnumber(fields["first_failed_at"]),
            last_failed_at=_unnumber(fields["last_failed_at"]),
            dead_lettered_at=_unnumber(fields["dead_lettered_at"]),
            headers=json.loads(fields.get("headers", b"{}")),
            sequence=int(fields["sequence"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise BackendError(f"dead-letter queue {queue!r}: a stored letter is malformed") from exc


@final
@attrs.frozen
class _Queue:
    """The keys of one dead-letter queue, and the commands on them."""

    name: str
    counter: str
    ids: str
    at: str
    reasons: str
    letters: str

    @classmethod
    def of(cls, store: str, prefix: str, queue: str) -> _Queue:
        prefix = _check_name(f"{store}.prefix", prefix)
        if "{}" in prefix:
            # An empty hash tag would scatter a queue's keys over a cluster's slots.
            raise ConfigurationError(f"{store}.prefix", prefix, "must not contain '{}'")
        name = check_namespace(f"{store}.queue", queue)
        base = f"{prefix}:{{{name}}}:"
        return cls(
            name, base + "seq", base + "ids", base + "at", base + "reasons", base + "letter:"
        )

    def command(self, operation: str, *args: Any, letter: str | None = None) -> _Command:
        keys = [self.counter, self.ids, self.at, self.reasons]
        if letter is not None:
            keys.append(self.letters + letter)
        return ("EVALSHA", DEAD_LETTER_SHA, len(keys), *keys, operation, self.letters, *args)

    # -- the plans --

    def add(self, letter: DeadLetter, max_letters: int | None, evict_oldest: bool) -> _Plan[Added]:
        check_letter(letter, self.name)
        check_max_letters(max_letters)
        reply = yield self.command(
            "add",
            "" if max_letters is None else str(max_letters),
            "1" if evict_oldest else "0",
            letter.id,
            letter.reason,
            _number(letter.dead_lettered_at),
            *_letter_fields(letter),
            letter=letter.id,
        )
        code = int(reply[0])
        if code == 0:
            return Added(letter=_decode_letter(self.name, reply[1]), created=False)
        if code == 2:
            raise DeadLetterQueueFullError(self.name, cast("int", max_letters))
        return Added(
            letter=attrs.evolve(letter, sequence=int(reply[1])),
            created=True,
            evicted=tuple(_untext(letter_id) for letter_id in reply[2]),
        )

    def get(self, letter_id: str) -> _Plan[DeadLetter | None]:
        if check_letter_id(letter_id) is not None:
            return None  # no letter can have that id
        reply = yield self.command("get", letter=letter_id)
        return _decode_letter(self.name, reply) if reply else None

    def scan(
        self, mode: str, where: LetterFilter, after: int, want: int
    ) -> _Plan[tuple[int, list[DeadLetter]]]:
        """Run the scanning script chunk by chunk: the matches (counted, or listed)."""
        found = 0
        letters: list[DeadLetter] = []
        top = ""
        reasons = "" if where.reasons is None else "|" + "|".join(sorted(where.reasons)) + "|"
        while True:
            reply = yield self.command(
                "scan",
                mode,
                str(after),
                top,
                str(want - found if want else 0),
                str(SCAN_CHUNK),
                str(_LIST_BYTES),
                reasons,
                "0" if where.key is None else "1",
                b"" if where.key is None else _text(where.key),
                "" if where.since is None else _number(where.since),
                "" if where.before is None else _number(where.before),
            )
            last, top_reply, done, matches, rows = reply
            found += int(matches)
            letters += [_decode_letter(self.name, row) for row in rows]
            if int(done) or (want and found >= want):
                return found, letters
            after, top = int(last), bytes(top_reply).decode("ascii")

    def list(self, where: LetterFilter, after: int, limit: int) -> _Plan[list[DeadLetter]]:
        check_limit(limit)
        after = operator.index(after)
        selected = _effective(where)
        if selected is None:
            return []
        return (yield from self.scan("list", selected, after, limit))[1]

    def count(self, selecting: LetterFilter) -> _Plan[int]:
        where = _effective(selecting)
        if where is None:
            return 0
        if where.is_everything:
            return int((yield self.command("tally", "all")))
        if where.key is None and where.since is None and where.before is None:
            return int(
                (yield self.command("tally", "reasons", *sorted(cast("Any", where.reasons))))
            )
        if where.key is None and where.reasons is None:
            return int((yield self.command("tally", "at", *_score_range(where))))
        return (yield from self.scan("count", where, 0, 0))[0]

    def stats(self) -> _Plan[QueueStats]:
        total, reasons, oldest, newest = yield self.command("stats")
        counts = {_untext(reasons[i]): int(reasons[i + 1]) for i in range(0, len(reasons), 2)}
        return QueueStats(
            total=int(total),
            by_reason={r: counts[r] for r in REASONS if counts.get(r)},
            oldest=None if oldest is None else _unnumber(oldest),
            newest=None if newest is None else _unnumber(newest),
        )

    def replace(self, letter: DeadLetter) -> _Plan[bool]:
        check_letter(letter, self.name)
        reply = yield self.command(
            "replace",
            letter.id,
            letter.reason,
            _number(letter.dead_lettered_at),
            *_letter_fields(letter),
            letter=letter.id,
        )
        return bool(int(reply))

    def delete(self, letter_ids: Sequence[str]) -> _Plan[int]:
        ids = sorted({i for i in letter_ids if check_letter_id(i) is None})
        deleted = 0
        for start in range(0, len(ids), SCAN_CHUNK):
            deleted += int((yield self.command("delete", *ids[start : start + SCAN_CHUNK])))
        return deleted

    def purge(self, selecting: LetterFilter) -> _Plan[int]:
        where = _effective(selecting)
        if where is None:
            return 0
        if where.reasons is not None or where.key is not None:
            return (yield from self.scan("purge", where, 0, 0))[0]
        # Everything, or a time range: straight from the index by dead_lettered_at.
        low, high = _score_range(where)
        deleted = 0
        while True:
            n = int((yield self.command("purge_at", low, high, str(SCAN_CHUNK))))
            deleted += n
            if n < SCAN_CHUNK:
                return deleted


def _bound(value: float | None) -> float | None:
    """A filter's time bound as a float (an int too large for one as an infinity)."""
    if value is None:
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _effective(where: LetterFilter) -> LetterFilter | None:
    """*where* with float bounds and those that bound nothing dropped; ``None`` if it selects nothing.

    Letters' times are finite, so ``since=-inf`` and ``before=inf`` bound nothing, while
    ``since=inf``, ``before=-inf``, a NaN bound or no reasons at all select nothing (as
    :meth:`LetterFilter.matches <invresilience.typing.LetterFilter.matches>` decides).
    """
    since, before = _bound(where.since), _bound(where.before)
    if (
        (where.reasons is not None and not where.reasons)
        or since == math.inf
        or before == -math.inf
    ):
        return None
    if (since is not None and math.isnan(since)) or (before is not None and math.isnan(before)):
        return None
    return attrs.evolve(
        where,
        since=None if since == -math.inf else since,
        before=None if before == math.inf else before,
    )


def _score_range(where: LetterFilter) -> tuple[str, str]:
    """``ZCOUNT`` / ``ZRANGEBYSCORE`` bounds for ``since <= dead_lettered_at < before``."""
    low = "-inf" if where.since is None else _number(where.since)
    high = "+inf" if where.before is None else "(" + _number(where.before)
    return low, high


@final
class RedisDeadLetterStore:
    """A :class:`~invresilience.typing.DeadLetterStore` in Redis, shared by every process.

    The letters of *queue* live in a few keys sharing one hash tag (the module
    documentation describes them). :meth:`add`, :meth:`get`, :meth:`replace`,
    :meth:`stats` and :meth:`delete` (per 500 ids) are each one atomic Lua script; a
    filtered :meth:`list`, :meth:`count` or :meth:`purge` examines at most
    :data:`SCAN_CHUNK` letters per script call and continues in further calls, so
    Redis is never blocked by a long queue. Those are therefore not one snapshot:
    letters stored while they run may or may not be seen.

    The store does not own *client*: :meth:`close` leaves it open.

    Args:
        client: A ``redis.Redis`` client; ``decode_responses`` may be either.
        queue: The queue's name (1 to 100 letters, digits or ``_.:-``).
        prefix: Prepended to every key (non-empty, printable, at most 200 characters,
            without ``{}``).

    Raises:
        ConfigurationError: *queue* or *prefix* is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_queue", "client", "prefix", "queue")

    def __init__(
        self, client: redis.Redis, queue: str = "default", *, prefix: str = "invresilience:dlq"
    ) -> None:
        self.client = client
        self._queue = _Queue.of("RedisDeadLetterStore", prefix, queue)
        self.prefix = prefix
        self.queue = queue

    def __repr__(self) -> str:
        return f"RedisDeadLetterStore({self.queue!r}, prefix={self.prefix!r})"

    def _eval(self, operation: str, command: _Command) -> Any:
        return _eval_script(
            self.client, DEAD_LETTER_LUA, "RedisDeadLetterStore", operation, command
        )

    def _run(self, operation: str, plan: _Plan[_T]) -> _T:
        reply: Any = None
        while True:
            try:
                command = plan.send(reply)
            except StopIteration as stop:
                return cast("_T", stop.value)
            reply = self._eval(operation, command)

    def add(
        self, letter: DeadLetter, *, max_letters: int | None = None, evict_oldest: bool = False
    ) -> Added:
        """See :meth:`~invresilience.typing.DeadLetterStore.add`; one atomic script.

        Raises:
            DeadLetterQueueFullError: The queue holds *max_letters* letters and
                *evict_oldest* is false; nothing changed.
            ConfigurationError: *letter* is not a letter of this queue, or *max_letters*
                is invalid.
            BackendUnavailableError: Redis could not be reached.
            BackendError: Redis failed otherwise.
        """
        return self._run("add", self._queue.add(letter, max_letters, evict_oldest))

    def get(self, letter_id: str) -> DeadLetter | None:
        """See :meth:`~invresilience.typing.DeadLetterStore.get`."""
        return self._run("get", self._queue.get(letter_id))

    def list(self, where: LetterFilter, *, after: int = 0, limit: int = 100) -> list[DeadLetter]:
        """See :meth:`~invresilience.typing.DeadLetterStore.list`; chunked (see above)."""
        return self._run("list", self._queue.list(where, after, limit))

    def count(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.count`.

        Everything, reasons alone or a time range alone are counted from the indexes in
        one call; a key or a combination is counted chunk by chunk.
        """
        return self._run("count", self._queue.count(where))

    def stats(self) -> QueueStats:
        """See :meth:`~invresilience.typing.DeadLetterStore.stats`; one call."""
        return self._run("stats", self._queue.stats())

    def replace(self, letter: DeadLetter) -> bool:
        """See :meth:`~invresilience.typing.DeadLetterStore.replace`; one atomic script."""
        return self._run("replace", self._queue.replace(letter))

    def delete(self, letter_ids: Sequence[str]) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.delete`; one script per 500 ids."""
        return self._run("delete", self._queue.delete(letter_ids))

    def purge(self, where: LetterFilter) -> int:
        """See :meth:`~invresilience.typing.DeadLetterStore.purge`; chunked (see above)."""
        return self._run("purge", self._queue.purge(where))

    def close(self) -> None:
        """Do nothing: the client belongs to whoever made it, who closes it."""


@final
class AsyncRedisDeadLetterStore:
    """The async twin of :class:`RedisDeadLetterStore`: same keys, same script.

    Args:
        client: A ``redis.asyncio.Redis`` client; ``decode_responses`` may be either.
        queue: The queue's name (1 to 100 letters, digits or ``_.:-``).
        prefix: Prepended to every key (non-empty, printable, at most 200 characters,
            without ``{}``).

    Raises:
        ConfigurationError: *queue* or *prefix* is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_queue", "client", "prefix", "queue")

    def __init__(
        self,
        client: redis.asyncio.Redis,
        queue: str = "default",
        *,
        prefix: str = "invresilience:dlq",
    ) -> None:
        self.client = client
        self._queue = _Queue.of("AsyncRedisDeadLetterStore", prefix, queue)
        self.prefix = prefix
        self.queue = queue

    def __repr__(self) -> str:
        return f"AsyncRedisDeadLetterStore({self.queue!r}, prefix={self.prefix!r})"

    async def _eval(self, operation: str, command: _Command) -> Any:
        return await _aeval_script(
            self.client, DEAD_LETTER_LUA, "AsyncRedisDeadLetterStore", operation, command
        )

    async def _run(self, operation: str, plan: _Plan[_T]) -> _T:
        reply: Any = None
        while True:
            try:
                command = plan.send(reply)
            except StopIteration as stop:
                return cast("_T", stop.value)
            reply = await self._eval(operation, command)

    async def add(
        self, letter: DeadLetter, *, max_letters: int | None = None, evict_oldest: bool = False
    ) -> Added:
        """See :meth:`RedisDeadLetterStore.add`."""
        return await self._run("add", self._queue.add(letter, max_letters, evict_oldest))

    async def get(self, letter_id: str) -> DeadLetter | None:
        """See :meth:`RedisDeadLetterStore.get`."""
        return await self._run("get", self._queue.get(letter_id))

    async def list(
        self, where: LetterFilter, *, after: int = 0, limit: int = 100
    ) -> list[DeadLetter]:
        """See :meth:`RedisDeadLetterStore.list`."""
        return await self._run("list", self._queue.list(where, after, limit))

    async def count(self, where: LetterFilter) -> int:
        """See :meth:`RedisDeadLetterStore.count`."""
        return await self._run("count", self._queue.count(where))

    async def stats(self) -> QueueStats:
        """See :meth:`RedisDeadLetterStore.stats`."""
        return await self._run("stats", self._queue.stats())

    async def replace(self, letter: DeadLetter) -> bool:
        """See :meth:`RedisDeadLetterStore.replace`."""
        return await self._run("replace", self._queue.replace(letter))

    async def delete(self, letter_ids: Sequence[str]) -> int:
        """See :meth:`RedisDeadLetterStore.delete`."""
        return await self._run("delete", self._queue.delete(letter_ids))

    async def purge(self, where: LetterFilter) -> int:
        """See :meth:`RedisDeadLetterStore.purge`."""
        return await self._run("purge", self._queue.purge(where))

    async def close(self) -> None:
        """Do nothing: the client belongs to whoever made it, who closes it."""


# -- membership -------------------------------------------------------------------------------

#: How many times a membership operation starts over because another client wrote the
#: group between its ``WATCH`` and its ``EXEC``, before giving up with a
#: :exc:`~invresilience.exceptions.BackendError`.
MEMBERSHIP_ATTEMPTS: Final = 50


def _membership_key(store: str, prefix: str, group: str) -> str:
    prefix = _check_name(f"{store}.prefix", prefix)
    if "{}" in prefix:
        # An empty hash tag would make the prefix, not the group, choose the cluster slot.
        raise ConfigurationError(f"{store}.prefix", prefix, "must not contain '{}'")
    return f"{prefix}:{{{check_namespace('group', group)}}}:membership"


def _membership_step(
    where: str, group: str, op: MembershipOp, stored: bytes | None, time: Sequence[Any]
) -> tuple[MembershipView | float, str | None]:
    """Apply *op* to the stored document at the server's *time* (Redis ``TIME``)."""
    # Guarded: a key found missing may have been lost (a restart without persistence).
    now = int(time[0]) + int(time[1]) / 1_000_000
    return membership_step(where, group, op, stored, now, guarded=True)


def _gave_up(where: str, group: str) -> BackendError:
    return BackendError(
        f"{where}: group {group!r} was written by another client during each of "
        f"{MEMBERSHIP_ATTEMPTS} attempts in a row; try again"
    )


@final
class RedisMembership:
    """A :class:`~invresilience.typing.Membership` in Redis: one group, shared by every process.

    The group is one key holding its
    :class:`~invresilience._core.membership.GroupState` as JSON; each operation reads it,
    applies the operation at the server's ``TIME`` and writes it back in one optimistic
    ``WATCH`` / ``MULTI`` / ``EXEC`` transaction, starting over when another client wrote
    the key in between (the module documentation describes the key). Leases are measured
    on the server's clock. A group found without its key (new, or lost by a restart
    without persistence) starts with one lease of quiet.

    The store does not own *client*: :meth:`close` leaves it open.

    Args:
        client: A ``redis.Redis`` client; ``decode_responses`` may be either.
        group: The group's name (1 to 100 letters, digits or ``_.:-``).
        prefix: Prepended to the key (non-empty, printable, at most 200 characters,
            without ``{}``).

    Raises:
        ConfigurationError: *group* or *prefix* is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_group", "client", "key", "prefix")

    def __init__(
        self, client: redis.Redis, group: str = "default", *, prefix: str = "invresilience"
    ) -> None:
        self.client = client
        self.key = _membership_key("RedisMembership", prefix, group)
        self.prefix = prefix
        self._group = group

    def __repr__(self) -> str:
        return f"RedisMembership({self._group!r}, prefix={self.prefix!r})"

    @property
    def group(self) -> str:
        """The group's name."""
        return self._group

    def _apply(self, operation: str, op: MembershipOp) -> MembershipView:
        check_membership_op(op)
        where = f"RedisMembership.{operation}"
        pipe: Any = self.client.pipeline(transaction=True)  # partly untyped in redis-py
        try:
            with pipe:
                for _ in range(MEMBERSHIP_ATTEMPTS):
                    try:
                        pipe.watch(self.key)
                        stored = pipe.execute_command("GET", self.key, **_RAW)
                        time = pipe.time()
                        result, write = _membership_step(where, self._group, op, stored, time)
                        pipe.multi()
                        if write is not None:
                            pipe.set(self.key, write)
                        pipe.execute()
                    except WatchError:
                        continue
                    finally:
                        pipe.reset()
                    return membership_result(self._group, op, result)
        except RedisError as exc:
            raise _backend_error("RedisMembership", operation, exc) from exc
        raise _gave_up(where, self._group)

    def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.join`.

        Raises:
            MembershipConflictError: *member* is live under another token.
            ConfigurationError: An argument is invalid.
            BackendUnavailableError: Redis could not be reached.
            BackendError: Redis failed otherwise, the stored document is malformed, or
                other clients kept writing the group.
        """
        return self._apply(
            "join",
            MembershipOp(kind="join", member=member, token=token, weight=weight, lease=lease),
        )

    def heartbeat(self, member: str, token: str, *, lease: float, acked: int) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.heartbeat`."""
        return self._apply(
            "heartbeat",
            MembershipOp(kind="heartbeat", member=member, token=token, lease=lease, acked=acked),
        )

    def leave(self, member: str, token: str) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.leave`."""
        return self._apply("leave", MembershipOp(kind="leave", member=member, token=token))

    def view(self) -> MembershipView:
        """See :meth:`~invresilience.typing.Membership.view`."""
        return self._apply("view", MembershipOp(kind="view"))

    def close(self) -> None:
        """Do nothing: the client belongs to whoever made it, who closes it."""


@final
class AsyncRedisMembership:
    """The async twin of :class:`RedisMembership`: the same key, document and transaction.

    Args:
        client: A ``redis.asyncio.Redis`` client; ``decode_responses`` may be either.
        group: The group's name (1 to 100 letters, digits or ``_.:-``).
        prefix: Prepended to the key (non-empty, printable, at most 200 characters,
            without ``{}``).

    Raises:
        ConfigurationError: *group* or *prefix* is invalid.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_group", "client", "key", "prefix")

    def __init__(
        self,
        client: redis.asyncio.Redis,
        group: str = "default",
        *,
        prefix: str = "invresilience",
    ) -> None:
        self.client = client
        self.key = _membership_key("AsyncRedisMembership", prefix, group)
        self.prefix = prefix
        self._group = group

    def __repr__(self) -> str:
        return f"AsyncRedisMembership({self._group!r}, prefix={self.prefix!r})"

    @property
    def group(self) -> str:
        """The group's name."""
        return self._group

    async def _apply(self, operation: str, op: MembershipOp) -> MembershipView:
        check_membership_op(op)
        where = f"AsyncRedisMembership.{operation}"
        pipe: Any = self.client.pipeline(transaction=True)  # partly untyped in redis-py
        try:
            async with pipe:
                for _ in range(MEMBERSHIP_ATTEMPTS):
                    try:
                        await pipe.watch(self.key)
                        stored = await pipe.execute_command("GET", self.key, **_RAW)
                        time = await pipe.time()
                        result, write = _membership_step(where, self._group, op, stored, time)
                        pipe.multi()
                        if write is not None:
                            pipe.set(self.key, write)
                        await pipe.execute()
                    except WatchError:
                        continue
                    finally:
                        await pipe.reset()
                    return membership_result(self._group, op, result)
        except RedisError as exc:
            raise _backend_error("AsyncRedisMembership", operation, exc) from exc
        raise _gave_up(where, self._group)

    async def join(self, member: str, token: str, *, weight: float, lease: float) -> MembershipView:
        """See :meth:`RedisMembership.join`."""
        return await self._apply(
            "join",
            MembershipOp(kind="join", member=member, token=token, weight=weight, lease=lease),
        )

    async def heartbeat(
        self, member: str, token: str, *, lease: float, acked: int
    ) -> MembershipView:
        """See :meth:`RedisMembership.heartbeat`."""
        return await self._apply(
            "heartbeat",
            MembershipOp(kind="heartbeat", member=member, token=token, lease=lease, acked=acked),
        )

    async def leave(self, member: str, token: str) -> MembershipView:
        """See :meth:`RedisMembership.leave`."""
        return await self._apply("leave", MembershipOp(kind="leave", member=member, token=token))

    async def view(self) -> MembershipView:
        """See :meth:`RedisMembership.view`."""
        return await self._apply("view", MembershipOp(kind="view"))

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
    ``<prefix>:breaker:{<name>}...`` for breakers, ``<prefix>:ratelimit:<key>`` for
    rate-limit buckets, ``<prefix>:dlq:{<queue>}:...`` for dead-letter queues and
    ``<prefix>:{<group>}:membership`` for membership groups (the module documentation
    describes each).

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

    def dead_letter_store(self, queue: str) -> RedisDeadLetterStore:
        """A :class:`RedisDeadLetterStore` for *queue* on this server, keys under ``<prefix>:dlq``.

        Raises:
            ConfigurationError: *queue* is not 1 to 100 letters, digits or ``_.:-``.

        .. versionadded:: 0.1.0
        """
        return RedisDeadLetterStore(self.client, queue, prefix=f"{self.prefix}:dlq")

    def async_dead_letter_store(self, queue: str) -> AsyncRedisDeadLetterStore:
        """An :class:`AsyncRedisDeadLetterStore` over the letters of :meth:`dead_letter_store`.

        Raises:
            ConfigurationError: *queue* is invalid, or the backend was built around a
                sync client and no *async_client*.

        .. versionadded:: 0.1.0
        """
        return AsyncRedisDeadLetterStore(self.async_client, queue, prefix=f"{self.prefix}:dlq")

    def dead_letter_queue(self, queue: str, **options: Any) -> DeadLetterQueue:
        """A :class:`~invresilience.DeadLetterQueue` over :meth:`dead_letter_store`.

        Args:
            queue: The queue's name.
            **options: Go to the :class:`~invresilience.DeadLetterQueue` constructor
                (``codec``, ``redact``, ``max_letters``, ``when_full``, ...).

        Returns:
            The queue; closing it leaves the backend's client open.

        .. versionadded:: 0.1.0
        """
        return DeadLetterQueue(self.dead_letter_store(queue), **options)

    def async_dead_letter_queue(self, queue: str, **options: Any) -> AsyncDeadLetterQueue:
        """An :class:`~invresilience.AsyncDeadLetterQueue` over :meth:`async_dead_letter_store`.

        Args:
            queue: The queue's name.
            **options: Go to the :class:`~invresilience.AsyncDeadLetterQueue` constructor.

        Returns:
            The queue; closing it leaves the backend's clients open.

        .. versionadded:: 0.1.0
        """
        return AsyncDeadLetterQueue(self.async_dead_letter_store(queue), **options)

    def membership(self, group: str) -> RedisMembership:
        """A :class:`RedisMembership` for *group* on this server, key ``<prefix>:{<group>}:membership``.

        Raises:
            ConfigurationError: *group* is not 1 to 100 letters, digits or ``_.:-``.

        .. versionadded:: 0.1.0
        """
        check_namespace("group", group)
        return RedisMembership(self.client, group, prefix=self.prefix)

    def async_membership(self, group: str) -> AsyncRedisMembership:
        """An :class:`AsyncRedisMembership` over the group of :meth:`membership`.

        Raises:
            ConfigurationError: *group* is invalid, or the backend was built around a
                sync client and no *async_client*.

        .. versionadded:: 0.1.0
        """
        check_namespace("group", group)
        return AsyncRedisMembership(self.async_client, group, prefix=self.prefix)

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
