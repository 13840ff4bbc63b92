"""Argument parsing and dispatch. Each command module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from threshold.errors import ThresholdError

# Command modules, in help order. A module missing here is simply not offered.
_COMMAND_MODULES = (
    "threshold.cli._demo",
    "threshold.cli._runs",
    "threshold.cli._audit",
    "threshold.cli._approvals",
    "threshold.cli._topics",
    "threshold.cli._renewal",
    "threshold.cli._replay",
    "threshold.cli._methodology",
    "threshold.cli._worker",
    "threshold.cli._ui",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="threshold",
        description="A durable runtime for production LLM agents.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        result: int = handler(args)
    except ThresholdError as exc:
        print(f"threshold: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    raise SystemExit(main())
