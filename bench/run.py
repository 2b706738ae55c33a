"""Run the benchmarks and print invresilience's rows beside the anchors'.

``nox -s bench`` runs this file; extra arguments after ``--`` reach it::

    python bench/run.py                     # the full run, a few minutes
    python bench/run.py --quick             # a smoke run, under a minute
    python bench/run.py --only breaker      # one module: retry, breaker, admission, idempotency, dlq, sharding
    python bench/run.py --json out.json --markdown out.md

Benchmarks are reports, not tests: the exit status is 0 even when a budget is over,
unless ``--strict`` is given (then 1). A benchmark that measures the wrong thing (a case
that does not retry as configured, or really sleeps; a breaker that does not reject;
a limiter that rejects; a claim that does not acquire, a replay that does not replay) exits
2, before timing or after it.

The idempotency and dlq modules need Redis and PostgreSQL (``INVRES_REDIS_URL``,
``INVRES_POSTGRES_URL``, local defaults as for the tests); an unreachable one is skipped and
its verdicts say so.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

# `python bench/run.py` puts bench/ on sys.path; make `python -m` and imports elsewhere agree.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_admission
import bench_breaker
import bench_dlq
import bench_idempotency
import bench_retry
import bench_sharding
from _harness import BASELINE, Case, Gap, Result, Runner

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

HEADERS = ("scenario", "mode", "library", "µs/call", "±", "µs added", "× bare", "Python calls")
ALIGN = ("---", "---", "---", "---:", "---:", "---:", "---:", "---:")
OURS = "invresilience"


@dataclasses.dataclass
class Bench:
    """One benchmark module, seen the same way whatever its age.

    ``bench_retry`` builds its cases without an event loop and has no notes, gaps or
    teardown; the breaker and admission modules take a coroutine runner (to prepare async
    anchors on the loop that times them) and describe what they could not time.
    ``per_item`` names the scenarios whose timed call handles several items (a batch):
    their figures are shown per item.
    """

    key: str
    title: str
    libraries: tuple[str, ...]
    build: Callable[[Callable[[Awaitable[Any]], Any]], tuple[list[Case], list[str]]]
    check: Callable[[list[Case], Callable[[Awaitable[Any]], Any]], list[str]]
    budgets: tuple[Any, ...]
    notes: tuple[str, ...] = ()
    gaps: Sequence[Gap] = ()
    baseline_labels: dict[str, str] = dataclasses.field(default_factory=dict)
    teardown: Callable[[], None] = lambda: None
    per_item: dict[str, int] = dataclasses.field(default_factory=dict)
    configure: Callable[..., None] = lambda *, quick: None
    cases: list[Case] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)


BENCHES = (
    Bench(
        "retry",
        "Retries",
        bench_retry.LIBRARIES,
        lambda run: bench_retry.build_cases(),
        bench_retry.check_cases,
        bench_retry.BUDGETS,
    ),
    Bench(
        "breaker",
        bench_breaker.TITLE,
        bench_breaker.LIBRARIES,
        bench_breaker.build_cases,
        bench_breaker.check_cases,
        bench_breaker.BUDGETS,
        bench_breaker.NOTES,
        bench_breaker.GAPS,
        bench_breaker.BASELINE_LABELS,
    ),
    Bench(
        "admission",
        bench_admission.TITLE,
        bench_admission.LIBRARIES,
        bench_admission.build_cases,
        bench_admission.check_cases,
        bench_admission.BUDGETS,
        bench_admission.NOTES,
        bench_admission.GAPS,
        bench_admission.BASELINE_LABELS,
        bench_admission.teardown,
    ),
    Bench(
        "idempotency",
        bench_idempotency.TITLE,
        bench_idempotency.LIBRARIES,
        bench_idempotency.build_cases,
        bench_idempotency.check_cases,
        bench_idempotency.BUDGETS,
        bench_idempotency.NOTES,
        bench_idempotency.GAPS,
        bench_idempotency.BASELINE_LABELS,
        bench_idempotency.teardown,
        bench_idempotency.PER_ITEM,
    ),
    Bench(
        "dlq",
        bench_dlq.TITLE,
        bench_dlq.LIBRARIES,
        bench_dlq.build_cases,
        bench_dlq.check_cases,
        bench_dlq.BUDGETS,
        bench_dlq.NOTES,
        bench_dlq.GAPS,
        bench_dlq.BASELINE_LABELS,
        bench_dlq.teardown,
        bench_dlq.PER_ITEM,
    ),
    Bench(
        "sharding",
        bench_sharding.TITLE,
        bench_sharding.LIBRARIES,
        bench_sharding.build_cases,
        bench_sharding.check_cases,
        bench_sharding.BUDGETS,
        bench_sharding.NOTES,
        bench_sharding.GAPS,
        bench_sharding.BASELINE_LABELS,
        bench_sharding.teardown,
        bench_sharding.PER_ITEM,
        bench_sharding.configure,
    ),
)


def table(bench: Bench, results: list[Result]) -> str:
    """The results as a Markdown table (plain, so it renders in a terminal too).

    Rows the module could not time (an anchor without that API, or not installed) are
    listed where they would be, with the reason instead of figures. Scenarios in
    ``bench.per_item`` show their times per item (the ratio is the same either way).
    """
    gaps = list(bench.gaps) + [
        Gap(r.scenario, r.mode, name, "not installed")
        for name in bench.skipped
        for r in results
        if r.library == BASELINE
    ]
    rows = []
    for i, r in enumerate(results):
        if r.library == BASELINE:
            library = bench.baseline_labels.get(r.scenario, BASELINE)
        elif r.library.startswith(OURS):
            library = f"**{r.library}**"
        else:
            library = r.library
        per = bench.per_item.get(r.scenario, 1)
        rows.append(
            (
                r.scenario,
                r.mode,
                library,
                f"{r.us_per_call / per:.2f}",
                f"{r.spread_us / per:.2f}",
                "–" if r.library == BASELINE else f"{r.us_added / per:.2f}",
                f"{r.ratio:.1f}",
                str(r.calls_added),
            )
        )
        last = i + 1 == len(results) or (results[i + 1].scenario, results[i + 1].mode) != (
            r.scenario,
            r.mode,
        )
        if last:
            rows.extend(
                (g.scenario, g.mode, f"{g.library}: {g.reason}", "–", "–", "–", "–", "–")
                for g in gaps
                if (g.scenario, g.mode) == (r.scenario, r.mode)
            )
    return "\n".join(_row(cells) for cells in [HEADERS, ALIGN, *rows])


def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


def _load() -> str:
    """The 1-minute load average (how busy the shared machine was), or "unknown"."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:  # pragma: no cover - not on this platform
        return "unknown"


