"""The journal's rows. Only names and data: no live objects cross the durable boundary."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Literal, NamedTuple

from threshold._record import record

RunStatus = Literal["ready", "running", "waiting", "completed", "failed", "killed", "stranded"]
TERMINAL_RUN_STATUSES: frozenset[str] = frozenset({"completed", "failed", "killed"})

CrossingStatus = Literal[
    "open", "committed", "escalated", "aborted", "denied", "failed"
]
TERMINAL_CROSSING_STATUSES: frozenset[str] = frozenset(
    {"committed", "aborted", "denied", "failed"}
)


@record
class RunRecord:
    run_id: str
    agent: str
    agent_version: str
    status: str
    input: dict[str, Any]
    seed: int
    created_at: str
    updated_at: str
    pins: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    lease_owner: str | None = None
    lease_until: str | None = None
    parent_run_id: str | None = None


@record
class StepRecord:
    """One completed operation of a run's code, keyed by its position ``seq``."""

    run_id: str
    seq: int
    kind: str
    name: str
    result: Any
    at: str


@record
class CrossingRecord:
    crossing_id: str
    run_id: str
    seq: int
    boundary: str
    boundary_version: str
    action: str
    verifiers: list[list[str]]
    status: str
    attempts: int
    started_at: str
    model_id: str
    prompt_id: str
    prompt_version: str
    committed_hash: str | None = None
    outcome: Any = None
    ended_at: str | None = None
    reason: str | None = None


@record
class AttemptRecord:
    """One proposal, or one transport failure that produced no proposal."""

    crossing_id: str
    attempt: int
    kind: Literal["proposal", "transport_error"]
    at: str
    proposal_hash: str | None = None
    raw: str | None = None
    value: Any = None
    provenance: dict[str, Any] | None = None
    error_kind: str | None = None
    error_message: str | None = None
    retry_at: str | None = None


@record
class VerdictRecord:
    crossing_id: str
    attempt: int
    verifier: str
    verifier_version: str
    verdict: Literal["accept", "reject"]
    proposal_hash: str
    at: str
    code: str | None = None
    message: str | None = None
    retryable: bool | None = None
    hint: str | None = None
    field: str | None = None
    decided_by: str | None = None


@record
class EffectRecord:
    """The outbox row: intent first, then the result. ``key`` is unique."""

    key: str
    run_id: str
    action: str
    status: Literal["intent", "done", "failed"]
    intent_at: str
    crossing_id: str | None = None
    proposal_hash: str | None = None
    performed: int = 0
    result: Any = None
    error: str | None = None
    done_at: str | None = None


@record
class TimerRecord:
    """Fires at ``fire_at``. With a guard it lapses if the guarded record's version moved."""

    timer_id: str
    run_id: str
    fire_at: str
    purpose: str
    status: Literal["pending", "fired", "lapsed", "cancelled"] = "pending"
    guard_key: str | None = None
    guard_version: int | None = None
    fired_at: str | None = None


@record
class MessageRecord:
    """An inbox message, unique per (run, message_id): delivery is idempotent."""

    run_id: str
    message_id: str
    channel: str
    payload: Any
    received_at: str
    consumed_seq: int | None = None


@record
class ApprovalRecord:
    approval_id: str
    run_id: str
    crossing_id: str
    boundary: str
    proposal_hash: str
    value: Any
    reason: str
    role: str
    created_at: str
    status: Literal["pending", "approved", "denied", "timed_out"] = "pending"
    sla_due: str | None = None
    fallback: Any = None
    decided_by: str | None = None
    decided_at: str | None = None
    comment: str | None = None


@record
class EventRecord:
    """A journal entry that is not a step: transitions, kills, escalations, sagas, notes."""

    run_id: str | None
    kind: str
    data: dict[str, Any]
    at: str
    event_id: int | None = None


@record
class VersionedRecord:
    """A row under compare-and-swap: P5 state rows, counters, consumer offsets."""

    namespace: str
    key: str
    version: int
    value: Any
    updated_at: str


@record
class TopicEvent:
    topic: str
    offset: int
    key: str | None
    payload: Any
    headers: dict[str, Any]
    event_time: str
    appended_at: str


@record
class CrossingState:
    """A crossing as stored: its row, attempts, verdicts and effect, for resume and audit."""

    crossing: CrossingRecord
    attempts: list[AttemptRecord]
    verdicts: list[VerdictRecord]
    effect: EffectRecord | None


class AuditRows(NamedTuple):
    """The journal columns an audit reads (``threshold.audit``), and nothing else.

    An optional store capability, ``audit_rows(run_id)``, beside the protocol's ``list_*``
    methods: those load whole records, decoding every proposal's value and provenance,
    which an audit of a large journal spends most of its time on."""

    # crossing_id, status, committed_hash, verifiers ([[name, version], ...] or its JSON)
    crossings: list[tuple[Any, ...]]
    verdicts: list[tuple[Any, ...]]  # crossing_id, proposal_hash, verifier, verdict, code
    attempts: list[tuple[Any, ...]]  # kind, error_kind
    effects: list[tuple[Any, ...]]  # key, crossing_id, status
    approvals: int
