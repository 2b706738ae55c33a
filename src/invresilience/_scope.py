"""Context-local state shared by the shells: the active deadline and the testing scope."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from .typing import Clock

__all__ = ["DEADLINE", "TESTING", "TestingScope"]


@attrs.frozen
class TestingScope:
    """What :func:`invresilience.testing.testing` changes inside its block."""

    attempts: int | None
    wait: bool


#: ``(clock, deadline)`` of the innermost retried call running in this context: nested
#: retried calls on the same clock share it instead of each starting a fresh deadline.
DEADLINE: contextvars.ContextVar[tuple[Clock, float] | None] = contextvars.ContextVar(
    "invresilience_deadline", default=None
)

TESTING: contextvars.ContextVar[TestingScope | None] = contextvars.ContextVar(
    "invresilience_testing", default=None
)
