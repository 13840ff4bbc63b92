"""``threshold renewal run``: the reference agent, the project's main job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from threshold._loop import run as run_async
from threshold.cli._common import add_db_option, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    renewal = sub.add_parser("renewal", help="the 90-day contract-renewal agent")
    renewal_sub = renewal.add_subparsers(dest="renewal_command", metavar="ACTION",
                                         required=True)
    run = renewal_sub.add_parser("run", help="run (or resume) the renewal portfolio")
    add_db_option(run)
    count = run.add_mutually_exclusive_group()
    count.add_argument("--customers", type=int, default=100,
                       help="the first N customers (default: the 100-row subset)")
    count.add_argument("--all", action="store_true", help="all 7,043 customers")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--model", default="sim", help="sim, sim:v2, sim:chaos, openai:NAME")
    run.add_argument("--base-url", help="OpenAI-compatible server for openai: models")
    run.add_argument("--policy", help="policy YAML (default: the packaged policy v7)")
    run.add_argument("--data", help="customer CSV (default: the packaged Telco data)")
    run.add_argument("--skip-bad-rows", action="store_true",
                     help="skip and count malformed rows instead of stopping")
    run.add_argument("--smtp", help="HOST:PORT of an SMTP server (default: a local one)")
    run.add_argument("--no-mail", action="store_true", help="do not send mail")
    run.add_argument("--realtime", action="store_true", help="use the system clock")
    run.add_argument("--report", type=Path, help="write report.md, summary.json and "
                     "timeline.png into this folder")
    run.add_argument("--json", action="store_true", help="end with one JSON line")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from threshold.apps.renewal.report import write_report
    from threshold.apps.renewal.run import PortfolioOptions, run_portfolio
    from threshold.store import open_store

    options = PortfolioOptions(
        db=args.db, customers=None if args.all else args.customers, all_customers=args.all,
        seed=args.seed, model=args.model, base_url=args.base_url, policy_path=args.policy,
        data_path=args.data, skip_bad_rows=args.skip_bad_rows, smtp=args.smtp,
        mail=not args.no_mail, realtime=args.realtime,
        progress=sys.stderr.isatty() and not args.json)
    summary = run_async(run_portfolio(options))
    if args.report:
        async def report() -> list[Path]:
            store = open_store(args.db)
            try:
                return await write_report(store, summary, args.report)
            finally:
                await store.close()

        summary["report_files"] = [str(p) for p in run_async(report())]
    if args.json:
        print_json(summary)
    else:
        _print(summary)
    return 0 if summary["sdb"]["audit_ok"] and not summary["failed"] else 1


def _print(s: dict[str, Any]) -> None:
    ref = s.get("reference_published") or {}
    print(f"{s['customers']} customers, {s['crossings']} crossings in {s['wall_s']} s")
    print(f"{'outcome':<20}{'this run':>10}{'heuristic':>11}{'reference':>11}")
    for k, v in s["outcomes"].items():
        print(f"{k:<20}{v:>10}{s['label_heuristic'].get(k, 0):>11}{ref.get(k, '-'):>11}")
    rev = s["revenue"]
    print(f"monthly revenue retained: ${rev['monthly_retained']:,.2f} of "
          f"${rev['monthly_before']:,.2f} ({rev['retained_share']:.1%})")
    sdb = s["sdb"]
    print(f"boundary: {sdb['proposals']} proposals, {sdb['commits']} commits "
          f"({sdb['commits_with_accept']} with accept), {sdb['escalations']} escalations, "
          f"largest committed discount {s['max_committed_discount_pct']}%, "
          f"audit {'OK' if sdb['audit_ok'] else 'FAILED'}")
    print(f"rejects: {sdb['rejects_by_code']}")
    print(f"approvals: {s['approvals']}")
    if s.get("mail"):
        print(f"mail: {s['mail']['messages']} messages received by the local SMTP server")
    for path in s.get("report_files", []):
        print(f"wrote {path}")
