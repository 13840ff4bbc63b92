"""The reference agent: the 90-day renewal portfolio on the Telco data, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from threshold import open_store
from threshold.apps.renewal.mail import LocalMailServer
from threshold.apps.renewal.run import PortfolioOptions, run_portfolio
from threshold.cli import main


def portfolio(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    options = PortfolioOptions(db=f"sqlite:///{tmp_path / 'r.db'}", **kw)
    return asyncio.run(run_portfolio(options))


def test_the_100_row_subset_runs_end_to_end_with_real_mail(tmp_path: Path) -> None:
    """All 100 customers reach a terminal outcome; the local SMTP server received one offer
    per committed offer; the CRM tables hold one contract per customer; the audit holds."""
    with LocalMailServer() as server:
        summary = portfolio(tmp_path, customers=100, smtp=f"{server.host}:{server.port}")
        time.sleep(0.2)
        subjects = [m["subject"] for m in server.mailbox.messages.values()]
    assert summary["runs"] == 100 and summary["unfinished"] == 0 and summary["failed"] == 0
    assert sum(summary["outcomes"].values()) == 100
    assert summary["sdb"]["audit_ok"]
    assert summary["sdb"]["commits"] == summary["sdb"]["commits_with_accept"]
    db = sqlite3.connect(tmp_path / "r.db")
    offers = db.execute("SELECT count(*) FROM crm_offers").fetchone()[0]
    contracts = db.execute("SELECT count(*) FROM crm_contracts").fetchone()[0]
    assert contracts == 100 and offers > 50
    assert sum(s.startswith("Your renewal:") for s in subjects) == offers
    # Outcomes emerge from the run: they differ from the label heuristic's precomputed paths.
    assert summary["outcomes"] != summary["label_heuristic"]


def test_chaos_model_commits_no_out_of_policy_discount(tmp_path: Path) -> None:
    """Under sim:chaos hallucinated discounts are denied and escalated; nothing over the
    policy cap is ever committed, and humans (simulated) decided the escalations."""
    summary = portfolio(tmp_path, customers=100, model="sim:chaos", mail=False)
    assert summary["sdb"]["audit_ok"] and summary["unfinished"] == 0
    assert summary["max_committed_discount_pct"] <= summary["policy_cap_pct"]
    codes = summary["sdb"]["rejects_by_code"]
    assert any(code.startswith("policy.discount") for code in codes)
    assert summary["sdb"]["escalations"] > 0
    db = sqlite3.connect(tmp_path / "r.db")
    assert db.execute("SELECT max(discount_pct) FROM crm_contracts").fetchone()[0] <= 30
    assert db.execute("SELECT max(discount_pct) FROM crm_offers").fetchone()[0] <= 30


def test_rerunning_resumes_and_never_duplicates(tmp_path: Path) -> None:
    """Running the same command twice on one database starts no second run per customer."""
    first = portfolio(tmp_path, customers=20, mail=False)
    second = portfolio(tmp_path, customers=20, mail=False)
    assert first["outcomes"] == second["outcomes"]
    runs = asyncio.run(open_store(f"sqlite:///{tmp_path / 'r.db'}").list_runs(agent="renewal"))
    assert len(runs) == 20


def test_the_progress_line_ends_with_every_run_counted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The progress line moves with virtual days and its last state counts every run
    (each customer's run and the customer's own run after an offer) as done."""
    summary = portfolio(tmp_path, customers=20, mail=False, progress=True)
    lines = capsys.readouterr().err.split("\r")
    assert lines[-1].endswith("\n")
    db = sqlite3.connect(tmp_path / "r.db")
    runs = db.execute("SELECT count(*) FROM runs WHERE status = 'completed'").fetchone()[0]
    assert runs > summary["customers"]
    assert lines[-1].startswith(f"[{'#' * 30}] {runs} runs done, virtual ")
    days = {line.rsplit("virtual ", 1)[1].strip() for line in lines if "virtual " in line}
    assert len(days) > 5  # it moved along the 90-day window


