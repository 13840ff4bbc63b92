"""The human plane of a boundary: decisions on escalated crossings, and SLA fallbacks.

A decision is a verdict on the same boundary, recorded with who decided, when and why;
a principal without the requested role is refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from threshold.clock import to_iso
from threshold.errors import NotFoundError, UnauthorizedError, UsageError
from threshold.ids import digest
from threshold.store import ApprovalRecord, EventRecord, MessageRecord, TimerRecord

if TYPE_CHECKING:
    from threshold.runtime._runtime import Runtime

SLA_ACTOR = "sla-fallback"


def principal_roles(principal: str) -> set[str]:
    """``alice@human_specialist+counsel`` has two roles; ``role:director_ai`` is a role."""
    if principal.startswith("role:"):
        return {principal.removeprefix("role:")}
    _, _, roles = principal.partition("@")
    return {r for r in roles.split("+") if r}


def required_roles(role: str) -> set[str]:
    """``counsel+human_specialist`` (or ``counsel + human_specialist``, as policy files write
    it) needs a principal holding both roles."""
    return {r.strip() for r in role.split("+") if r.strip()}


def default_authorize(principal: str, role: str) -> bool:
    roles, needed = principal_roles(principal), required_roles(role)
    return (bool(needed) and needed <= roles) or "admin" in roles


async def decide(runtime: Runtime, approval_id: str, *, approve: bool, principal: str,
                 comment: str = "") -> ApprovalRecord:
    """Approve or deny a pending approval and wake its run."""
    store = runtime.store
    approval = await store.get_approval(approval_id)
    if approval is None:
        raise NotFoundError(f"no approval {approval_id!r}")
    if not runtime.authorize(principal, approval.role):
        await store.append_event(EventRecord(approval.run_id, "approval.refused", {
            "approval_id": approval_id, "principal": principal, "role": approval.role},
            to_iso(runtime.clock.now())))
        raise UnauthorizedError(principal, f"decide approvals for role {approval.role}",
                                [approval.role])
    if approval.status != "pending":
        raise UsageError(f"approval {approval_id} is already {approval.status} "
                         f"(by {approval.decided_by})")
    if approve and approval.value is None:
        raise UsageError(f"approval {approval_id} has no valid proposal to approve; deny it")
    now = to_iso(runtime.clock.now())
    decided = replace(approval, status="approved" if approve else "denied",
                      decided_by=principal, decided_at=now, comment=comment)
    await _write(runtime, decided, now)
    return decided


async def apply_timeout(runtime: Runtime, approval: ApprovalRecord) -> None:
    """Apply the declared fallback of an approval whose SLA lapsed undecided."""
    from threshold.runtime._crossing import sla_delta, sla_timer_id

    fallback: dict[str, Any] = approval.fallback or {"kind": "deny"}
    clock_now = runtime.clock.now()
    now = to_iso(clock_now)
    reroute = fallback.get("reroute_to")
    sla = sla_delta(fallback)
    if reroute and sla is not None:
        moved = replace(approval, role=reroute, sla_due=to_iso(clock_now + sla),
                        fallback={**fallback, "reroute_to": None}, status="pending",
                        comment=f"re-routed from {approval.role} after SLA")
        if await _write(runtime, moved, now):
            await runtime.store.add_timer(TimerRecord(sla_timer_id(moved), moved.run_id,
                                                      moved.sla_due or now, "approval_sla"))
        return
    kind = fallback.get("kind", "deny")
    if kind == "approve" and approval.value is not None:
        decided = replace(approval, status="approved", decided_by=SLA_ACTOR, decided_at=now,
                          comment="SLA lapsed: approved by fallback")
    elif kind == "approve_with_cap" and approval.value is not None:
        capped = dict(approval.value)
        field, cap = fallback["field"], fallback["cap"]
        if isinstance(capped.get(field), int | float) and capped[field] > cap:
            capped[field] = type(capped[field])(cap)
        decided = replace(approval, status="approved", decided_by=SLA_ACTOR, decided_at=now,
                          value=capped, proposal_hash=digest(capped),
                          comment=f"SLA lapsed: approved with {field} capped at {cap}")
    else:
        decided = replace(approval, status="timed_out", decided_by=SLA_ACTOR, decided_at=now,
                          comment="SLA lapsed: denied by fallback")
    await _write(runtime, decided, now)


async def _write(runtime: Runtime, approval: ApprovalRecord, now: str) -> bool:
    message = MessageRecord(approval.run_id, f"{approval.approval_id}/{approval.status}/"
                            f"{approval.role}", "approval", {"approval_id": approval.approval_id,
                                                             "status": approval.status}, now)
    written = await runtime.store.decide_approval(approval, message, now=now)
    if written:
        await runtime.store.append_event(EventRecord(approval.run_id, "approval.decided", {
            "approval_id": approval.approval_id, "status": approval.status,
            "decided_by": approval.decided_by, "role": approval.role,
            "comment": approval.comment}, now))
    return written
