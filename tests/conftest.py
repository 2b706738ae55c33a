"""Shared test configuration: Hypothesis profiles and the real-service fixtures.

Hypothesis profiles (choose with ``HYPOTHESIS_PROFILE``; ``ci`` when ``CI`` is set,
``default`` otherwise):

- ``default``: 100 examples per test.
- ``ci``: 200 examples per test, and no ``too_slow`` health check.
- ``dev``: 20 examples per test, for a quick edit-test loop.

No profile has a deadline: the machines are shared and noisy, and a test that
depends on timing is a bug anyway (time comes from ``ManualClock``).

The fixtures ``postgres_url``, ``redis_url`` and ``amqp_url`` live in
``tests/services.py``; the private, restartable servers (``private_redis``,
``private_postgres``) in ``tests/servers.py``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester", "tests.services", "tests.servers"]

settings.register_profile("default", deadline=None)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=20, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default")
)
