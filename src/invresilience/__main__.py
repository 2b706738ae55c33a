"""``python -m invresilience``: the command line (see :mod:`invresilience._cli`).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
