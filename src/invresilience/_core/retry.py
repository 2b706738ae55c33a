"""The per-call retry state machine.

One :class:`RetryRun` lives for one retried call and is created only when the first
attempt fails, so a call that succeeds at once never builds one.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from random import Random

__all__ = ["RetryDecision", "RetryRun"]


class RetryDecision(enum.Enum):
    """What was decided after an attempt.

    .. versionadded:: 0.1.0
    """

    #: The attempt succeeded (its exception or result was not retryable because there was none).
    SUCCESS = "success"
    #: The attempt failed retryably and another attempt will follow after the delay.
    RETRY = "retry"
    #: The attempt failed with an outcome the policy does not retry.
    NOT_RETRYABLE = "not_retryable"
    #: The attempt failed retryably, but it was the last attempt allowed.
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    #: The attempt failed retryably, but the delay would end at or past the deadline.
    DEADLINE_EXCEEDED = "deadline_exceeded"
    #: The attempt failed retryably, but the shared retry budget is spent.
    BUDGET_EXHAUSTED = "budget_exhausted"


# Enum member lookup goes through the metaclass (~80 ns on 3.11); the hot paths use these.
SUCCESS = RetryDecision.SUCCESS
RETRY = RetryDecision.RETRY
NOT_RETRYABLE = RetryDecision.NOT_RETRYABLE
ATTEMPTS_EXHAUSTED = RetryDecision.ATTEMPTS_EXHAUSTED
DEADLINE_EXCEEDED = RetryDecision.DEADLINE_EXCEEDED
BUDGET_EXHAUSTED = RetryDecision.BUDGET_EXHAUSTED

_REASONS = {
    RetryDecision.NOT_RETRYABLE: "not retryable",
    RetryDecision.ATTEMPTS_EXHAUSTED: "attempts exhausted",
    RetryDecision.DEADLINE_EXCEEDED: "the next attempt could not start before the deadline",
    RetryDecision.BUDGET_EXHAUSTED: "the retry budget is exhausted",
}

#: How many failed attempts a give-up note lists in full at each end.
_NOTE_EDGE = 5


class RetryRun:
    """The state of one retried call, from its first failure to its end.

    Args:
        start: ``now`` when the first attempt started.
        deadline: Monotonic time by which every sleep and attempt must have started, or
            ``None`` for no deadline.
        max_attempts: Total attempts allowed, the first included.
        backoff: ``backoff(attempt, previous_delay, rng) -> delay``.
        rng: The random source for the backoff's jitter.
        spend: Withdraws one retry from a budget; ``False`` when it is spent.
        wait: Whether delays will really be slept (``False`` under ``testing()``), which
            decides whether a delay counts against the deadline.
    """

    __slots__ = (
        "attempt",
        "backoff",
        "deadline",
        "history",
        "max_attempts",
        "previous_delay",
        "rng",
        "spend",
        "start",
        "wait",
    )

    def __init__(
        self,
        start: float,
        deadline: float | None,
        max_attempts: int,
        backoff: Callable[[int, float | None, Random], float],
        rng: Random,
        spend: Callable[[], bool] | None = None,
        wait: bool = True,
    ) -> None:
        self.start = start
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.rng = rng
        self.spend = spend
        self.wait = wait
        #: The number of the attempt that is running or has just finished (1-based).
        self.attempt = 1
        self.previous_delay: float | None = None
        #: ``(attempt, elapsed, outcome, decision, delay)`` for every failed attempt.
        self.history: list[tuple[int, float, object, RetryDecision, float]] = []

    def decide(
        self, retryable: bool, outcome: object, now: float, hint: float | None
    ) -> tuple[RetryDecision, float]:
        """Decide after a failed attempt, and move to the next attempt if retrying.

        Args:
            retryable: Whether the policy classifies the outcome as retryable.
            outcome: The exception or result, kept for the history note.
            now: The current monotonic time.
            hint: A ``Retry-After`` delay in seconds to use instead of the backoff.

        Returns:
            The decision and the delay in seconds (``0.0`` unless retrying, or the delay
            that was refused when the deadline or the budget stopped it).
        """
        delay = 0.0
        if not retryable:
            decision = NOT_RETRYABLE
        elif self.attempt >= self.max_attempts:
            decision = ATTEMPTS_EXHAUSTED
        else:
            if hint is not None:
                delay = hint if hint > 0.0 else 0.0
            else:
                delay = self.backoff(self.attempt, self.previous_delay, self.rng)
            if self.deadline is not None and now + (delay if self.wait else 0.0) >= self.deadline:
                decision = DEADLINE_EXCEEDED
            elif self.spend is not None and not self.spend():
                decision = BUDGET_EXHAUSTED
            else:
                decision = RETRY
        self.history.append((self.attempt, now - self.start, outcome, decision, delay))
        if decision is RETRY:
            self.previous_delay = delay
            self.attempt += 1
        return decision, delay

    def note(self, target: str, now: float) -> str:
        """The attempt history, for the note added to the exception that is re-raised."""
        decision = self.history[-1][3] if self.history else RetryDecision.NOT_RETRYABLE
        lines = [
            (
                f"invresilience: {target} gave up after {self.attempt} attempt"
                f"{'' if self.attempt == 1 else 's'} in {now - self.start:.3f} s: "
                f"{_REASONS.get(decision, decision.value)}"
            )
        ]
        history = self.history
        if len(history) > 2 * _NOTE_EDGE:
            skipped = len(history) - 2 * _NOTE_EDGE
            shown: list[Any] = [*history[:_NOTE_EDGE], None, *history[-_NOTE_EDGE:]]
        else:
            skipped, shown = 0, list(history)
        for entry in shown:
            if entry is None:
                lines.append(f"  ... {skipped} more attempts ...")
                continue
            attempt, elapsed, outcome, step, delay = entry
            then = (
                f"retried after {delay:.3f} s"
                if step is RetryDecision.RETRY
                else _REASONS.get(step, step.value)
            )
            lines.append(f"  attempt {attempt} at +{elapsed:.3f} s: {_describe(outcome)}; {then}")
        return "\n".join(lines)


def _describe(outcome: object) -> str:
    if isinstance(outcome, BaseException):
        text = f"{type(outcome).__qualname__}: {outcome}"
    else:
        text = f"returned {outcome!r}"
    return text if len(text) <= 200 else text[:197] + "..."
