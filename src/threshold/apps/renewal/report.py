"""The end-of-run report: outcomes beside the reference heuristic, revenue, SDB statistics,
approvals, a timeline plot and a Markdown file. Everything is read back from the journal
and the CRM; nothing is carried over from the run in memory."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from threshold.apps.renewal.customers import Customer, heuristic_distribution
from threshold.apps.renewal.world import World
from threshold.audit import audit
from threshold.store import Store

OUTCOMES = ("renewed", "renewed_with_offer", "restructured", "churned", "escalated")
# The reference implementation's precomputed paths (SOURCES.md), for comparison only.
REFERENCE = {
    "telco_customer_churn_subset.csv": {"renewed": 44, "renewed_with_offer": 27,
                                        "churned": 23, "restructured": 4, "escalated": 2},
    "telco_customer_churn_full.csv": {"renewed": 2858, "renewed_with_offer": 2053,
                                      "churned": 1655, "restructured": 263, "escalated": 214},
}


async def summarize(store: Store, world: World, customers: list[Customer],
                    path: Path) -> dict[str, Any]:
    runs = await store.list_runs(agent="renewal")
    ours = {f"renewal-{c.customer_id}" for c in customers}
    runs = [r for r in runs if r.run_id in ours]
    outcomes = Counter(str((r.result or {}).get("outcome", r.status)) for r in runs)
    report = await audit(store)
    crossings = await store.list_crossings()
    committed_discounts = [int(c.outcome.get("discount_pct", 0)) for c in crossings
                           if c.status == "committed" and isinstance(c.outcome, dict)
                           and "discount_pct" in c.outcome]
    approvals = await store.list_approvals()
    by_status = Counter(a.status for a in approvals)
    deciders = Counter(a.decided_by or "-" for a in approvals if a.status != "pending")
    crm = world.crm.counts()
    total_mrr = round(sum(c.monthly_charges for c in customers), 2)
    reference = REFERENCE.get(path.name) if len(customers) in (100, 7043) else None
    return {
        "customers": len(customers),
        "runs": len(runs),
        "unfinished": sum(1 for r in runs if r.status not in ("completed", "failed")),
        "failed": sum(1 for r in runs if r.status == "failed"),
        "outcomes": {k: outcomes.get(k, 0) for k in OUTCOMES} | {
            k: v for k, v in outcomes.items() if k not in OUTCOMES},
        "label_heuristic": dict(heuristic_distribution(customers)),
        "reference_published": reference,
        "revenue": {"monthly_before": total_mrr,
                    "monthly_retained": crm.retained_monthly_revenue,
                    "retained_share": round(crm.retained_monthly_revenue / total_mrr, 4)
                    if total_mrr else 0.0},
        "max_committed_discount_pct": max(committed_discounts, default=0),
        "policy_cap_pct": world.policy.discount.max_pct,
        "crossings": report.crossings,
        "sdb": {"proposals": report.proposals, "commits": report.commits,
                "commits_with_accept": report.commits_with_accept,
                "commits_by_override": report.commits_by_override,
                "rejects_by_code": report.rejects_by_code,
                "transport_errors": report.transport_errors_by_kind,
                "escalations": report.escalations, "audit_ok": report.ok},
        "approvals": {"by_status": dict(by_status), "decided_by": dict(deciders)},
        "crm": {"accounts": crm.accounts, "signals": crm.signals, "offers": crm.offers,
                "contracts": crm.contracts},
    }


async def write_report(store: Store, summary: dict[str, Any], folder: Path) -> list[Path]:
    """Write summary.json, report.md and (with matplotlib) timeline.png into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "summary.json"]
    written[0].write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    plot = await _timeline_plot(store, folder / "timeline.png")
    if plot is not None:
        written.append(plot)
    md = folder / "report.md"
    md.write_text(render_markdown(summary, plot.name if plot else None))
    written.append(md)
    return written


def render_markdown(s: dict[str, Any], plot: str | None) -> str:
    ref = s.get("reference_published") or {}
    lines = ["# Renewal run report", "",
             f"{s['customers']} customers; {s['crossings']} boundary crossings; "
             f"audit {'OK' if s['sdb']['audit_ok'] else 'FAILED'}.", "",
             "## Outcomes", "", "| outcome | this run | label heuristic | reference |",
             "|---|---:|---:|---:|"]
    for k in OUTCOMES:
        lines.append(f"| {k} | {s['outcomes'].get(k, 0)} | {s['label_heuristic'].get(k, 0)} "
                     f"| {ref.get(k, '-')} |")
    rev = s["revenue"]
    lines += ["", "## Revenue", "",
              f"Monthly revenue before: ${rev['monthly_before']:,.2f}; retained: "
              f"${rev['monthly_retained']:,.2f} ({rev['retained_share']:.1%}).", "",
              "## The boundary", "",
              f"- proposals {s['sdb']['proposals']}, commits {s['sdb']['commits']}, with "
              f"accept {s['sdb']['commits_with_accept']} ({s['sdb']['commits_by_override']} "
              "by a human or an SLA fallback)",
              f"- largest committed discount {s['max_committed_discount_pct']} % "
              f"(policy cap {s['policy_cap_pct']} %)",
              f"- escalations {s['sdb']['escalations']}",
              f"- rejects by code: {s['sdb']['rejects_by_code']}",
              f"- transport errors: {s['sdb']['transport_errors']}", "",
              "## Approvals", "", f"- by status: {s['approvals']['by_status']}",
              f"- decided by: {s['approvals']['decided_by']}", ""]
    if plot:
        lines += ["## Timeline", "", f"![outcomes over virtual time]({plot})", ""]
    return "\n".join(lines)


async def _timeline_plot(store: Store, target: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return None
    runs = [r for r in await store.list_runs(agent="renewal") if r.status == "completed"]
    if not runs:
        return None
    by_outcome: dict[str, list[str]] = {}
    for r in runs:
        by_outcome.setdefault(str((r.result or {}).get("outcome")), []).append(r.updated_at)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for outcome, times in sorted(by_outcome.items()):
        # Real dates, not strings: string ticks would be categories, ordered per series.
        days = sorted(datetime.fromisoformat(t) for t in times)
        ax.step(days, range(1, len(days) + 1), where="post",  # type: ignore[arg-type]
                label=f"{outcome} ({len(days)})")
    ax.set_xlabel("virtual date (run closed)")
    ax.set_ylabel("runs closed, cumulative")
    ax.set_title("Renewal outcomes over the 90-day windows")
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
