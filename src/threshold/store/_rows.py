"""How journal rows map to records, for every SQL backend: the column lists (one order,
used in every statement) and the readers. JSON columns are stored as text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from threshold._json import compact_encoder, loads
from threshold.store._records import (
    ApprovalRecord,
    AttemptRecord,
    CrossingRecord,
    EffectRecord,
    MessageRecord,
    RunRecord,
    TimerRecord,
    VerdictRecord,
)

Row = tuple[Any, ...]

# How every JSON column is written: compact, non-ASCII escaped, anything else as str().
dump_json = compact_encoder(sort_keys=False, ensure_ascii=True)

RUN_COLS = ("run_id, agent, agent_version, status, input, seed, pins, result, error, "
            "created_at, updated_at, lease_owner, lease_until, parent_run_id")
CROSSING_COLS = ("crossing_id, run_id, seq, boundary, boundary_version, action, verifiers, "
                 "status, attempts, started_at, model_id, prompt_id, prompt_version, "
                 "committed_hash, outcome, ended_at, reason")
ATTEMPT_COLS = ("crossing_id, attempt, kind, at, proposal_hash, raw, value, provenance, "
                "error_kind, error_message, retry_at")
VERDICT_COLS = ("crossing_id, attempt, verifier, verifier_version, verdict, proposal_hash, "
                "at, code, message, retryable, hint, field, decided_by")
EFFECT_COLS = ("key, run_id, action, status, intent_at, crossing_id, proposal_hash, "
               "performed, result, error, done_at")
TIMER_COLS = "timer_id, run_id, fire_at, purpose, status, guard_key, guard_version, fired_at"
MESSAGE_COLS = "run_id, message_id, channel, payload, received_at, consumed_seq"
APPROVAL_COLS = ("approval_id, run_id, crossing_id, boundary, proposal_hash, value, reason, "
                 "role, created_at, status, sla_due, fallback, decided_by, decided_at, comment")


def load(text: str | None) -> Any:
    return None if text is None else loads(text)


def run_row(r: Row) -> RunRecord:
    return RunRecord(
        run_id=r[0], agent=r[1], agent_version=r[2], status=r[3], input=load(r[4]),
        seed=r[5], pins=load(r[6]), result=load(r[7]), error=r[8], created_at=r[9],
        updated_at=r[10], lease_owner=r[11], lease_until=r[12], parent_run_id=r[13],
    )


def crossing_row(r: Row) -> CrossingRecord:
    return CrossingRecord(
        crossing_id=r[0], run_id=r[1], seq=r[2], boundary=r[3], boundary_version=r[4],
        action=r[5], verifiers=load(r[6]), status=r[7], attempts=r[8], started_at=r[9],
        model_id=r[10], prompt_id=r[11], prompt_version=r[12], committed_hash=r[13],
        outcome=load(r[14]), ended_at=r[15], reason=r[16],
    )


def attempt_row(r: Row, *, raw: Callable[[Any], str | None] = load) -> AttemptRecord:
    """``raw`` decodes the stored model output (PostgreSQL keeps it JSON-encoded)."""
    return AttemptRecord(
        crossing_id=r[0], attempt=r[1], kind=r[2], at=r[3], proposal_hash=r[4],
        raw=raw(r[5]), value=load(r[6]), provenance=load(r[7]), error_kind=r[8],
        error_message=r[9], retry_at=r[10],
    )


def verdict_row(r: Row) -> VerdictRecord:
    return VerdictRecord(
        crossing_id=r[0], attempt=r[1], verifier=r[2], verifier_version=r[3], verdict=r[4],
        proposal_hash=r[5], at=r[6], code=r[7], message=r[8],
        retryable=None if r[9] is None else bool(r[9]), hint=r[10],
        field=r[11], decided_by=r[12],
    )


def effect_row(r: Row) -> EffectRecord:
    return EffectRecord(
        key=r[0], run_id=r[1], action=r[2], status=r[3], intent_at=r[4], crossing_id=r[5],
        proposal_hash=r[6], performed=r[7], result=load(r[8]), error=r[9], done_at=r[10],
    )


def timer_row(r: Row) -> TimerRecord:
    return TimerRecord(timer_id=r[0], run_id=r[1], fire_at=r[2], purpose=r[3], status=r[4],
                       guard_key=r[5], guard_version=r[6], fired_at=r[7])


def message_row(r: Row) -> MessageRecord:
    return MessageRecord(run_id=r[0], message_id=r[1], channel=r[2], payload=load(r[3]),
                         received_at=r[4], consumed_seq=r[5])


def approval_row(r: Row) -> ApprovalRecord:
    return ApprovalRecord(
        approval_id=r[0], run_id=r[1], crossing_id=r[2], boundary=r[3], proposal_hash=r[4],
        value=load(r[5]), reason=r[6], role=r[7], created_at=r[8], status=r[9],
        sla_due=r[10], fallback=load(r[11]), decided_by=r[12], decided_at=r[13],
        comment=r[14],
    )
