"""``threshold runs list|show``."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from threshold._loop import run as run_async
from threshold.cli._common import add_db_option, add_json_option, print_json
from threshold.errors import NotFoundError
from threshold.store import open_store
from threshold.timeline import render_timeline, run_timeline


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runs = sub.add_parser("runs", help="list and inspect runs")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)

    listing = runs_sub.add_parser("list", help="list runs")
    add_db_option(listing)
    add_json_option(listing)
    listing.add_argument("--status", help="only runs in this status")
    listing.add_argument("--agent", help="only runs of this agent")
    listing.add_argument("--limit", type=int, default=None)
    listing.set_defaults(handler=_list)

    show = runs_sub.add_parser("show", help="a run's journal as a timeline")
    show.add_argument("run_id")
    add_db_option(show)
    add_json_option(show)
    show.set_defaults(handler=_show)

    from threshold.cli._replay import add_runs_subcommands

    add_runs_subcommands(runs_sub)  # stranded, migrate


def _list(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = open_store(args.db)
        try:
            runs = await store.list_runs(status=args.status, agent=args.agent, limit=args.limit)
        finally:
            await store.close()
        if args.json:
            print_json([asdict(r) for r in runs])
            return 0
        for r in runs:
            outcome = r.result.get("outcome", "") if isinstance(r.result, dict) else ""
            print(f"{r.run_id:<32} {r.agent}@{r.agent_version:<6} {r.status:<10} "
                  f"{outcome:<20} {r.updated_at[:19]}")
        print(f"{len(runs)} run(s)")
        return 0

    return run_async(go())


def _show(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = open_store(args.db)
        try:
            timeline = await run_timeline(store, args.run_id)
        finally:
            await store.close()
        if timeline is None:
            raise NotFoundError(f"no run {args.run_id!r} in {args.db}")
        if args.json:
            print_json(timeline.to_dict())
        else:
            print("\n".join(render_timeline(timeline)))
        return 0

    return run_async(go())
