"""The ``python -m invresilience`` command line: inspect and operate dead-letter queues.

.. code-block:: text

    python -m invresilience dlq {list,show,redrive,purge,stats} --backend URL --queue NAME [...]

``--backend`` defaults to the environment variable ``INVRES_BACKEND`` and ``--queue``
to ``INVRES_DLQ_QUEUE``. The backend is opened with :func:`invresilience.open_backend`
and the queue with ``backend.dead_letter_queue(NAME)``; a password in the URL is never
printed.

Times (``WHEN``) are ISO-8601 (``2024-05-01``, ``2024-05-01T12:00``,
``2024-05-01T12:00:00+02:00``, ``...Z``; without a timezone they are UTC) or a
duration ago (``30m``, ``2h``, ``7d``, ``1h30m``). Durations (``DURATION``) are a
number and a unit: ``s``, ``m``, ``h``, ``d`` or ``w``, combinable (``1d12h``).

Exit codes:

===== ===================================================================================
0     success
1     ``redrive``: some letters failed again (they stay in the queue)
2     usage or configuration error: bad option, URL, reason, time, cursor or ``--to``
3     the backend is unreachable or failed (the message names it, without its password)
4     a letter named by id was not found
5     aborted at the confirmation (or confirmation needed but stdin is not a terminal)
130   interrupted (Ctrl-C)
===== ===================================================================================

The entry point is :func:`main`, which takes its arguments and streams as parameters so
it can run in-process.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import importlib
import inspect
import json
import math
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO
from urllib.parse import unquote, urlsplit

from ._clock import SYSTEM_CLOCK
from ._core.dlq import (
    REASONS,
    LetterFilter,
    Reason,
    check_letter_id,
    check_queue_name,
    decode_cursor,
)
from ._core.dlq import letter_to_json as _letter_to_json
from ._dlq import PAYLOAD_HEADER
from .backends._url import _redact
from .exceptions import BackendError, BackendUnavailableError, CodecError, ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from _typeshed import SupportsWrite

    from ._core.dlq import DeadLetter
    from ._dlq import DeadLetterQueue, RedriveReport
    from .typing import Backend

__all__ = [
    "EXIT_ABORTED",
    "EXIT_BACKEND",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
]

#: Success.
EXIT_OK: Final = 0
#: ``redrive``: some letters failed again.
EXIT_FAILED: Final = 1
#: Usage or configuration error (argparse's own errors included).
EXIT_USAGE: Final = 2
#: The backend is unreachable or failed.
EXIT_BACKEND: Final = 3
#: A letter named by id was not found.
EXIT_NOT_FOUND: Final = 4
#: Aborted at the confirmation.
EXIT_ABORTED: Final = 5
#: Interrupted by Ctrl-C.
EXIT_INTERRUPTED: Final = 130

PROG: Final = "python -m invresilience"
BACKEND_ENV: Final = "INVRES_BACKEND"
QUEUE_ENV: Final = "INVRES_DLQ_QUEUE"

_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?[smhdw])+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_SQLITE_PREFIX: Final = "sqlite:///"
_DEFAULT_WIDTH: Final = 120
_MIN_ERROR_WIDTH: Final = 20
_MAX_KEY_WIDTH: Final = 32

_TIME_HELP: Final = """\
WHEN is an ISO-8601 time, UTC unless it says otherwise (2024-05-01,
2024-05-01T12:30, 2024-05-01T12:30:00+02:00, 2024-05-01T10:30:00Z), or a
duration meaning that long ago (30m, 2h, 7d, 1h30m).
DURATION is a number and a unit, s m h d or w, combinable: 90s, 15m, 2h, 7d, 1d12h."""

_EXIT_HELP: Final = """\
exit codes:
  0    success
  1    redrive: some letters failed again (they stay in the queue)
  2    usage or configuration error (bad option, URL, reason, time, cursor, --to)
  3    backend unreachable or failed (named without its password)
  4    a letter named by id was not found
  5    aborted at the confirmation
  130  interrupted (Ctrl-C)"""

_RUNBOOK: Final = f"""\
runbook (an incident, step by step):
  export {BACKEND_ENV}=postgresql://app@db/app {QUEUE_ENV}=orders-dlq
  # 1. inspect: how many letters, why and how old; then the recent ones
  {PROG} dlq stats
  {PROG} dlq list --reason fatal --since 2h
  # 2. show one letter whole: payload, error, traceback
  {PROG} dlq show key-3f2a9c0b1d
  # 3. fix the bug and deploy, then hand the jobs back (dry run first)
  {PROG} dlq redrive --to app.jobs:handler --reason fatal --dry-run
  {PROG} dlq redrive --to app.jobs:handler --reason fatal --rate 5
  # 4. delete what can never succeed
  {PROG} dlq purge --reason invalid --older-than 7d"""


class _CliError(Exception):
    """A failure the command reports with a message and an exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Streams:
    __slots__ = ("err", "inp", "out")

    def __init__(self, out: TextIO, err: TextIO, inp: TextIO) -> None:
        self.out = out
        self.err = err
        self.inp = inp


