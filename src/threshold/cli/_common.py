"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

DEFAULT_DB = "sqlite:///threshold.db"


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("THRESHOLD_DB", DEFAULT_DB),
        help="store URL: sqlite:///PATH, postgresql://..., or memory:// (default: %(default)s)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=None, sort_keys=True, default=str))
