"""``open_backend(url)``: one URL names the storage every capability uses."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from ..typing import Backend

__all__ = ["SCHEMES", "open_backend"]

#: Each URL scheme, with the module, the class and the extra that installs its driver.
SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("memory", "MemoryBackend", None),
    "sqlite": ("sqlite", "SqliteBackend", None),
    "redis": ("redis", "RedisBackend", "redis"),
    "rediss": ("redis", "RedisBackend", "redis"),
    "postgresql": ("postgres", "PostgresBackend", "postgres"),
    "postgres": ("postgres", "PostgresBackend", "postgres"),
}

# The driver each extra installs, by the top-level module name an ImportError reports.
_DRIVERS = {"redis": "redis", "psycopg": "postgres", "psycopg_binary": "postgres"}


def open_backend(url: str) -> Backend:
    """Open the backend a URL names.

    ============================== ===================================================
    ``memory://``                  this process's memory (tests, one-off tools)
    ``sqlite:///state.db``         a SQLite file, relative (``sqlite:////abs/path.db``
                                   for an absolute path); the embedded default
    ``redis://host:6379/0``        Redis (``rediss://`` for TLS); extra ``[redis]``
    ``postgresql://user@host/db``  PostgreSQL (``postgres://`` too); extra ``[postgres]``
    ============================== ===================================================

    The backend's factories (``idempotency_store()``, ``async_idempotency_store()``,
    and others where the technology serves them) hand out stores sharing its
    connections; close the backend (or use it in a ``with`` block) when done.

    Raises:
        ConfigurationError: The URL is not a string, or its scheme is not one of these
            (the message lists them), or the backend refuses its options.
        ImportError: The driver is not installed; the message names the extra to install.

    .. versionadded:: 0.1.0
    """
    if not isinstance(url, str):
        raise ConfigurationError("url", url, "must be a str such as 'sqlite:///state.db'")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        # Never echo it: an unparsable URL may still hold a password.
        raise ConfigurationError("url", "<unparsable URL>", "is not a URL") from None
    entry = SCHEMES.get(scheme)
    if entry is None:
        supported = ", ".join(f"{name}://" for name in SCHEMES)
        raise ConfigurationError(
            "url", _redact(url), f"has an unknown scheme {scheme!r}; supported: {supported}"
        )
    module_name, class_name, extra = entry
    try:
        module = importlib.import_module(f"{__package__}.{module_name}")
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if extra is None or missing not in _DRIVERS:
            raise
        raise ImportError(
            f'{scheme}:// needs the {missing} driver: pip install "invresilience[{extra}]"',
            name=exc.name,
        ) from exc
    backend_class: Any = getattr(module, class_name)
    backend: Backend = backend_class.from_url(url)
    return backend


def _redact(url: str) -> str:
    """*url* with its password, if any, replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
