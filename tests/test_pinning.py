"""Version pinning: runs keep their pins; stranded runs are reported; migration is on purpose
and refused unless the new definition replays the run's journal."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from golden import pinning_agents as pin
from threshold import Runtime, VirtualClock, open_store
from threshold.cli._replay import add_runs_subcommands
from threshold.errors import MigrationRefused, NondeterminismError
from threshold.replay import check_deterministic
from threshold.replay._pinning import migrate_run, run_pins, stranded_runs

AGENTS_V1 = "golden.pinning_agents:register_v1"
DEPLOYED = "golden.pinning_agents:register_deployed"


def _run(url: str, fn: Any) -> Any:
    async def go() -> Any:
        store = open_store(url)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _recorded(tmp_path: Path) -> str:
    """a, b wait for 'go' under version 1; done completed; fresh was started under version 1
    but only the new deployment's worker ran since, and it left fresh alone."""
    url = f"sqlite:///{tmp_path / 'pins.db'}"

    async def go(store: Any) -> None:
        old = Runtime(store, clock=VirtualClock())
        pin.register_v1(old)
        for name in ("a", "b", "done"):
            await old.start(pin.AGENT, {"who": name}, run_id=name, model="scripted:old",
                            pins={"policy": "v7"})
        await old.run_until_idle()
        await old.deliver("done", "go", "go-1", "now")
        await old.run_until_idle()
        await old.start(pin.AGENT, {"who": "fresh"}, run_id="fresh", model="scripted:old")
        new = Runtime(store, clock=VirtualClock())
        pin.register_deployed(new)
        await new.run_until_idle()

    _run(url, go)
    return url


def _deployed(store: Any) -> Runtime:
    runtime = Runtime(store, clock=VirtualClock())
    pin.register_deployed(runtime)
    return runtime


def test_pins_hold_agent_model_policy_and_prompt_versions(tmp_path: Path) -> None:
    """A run's pins name its agent version, model, declared policy and the prompts it used."""
    url = _recorded(tmp_path)
    pins = _run(url, lambda s: run_pins(s, "a"))
    assert pins == {"agent_version": "1", "model": "scripted:old", "policy": "v7",
                    "prompts": {"reading": "1"}}


def test_stranded_reports_unservable_versions_and_models(tmp_path: Path) -> None:
    """Waiting runs of a retired version and model, and ready runs no deployed worker would
    claim, are reported with their reasons; finished runs are not."""
    url = _recorded(tmp_path)
    found = _run(url, lambda s: stranded_runs(s, _deployed(s), policy_version="v8"))
    by_id = {s.run_id: s for s in found}
    assert sorted(by_id) == ["a", "b", "fresh"]
    reasons = " | ".join(by_id["a"].reasons)
    assert "version 1 is not deployed (deployed: 2, 3, 4)" in reasons
    assert "model scripted:old cannot be served" in reasons
    assert "policy v7 is pinned, v8 is deployed" in reasons
    assert by_id["fresh"].status == "ready"
    assert by_id["fresh"].reasons[0].startswith("agent pin.wait version 1 is not deployed")


def test_migration_to_an_incompatible_version_is_refused(tmp_path: Path) -> None:
    """Version 3 does not replay a's journal (step 2 differs): the run keeps its pins."""
    url = _recorded(tmp_path)
    with pytest.raises(MigrationRefused, match="step 2"):
        _run(url, lambda s: migrate_run(s, "a", pin.register_deployed, to_version="3",
                                        model="scripted:new", principal="ops@admin"))
    run = _run(url, lambda s: s.get_run("a"))
    assert (run.agent_version, run.status, run.pins["model"]) == ("1", "waiting",
                                                                   "scripted:old")
    with pytest.raises(MigrationRefused, match="completed"):
        _run(url, lambda s: migrate_run(s, "done", pin.register_deployed, to_version="2",
                                        principal="ops@admin"))


def test_migration_moves_a_run_on_purpose_and_it_finishes(tmp_path: Path) -> None:
    """A compatible migration records who moved what, sets the run ready, and the new
    definition finishes it from its journal."""
    url = _recorded(tmp_path)
    moved = _run(url, lambda s: migrate_run(s, "a", pin.register_deployed, to_version="2",
                                            model="scripted:new", principal="ops@admin",
                                            clock=VirtualClock()))
    assert moved.from_pins["agent_version"] == "1" and moved.to_pins["model"] == "scripted:new"

    async def finish(store: Any) -> Any:
        run = await store.get_run("a")
        assert (run.agent_version, run.status) == ("2", "ready")
        events = await store.list_events("a", kind="run.migrated")
        assert events[0].data["by"] == "ops@admin"
        assert events[0].data["from"]["agent_version"] == "1"
        assert events[0].data["to"] == {"agent_version": "2", "model": "scripted:new",
                                        "status": "ready"}
        runtime = _deployed(store)
        await runtime.run_until_idle()
        await runtime.deliver("a", "go", "go-a", "later")
        await runtime.run_until_idle()
        return await store.get_run("a")

    run = _run(url, finish)
    assert run.status == "completed"
    assert run.result == {"level": 3, "go": "later", "definition": "2"}  # recorded reading


def _runs_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="threshold")
    runs = parser.add_subparsers(dest="command").add_parser("runs")
    add_runs_subcommands(runs.add_subparsers(dest="runs_command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


def test_cli_stranded_and_migrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`runs migrate --all` to an incompatible version (or onto a retired model) refuses every
    run (exit 1); to a compatible one with a served model it moves them (exit 0), and `runs
    stranded` then reports none."""
    url = _recorded(tmp_path)
    common = ["--db", url, "--agents", DEPLOYED]
    assert _runs_cli(["runs", "stranded", *common, "--json"]) == 0
    assert sorted(s["run_id"] for s in json.loads(capsys.readouterr().out)) == [
        "a", "b", "fresh"]
    assert _runs_cli(["runs", "migrate", "a", "--to-version", "2", *common]) == 1
    assert "model scripted:old cannot be served" in capsys.readouterr().out
    assert _runs_cli(["runs", "migrate", "--all", "--to-version", "3", "--model",
                      "scripted:new", *common]) == 1
    out = capsys.readouterr().out
    assert out.count("does not replay the journal") == 2  # a and b; fresh has no journal
    assert "fresh                            migrated to 3" in out
    assert _runs_cli(["runs", "migrate", "a", "b", "--to-version", "2", "--model",
                      "scripted:new", "--as", "ops@admin", *common]) == 0
    assert "migrated to 2 by ops@admin" in capsys.readouterr().out
    assert _runs_cli(["runs", "stranded", *common]) == 0
    assert "0 stranded run(s)" in capsys.readouterr().out


def test_migration_accepts_a_new_boundary_version_that_strict_replay_reports(
        tmp_path: Path) -> None:
    """A bumped boundary version over the same operations is a definition change: strict
    deterministic replay names its crossing, yet a migration may move the run onto it."""
    url = _recorded(tmp_path)
    with pytest.raises(NondeterminismError) as caught:
        _run(url, lambda s: check_deterministic(s, ["b"], pin.register_deployed,
                                                agent_version="4"))
    assert caught.value.step == 1
    moved = _run(url, lambda s: migrate_run(s, "b", pin.register_deployed, to_version="4",
                                            model="scripted:new", principal="ops@admin",
                                            clock=VirtualClock()))
    assert moved.to_pins["agent_version"] == "4"
