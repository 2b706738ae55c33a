"""Draw the keys that move when one worker joins: ``docs/_static/scale_out.svg``.

Run by ``nox -s docs`` before Sphinx. For every group size ``n`` from 1 to 20, the same
20,000 warehouse ids are routed to ``n`` and then to ``n + 1`` workers by
``stable_hash(key) % n`` and by the library's own :class:`invresilience.RendezvousRouter`
and :class:`invresilience.SlotRouter` (grown with ``with_node``), and
:func:`invresilience.diff` counts the keys that changed worker. Nothing is random, so the
picture shows what the code does and the file is byte-for-byte reproducible.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # before pyplot is imported: no display needed

import matplotlib.pyplot as plt

import invresilience as ir

OUTPUT = Path(__file__).resolve().parent.parent / "_static" / "scale_out.svg"

KEYS = [f"WH-{number:05d}" for number in range(20_000)]
SIZES = range(1, 21)
MARKED = 10  # the size the chapter quotes: 10 workers becoming 11


class Modulo:
    """``stable_hash(key) % n``: modulo over a hash that at least agrees between processes."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def route(self, key: ir.typing.ShardKey) -> int:
        """The worker *key* goes to."""
        return ir.stable_hash(key) % self.workers


def names(count: int) -> list[str]:
    """The first *count* worker names."""
    return [f"worker-{number}" for number in range(count)]


def moved() -> dict[str, list[float]]:
    """The fraction of ``KEYS`` that moves from ``n`` to ``n + 1`` workers, per router."""
    fractions: dict[str, list[float]] = {"modulo": [], "rendezvous": [], "slot": []}
    for size in SIZES:
        joining = f"worker-{size}"
        fractions["modulo"].append(ir.diff(Modulo(size), Modulo(size + 1), KEYS).fraction)
        rendezvous = ir.RendezvousRouter(names(size))
        fractions["rendezvous"].append(
            ir.diff(rendezvous, rendezvous.with_node(joining), KEYS).fraction
        )
        slot = ir.SlotRouter(names(size))
        fractions["slot"].append(ir.diff(slot, slot.with_node(joining), KEYS).fraction)
    return fractions


def draw(fractions: dict[str, list[float]]) -> None:
    """Save the chart: one line per router, and the optimum ``1 / (n + 1)``."""
    plt.rcParams["svg.hashsalt"] = "invresilience-scale-out"  # stable element ids
    figure, axis = plt.subplots(figsize=(10, 5.5))
    sizes = list(SIZES)
    percent = 100.0
    axis.plot(
        sizes,
        [percent * share for share in fractions["modulo"]],
        "o-",
        color="#d62728",
        label="stable_hash(key) % n",
    )
    axis.plot(
        sizes,
        [percent / (size + 1) for size in sizes],
        "-",
        color="0.55",
        linewidth=6,
        alpha=0.35,
        label="the fewest possible: 1 / (n + 1)",
    )
    axis.plot(
        sizes,
        [percent * share for share in fractions["rendezvous"]],
        "s-",
        color="#1f77b4",
        markersize=5,
        label="RendezvousRouter",
    )
    axis.plot(
        sizes,
        [percent * share for share in fractions["slot"]],
        "^--",
        color="#2ca02c",
        markersize=5,
        label="SlotRouter (with_node)",
    )
    index = MARKED - 1
    for name, offset in (("modulo", (8, -16)), ("rendezvous", (8, 12))):
        share = fractions[name][index]
        axis.annotate(
            f"{MARKED} → {MARKED + 1}: {share:.1%}",
            (MARKED, percent * share),
            xytext=offset,
            textcoords="offset points",
            fontsize=10,
            fontweight="bold",
        )
    axis.set_xticks(sizes)
    axis.set_xlim(0.5, sizes[-1] + 0.5)
    axis.set_ylim(0, 100)
    axis.set_xlabel("workers before one more joins (n)")
    axis.set_ylabel("keys that change worker (%)")
    axis.grid(alpha=0.3)
    axis.legend(loc="center right", fontsize=10)
    axis.set_title(
        f"Keys moved when a group grows from n to n + 1 workers ({len(KEYS):,} warehouse ids)",
        fontsize=11,
    )
    figure.tight_layout()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT, format="svg", metadata={"Date": None})
    plt.close(figure)
    print(f"wrote {OUTPUT}")


def main() -> None:
    """Route the keys at every size and save the figure."""
    draw(moved())


if __name__ == "__main__":
    main()