def library_versions(libraries: list[str]) -> dict[str, str]:
    """Installed versions (``"missing"`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": sys.version.split()[0]}
    for name in libraries:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "source tree" if name == OURS else "missing"
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats (smoke run)")
    parser.add_argument("--repeats", type=int, help="repeats per case (default 11, quick 3)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the table here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a budget is over")
    parser.add_argument(
        "--only",
        action="append",
        choices=[b.key for b in BENCHES],
        metavar="NAME",
        help="run only this benchmark (retry, breaker, admission, idempotency, dlq, sharding); repeatable",
    )
    args = parser.parse_args(argv)

    repeats = args.repeats or (3 if args.quick else 11)
    target = 0.02 if args.quick else 0.12
    when = datetime.datetime.now(datetime.timezone.utc)
    started = time.perf_counter()
    load_before = _load()
    benches = [b for b in BENCHES if not args.only or b.key in args.only]

    runner = Runner(repeats=repeats, target=target)
    run = runner.loop.run_until_complete
    try:
        for bench in benches:
            bench.configure(quick=args.quick)
            bench.cases, bench.skipped = bench.build(run)
            for name in bench.skipped:
                print(f"note: {name} is not installed; its rows are skipped", file=sys.stderr)
        problems = [p for b in benches for p in b.check(b.cases, run)]
        if problems:
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            return 2
        # All cases in one interleaved run, so the noise falls on every module alike.
        runner.run([case for b in benches for case in b.cases])
        # A case that stopped doing what it was checked for while it was timed (a
        # breaker that closed, a limiter that started rejecting) invalidates its figures.
        problems = [f"after timing, {p}" for b in benches for p in b.check(b.cases, run)]
        if problems:
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            return 2
        results = {b.key: runner.results(b.cases) for b in benches}
    finally:
        for bench in benches:
            bench.teardown()
        runner.close()

    verdicts = {b.key: [budget.verdict(results[b.key]) for budget in b.budgets] for b in benches}
    libraries = list(dict.fromkeys(name for b in benches for name in b.libraries))
    versions = library_versions(libraries)
    setup = (
        f"{when:%Y-%m-%d}, {platform.python_implementation()} {versions['python']} on"
        f" {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs;"
        f" median of {repeats} interleaved repeats of ~{target:g} s, gc off while timing;"
        f" load average {load_before} before the run, {_load()} after; "
        + ", ".join(f"{name} {v}" for name, v in versions.items() if name != "python")
    )
    sections = []
    for bench in benches:
        lines = [f"### {bench.title}", "", table(bench, results[bench.key]), ""]
        if bench.notes:
            lines += [*(f"- note: {note}" for note in bench.notes), ""]
        lines += [f"- {line}" for _, line in verdicts[bench.key]]
        sections.append("\n".join(lines))
    report = "\n\n".join(sections)
    print()
    print(setup)
    print()
    print(report)
    print(f"\n({time.perf_counter() - started:.0f} s)")

    if args.markdown:
        args.markdown.write_text(f"{setup}\n\n{report}\n", encoding="utf-8")
    if args.json:
        document = {
            "date": when.isoformat(timespec="seconds"),
            "python": versions["python"],
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": versions,
            "repeats": repeats,
            "target_seconds": target,
            "gc": "disabled while timing, collected before each loop",
            "benchmarks": {
                b.key: {
                    "title": b.title,
                    "results": [dataclasses.asdict(r) for r in results[b.key]],
                    "not_timed": [dataclasses.asdict(g) for g in b.gaps]
                    + [{"library": name, "reason": "not installed"} for name in b.skipped],
                    "notes": list(b.notes),
                    "items_per_call": b.per_item,
                    "verdicts": [{"within": ok, "text": line} for ok, line in verdicts[b.key]],
                }
                for b in benches
            },
        }
        args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")

    over = any(not ok for b in benches for ok, _ in verdicts[b.key])
    return 1 if over and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
