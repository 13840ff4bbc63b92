"""Divergence replay: re-proposing recorded inputs under another model, prompt or policy."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from golden import divergence_agents as crafted
from threshold import Runtime, VirtualClock, open_store
from threshold.cli._main import main
from threshold.patterns.policy import load_policy
from threshold.replay import ReplaySpec
from threshold.replay._agents import prompt_variants
from threshold.replay._report import divergence_replay, render_report

POLICY = Path(__file__).resolve().parents[1] / "src/threshold/apps/renewal/data/policy.yaml"
AGENTS = "golden.divergence_agents:register"


def _recorded(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'div.db'}"

    async def go() -> None:
        store = open_store(url)
        await crafted.record(Runtime(store, clock=VirtualClock()))
        await store.close()

    asyncio.run(go())
    return url


def _report(url: str, spec: ReplaySpec, register=crafted.register):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        store = open_store(url)
        try:
            return await divergence_replay(store, None, register, spec)
        finally:
            await store.close()

    return asyncio.run(go())


def test_crafted_case_counts_identical_absorbed_and_changed_runs(tmp_path: Path) -> None:
    """Under scripted:v2 exactly the runs the script makes diverge do, classified as designed."""
    report = _report(_recorded(tmp_path), ReplaySpec(model="scripted:v2"))
    classes = {r.run_id: r.classification for r in report.runs}
    for prefix in ("quote", "review"):
        assert [classes[f"{prefix}-c{i}"] for i in range(6)] == [
            "identical", "changed", "absorbed", "identical", "changed", "absorbed"]
    data = report.to_dict()
    assert (data["runs"], data["identical"], data["absorbed"], data["changed"]) == (12, 4, 4, 4)
    assert data["divergence_rate"] == pytest.approx(8 / 12, abs=1e-6)
    assert data["changed_rate"] == pytest.approx(4 / 12, abs=1e-6)
    assert data["crossings"] == {"total": 12, "diverged": 8, "absorbed": 4,
                                 "absorbed_by_verifiers": 4, "changed": 4,
                                 "divergence_rate": pytest.approx(8 / 12, abs=1e-6)}
    assert data["by_boundary"]["quote"]["changed"] == 4
    for agent in ("div.quote", "div.review"):
        assert data["by_agent"][agent] | {"divergence_rate": 0} == {
            "total": 6, "diverged": 4, "absorbed": 2, "absorbed_by_verifiers": 2, "changed": 2,
            "divergence_rate": 0}


def test_first_diverging_step_names_the_crossing_and_what_moved(tmp_path: Path) -> None:
    """Each diverging run's first step is the quote crossing (step 1) with the right aspects."""
    report = _report(_recorded(tmp_path), ReplaySpec(model="scripted:v2"))
    first = {r.run_id: r.first for r in report.runs}
    assert first["quote-c0"] is None
    c1 = first["quote-c1"]
    assert c1 is not None and (c1.seq, c1.kind, c1.name) == (1, "cross", "quote")
    assert "commit" in c1.aspects and c1.category == "changed"
    c2 = first["quote-c2"]
    assert c2 is not None and c2.category == "absorbed" and c2.absorbed_by == "verifiers"
    assert "policy.discount_cap" in c2.replayed and "committed" in c2.recorded
    table = render_report(report)
    assert "changed-commit rate 33.3%" in table and "quote-c4" in table


def test_divergence_replay_commits_nothing_real(tmp_path: Path) -> None:
    """A divergence replay sends its commits to the shadow ledger: the real sink is untouched."""
    url = _recorded(tmp_path)
    sent_before = list(crafted.SENT)
    report = _report(url, ReplaySpec(model="scripted:v2"))
    assert report.count("changed") == 4
    assert sent_before == crafted.SENT


def test_same_model_replays_identical(tmp_path: Path) -> None:
    """Divergence replay under the recording model itself finds nothing."""
    report = _report(_recorded(tmp_path), ReplaySpec(model="scripted:v1"))
    assert report.divergence_rate == 0.0 and report.count("identical") == 12


def test_prompt_version_changes_only_the_runs_it_should(tmp_path: Path) -> None:
    """Prompt version 2 makes scripted:v1 change its answer for c0 and c1 only."""
    prompts = prompt_variants("2", path=None, agents=[AGENTS])
    report = _report(_recorded(tmp_path), ReplaySpec(model="scripted:v1", prompts=prompts))
    changed = sorted(r.run_id for r in report.runs if r.classification != "identical")
    assert changed == ["quote-c0", "quote-c1", "review-c0", "review-c1"]
    assert report.spec["prompts"] == {"quote": "2"}


def test_policy_change_diverges_where_the_cap_moved(tmp_path: Path) -> None:
    """Under a policy capping discounts at 55%, c5's rejected 50% is accepted: only c5 changes."""
    data = yaml.safe_load(POLICY.read_text())
    data.update(version="v8")
    data["discount"].update(max_pct=55, warn_pct=20)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    policy = load_policy(path)

    def register(runtime: Runtime) -> None:
        crafted.register(runtime, policy=policy)

    report = _report(_recorded(tmp_path), ReplaySpec(model="scripted:v1", policy_version="v8"),
                     register)
    # Under a 55% cap, c5's first proposal (50%) is accepted: its commit changes.
    changed = sorted(r.run_id for r in report.runs if r.classification == "changed")
    assert changed == ["quote-c5", "review-c5"]
    assert report.spec["policy_version"] == "v8"


def test_cli_fail_above_is_a_ci_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--fail-above exits 1 when the changed-commit rate (4/12) is above it, 0 otherwise."""
    url = _recorded(tmp_path)
    base = ["replay", "--all", "--db", url, "--agents", AGENTS, "--model", "scripted:v2"]
    assert main([*base, "--fail-above", "0.3"]) == 1
    assert "divergence gate failed" in capsys.readouterr().err
    assert main([*base, "--fail-above", "0.34"]) == 0
    assert main([*base, "--gate-on", "any", "--fail-above", "0.6"]) == 1
    assert main([*base, "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["changed"] == 4 and data["spec"]["model"] == "scripted:v2"
    assert len(data["per_run"]) == 12


def test_cli_policy_file_is_passed_to_the_agents(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--policy FILE replays under that policy and reports its version."""
    url = _recorded(tmp_path)
    assert main(["replay", "--all", "--db", url, "--agents", AGENTS, "--policy", str(POLICY),
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["spec"]["policy_version"] == "v7" and data["changed"] == 0
