"""``python -m invresilience dlq ...``, run in-process against SQLite files."""

from __future__ import annotations

import base64
import datetime
import io
import json
import sys
import textwrap
import time
import uuid
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import invresilience
from invresilience import DeadLetterEvent, open_backend
from invresilience._cli import (
    EXIT_ABORTED,
    EXIT_BACKEND,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    _Session,
    main,
    parse_duration,
    parse_when,
)
from invresilience._core.dlq import REASONS, letter_to_json
from invresilience._events import scoped_listener
from invresilience.testing import ManualClock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from invresilience import DeadLetter, DeadLetterQueue
    from invresilience._events import Event

QUEUE = "orders-dlq"
#: 2023-11-14T22:13:20Z
T0 = 1_700_000_000.0
HOUR = 3600.0
DAY = 86400.0


@attrs.frozen
class Result:
    """What one run of the command line printed and returned."""

    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        """Each line of stdout, parsed as JSON."""
        return [json.loads(line) for line in self.out.splitlines()]


class Terminal(io.StringIO):
    """A stdin that says it is a terminal, holding what the operator types."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No backend or queue from the environment, a fixed width, sys.path restored."""
    monkeypatch.delenv("INVRES_BACKEND", raising=False)
    monkeypatch.delenv("INVRES_DLQ_QUEUE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def url(tmp_path: Path) -> str:
    """The URL of an empty SQLite dead-letter database in tmp_path."""
    path = tmp_path / "state.db"
    with open_backend("sqlite:///" + str(path)) as backend:
        backend.dead_letter_queue(QUEUE).count()
    return "sqlite:///" + str(path)


@pytest.fixture
def queue(url: str) -> Iterator[DeadLetterQueue]:
    """The test queue on that database, stamping letters with a manual clock."""
    backend = open_backend(url)
    try:
        yield backend.dead_letter_queue(QUEUE, clock=ManualClock(wall_start=T0))
    finally:
        backend.close()


def put(
    queue: DeadLetterQueue,
    letter_id: str,
    *,
    at: float,
    payload: Any = None,
    reason: Any = "exhausted",
    key: str | None = None,
    error: BaseException | None = None,
    headers: dict[str, str] | None = None,
) -> DeadLetter:
    """Store one letter dead-lettered at epoch *at*."""
    clock = ManualClock(wall_start=at)
    stamped = type(queue)(queue.store, clock=clock)
    if error is not None:
        try:
            raise error
        except BaseException as exc:  # noqa: BLE001 -- a traceback for the letter
            error = exc
    return stamped.put(
        {"id": letter_id} if payload is None else payload,
        reason=reason,
        key=key,
        error=error,
        headers=headers,
        id=letter_id,
    )


@pytest.fixture
def seeded(queue: DeadLetterQueue) -> DeadLetterQueue:
    """Five letters, one per reason but crash_loop, an hour apart from T0, oldest first."""
    put(queue, "a1", at=T0, key="order-1", error=ValueError("boom 1"), payload={"order": 1})
    put(queue, "f2", at=T0 + HOUR, reason="fatal", key="order-2", error=KeyError("sku"))
    put(queue, "i3", at=T0 + 2 * HOUR, reason="invalid", payload=b"\xff\x00raw")
    put(queue, "p4", at=T0 + DAY, reason="poison", key="order-4", error=RuntimeError("dup"))
    put(queue, "m5", at=T0 + 2 * DAY, reason="manual", headers={"tenant": "acme"})
    return queue


def run(*argv: str, stdin: io.StringIO | None = None) -> Result:
    """Run ``python -m invresilience ARGV`` in-process."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, stdin=stdin or io.StringIO())
    return Result(code, out.getvalue(), err.getvalue())


def dlq(url: str, action: str, *argv: str, stdin: io.StringIO | None = None) -> Result:
    """Run ``dlq ACTION ARGV --backend URL --queue QUEUE`` in-process."""
    return run("dlq", action, *argv, "--backend", url, "--queue", QUEUE, stdin=stdin)


def ids_of(result: Result) -> list[str]:
    """The letter ids of a ``list --json`` run, in order."""
    assert EXIT_OK == result.code, result.err
    return [line["id"] for line in result.json_lines() if "id" in line]


def remaining(queue: DeadLetterQueue) -> list[str]:
    """The ids still in the queue, oldest first."""
    return [letter.id for letter in queue.iter()]


def handler_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """Write a module to tmp_path, make it the working directory; the module's name."""
    name = "handlers_" + uuid.uuid4().hex[:12]
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


# -- help, version, usage -------------------------------------------------------------------------


def test_no_arguments_prints_help_and_exits_2() -> None:
    """``python -m invresilience`` alone prints the help (to stderr) and exits 2."""
    result = run()
    assert EXIT_USAGE == result.code
    assert "" == result.out
    assert result.err.startswith("usage: python -m invresilience")
    assert "dlq" in result.err
    assert "runbook" in result.err


def test_dlq_without_an_action_prints_its_help_and_exits_2() -> None:
    """``dlq`` alone prints the dlq help, listing the actions, and exits 2."""
    result = run("dlq")
    assert EXIT_USAGE == result.code
    for action in ("list", "show", "redrive", "purge", "stats"):
        assert action in result.err
    assert "INVRES_BACKEND" in result.err


def test_version_prints_the_package_version() -> None:
    """``--version`` prints ``invresilience VERSION`` and exits 0."""
    result = run("--version")
    assert EXIT_OK == result.code
    assert f"invresilience {invresilience.__version__}\n" == result.out


def test_root_help_has_the_runbook_and_the_exit_codes() -> None:
    """The top-level help walks through inspect, show, redrive, purge and lists exit codes."""
    result = run("--help")
    assert EXIT_OK == result.code
    text = result.out
    steps = [text.index(f"dlq {step}") for step in ("stats", "list", "show", "redrive", "purge")]
    assert sorted(steps) == steps
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "130"):
        assert f"\n  {code}" in text


@pytest.mark.parametrize("action", ["list", "show", "redrive", "purge", "stats"])
def test_each_action_help_explains_itself(action: str) -> None:
    """Every action's help has a description, examples, WHEN/DURATION and exit codes."""
    result = run("dlq", action, "--help")
    assert EXIT_OK == result.code
    assert f"usage: python -m invresilience dlq {action}" in result.out
    assert "examples:" in result.out
    assert f"python -m invresilience dlq {action}" in result.out.split("examples:")[1]
    assert "WHEN is an ISO-8601 time" in result.out
    assert "DURATION is a number and a unit" in result.out
    assert "exit codes:" in result.out
    assert "--backend URL" in result.out
    assert "INVRES_DLQ_QUEUE" in result.out


