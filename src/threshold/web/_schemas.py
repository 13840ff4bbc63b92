"""The JSON API's request and response models (they are the OpenAPI spec)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from threshold.store import ApprovalRecord, RunRecord, VerdictRecord
from threshold.timeline import Entry
from threshold.web._queries import AttemptView, CrossingView, RunSummary, RunView, jsonable


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(_Out):
    detail: str


class RunOut(_Out):
    run_id: str
    agent: str
    agent_version: str
    status: str
    outcome: str | None
    patterns: list[str]
    pending_approvals: int
    created_at: str
    updated_at: str
    model: str | None

    @classmethod
    def of(cls, s: RunSummary) -> RunOut:
        r = s.run
        model = r.pins.get("model")
        return cls(run_id=r.run_id, agent=r.agent, agent_version=r.agent_version,
                   status=r.status, outcome=s.outcome, patterns=list(s.patterns),
                   pending_approvals=s.pending_approvals, created_at=r.created_at,
                   updated_at=r.updated_at, model=None if model is None else str(model))


class RunListOut(_Out):
    runs: list[RunOut]
    matched: int = Field(description="runs matching the filters (the list is cut at limit)")
    states: dict[str, int]
    outcomes: dict[str, int]
    patterns: dict[str, int]


class VerdictOut(_Out):
    verifier: str
    verifier_version: str
    verdict: Literal["accept", "reject"]
    code: str | None
    message: str | None
    decided_by: str | None
    at: str

    @classmethod
    def of(cls, v: VerdictRecord) -> VerdictOut:
        return cls(verifier=v.verifier, verifier_version=v.verifier_version, verdict=v.verdict,
                   code=v.code, message=v.message, decided_by=v.decided_by, at=v.at)


class AttemptOut(_Out):
    attempt: int
    kind: str
    at: str
    proposal_hash: str | None
    raw: str | None
    value: Any
    provenance: dict[str, Any] | None
    error: str | None
    verdicts: list[VerdictOut]

    @classmethod
    def of(cls, a: AttemptView) -> AttemptOut:
        r = a.record
        error = None if r.error_kind is None else f"{r.error_kind}: {r.error_message}"
        return cls(attempt=r.attempt, kind=r.kind, at=r.at, proposal_hash=r.proposal_hash,
                   raw=r.raw, value=jsonable(r.value), provenance=jsonable(r.provenance),
                   error=error, verdicts=[VerdictOut.of(v) for v in a.verdicts])


class ApprovalOut(_Out):
    approval_id: str
    run_id: str
    crossing_id: str
    boundary: str
    status: str
    role: str
    reason: str
    value: Any
    proposal_hash: str
    created_at: str
    sla_due: str | None
    decided_by: str | None
    decided_at: str | None
    comment: str | None

    @classmethod
    def of(cls, a: ApprovalRecord) -> ApprovalOut:
        data = asdict(a)
        data.pop("fallback")
        data["value"] = jsonable(a.value)
        return cls(**data)


class CrossingOut(_Out):
    crossing_id: str
    seq: int
    boundary: str
    boundary_version: str
    action: str
    status: str
    model_id: str
    prompt: str
    started_at: str
    ended_at: str | None
    reason: str | None
    outcome: Any
    attempts: list[AttemptOut]
    human: list[VerdictOut]
    effect: dict[str, Any] | None
    approval: ApprovalOut | None

    @classmethod
    def of(cls, c: CrossingView) -> CrossingOut:
        r = c.record
        return cls(crossing_id=r.crossing_id, seq=r.seq, boundary=r.boundary,
                   boundary_version=r.boundary_version, action=r.action, status=r.status,
                   model_id=r.model_id, prompt=f"{r.prompt_id}@{r.prompt_version}",
                   started_at=r.started_at, ended_at=r.ended_at, reason=r.reason,
                   outcome=jsonable(r.outcome), attempts=[AttemptOut.of(a) for a in c.attempts],
                   human=[VerdictOut.of(v) for v in c.human],
                   effect=None if c.effect is None else jsonable(asdict(c.effect)),
                   approval=None if c.approval is None else ApprovalOut.of(c.approval))


class RunDetailOut(_Out):
    run_id: str
    agent: str
    agent_version: str
    status: str
    outcome: str | None
    patterns: list[str]
    seed: int
    input: Any
    pins: dict[str, Any]
    result: Any
    error: str | None
    created_at: str
    updated_at: str
    crossings: list[CrossingOut]

    @classmethod
    def of(cls, view: RunView) -> RunDetailOut:
        r: RunRecord = view.run
        return cls(run_id=r.run_id, agent=r.agent, agent_version=r.agent_version,
                   status=r.status, outcome=view.outcome, patterns=list(view.patterns),
                   seed=r.seed, input=jsonable(r.input), pins=jsonable(r.pins),
                   result=jsonable(r.result), error=r.error, created_at=r.created_at,
                   updated_at=r.updated_at, crossings=[CrossingOut.of(c) for c in view.crossings])


class EntryOut(_Out):
    at: str
    kind: str
    summary: str
    detail: dict[str, Any]

    @classmethod
    def of(cls, e: Entry) -> EntryOut:
        return cls(at=e.at, kind=e.kind, summary=e.summary, detail=jsonable(e.detail))


class TimelineOut(_Out):
    run_id: str
    status: str
    entries: list[EntryOut]
    pending_timers: list[dict[str, Any]]
    approvals: list[ApprovalOut]
    state: Any

    @classmethod
    def of(cls, view: RunView) -> TimelineOut:
        t = view.timeline
        return cls(run_id=t.run.run_id, status=t.run.status,
                   entries=[EntryOut.of(e) for e in t.entries],
                   pending_timers=[jsonable(asdict(x)) for x in t.pending_timers],
                   approvals=[ApprovalOut.of(a) for a in t.approvals],
                   state=None if t.state is None else jsonable(asdict(t.state)))


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    comment: str = Field("", max_length=4000)


class KillIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str | None = Field(None, min_length=1, max_length=512,
                               description="one run; omit to stop every run")
    reason: str = Field(min_length=1, max_length=1000)


class KillOut(_Out):
    stopped: int
    principal: str
    scope: str
