"""PNG plots of the reliability decomposition (the ``plot`` extra: matplotlib).

matplotlib is imported when a plot is drawn, never at import time, and only through its
object API (``Figure`` + the Agg canvas), so no global backend is switched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from threshold.errors import ConfigError, MissingExtraError
from threshold.methodology._reliability import ReliabilityReport, z_value

if TYPE_CHECKING:
    from threshold.methodology._montecarlo import Simulation

STYLES = {"schema": ":", "policy": "--", "rules": "-"}
COLORS = {"bare": "#9e9e9e", "retry": "#1f77b4", "escalate": "#ff7f0e", "saga": "#2ca02c"}


def _figure(columns: int) -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("plot", "matplotlib") from None
    figure = Figure(figsize=(6.0 * columns, 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def _save(figure: Any, path: Path) -> Path:
    try:
        figure.savefig(path, format="png")
    except OSError as exc:
        raise ConfigError(f"cannot write the plot to {path}: {exc}") from None
    return path


def plot_simulation(sim: Simulation, path: str | Path) -> Path:
    """Left: mu (with its interval) against the model's per-call sigma, one line per
    composition and boundary strength. Right: the long-run shortfall 1 - mu on a log scale,
    where a constant ratio between compositions shows as parallel lines."""
    figure, (left, right) = _figure(2)
    floor = 0.5 / (sim.config.runs * sim.config.crossings)
    for comp in sim.config.compositions:
        for strength in sim.config.strengths:
            cells = sorted((c for c in sim.cells if (c.composition, c.strength) ==
                            (comp, strength)), key=lambda c: c.rate)
            xs = [_x(sim, c.rate) for c in cells]
            mus = [c.estimate.mu for c in cells]
            errors = [[m - c.estimate.mu_low for m, c in zip(mus, cells, strict=True)],
                      [c.estimate.mu_high - m for m, c in zip(mus, cells, strict=True)]]
            style = {"color": COLORS.get(comp), "linestyle": STYLES.get(strength, "-"),
                     "marker": "o", "markersize": 3}
            left.errorbar(xs, mus, yerr=errors, capsize=2, label=f"{comp} / {strength}",
                          **style)
            right.plot(xs, [max(1 - m, floor) for m in mus], **style)
    left.set(xlabel="model per-call sigma (sd of a first proposal's correctness)",
             ylabel="mu: long-run reliability per crossing",
             title="drift mu as the model's noise shrinks")
    # A cell with no shortfall at all is drawn at half a crossing's worth, not at zero.
    right.set(xlabel="model per-call sigma", ylabel=f"shortfall 1 - mu (log; {floor:.0e} = "
              "none observed)", yscale="log", title="shortfall: what each composition loses")
    for axis in (left, right):
        axis.invert_xaxis()  # better models to the right
        axis.grid(alpha=0.3)
    left.legend(fontsize=6, ncol=2)
    return _save(figure, Path(path))


def _x(sim: Simulation, rate: float) -> float:
    """A rate's x position: the mean measured per-call sigma of its cells."""
    cells = sim.at_rate(rate)
    return sum(c.call_sigma for c in cells) / len(cells)


def plot_estimate(report: ReliabilityReport, path: str | Path) -> Path:
    """y(t) pooled over the journal's crossings, with mu t and its band mu t +- z sigma
    sqrt(t)."""
    figure, (axis,) = _figure(1)
    ys = list(report.trajectory)
    ts = list(range(1, len(ys) + 1))
    p, z = report.pooled, z_value(report.confidence)
    axis.plot(ts, ys, color="#1f77b4", linewidth=1, label="y(t) from the journal")
    axis.plot(ts, [p.mu * t for t in ts], color="black", linewidth=1,
              label=f"mu t, mu = {p.mu:+.3f}")
    axis.fill_between(ts, [p.mu * t - z * p.sigma * math.sqrt(t) for t in ts],
                      [p.mu * t + z * p.sigma * math.sqrt(t) for t in ts], color="grey",
                      alpha=0.25, label=f"+- {z:.2f} sigma sqrt(t), sigma = {p.sigma:.3f}")
    axis.set(xlabel="t (finished crossings)", ylabel="y(t)",
             title=f"y(t) = mu t + sigma xi(t) (judge: {report.judge})")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, Path(path))
