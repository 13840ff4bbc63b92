"""``diagnose``: read journals, find failure signatures, map them to pattern weaknesses.

It reads what happened (runs, crossings, attempts, verdicts, effects, timers, messages,
approvals, events), not what was intended, and ranks findings by their earliest symptom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from threshold.methodology._findings import (
    SEVERITY_RANK,
    Finding,
    Thresholds,
    load_journal,
)
from threshold.methodology._sig_control import (
    approval_backlog,
    approval_timeouts,
    gate_bottleneck,
    rubber_stamp,
    timer_signatures,
)
from threshold.methodology._sig_patterns import (
    delegation_signatures,
    divergence_and_lateness,
    fanout_and_supervision,
    saga_signatures,
    stale_cas,
)
from threshold.methodology._signatures import (
    Detector,
    budget_exhausted,
    commit_without_accept,
    duplicate_effects,
    reject_reported_as_success,
    retry_loop,
)
from threshold.store import Store

DETECTORS: tuple[Detector, ...] = (
    reject_reported_as_success, commit_without_accept, retry_loop, budget_exhausted,
    duplicate_effects, gate_bottleneck, approval_timeouts, rubber_stamp, approval_backlog,
    timer_signatures, saga_signatures, stale_cas, delegation_signatures,
    fanout_and_supervision, divergence_and_lateness,
)

SIGNATURES: tuple[str, ...] = (
    "reject_reported_as_success", "commit_without_accept", "retry_loop", "budget_exhausted",
    "duplicate_effect", "gate_bottleneck", "approval_timeout", "rubber_stamp",
    "approval_backlog", "lapsed_timer", "late_timer", "compensation_failed",
    "compensation_out_of_order", "compensation_incomplete", "stale_cas_write",
    "subagent_conflict", "unaggregated_subagent_output", "gather_failed", "restart_limit",
    "replay_divergence", "late_event", "unconsumed_message",
)
"""Every signature ``diagnose`` knows, by name."""


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Findings ranked by earliest symptom (then severity). ``clean`` when there are none."""

    scope: str | None
    runs: int
    crossings: int
    now: str
    findings: tuple[Finding, ...]

    @property
    def clean(self) -> bool:
        return not self.findings

    def by_signature(self, signature: str) -> list[Finding]:
        return [f for f in self.findings if f.signature == signature]

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "runs": self.runs, "crossings": self.crossings,
                "now": self.now, "clean": self.clean,
                "findings": [f.to_dict() for f in self.findings]}

    def render_text(self) -> str:
        where = f"run {self.scope}" if self.scope else f"{self.runs} run(s)"
        head = f"diagnosis of {where}, {self.crossings} crossing(s), as of {self.now or '-'}"
        if self.clean:
            return f"{head}\nno failure signatures found"
        lines = [head, f"{len(self.findings)} finding(s), earliest symptom first", ""]
        for n, f in enumerate(self.findings, 1):
            lines += [
                f"{n}. [{f.severity}] {f.signature} ({f.pattern}: {f.pattern_name}) "
                f"- {f.subject}",
                f"   first seen {f.first_seen}; {f.count} occurrence(s) in "
                f"{len(f.run_ids)} run(s)",
                f"   symptom:    {f.symptom}",
                f"   cause:      {f.cause}",
                f"   correction: {f.correction}",
            ]
            if f.counts:
                lines.append("   counts:     " + ", ".join(
                    f"{k}={v}" for k, v in f.counts.items()))
            lines += [f"   - {line}" for line in f.evidence]
            if f.count > len(f.evidence):
                lines.append(f"   - ... and {f.count - len(f.evidence)} more")
            lines.append("")
        return "\n".join(lines).rstrip()


async def diagnose(store: Store, *, run_id: str | None = None,
                   thresholds: Thresholds | None = None) -> Diagnosis:
    """Read the journal (one run, or all) and return its failure signatures."""
    th = thresholds or Thresholds()
    journal = await load_journal(store, run_id)
    findings = [f for detector in DETECTORS for f in detector(journal, th)]
    findings.sort(key=lambda f: (f.first_seen, SEVERITY_RANK[f.severity], f.signature,
                                 f.subject))
    return Diagnosis(scope=run_id, runs=len(journal.runs), crossings=len(journal.crossings),
                     now=journal.now, findings=tuple(findings))
