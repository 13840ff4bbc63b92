"""``threshold approvals list|show|approve|deny|stats``: the approvals inbox from a shell.

Approve and deny write the decision through ``threshold.runtime.decide`` on the store named
by ``--db``; the run resumes when its worker next runs. A principal without the approval's
role is refused (exit code 2) and the refusal is journaled.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from threshold._loop import run as run_async
from threshold.cli._common import add_db_option, add_json_option, print_json
from threshold.patterns.hitl import approval_detail, approval_stats, decide_approval
from threshold.store import ApprovalRecord, Store, open_store

if TYPE_CHECKING:  # generic only in the stubs, not at run time
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

STATUSES = ("pending", "approved", "denied", "timed_out", "all")


def register(subparsers: Subparsers) -> None:
    approvals = subparsers.add_parser("approvals", help="the approvals inbox: list, decide")
    sub = approvals.add_subparsers(dest="approvals_command", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="list approvals")
    listing.add_argument("--status", choices=STATUSES, default="all",
                         help="only approvals in this status (default: %(default)s)")
    listing.set_defaults(handler=_list)

    show = sub.add_parser("show", help="one approval, its run and its journal events")
    show.add_argument("approval_id", metavar="ID")
    show.set_defaults(handler=_show)

    for action, verb in (("approve", "approve"), ("deny", "deny")):
        decide = sub.add_parser(action, help=f"{verb} a pending approval")
        decide.add_argument("approval_id", metavar="ID")
        decide.add_argument("--as", dest="principal", required=True, metavar="PRINCIPAL",
                            help="who decides, e.g. alice@human_specialist")
        decide.add_argument("--comment", default="", help="why (kept with the decision)")
        decide.set_defaults(handler=_approve if action == "approve" else _deny)

    stats = sub.add_parser("stats", help="decisions, approve rate and latency per principal")
    stats.set_defaults(handler=_stats)

    for parser in sub.choices.values():
        add_db_option(parser)
        add_json_option(parser)


def _with_store(url: str, work: Callable[[Store], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        store = open_store(url)
        try:
            return await work(store)
        finally:
            await store.close()

    return run_async(go())


def _line(a: ApprovalRecord) -> str:
    due = f" sla {a.sla_due[:19]}" if a.sla_due and a.status == "pending" else ""
    by = f" by {a.decided_by}" if a.decided_by else ""
    return f"{a.approval_id:<36} {a.status:<9} {a.role:<26} {a.run_id:<24}{due}{by}"


def _list(args: argparse.Namespace) -> int:
    status = None if args.status == "all" else args.status
    found: list[ApprovalRecord] = _with_store(
        args.db, lambda store: store.list_approvals(status=status))
    if args.json:
        print_json([asdict(a) for a in found])
        return 0
    for a in found:
        print(_line(a))
    print(f"{len(found)} approval(s)")
    return 0


def _show(args: argparse.Namespace) -> int:
    detail: dict[str, Any] = _with_store(
        args.db, lambda store: approval_detail(store, args.approval_id))
    if args.json:
        print_json(detail)
        return 0
    a = detail["approval"]
    print(f"approval {a['approval_id']} ({a['status']}) for role {a['role']}")
    print(f"  run {a['run_id']} ({detail['run_status']}), boundary {a['boundary']}")
    print(f"  reason: {a['reason']}")
    print(f"  proposal: {a['value']}")
    print(f"  created {a['created_at']}" + (f", SLA due {a['sla_due']}" if a["sla_due"] else "")
          + (f", fallback {a['fallback'].get('kind')}" if a["fallback"] else ""))
    if a["decided_by"]:
        print(f"  decided by {a['decided_by']} at {a['decided_at']}: {a['comment'] or ''}")
    for e in detail["events"]:
        print(f"  {e['at'][:19]} {e['kind']} {e['data']}")
    return 0


def _decide(args: argparse.Namespace, approve: bool) -> int:
    decided: ApprovalRecord = _with_store(args.db, lambda store: decide_approval(
        store, args.approval_id, approve=approve, principal=args.principal,
        comment=args.comment))
    if args.json:
        print_json(asdict(decided))
    else:
        print(f"{decided.approval_id}: {decided.status} by {decided.decided_by}; "
              f"run {decided.run_id} resumes when its worker next runs")
    return 0


def _approve(args: argparse.Namespace) -> int:
    return _decide(args, True)


def _deny(args: argparse.Namespace) -> int:
    return _decide(args, False)


def _stats(args: argparse.Namespace) -> int:
    stats: dict[str, dict[str, Any]] = _with_store(args.db, approval_stats)
    if args.json:
        print_json(stats)
        return 0
    print(f"{'principal':<32} {'decisions':>9} {'approved':>8} {'rate':>6} {'median s':>10}")
    for principal, s in stats.items():
        print(f"{principal:<32} {s['decisions']:>9} {s['approved']:>8} "
              f"{s['approve_rate']:>6.0%} {s['median_latency_s']:>10.1f}")
    return 0
