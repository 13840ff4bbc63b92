"""The spine ablation (the paper's H_drift): does a wide proposal drift more than a narrow
one when the model changes under a deterministic log?

Each customer's renewal runs through both spines (``threshold.replay._spines``) under model
A; then divergence replay re-runs the recorded inputs under model B through the same
verifiers. Per spine: the share of runs whose commits changed, whose state path changed,
and where anything diverged, each with a seeded bootstrap 95 % interval over customers, and
the paired difference P3 - P5 (same customers, so resampled together).
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threshold.clock import VirtualClock
from threshold.ids import derive_seed
from threshold.models import Model, ModelRegistry
from threshold.replay._engine import ReplayOutcome, ReplaySpec, replay_runs
from threshold.replay._report import divergence_report
from threshold.replay._spines import P3, P5, customer_inputs, register_spines
from threshold.runtime import Runtime
from threshold.store import open_store

SPINES = {"P3": (P3, "wide: a free-form event object for the log"),
          "P5": (P5, "narrow: one legal to_state of the state machine")}
METRICS = ("changed_rate", "state_divergence", "any_divergence")


@dataclass(frozen=True, slots=True)
class AblationConfig:
    customers: int = 100
    models: tuple[str, str] = ("sim:v1", "sim:v2")
    seed: int = 0
    bootstrap: int = 2000
    model_options: Mapping[str, Any] | None = None  # e.g. base_url for openai: specs


def _per_run(outcomes: Sequence[ReplayOutcome]) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {m: [] for m in METRICS}
    for o in outcomes:
        rows["changed_rate"].append(int(o.diff.classification == "changed"))
        rows["any_divergence"].append(int(o.diff.classification != "identical"))
        before = (o.original.run.result or {}).get("states")
        after = (o.replayed.run.result or {}).get("states")
        rows["state_divergence"].append(int(before != after or o.replayed.run.status
                                            != o.original.run.status))
    return rows


def bootstrap_ci(values: Sequence[float], *, resamples: int, seed: int,
                 paired: Sequence[float] | None = None) -> dict[str, Any]:
    """Mean (or mean difference ``values - paired``) and a percentile 95 % interval from
    ``resamples`` seeded resamples of the units (customers), drawn with replacement."""
    n = len(values)
    if n == 0:
        return {"value": None, "ci95": [None, None], "n": 0}
    diffs = [v - (paired[i] if paired is not None else 0.0) for i, v in enumerate(values)]
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n
                   for _ in range(resamples))
    low = means[int(0.025 * (resamples - 1))]
    high = means[int(0.975 * (resamples - 1))]
    return {"value": round(sum(diffs) / n, 6), "ci95": [round(low, 6), round(high, 6)], "n": n}


async def _record(db_url: str, customers: Sequence[Any], config: AblationConfig,
                  extra: Mapping[str, Model]) -> None:
    store = open_store(db_url)
    models = ModelRegistry(sim_seed=config.seed, options=dict(config.model_options or {}))
    for spec, model in extra.items():
        models.add(spec, model)
    runtime = Runtime(store, clock=VirtualClock(), models=models, default_model=config.models[0])
    register_spines(runtime)
    try:
        for i, customer in enumerate(customers):
            for agent, _ in SPINES.values():
                await runtime.start(agent, customer_inputs(customer),
                                    run_id=f"{agent}/{customer.customer_id}",
                                    seed=derive_seed(config.seed, customer.customer_id, i))
        await runtime.run_until_idle()
    finally:
        await store.close()


def _register_with(extra: Mapping[str, Model]) -> Any:
    def register(runtime: Runtime) -> None:
        for spec, model in extra.items():
            runtime.models.add(spec, model)
        register_spines(runtime)

    return register


async def spine_ablation(config: AblationConfig | None = None, *,
                         models: Mapping[str, Model] | None = None,
                         customers: Sequence[Any] | None = None) -> dict[str, Any]:
    """Run the ablation; ``models`` serves specs the registry cannot build by itself (two
    real servers at two URLs, say). Returns the report as JSON-able data."""
    from threshold.apps.renewal.customers import load_customers

    config = config or AblationConfig()
    extra = dict(models or {})
    if customers is None:
        customers = load_customers(subset=True).customers[:config.customers]
    with tempfile.TemporaryDirectory(prefix="threshold-ablation-") as tmp:
        db = f"sqlite:///{Path(tmp) / 'ablation.db'}"
        await _record(db, customers, config, extra)
        store = open_store(db)
        try:
            spec = ReplaySpec(model=config.models[1], sim_seed=config.seed,
                              model_options=dict(config.model_options or {}))
            spines: dict[str, Any] = {}
            rows: dict[str, dict[str, list[int]]] = {}
            for name, (agent, width) in SPINES.items():
                ids = [f"{agent}/{c.customer_id}" for c in customers]
                outcomes = await replay_runs(store, ids, _register_with(extra), spec)
                report = divergence_report(outcomes, spec)
                rows[name] = _per_run(outcomes)
                spines[name] = {
                    "agent": agent, "proposal": width, "runs": len(outcomes),
                    **{m: bootstrap_ci(rows[name][m], resamples=config.bootstrap,
                                       seed=config.seed) for m in METRICS},
                    "crossings": report.crossings.to_dict(),
                }
        finally:
            await store.close()
    difference = {m: bootstrap_ci(rows["P3"][m], paired=rows["P5"][m],
                                  resamples=config.bootstrap, seed=config.seed)
                  for m in METRICS}
    return {"customers": len(customers), "models": list(config.models), "seed": config.seed,
            "bootstrap": config.bootstrap, "spines": spines, "difference_P3_minus_P5": difference}


def render_ablation(result: dict[str, Any]) -> str:
    def fmt(cell: dict[str, Any]) -> str:
        if cell["value"] is None:
            return "-"
        low, high = cell["ci95"]
        return f"{cell['value']:.3f} [{low:.3f}, {high:.3f}]"

    a, b = result["models"]
    lines = [f"spine ablation: {result['customers']} Telco customers, recorded under {a}, "
             f"replayed under {b} (bootstrap {result['bootstrap']}, seed {result['seed']})", "",
             f"{'spine':<6}{'changed commits':>28}{'changed state path':>28}"
             f"{'any divergence':>28}"]
    for name, s in result["spines"].items():
        lines.append(f"{name:<6}{fmt(s['changed_rate']):>28}{fmt(s['state_divergence']):>28}"
                     f"{fmt(s['any_divergence']):>28}")
    d = result["difference_P3_minus_P5"]
    lines.append(f"{'P3-P5':<6}{fmt(d['changed_rate']):>28}{fmt(d['state_divergence']):>28}"
                 f"{fmt(d['any_divergence']):>28}")
    lines.append("")
    for name, s in result["spines"].items():
        c = s["crossings"]
        lines.append(f"{name} ({s['proposal']}): {c['total']} aligned crossings, "
                     f"{c['diverged']} diverged, {c['absorbed']} absorbed "
                     f"({c['absorbed_by_verifiers']} by verifiers), {c['changed']} changed")
    return "\n".join(lines)