def test_redrive_help_documents_the_handler_rule() -> None:
    """The redrive help says what --to may name, including the factory rule."""
    result = run("dlq", "redrive", "--help")
    text = " ".join(result.out.split())
    assert "process_letter()" in text
    assert "a class, or a function without positional parameters: a factory" in text
    assert "current directory on sys.path" in text


def test_unknown_action_is_an_argparse_usage_error() -> None:
    """An unknown action exits 2 with argparse's message naming the choices."""
    result = run("dlq", "drop")
    assert EXIT_USAGE == result.code
    assert "invalid choice: 'drop'" in result.err


def test_a_missing_backend_is_a_clear_usage_error() -> None:
    """Without --backend or INVRES_BACKEND the command says how to give one, exit 2."""
    result = run("dlq", "list", "--queue", QUEUE)
    assert EXIT_USAGE == result.code
    assert "no backend: pass --backend URL or set INVRES_BACKEND" in result.err
    assert "dlq list --help" in result.err


def test_a_missing_queue_is_a_clear_usage_error(url: str) -> None:
    """Without --queue or INVRES_DLQ_QUEUE the command says how to give one, exit 2."""
    result = run("dlq", "stats", "--backend", url)
    assert EXIT_USAGE == result.code
    assert "no queue: pass --queue NAME or set INVRES_DLQ_QUEUE" in result.err


def test_backend_and_queue_come_from_the_environment(
    seeded: DeadLetterQueue, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """INVRES_BACKEND and INVRES_DLQ_QUEUE stand in for --backend and --queue."""
    monkeypatch.setenv("INVRES_BACKEND", url)
    monkeypatch.setenv("INVRES_DLQ_QUEUE", QUEUE)
    result = run("dlq", "list", "--json")
    assert ["a1", "f2", "i3", "p4", "m5"] == ids_of(result)


def test_an_invalid_queue_name_is_a_usage_error(url: str) -> None:
    """A queue name with forbidden characters exits 2 and says why."""
    result = run("dlq", "stats", "--backend", url, "--queue", "bad name!")
    assert EXIT_USAGE == result.code
    assert "bad --queue 'bad name!'" in result.err


def test_an_unknown_scheme_is_a_usage_error_without_the_password() -> None:
    """A URL with an unknown scheme exits 2, lists the schemes, and hides the password."""
    result = run("dlq", "stats", "--backend", "ftp://admin:hunter2@host/x", "--queue", QUEUE)
    assert EXIT_USAGE == result.code
    assert "unknown scheme 'ftp'" in result.err
    assert "sqlite://" in result.err
    assert "hunter2" not in result.err
    assert "admin:***@host" in result.err


def test_a_missing_sqlite_file_is_a_usage_error(tmp_path: Path) -> None:
    """A sqlite:/// URL naming no file exits 2 instead of creating an empty database."""
    path = tmp_path / "typo.db"
    result = run("dlq", "stats", "--backend", f"sqlite:///{path}", "--queue", QUEUE)
    assert EXIT_USAGE == result.code
    assert f"no SQLite database at '{path}'" in result.err
    assert not path.exists()


def test_a_string_that_is_not_a_url_is_a_usage_error() -> None:
    """A --backend that does not even parse as a URL exits 2 without echoing it."""
    result = run("dlq", "stats", "--backend", "postgresql://u:hunter2@[::1", "--queue", QUEUE)
    assert EXIT_USAGE == result.code
    assert "bad --backend: not a URL (Invalid IPv6 URL)" in result.err
    assert "hunter2" not in result.err


def test_a_missing_driver_is_a_usage_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the PostgreSQL driver the command says which extra to install, exit 2."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "invresilience.backends.postgres", raising=False)
    result = run("dlq", "stats", "--backend", "postgresql://u:pw@db/x", "--queue", QUEUE)
    assert EXIT_USAGE == result.code
    assert "invresilience[postgres]" in result.err


def test_an_unreachable_backend_exits_3_naming_it_without_the_password() -> None:
    """A server nothing listens on exits 3; the message names it with ``***`` for the password."""
    pytest.importorskip("psycopg")
    url = "postgresql://app:s3cret-pw@127.0.0.1:1/test"
    result = run("dlq", "list", "--backend", url, "--queue", QUEUE)
    assert EXIT_BACKEND == result.code
    assert "cannot reach backend postgresql://app:***@127.0.0.1:1/test: " in result.err
    assert "s3cret-pw" not in result.err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("at postgresql://u:pw@db/x: refused", "at postgresql://u:***@db/x: refused"),
        ("host=db user=u password=pw", "host=db user=u password=***"),
        ("pw is a substring of pwned", "pw is a substring of pwned"),
    ],
)
def test_backend_messages_hide_a_short_password_where_it_is_a_password(
    text: str, expected: str
) -> None:
    """A short password is hidden in URL and conninfo forms, not in unrelated words."""
    assert expected == _Session("postgresql://u:pw@db/x", QUEUE).scrub(text)


def test_backend_messages_hide_a_long_password_anywhere() -> None:
    """A password of six characters or more is hidden wherever it appears, decoded too."""
    session = _Session("postgresql://u:p%40ss-word@db/x", QUEUE)
    assert "auth failed for *** / ***" == session.scrub("auth failed for p@ss-word / p%40ss-word")


