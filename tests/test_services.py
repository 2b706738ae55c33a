"""The real-service fixtures: they reach the servers, and skip or fail without them."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import psycopg
import pytest
import redis

from tests.services import (
    AMQP,
    POSTGRES,
    REDIS,
    REQUIRE_ENV,
    probe_amqp,
    probe_postgres,
    probe_redis,
    redact,
)

if TYPE_CHECKING:
    from tests.services import Service

# A port nothing listens on: connecting is refused at once.
UNREACHABLE = {
    "postgres_url": ("INVRES_POSTGRES_URL", "postgresql://postgres@127.0.0.1:1/test"),
    "redis_url": ("INVRES_REDIS_URL", "redis://127.0.0.1:1/0"),
    "amqp_url": ("INVRES_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2F"),
}


def test_postgres_url_runs_queries(postgres_url: str) -> None:
    """postgres_url names a PostgreSQL server that runs queries in the named database."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute("SELECT current_database(), %s::int + 1", (41,)).fetchone()

    assert (unquote(urlsplit(postgres_url).path.lstrip("/")), 42) == row


def test_postgres_probe_works_without_a_driver(postgres_url: str) -> None:
    """The raw-protocol PostgreSQL probe runs SELECT 1 and reads the server version."""
    version = probe_postgres(postgres_url, use_driver=False)

    assert version[0].isdigit()
    assert version == probe_postgres(postgres_url)


def test_redis_url_stores_and_returns_values(redis_url: str) -> None:
    """redis_url names a Redis server that stores and returns a value."""
    key = f"invresilience-test:{uuid.uuid4()}"
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(key, b"stored", px=10_000)

        assert b"stored" == client.get(key)
        assert "PONG" == probe_redis(redis_url)
    finally:
        client.delete(key)
        client.close()


def test_amqp_url_speaks_amqp_0_9_1(amqp_url: str) -> None:
    """amqp_url names an AMQP 0-9-1 server that offers PLAIN authentication."""
    server = probe_amqp(amqp_url)

    assert (0, 9) == server.version
    assert "PLAIN" in server.mechanisms


@pytest.mark.parametrize(
    ("service", "default"),
    [
        (POSTGRES, "postgresql://postgres@127.0.0.1:5432/test"),
        (REDIS, "redis://127.0.0.1:6379/0"),
        (AMQP, "amqp://guest:guest@127.0.0.1:5672/%2F"),
    ],
)
def test_service_url_defaults_to_local_server(
    service: Service, default: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without its variable, a service's URL is the local server's."""
    monkeypatch.delenv(service.env, raising=False)

    assert default == service.url()


def test_redact_hides_passwords_only() -> None:
    """redact() replaces a URL's password and leaves other URLs alone."""
    assert "amqp://guest:***@127.0.0.1:5672/%2F" == redact("amqp://guest:guest@127.0.0.1:5672/%2F")
    assert "redis://:***@h:6379/0" == redact("redis://:s3cret@h:6379/0")
    assert "redis://127.0.0.1:6379/0" == redact("redis://127.0.0.1:6379/0")


@pytest.mark.parametrize("fixture", sorted(UNREACHABLE))
@pytest.mark.parametrize("required", [False, True], ids=["optional", "required"])
def test_unreachable_service_skips_or_fails(
    fixture: str, required: bool, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreachable server skips its tests, or errors them under INVRES_REQUIRE_SERVICES=1."""
    env, url = UNREACHABLE[fixture]
    monkeypatch.setenv(env, url)
    if required:
        monkeypatch.setenv(REQUIRE_ENV, "1")
    else:
        monkeypatch.delenv(REQUIRE_ENV, raising=False)
    pytester.makeconftest('pytest_plugins = ["tests.services"]')
    pytester.makepyfile(
        f"""
        def test_first({fixture}):
            raise AssertionError("must not run")

        def test_second({fixture}):
            raise AssertionError("must not run")

        def test_without_services():
            pass
        """
    )

    result = pytester.runpytest("-rsE", "-p", "no:cacheprovider")

    shown = redact(url)
    if required:
        result.assert_outcomes(passed=1, errors=2)
        result.stdout.fnmatch_lines([f"* at {shown} is unreachable*{REQUIRE_ENV}=1*"] * 2)
    else:
        result.assert_outcomes(passed=1, skipped=2)
        result.stdout.fnmatch_lines([f"SKIPPED *{shown} is unreachable*"] * 2)


def test_service_tests_are_marked(pytester: pytest.Pytester) -> None:
    """Tests using a service fixture get the services marker, so -m can deselect them."""
    pytester.makeconftest('pytest_plugins = ["tests.services"]')
    pytester.makepyfile(
        """
        def test_needs_redis(redis_url):
            pass

        def test_plain():
            pass
        """
    )

    result = pytester.runpytest("-m", "not services", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1, deselected=1)