def test_the_gate_refuses_a_duplicate_trigger(tmp_path: Path) -> None:
    """A second renewal run for a customer whose window is already open is refused."""
    from threshold.apps.renewal.agent import AGENT
    from threshold.apps.renewal.customers import data_file
    from threshold.apps.renewal.run import build_runtime, load_portfolio, renewal_input
    from threshold.patterns.policy import load_policy

    options = PortfolioOptions(db=f"sqlite:///{tmp_path / 'd.db'}", customers=1, mail=False)
    customers, _, _ = load_portfolio(options)
    store = open_store(options.db)
    runtime, _ = build_runtime(store, options, load_policy(data_file("policy.yaml")),
                               customers, None)

    async def go() -> None:
        inp = renewal_input(customers[0], 0)
        await runtime.start(AGENT, inp, run_id=f"renewal-{customers[0].customer_id}")
        await runtime.start(AGENT, inp, run_id="renewal-retrigger")
        await runtime.run_until_idle()
        retrigger = await store.get_run("renewal-retrigger")
        assert retrigger is not None and retrigger.result["outcome"] == "refused_duplicate"
        events = await store.list_events("renewal-retrigger", kind="gate.duplicate_trigger")
        assert events and "already opened" in events[0].data["why"]

    asyncio.run(go())


def test_a_malformed_row_is_named_or_skipped(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A bad CSV row stops the run with file and line, or is skipped and counted."""
    from threshold.apps.renewal.customers import data_file

    lines = data_file("telco_customer_churn_subset.csv").read_text().splitlines()
    lines[3] = lines[3].replace("Month-to-month", "Forever").replace("One year", "Forever")
    lines[3] = lines[3].replace("Two year", "Forever")
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines[:11]) + "\n")
    db = f"sqlite:///{tmp_path / 'b.db'}"
    assert main(["renewal", "run", "--db", db, "--data", str(bad), "--no-mail"]) == 2
    assert "bad.csv:4" in capsys.readouterr().err
    assert main(["renewal", "run", "--db", db, "--data", str(bad), "--no-mail",
                 "--skip-bad-rows", "--json", "--report", str(tmp_path / "rep")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["customers"] == 9 and summary["skipped_rows"] == 1
    assert {"customers", "outcomes", "max_committed_discount_pct", "crossings",
            "wall_s"} <= summary.keys()
    assert (tmp_path / "rep" / "report.md").read_text().startswith("# Renewal run report")
    assert (tmp_path / "rep" / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_portfolio_crash_equivalence_under_sigkill(tmp_path: Path) -> None:
    """Killed at random instants and restarted, the portfolio ends with the same outcomes,
    contracts and audit as an undisturbed run of the same seed."""
    cmd = [sys.executable, "-m", "threshold.cli._main", "renewal", "run", "--customers",
           "150", "--no-mail", "--json", "--model", "sim:chaos"]
    started = time.perf_counter()
    clean = subprocess.run([*cmd, "--db", f"sqlite:///{tmp_path / 'clean.db'}"],
                           capture_output=True, text=True, timeout=300)
    duration = time.perf_counter() - started
    assert clean.returncode == 0, clean.stderr
    expected = json.loads(clean.stdout.strip().splitlines()[-1])
    rng = random.Random(6)
    kills = 0
    for _ in range(30):
        proc = subprocess.Popen([*cmd, "--db", f"sqlite:///{tmp_path / 'k.db'}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The first kill lands early (well past start-up, well before the end); later
        # ones anywhere, so a fast machine cannot finish the portfolio untouched.
        time.sleep((0.3 if kills == 0 else rng.uniform(0.3, 0.95)) * duration)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        out, err = proc.communicate()
        assert proc.returncode == 0, err
        final = json.loads(out.strip().splitlines()[-1])
        break
    else:
        pytest.fail("the portfolio never finished")
    assert kills >= 1
    for key in ("outcomes", "max_committed_discount_pct", "revenue", "crm"):
        assert final[key] == expected[key], key
    assert final["sdb"]["audit_ok"]
    contracts = sqlite3.connect(tmp_path / "k.db").execute(
        "SELECT count(*), count(DISTINCT customer_id) FROM crm_contracts").fetchone()
    assert contracts == (150, 150)


def test_agent_code_reads_no_wall_clock(tmp_path: Path) -> None:
    """A portfolio on the virtual clock ends on virtual dates, 90 days after its windows."""
    summary = portfolio(tmp_path, customers=10, mail=False)
    runs = asyncio.run(open_store(f"sqlite:///{tmp_path / 'r.db'}").list_runs(agent="renewal"))
    assert summary["unfinished"] == 0
    assert all(r.updated_at.startswith("2026-0") for r in runs)
