"""``threshold ui``: serve the web console on one store (localhost by default)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import TYPE_CHECKING

from threshold._loop import run as run_async
from threshold.cli._common import add_db_option
from threshold.errors import MissingExtraError
from threshold.store import open_store

if TYPE_CHECKING:  # generic only in the stubs, not at run time
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]


def register(subparsers: Subparsers) -> None:
    ui = subparsers.add_parser("ui", help="serve the web console: runs, timelines, approvals")
    add_db_option(ui)
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default: %(default)s, this machine only)")
    ui.add_argument("--port", type=int, default=8600, help="port (default: %(default)s)")
    ui.add_argument("--policy", metavar="FILE",
                    help="policy YAML whose kill_switch.authorized_principals may stop runs")
    ui.add_argument("--tokens", metavar="FILE",
                    help='JSON {"token": "principal"}; without it the console is read-only')
    ui.add_argument("--reports", metavar="DIR", help="folder of JSON/Markdown/PNG reports")
    ui.add_argument("--log-json", action="store_true", help="log JSON lines to stderr")
    ui.set_defaults(handler=_serve)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ModuleNotFoundError as exc:
        raise MissingExtraError("web", "uvicorn") from exc
    from threshold.web import create_app

    policy = None
    if args.policy:
        from threshold.patterns.policy import load_policy

        policy = load_policy(args.policy)
    if args.log_json:
        from threshold.observability import configure_logging

        configure_logging()
    loopback = _is_loopback(args.host)
    if not loopback:
        print(f"threshold ui: warning: binding to {args.host} exposes the console beyond "
              "this machine; put it behind TLS", file=sys.stderr)
    if not args.tokens:
        print("threshold ui: no --tokens file: the console is read-only", file=sys.stderr)
    store = open_store(args.db)
    try:
        app = create_app(store, policy=policy, tokens=args.tokens, reports_dir=args.reports,
                         allowed_hosts=[*LOOPBACK_NAMES, args.host] if loopback else None)
        print(f"threshold ui: http://{args.host}:{args.port}/runs (store {store.url})",
              file=sys.stderr)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                    server_header=False)
    finally:
        run_async(store.close())
    return 0
