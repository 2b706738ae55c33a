"""What processing one job came to: the outcomes a job handler returns.

Pure values, shared by :mod:`invresilience._jobs` (which returns them) and
:mod:`invresilience._dlq` (whose redrive reads them).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import attrs
from typing_extensions import final

from .dlq import Reason

__all__ = ["DeadLettered", "Done", "JobOutcome", "Replayed", "RetryLater"]


@final
@attrs.frozen
class Done:
    """The job ran and its result was recorded: acknowledge it.

    Attributes:
        result: What the handler returned.

    .. versionadded:: 0.1.0
    """

    result: Any = None

    @property
    def ack(self) -> bool:
        """Always ``True``: the broker may forget the job."""
        return True


@final
@attrs.frozen
class Replayed:
    """The job's key was already done: nothing ran, the stored result was read back.

    Attributes:
        result: The stored result, decoded (the stored bytes, if the codec cannot
            decode them any more).

    .. versionadded:: 0.1.0
    """

    result: Any = None

    @property
    def ack(self) -> bool:
        """Always ``True``: the broker may forget the job."""
        return True


@final
@attrs.frozen
class RetryLater:
    """The job failed in a way worth retrying: have the broker deliver it again later.

    Attributes:
        delay: Seconds to wait before redelivering (from the handler's backoff, or the
            ``retry_after`` of a rejection).
        error: The exception that failed this delivery.

    .. versionadded:: 0.1.0
    """

    delay: float
    error: BaseException | None = attrs.field(default=None, eq=False)

    @property
    def ack(self) -> bool:
        """Always ``False``: the broker must deliver the job again (after :attr:`delay`)."""
        return False


@final
@attrs.frozen
class DeadLettered:
    """The job is in the dead-letter queue: acknowledge it.

    Attributes:
        reason: Why (a :data:`~invresilience.typing.Reason`).
        letter_id: The letter's id in the dead-letter queue.
        error: The exception that sent it there, if any.
        duplicate: ``True`` when the job had been dead-lettered already by an earlier
            delivery, and this one was only recognised.

    .. versionadded:: 0.1.0
    """

    reason: Reason
    letter_id: str | None = None
    error: BaseException | None = attrs.field(default=None, eq=False)
    duplicate: bool = False

    @property
    def ack(self) -> bool:
        """Always ``True``: the job is safe in the dead-letter queue."""
        return True


JobOutcome: TypeAlias = Done | Replayed | RetryLater | DeadLettered
"""What :meth:`JobHandler.process <invresilience.JobHandler.process>` came to.

Match on it (``match outcome: case RetryLater(delay=d): ...``) or read ``outcome.ack``.

.. versionadded:: 0.1.0
"""
