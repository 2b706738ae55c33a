"""Draw a circuit breaker riding out a dependency outage: ``docs/_static/breaker.svg``.

Run by ``nox -s docs`` before Sphinx. A real :class:`invresilience.CircuitBreaker` on a
:class:`~invresilience.testing.ManualClock` guards a simulated ERP that is healthy, then
down for six minutes, then healthy again, while a worker calls it twice a second. The
breaker's own events give the states; nothing is random, so the picture shows what the
code does and the file is byte-for-byte reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # before pyplot is imported: no display needed

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

import invresilience as ir
from invresilience.testing import ManualClock

OUTPUT = Path(__file__).resolve().parent.parent / "_static" / "breaker.svg"

CALL_EVERY = 0.5  # seconds between two calls of the worker
DURATION = 900.0  # seconds simulated
OUTAGE = (180.0, 540.0)  # the ERP is down in [start, end)
BIN = 10.0  # seconds per bar
OPEN_FOR = ir.Backoff(initial=10.0, maximum=120.0, multiplier=2.0, jitter="none")

COLOURS = {
    ir.BreakerState.CLOSED: "#2ca02c",
    ir.BreakerState.OPEN: "#d62728",
    ir.BreakerState.HALF_OPEN: "#ff7f0e",
    ir.BreakerState.ISOLATED: "#7f7f7f",
}
OUTAGE_COLOUR = "#d62728"


@dataclass
class Run:
    """What the simulation saw."""

    #: (time, state entered), the first entry being the initial state.
    states: list[tuple[float, ir.BreakerState]] = field(default_factory=list)
    #: (time, outcome) per call: "succeeded", "failed" (at the ERP) or "rejected".
    calls: list[tuple[float, str]] = field(default_factory=list)
    #: (time, seconds) per opening: when the breaker opened and for how long.
    openings: list[tuple[float, float]] = field(default_factory=list)
    #: (time, succeeded) per half-open probe.
    probes: list[tuple[float, bool]] = field(default_factory=list)


def simulate() -> Run:
    """Call the ERP through a breaker every ``CALL_EVERY`` seconds for ``DURATION`` seconds."""
    clock = ManualClock()
    breaker = ir.CircuitBreaker(
        "erp",
        failure_rate=0.5,
        minimum_calls=20,
        window=ir.CountWindow(50),
        open_for=OPEN_FOR,
        half_open_probes=1,
        clock=clock,
    )
    run = Run(states=[(0.0, breaker.state)])

    def listen(event: ir.Event) -> None:
        if isinstance(event, ir.BreakerEvent) and event.kind == "state_changed":
            run.states.append((clock.monotonic(), event.state))

    def fetch_stock() -> int:
        if OUTAGE[0] <= clock.monotonic() < OUTAGE[1]:
            raise ConnectionError("ERP unreachable")
        return 17

    detach = ir.add_listener(listen)
    try:
        while clock.monotonic() < DURATION:
            now = clock.monotonic()
            probing = breaker.state is ir.BreakerState.HALF_OPEN
            try:
                breaker.call(fetch_stock)
            except ir.CircuitOpenError:
                run.calls.append((now, "rejected"))
            except ConnectionError:
                run.calls.append((now, "failed"))
            else:
                run.calls.append((now, "succeeded"))
            if probing:
                run.probes.append((now, run.calls[-1][1] == "succeeded"))
            if breaker.state is ir.BreakerState.OPEN and run.states[-1][0] == now:
                run.openings.append((now, breaker.metrics().retry_after))
            clock.advance(CALL_EVERY)
    finally:
        detach()
    return run


def draw(run: Run) -> None:
    """Save the three panels: states, calls per bin, open durations."""
    plt.rcParams["svg.hashsalt"] = "invresilience-breaker"  # stable element ids
    figure, (band, bars, opens) = plt.subplots(
        3,
        1,
        figsize=(11, 7.5),
        sharex=True,
        gridspec_kw={"height_ratios": [1, 3, 2]},
    )
    minutes = 60.0
    opens.axvspan(OUTAGE[0] / minutes, OUTAGE[1] / minutes, color=OUTAGE_COLOUR, alpha=0.08)

    # Two bands: the ERP up or down, and the breaker's state with its probes on top.
    down = (OUTAGE[0] / minutes, (OUTAGE[1] - OUTAGE[0]) / minutes)
    band.broken_barh(
        [(0, OUTAGE[0] / minutes), (OUTAGE[1] / minutes, (DURATION - OUTAGE[1]) / minutes)],
        (1.1, 0.8),
        color=COLOURS[ir.BreakerState.CLOSED],
    )
    band.broken_barh([down], (1.1, 0.8), color=OUTAGE_COLOUR)
    ends = [time for time, _ in run.states[1:]] + [DURATION]
    for (start, state), end in zip(run.states, ends, strict=True):
        band.broken_barh(
            [(start / minutes, (end - start) / minutes)], (0.1, 0.8), color=COLOURS[state]
        )
    for time, succeeded in run.probes:
        band.plot(
            time / minutes,
            0.5,
            marker="v",
            markersize=9,
            markerfacecolor="black" if succeeded else "white",
            markeredgecolor="black",
        )
    band.set_yticks([0.5, 1.5], ["breaker", "ERP"])
    band.tick_params(axis="y", length=0)
    band.set_ylim(0, 2)
    band.set_title(
        "green: closed / up, red: open / down; ▽ a failed probe, ▼ a successful one",
        fontsize=10,
        loc="left",
    )

    # Calls per bin: what reached the ERP, and what the breaker turned away.
    bins = int(DURATION // BIN)
    counts = {kind: [0] * bins for kind in ("succeeded", "failed", "rejected")}
    for time, kind in run.calls:
        counts[kind][min(int(time // BIN), bins - 1)] += 1
    lefts = [index * BIN / minutes for index in range(bins)]
    bottom = [0] * bins
    styles = {
        "succeeded": ("reached the ERP: succeeded", COLOURS[ir.BreakerState.CLOSED]),
        "failed": ("reached the ERP: failed", COLOURS[ir.BreakerState.OPEN]),
        "rejected": ("rejected by the breaker (CircuitOpenError)", "#bbbbbb"),
    }
    for kind, (label, colour) in styles.items():
        bars.bar(
            lefts,
            counts[kind],
            width=BIN / minutes,
            bottom=bottom,
            align="edge",
            color=colour,
            label=label,
            linewidth=0,
        )
        bottom = [b + c for b, c in zip(bottom, counts[kind], strict=True)]
    during = [kind for time, kind in run.calls if OUTAGE[0] <= time < OUTAGE[1]]
    reached = sum(kind != "rejected" for kind in during)
    bars.set_ylabel(f"calls per {BIN:g} s")
    bars.set_title(
        f"during the outage, {reached} of {len(during)} calls reached the ERP",
        fontsize=10,
        loc="left",
    )
    bars.set_ylim(0, 2.6 * BIN / CALL_EVERY / 2)
    bars.legend(loc="upper center", ncol=3, fontsize=9)

    # Open durations: each opening lasts longer, up to the Backoff's maximum.
    for time, seconds in run.openings:
        opens.broken_barh(
            [(time / minutes, seconds / minutes)],
            (seconds - 4, 8),
            color=COLOURS[ir.BreakerState.OPEN],
        )
        opens.annotate(
            f"{seconds:g} s",
            (time / minutes, seconds),
            xytext=(0, 7),
            textcoords="offset points",
            fontsize=9,
        )
    opens.axhline(OPEN_FOR.maximum, color="0.4", linestyle=":", linewidth=1)
    opens.legend(
        handles=[
            Line2D([], [], color="0.4", linestyle=":", label="Backoff maximum"),
            Patch(color=OUTAGE_COLOUR, alpha=0.15, label="ERP down"),
        ],
        loc="upper right",
        fontsize=9,
    )
    opens.set_ylim(0, OPEN_FOR.maximum * 1.35)
    opens.set_ylabel("open for (s)")
    opens.set_title("each opening, drawn as long as it lasted", fontsize=10, loc="left")
    opens.set_xlabel("time (minutes)")
    opens.set_xlim(0, DURATION / minutes)

    figure.suptitle(
        "CircuitBreaker(failure_rate=0.5, minimum_calls=20, window=CountWindow(50),\n"
        f"open_for=Backoff(initial={OPEN_FOR.initial:g}, maximum={OPEN_FOR.maximum:g}, "
        'jitter="none")): a six-minute outage, two calls a second',
        fontsize=11,
    )
    figure.tight_layout()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUTPUT, format="svg", metadata={"Date": None})
    plt.close(figure)
    print(f"wrote {OUTPUT}")


def main() -> None:
    """Simulate the outage and save the figure."""
    draw(simulate())


if __name__ == "__main__":
    main()
