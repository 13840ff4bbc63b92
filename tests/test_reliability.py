"""reliability: y(t) = mu t + sigma xi(t) estimated from real journals, simulated with the
runtime itself across error rates, compositions and boundary strengths, and plotted."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from helpers import Ledger, Offer, offer_boundary, offer_json
from support import require
from threshold import Boundary, Prompt, RejectPolicy, RunContext, Runtime, VirtualClock, open_store
from threshold.cli import main
from threshold.effects import EffectContext
from threshold.errors import ConfigError, MissingExtraError, SagaAborted
from threshold.methodology import (
    Increment,
    ReliabilityReport,
    SimConfig,
    Simulation,
    estimate_reliability,
    increments,
    plot_estimate,
    plot_simulation,
    report_from,
    simulate,
)
from threshold.models import ModelRegistry, ModelRequest, ScriptedModel
from threshold.patterns.saga import Saga
from threshold.store import CrossingRecord, VerdictRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ERROR_RATE = 0.3
RUNS, PER_RUN = 40, 10


def bad_with_probability(p: float) -> Any:
    """A scripted proposer that answers an out-of-policy offer with probability ``p``,
    drawn from the request's own seed (so every attempt is independent and replayable)."""
    def answer(request: ModelRequest) -> str:
        bad = random.Random(request.seed).random() < p
        return offer_json(pct=50 if bad else 10)
    return answer


def within_policy(crossing: CrossingRecord, verdicts: Sequence[VerdictRecord]) -> bool:
    """The reference judge: a commit is correct when its discount is at most 30 %."""
    return int((crossing.outcome or {}).get("discount_pct", 100)) <= 30


async def journal(url: str, boundary: Boundary[Offer]) -> None:
    """RUNS runs of PER_RUN crossings each, proposed by the scripted model."""
    models = ModelRegistry()
    models.add("scripted", ScriptedModel(bad_with_probability(ERROR_RATE)))
    rt = Runtime(open_store(url), clock=VirtualClock(), models=models,
                 default_model="scripted")

    @rt.agent("offers")
    async def offers(ctx: RunContext, inp: dict[str, Any]) -> None:
        for k in range(PER_RUN):
            await ctx.cross(boundary, {"c": f"{inp['run']}-{k}"})

    for run in range(RUNS):
        await rt.start("offers", {"run": run}, run_id=f"run-{run:02d}", seed=run)
    await rt.run_until_idle()
    await rt.store.close()


async def estimated(url: str, judge: Any = None) -> ReliabilityReport:
    store = open_store(url)
    try:
        return await estimate_reliability(store, judge=judge)
    finally:
        await store.close()


def moments(distribution: dict[int, float]) -> tuple[float, float, float]:
    """(mu, sigma, standard error of sigma for RUNS*PER_RUN draws) of a finite law."""
    mu = sum(v * p for v, p in distribution.items())
    var = sum((v - mu) ** 2 * p for v, p in distribution.items())
    m4 = sum((v - mu) ** 4 * p for v, p in distribution.items())
    n = RUNS * PER_RUN
    return mu, math.sqrt(var), math.sqrt((m4 - var * var) / n) / (2 * math.sqrt(var))


@pytest.mark.parametrize("strong", [True, False], ids=["policy-abort", "schema-only"])
def test_estimate_recovers_known_mu_and_sigma(tmp_path: Path, strong: bool) -> None:
    """With a known 30 % error rate, a boundary that aborts bad proposals gives s in {+1, 0}
    (mu 0.7) and a schema-only one commits them as -1 (mu 0.4); both estimates land within
    four standard errors of the truth, and each interval covers it."""
    url = f"sqlite:///{tmp_path / 'j.db'}"
    q = ERROR_RATE
    if strong:
        boundary = offer_boundary(Ledger(), policy=RejectPolicy(max_attempts=1))
        truth = {1: 1 - q, 0: q}
    else:
        boundary = Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "{c}"),
                            commit=Ledger().commit)
        truth = {1: 1 - q, -1: q}
    asyncio.run(journal(url, boundary))
    report = asyncio.run(estimated(url, within_policy))
    mu, sigma, se_sigma = moments(truth)
    p = report.pooled
    assert p.n == RUNS * PER_RUN and len(report.runs) == RUNS
    assert abs(p.mu - mu) <= 4 * sigma / math.sqrt(p.n), (p.mu, mu)
    assert abs(p.sigma - sigma) <= 4 * se_sigma, (p.sigma, sigma)
    assert p.mu_low <= mu <= p.mu_high and p.sigma_low <= sigma <= p.sigma_high
    assert p.y == p.correct - p.incorrect and report.trajectory[-1] == p.y
    assert (p.incorrect == 0) is strong
    assert report.lag1 is not None and abs(report.lag1) < 0.15  # xi behaves as a walk
    assert sum(r.n for r in report.runs) == p.n


