"""Development tasks: ``nox -l`` lists them, ``nox`` runs lint, typecheck and tests.

Every session installs pinned requirements from ``requirements/*.txt`` (see
``requirements/README.md``), so a run here matches a run in CI.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
REQUIREMENTS = ROOT / "requirements"
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# The oldest supported Python: pins compiled with it install on every newer one.
PIN_PYTHON = PYTHONS[0]

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"
# A missing interpreter skips its session instead of failing the run (CI=true would
# otherwise turn it into an error); CI pins the interpreter it wants with `-p`.
nox.options.error_on_missing_interpreters = False
# Only the package registries are reachable: never try to download an interpreter.
nox.options.download_python = "never"


def _expose_pyenv_interpreters() -> None:
    """Put every installed CPython 3.10-3.13 on ``PATH`` for this process.

    pyenv only exposes its *global* versions, and through shims that fail for the
    others ("pyenv: python3.12: command not found"), so nox would not find them.
    Prepending the newest patch release of each minor version's ``bin`` makes
    ``python3.X`` resolve to the real interpreter. A no-op without pyenv.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    versions = root / "versions"
    if not versions.is_dir():
        return
    newest: dict[str, tuple[tuple[int, ...], Path]] = {}
    for candidate in versions.iterdir():
        match = re.fullmatch(r"(3\.\d+)\.(\d+)", candidate.name)
        if match is None or match.group(1) not in PYTHONS:
            continue
        minor = match.group(1)
        patch = (int(match.group(2)),)
        if (candidate / "bin" / f"python{minor}").exists() and (
            minor not in newest or patch > newest[minor][0]
        ):
            newest[minor] = (patch, candidate / "bin")
    extra = [str(bin_dir) for _, (_, bin_dir) in sorted(newest.items())]
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join(extra + [p for p in path if p not in extra])


_expose_pyenv_interpreters()


def _existing(*paths: str) -> list[str]:
    """Return those of *paths* (relative to the repository) that are or hold Python files."""
    return [p for p in paths if (ROOT / p).is_file() or any((ROOT / p).rglob("*.py"))]


def _requirements(name: str) -> str:
    return str(REQUIREMENTS / f"{name}.txt")


@nox.session
def lint(session: nox.Session) -> None:
    """Run ruff's linter and check formatting."""
    session.install("-r", _requirements("lint"))
    paths = _existing("src", "tests", "bench", "examples", "docs", "noxfile.py")
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Run ``mypy --strict`` over the package, the typing tests, examples, bench and this file."""
    session.install("-r", _requirements("typecheck"))
    session.install("--no-deps", "-e", ".")
    paths = _existing("src", "tests/typing", "examples", "bench", "noxfile.py")
    session.run("mypy", "--strict", *paths, *session.posargs)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite with branch coverage; extra arguments go to pytest.

    Tests that need PostgreSQL, Redis or RabbitMQ are skipped when the server is
    unreachable, unless ``INVRES_REQUIRE_SERVICES=1``: see ``tests/services.py``.
    The coverage bar (``fail_under`` in pyproject.toml) applies to the whole suite;
    for a subset, add ``--cov-fail-under=0``:
    ``nox -s tests-3.12 -- tests/unit/test_retry.py --cov-fail-under=0``.
    """
    session.install("-r", _requirements("tests"))
    session.install("--no-deps", "-e", ".")
    env = {key: value for key, value in os.environ.items() if key.startswith("INVRES_")}
    # pytest exits 5 when no test ran: that fails the session, on purpose.
    session.run(
        "pytest",
        "--cov=invresilience",
        "--cov-branch",
        "--cov-report=term-missing",
        *session.posargs,
        env=env,
    )


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML docs and run their doctests, warnings as errors."""
    if not (ROOT / "docs" / "conf.py").exists():
        session.skip("docs/conf.py does not exist yet")
    session.install("-r", _requirements("docs"))
    session.install("--no-deps", "-e", ".")
    scripts = sorted((ROOT / "docs" / "_scripts").glob("*.py"))
    for script in scripts:
        session.run("python", str(script.relative_to(ROOT)))
    for builder in ("html", "doctest"):
        session.run(
            "sphinx-build",
            "-W",
            "--keep-going",
            "-n",
            "-b",
            builder,
            "docs",
            f"docs/_build/{builder}",
            *session.posargs,
        )


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and wheel into dist/ and check their metadata."""
    session.install("-r", _requirements("build"))
    dist = ROOT / "dist"
    if dist.exists():
        shutil.rmtree(dist)
    session.run("python", "-m", "build", "--outdir", str(dist))
    session.run("twine", "check", "--strict", *(str(p) for p in sorted(dist.iterdir())))


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks beside their anchors; extra arguments go to the benchmarks."""
    bench_dir = ROOT / "bench"
    runner = bench_dir / "run.py"
    scripts = [runner] if runner.exists() else sorted(bench_dir.glob("bench_*.py"))
    if not scripts:
        session.skip("no bench/run.py or bench/bench_*.py yet")
    session.install("-r", _requirements("bench"))
    session.install("--no-deps", ".")
    for script in scripts:
        session.run("python", str(script.relative_to(ROOT)), *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the retry demo from examples/."""
    demo_script = ROOT / "examples" / "retry_demo.py"
    if not demo_script.exists():
        session.skip("examples/retry_demo.py does not exist yet")
    session.install(".")
    session.run("python", str(demo_script.relative_to(ROOT)), *session.posargs)


@nox.session(python=PIN_PYTHON)
def pin(session: nox.Session) -> None:
    """Re-pin requirements/*.txt from *.in with pip-compile; extra arguments go to it.

    ``nox -s pin -- --upgrade`` moves every pin to the newest release.
    """
    session.install("-r", _requirements("pip-tools"))
    for source in sorted(REQUIREMENTS.glob("*.in")):
        session.run(
            "pip-compile",
            "--quiet",
            "--strip-extras",
            "--allow-unsafe",
            "--no-emit-index-url",
            "--no-emit-find-links",
            "--output-file",
            str(source.with_suffix(".txt").relative_to(ROOT)),
            *session.posargs,
            str(source.relative_to(ROOT)),
            env={"CUSTOM_COMPILE_COMMAND": "nox -s pin"},
        )
