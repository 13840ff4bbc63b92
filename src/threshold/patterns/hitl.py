"""P6, human in the loop, over the runtime's four planes.

- Kill switch: ``Runtime(kill_principals=kill_principals(policy))`` lets exactly the policy's
  ``kill_switch.authorized_principals`` stop runs; every use, refused or not, is journaled.
- Escalation: ``breach_routes(policy, ...)`` sends each gate breach that the policy ties to an
  escalation trigger to the humans it names (a durable suspend until they decide).
- Approval: the same routes carry an SLA and a declared fallback (deny, approve with a cap,
  or re-route), applied by the crossing engine when the SLA lapses.
- Throttling: see ``threshold.patterns.throttle``.

A human decision is a verdict on the same boundary, recorded with who decided, when and
their comment. ``approval_stats`` measures decisions per principal so ``diagnose`` can find
rubber-stamping (near-instant approvals, approve rates near 1).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from threshold.boundary import Escalate, Fallback
from threshold.clock import Clock, SystemClock, VirtualClock, from_iso
from threshold.errors import NotFoundError
from threshold.patterns.policy import Policy, escalation_for
from threshold.runtime import Runtime
from threshold.runtime._worker import _CLOCK_META
from threshold.store import ApprovalRecord, Store

# Gate reject codes (``policy.<rule>``) and the escalation trigger whose humans decide them.
_BREACH_TRIGGERS = (
    ("policy.discount.", "discount_over_policy"),
    ("policy.auto_close.require_human_for_mergers", "contract_merger"),
)


def kill_principals(policy: Policy) -> frozenset[str]:
    """The policy's kill-switch list, in the form ``Runtime(kill_principals=...)`` takes."""
    return frozenset(policy.kill_switch.authorized_principals)


def approval_role(require: str) -> str:
    """A policy requirement as an approval role: ``counsel + human_specialist`` becomes
    ``counsel+human_specialist``, which only a principal holding both roles may decide."""
    return "+".join(part.strip() for part in require.split("+") if part.strip())


def breach_routes(policy: Policy, *, sla: timedelta | None = None, fallback: Fallback = "deny",
                  reroute_to: str | None = None) -> dict[str, Escalate]:
    """``RejectPolicy(routes=...)`` escalating every gate breach the policy ties to a trigger
    (over-cap discounts, mergers, and every ``trigger_gate``) to its humans at once,
    instead of burning retries on a breach only a person may wave through."""
    routes: dict[str, Escalate] = {}
    pairs = [*_BREACH_TRIGGERS,
             *((f"policy.escalation_triggers.{t.kind}", t.kind)
               for t in policy.escalation_triggers)]
    for code, kind in pairs:
        decision = escalation_for(policy, kind)
        if decision.escalate_to is None:
            continue
        routes[code] = Escalate(role=approval_role(decision.escalate_to), sla=sla,
                                fallback=fallback,
                                reroute_to=None if reroute_to is None else approval_role(
                                    reroute_to))
    return routes


# --- decisions from outside a worker -----------------------------------------------------


async def business_clock(store: Store) -> Clock:
    """The time a decision is stamped with: a simulated store's virtual time where its
    worker left it (so latencies stay in one timeline), the system clock otherwise."""
    saved = await store.get_meta(_CLOCK_META)
    return SystemClock() if saved is None else VirtualClock(from_iso(saved))


async def decide_approval(store: Store, approval_id: str, *, approve: bool, principal: str,
                          comment: str = "", clock: Clock | None = None) -> ApprovalRecord:
    """Approve or deny through ``threshold.runtime.decide`` with a Runtime on ``store`` (no
    agents needed): the run resumes when its worker next runs. Refuses a principal without
    the approval's role (``UnauthorizedError``, journaled as ``approval.refused``)."""
    runtime = Runtime(store, clock=clock or await business_clock(store))
    return await runtime.decide(approval_id, approve=approve, principal=principal,
                                comment=comment)


async def approval_detail(store: Store, approval_id: str) -> dict[str, Any]:
    """One approval with its run's status and the journal events that mention it."""
    approval = await store.get_approval(approval_id)
    if approval is None:
        raise NotFoundError(f"no approval {approval_id!r}")
    run = await store.get_run(approval.run_id)
    events = [asdict(e) for e in await store.list_events(approval.run_id)
              if e.data.get("approval_id") == approval_id]
    return {"approval": asdict(approval), "run_status": None if run is None else run.status,
            "events": events}


# --- approval statistics -----------------------------------------------------------------


async def approval_stats(store: Store) -> dict[str, dict[str, Any]]:
    """Per deciding principal: ``decisions``, ``approved``, ``approve_rate`` and
    ``median_latency_s``. Latency runs from when the approval reached the decider's role
    (its creation, or its last re-route) to the decision. The SLA fallback appears as the
    principal ``sla-fallback``."""
    reached: dict[str, str] = {}
    for event in await store.list_events(kind="approval.decided"):
        if event.data.get("status") == "pending":  # a re-route hands it to a new role
            reached[str(event.data.get("approval_id"))] = event.at
    outcomes: dict[str, list[tuple[bool, float]]] = defaultdict(list)
    for a in await store.list_approvals():
        if a.status == "pending" or a.decided_by is None or a.decided_at is None:
            continue
        start = from_iso(reached.get(a.approval_id, a.created_at))
        latency = (from_iso(a.decided_at) - start).total_seconds()
        outcomes[a.decided_by].append((a.status == "approved", latency))
    stats: dict[str, dict[str, Any]] = {}
    for principal in sorted(outcomes):
        rows = outcomes[principal]
        approved = sum(1 for ok, _ in rows if ok)
        stats[principal] = {
            "decisions": len(rows), "approved": approved,
            "approve_rate": approved / len(rows),
            "median_latency_s": statistics.median(lat for _, lat in rows),
        }
    return stats
