"""Retry demo: an inventory bot reads stock levels from a flaky ERP, and survives it.

Run it with ``python examples/retry_demo.py`` (or ``nox -s demo``). It takes about a
second, on the real clock: the delays are tens of milliseconds instead of seconds.

What it shows, in three rounds against a fake ERP whose failures come from a seeded
random plan (the same on every run):

1. a synchronous ``@erp_retry`` function riding out connection resets, ``429``
   answers with a ``Retry-After`` hint, and "still syncing" *results* that a
   classifier sends back for another attempt;
2. the same policy on ``async`` code through ``acall``, many SKUs at once;
3. an outage, where the shared ``RetryBudget`` stops the bot from hammering the
   dead ERP with retries.

Retries and give-ups are logged to stderr by ``LoggingListener``; a summary goes to
stdout at the end.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import invresilience as ir

SEED = 99
THROTTLE_HINT = 0.2  # seconds the ERP asks us to wait when it answers 429


# -- the flaky ERP ---------------------------------------------------------------------------------


class ErpUnavailableError(ConnectionError):
    """The ERP dropped the connection."""


class ErpThrottledError(Exception):
    """The ERP answered 429 Too Many Requests, saying when to come back."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"429 Too Many Requests (Retry-After: {retry_after} s)")
        # The attribute RetryPolicy reads by default: it replaces the backoff delay.
        self.retry_after = retry_after


@dataclass(frozen=True)
class StockReply:
    """One answer of the ERP: a stock level, or "still syncing, ask again"."""

    sku: str
    on_hand: int
    syncing: bool = False


@dataclass
class FakeErp:
    """An ERP that fails each SKU's first requests according to a seeded plan."""

    seed: int
    skus: list[str]
    outage: bool = False
    requests: int = 0
    plan: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        faults = ("reset", "throttled", "syncing")
        self.plan = {
            sku: [rng.choice(faults) for _ in range(rng.choice((0, 0, 0, 1, 1, 2, 4)))]
            for sku in self.skus
        }

    def stock(self, sku: str) -> StockReply:
        """Answer a stock request, or fail the way the plan says."""
        self.requests += 1
        if self.outage:
            raise ErpUnavailableError("connection refused: ERP is down")
        fault = self.plan[sku].pop(0) if self.plan[sku] else None
        if fault == "reset":
            raise ErpUnavailableError("connection reset by peer")
        if fault == "throttled":
            raise ErpThrottledError(THROTTLE_HINT)
        on_hand = sum(map(ord, sku)) % 50
        return StockReply(sku, on_hand, syncing=fault == "syncing")

    async def astock(self, sku: str) -> StockReply:
        """The same over an async client."""
        await asyncio.sleep(0.005)  # the network
        return self.stock(sku)


# -- the policy ------------------------------------------------------------------------------------


def transient(outcome: ir.Outcome) -> bool:
    """Retry dropped connections, throttling, and replies that are still syncing."""
    if outcome.failed:
        return isinstance(outcome.exception, (ErpUnavailableError, ErpThrottledError))
    reply = outcome.result
    return isinstance(reply, StockReply) and reply.syncing


# One budget for everything that talks to the ERP: retries may add at most 50 % to the
# calls, plus a reserve of 0.25 per second over a 30 s window (which outlasts the demo,
# so that its outcome does not depend on timing).
erp_budget = ir.RetryBudget(ratio=0.5, minimum_per_second=0.25, ttl=30.0)

erp_retry = ir.RetryPolicy(
    on=transient,
    attempts=4,
    timeout=2.0,
    backoff=ir.Backoff(initial=0.05, maximum=0.4, jitter="full"),
    budget=erp_budget,
    random=random.Random(SEED),  # seeded jitter: repeatable runs
    name="erp",
)


@erp_retry
def fetch_stock(erp: FakeErp, sku: str) -> StockReply:
    """Read one SKU's stock level, retried as ``erp_retry`` says."""
    return erp.stock(sku)


# -- the bot ---------------------------------------------------------------------------------------


