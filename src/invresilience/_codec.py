"""Codecs: how results and payloads become bytes, and the payload fingerprint.

No pickle: what is stored can be read by any process, any version, any language, and a
stored record cannot execute code when it is read back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from typing_extensions import final

from .exceptions import CodecError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["JsonCodec", "fingerprint"]


def _dumps(value: Any, default: Callable[[Any], Any] | None) -> str:
    return json.dumps(
        value,
        default=default,
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=True,
        separators=(",", ":"),
    )


@final
@attrs.frozen(kw_only=True)
class JsonCodec:
    """The default :class:`~invresilience.typing.Codec`: compact, sorted, UTF-8 JSON.

    JSON keeps only JSON's types: a tuple comes back as a list and a dict's keys as
    strings. For your own types, give *default* (turn a value into something JSON can
    hold) and *object_hook* (turn a decoded ``dict`` back), as ``json.dumps`` and
    ``json.loads`` take them. NaN and the infinities are refused.

    Args:
        default: Called for any value JSON cannot encode; returns an encodable stand-in.
        object_hook: Called with every decoded ``dict``; its return value replaces it.

    .. versionadded:: 0.1.0
    """

    default: Callable[[Any], Any] | None = None
    object_hook: Callable[[dict[str, Any]], Any] | None = None

    def encode(self, value: Any) -> bytes:
        """*value* as UTF-8 JSON.

        Raises:
            CodecError: *value* (or something inside it) cannot be encoded.
        """
        try:
            return _dumps(value, self.default).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise CodecError(f"JsonCodec cannot encode {_describe(value)}: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        """The value *data* encodes.

        Raises:
            CodecError: *data* is not UTF-8 JSON.
        """
        try:
            return json.loads(data, object_hook=self.object_hook)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CodecError(f"JsonCodec cannot decode {len(data)} bytes: {exc}") from exc


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"a {type(value).__qualname__} ({text})"


def fingerprint(args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None) -> str:
    """The fingerprint of a call's arguments: ``"sha256:"`` and the hex digest.

    The digest is over canonical JSON (sorted keys, no whitespace, UTF-8) of
    ``{"args": [...], "kwargs": {...}}``, so equal arguments give equal fingerprints in
    every process and on every Python version. Keyword order does not matter; ``1``
    and ``"1"`` differ.

    Raises:
        CodecError: An argument is not JSON: give the fingerprint explicitly.

    .. versionadded:: 0.1.0
    """
    payload = {"args": list(args), "kwargs": dict(kwargs or {})}
    try:
        text = _dumps(payload, None)
    except (TypeError, ValueError, RecursionError) as exc:
        raise CodecError(
            f"cannot fingerprint the arguments ({exc}); pass a fingerprint= function "
            "or fingerprint the payload yourself"
        ) from exc
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
