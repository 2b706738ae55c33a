"""Fixtures for tests that need a real PostgreSQL, Redis or RabbitMQ server.

Each fixture (``postgres_url``, ``redis_url``, ``amqp_url``) is session-scoped and
yields the server's URL as a ``str``, read from an environment variable:

=================  ===========================  ===================================
fixture            variable                     default
=================  ===========================  ===================================
``postgres_url``   ``INVRES_POSTGRES_URL``      ``postgresql://postgres@127.0.0.1:5432/test``
``redis_url``      ``INVRES_REDIS_URL``         ``redis://127.0.0.1:6379/0``
``amqp_url``       ``INVRES_AMQP_URL``          ``amqp://guest:guest@127.0.0.1:5672/%2F``
=================  ===========================  ===================================

Before handing out the URL, the fixture checks that the server really answers, with
its own protocol and no driver needed (psycopg is used for PostgreSQL when it is
installed): Redis must answer ``PING`` with ``+PONG``, PostgreSQL must run
``SELECT 1`` and RabbitMQ must answer the AMQP 0-9-1 header with ``Connection.Start``.
Each check has a 2 s timeout and runs once per test session (pytest caches a
session-scoped fixture's result, a skip or a failure included).

A server that does not answer skips the tests that need it, with a reason naming
the URL and the error; with ``INVRES_REQUIRE_SERVICES=1`` (as ``.ci/run`` sets) they
fail instead. Tests using these fixtures get the ``services`` marker, so
``pytest -m "not services"`` runs everything else.

This module is a pytest plugin, loaded by ``tests/conftest.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import ssl
import struct
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote, urlsplit

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "AMQP",
    "POSTGRES",
    "REDIS",
    "REQUIRE_ENV",
    "TIMEOUT",
    "AMQPServer",
    "Service",
    "ServiceUnavailableError",
    "amqp_url",
    "postgres_url",
    "probe_amqp",
    "probe_postgres",
    "probe_redis",
    "redact",
    "redis_prefix",
    "redis_url",
    "require",
    "services_required",
]

#: Set to ``1`` to turn "service unreachable" skips into failures.
REQUIRE_ENV = "INVRES_REQUIRE_SERVICES"
#: Seconds allowed for connecting to a server and for each read from it.
TIMEOUT = 2.0


class ServiceUnavailableError(Exception):
    """The server did not answer as it should."""


@dataclasses.dataclass(frozen=True)
class AMQPServer:
    """What an AMQP server said in its ``Connection.Start``."""

    version: tuple[int, int]
    mechanisms: tuple[str, ...]
    locales: tuple[str, ...]


def redact(url: str) -> str:
    """Return *url* with its password, if any, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()


def services_required() -> bool:
    """Whether ``INVRES_REQUIRE_SERVICES`` asks for failures instead of skips."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


# -- plumbing ---------------------------------------------------------------------------------


def _connect(parts: SplitResult, default_port: int, *, tls: bool) -> socket.socket:
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    if tls:
        context = ssl.create_default_context()
        return context.wrap_socket(sock, server_hostname=host)
    return sock


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            msg = f"connection closed by the server after {len(data)} of {size} bytes"
            raise ServiceUnavailableError(msg)
        data += chunk
    return bytes(data)


def _recv_line(sock: socket.socket) -> bytes:
    line = bytearray()
    while not line.endswith(b"\r\n"):
        line += _recv_exactly(sock, 1)
        if len(line) > 64 * 1024:
            msg = "reply line too long"
            raise ServiceUnavailableError(msg)
    return bytes(line[:-2])


# -- Redis ------------------------------------------------------------------------------------


def _resp_command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def probe_redis(url: str) -> str:
    """Check that Redis at *url* answers ``PING``; return its reply (``"PONG"``).

    Sends ``AUTH`` first when the URL has a password, and ``SELECT`` for a database
    other than 0, so a wrong password or database is reported too.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"}:
        msg = f"expected a redis:// or rediss:// URL, got {parts.scheme}://"
        raise ServiceUnavailableError(msg)
    commands: list[tuple[str, ...]] = []
    if parts.password is not None:
        password = unquote(parts.password)
        username = unquote(parts.username or "")
        commands.append(("AUTH", username, password) if username else ("AUTH", password))
    database = parts.path.strip("/") or "0"
    if database != "0":
        commands.append(("SELECT", database))
    with _connect(parts, 6379, tls=parts.scheme == "rediss") as sock:
        for command in commands:
            sock.sendall(_resp_command(*command))
            reply = _recv_line(sock)
            if reply != b"+OK":
                msg = f"{command[0]} answered {reply.decode(errors='replace')!r}"
                raise ServiceUnavailableError(msg)
        sock.sendall(b"PING\r\n")
        reply = _recv_line(sock)
    if reply != b"+PONG":
        msg = f"PING answered {reply.decode(errors='replace')!r}, not '+PONG'"
        raise ServiceUnavailableError(msg)
    return reply[1:].decode()