def test_the_default_judge_counts_verified_commits(tmp_path: Path) -> None:
    """Without a reference judge every commit carrying its accepts is correct, so a
    schema-only boundary's bad commits count +1: the default measures verified progress."""
    url = f"sqlite:///{tmp_path / 'j.db'}"
    boundary = Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "{c}"))
    asyncio.run(journal(url, boundary))
    report = asyncio.run(estimated(url))
    assert report.judge == "verified"
    assert report.pooled.mu == 1.0 and report.pooled.correct == RUNS * PER_RUN
    assert report.pooled.mu_low < 1.0  # a flawless sample still gets an honest interval


def test_a_commit_a_saga_compensated_counts_zero(tmp_path: Path) -> None:
    """A committed crossing later undone by the saga's compensation is neither progress nor
    harm: it counts 0, as 'undone'."""
    url = f"sqlite:///{tmp_path / 'j.db'}"

    async def withdraw(crossing: Any, effect: EffectContext) -> str:
        return "withdrawn"

    async def refuse(effect: EffectContext) -> None:
        raise RuntimeError("billing refused")

    async def scenario() -> list[Increment]:
        models = ModelRegistry()
        models.add("scripted", ScriptedModel([offer_json(pct=10)]))
        rt = Runtime(open_store(url), clock=VirtualClock(), models=models,
                     default_model="scripted")
        boundary = offer_boundary(Ledger())

        @rt.agent("sale")
        async def sale(ctx: RunContext, inp: dict[str, Any]) -> str:
            try:
                async with Saga(ctx, "sale") as saga:
                    await saga.cross(boundary, {"c": "ada"}, compensate=withdraw)
                    await saga.step("bill", refuse)
            except SagaAborted:
                return "aborted"
            return "done"

        await rt.start("sale", {}, run_id="r1")
        await rt.run_until_idle()
        try:
            return await increments(rt.store)
        finally:
            await rt.store.close()

    (step,) = asyncio.run(scenario())
    assert (step.crossing_id, step.kind, step.value) == ("r1/1", "undone", 0)


def test_runs_that_differ_widen_the_pooled_interval() -> None:
    """Two runs, one all correct and one all incorrect: the pooled interval uses the
    run-clustered error, far wider than the i.i.d. one would be for the same counts."""
    steps = [Increment(f"2026-01-01T00:00:{i:02d}", "good" if i < 20 else "bad", f"x/{i}",
                       "correct" if i < 20 else "incorrect") for i in range(40)]
    clustered = report_from(steps).pooled
    mixed = report_from([Increment(s.at, "good" if i % 2 else "bad", s.crossing_id, s.kind)
                         for i, s in enumerate(steps)]).pooled
    assert clustered.mu == mixed.mu == 0.0
    assert clustered.mu_high - clustered.mu_low > 3 * (mixed.mu_high - mixed.mu_low)


# --- simulation ----------------------------------------------------------------------------

SMALL = SimConfig(rates=(0.3, 0.02), runs=12, crossings=4, seed=5)


def test_simulation_is_reproducible_from_its_seed() -> None:
    """The same config and seed give the same cells to the last digit, another seed
    does not."""
    first = asyncio.run(simulate(SMALL)).to_dict()
    again = asyncio.run(simulate(SMALL)).to_dict()
    other = asyncio.run(simulate(SimConfig(rates=SMALL.rates, runs=SMALL.runs,
                                           crossings=SMALL.crossings, seed=6))).to_dict()
    assert first == again
    assert first["cells"] != other["cells"]
    assert len(first["cells"]) == 2 * 4 * 3


@pytest.fixture(scope="module")
def grid() -> Simulation:
    return asyncio.run(simulate(SimConfig(rates=(0.3,), runs=24, crossings=5, seed=0)))


def test_stronger_boundaries_give_higher_mu_at_the_same_error_rate(grid: Simulation) -> None:
    """At a 30 % error rate, every composition gains drift from schema to policy to business
    rules, strictly from the weakest to the strongest."""
    for comp in grid.config.compositions:
        schema, policy, rules = (grid.cell(0.3, comp, s).estimate.mu
                                 for s in ("schema", "policy", "rules"))
        assert schema <= policy <= rules, comp
        assert schema < rules, comp