def test_a_file_that_is_not_a_database_is_a_backend_error(tmp_path: Path) -> None:
    """A SQLite file that is not a database exits 3, naming the backend."""
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database file at all" * 100)
    result = run("dlq", "stats", "--backend", f"sqlite:///{path}", "--queue", QUEUE)
    assert EXIT_BACKEND == result.code
    assert f"backend sqlite:///{path}" in result.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--reason", "lost"], "unknown reason 'lost'; choose from " + ", ".join(REASONS)),
        (["list", "--reason", "fatal,nope"], "unknown reason 'nope'"),
        (["list", "--since", "yesterday"], "'yesterday' is not a time"),
        (["list", "--before", "2024-13-01"], "'2024-13-01' is not a time"),
        (["list", "--since", "10"], "'10' is not a time"),
        (["list", "--limit", "0"], "must be at least 1, got 0"),
        (["list", "--limit", "many"], "'many' is not a whole number"),
        (["list", "--cursor", "page-2"], "'page-2' is not a cursor: use the one a listing"),
        (["show", "no spaces allowed"], "letter id 'no spaces allowed' must be"),
        (["redrive", "--to", "nocolon"], "'nocolon' is not MODULE:ATTR"),
        (["redrive", "--to", "m:f", "--rate", "0"], "must be a positive number of letters"),
        (["redrive", "--to", "m:f", "--rate", "fast"], "'fast' is not a number"),
        (["redrive"], "the following arguments are required: --to"),
        (["purge", "--older-than", "7"], "'7' is not a duration"),
        (["purge", "--older-than", "0d"], "'0d' is not a positive duration"),
    ],
)
def test_bad_input_is_a_usage_error_that_says_what_is_wrong(
    url: str, argv: list[str], message: str
) -> None:
    """Malformed options exit 2 with a message naming the problem."""
    result = dlq(url, *argv)
    assert EXIT_USAGE == result.code
    assert message in result.err
    assert "" == result.out


class ClosedPipe(io.StringIO):
    """A stdout whose reader has gone away."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_goes_away_ends_the_run_quietly(seeded: DeadLetterQueue, url: str) -> None:
    """A broken pipe on stdout (| head) exits 0 without a traceback."""
    err = io.StringIO()
    code = main(
        ["dlq", "list", "--backend", url, "--queue", QUEUE], stdout=ClosedPipe(), stderr=err
    )
    assert (EXIT_OK, "") == (code, err.getvalue())


# -- WHEN and DURATION ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("7d", 7 * DAY),
        ("1w", 7 * DAY),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        (" 2H ", 7200.0),
    ],
)
def test_durations_are_numbers_with_units(text: str, seconds: float) -> None:
    """A duration is one or more number+unit parts, summed."""
    assert seconds == parse_duration(text)


@pytest.mark.parametrize("text", ["", "7", "h", "2 h", "-1h", "1y", "0s"])
def test_malformed_durations_are_refused(text: str) -> None:
    """Anything else, or a zero duration, raises ValueError."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2023-11-14T22:13:20", T0),
        ("2023-11-14 22:13:20", T0),
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T23:13:20+01:00", T0),
        ("2023-11-14", T0 - (22 * HOUR + 13 * 60 + 20)),
        ("30m", 5000.0 - 1800.0),
        ("2d", 5000.0 - 2 * DAY),
    ],
)
def test_when_is_iso_utc_unless_an_offset_or_a_duration_ago(text: str, epoch: float) -> None:
    """Naive ISO times are UTC, offsets are honoured, durations count back from now."""
    assert epoch == parse_when(text, now=5000.0)


# -- list -----------------------------------------------------------------------------------------


def test_list_prints_an_aligned_table_oldest_first(seeded: DeadLetterQueue, url: str) -> None:
    """The table has a header and one row per letter: id, reason, key, attempts, time, error."""
    result = dlq(url, "list")
    assert EXIT_OK == result.code, result.err
    lines = result.out.splitlines()
    assert ["ID", "REASON", "KEY", "ATTEMPTS", "DEAD-LETTERED", "(UTC)", "ERROR"] == lines[
        0
    ].split()
    rows = [line.split(None, 5) for line in lines[1:]]
    assert [
        ["a1", "exhausted", "order-1", "1", "2023-11-14T22:13:20Z", "ValueError: boom 1"],
        ["f2", "fatal", "order-2", "1", "2023-11-14T23:13:20Z", "KeyError: 'sku'"],
        ["i3", "invalid", "-", "1", "2023-11-15T00:13:20Z", "-"],
        ["p4", "poison", "order-4", "1", "2023-11-15T22:13:20Z", "RuntimeError: dup"],
        ["m5", "manual", "-", "1", "2023-11-16T22:13:20Z", "-"],
    ] == rows
    starts = {line.index("2023-11-") for line in lines[1:]}
    assert 1 == len(starts), "the time column is aligned"
    assert "more:" not in result.out


def test_list_width_falls_back_to_120_columns(
    queue: DeadLetterQueue, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without COLUMNS, and with a terminal whose size cannot be read, lines stop at 120."""
    put(queue, "long", at=T0, error=ValueError("x" * 300))
    monkeypatch.delenv("COLUMNS")
    out = Terminal()
    code = main(["dlq", "list", "--backend", url, "--queue", QUEUE], stdout=out)
    assert EXIT_OK == code
    assert 120 == max(len(line) for line in out.getvalue().splitlines())


def test_list_cuts_errors_to_the_terminal_width(
    queue: DeadLetterQueue, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long or multi-line errors are cut (with ...) so that no line exceeds COLUMNS."""
    put(queue, "long", at=T0, error=ValueError("first line\n" + "x" * 300))
    monkeypatch.setenv("COLUMNS", "100")
    result = dlq(url, "list")
    lines = result.out.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[1].endswith("...")
    assert "ValueError: first line xxx" in lines[1]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--reason", "fatal"], ["f2"]),
        (["--reason", "exhausted,fatal"], ["a1", "f2"]),
        (["--reason", "exhausted", "--reason", "poison"], ["a1", "p4"]),
        (["--reason", "crash_loop"], []),
        (["--key", "order-2"], ["f2"]),
        (["--key", "order-9"], []),
        (["--since", "2023-11-14T23:13:20"], ["f2", "i3", "p4", "m5"]),
        (["--since", "2023-11-15T00:13:20+01:00"], ["f2", "i3", "p4", "m5"]),
        (["--before", "2023-11-14T23:13:20Z"], ["a1"]),
        (["--since", "2023-11-14T23:00", "--before", "2023-11-15T01:00"], ["f2", "i3"]),
        (["--reason", "poison,exhausted", "--since", "2023-11-15"], ["p4"]),
        (["--key", "order-1", "--reason", "fatal"], []),
    ],
)
def test_list_filters_select_letters(
    seeded: DeadLetterQueue, url: str, argv: list[str], expected: list[str]
) -> None:
    """--reason (repeatable, comma lists), --key, --since and --before all must hold."""
    assert expected == ids_of(dlq(url, "list", "--json", *argv))


