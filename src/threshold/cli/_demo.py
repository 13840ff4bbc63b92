"""``threshold demo``: one boundary end to end on the embedded defaults."""

from __future__ import annotations

import argparse

from threshold._loop import run as run_async
from threshold.apps.demo import run_demo
from threshold.cli._common import add_db_option, add_json_option, print_json
from threshold.store import open_store
from threshold.timeline import render_timeline, run_timeline


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("demo", help="one boundary end to end (sim model, SQLite)")
    add_db_option(parser)
    add_json_option(parser)
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="sim", help="sim, sim:v2, sim:chaos, openai:NAME")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = open_store(args.db)
        try:
            summary = await run_demo(store, customers=args.customers, seed=args.seed,
                                     model=args.model)
            example = summary["example_run"]
            timeline = None if example is None else await run_timeline(store, example)
        finally:
            await store.close()
        if args.json:
            print_json(summary)
        else:
            if timeline is not None:
                print("\n".join(render_timeline(timeline)))
            print(f"\n{summary['runs']} runs; outcomes {summary['outcomes']}")
            a = summary["audit"]
            print(f"audit: {a['commits_with_accept']}/{a['commits']} commits with accepts; "
                  f"rejects {a['rejects_by_code']}")
        return 0 if summary["audit"]["ok"] else 1

    return run_async(go())
