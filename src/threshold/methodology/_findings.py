"""What ``diagnose`` reads and what it reports: a journal snapshot, and findings.

A finding is one failure signature observed in a journal: a symptom, its cause, the
correction, the pattern weakness it maps to (P1..P6, or the SDB itself), the evidence
(run ids, crossing ids, counts) and the time of its earliest symptom.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from threshold.audit import AuditReport, audit
from threshold.clock import from_iso
from threshold.errors import NotFoundError
from threshold.store import (
    ApprovalRecord,
    AttemptRecord,
    CrossingRecord,
    EffectRecord,
    EventRecord,
    MessageRecord,
    RunRecord,
    StepRecord,
    Store,
    TimerRecord,
    VerdictRecord,
)

Severity = Literal["high", "medium", "low"]
SEVERITY_RANK: dict[str, int] = {"high": 0, "medium": 1, "low": 2}

PATTERN_NAMES: dict[str, str] = {
    "SDB": "stochastic-deterministic boundary",
    "P1": "hierarchical delegation",
    "P2": "scatter-gather + saga",
    "P3": "event-driven sequencing",
    "P4": "supervisor + gate",
    "P5": "shared state machine",
    "P6": "human in the loop",
}

MAX_EVIDENCE_LINES = 10


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where a pattern becomes a finding; named so a reviewer can argue with each one."""

    repeat_hash: int = 2          # consecutive attempts proposing the same hash
    repeat_code: int = 3          # consecutive attempts rejected with the same codes
    repeat_crossings: int = 3     # consecutive uncommitted crossings of one boundary
    late_timer: timedelta = timedelta(minutes=5)
    effect_gap: timedelta = timedelta(minutes=10)  # intent to result: an interrupted effect
    stamp_min_decisions: int = 10
    stamp_approve_rate: float = 0.95
    stamp_latency: timedelta = timedelta(seconds=60)
    gate_min: int = 10            # crossings stopped by gate or throttle codes
    gate_share: float = 0.2       # ... as a share of all crossings
    gate_prefixes: tuple[str, ...] = ("policy.", "throttle.")
    backlog_min: int = 20         # pending approvals


@dataclass(frozen=True, slots=True)
class Finding:
    """One failure signature, with its evidence. ``first_seen`` is the earliest symptom."""

    signature: str
    pattern: str
    severity: Severity
    subject: str
    symptom: str
    cause: str
    correction: str
    first_seen: str
    count: int
    run_ids: tuple[str, ...]
    crossing_ids: tuple[str, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()

    @property
    def pattern_name(self) -> str:
        return PATTERN_NAMES.get(self.pattern, self.pattern)

    def to_dict(self) -> dict[str, Any]:
        return {"signature": self.signature, "pattern": self.pattern,
                "pattern_name": self.pattern_name, "severity": self.severity,
                "subject": self.subject, "symptom": self.symptom, "cause": self.cause,
                "correction": self.correction, "first_seen": self.first_seen,
                "count": self.count, "run_ids": list(self.run_ids),
                "crossing_ids": list(self.crossing_ids), "counts": dict(self.counts),
                "evidence": list(self.evidence)}


@dataclass(frozen=True, slots=True)
class Evidence:
    """One observed symptom: when, where, and a line a person can read."""

    at: str
    run_id: str | None
    line: str
    crossing_id: str | None = None


@dataclass(frozen=True, slots=True)
class Text:
    symptom: str
    cause: str
    correction: str


def found(*findings: Finding | None) -> list[Finding]:
    """The findings that exist."""
    return [f for f in findings if f is not None]


def make_finding(signature: str, pattern: str, severity: Severity, subject: str,
                 items: Iterable[Evidence], text: Text,
                 counts: Mapping[str, int] | None = None) -> Finding | None:
    """A finding from its evidence, or None when there is none."""
    ordered = sorted(items, key=lambda e: (e.at, e.run_id or "", e.line))
    if not ordered:
        return None
    return Finding(
        signature=signature, pattern=pattern, severity=severity, subject=subject,
        symptom=text.symptom, cause=text.cause, correction=text.correction,
        first_seen=ordered[0].at, count=len(ordered),
        run_ids=tuple(sorted({e.run_id for e in ordered if e.run_id})),
        crossing_ids=tuple(sorted({e.crossing_id for e in ordered if e.crossing_id})),
        counts=dict(counts or {}),
        evidence=tuple(f"{e.at} {e.line}" for e in ordered[:MAX_EVIDENCE_LINES]))


@dataclass(frozen=True, slots=True)
class Journal:
    """Everything ``diagnose`` reads, loaded once (one run, or the whole store)."""

    scope: str | None
    runs: list[RunRecord]
    crossings: list[CrossingRecord]
    attempts: list[AttemptRecord]
    verdicts: list[VerdictRecord]
    effects: list[EffectRecord]
    timers: list[TimerRecord]
    approvals: list[ApprovalRecord]
    events: list[EventRecord]
    messages: list[MessageRecord]
    steps: dict[str, dict[int, StepRecord]]
    audit: AuditReport
    now: str

    @property
    def run_status(self) -> dict[str, str]:
        return {r.run_id: r.status for r in self.runs}

    def crossings_by_id(self) -> dict[str, CrossingRecord]:
        return {c.crossing_id: c for c in self.crossings}

    def events_with_prefix(self, prefix: str) -> list[EventRecord]:
        return [e for e in self.events if e.kind.startswith(prefix)]


async def load_journal(store: Store, run_id: str | None = None) -> Journal:
    """Read every table ``diagnose`` needs, for one run or the whole store."""
    if run_id is not None:
        run = await store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id!r} in {store.url}")
        runs = [run]
    else:
        runs = await store.list_runs()
    steps = {r.run_id: await store.load_steps(r.run_id) for r in runs}
    messages = [m for r in runs for m in await store.list_messages(r.run_id)]
    crossings = await store.list_crossings(run_id)
    events = await store.list_events(run_id)
    approvals = await store.list_approvals(run_id=run_id)
    timers = await store.list_timers(run_id)
    # The reference time is the latest moment the journal records (and a simulation's
    # virtual time), never the wall clock: a diagnosis of an old journal does not age.
    stamps = [r.updated_at for r in runs] + [e.at for e in events]
    stamps += [c.ended_at or c.started_at for c in crossings]
    stamps += [a.decided_at or a.created_at for a in approvals]
    stamps += [t.fired_at for t in timers if t.fired_at]
    virtual = await store.get_meta("clock.virtual_now")
    stamps += [virtual] if virtual else []
    return Journal(
        scope=run_id, runs=runs, crossings=crossings, attempts=await store.list_attempts(run_id),
        verdicts=await store.list_verdicts(run_id), effects=await store.list_effects(run_id),
        timers=timers, approvals=approvals, events=events, messages=messages, steps=steps,
        audit=await audit(store, run_id=run_id), now=max(stamps, default=""))


def seconds_between(start: str, end: str) -> float:
    return (from_iso(end) - from_iso(start)).total_seconds()
