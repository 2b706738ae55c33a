"""Private Redis and PostgreSQL servers that a test may stop, kill and start again.

The system servers of ``tests/services.py`` are shared by every test; a test that takes a
server down needs one of its own. These run on a free port of 127.0.0.1 from binaries on
this machine, and are gone when the test ends:

- :class:`PrivateRedis` runs ``redis-server``. Without a *directory* it keeps nothing on
  disk (``--save "" --appendonly no``): a restart starts empty. With one it writes an
  append-only file there, synced on every write (``--appendonly yes --appendfsync
  always``), so that even after :meth:`PrivateRedis.kill` a restart finds every write
  that was acknowledged.
- :class:`PrivatePostgres` runs a cluster made by ``initdb`` in a directory of its own,
  through ``pg_ctl``; its data survives :meth:`PrivatePostgres.stop` (``-m fast``) and
  :meth:`PrivatePostgres.kill` (``-m immediate``: crash recovery on the next start). As
  root, the binaries run as the ``postgres`` user through ``runuser``.

The fixtures ``private_redis`` (no persistence), ``private_redis_persistent`` and
``private_postgres`` skip a test when the binaries are missing, or fail it under
``INVRES_REQUIRE_SERVICES=1``, like the fixtures of ``tests/services.py``. Import the
fixtures you use into the test module.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests.services import REQUIRE_ENV, probe_postgres, probe_redis, services_required

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = [
    "PrivatePostgres",
    "PrivateRedis",
    "free_port",
    "private_postgres",
    "private_redis",
    "private_redis_persistent",
]

#: Seconds a server may take to start answering.
START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unavailable(message: str) -> NoReturn:
    if services_required():
        pytest.fail(f"{message}. {REQUIRE_ENV}=1 makes this a failure.", pytrace=False)
    pytest.skip(message)


def _wait_until_answering(probe: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            probe()
        except Exception as exc:
            if time.monotonic() > deadline:
                msg = f"{what} did not answer within {START_TIMEOUT} s: {exc}"
                raise RuntimeError(msg) from exc
            time.sleep(0.02)
        else:
            return


# -- Redis ------------------------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of our own, on a free port, that the test may stop and restart.

    Args:
        binary: The ``redis-server`` executable.
        directory: Where to keep an append-only file synced on every write, so the data
            survives a restart (even after :meth:`kill`); ``None`` keeps nothing.
    """

    def __init__(self, binary: str, directory: Path | None = None) -> None:
        self.port = free_port()
        self.binary = binary
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def _arguments(self) -> list[str]:
        arguments = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.directory is None:
            return [*arguments, "--appendonly", "no"]
        return [
            *arguments,
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]

    def start(self) -> None:
        """Start the server and wait until it answers ``PING``."""
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            self._arguments(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_until_answering(lambda: probe_redis(self.url), f"redis-server on port {self.port}")

    def stop(self) -> None:
        """Stop the server with SIGTERM (a clean shutdown) and wait for it to exit."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        self._end(signal.SIGKILL)

    def _end(self, signum: signal.Signals) -> None:
        assert self.process is not None, "not running"
        self.process.send_signal(signum)
        self.process.wait(10)
        self.process = None


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server is not installed: cannot stop and restart a Redis of our own")
    return binary


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A real Redis server this test owns, keeping nothing on disk, already started."""
    server = PrivateRedis(_redis_binary())
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.stop()


@pytest.fixture
def private_redis_persistent(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A real Redis server this test owns, with an fsync-always AOF, already started."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(_redis_binary(), directory)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.stop()


# -- PostgreSQL -------------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster of our own, on a free port, that the test may stop and restart.

    The cluster lives in a new directory under ``/tmp`` (the ``postgres`` user must be
    able to reach it when we run as root); it trusts local connections, and its Unix
    socket is in that directory too, not in ``/var/run/postgresql``. Connect as user
    ``postgres`` to database ``postgres`` (:attr:`url`). :meth:`remove` deletes it all.

    Args:
        bindir: The directory holding ``initdb`` and ``pg_ctl``.
        user: The user to run them as (through ``runuser``), or ``None`` for ourselves.
    """

    def __init__(self, bindir: str, user: str | None) -> None:
        self.bindir = bindir
        self.user = user
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.root = tempfile.mkdtemp(prefix="invres-pg-", dir="/tmp")
        os.chmod(self.root, 0o755)  # the postgres user walks through it to its data
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.running = False
        if user is not None:
            owner = pwd.getpwnam(user)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)

    def _run(self, program: str, *arguments: str) -> None:
        command = [os.path.join(self.bindir, program), *arguments]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            msg = f"{' '.join(command)} exited with {done.returncode}: {done.stderr.strip()}"
            raise RuntimeError(msg)

    def initdb(self) -> None:
        """Create the cluster (trust authentication, superuser ``postgres``)."""
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        """Start the server and wait until it answers ``SELECT 1``."""
        assert not self.running, "already running"
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "start")
        self.running = True
        _wait_until_answering(lambda: probe_postgres(self.url), f"PostgreSQL on port {self.port}")

    def stop(self) -> None:
        """Stop the server cleanly (``pg_ctl stop -m fast``: clients are disconnected)."""
        self._stop("fast")

    def kill(self) -> None:
        """Stop the server as a crash would (``-m immediate``: recovery on the next start)."""
        self._stop("immediate")

    def _stop(self, mode: str) -> None:
        assert self.running, "not running"
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")
        self.running = False

    def remove(self) -> None:
        """Stop the server if it runs, and delete its directory."""
        if self.running:
            with contextlib.suppress(RuntimeError):
                self._stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _postgres_bindir() -> str | None:
    def version(bindir: str) -> int:
        name = os.path.basename(os.path.dirname(bindir))
        return int(name) if name.isdigit() else 0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(os.path.dirname(on_path))
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, p), os.X_OK) for p in ("initdb", "pg_ctl")):
            return bindir
    return None


def _postgres_user() -> str | None:
    """Whom to run PostgreSQL as: ``postgres`` when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("running as root, but there is no postgres user to run PostgreSQL as")
    if shutil.which("runuser") is None:
        _unavailable("running as root, but runuser is missing: cannot run PostgreSQL as postgres")
    return "postgres"


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A real PostgreSQL server this test owns, in a fresh cluster, already started."""
    pytest.importorskip("psycopg")
    bindir = _postgres_bindir()
    if bindir is None:
        _unavailable("initdb and pg_ctl not found: cannot run a PostgreSQL of our own")
    server = PrivatePostgres(bindir, _postgres_user())
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.remove()