def test_patterns_add_drift_where_the_data_says_they_do(grid: Simulation) -> None:
    """Retry with feedback beats a bare proposer; escalation beats retry once a policy
    routes exceptions to a person; the saga's downstream check and compensation lift a
    schema-only boundary (it turns bad commits into undone ones)."""
    mu = {(c.composition, c.strength): c.estimate.mu for c in grid.cells}
    assert mu[("retry", "rules")] > mu[("bare", "rules")]
    assert mu[("escalate", "policy")] > mu[("retry", "policy")]
    assert mu[("saga", "schema")] > mu[("escalate", "schema")]
    saga = grid.cell(0.3, "saga", "schema")
    assert saga.compensations > 0 and saga.estimate.undone == saga.compensations


def test_compositions_converge_as_model_noise_shrinks_unless_exceptions_need_a_human() -> None:
    """Without exceptions the spread of mu across compositions shrinks with the model's
    error rate; with 10 % of customers needing a human's sign-off a gap remains that no
    model improvement closes."""
    def spread(sim: Simulation, rate: float) -> float:
        mus = [c.estimate.mu for c in sim.at_rate(rate)]
        return max(mus) - min(mus)

    rates = (0.4, 0.02)
    plain = asyncio.run(simulate(SimConfig(rates=rates, runs=16, crossings=5, seed=2,
                                           exception_rate=0.0)))
    human = asyncio.run(simulate(SimConfig(rates=rates, runs=16, crossings=5, seed=2,
                                           exception_rate=0.1)))
    assert spread(plain, 0.02) < spread(plain, 0.4) / 3
    assert spread(human, 0.02) > spread(plain, 0.02) + 0.1
    assert plain.cell(0.4, "bare", "schema").call_sigma > \
        plain.cell(0.02, "bare", "schema").call_sigma


def test_a_bad_grid_is_refused() -> None:
    """Unknown compositions, rates or shares outside [0, 1] and empty sizes are usage
    errors."""
    for bad in ({"compositions": ("bare", "magic")}, {"rates": (1.5,)}, {"runs": 0},
                {"exception_rate": -0.1}, {"confidence": 1.0}):
        with pytest.raises(ConfigError):
            SimConfig(**bad)  # type: ignore[arg-type]


# --- plots and the command -------------------------------------------------------------------


def is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_MAGIC) and data[12:16] == b"IHDR" and len(data) > 2000


def test_plots_are_valid_png_files(tmp_path: Path, grid: Simulation) -> None:
    """The simulation plot and the journal's y(t) plot are written as real PNG images."""
    require(importlib.util.find_spec("matplotlib") is not None,
            "matplotlib (the plot extra) is not installed")
    assert is_png(plot_simulation(grid, tmp_path / "sim.png"))
    report = report_from([Increment(f"t{i:03d}", "r", f"r/{i}", "correct" if i % 4 else
                                    "neutral") for i in range(100)])
    assert is_png(plot_estimate(report, tmp_path / "y.png"))


def test_plotting_without_matplotlib_names_the_extra(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grid: Simulation) -> None:
    """Without matplotlib a plot raises MissingExtraError with the install line."""
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingExtraError, match=r"threshold\[plot\]"):
        plot_simulation(grid, tmp_path / "sim.png")


def test_the_reliability_command_simulates_and_estimates(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`reliability simulate --json --plot` prints the grid as JSON and writes the PNG;
    `reliability estimate` reads a journal from --db."""
    require(importlib.util.find_spec("matplotlib") is not None,
            "matplotlib (the plot extra) is not installed")
    png = tmp_path / "sim.png"
    assert main(["reliability", "simulate", "--runs", "3", "--crossings", "2", "--rates",
                 "0.3", "--seed", "9", "--json", "--plot", str(png)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["seed"] == 9 and len(data["cells"]) == 12 and is_png(png)
    url = f"sqlite:///{tmp_path / 'j.db'}"
    asyncio.run(journal(url, offer_boundary(Ledger(), policy=RejectPolicy(max_attempts=1))))
    assert main(["reliability", "estimate", "--db", url, "--plot",
                 str(tmp_path / "y.png")]) == 0
    text = capsys.readouterr().out
    assert "mu    = +0." in text and is_png(tmp_path / "y.png")
    assert main(["reliability", "simulate", "--rates", "2"]) == 2
