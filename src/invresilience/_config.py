"""Validators shared by the configuration classes.

Every rejection is a :class:`~invresilience.exceptions.ConfigurationError` naming the
field (``"Backoff.maximum"``) and the value, raised at construction.
"""

from __future__ import annotations

import datetime
import math
from typing import TYPE_CHECKING, Any

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    import attrs

__all__ = [
    "duration",
    "field_name",
    "integer",
    "number",
    "optional_duration",
    "optional_seconds",
    "seconds",
]


def field_name(instance: object, attribute: attrs.Attribute[Any]) -> str:
    """``"ClassName.field"`` as users spell it (without the leading underscore attrs strips)."""
    return f"{type(instance).__name__}.{attribute.alias or attribute.name}"


def seconds(value: float | datetime.timedelta) -> float:
    """Convert a :class:`datetime.timedelta` to float seconds; leave anything else for the validator."""
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def optional_seconds(value: float | datetime.timedelta | None) -> float | None:
    """:func:`seconds`, letting ``None`` (no limit) through."""
    return None if value is None else seconds(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def duration(*, positive: bool = False) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator for a finite duration in seconds, ``>= 0`` (or ``> 0``)."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        name = field_name(instance, attribute)
        if not _is_number(value):
            raise ConfigurationError(name, value, "must be a number of seconds or a timedelta")
        if not math.isfinite(value):
            raise ConfigurationError(name, value, "must be finite")
        if positive and value <= 0:
            raise ConfigurationError(name, value, "must be > 0")
        if value < 0:
            raise ConfigurationError(name, value, "must be >= 0")

    return check


def optional_duration(
    *, positive: bool = False
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """Like :func:`duration`, but ``None`` (no limit) is allowed."""
    inner = duration(positive=positive)

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            inner(instance, attribute, value)

    return check


def integer(*, minimum: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator for an ``int`` (not ``bool``) of at least *minimum*."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        name = field_name(instance, attribute)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigurationError(name, value, "must be an int")
        if value < minimum:
            raise ConfigurationError(name, value, f"must be >= {minimum}")

    return check


def number(
    *, minimum: float, inclusive: bool = True
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """An attrs validator for a finite real number above *minimum*."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        name = field_name(instance, attribute)
        if not _is_number(value) or not math.isfinite(value):
            raise ConfigurationError(name, value, "must be a finite number")
        if value < minimum or (not inclusive and value == minimum):
            raise ConfigurationError(name, value, f"must be {'>=' if inclusive else '>'} {minimum}")

    return check
