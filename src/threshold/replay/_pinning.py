"""Version pins: what a run was started with, which runs no deployment can serve any more,
and migrating a run to another definition on purpose.

A run pins its agent version and model at start (``Runtime.start``) and, where the agent
declares one, its policy version (``start(..., pins={"policy": "v7"})``). The prompt
versions it used are read from its crossings. A migration is refused unless the new
definition replays the run's journal without nondeterminism.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from threshold.clock import Clock, SystemClock, to_iso
from threshold.errors import (
    MigrationRefused,
    NondeterminismError,
    NotFoundError,
    ThresholdError,
)
from threshold.models import ModelRegistry, normalize_spec
from threshold.replay._engine import Register, check_deterministic
from threshold.runtime import Runtime
from threshold.store import (
    TERMINAL_RUN_STATUSES,
    CrossingRecord,
    EventRecord,
    RunRecord,
    Store,
    open_store,
)

ACTIVE_STATUSES = ("ready", "running", "waiting", "stranded")


def prompt_pins(crossings: list[CrossingRecord]) -> dict[str, str]:
    """The prompt id -> version a run's boundaries used (the last use wins)."""
    return {c.prompt_id: c.prompt_version for c in sorted(crossings, key=lambda c: c.seq)}


async def run_pins(store: Store, run_id: str) -> dict[str, Any]:
    """A run's pins with the prompt versions its crossings used."""
    run = await store.get_run(run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id!r}")
    return {**run.pins, "prompts": prompt_pins(await store.list_crossings(run_id))}


@dataclass(frozen=True, slots=True)
class StrandedRun:
    run_id: str
    agent: str
    agent_version: str
    status: str
    pins: dict[str, Any]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "agent": self.agent, "agent_version": self.agent_version,
                "status": self.status, "pins": self.pins, "reasons": list(self.reasons)}


def _serve_problem(models: ModelRegistry, spec: str) -> str | None:
    try:
        if models.can_serve(spec):
            return None
        return f"model {spec} cannot be served"
    except ThresholdError as exc:  # e.g. an adapter without its API key configured
        return f"model {spec} cannot be served: {exc}"


async def stranded_runs(store: Store, runtime: Runtime, *, models: ModelRegistry | None = None,
                        policy_version: str | None = None) -> list[StrandedRun]:
    """Unfinished runs whose pins ``runtime`` (with its agents registered) cannot serve: the
    agent version is not registered, the model cannot be served, the deployed policy is
    another version, or a worker already marked the run stranded."""
    models = models or runtime.models
    out = []
    for run in await store.list_runs():
        if run.status not in ACTIVE_STATUSES:
            continue
        reasons = []
        if run.status == "stranded":
            reasons.append(f"marked stranded: {run.error or 'no deployed definition'}")
        if runtime.definition(run.agent, run.agent_version) is None:
            deployed = [d.version for d in runtime.definitions() if d.name == run.agent]
            reasons.append(f"agent {run.agent} version {run.agent_version} is not deployed "
                           f"(deployed: {', '.join(deployed) or 'none'})")
        model = run.pins.get("model")
        problem = None if model is None else _serve_problem(models, str(model))
        if problem:
            reasons.append(problem)
        pinned_policy = run.pins.get("policy")
        if policy_version and pinned_policy and str(pinned_policy) != policy_version:
            reasons.append(f"policy {pinned_policy} is pinned, {policy_version} is deployed")
        if reasons:
            pins = {**run.pins, "prompts": prompt_pins(await store.list_crossings(run.run_id))}
            out.append(StrandedRun(run.run_id, run.agent, run.agent_version, run.status, pins,
                                   tuple(reasons)))
    return out


@dataclass(frozen=True, slots=True)
class Migration:
    run_id: str
    by: str
    from_pins: dict[str, Any]
    to_pins: dict[str, Any]
    replayed_steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "by": self.by, "from": self.from_pins,
                "to": self.to_pins, "replayed_steps": self.replayed_steps}


async def migrate_run(store: Store, run_id: str, register: Register, *, to_version: str,
                      principal: str, model: str | None = None,
                      models: ModelRegistry | None = None, clock: Clock | None = None,
                      ) -> Migration:
    """Move ``run_id`` to agent version ``to_version`` (and ``model``), on purpose.

    Refused (``MigrationRefused``) when the run is finished or executing, when the version
    or model cannot be served, or when the new definition does not replay the run's journal
    without nondeterminism. On success the run gets its new pins, a ``run.migrated`` journal
    event saying who moved it from what to what, and the status ``ready``."""
    run = await store.get_run(run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id!r}")
    _check_movable(run, to_version)
    probe = Runtime(open_store("memory://"))  # the deployed definitions and their models
    try:
        register(probe)
    finally:
        await probe.store.close()
    if probe.definition(run.agent, to_version) is None:
        raise MigrationRefused(run_id, to_version,
                               f"agent {run.agent} version {to_version} is not registered")
    new_model = normalize_spec(model) if model else str(run.pins.get("model", ""))
    problem = _serve_problem(models or probe.models, new_model) if new_model else None
    if problem:
        raise MigrationRefused(run_id, to_version, f"{problem}; pin another with --model")
    try:
        outcomes = await check_deterministic(store, [run_id], register, agent_version=to_version,
                                             strict=False)
    except NondeterminismError as exc:
        raise MigrationRefused(run_id, to_version,
                               f"the new definition does not replay the journal: {exc}") from exc
    before = {"agent_version": run.agent_version, **run.pins,
              "prompts": prompt_pins(await store.list_crossings(run_id))}
    pins = {**run.pins, "agent_version": to_version, "model": new_model or run.pins.get("model")}
    after = {**pins, "prompts": before["prompts"]}
    now = to_iso((clock or SystemClock()).now())
    event = EventRecord(run_id, "run.migrated", {
        "by": principal, "from": {"agent_version": run.agent_version,
                                  "model": run.pins.get("model"), "status": run.status},
        "to": {"agent_version": to_version, "model": pins["model"], "status": "ready"},
        "replayed_steps": outcomes[0].diff.compared_steps}, now)
    if not await store.migrate_run(run_id, agent_version=to_version, pins=pins, event=event,
                                   now=now):
        raise MigrationRefused(run_id, to_version, "the run started executing or finished "
                                                   "meanwhile")
    return Migration(run_id, principal, before, after, outcomes[0].diff.compared_steps)


def _check_movable(run: RunRecord, to_version: str) -> None:
    if run.status in TERMINAL_RUN_STATUSES:
        raise MigrationRefused(run.run_id, to_version, f"the run is {run.status}")
    if run.status == "running":
        raise MigrationRefused(run.run_id, to_version,
                               "the run is executing; migrate it while it waits")