class _Parser(argparse.ArgumentParser):
    """An argument parser that writes to the given streams instead of ``sys``'s."""

    def __init__(self, *args: Any, streams: _Streams, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.streams = streams

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        stream = self.streams.out if file is sys.stdout else self.streams.err
        stream.write(message)


def _say(stream: TextIO, text: str = "") -> None:
    stream.write(text + "\n")


# -- parsing values ---------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``15m``, ``2h``, ``7d``, ``1w`` or ``1d12h``.

    Raises:
        ValueError: *text* is not such a duration, or is zero.

    .. versionadded:: 0.1.0
    """
    value = text.strip().lower()
    if not _DURATION.fullmatch(value):
        raise ValueError(
            f"{text!r} is not a duration: use a number and a unit (s, m, h, d, w), "
            "such as 30m, 2h, 7d or 1h30m"
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value))
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def parse_when(text: str, now: float) -> float:
    """Epoch seconds for an ISO-8601 time (naive: UTC) or a duration ago (``2h``).

    Raises:
        ValueError: *text* is neither.

    .. versionadded:: 0.1.0
    """
    value = text.strip()
    if _DURATION.fullmatch(value.lower()):
        return now - parse_duration(value)
    iso = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO-8601 (2024-05-01T12:30:00, UTC unless it "
            "has an offset such as +02:00 or Z) or a duration ago (30m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def _reasons_arg(text: str) -> list[Reason]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in REASONS]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"unknown reason {', '.join(map(repr, unknown)) or repr(text)}; "
            f"choose from {', '.join(REASONS)}"
        )
    return items  # type: ignore[return-value]


def _when_arg(text: str) -> float:
    try:
        return parse_when(text, SYSTEM_CLOCK.wall())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _rate_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of letters per second"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of letters per second, got {text!r}"
        )
    return value


def _cursor_arg(text: str) -> str:
    try:
        decode_cursor(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a cursor: use the one a listing printed (more: --cursor s42)"
        ) from None
    return text


def _id_arg(text: str) -> str:
    problem = check_letter_id(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"letter id {text!r} {problem}")
    return text


def _target_arg(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not sep or not module.strip() or not attr.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not MODULE:ATTR (for example app.jobs:handler)"
        )
    return text


# -- formatting ---------------------------------------------------------------------------------


def _iso(epoch: float, *, precise: bool = False) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    if precise:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(seconds: float) -> str:
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count >= 1:
            parts.append(f"{int(count)}{unit}")
        if len(parts) == 2:
            break
    return " ".join(parts) or "0s"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: max(width - 3, 0)] + "..."


def _short_type(error_type: str | None) -> str | None:
    if error_type is None:
        return None
    return error_type.removeprefix("builtins.")


def _error_text(letter: DeadLetter) -> str:
    kind = _short_type(letter.error_type)
    message = _one_line(letter.error_message or "")
    if kind and message:
        return f"{kind}: {message}"
    return kind or message or "-"


def _width(stream: TextIO) -> int:
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        pass
    return _DEFAULT_WIDTH


def _table(letters: Sequence[DeadLetter], width: int) -> list[str]:
    headers = ("ID", "REASON", "KEY", "ATTEMPTS", "DEAD-LETTERED (UTC)", "ERROR")
    rows = [
        (
            letter.id,
            letter.reason,
            _cut(letter.key, _MAX_KEY_WIDTH) if letter.key is not None else "-",
            str(letter.attempts),
            _iso(letter.dead_lettered_at),
            _error_text(letter),
        )
        for letter in letters
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers[:-1])]
    used = sum(widths) + 2 * len(widths)
    error_width = max(width - used, _MIN_ERROR_WIDTH)

    def line(cells: Sequence[str]) -> str:
        fixed = "  ".join(
            c.ljust(w) if i != 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells[:-1], widths, strict=True))
        )
        return f"{fixed}  {_cut(cells[-1], error_width)}".rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _payload_view(queue: DeadLetterQueue, letter: DeadLetter) -> tuple[str, str]:
    """``(label, text)`` for the letter's payload as a person should read it."""
    kind = letter.headers.get(PAYLOAD_HEADER)
    if not letter.payload:
        return "empty", ""
    if kind not in ("raw", "repr"):
        try:
            value = queue.decode(letter)
        except CodecError:
            pass
        else:
            return "JSON", json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    origin = {"raw": "raw bytes", "repr": "repr of an unencodable job"}.get(kind or "", "not JSON")
    try:
        return f"{origin}, UTF-8 text", letter.payload.decode("utf-8")
    except UnicodeDecodeError:
        return f"{origin}, base64", base64.b64encode(letter.payload).decode("ascii")


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


# -- the parser ---------------------------------------------------------------------------------


def _build_parser(streams: _Streams) -> tuple[_Parser, _Parser]:
    from . import __version__

    root = _Parser(
        prog=PROG,
        streams=streams,
        description=(
            "invresilience command line. Today it operates dead-letter queues: the jobs\n"
            "your workers could not process, kept to be inspected, redriven or purged."
        ),
        epilog=f"{_RUNBOOK}\n\n{_EXIT_HELP}\n\nSee '{PROG} dlq --help' and '{PROG} dlq ACTION --help'.",
    )
    root.add_argument("--version", action="version", version=f"invresilience {__version__}")
    commands = root.add_subparsers(dest="command", metavar="COMMAND")
    dlq: _Parser = commands.add_parser(
        "dlq",
        streams=streams,
        help="inspect, redrive and purge a dead-letter queue",
        description=(
            "Operate one dead-letter queue. Every action takes --backend URL (or the\n"
            f"{BACKEND_ENV} variable) and --queue NAME (or {QUEUE_ENV}).\n\n"
            "Backend URLs: sqlite:///relative.db, sqlite:////abs/path.db,\n"
            "postgresql://user:password@host:5432/db, redis://host:6379/0."
        ),
        epilog=f"{_RUNBOOK}\n\n{_TIME_HELP}\n\n{_EXIT_HELP}",
    )
    actions = dlq.add_subparsers(dest="action", metavar="ACTION")

    common = _Parser(add_help=False, streams=streams)
    where = common.add_argument_group("where the queue is")
    where.add_argument(
        "--backend",
        metavar="URL",
        help=f"the backend URL (default: ${BACKEND_ENV}), e.g. sqlite:///state.db",
    )
    where.add_argument(
        "--queue", metavar="NAME", help=f"the dead-letter queue's name (default: ${QUEUE_ENV})"
    )

    filters = _Parser(add_help=False, streams=streams)
    group = filters.add_argument_group("filters (all must hold)")
    group.add_argument(
        "--reason",
        action="append",
        type=_reasons_arg,
        metavar="R",
        help=f"only letters with this reason; repeat or comma-separate ({', '.join(REASONS)})",
    )
    group.add_argument("--key", metavar="K", help="only the letter(s) of this idempotency key")
    group.add_argument(
        "--since",
        type=_when_arg,
        metavar="WHEN",
        help="only letters dead-lettered at or after WHEN",
    )
    group.add_argument(
        "--before", type=_when_arg, metavar="WHEN", help="only letters dead-lettered before WHEN"
    )

    def action(
        name: str, summary: str, description: str, examples: str, *parents: _Parser
    ) -> _Parser:
        parser: _Parser = actions.add_parser(
            name,
            streams=streams,
            parents=[common, *parents],
            help=summary,
            description=description,
            epilog=f"examples:\n{examples}\n\n{_TIME_HELP}\n\n{_EXIT_HELP}",
        )
        return parser

    p = action(
        "list",
        "list letters, oldest first, a page at a time",
        "List letters, oldest first: id, reason, idempotency key, attempts, when it was\n"
        "dead-lettered (UTC) and the last error. A full page ends with the option that\n"
        "shows the next one (more: --cursor s42).",
        f"  {PROG} dlq list --backend sqlite:///state.db --queue orders-dlq\n"
        f"  {PROG} dlq list --reason exhausted,fatal --since 2h --limit 20\n"
        f"  {PROG} dlq list --since 2024-05-01 --before 2024-05-02T06:00Z\n"
        f"  {PROG} dlq list --cursor s42\n"
        f"  {PROG} dlq list --json --payload | jq .",
        filters,
    )
    p.add_argument(
        "--limit",
        type=_positive_int_arg,
        default=50,
        metavar="N",
        help="letters per page (default 50)",
    )
    p.add_argument(
        "--cursor",
        metavar="C",
        type=_cursor_arg,
        help="continue after the page that printed this cursor",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='JSON lines: one object per letter, then {"cursor": ...} (null on the last page)',
    )
    p.add_argument("--payload", action="store_true", help="with --json: include each payload")

    p = action(
        "show",
        "show one letter: fields, headers, payload and traceback",
        "Show one letter whole: its fields, headers, the payload (JSON pretty-printed;\n"
        "other bytes as UTF-8 text, or base64 when they are not text) and the traceback\n"
        "of the last failure. Exit code 4 when there is no such letter.",
        f"  {PROG} dlq show key-3f2a9c0b1d\n  {PROG} dlq show 9b1c... --json",
    )
    p.add_argument("id", type=_id_arg, metavar="ID", help="the letter's id (see 'list')")
    p.add_argument(
        "--json", action="store_true", help="one JSON object (payload as text or base64)"
    )

    p = action(
        "redrive",
        "hand letters back to a handler; remove each one once it was handled",
        "Hand letters back, oldest first, to the handler --to names, and remove each letter\n"
        "only once the handler took it. A letter that fails again stays, with one more\n"
        "attempt and the new error recorded; then the exit code is 1.\n\n"
        "--to MODULE:ATTR is imported with the current directory on sys.path (as\n"
        "'python -m' does); ATTR may be dotted (module:obj.attr). What it names is:\n"
        "  - an object with process_letter(), such as an invresilience JobHandler: each\n"
        "    letter's job runs under its idempotency key (work done meanwhile is skipped);\n"
        "  - a class, or a function without positional parameters: a factory, called once\n"
        "    with no arguments, that returns one of these two;\n"
        "  - any other callable: called with each DeadLetter; returning normally means\n"
        "    handled, raising means failed again; an async function is awaited.\n\n"
        "Select with --id (repeatable; exit code 4 if one is not in the queue) or with\n"
        "the filters, not both; no selection redrives every letter. Try --dry-run first.",
        f"  {PROG} dlq redrive --to app.jobs:handler --dry-run\n"
        f"  {PROG} dlq redrive --to app.jobs:handler --reason exhausted --rate 5\n"
        f"  {PROG} dlq redrive --to app.jobs:make_handler --id key-3f2a9c0b1d --id key-77e1\n"
        f"  {PROG} dlq redrive --to app.republish:send --since 1d --limit 100",
        filters,
    )
    p.add_argument(
        "--to",
        required=True,
        type=_target_arg,
        metavar="MODULE:ATTR",
        help="the handler (see above)",
    )
    p.add_argument(
        "--id",
        action="append",
        type=_id_arg,
        metavar="ID",
        dest="ids",
        help="this letter (repeatable)",
    )
    p.add_argument("--limit", type=_positive_int_arg, metavar="N", help="at most N letters")
    p.add_argument(
        "--rate", type=_rate_arg, metavar="PER_SECOND", help="at most this many letters per second"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="only list the letters that would be redriven"
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")

    p = action(
        "purge",
        "delete letters for good (asks first)",
        "Delete letters for good: those named by --id, those the filters select, those\n"
        "older than --older-than, or --all. Without a selection nothing runs. It shows\n"
        "how many letters would go and asks for 'y' on stdin; --yes skips the question\n"
        "(needed when stdin is not a terminal, such as in scripts and cron jobs).\n"
        "--id does not mix with the other selections; an --id not in the queue is named\n"
        "and makes the exit code 4 (the others are still deleted).",
        f"  {PROG} dlq purge --reason invalid --older-than 7d --dry-run\n"
        f"  {PROG} dlq purge --reason invalid --older-than 7d\n"
        f"  {PROG} dlq purge --id key-3f2a9c0b1d --yes\n"
        f"  {PROG} dlq purge --all --yes",
        filters,
    )
    p.add_argument(
        "--id",
        action="append",
        type=_id_arg,
        metavar="ID",
        dest="ids",
        help="this letter (repeatable)",
    )
    p.add_argument(
        "--older-than",
        type=_duration_arg,
        metavar="DURATION",
        help="letters dead-lettered more than DURATION ago",
    )
    p.add_argument("--all", action="store_true", help="every letter of the queue")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--dry-run", action="store_true", help="only count the letters that would be deleted"
    )

    p = action(
        "stats",
        "how many letters, per reason, and how old",
        "The queue at a glance: how many letters, how many per reason, the oldest and\n"
        "newest (UTC) and the age of the oldest.",
        f"  {PROG} dlq stats\n  {PROG} dlq stats --json",
    )
    p.add_argument("--json", action="store_true", help="one JSON object (times in epoch seconds)")
    return root, dlq


# -- the backend --------------------------------------------------------------------------------


class _Session:
    """The opened backend and queue of one command, and how to name them safely."""

    def __init__(self, url: str, queue_name: str) -> None:
        try:
            urlsplit(url)
        except ValueError as exc:
            # Not even a URL: too broken to tell its password apart, so it is not shown.
            raise _CliError(EXIT_USAGE, f"bad --backend: not a URL ({exc})") from None
        self.url = url
        self.shown = _redact(url)
        self.queue_name = queue_name
        self.backend: Backend | None = None

    def scrub(self, text: str) -> str:
        """*text* with the URL's password, if any, replaced by ``***``.

        The password is replaced where it appears as in a URL (``:pw@``) or a conninfo
        (``password=pw``), and anywhere when it is long enough not to be a common word.
        """
        text = text.replace(self.url, self.shown)
        password = urlsplit(self.url).password
        for secret in {password, unquote(password)} if password else ():
            text = text.replace(f":{secret}@", ":***@").replace(f"={secret}", "=***")
            if len(secret) >= 6:
                text = text.replace(secret, "***")
        return text

    def open(self) -> DeadLetterQueue:
        from .backends import open_backend

        if self.url.startswith(_SQLITE_PREFIX):
            path = self.url[len(_SQLITE_PREFIX) :].partition("?")[0]
            if path and path != ":memory:" and not os.path.exists(path):
                raise _CliError(
                    EXIT_USAGE,
                    f"no SQLite database at {path!r} (from --backend {self.shown}); the path "
                    "after sqlite:/// is relative to the current directory, use sqlite://// "
                    "for an absolute one",
                )
        try:
            self.backend = open_backend(self.url)
        except ConfigurationError as exc:
            raise _CliError(EXIT_USAGE, f"bad --backend: {self.scrub(str(exc))}") from None
        except ImportError as exc:
            raise _CliError(EXIT_USAGE, self.scrub(str(exc))) from None
        return self.backend.dead_letter_queue(self.queue_name)

    def close(self) -> None:
        if self.backend is not None:
            backend, self.backend = self.backend, None
            backend.close()

    def describe(self, exc: BackendError) -> str:
        cause = exc.__cause__
        detail = _one_line(str(exc))
        reason = _one_line(str(cause)) if cause is not None else ""
        if reason and reason not in detail:
            detail = f"{detail} ({type(cause).__name__}: {reason})"
        verb = "cannot reach" if isinstance(exc, BackendUnavailableError) else "error from"
        return self.scrub(f"{verb} backend {self.shown}: {detail}")


# -- the handler --------------------------------------------------------------------------------


def _takes_no_positional(func: Any) -> bool:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return False
    positional = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
    )
    return not any(p.kind in positional for p in signature.parameters.values())