def test_relative_times_count_back_from_now(queue: DeadLetterQueue, url: str) -> None:
    """--since 2d keeps letters younger than two days, --before 2d the older ones."""
    now = time.time()
    put(queue, "old", at=now - 3 * DAY)
    put(queue, "new", at=now - HOUR)
    assert ["new"] == ids_of(dlq(url, "list", "--json", "--since", "2d"))
    assert ["old"] == ids_of(dlq(url, "list", "--json", "--before", "2d"))
    assert [] == ids_of(dlq(url, "list", "--json", "--since", "30m"))


def test_list_json_is_one_letter_per_line_then_the_cursor(
    seeded: DeadLetterQueue, url: str
) -> None:
    """--json prints letter_to_json without payload per letter, then {"cursor": null}."""
    lines = dlq(url, "list", "--json").json_lines()
    expected = [letter_to_json(letter, payload=False) for letter in seeded.iter()]
    assert [*expected, {"cursor": None}] == lines


def test_list_json_with_payload_includes_text_or_base64(seeded: DeadLetterQueue, url: str) -> None:
    """--payload adds "payload" (UTF-8 text) or "payload_base64" (other bytes)."""
    lines = dlq(url, "list", "--json", "--payload", "--reason", "exhausted,invalid").json_lines()
    assert '{"order":1}' == lines[0]["payload"]
    assert base64.b64encode(b"\xff\x00raw").decode() == lines[1]["payload_base64"]
    assert "payload" not in lines[1]


def test_table_pages_chain_through_cursor_hints(seeded: DeadLetterQueue, url: str) -> None:
    """A full page ends with 'more: --cursor C'; following the hints lists every letter once."""
    seen: list[str] = []
    argv = ["--limit", "2"]
    pages = 0
    while True:
        result = dlq(url, "list", *argv)
        assert EXIT_OK == result.code
        lines = result.out.splitlines()
        pages += 1
        if lines[-1].startswith("more: "):
            seen += [line.split()[0] for line in lines[1:-1]]
            argv = ["--limit", "2", *lines[-1].removeprefix("more: ").split()]
        else:
            seen += [line.split()[0] for line in lines[1:]]
            break
    assert ["a1", "f2", "i3", "p4", "m5"] == seen
    assert 3 == pages


def test_json_pages_chain_through_cursors_with_filters(seeded: DeadLetterQueue, url: str) -> None:
    """The final JSON object carries the next cursor, null on the last page; filters persist."""
    argv = ["list", "--json", "--limit", "1", "--reason", "exhausted,poison"]
    first = dlq(url, *argv).json_lines()
    assert ["a1"] == [line["id"] for line in first[:-1]]
    cursor = first[-1]["cursor"]
    assert isinstance(cursor, str)
    second = dlq(url, *argv, "--cursor", cursor).json_lines()
    assert ["p4"] == [line["id"] for line in second[:-1]]
    assert {"cursor": None} == second[-1]


def test_an_empty_listing_says_so(queue: DeadLetterQueue, url: str) -> None:
    """An empty queue, and filters matching nothing, print a sentence, not a bare header."""
    assert f"no letters in queue '{QUEUE}'\n" == dlq(url, "list").out
    put(queue, "a", at=T0)
    assert f"no letters match in queue '{QUEUE}'\n" == dlq(url, "list", "--key", "x").out


# -- show -----------------------------------------------------------------------------------------


def test_show_prints_fields_headers_pretty_payload_and_traceback(
    seeded: DeadLetterQueue, url: str
) -> None:
    """show prints every field, the JSON payload indented, and the traceback."""
    result = dlq(url, "show", "a1")
    assert EXIT_OK == result.code, result.err
    text = result.out
    assert "id:             a1\n" in text
    assert f"queue:          {QUEUE}\n" in text
    assert "reason:         exhausted\n" in text
    assert "key:            order-1\n" in text
    assert "error type:     builtins.ValueError\n" in text
    assert "error message:  boom 1\n" in text
    assert "dead-lettered:  2023-11-14T22:13:20.000Z\n" in text
    assert 'payload (JSON, 11 bytes):\n  {\n    "order": 1\n  }\n' in text
    assert "traceback:\n  Traceback (most recent call last):\n" in text
    assert "  ValueError: boom 1" in text


def test_show_prints_headers_and_dashes_for_no_error(seeded: DeadLetterQueue, url: str) -> None:
    """Headers are listed one per line; a letter without error shows '-' for it."""
    text = dlq(url, "show", "m5").out
    assert "headers:\n  tenant: acme\n" in text
    assert 'payload (JSON, 11 bytes):\n  {\n    "id": "m5"\n  }\n' in text
    assert "error type:     -\n" in text
    assert "traceback:      -\n" in text


def test_show_prints_non_utf8_payload_as_base64(seeded: DeadLetterQueue, url: str) -> None:
    """Raw bytes that are not text are shown as base64."""
    text = dlq(url, "show", "i3").out
    expected = base64.b64encode(b"\xff\x00raw").decode()
    assert f"payload (raw bytes, base64, 5 bytes):\n  {expected}\n" in text


def test_show_prints_raw_utf8_payload_as_text(queue: DeadLetterQueue, url: str) -> None:
    """Raw bytes that are UTF-8 text, and non-JSON payloads, are shown as text."""
    put(queue, "raw", at=T0, payload=b"line one\nline two")
    text = dlq(url, "show", "raw").out
    assert "payload (raw bytes, UTF-8 text, 17 bytes):\n  line one\n  line two\n" in text


def test_show_of_an_empty_payload(queue: DeadLetterQueue, url: str) -> None:
    """An empty payload is labelled empty, with nothing under it."""
    put(queue, "nothing", at=T0, payload=b"")
    assert "payload (empty, 0 bytes):\ntraceback:" in dlq(url, "show", "nothing").out


def test_show_of_a_payload_another_codec_wrote(queue: DeadLetterQueue, url: str) -> None:
    """A payload that is not JSON (written with another codec) is shown as its text."""

    class Xml:
        def encode(self, value: Any) -> bytes:
            return f"<job id='{value}'/>".encode()

        def decode(self, data: bytes) -> Any:
            raise NotImplementedError

    type(queue)(queue.store, codec=Xml(), clock=ManualClock(wall_start=T0)).put("x1", id="xml")
    text = dlq(url, "show", "xml").out
    assert "payload (not JSON, UTF-8 text, 14 bytes):\n  <job id='x1'/>\n" in text


