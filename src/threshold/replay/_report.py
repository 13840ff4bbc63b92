"""The divergence report: per run and in aggregate, by boundary and by consumer (agent).

A run is ``identical`` (nothing differs), ``absorbed`` (proposals differed, but every commit
and state transition is the same: the verifiers or the outcome absorbed the difference) or
``changed`` (a commit, a state transition or the final state moved).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from threshold.replay._diff import StepDiff
from threshold.replay._engine import Register, ReplayOutcome, ReplaySpec, replay_runs
from threshold.store import Store

GateOn = Literal["changed", "any"]


@dataclass(slots=True)
class Tally:
    total: int = 0
    diverged: int = 0
    absorbed: int = 0
    changed: int = 0
    absorbed_by_verifiers: int = 0

    @property
    def rate(self) -> float:
        return self.diverged / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "diverged": self.diverged, "absorbed": self.absorbed,
                "absorbed_by_verifiers": self.absorbed_by_verifiers, "changed": self.changed,
                "divergence_rate": round(self.rate, 6)}


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    agent: str
    classification: str
    first: StepDiff | None
    differing_steps: int
    unapplied: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "agent": self.agent,
                "classification": self.classification,
                "first_diverging_step": None if self.first is None else self.first.to_dict(),
                "differing_steps": self.differing_steps, "unapplied": list(self.unapplied)}


@dataclass(slots=True)
class DivergenceReport:
    spec: dict[str, Any]
    runs: list[RunSummary] = field(default_factory=list)
    crossings: Tally = field(default_factory=Tally)
    by_boundary: dict[str, Tally] = field(default_factory=dict)
    by_agent: dict[str, Tally] = field(default_factory=dict)

    def count(self, classification: str) -> int:
        return sum(1 for r in self.runs if r.classification == classification)

    @property
    def divergence_rate(self) -> float:
        """Share of runs where anything diverged (absorbed or not)."""
        return (len(self.runs) - self.count("identical")) / len(self.runs) if self.runs else 0.0

    @property
    def changed_rate(self) -> float:
        """Share of runs whose commits or states changed: what a model upgrade would do."""
        return self.count("changed") / len(self.runs) if self.runs else 0.0

    def gate(self, threshold: float, on: GateOn = "changed") -> bool:
        """True when the run passes: the gated rate is at most ``threshold``."""
        return (self.changed_rate if on == "changed" else self.divergence_rate) <= threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec, "runs": len(self.runs),
            "identical": self.count("identical"), "absorbed": self.count("absorbed"),
            "changed": self.count("changed"),
            "divergence_rate": round(self.divergence_rate, 6),
            "changed_rate": round(self.changed_rate, 6),
            "crossings": self.crossings.to_dict(),
            "by_boundary": {k: v.to_dict() for k, v in sorted(self.by_boundary.items())},
            "by_agent": {k: v.to_dict() for k, v in sorted(self.by_agent.items())},
            "per_run": [r.to_dict() for r in self.runs],
        }


def divergence_report(outcomes: Sequence[ReplayOutcome], spec: ReplaySpec) -> DivergenceReport:
    report = DivergenceReport({
        "model": spec.model or "recorded",
        "prompts": {pid: p.version for pid, p in sorted(spec.prompts.items())},
        "policy_version": spec.policy_version, "agent_version": spec.agent_version})
    for outcome in outcomes:
        diff = outcome.diff
        report.runs.append(RunSummary(diff.run_id, diff.agent, diff.classification, diff.first,
                                      len(diff.diffs),
                                      tuple(u.detail for u in outcome.unapplied)))
        agent = report.by_agent.setdefault(diff.agent, Tally())
        agent.total += 1
        if diff.classification != "identical":
            agent.diverged += 1
            agent.absorbed += diff.classification == "absorbed"
            agent.changed += diff.classification == "changed"
            agent.absorbed_by_verifiers += diff.classification == "absorbed" and any(
                d.absorbed_by == "verifiers" for d in diff.diffs)
        for comparison in diff.crossings:
            for tally in (report.crossings,
                          report.by_boundary.setdefault(comparison.boundary, Tally())):
                _count(tally, comparison.diff)
    return report


def _count(tally: Tally, diff: StepDiff | None) -> None:
    tally.total += 1
    if diff is None:
        return
    tally.diverged += 1
    if diff.category == "changed":
        tally.changed += 1
    else:
        tally.absorbed += 1
        tally.absorbed_by_verifiers += diff.absorbed_by == "verifiers"


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def render_report(report: DivergenceReport, *, max_runs: int = 50) -> str:
    spec = report.spec
    prompts = ", ".join(f"{k}@{v}" for k, v in spec["prompts"].items()) or "as recorded"
    n = len(report.runs)
    lines = [
        f"divergence replay: model {spec['model']}, prompts {prompts}, "
        f"policy {spec['policy_version'] or 'as recorded'}",
        f"runs {n}: identical {report.count('identical')}, absorbed {report.count('absorbed')}"
        f", changed {report.count('changed')}; divergence rate {report.divergence_rate:.1%}, "
        f"changed-commit rate {report.changed_rate:.1%}",
        f"crossings {report.crossings.total}: diverged {report.crossings.diverged}, absorbed "
        f"{report.crossings.absorbed} (by verifiers {report.crossings.absorbed_by_verifiers}),"
        f" changed {report.crossings.changed}",
        "",
        f"{'by boundary':<24}{'crossings':>10}{'diverged':>10}{'absorbed':>10}{'changed':>9}",
    ]
    for name, t in sorted(report.by_boundary.items()):
        lines.append(f"{name:<24}{t.total:>10}{t.diverged:>10}{t.absorbed:>10}{t.changed:>9}")
    lines += ["", f"{'by agent':<24}{'runs':>10}{'diverged':>10}{'absorbed':>10}{'changed':>9}"]
    for name, t in sorted(report.by_agent.items()):
        lines.append(f"{name:<24}{t.total:>10}{t.diverged:>10}{t.absorbed:>10}{t.changed:>9}")
    diverged = [r for r in report.runs if r.first is not None]
    if diverged:
        lines += ["", "first diverging step per run",
                  f"{'run':<28}{'class':<10}{'step':>5}  what"]
        for r in diverged[:max_runs]:
            assert r.first is not None
            what = f"{r.first.kind}:{r.first.name} {'/'.join(r.first.aspects)}"
            lines.append(f"{r.run_id:<28}{r.classification:<10}{r.first.seq:>5}  {what}")
            lines.append(f"{'':<45}replayed: {r.first.replayed}")
            lines.append(f"{'':<45}recorded: {r.first.recorded}")
        if len(diverged) > max_runs:
            lines.append(f"... and {len(diverged) - max_runs} more (use --json for all)")
    return "\n".join(lines)


async def divergence_replay(store: Store, run_ids: Sequence[str] | None, register: Register,
                            spec: ReplaySpec, *, batch: int = 1000) -> DivergenceReport:
    """Re-run the recorded inputs of ``run_ids`` (every run when None) under ``spec`` through
    the same verifiers, with effects in the shadow ledger, and report how they diverge."""
    return divergence_report(await replay_runs(store, run_ids, register, spec, batch=batch),
                             spec)
