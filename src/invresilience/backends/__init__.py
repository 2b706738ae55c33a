"""Storage backends, one module per technology.

- :mod:`invresilience.backends.memory` -- in-process reference implementations.
- :mod:`invresilience.backends.redis` -- Redis through redis-py (extra ``[redis]``).

Every store satisfies a Protocol of :mod:`invresilience.typing` and passes the matching
suite of :mod:`invresilience.contract`.

.. versionadded:: 0.1.0
"""
