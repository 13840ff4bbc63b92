"""Monte Carlo of y(t) = mu t + sigma xi(t) with the runtime itself.

Every cell of the grid (model error rate x pattern composition x boundary strength) is a
real ``Runtime`` on a ``memory://`` store with a ``VirtualClock`` and a ``SimModel`` whose
``ErrorProfile`` is scaled to the rate; mu and sigma are then estimated from the cell's
journal exactly as from a production one, by a judge that knows the simulated world
(``_simworld``). Cells share seeds (common random numbers), so they differ only by the
factor varied.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from threshold.clock import VirtualClock
from threshold.errors import ConfigError
from threshold.ids import IdFactory, derive_seed
from threshold.methodology._reliability import Estimate, estimate_reliability
from threshold.methodology._simworld import (
    COMPOSITIONS,
    MODEL_SPEC,
    STRENGTHS,
    Batch,
    Offer,
    SimApprover,
    Strength,
    World,
    error_profile,
    make_agent,
    offer_boundary,
    propose,
)
from threshold.models import ModelRegistry, SimModel
from threshold.runtime import Runtime
from threshold.store import Store, open_store

DEFAULT_RATES: tuple[float, ...] = (0.4, 0.2, 0.1, 0.05, 0.02)


# --- the grid -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The grid and its sizes. ``runs`` runs of ``crossings`` customers per cell."""

    rates: tuple[float, ...] = DEFAULT_RATES
    compositions: tuple[str, ...] = tuple(COMPOSITIONS)
    strengths: tuple[Strength, ...] = STRENGTHS
    runs: int = 40
    crossings: int = 5
    seed: int = 0
    exception_rate: float = 0.1
    approver_accuracy: float = 0.95
    confidence: float = 0.95

    def __post_init__(self) -> None:
        unknown = [c for c in self.compositions if c not in COMPOSITIONS]
        bad = [s for s in self.strengths if s not in STRENGTHS]
        if unknown or bad or self.runs < 1 or self.crossings < 1 or not self.rates:
            raise ConfigError(f"invalid simulation grid: compositions {unknown or 'ok'}, "
                              f"strengths {bad or 'ok'}, runs {self.runs}, crossings "
                              f"{self.crossings}, rates {list(self.rates)}")
        for rate in self.rates:
            error_profile(rate)
        shares = {"exception_rate": self.exception_rate,
                  "approver_accuracy": self.approver_accuracy}
        for name, value in shares.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} is a share in [0, 1], not {value}")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"confidence must be between 0 and 1, not {self.confidence}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Cell:
    """One grid cell: the estimate and what the model and the patterns did."""

    rate: float
    composition: str
    strength: str
    estimate: Estimate
    call_error: float   # share of first proposals that were not acceptable
    call_sigma: float   # sd of a first proposal's +-1 correctness: the model's own noise
    attempts: float     # proposals per crossing
    escalations: int
    compensations: int

    @property
    def name(self) -> str:
        return f"{self.composition}/{self.strength}"

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "estimate"}
        return {**data, "estimate": self.estimate.to_dict()}


async def run_cell(config: SimConfig, rate: float, composition: str,
                   strength: Strength) -> Cell:
    """Simulate one cell with a real runtime and estimate it from its journal."""
    comp = COMPOSITIONS[composition]
    world = World(config.seed, config.exception_rate)
    model = SimModel("reliability", seed=derive_seed(config.seed, "model"),
                     profile=error_profile(rate), generators={Offer: propose})
    models = ModelRegistry()
    models.add(MODEL_SPEC, model)
    store = open_store("memory://")
    runtime = Runtime(store, clock=VirtualClock(), models=models, default_model=MODEL_SPEC,
                      ids=IdFactory(config.seed))
    try:
        runtime.agent("offers", input=Batch)(make_agent(comp, offer_boundary(comp, strength)))
        if comp.escalate:
            runtime.actors.append(SimApprover(runtime, world, accuracy=config.approver_accuracy,
                                              seed=config.seed))
        per_run = config.crossings
        for run in range(config.runs):
            batch = Batch(customers=[world.customer(run * per_run + k) for k in range(per_run)])
            await runtime.start("offers", batch, run_id=f"run-{run:04d}",
                                seed=derive_seed(config.seed, "run", run))
        await runtime.run_until_idle()
        report = await estimate_reliability(store, judge=world.judge,
                                            confidence=config.confidence)
        return await _cell(store, world, rate, composition, strength, report.pooled)
    finally:
        await store.close()


async def _cell(store: Store, world: World, rate: float, composition: str, strength: str,
                pooled: Estimate) -> Cell:
    attempts = await store.list_attempts()
    firsts = [a for a in attempts if a.attempt == 1]
    right = sum(1 for a in firsts if world.acceptable(a.value, signed_off=True))
    q = right / len(firsts) if firsts else 1.0
    events = await store.list_events(kind="saga.compensate")
    return Cell(rate, composition, strength, pooled, call_error=1 - q,
                call_sigma=2 * (q * (1 - q)) ** 0.5,
                attempts=len(attempts) / max(pooled.n, 1),
                escalations=len(await store.list_approvals()),
                compensations=sum(1 for e in events if e.data.get("status") == "ok"))


@dataclass(frozen=True, slots=True)
class Simulation:
    config: SimConfig
    cells: tuple[Cell, ...] = field(default_factory=tuple)

    def cell(self, rate: float, composition: str, strength: str) -> Cell:
        for c in self.cells:
            if (c.rate, c.composition, c.strength) == (rate, composition, strength):
                return c
        raise ConfigError(f"no cell {rate}/{composition}/{strength} in this simulation")

    def at_rate(self, rate: float) -> list[Cell]:
        return [c for c in self.cells if c.rate == rate]

    def to_dict(self) -> dict[str, Any]:
        from threshold.methodology._separation import summarize

        return {"config": self.config.to_dict(), "cells": [c.to_dict() for c in self.cells],
                "summary": summarize(self)}


async def simulate(config: SimConfig | None = None) -> Simulation:
    """Run every cell of the grid; reproducible from ``config.seed``."""
    config = config or SimConfig()
    cells = [await run_cell(config, rate, composition, strength)
             for rate in config.rates for composition in config.compositions
             for strength in config.strengths]
    return Simulation(config, tuple(cells))
