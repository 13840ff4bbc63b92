"""The command line: thin commands over the library, with --db and --json."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from threshold.cli import main


def test_demo_then_runs_audit_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`demo` journals runs that `runs list`, `runs show` and `audit` read back."""
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    assert main(["demo", "--db", db, "--customers", "8", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == 8 and summary["audit"]["ok"]
    assert main(["runs", "list", "--db", db, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 8 and {r["status"] for r in runs} == {"completed"}
    assert main(["runs", "show", runs[0]["run_id"], "--db", db]) == 0
    shown = capsys.readouterr().out
    assert "proposal" in shown and "quote #1" in shown
    assert main(["audit", "--db", db, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"commits", "commits_with_accept", "rejects_by_code", "escalations"} <= report.keys()
    assert report["commits"] == report["commits_with_accept"]


def test_audit_exits_1_when_a_commit_lacks_its_accept(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A commit whose hash no verifier accepted (a tampered journal) fails the audit."""
    path = tmp_path / "t.db"
    assert main(["demo", "--db", f"sqlite:///{path}", "--customers", "8", "--json"]) == 0
    capsys.readouterr()
    db = sqlite3.connect(path)
    db.execute("UPDATE crossings SET committed_hash = 'forged' WHERE crossing_id = "
               "(SELECT crossing_id FROM crossings WHERE status = 'committed' LIMIT 1)")
    db.commit()
    db.close()
    assert main(["audit", "--db", f"sqlite:///{path}", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["commits_with_accept"] == report["commits"] - 1
    assert "forged" in report["violations"][0]


def test_unknown_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`runs show` of a missing run exits 2 with a message naming it."""
    assert main(["runs", "show", "nope", "--db", f"sqlite:///{tmp_path / 'e.db'}"]) == 2
    assert "nope" in capsys.readouterr().err


def test_bad_store_url_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unsupported URL names the forms that work."""
    assert main(["runs", "list", "--db", "mysql://x"]) == 2
    assert "sqlite:///" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    """The `threshold` command runs as a real process."""
    proc = asyncio.run(_run("threshold", "--help"))
    assert proc[0] == 0 and "runs" in proc[1]


async def _run(*cmd: str) -> tuple[int, str]:
    p = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    return p.returncode or 0, out.decode()