def test_show_json_is_the_whole_letter(seeded: DeadLetterQueue, url: str) -> None:
    """show --json prints letter_to_json with the payload."""
    result = dlq(url, "show", "i3", "--json")
    assert [letter_to_json(seeded.get("i3"), payload=True)] == result.json_lines()  # type: ignore[arg-type]


def test_show_of_a_missing_letter_exits_4(seeded: DeadLetterQueue, url: str) -> None:
    """An id not in the queue exits 4 with a message naming it."""
    result = dlq(url, "show", "zz9")
    assert EXIT_NOT_FOUND == result.code
    assert f"no letter 'zz9' in queue '{QUEUE}'" in result.err
    assert "" == result.out


# -- redrive ----------------------------------------------------------------------------------------

RECORDING = """
    SEEN = []

    def handle(letter):
        SEEN.append(letter.id)
        if letter.reason == "fatal":
            raise RuntimeError("still broken for " + letter.id)
"""


def seen(module: str) -> list[str]:
    """The ids the handler module recorded."""
    return list(sys.modules[module].SEEN)


def test_redrive_hands_every_letter_over_and_removes_them(
    queue: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A callable that returns normally redrives each letter, oldest first; the queue empties."""
    for n in range(3):
        put(queue, f"ok{n}", at=T0 + n)
    module = handler_module(tmp_path, monkeypatch, RECORDING)
    result = dlq(url, "redrive", "--to", f"{module}:handle")
    assert EXIT_OK == result.code, result.err
    assert "redriven: 3, skipped (already done): 0, failed again: 0\n" == result.out
    assert ["ok0", "ok1", "ok2"] == seen(module)
    assert [] == remaining(queue)


def test_redrive_failures_exit_1_and_keep_the_letters(
    seeded: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Letters whose handler raises stay, with one more attempt and the new error; exit 1."""
    module = handler_module(tmp_path, monkeypatch, RECORDING)
    result = dlq(url, "redrive", "--to", f"{module}:handle")
    assert EXIT_FAILED == result.code
    assert "redriven: 4, skipped (already done): 0, failed again: 1\n" in result.out
    assert "failed (kept in the queue):\n  f2  RuntimeError: still broken for f2\n" in result.out
    assert ["f2"] == remaining(seeded)
    kept = seeded.get("f2")
    assert kept is not None
    assert (2, "builtins.RuntimeError") == (kept.attempts, kept.error_type)


def test_redrive_selects_by_filters(
    seeded: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--reason and --since choose the letters redriven; the others are not touched."""
    module = handler_module(tmp_path, monkeypatch, RECORDING)
    result = dlq(url, "redrive", "--to", f"{module}:handle", "--reason", "exhausted,poison")
    assert EXIT_OK == result.code
    assert ["a1", "p4"] == seen(module)
    result = dlq(url, "redrive", "--to", f"{module}:handle", "--since", "2023-11-16")
    assert ["a1", "p4", "m5"] == seen(module)
    assert ["f2", "i3"] == remaining(seeded)


def test_redrive_by_id_in_the_given_order(
    seeded: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--id (repeatable) redrives exactly those letters, in that order."""
    module = handler_module(tmp_path, monkeypatch, RECORDING)
    result = dlq(url, "redrive", "--to", f"{module}:handle", "--id", "m5", "--id", "a1")
    assert EXIT_OK == result.code
    assert ["m5", "a1"] == seen(module)
    assert ["f2", "i3", "p4"] == remaining(seeded)


def test_redrive_of_a_missing_id_exits_4_after_redriving_the_others(
    seeded: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids not in the queue are named on stderr and exit 4; the present ones are redriven."""
    module = handler_module(tmp_path, monkeypatch, RECORDING)
    result = dlq(url, "redrive", "--to", f"{module}:handle", "--id", "a1", "--id", "gone")
    assert EXIT_NOT_FOUND == result.code
    assert f"not found in queue '{QUEUE}': gone" in result.err
    assert ["a1"] == seen(module)
    only_missing = dlq(url, "redrive", "--to", f"{module}:handle", "--id", "gone")
    assert EXIT_NOT_FOUND == only_missing.code
    assert ["a1"] == seen(module)


def test_redrive_limit_applies_to_ids(
    seeded: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--limit with --id redrives the first N ids given."""
    module = handler_module(tmp_path, monkeypatch, RECORDING)
    argv = ["--id", "p4", "--id", "a1", "--id", "m5", "--limit", "2"]
    assert EXIT_OK == dlq(url, "redrive", "--to", f"{module}:handle", *argv).code
    assert ["p4", "a1"] == seen(module)


def test_redrive_calls_a_builtin_taking_star_args_with_each_letter(
    queue: DeadLetterQueue,
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A callable taking *args (print) is a handler, called with each letter, not a factory."""
    put(queue, "one", at=T0)
    monkeypatch.chdir(tmp_path)
    result = dlq(url, "redrive", "--to", "builtins:print")
    assert EXIT_OK == result.code
    assert "DeadLetter(id='one'" in capsys.readouterr().out
    assert [] == remaining(queue)


def test_redrive_ids_and_filters_do_not_mix(
    seeded: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--id with a filter is a usage error and nothing runs."""
    module = handler_module(tmp_path, monkeypatch, RECORDING)
    result = dlq(url, "redrive", "--to", f"{module}:handle", "--id", "a1", "--key", "order-1")
    assert EXIT_USAGE == result.code
    assert "--id cannot be combined with the filters" in result.err
    assert 5 == len(remaining(seeded))


def test_redrive_limit_and_rate(
    seeded: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--limit N redrives at most N letters, oldest first; --rate paces them."""
    module = handler_module(tmp_path, monkeypatch, RECORDING)
    result = dlq(
        url, "redrive", "--to", f"{module}:handle", "--limit", "2", "--rate", "1000", "--json"
    )
    assert EXIT_FAILED == result.code
    report = json.loads(result.out)
    expected_failure = {"id": "f2", "error": "RuntimeError: still broken for f2"}
    assert {"redriven": ["a1"], "skipped": [], "failed": [expected_failure]} == report
    assert ["a1", "f2"] == seen(module)


def test_redrive_dry_run_lists_and_changes_nothing(
    seeded: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--dry-run prints the letters that would go and runs no handler."""
    module = handler_module(tmp_path, monkeypatch, RECORDING)
    result = dlq(
        url, "redrive", "--to", f"{module}:handle", "--reason", "fatal,poison", "--dry-run"
    )
    assert EXIT_OK == result.code
    lines = result.out.splitlines()
    assert ["f2", "p4"] == [line.split()[0] for line in lines[1:-1]]
    assert f"would redrive 2 letters to {module}:handle (dry run: nothing changed)" == lines[-1]
    assert [] == seen(module)
    assert 5 == len(remaining(seeded))
    by_id = dlq(url, "redrive", "--to", f"{module}:handle", "--id", "m5", "--dry-run")
    assert by_id.out.splitlines()[1].startswith("m5 ")
    limited = dlq(url, "redrive", "--to", f"{module}:handle", "--limit", "1", "--dry-run")
    assert "would redrive 1 letter to" in limited.out
    nothing = dlq(url, "redrive", "--to", f"{module}:handle", "--key", "none", "--dry-run")
    assert f"would redrive 0 letters to {module}:handle (dry run: nothing changed)\n" == nothing.out


def test_redrive_factories_and_job_handlers(
    seeded: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zero-argument function or a class is called once; a JobHandler runs the decoded job."""
    module = handler_module(
        tmp_path,
        monkeypatch,
        """
        import invresilience

        SEEN = []
        MADE = []

        def make():
            MADE.append("make")
            return lambda letter: SEEN.append(("lambda", letter.id))

        class Redriver:
            def __init__(self):
                MADE.append("class")

            def __call__(self, letter):
                SEEN.append(("class", letter.id))

        def job_handler():
            MADE.append("job_handler")
            return invresilience.JobHandler(
                lambda job: SEEN.append(("job", job)),
                key=lambda job: str(job),
                dead_letters=invresilience.open_backend("memory://").dead_letter_queue("x"),
            )

        class Holder:
            handler = staticmethod(lambda letter: SEEN.append(("dotted", letter.id)))
        """,
    )
    assert EXIT_OK == dlq(url, "redrive", "--to", f"{module}:make", "--id", "a1").code
    assert EXIT_OK == dlq(url, "redrive", "--to", f"{module}:Redriver", "--id", "f2").code
    assert EXIT_OK == dlq(url, "redrive", "--to", f"{module}:job_handler", "--id", "p4").code
    assert EXIT_OK == dlq(url, "redrive", "--to", f"{module}:Holder.handler", "--id", "m5").code
    assert ["make", "class", "job_handler"] == sys.modules[module].MADE
    assert [
        ("lambda", "a1"),
        ("class", "f2"),
        ("job", {"id": "p4"}),
        ("dotted", "m5"),
    ] == sys.modules[module].SEEN
    assert ["i3"] == remaining(seeded)


def test_redrive_awaits_async_handlers(
    seeded: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async function is run to completion per letter; its exception fails the letter."""
    module = handler_module(
        tmp_path,
        monkeypatch,
        """
        import asyncio

        SEEN = []

        async def handle(letter):
            await asyncio.sleep(0)
            if letter.reason == "fatal":
                raise ValueError("async failure")
            SEEN.append(letter.id)
        """,
    )
    result = dlq(url, "redrive", "--to", f"{module}:handle", "--reason", "exhausted,fatal")
    assert EXIT_FAILED == result.code
    assert "f2  ValueError: async failure" in result.out
    assert ["a1"] == seen(module)
    assert ["f2", "i3", "p4", "m5"] == remaining(seeded)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:handle", "no module named 'no_such_module_xyz'"),
        ("{module}:missing", "has no attribute 'missing'"),
        ("{module}:NUMBER", "int is neither a JobHandler (process_letter) nor a callable"),
        ("{module}:broken_factory", "calling the factory broken_factory() failed: OSError: nope"),
        ("{module}:makes_nothing", "NoneType is neither a JobHandler"),
        ("{broken}:handle", "importing '{broken}' failed: ZeroDivisionError"),
        ("{needs_dep}:handle", "importing '{needs_dep}' failed: No module named 'no_such_dep_"),
    ],
)
def test_redrive_reports_a_bad_target_as_a_usage_error(
    seeded: DeadLetterQueue,
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    message: str,
) -> None:
    """--to naming nothing usable exits 2 with the reason, and no letter moves."""
    module = handler_module(
        tmp_path,
        monkeypatch,
        """
        NUMBER = 3

        def broken_factory():
            raise OSError("nope")

        def makes_nothing():
            return None
        """,
    )
    broken = handler_module(tmp_path, monkeypatch, "1 / 0\n")
    needs_dep = handler_module(tmp_path, monkeypatch, "import no_such_dep_xyz\n")
    names = {"module": module, "broken": broken, "needs_dep": needs_dep}
    result = dlq(url, "redrive", "--to", target.format(**names))
    assert EXIT_USAGE == result.code
    assert message.format(**names) in result.err
    assert 5 == len(remaining(seeded))


def test_ctrl_c_during_a_redrive_exits_130_and_keeps_the_letter(
    seeded: DeadLetterQueue, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KeyboardInterrupt in the handler stops the run with 130; unhandled letters stay."""
    module = handler_module(
        tmp_path,
        monkeypatch,
        """
        def handle(letter):
            if letter.id == "f2":
                raise KeyboardInterrupt
        """,
    )
    result = dlq(url, "redrive", "--to", f"{module}:handle")
    assert EXIT_INTERRUPTED == result.code
    assert "interrupted" in result.err
    assert ["f2", "i3", "p4", "m5"] == remaining(seeded)


# -- purge ------------------------------------------------------------------------------------------


def test_purge_without_a_selection_refuses(seeded: DeadLetterQueue, url: str) -> None:
    """purge with no --id, filter, --older-than or --all exits 2 and deletes nothing."""
    result = dlq(url, "purge", "--yes")
    assert EXIT_USAGE == result.code
    assert "purge needs a selection" in result.err
    assert 5 == len(remaining(seeded))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--id", "a1", "--all"], "--id cannot be combined with --all or the filters"),
        (["--id", "a1", "--reason", "fatal"], "--id cannot be combined"),
        (["--all", "--key", "order-1"], "--all cannot be combined"),
        (["--all", "--older-than", "1d"], "--all cannot be combined"),
    ],
)
def test_purge_selections_do_not_mix(
    seeded: DeadLetterQueue, url: str, argv: list[str], message: str
) -> None:
    """Contradictory selections exit 2 and delete nothing."""
    result = dlq(url, "purge", "--yes", *argv)
    assert EXIT_USAGE == result.code
    assert message in result.err
    assert 5 == len(remaining(seeded))


def test_purge_dry_run_only_counts(seeded: DeadLetterQueue, url: str) -> None:
    """--dry-run prints how many letters would go and deletes nothing."""
    result = dlq(url, "purge", "--reason", "fatal,invalid", "--dry-run")
    assert EXIT_OK == result.code
    assert f"would delete 2 letters from queue '{QUEUE}' (dry run: nothing changed)\n" == result.out
    assert 5 == len(remaining(seeded))


@pytest.mark.parametrize("answer", ["y\n", "yes\n", " YES \n", "Y"])
def test_purge_deletes_when_the_operator_confirms(
    seeded: DeadLetterQueue, url: str, answer: str
) -> None:
    """At a terminal, 'y' or 'yes' (any case) confirms; the count is shown in the question."""
    result = dlq(url, "purge", "--reason", "fatal", stdin=Terminal(answer))
    assert EXIT_OK == result.code, result.err
    assert f"delete 1 letter from queue '{QUEUE}' for good? [y/N] " == result.err
    assert f"deleted 1 letter from queue '{QUEUE}'\n" == result.out
    assert ["a1", "i3", "p4", "m5"] == remaining(seeded)


@pytest.mark.parametrize("answer", ["n\n", "\n", "", "yep\n", "no\n"])
def test_purge_aborts_on_anything_but_yes(seeded: DeadLetterQueue, url: str, answer: str) -> None:
    """Any other answer (or end of input) aborts with exit 5 and deletes nothing."""
    result = dlq(url, "purge", "--all", stdin=Terminal(answer))
    assert EXIT_ABORTED == result.code
    assert result.err.startswith(f"delete 5 letters from queue '{QUEUE}' for good? [y/N] ")
    assert "aborted: nothing was deleted" in result.err
    assert "" == result.out
    assert 5 == len(remaining(seeded))


def test_purge_refuses_without_yes_when_stdin_is_not_a_terminal(
    seeded: DeadLetterQueue, url: str
) -> None:
    """Piped stdin without --yes exits 5, says to pass --yes, and deletes nothing."""
    result = dlq(url, "purge", "--all", stdin=io.StringIO("y\n"))
    assert EXIT_ABORTED == result.code
    assert "5 letters would be deleted" in result.err
    assert "stdin is not a terminal" in result.err
    assert "pass --yes" in result.err
    assert 5 == len(remaining(seeded))


def test_purge_with_yes_deletes_without_asking(seeded: DeadLetterQueue, url: str) -> None:
    """--yes deletes the selection at once; the rest stays."""
    result = dlq(url, "purge", "--key", "order-4", "--yes")
    assert EXIT_OK == result.code
    assert f"deleted 1 letter from queue '{QUEUE}'\n" == result.out
    assert ["a1", "f2", "i3", "m5"] == remaining(seeded)
    everything = dlq(url, "purge", "--all", "-y")
    assert f"deleted 4 letters from queue '{QUEUE}'\n" == everything.out
    assert [] == remaining(seeded)


def test_purge_by_time_filters(seeded: DeadLetterQueue, url: str) -> None:
    """--since and --before bound the purge like the listing."""
    result = dlq(
        url, "purge", "--before", "2023-11-15T01:00", "--since", "2023-11-14T23:00Z", "--yes"
    )
    assert f"deleted 2 letters from queue '{QUEUE}'\n" == result.out
    assert ["a1", "p4", "m5"] == remaining(seeded)


def test_purge_older_than_counts_back_from_now(queue: DeadLetterQueue, url: str) -> None:
    """--older-than 1d deletes the letters dead-lettered more than a day ago."""
    now = time.time()
    put(queue, "old", at=now - 3 * DAY, reason="fatal")
    put(queue, "older", at=now - 9 * DAY)
    put(queue, "new", at=now - HOUR)
    result = dlq(url, "purge", "--older-than", "1d", "--yes")
    assert EXIT_OK == result.code
    assert ["new"] == remaining(queue)
    put(queue, "old2", at=now - 3 * DAY, reason="fatal")
    put(queue, "old3", at=now - 3 * DAY)
    both = dlq(url, "purge", "--older-than", "2d", "--reason", "fatal", "--yes")
    assert EXIT_OK == both.code
    assert ["new", "old3"] == remaining(queue)


def test_purge_by_id_reports_missing_ids_with_exit_4(seeded: DeadLetterQueue, url: str) -> None:
    """--id deletes the letters present, names the missing ones, and exits 4."""
    result = dlq(url, "purge", "--id", "a1", "--id", "gone", "--id", "m5", "--yes")
    assert EXIT_NOT_FOUND == result.code
    assert f"not found in queue '{QUEUE}': gone" in result.err
    assert f"deleted 2 letters from queue '{QUEUE}'\n" == result.out
    assert ["f2", "i3", "p4"] == remaining(seeded)


def test_purge_of_nothing_says_so(seeded: DeadLetterQueue, url: str) -> None:
    """A selection matching no letter asks nothing and exits 0."""
    result = dlq(url, "purge", "--reason", "crash_loop", stdin=io.StringIO())
    assert EXIT_OK == result.code
    assert f"no letters to delete in queue '{QUEUE}'\n" == result.out


class AnswerAfter(Terminal):
    """A terminal stdin that runs *meanwhile* (what happens while the operator reads) first."""

    def __init__(self, answer: str, meanwhile: Callable[[], object]) -> None:
        super().__init__(answer)
        self.meanwhile = meanwhile

    def readline(self, size: int = -1, /) -> str:  # type: ignore[override]  # as typeshed's
        self.meanwhile()
        return super().readline(size)


def purged_events(events: list[Event]) -> list[tuple[str, int]]:
    """``(source, count)`` of each ``"purged"`` dead-letter event, in order."""
    return [
        (event.source, event.count)
        for event in events
        if isinstance(event, DeadLetterEvent) and event.kind == "purged"
    ]


def test_purge_spares_a_letter_that_arrives_while_the_operator_confirms(
    seeded: DeadLetterQueue, url: str
) -> None:
    """A matching letter stored between the count and the 'y' is kept; the confirmed count goes."""
    stdin = AnswerAfter("y\n", lambda: put(seeded, "f9", at=T0 + 3 * DAY, reason="fatal"))
    result = dlq(url, "purge", "--reason", "fatal", stdin=stdin)
    assert EXIT_OK == result.code, result.err
    assert f"delete 1 letter from queue '{QUEUE}' for good? [y/N] " == result.err
    assert f"deleted 1 letter from queue '{QUEUE}'\n" == result.out
    assert ["a1", "i3", "p4", "m5", "f9"] == remaining(seeded)


def test_purge_all_spares_a_letter_that_arrives_while_the_operator_confirms(
    seeded: DeadLetterQueue, url: str
) -> None:
    """--all deletes the letters it counted, not one stored while the question waited."""
    stdin = AnswerAfter("yes\n", lambda: put(seeded, "late", at=T0 + 3 * DAY))
    result = dlq(url, "purge", "--all", stdin=stdin)
    assert EXIT_OK == result.code, result.err
    assert f"deleted 5 letters from queue '{QUEUE}'\n" == result.out
    assert ["late"] == remaining(seeded)


def test_purge_older_than_spares_a_letter_that_ages_in_while_the_operator_confirms(
    queue: DeadLetterQueue, url: str
) -> None:
    """A letter old enough for --older-than, stored during the question, is kept."""
    now = time.time()
    put(queue, "old", at=now - 3 * DAY)
    put(queue, "new", at=now - HOUR)
    stdin = AnswerAfter("y\n", lambda: put(queue, "old-too", at=now - 5 * DAY))
    result = dlq(url, "purge", "--older-than", "1d", stdin=stdin)
    assert EXIT_OK == result.code, result.err
    assert f"deleted 1 letter from queue '{QUEUE}'\n" == result.out
    assert ["new", "old-too"] == remaining(queue)


def test_purge_reports_letters_gone_while_the_operator_confirmed(
    seeded: DeadLetterQueue, url: str
) -> None:
    """A selected letter removed during the question is not counted as deleted, and it says so."""
    stdin = AnswerAfter("y\n", lambda: seeded.purge(ids=["f2"]))
    result = dlq(url, "purge", "--reason", "fatal,invalid", stdin=stdin)
    assert EXIT_OK == result.code, result.err
    assert f"deleted 1 letter from queue '{QUEUE}'\n" == result.out
    assert result.err.endswith(
        "1 of the 2 letters selected were gone already (redriven or deleted meanwhile)\n"
    )
    assert ["a1", "p4", "m5"] == remaining(seeded)


@pytest.mark.parametrize(
    "argv",
    [["--reason", "fatal,invalid"], ["--id", "f2", "--id", "i3"]],
    ids=["filter", "ids"],
)
def test_purge_emits_the_queue_purged_event(
    seeded: DeadLetterQueue, url: str, argv: list[str]
) -> None:
    """A CLI purge goes through the queue, so its "purged" event fires with the count."""
    events: list[Event] = []
    with scoped_listener(events.append):
        result = dlq(url, "purge", *argv, "--yes")
    assert EXIT_OK == result.code, result.err
    assert [(QUEUE, 2)] == purged_events(events)
    assert ["a1", "p4", "m5"] == remaining(seeded)


def test_purge_deletes_the_snapshot_in_chunks(
    seeded: DeadLetterQueue, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many letters go in chunks of ids, one "purged" event each, and the total is reported."""
    monkeypatch.setattr("invresilience._cli._PURGE_CHUNK", 2)
    events: list[Event] = []
    with scoped_listener(events.append):
        result = dlq(url, "purge", "--all", "--yes")
    assert f"deleted 5 letters from queue '{QUEUE}'\n" == result.out
    assert [(QUEUE, 2), (QUEUE, 2), (QUEUE, 1)] == purged_events(events)
    assert [] == remaining(seeded)


def test_purge_dry_run_emits_no_event(seeded: DeadLetterQueue, url: str) -> None:
    """--dry-run deletes nothing, so no "purged" event fires."""
    events: list[Event] = []
    with scoped_listener(events.append):
        result = dlq(url, "purge", "--all", "--dry-run")
    assert EXIT_OK == result.code
    assert [] == purged_events(events)
    assert 5 == len(remaining(seeded))


# -- stats ------------------------------------------------------------------------------------------


def test_stats_prints_totals_reasons_and_ages(queue: DeadLetterQueue, url: str) -> None:
    """stats prints the total, per reason, oldest/newest in UTC and the oldest's age."""
    now = time.time()
    put(queue, "a", at=now - (3 * DAY + 4 * HOUR + 60), reason="fatal")
    put(queue, "b", at=now - HOUR, reason="fatal")
    put(queue, "c", at=now - 60, reason="exhausted")
    result = dlq(url, "stats")
    assert EXIT_OK == result.code
    iso = datetime.datetime.fromtimestamp(now - 60, tz=datetime.timezone.utc)
    assert [
        f"queue:      {QUEUE}",
        "total:      3",
        "by reason:",
        "  exhausted  1",
        "  fatal      2",
    ] == result.out.splitlines()[:5]
    assert result.out.splitlines()[5].endswith("Z (3d 4h ago)")
    assert f"newest:     {iso:%Y-%m-%dT%H:%M:%S}Z" == result.out.splitlines()[6]


def test_stats_json(seeded: DeadLetterQueue, url: str) -> None:
    """stats --json gives counts, epoch times and the oldest's age in seconds."""
    before = time.time()
    [stats] = dlq(url, "stats", "--json").json_lines()
    assert {
        "queue": QUEUE,
        "total": 5,
        "by_reason": {"exhausted": 1, "fatal": 1, "poison": 1, "invalid": 1, "manual": 1},
        "oldest": T0,
        "newest": T0 + 2 * DAY,
    } == {k: v for k, v in stats.items() if k != "oldest_age_seconds"}
    assert before - T0 <= stats["oldest_age_seconds"] <= time.time() - T0


def test_stats_of_an_empty_queue(url: str) -> None:
    """An empty queue has total 0 and no times."""
    assert f"queue:      {QUEUE}\ntotal:      0\n" == dlq(url, "stats").out
    [stats] = dlq(url, "stats", "--json").json_lines()
    assert (0, None, None) == (stats["total"], stats["oldest"], stats["oldest_age_seconds"])
