"""``python -m invresilience dlq ...`` in real subprocesses, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from invresilience import open_backend

if TYPE_CHECKING:
    from collections.abc import Iterator

    from invresilience import DeadLetterQueue

SRC = str(Path(__file__).resolve().parents[2] / "src")

HANDLER = """
    import json

    def handle(letter):
        job = json.loads(letter.payload)
        with open("seen.txt", "a", encoding="utf-8") as seen:
            seen.write(letter.id + "\\n")
        if job["n"] == 2:
            raise RuntimeError("n=2 is still broken")
"""


def cli(cwd: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``python -m invresilience ARGV`` in a fresh interpreter in *cwd*."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("INVRES_BACKEND", "INVRES_DLQ_QUEUE")
    }
    env["PYTHONPATH"] = os.pathsep.join([SRC, *sys.path])
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "invresilience", *argv],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(url, queue)`` of an empty dead-letter queue; the queue is purged afterwards."""
    if request.param == "sqlite":
        url = "sqlite:///" + str(tmp_path / "state.db")
        name = "orders-dlq"
    else:
        url = request.getfixturevalue("postgres_url")
        name = "cli-e2e-" + uuid.uuid4().hex[:12]
    yield url, name
    with open_backend(url) as backend:
        backend.dead_letter_queue(name).purge(everything=True)


def seed(queue: DeadLetterQueue) -> None:
    """Three letters: exhausted n=1, fatal n=2 (with a traceback), invalid raw bytes."""
    queue.put({"n": 1}, reason="exhausted", key="job-1", id="ok1")
    try:
        raise ValueError("n=2 failed")
    except ValueError as exc:
        queue.put({"n": 2}, reason="fatal", key="job-2", error=exc, id="bad2")
    queue.put(b"\xff\xfe not json", reason="invalid", id="junk3")


def test_an_operator_inspects_redrives_and_purges(target: tuple[str, str], tmp_path: Path) -> None:
    """stats, list, show, redrive (one failure), purge --yes and stats, end to end."""
    url, name = target
    with open_backend(url) as backend:
        queue = backend.dead_letter_queue(name)
        seed(queue)
    where = ["--backend", url, "--queue", name]
    (tmp_path / "handlers_e2e.py").write_text(textwrap.dedent(HANDLER), encoding="utf-8")

    stats = cli(tmp_path, "dlq", "stats", "--json", *where)
    assert 0 == stats.returncode, stats.stderr
    summary = json.loads(stats.stdout)
    assert (3, {"exhausted": 1, "fatal": 1, "invalid": 1}) == (
        summary["total"],
        summary["by_reason"],
    )

    listing = cli(tmp_path, "dlq", "list", "--json", "--payload", *where)
    assert 0 == listing.returncode, listing.stderr
    lines = [json.loads(line) for line in listing.stdout.splitlines()]
    assert ["ok1", "bad2", "junk3", None] == [line.get("id") for line in lines]
    assert ('{"n":1}', "//4gbm90IGpzb24=", None) == (
        lines[0]["payload"],
        lines[2]["payload_base64"],
        lines[3]["cursor"],
    )

    show = cli(tmp_path, "dlq", "show", "bad2", *where)
    assert 0 == show.returncode, show.stderr
    assert 'payload (JSON, 7 bytes):\n  {\n    "n": 2\n  }\n' in show.stdout
    assert "  ValueError: n=2 failed" in show.stdout

    missing = cli(tmp_path, "dlq", "show", "nope", *where)
    assert (4, f"no letter 'nope' in queue '{name}'") == (
        missing.returncode,
        missing.stderr.split("error: ")[1].strip(),
    )

    redrive = cli(
        tmp_path,
        "dlq",
        "redrive",
        "--to",
        "handlers_e2e:handle",
        "--reason",
        "exhausted,fatal",
        *where,
    )
    assert 1 == redrive.returncode, redrive.stderr
    assert redrive.stdout.startswith("redriven: 1, skipped (already done): 0, failed again: 1\n")
    assert "  bad2  RuntimeError: n=2 is still broken\n" in redrive.stdout
    assert ["ok1", "bad2"] == (tmp_path / "seen.txt").read_text().split()

    purge = cli(tmp_path, "dlq", "purge", "--all", "--yes", *where)
    assert (0, f"deleted 2 letters from queue '{name}'\n") == (purge.returncode, purge.stdout)

    empty = cli(tmp_path, "dlq", "stats", *where)
    assert f"queue:      {name}\ntotal:      0\n" == empty.stdout


def test_an_unreachable_backend_exits_3_without_its_password(tmp_path: Path) -> None:
    """A PostgreSQL URL nothing listens on exits 3, naming the server but not the password."""
    url = "postgresql://postgres:s3cret-pw@127.0.0.1:1/test"
    result = cli(tmp_path, "dlq", "list", "--backend", url, "--queue", "q")
    assert 3 == result.returncode
    assert "cannot reach backend postgresql://postgres:***@127.0.0.1:1/test" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_no_arguments_print_help_and_exit_2(tmp_path: Path) -> None:
    """``python -m invresilience`` alone prints the usage and the runbook, exit 2."""
    result = cli(tmp_path)
    assert 2 == result.returncode
    assert result.stderr.startswith("usage: python -m invresilience")
    assert "runbook" in result.stderr


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    """``dlq list | head -1`` on a listing longer than the pipe's buffer: the CLI exits 0 quietly on the broken pipe."""
    url = "sqlite:///" + str(tmp_path / "state.db")
    with open_backend(url) as backend:
        queue = backend.dead_letter_queue("big")
        for n in range(1000):
            queue.put({"n": n}, reason="manual", key=f"job-{n:04d}-" + "k" * 20)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, *sys.path]), "COLUMNS": "200"}
    where = ["--backend", url, "--queue", "big"]
    process = subprocess.Popen(
        [sys.executable, "-m", "invresilience", "dlq", "list", "--limit", "1000", *where],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    assert process.stdout.readline().startswith(b"ID ")
    process.stdout.close()
    stderr = process.stderr.read()
    assert (0, b"") == (process.wait(timeout=60), stderr)
