"""``threshold audit``: exits 1 if any commit lacks its accepts."""

from __future__ import annotations

import argparse

from threshold._loop import run as run_async
from threshold.audit import audit
from threshold.cli._common import add_db_option, add_json_option, print_json
from threshold.store import open_store


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("audit", help="count commits with matching accepts")
    add_db_option(parser)
    add_json_option(parser)
    parser.add_argument("--run", dest="run_id", help="audit one run only")
    parser.set_defaults(handler=_audit)


def _audit(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = open_store(args.db)
        try:
            report = await audit(store, run_id=args.run_id)
        finally:
            await store.close()
        if args.json:
            print_json(report.to_dict())
        else:
            print(f"crossings {report.crossings}, proposals {report.proposals}, "
                  f"commits {report.commits}, with accept {report.commits_with_accept} "
                  f"({report.commits_by_override} by human or SLA override)")
            print(f"rejects by code: {report.rejects_by_code}")
            print(f"transport errors: {report.transport_errors_by_kind}")
            print(f"escalations: {report.escalations}; outcomes: {report.outcomes}")
            for v in report.violations:
                print(f"VIOLATION {v}")
            print("audit OK" if report.ok else "audit FAILED")
        return 0 if report.ok else 1

    return run_async(go())