def _is_target(obj: object) -> bool:
    return callable(getattr(obj, "process_letter", None)) or (
        callable(obj) and not isinstance(obj, type)
    )


def load_target(spec: str) -> Any:
    """The redrive target ``MODULE:ATTR`` names: a job handler or a callable taking a letter.

    The current directory is put first on ``sys.path`` (as ``python -m`` does). A class
    or a function without positional parameters is a factory: it is called once with no
    arguments and must return a handler or a callable. An async callable is run to
    completion for each letter.

    Raises:
        ValueError: The module cannot be imported, the attribute is missing, or it is
            not (and does not make) a handler.

    .. versionadded:: 0.1.0
    """
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise ValueError(
                f"--to {spec}: no module named {module_name!r} (looked in the current "
                f"directory {cwd} and sys.path)"
            ) from None
        raise ValueError(f"--to {spec}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- any error in the user's module is reported
        raise ValueError(
            f"--to {spec}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"--to {spec}: {module_name!r} has no attribute {attr!r}") from None
    if not callable(getattr(obj, "process_letter", None)) and (
        isinstance(obj, type) or (callable(obj) and _takes_no_positional(obj))
    ):
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001 -- any error in the user's factory is reported
            raise ValueError(
                f"--to {spec}: calling the factory {attr}() failed: {type(exc).__name__}: {exc}"
            ) from None
    if not _is_target(obj):
        raise ValueError(
            f"--to {spec}: {type(obj).__name__} is neither a JobHandler (process_letter) nor a "
            "callable taking a DeadLetter"
        )
    if callable(getattr(obj, "process_letter", None)):
        return obj
    return _run_to_completion(obj)


def _run_to_completion(func: Callable[[DeadLetter], object]) -> Callable[[DeadLetter], object]:
    def call(letter: DeadLetter) -> object:
        result = func(letter)
        if inspect.isawaitable(result):
            awaitable = result

            async def wait() -> object:
                return await awaitable

            result = asyncio.run(wait())
        return result

    return call


# -- the commands -------------------------------------------------------------------------------


class _Command:
    """One action, run with its parsed arguments against one queue."""

    def __init__(self, args: argparse.Namespace, streams: _Streams, queue: DeadLetterQueue) -> None:
        self.args = args
        self.streams = streams
        self.queue = queue

    @property
    def out(self) -> TextIO:
        return self.streams.out

    def where(self) -> LetterFilter:
        reasons: list[Reason] = [r for group in self.args.reason or () for r in group]
        return LetterFilter(
            reasons=frozenset(reasons) if reasons else None,
            key=self.args.key,
            since=self.args.since,
            before=self.args.before,
        )

    def letters_by_id(self, ids: Iterable[str]) -> tuple[list[DeadLetter], list[str]]:
        found: list[DeadLetter] = []
        missing: list[str] = []
        for letter_id in dict.fromkeys(ids):
            letter = self.queue.get(letter_id)
            if letter is None:
                missing.append(letter_id)
            else:
                found.append(letter)
        if missing:
            _say(
                self.streams.err,
                f"not found in queue {self.queue.name!r}: {', '.join(missing)}",
            )
        return found, missing

    def selected(self, where: LetterFilter, limit: int | None) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        after = 0
        while limit is None or len(out) < limit:
            size = 500 if limit is None else min(500, limit - len(out))
            page = self.queue.store.list(where, after=after, limit=size)
            out.extend(page)
            if len(page) < size:
                break
            after = page[-1].sequence
        return out

    def selected_ids(self, where: LetterFilter) -> list[str]:
        """The ids of the letters *where* selects now, oldest first."""
        return [
            letter.id
            for letter in self.queue.iter(
                reason=where.reasons,
                key=where.key,
                since=where.since,
                before=where.before,
                page_size=_PURGE_CHUNK,
            )
        ]

    # -- list -------------------------------------------------------------------------------

    def list(self) -> int:
        where = self.where()
        page = self.queue.list(
            reason=where.reasons,
            key=where.key,
            since=where.since,
            before=where.before,
            limit=self.args.limit,
            cursor=self.args.cursor,
        )
        if self.args.json:
            for letter in page.letters:
                _say(self.out, _dump(_letter_to_json(letter, payload=self.args.payload)))
            _say(self.out, _dump({"cursor": page.cursor}))
            return EXIT_OK
        if not page.letters:
            match = "" if where.is_everything and self.args.cursor is None else " match"
            _say(self.out, f"no letters{match} in queue {self.queue.name!r}")
        else:
            for line in _table(page.letters, _width(self.out)):
                _say(self.out, line)
        if page.cursor is not None:
            _say(self.out, f"more: --cursor {page.cursor}")
        return EXIT_OK

    # -- show -------------------------------------------------------------------------------

    def show(self) -> int:
        letter = self.queue.get(self.args.id)
        if letter is None:
            raise _CliError(
                EXIT_NOT_FOUND, f"no letter {self.args.id!r} in queue {self.queue.name!r}"
            )
        if self.args.json:
            _say(self.out, _dump(_letter_to_json(letter, payload=True)))
            return EXIT_OK
        fields = [
            ("id", letter.id),
            ("queue", letter.queue),
            ("reason", letter.reason),
            ("key", letter.key or "-"),
            ("fingerprint", letter.fingerprint or "-"),
            ("attempts", str(letter.attempts)),
            ("error type", letter.error_type or "-"),
            ("error message", _one_line(letter.error_message or "") or "-"),
            ("first failed", _iso(letter.first_failed_at, precise=True)),
            ("last failed", _iso(letter.last_failed_at, precise=True)),
            ("dead-lettered", _iso(letter.dead_lettered_at, precise=True)),
            ("sequence", str(letter.sequence)),
        ]
        for name, value in fields:
            _say(self.out, f"{name + ':':<15} {value}")
        if letter.headers:
            _say(self.out, "headers:")
            for name in sorted(letter.headers):
                _say(self.out, f"  {name}: {letter.headers[name]}")
        else:
            _say(self.out, f"{'headers:':<15} -")
        label, text = _payload_view(self.queue, letter)
        _say(self.out, f"payload ({label}, {len(letter.payload)} bytes):")
        if text:
            _say(self.out, _indent(text))
        if letter.traceback:
            _say(self.out, "traceback:")
            _say(self.out, _indent(letter.traceback.rstrip("\n")))
        else:
            _say(self.out, f"{'traceback:':<15} -")
        return EXIT_OK

    # -- redrive ----------------------------------------------------------------------------

    def redrive(self) -> int:
        where = self.where()
        ids: list[str] | None = self.args.ids
        if ids and not where.is_everything:
            raise _CliError(EXIT_USAGE, "--id cannot be combined with the filters")
        try:
            target = load_target(self.args.to)
        except ValueError as exc:
            raise _CliError(EXIT_USAGE, str(exc)) from None
        missing: list[str] = []
        letters: list[DeadLetter] = []
        if ids:
            letters, missing = self.letters_by_id(ids)
            if self.args.limit is not None:
                letters = letters[: self.args.limit]
            if not letters:
                return EXIT_NOT_FOUND
        elif self.args.dry_run:
            letters = self.selected(where, self.args.limit)
        if self.args.dry_run:
            if letters:
                for line in _table(letters, _width(self.out)):
                    _say(self.out, line)
            _say(
                self.out,
                f"would redrive {_n(len(letters))} to {self.args.to} (dry run: nothing changed)",
            )
            return EXIT_NOT_FOUND if missing else EXIT_OK
        report = self.queue.redrive(
            target,
            ids=[letter.id for letter in letters] if ids else None,
            reason=where.reasons,
            key=where.key,
            since=where.since,
            before=where.before,
            limit=self.args.limit,
            rate=self.args.rate,
        )
        self.print_report(report)
        if report.failed:
            return EXIT_FAILED
        return EXIT_NOT_FOUND if missing else EXIT_OK

    def print_report(self, report: RedriveReport) -> None:
        if self.args.json:
            _say(
                self.out,
                _dump(
                    {
                        "redriven": list(report.redriven),
                        "skipped": list(report.skipped),
                        "failed": [{"id": i, "error": e} for i, e in report.failed],
                    }
                ),
            )
            return
        _say(
            self.out,
            f"redriven: {len(report.redriven)}, skipped (already done): {len(report.skipped)}, "
            f"failed again: {len(report.failed)}",
        )
        if report.failed:
            _say(self.out, "failed (kept in the queue):")
            width = max(len(i) for i, _ in report.failed)
            for letter_id, error in report.failed:
                _say(self.out, f"  {letter_id.ljust(width)}  {_one_line(error)}")

    # -- purge ------------------------------------------------------------------------------

    def purge(self) -> int:
        where = self.where()
        ids: list[str] | None = self.args.ids
        older_than: float | None = self.args.older_than
        everything: bool = self.args.all
        if older_than is not None:
            cutoff = self.queue.clock.wall() - older_than
            before = cutoff if where.before is None else min(cutoff, where.before)
            where = LetterFilter(
                reasons=where.reasons, key=where.key, since=where.since, before=before
            )
        if ids and (everything or not where.is_everything):
            raise _CliError(EXIT_USAGE, "--id cannot be combined with --all or the filters")
        if everything and not where.is_everything:
            raise _CliError(EXIT_USAGE, "--all cannot be combined with the filters or --older-than")
        if not ids and not everything and where.is_everything:
            raise _CliError(
                EXIT_USAGE,
                "purge needs a selection: --id ID, filters (--reason, --key, --since, "
                "--before), --older-than DURATION, or --all",
            )
        missing: list[str] = []
        # The letters to delete are fixed here, when they are counted: the operator confirms
        # this count, and a letter that arrives (or starts matching) while the question waits
        # must not be deleted with the others. A dry run only counts, so it need not list them.
        doomed: list[str] = []
        if ids:
            letters, missing = self.letters_by_id(ids)
            doomed = [letter.id for letter in letters]
            count = len(doomed)
        elif self.args.dry_run:
            count = self.queue.store.count(where)
        else:
            doomed = self.selected_ids(where)
            count = len(doomed)
        not_found = EXIT_NOT_FOUND if missing else EXIT_OK
        place = f"queue {self.queue.name!r}"
        if count == 0:
            _say(self.out, f"no letters to delete in {place}")
            return not_found
        if self.args.dry_run:
            _say(self.out, f"would delete {_n(count)} from {place} (dry run: nothing changed)")
            return not_found
        if not self.args.yes:
            self.confirm(count, place)
        # Through the queue, not the store, so that its "purged" events fire.
        deleted = 0
        for start in range(0, len(doomed), _PURGE_CHUNK):
            deleted += self.queue.purge(ids=doomed[start : start + _PURGE_CHUNK])
        _say(self.out, f"deleted {_n(deleted)} from {place}")
        if deleted < count:
            _say(
                self.streams.err,
                f"{count - deleted} of the {_n(count)} selected were gone already "
                "(redriven or deleted meanwhile)",
            )
        return not_found

    def confirm(self, count: int, place: str) -> None:
        inp = self.streams.inp
        if not inp.isatty():
            raise _CliError(
                EXIT_ABORTED,
                f"{_n(count)} would be deleted from {place}, but stdin is not a terminal to "
                "confirm it: pass --yes to delete them (or --dry-run to only count)",
            )
        # The question goes to stderr, so that it shows even when stdout is redirected.
        self.streams.err.write(f"delete {_n(count)} from {place} for good? [y/N] ")
        self.streams.err.flush()
        answer = inp.readline()
        if answer.strip().lower() not in ("y", "yes"):
            raise _CliError(EXIT_ABORTED, "aborted: nothing was deleted")

    # -- stats ------------------------------------------------------------------------------

    def stats(self) -> int:
        stats = self.queue.stats()
        age = None if stats.oldest is None else max(self.queue.clock.wall() - stats.oldest, 0.0)
        if self.args.json:
            _say(
                self.out,
                _dump(
                    {
                        "queue": self.queue.name,
                        "total": stats.total,
                        "by_reason": dict(stats.by_reason),
                        "oldest": stats.oldest,
                        "newest": stats.newest,
                        "oldest_age_seconds": age,
                    }
                ),
            )
            return EXIT_OK
        _say(self.out, f"{'queue:':<11} {self.queue.name}")
        _say(self.out, f"{'total:':<11} {stats.total}")
        if stats.by_reason:
            width = max(len(r) for r in stats.by_reason)
            _say(self.out, "by reason:")
            for reason, count in stats.by_reason.items():
                _say(self.out, f"  {reason.ljust(width)}  {count}")
        if age is not None and stats.oldest is not None and stats.newest is not None:
            _say(self.out, f"{'oldest:':<11} {_iso(stats.oldest)} ({_age(age)} ago)")
            _say(self.out, f"{'newest:':<11} {_iso(stats.newest)}")
        return EXIT_OK


#: How many letter ids one ``purge`` call deletes (and one listing page fetches).
_PURGE_CHUNK = 1000


def _n(count: int) -> str:
    return f"{count} letter" + ("" if count == 1 else "s")


# -- main ---------------------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run the command line; the exit code.

    Args:
        argv: The arguments after the program name (``sys.argv[1:]`` when ``None``).
        stdout: Where results go (``sys.stdout`` when ``None``).
        stderr: Where errors and notes go (``sys.stderr`` when ``None``).
        stdin: Where confirmations are read from (``sys.stdin`` when ``None``).

    Returns:
        The exit code: see the module documentation.

    .. versionadded:: 0.1.0
    """
    streams = _Streams(
        stdout if stdout is not None else sys.stdout,
        stderr if stderr is not None else sys.stderr,
        stdin if stdin is not None else sys.stdin,
    )
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), streams)
    except KeyboardInterrupt:
        _say(streams.err, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head``): it had what it wanted. Point stdout at
        # /dev/null so that the interpreter's final flush does not fail again.
        if streams.out is sys.stdout:
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: list[str], streams: _Streams) -> int:
    parser, dlq = _build_parser(streams)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(streams.err)
        return EXIT_USAGE
    if args.action is None:
        dlq.print_help(streams.err)
        return EXIT_USAGE
    prog = f"{PROG} dlq {args.action}"
    try:
        url = args.backend or os.environ.get(BACKEND_ENV, "")
        if not url:
            raise _CliError(
                EXIT_USAGE,
                f"no backend: pass --backend URL or set {BACKEND_ENV} "
                "(for example sqlite:///state.db or postgresql://user@host/db)",
            )
        name = args.queue or os.environ.get(QUEUE_ENV, "")
        if not name:
            raise _CliError(EXIT_USAGE, f"no queue: pass --queue NAME or set {QUEUE_ENV}")
        if check_queue_name(name) is not None:
            raise _CliError(EXIT_USAGE, f"bad --queue {name!r}: {check_queue_name(name)}")
        session = _Session(url, name)
        try:
            queue = session.open()
            command = _Command(args, streams, queue)
            run: Callable[[], int] = getattr(command, args.action)
            return run()
        except BackendError as exc:
            raise _CliError(EXIT_BACKEND, session.describe(exc)) from None
        except ConfigurationError as exc:
            raise _CliError(EXIT_USAGE, session.scrub(str(exc))) from None
        finally:
            with contextlib.suppress(BackendError):
                session.close()
    except _CliError as exc:
        _say(streams.err, f"{prog}: error: {exc.message}")
        if exc.code == EXIT_USAGE:
            _say(streams.err, f"(see '{prog} --help')")
        return exc.code
