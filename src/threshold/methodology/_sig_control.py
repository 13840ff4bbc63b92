"""Failure signatures of the control planes: gates and throttles (P4), the humans who
decide escalations (P6), and the timers that wake runs (P4, P5).

Each detector reads a ``Journal`` and returns findings; none writes anything.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from threshold.methodology._findings import (
    Evidence,
    Finding,
    Journal,
    Text,
    Thresholds,
    found,
    make_finding,
    seconds_between,
)
from threshold.methodology._signatures import last_codes
from threshold.runtime import SLA_ACTOR

# --- gates --------------------------------------------------------------------------------


def gate_bottleneck(journal: Journal, th: Thresholds) -> list[Finding]:
    last = last_codes(journal)
    first_gated: dict[str, str] = {}  # when a gate first refused each crossing
    for v in journal.verdicts:
        if v.verdict == "reject" and (v.code or "").startswith(th.gate_prefixes):
            first_gated[v.crossing_id] = min(first_gated.get(v.crossing_id, v.at), v.at)
    codes: Counter[str] = Counter()
    items = []
    for c in journal.crossings:
        if c.status == "committed":
            continue
        gated = [code for code in last[c.crossing_id] if code.startswith(th.gate_prefixes)]
        if gated:
            codes.update(gated)
            items.append(Evidence(first_gated.get(c.crossing_id, c.started_at), c.run_id,
                                  f"{c.crossing_id} stopped by {', '.join(gated)}",
                                  c.crossing_id))
    refused = [e for e in journal.events if e.kind == "throttle.refused"]
    codes.update(f"throttle.refused:{e.data.get('rule', '?')}" for e in refused)
    items += [Evidence(e.at, e.run_id, f"throttle refused {e.data.get('key')}: "
                       f"{e.data.get('reason', '')}") for e in refused]
    total = max(len(journal.crossings), 1)
    if len(items) < th.gate_min or len(items) / total < th.gate_share:
        return []
    top = codes.most_common(1)[0][0]
    return found(make_finding(
        "gate_bottleneck", "P4", "medium", top, items, Text(
            f"{len(items)} of {len(journal.crossings)} crossings or effects were stopped by "
            f"gates or throttles (most: {top})",
            "the proposals keep breaching a policy or budget the model does not know about, "
            "or the caps are too tight for the traffic",
            "put the rule in the prompt or the reject hint, check the policy's caps against "
            "real traffic, and route breaches that need judgement to a human"),
        counts=dict(codes.most_common())))


# --- humans -------------------------------------------------------------------------------


def approval_timeouts(journal: Journal, _: Thresholds) -> list[Finding]:
    per_role: dict[str, list[Evidence]] = defaultdict(list)
    for a in journal.approvals:
        at = a.decided_at or a.sla_due or a.created_at
        if a.status == "timed_out" or a.decided_by == SLA_ACTOR:
            line = f"{a.approval_id} {a.status} by the SLA fallback"
        elif (a.comment or "").startswith("re-routed"):
            line = f"{a.approval_id} {a.comment}"
        elif a.status == "pending" and a.sla_due is not None and a.sla_due < journal.now:
            line, at = f"{a.approval_id} pending past its SLA ({a.sla_due})", a.sla_due
        else:
            continue
        per_role[a.role].append(Evidence(at, a.run_id, line, a.crossing_id))
    return found(*(make_finding(
        "approval_timeout", "P6", "medium", role, items, Text(
            f"approvals for {role} were not decided within their SLA",
            "too few people hold the role, the queue is not watched, or the SLA is shorter "
            "than a human's working rhythm",
            "staff or re-route the role (Escalate(reroute_to=...)), alert on approaching "
            "SLAs, and check that the fallback is the safe choice"))
        for role, items in sorted(per_role.items())))


def rubber_stamp(journal: Journal, th: Thresholds) -> list[Finding]:
    by_principal: dict[str, list[tuple[str, str, bool, float]]] = defaultdict(list)
    for a in journal.approvals:
        if a.decided_by in (None, SLA_ACTOR) or a.decided_at is None:
            continue
        if a.status not in ("approved", "denied"):
            continue
        latency = seconds_between(a.created_at, a.decided_at)
        by_principal[str(a.decided_by)].append(
            (a.decided_at, a.run_id, a.status == "approved", latency))
    out = []
    limit = th.stamp_latency.total_seconds()
    for principal, rows in sorted(by_principal.items()):
        if len(rows) < th.stamp_min_decisions:
            continue
        approved = sum(ok for _, _, ok, _ in rows)
        rate = approved / len(rows)
        median = statistics.median(lat for _, _, _, lat in rows)
        if rate < th.stamp_approve_rate or median > limit:
            continue
        items = [Evidence(at, run_id, f"{principal} approved in {lat:.0f} s")
                 for at, run_id, ok, lat in rows if ok and lat <= limit]
        out.append(make_finding(
            "rubber_stamp", "P6", "medium", principal, items, Text(
                f"{principal} approved {rate:.0%} of {len(rows)} decisions, median "
                f"{median:.0f} s after the request",
                "the human plane is a formality: approvals too fast to have been read",
                "sample approvals for second review, show the reject reasons and the value "
                "at stake in the inbox, or narrow what is escalated so each one matters"),
            counts={"decisions": len(rows), "approved": approved,
                    "median_latency_s": round(median)}))
    return found(*out)


def approval_backlog(journal: Journal, th: Thresholds) -> list[Finding]:
    pending = [a for a in journal.approvals if a.status == "pending"]
    if len(pending) < th.backlog_min:
        return []
    roles = Counter(a.role for a in pending)
    items = [Evidence(a.created_at, a.run_id, f"{a.approval_id} pending for {a.role}",
                      a.crossing_id) for a in pending]
    return found(make_finding(
        "approval_backlog", "P6", "medium", "approvals", items, Text(
            f"{len(pending)} approvals are waiting for a human",
            "more crossings escalate than the approvers can decide",
            "add approvers or an SLA with a safe fallback, and escalate less: route only "
            "breaches that need judgement"), counts=dict(roles.most_common())))


# --- timers -------------------------------------------------------------------------------


def timer_signatures(journal: Journal, th: Thresholds) -> list[Finding]:
    lapsed: dict[str, list[Evidence]] = defaultdict(list)
    late: list[Evidence] = []
    limit = th.late_timer.total_seconds()
    for t in journal.timers:
        if t.status == "lapsed":
            lapsed[t.purpose].append(Evidence(
                t.fired_at or t.fire_at, t.run_id, f"timer {t.timer_id} lapsed: "
                f"{t.guard_key} moved past version {t.guard_version}"))
        elif t.status == "fired" and t.fired_at is not None:
            lag = seconds_between(t.fire_at, t.fired_at)
            if lag > limit:
                late.append(Evidence(t.fire_at, t.run_id, f"timer {t.timer_id} "
                                     f"({t.purpose}) fired {lag / 60:.0f} min late"))
    out = [make_finding("lapsed_timer", "P5", "low", purpose, items, Text(
        f"{purpose} timers lapsed: the row they guarded moved on before they fired",
        "another transition changed the state while the run waited; the guard stopped an "
        "action on stale state (that is the protection working)",
        "check the run handles the 'lapsed' result; if lapses are frequent, re-read the "
        "state and re-arm the timer after each transition"))
        for purpose, items in sorted(lapsed.items())]
    out.append(make_finding("late_timer", "P4", "medium", "timers", late, Text(
        "timers fired well after they were due",
        "no worker was running or it was overloaded: nothing supervises the workers",
        "run workers under a supervisor (systemd, Kubernetes) with more than one replica, "
        "and alert on timer lag")))
    return found(*out)
