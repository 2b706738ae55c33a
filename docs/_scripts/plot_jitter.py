"""Draw the delay distributions of the four jitter modes: ``docs/_static/jitter.svg``.

Run by ``nox -s docs`` before Sphinx. The samples come from the library's own
:meth:`invresilience.Backoff.delay` with a seeded :class:`random.Random`, so the picture
shows what the code does, and the file is byte-for-byte reproducible.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

import matplotlib as mpl

mpl.use("Agg")  # before pyplot is imported: no display needed

import matplotlib.pyplot as plt

import invresilience as ir

OUTPUT = Path(__file__).resolve().parent.parent / "_static" / "jitter.svg"
Jitter = Literal["none", "full", "equal", "decorrelated"]
MODES: tuple[Jitter, ...] = ("none", "full", "equal", "decorrelated")
TITLES = {
    "none": '"none": exactly min(maximum, initial × multiplier^(n-1))',
    "full": '"full": uniform in [0, base]',
    "equal": '"equal": uniform in [base / 2, base]',
    "decorrelated": '"decorrelated": uniform in [initial, min(maximum, 3 × previous)]',
}
ATTEMPTS = range(1, 9)
SAMPLES = 2_000
INITIAL, MAXIMUM, MULTIPLIER = 0.1, 5.0, 2.0
SEED = 20_240_601


def sample(mode: Jitter, rng: random.Random) -> list[list[float]]:
    """``SAMPLES`` delays after each failed attempt in ``ATTEMPTS``, for one jitter mode.

    Each sample is one retried call's chain of delays, because decorrelated jitter
    depends on the previous delay.
    """
    backoff = ir.Backoff(initial=INITIAL, maximum=MAXIMUM, multiplier=MULTIPLIER, jitter=mode)
    columns: list[list[float]] = [[] for _ in ATTEMPTS]
    for _ in range(SAMPLES):
        previous: float | None = None
        for index, attempt in enumerate(ATTEMPTS):
            previous = backoff.delay(attempt, previous, rng)
            columns[index].append(previous)
    return columns


def main() -> None:
    """Sample every mode and save the figure."""
    rng = random.Random(SEED)
    plt.rcParams["svg.hashsalt"] = "invresilience-jitter"  # stable element ids
    figure, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True, sharey=True)
    positions = list(ATTEMPTS)
    base = [min(MAXIMUM, INITIAL * MULTIPLIER ** (n - 1)) for n in ATTEMPTS]
    for axis, mode in zip(axes.flat, MODES, strict=True):
        columns = sample(mode, rng)
        if mode == "none":
            # A point mass: a violin of identical values has no density to draw.
            axis.plot(positions, [column[0] for column in columns], "o", color="C0")
        else:
            parts = axis.violinplot(
                columns, positions=positions, widths=0.8, showextrema=False, showmeans=True
            )
            for body in parts["bodies"]:
                body.set_alpha(0.6)
        if mode != "decorrelated":  # which ignores the exponential base
            axis.plot(positions, base, ":", color="0.4", label="base = min(maximum, raw)")
        axis.axhline(MAXIMUM, color="C3", linewidth=1, label=f"maximum = {MAXIMUM:g} s")
        axis.set_title(TITLES[mode], fontsize=10)
        axis.set_xticks(positions)
        axis.grid(axis="y", alpha=0.3)
    for axis in axes[1]:
        axis.set_xlabel("failed attempt n")
    for axis in axes[:, 0]:
        axis.set_ylabel("delay before attempt n + 1 (s)")
    axes[0][0].legend(loc="upper left", fontsize=9)
    figure.suptitle(
        f"Backoff(initial={INITIAL:g}, maximum={MAXIMUM:g}, multiplier={MULTIPLIER:g}): "
        f"{SAMPLES:,} samples per attempt",
        fontsize=12,
    )
    figure.tight_layout()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT, format="svg", metadata={"Date": None})
    plt.close(figure)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
