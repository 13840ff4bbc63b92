"""What a simulation shows: how compositions separate as the model's noise shrinks.

Two cells a and b are told apart after T crossings once their confidence bands on y(T)/T
no longer overlap: |mu_a - mu_b| T >= z (sigma_a + sigma_b) sqrt(T), so the horizon is
T* = (z (sigma_a + sigma_b) / |mu_a - mu_b|)^2 crossings.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

from threshold.methodology._reliability import z_value

if TYPE_CHECKING:
    from threshold.methodology._montecarlo import Cell, Simulation


def horizon(a: Cell, b: Cell, confidence: float) -> float:
    """Crossings needed to tell ``a`` from ``b`` (infinite when their mu are equal)."""
    gap = abs(a.estimate.mu - b.estimate.mu)
    if gap == 0:
        return math.inf
    return (z_value(confidence) * (a.estimate.sigma + b.estimate.sigma) / gap) ** 2


def _per_rate(sim: Simulation, rate: float) -> dict[str, Any]:
    cells = sim.at_rate(rate)
    best = max(cells, key=lambda c: (c.estimate.mu, c.name))
    worst = min(cells, key=lambda c: (c.estimate.mu, c.name))
    by_comp: dict[str, float] = {}
    for comp in sim.config.compositions:
        mus = [c.estimate.mu for c in cells if c.composition == comp]
        by_comp[comp] = statistics.fmean(mus)
    return {
        "rate": rate,
        "call_sigma": statistics.fmean(c.call_sigma for c in cells),
        "call_error": statistics.fmean(c.call_error for c in cells),
        "best": best.name, "best_mu": best.estimate.mu,
        "worst": worst.name, "worst_mu": worst.estimate.mu,
        "spread": best.estimate.mu - worst.estimate.mu,
        "mean_sigma": statistics.fmean(c.estimate.sigma for c in cells),
        "horizon_best_vs_worst": _finite(horizon(best, worst, sim.config.confidence)),
        "mu_by_composition": by_comp,
    }


def _strength_order(sim: Simulation) -> dict[str, Any]:
    """At each rate and composition, does a stronger boundary give a higher mu?"""
    held, total, exceptions = 0, 0, []
    strengths = list(sim.config.strengths)
    for rate in sim.config.rates:
        for comp in sim.config.compositions:
            mus = [sim.cell(rate, comp, s).estimate.mu for s in strengths]
            for weak, strong, mu_weak, mu_strong in zip(strengths, strengths[1:], mus,
                                                        mus[1:], strict=False):
                total += 1
                if mu_strong >= mu_weak:
                    held += 1
                else:
                    exceptions.append(f"{comp} at rate {rate}: {strong} {mu_strong:+.3f} < "
                                      f"{weak} {mu_weak:+.3f}")
    return {"held": held, "comparisons": total, "exceptions": exceptions}


def _sigma_sources(sim: Simulation) -> dict[str, float]:
    """How much sigma moves with the architecture (at a fixed rate) versus with the model
    (at a fixed architecture): the mean within-group standard deviations."""
    names = sorted({c.name for c in sim.cells})
    across_arch = [statistics.pstdev([c.estimate.sigma for c in sim.at_rate(r)])
                   for r in sim.config.rates]
    across_rate = [statistics.pstdev([c.estimate.sigma for c in sim.cells if c.name == n])
                   for n in names]
    return {"sigma_sd_across_architectures": statistics.fmean(across_arch),
            "sigma_sd_across_rates": statistics.fmean(across_rate)}


def summarize(sim: Simulation) -> dict[str, Any]:
    return {"by_rate": [_per_rate(sim, r) for r in sim.config.rates],
            "strength_order": _strength_order(sim), "sigma_sources": _sigma_sources(sim)}


def render_text(sim: Simulation) -> str:
    cfg, summary = sim.config, summarize(sim)
    lines = [f"Monte Carlo of y(t) = mu t + sigma xi(t): {len(sim.cells)} cells, {cfg.runs} "
             f"runs x {cfg.crossings} crossings each, seed {cfg.seed}, exception rate "
             f"{cfg.exception_rate}", "",
             f"{'rate':>6} {'call sd':>7} {'cell':<16} {'mu':>7} {'CI':>17} {'sigma':>6} "
             f"{'tries':>5} {'esc':>4} {'comp':>4}"]
    for c in sim.cells:
        e = c.estimate
        lines.append(f"{c.rate:>6.3f} {c.call_sigma:>7.3f} {c.name:<16} {e.mu:>+7.3f} "
                     f"[{e.mu_low:+.3f},{e.mu_high:+.3f}] {e.sigma:>6.3f} {c.attempts:>5.2f} "
                     f"{c.escalations:>4} {c.compensations:>4}")
    lines += ["", "separation (best vs worst cell at each rate):"]
    for r in summary["by_rate"]:
        lines.append(f"  rate {r['rate']:.3f} (call sd {r['call_sigma']:.3f}): spread "
                     f"{r['spread']:.3f} ({r['best']} {r['best_mu']:+.3f} vs {r['worst']} "
                     f"{r['worst_mu']:+.3f}); told apart after ~"
                     f"{_crossings(r['horizon_best_vs_worst'])} crossings")
    order = summary["strength_order"]
    lines += ["", f"stronger boundary gave mu >= weaker in {order['held']} of "
                  f"{order['comparisons']} paired comparisons"]
    lines += [f"  exception: {x}" for x in order["exceptions"]]
    src = summary["sigma_sources"]
    lines.append(f"sigma varies {src['sigma_sd_across_architectures']:.3f} (sd) across "
                 f"architectures at a fixed rate, {src['sigma_sd_across_rates']:.3f} across "
                 f"rates for a fixed architecture")
    return "\n".join(lines)


def _crossings(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}"


def _finite(value: float) -> float | None:
    """JSON has no infinity: a pair that never separates has no horizon."""
    return None if math.isinf(value) else value
