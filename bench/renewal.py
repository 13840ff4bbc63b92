"""The main job at full size: all 7,043 Telco customers x 90 virtual days, on SQLite with
the sim model and the local SMTP server, as `threshold renewal run --all` runs it.

Reports wall time, crossings/s and runs/s, beside the raw-sqlite floor measured in the same
process (one INSERT plus one COMMIT, same pragmas) so the figures can be compared across
machines. Prints one JSON line last.

    python bench/renewal.py [--customers N] [--no-mail]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from threshold._loop import run as run_async
from threshold.apps.renewal.run import PortfolioOptions, run_portfolio


def floor_writes_per_s(folder: Path, tag: str, n: int = 5000) -> float:
    db = sqlite3.connect(folder / f"floor-{tag}.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    started = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN")
        db.execute("INSERT INTO t VALUES (?, ?)", (f"k{i}", '{"discount_pct": 10}'))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=None, help="default: all 7,043")
    parser.add_argument("--no-mail", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        floor_before = floor_writes_per_s(folder, "before")
        options = PortfolioOptions(db=f"sqlite:///{folder / 'renewal.db'}",
                                   customers=args.customers,
                                   all_customers=args.customers is None, mail=not args.no_mail)
        started = time.perf_counter()
        summary = run_async(run_portfolio(options))  # on the CLI's event loop
        wall = time.perf_counter() - started
        floor = (floor_before + floor_writes_per_s(folder, "after")) / 2
    result = {
        "customers": summary["customers"], "wall_s": round(wall, 1),
        "crossings": summary["crossings"],
        "crossings_per_s": round(summary["crossings"] / wall),
        "runs_per_s": round(summary["customers"] / wall, 1),
        "floor_writes_per_s": round(floor),
        "crossings_per_floor_write": round(summary["crossings"] / wall / floor, 3),
        "audit_ok": summary["sdb"]["audit_ok"], "outcomes": summary["outcomes"],
        "mail_messages": (summary.get("mail") or {}).get("messages"),
        "target_wall_s": 60,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