@dataclass
class Stats:
    """What the listener saw."""

    decisions: Counter[str] = field(default_factory=Counter)
    slept: float = 0.0

    def __call__(self, event: ir.Event) -> None:
        if isinstance(event, ir.RetryEvent):
            self.decisions[event.decision.name] += 1
            if event.decision is ir.RetryDecision.RETRY:
                self.slept += event.delay


def describe(exc: BaseException) -> str:
    """The one-line reason a SKU could not be read this cycle."""
    if isinstance(exc, ir.RetryBudgetExhaustedError):
        return "still syncing; the retry budget is spent"
    if isinstance(exc, ir.RetriesExhaustedError):
        return f"still syncing after {exc.attempts} attempts"
    return f"{type(exc).__name__}: {exc}"


def sync_round(erp: FakeErp, skus: list[str], levels: dict[str, str]) -> BaseException | None:
    """Round 1: the decorated synchronous function, one SKU after another.

    Returns the last error the policy gave up on, if any.
    """
    last_error = None
    for sku in skus:
        try:
            levels[sku] = str(fetch_stock(erp, sku).on_hand)
        except (ErpUnavailableError, ErpThrottledError, ir.RetriesExhaustedError) as exc:
            levels[sku] = f"unknown ({describe(exc)})"
            last_error = exc
    return last_error


async def async_round(erp: FakeErp, skus: list[str], levels: dict[str, str]) -> None:
    """Round 2: the same policy on async code through ``acall``, all SKUs at once."""
    replies = await asyncio.gather(
        *(erp_retry.acall(erp.astock, sku) for sku in skus), return_exceptions=True
    )
    for sku, reply in zip(skus, replies, strict=True):
        if isinstance(reply, BaseException):
            levels[sku] = f"unknown ({describe(reply)})"
        else:
            levels[sku] = str(reply.on_hand)


def main() -> None:
    """Run the three rounds and print a summary."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(relativeCreated)6.0f ms  %(levelname)-7s %(message)s",
    )
    stats = Stats()
    detach_stats = ir.add_listener(stats)
    detach_logging = ir.add_listener(ir.LoggingListener(logging.getLogger("inventory-bot")))

    sync_skus = [f"SKU-{n}" for n in range(1001, 1009)]
    async_skus = [f"SKU-{n}" for n in range(2001, 2009)]
    outage_skus = [f"SKU-{n}" for n in range(3001, 3007)]
    erp = FakeErp(SEED, sync_skus + async_skus + outage_skus)
    levels: dict[str, str] = {}
    started = time.monotonic()
    try:
        print("round 1: synchronous @erp_retry", file=sys.stderr)
        sync_round(erp, sync_skus, levels)
        print("round 2: async acall, all at once", file=sys.stderr)
        asyncio.run(async_round(erp, async_skus, levels))
        print("round 3: the ERP goes down; the retry budget stops the storm", file=sys.stderr)
        erp.outage = True
        before = erp.requests
        last_error = sync_round(erp, outage_skus, levels)
        outage_requests = erp.requests - before
    finally:
        detach_logging()
        detach_stats()
    elapsed = time.monotonic() - started

    print(f"\n{'SKU':<10} stock level")
    for sku, level in levels.items():
        print(f"{sku:<10} {level}")
    read = sum(level.isdigit() for level in levels.values())
    print(
        f"\n{read} of {len(levels)} stock levels read with {erp.requests} ERP requests in {elapsed:.2f} s."
    )
    print(f"Delays between attempts: {stats.slept:.2f} s in all (round 2's overlapped).")
    print("Decisions: " + ", ".join(f"{n} × {name}" for name, n in stats.decisions.items()) + ".")
    print(
        f"During the outage, {len(outage_skus)} calls made {outage_requests} requests "
        f"instead of up to {len(outage_skus) * erp_retry.attempts}: the retry budget held."
    )
    if last_error is not None:
        # When a policy gives up, the original exception comes out with the history as a note.
        print(f"\nThe last error re-raised: {last_error!r}, with this note:")
        print("\n".join(getattr(last_error, "__notes__", [])))


if __name__ == "__main__":
    main()