# -- PostgreSQL -------------------------------------------------------------------------------


def probe_postgres(url: str, *, use_driver: bool = True) -> str:
    """Check that PostgreSQL at *url* runs ``SELECT 1``; return the server version.

    Uses psycopg when it is installed and *use_driver* is true, otherwise speaks the
    frontend/backend protocol (version 3) over a plain socket, with trust, password
    or MD5 authentication.
    """
    if use_driver:
        try:
            import psycopg  # optional: the raw protocol below needs no driver
        except ImportError:
            pass
        else:
            try:
                with psycopg.connect(url, connect_timeout=int(TIMEOUT), autocommit=True) as conn:
                    row = conn.execute("SELECT 1").fetchone()
                    version = conn.info.parameter_status("server_version") or "?"
            except psycopg.Error as exc:
                raise ServiceUnavailableError(str(exc).strip()) from exc
            if row != (1,):
                msg = f"SELECT 1 returned {row!r}"
                raise ServiceUnavailableError(msg)
            return version
    return _probe_postgres_raw(url)


def _pg_message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _pg_error(body: bytes) -> str:
    fields = {f[:1]: f[1:].decode(errors="replace") for f in body.split(b"\0") if f}
    return f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', 'unknown error')}"


def _probe_postgres_raw(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        msg = f"expected a postgresql:// URL, got {parts.scheme}://"
        raise ServiceUnavailableError(msg)
    user = unquote(parts.username or "postgres")
    password = unquote(parts.password or "")
    database = unquote(parts.path.lstrip("/")) or user
    params = b"".join(
        key + b"\0" + value.encode() + b"\0"
        for key, value in (
            (b"user", user),
            (b"database", database),
            (b"application_name", "invresilience-tests"),
        )
    )
    startup = struct.pack("!ii", 8 + len(params) + 1, 196608) + params + b"\0"
    version = "?"
    with _connect(parts, 5432, tls=False) as sock:
        sock.sendall(startup)
        queried = False
        while True:
            kind = _recv_exactly(sock, 1)
            (length,) = struct.unpack("!i", _recv_exactly(sock, 4))
            body = _recv_exactly(sock, length - 4)
            if kind == b"E":
                raise ServiceUnavailableError(_pg_error(body))
            if kind == b"R":
                _pg_authenticate(sock, body, user, password)
            elif kind == b"S":
                name, value, _ = body.split(b"\0", 2)
                if name == b"server_version":
                    version = value.decode()
            elif kind == b"D":
                (columns,) = struct.unpack("!h", body[:2])
                (size,) = struct.unpack("!i", body[2:6])
                if columns != 1 or body[6 : 6 + size] != b"1":
                    msg = f"SELECT 1 returned {body!r}"
                    raise ServiceUnavailableError(msg)
                queried = True
            elif kind == b"Z":
                if queried:
                    break
                sock.sendall(_pg_message(b"Q", b"SELECT 1\0"))
        sock.sendall(_pg_message(b"X", b""))
    return version


def _pg_authenticate(sock: socket.socket, body: bytes, user: str, password: str) -> None:
    (code,) = struct.unpack("!i", body[:4])
    if code == 0:  # AuthenticationOk
        return
    if code == 3:  # AuthenticationCleartextPassword
        sock.sendall(_pg_message(b"p", password.encode() + b"\0"))
        return
    if code == 5:  # AuthenticationMD5Password
        inner = hashlib.md5((password + user).encode()).hexdigest().encode()  # the protocol's hash
        outer = hashlib.md5(inner + body[4:8]).hexdigest()
        sock.sendall(_pg_message(b"p", f"md5{outer}\0".encode()))
        return
    msg = f"authentication method {code} needs psycopg (pip install psycopg[binary])"
    raise ServiceUnavailableError(msg)


# -- AMQP -------------------------------------------------------------------------------------

_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
_FRAME_METHOD = 1
_FRAME_END = 0xCE


def _amqp_longstr(payload: bytes, offset: int) -> tuple[bytes, int]:
    (size,) = struct.unpack_from("!I", payload, offset)
    start = offset + 4
    return payload[start : start + size], start + size


def probe_amqp(url: str) -> AMQPServer:
    """Check that *url* is an AMQP 0-9-1 server answering with ``Connection.Start``."""
    parts = urlsplit(url)
    if parts.scheme not in {"amqp", "amqps"}:
        msg = f"expected an amqp:// or amqps:// URL, got {parts.scheme}://"
        raise ServiceUnavailableError(msg)
    tls = parts.scheme == "amqps"
    with _connect(parts, 5671 if tls else 5672, tls=tls) as sock:
        sock.sendall(_AMQP_HEADER)
        header = _recv_exactly(sock, 7)
        if header.startswith(b"AMQP"):
            # The server refused our protocol version and named its own.
            msg = f"server wants protocol {header + _recv_exactly(sock, 1)!r}"
            raise ServiceUnavailableError(msg)
        frame_type, channel, size = struct.unpack("!BHI", header)
        if frame_type != _FRAME_METHOD or channel != 0 or size > 1 << 20:
            msg = f"expected a method frame on channel 0, got type {frame_type} channel {channel}"
            raise ServiceUnavailableError(msg)
        payload = _recv_exactly(sock, size)
        frame_end = _recv_exactly(sock, 1)
    class_id, method_id, major, minor = struct.unpack_from("!HHBB", payload)
    if (class_id, method_id) != (10, 10) or frame_end[0] != _FRAME_END:
        msg = f"expected Connection.Start (10, 10), got ({class_id}, {method_id})"
        raise ServiceUnavailableError(msg)
    (table_size,) = struct.unpack_from("!I", payload, 6)
    mechanisms, offset = _amqp_longstr(payload, 10 + table_size)
    locales, _ = _amqp_longstr(payload, offset)
    return AMQPServer(
        version=(major, minor),
        mechanisms=tuple(mechanisms.decode().split()),
        locales=tuple(locales.decode().split()),
    )


# -- the fixtures -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Service:
    """A server that tests may need, and how to check it answers."""

    name: str
    env: str
    default: str
    probe: Callable[[str], object]

    def url(self) -> str:
        """The URL from the environment, or the local default."""
        return os.environ.get(self.env) or self.default


POSTGRES = Service(
    "PostgreSQL", "INVRES_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test", probe_postgres
)
REDIS = Service("Redis", "INVRES_REDIS_URL", "redis://127.0.0.1:6379/0", probe_redis)
AMQP = Service("RabbitMQ", "INVRES_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F", probe_amqp)


def require(service: Service) -> str:
    """Return *service*'s URL if it answers; skip the test (or fail it) if not."""
    url = service.url()
    try:
        service.probe(url)
    except (OSError, ServiceUnavailableError, struct.error) as exc:
        error = " ".join(str(exc).split()) or type(exc).__name__
    else:
        return url
    # Outside the except block, so the report is one line and not a chained traceback.
    reason = f"{service.name} at {redact(url)} is unreachable ({error}); set {service.env}"
    if services_required():
        pytest.fail(f"{reason}. {REQUIRE_ENV}=1 makes this a failure.", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a PostgreSQL server that answered ``SELECT 1``."""
    return require(POSTGRES)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a Redis server that answered ``PING``."""
    return require(REDIS)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own, whose keys are deleted afterwards."""
    import uuid

    import redis

    prefix = f"invresilience-test:{uuid.uuid4().hex}"
    yield prefix
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """URL of an AMQP 0-9-1 server (RabbitMQ) that answered ``Connection.Start``."""
    return require(AMQP)


_SERVICE_FIXTURES = frozenset({"postgres_url", "redis_url", "amqp_url"})


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``services`` marker, for runs that do not read pyproject.toml."""
    config.addinivalue_line("markers", "services: needs a real PostgreSQL, Redis or RabbitMQ")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a service fixture with ``services``."""
    for item in items:
        if _SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)
