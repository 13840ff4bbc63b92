"""Promise 2 across processes: two workers on one SQLite file never perform an effect twice."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_two_processes_share_runs_without_duplicate_effects(tmp_path: Path) -> None:
    """Both processes start and work the same 150 runs at once; leases keep them apart, so
    every effect key is delivered exactly once and the audit holds."""
    db, sink = tmp_path / "j.db", tmp_path / "sink.db"
    cmd = [sys.executable, "-m", "procs.crash_workload", str(db), str(sink), "--runs", "150"]
    procs = [subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    # Whatever one process left to the other is finished by a last pass.
    final = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    state = json.loads(final.stdout.strip().splitlines()[-1])
    assert len(state["runs"]) == 150
    assert {status for status, _ in state["runs"].values()} == {"completed"}
    assert state["audit_ok"]
    rows = sqlite3.connect(sink).execute(
        "SELECT count(*), count(DISTINCT key) FROM deliveries").fetchone()
    assert rows[0] == rows[1] > 300
