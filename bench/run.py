"""Run the benchmarks and print invresilience's rows beside the anchors'.

``nox -s bench`` runs this file; extra arguments after ``--`` reach it::

    python bench/run.py                     # the full run, about a minute
    python bench/run.py --quick             # a smoke run, a few seconds
    python bench/run.py --json out.json --markdown out.md

Benchmarks are reports, not tests: the exit status is 0 even when a budget is over,
unless ``--strict`` is given (then 1). A benchmark that measures the wrong thing (a case
that does not retry as configured, or really sleeps) exits 2.
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

# `python bench/run.py` puts bench/ on sys.path; make `python -m` and imports elsewhere agree.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_retry
from _harness import BASELINE, Result, Runner

HEADERS = ("scenario", "mode", "library", "µs/call", "±", "µs added", "× bare", "Python calls")
ALIGN = ("---", "---", "---", "---:", "---:", "---:", "---:", "---:")


def table(results: list[Result]) -> str:
    """The results as a Markdown table (plain, so it renders in a terminal too)."""
    rows = [
        (
            r.scenario,
            r.mode,
            f"**{r.library}**" if r.library == bench_retry.OURS else r.library,
            f"{r.us_per_call:.2f}",
            f"{r.spread_us:.2f}",
            "–" if r.library == BASELINE else f"{r.us_added:.2f}",
            f"{r.ratio:.1f}",
            str(r.calls_added),
        )
        for r in results
    ]
    return "\n".join(_row(cells) for cells in [HEADERS, ALIGN, *rows])


def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats (smoke run)")
    parser.add_argument("--repeats", type=int, help="repeats per case (default 11, quick 3)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the table here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a budget is over")
    args = parser.parse_args(argv)

    repeats = args.repeats or (3 if args.quick else 11)
    target = 0.02 if args.quick else 0.12
    when = datetime.datetime.now(datetime.timezone.utc)
    started = time.perf_counter()

    cases, skipped = bench_retry.build_cases()
    for name in skipped:
        print(f"note: {name} is not installed; its rows are skipped", file=sys.stderr)
    runner = Runner(repeats=repeats, target=target)
    try:
        problems = bench_retry.check_cases(cases, runner.loop.run_until_complete)
        if problems:
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            return 2
        runner.run(cases)
        results = runner.results(cases)
    finally:
        runner.close()

    verdicts = [budget.verdict(results) for budget in bench_retry.BUDGETS]
    versions = bench_retry.library_versions()
    setup = (
        f"{when:%Y-%m-%d}, {platform.python_implementation()} {versions['python']} on"
        f" {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs;"
        f" median of {repeats} interleaved repeats of ~{target:g} s, gc off while timing; "
        + ", ".join(f"{name} {v}" for name, v in versions.items() if name != "python")
    )
    report = table(results)
    print()
    print(setup)
    print()
    print(report)
    print()
    for _, line in verdicts:
        print(line)
    print(f"\n({time.perf_counter() - started:.0f} s)")

    if args.markdown:
        lines = "\n".join(f"- {line}" for _, line in verdicts)
        args.markdown.write_text(f"{setup}\n\n{report}\n\n{lines}\n", encoding="utf-8")
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
            "results": [dataclasses.asdict(r) for r in results],
            "verdicts": [{"within": ok, "text": line} for ok, line in verdicts],
        }
        args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")

    over = any(not ok for ok, _ in verdicts)
    return 1 if over and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
