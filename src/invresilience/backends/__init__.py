"""Storage backends, one module per technology.

- :mod:`invresilience.backends.memory` -- in-process reference implementations.
- :mod:`invresilience.backends.sqlite` -- a SQLite file, the embedded default.
- :mod:`invresilience.backends.redis` -- Redis through redis-py (extra ``[redis]``).
- :mod:`invresilience.backends.postgres` -- PostgreSQL through psycopg 3 (extra ``[postgres]``).

:func:`~invresilience.open_backend` opens any of them from a URL. Driver modules are imported only
when their backend is opened.

Every store satisfies a Protocol of :mod:`invresilience.typing` and passes the matching
suite of :mod:`invresilience.contract`.

.. versionadded:: 0.1.0
"""

from ._url import SCHEMES, open_backend

__all__ = ["SCHEMES", "open_backend"]
