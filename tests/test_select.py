"""The five-step pattern selection, its workloads, its skeleton and its CLI."""

from __future__ import annotations

import ast
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import threshold.methodology as methodology
from threshold.cli import main
from threshold.errors import ConfigError, NotFoundError, UsageError
from threshold.methodology import (
    Selection,
    Workload,
    WorkloadError,
    builtin_workloads,
    load_builtin,
    load_workload,
    render_skeleton,
    select,
)
from threshold.methodology._workload import parse_duration

SHIPPED = ["contract-renewal", "customer-service", "incident-remediation", "invoice-payments",
           "research-report"]


def _workload(**fields: Any) -> Workload:
    base: dict[str, Any] = {"name": "probe", "horizon": "10m"}
    return Workload.model_validate(base | fields)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "workload.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped workloads -----------------------------------------------------------------


def test_the_five_workloads_ship_as_package_data() -> None:
    """The package ships exactly the five documented workloads, each named after its file."""
    assert [w.name for w in builtin_workloads()] == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_workload_loads_and_selects(name: str) -> None:
    """Every shipped workload loads, selects a spine, and inventories each of its boundaries."""
    workload = load_builtin(name)
    selection = select(workload)
    assert selection.workload == name
    assert selection.choices[0].role == "spine"
    assert [e.name for e in selection.inventory] == [b.name for b in workload.boundaries]
    assert [s.number for s in selection.steps] == [1, 2, 3, 4, 5]
    assert all(reason for step in selection.steps for reason in step.reasons)


def test_shipped_workloads_lead_to_different_compositions() -> None:
    """The five workloads are different enough that no two get the same composition."""
    compositions = {select(w).patterns for w in builtin_workloads()}
    assert len(compositions) == len(SHIPPED)


def test_selection_is_deterministic_and_json_able() -> None:
    """Selecting twice gives equal results, and to_dict survives a JSON round trip unchanged."""
    workload = load_builtin("contract-renewal")
    first, second = select(workload), select(workload)
    assert first == second
    assert json.loads(json.dumps(first.to_dict())) == first.to_dict()
    assert Selection.model_validate(first.to_dict()) == first


# --- the five steps ------------------------------------------------------------------------


def test_long_horizon_renewal_gets_the_state_machine_spine_and_approval_with_sla() -> None:
    """The 90-day renewal is long-horizon, rests on P5, and gets P6 with the workload's SLA."""
    selection = select(load_builtin("contract-renewal"))
    assert selection.runtime_class == "long-horizon"
    assert selection.patterns[0] == "P5"
    assert "P6" in selection.patterns
    assert selection.approval is not None
    assert selection.approval.sla == "1d" and selection.approval.sla_from_workload
    assert "approval with SLA" in selection.approval.planes
    assert "draft_offer" in selection.approval.boundaries


def test_conversational_workload_builds_the_gate_first() -> None:
    """A conversational agent is bounded by control first: P4 leads the build sequence."""
    selection = select(load_builtin("customer-service"))
    assert selection.runtime_class == "conversational"
    assert selection.patterns[0] == "P4"
    first_pattern_step = next(step for step in selection.build if step.patterns)
    assert first_pattern_step.patterns == ("P4",)
    assert "control" in first_pattern_step.reason


def test_conversational_class_follows_from_the_latency_budget() -> None:
    """A person waiting seconds per turn makes a workload conversational even over minutes."""
    assert select(_workload(horizon="15m", latency_budget="3s")).runtime_class == "conversational"
    assert select(_workload(horizon="15m")).runtime_class == "autonomous"
    assert select(_workload(horizon="days")).runtime_class == "long-horizon"


def test_irreversible_payments_get_saga_gate_and_human_approval() -> None:
    """Irreversible payments get a saga (P2), a gate (P4) and approval that denies on timeout."""
    selection = select(load_builtin("invoice-payments"))
    assert {"P2", "P4", "P6"} <= set(selection.patterns)
    saga = selection.choice("P2")
    assert saga is not None and "schedule_payment" in saga.reason
    assert selection.approval is not None
    assert "release_payment" in selection.approval.boundaries
    assert selection.approval.fallback == "deny"
    release = next(e for e in selection.inventory if e.name == "release_payment")
    assert release.needs_approval and release.reversibility == "irreversible"


def test_full_autonomy_with_reversible_effects_needs_no_human() -> None:
    """The research report publishes a revertible draft on its own: no P6, but a fan-out P2."""
    selection = select(load_builtin("research-report"))
    assert selection.approval is None
    assert "P6" not in selection.patterns
    assert selection.patterns == ("P3", "P2", "P4")


def test_single_worker_gets_no_coordination_pattern() -> None:
    """Without fan-out, specialists or transactions, step 3 chooses nothing and says why."""
    selection = select(load_builtin("customer-service"))
    coordination = selection.steps[2]
    assert coordination.decision == "none"
    assert "P1" not in selection.patterns and "P2" not in selection.patterns


def test_approval_without_any_human_is_a_warning() -> None:
    """An irreversible, costly effect with nobody to approve it is warned about, not approved."""
    workload = _workload(
        side_effects=[{"name": "wire", "reversible": False, "blast_radius": 50000}],
        boundaries=[{"name": "pay", "proposer": "llm", "verifiers": ["v"], "commit": "wire",
                     "reject": "abort", "effect": "wire"}],
    )
    selection = select(workload)
    assert selection.approval is None
    assert any("no human is available" in w for w in selection.warnings)


def test_irreversible_step_before_a_compensable_one_is_a_warning() -> None:
    """A saga whose irreversible pivot is not last is flagged: a later failure cannot be undone."""
    workload = _workload(
        side_effects=[{"name": "pay", "reversibility": "irreversible", "blast_radius": 10},
                      {"name": "book", "reversibility": "compensable"}],
        transactions=[["pay", "book"]],
    )
    assert any("move irreversible step pay last" in w for w in select(workload).warnings)


# --- the inventory -------------------------------------------------------------------------


def test_commit_without_a_verifier_is_flagged_as_a_weak_boundary() -> None:
    """The status page commits with no verifier: it is weak, and the flag says why it matters."""
    selection = select(load_builtin("incident-remediation"))
    weak = {e.name: e for e in selection.weak_boundaries}
    assert list(weak) == ["update_status_page"]
    [weakness] = weak["update_status_page"].weaknesses
    assert weakness.part == "verifier"
    assert "committed" in weakness.why
    assert "WEAK" in selection.render_text()
    assert "update_status_page" in selection.adr.boundaries


def test_missing_reject_signal_is_flagged() -> None:
    """A boundary whose rejects go nowhere is weak on its reject part."""
    selection = select(load_builtin("research-report"))
    [entry] = selection.weak_boundaries
    assert entry.name == "synthesise_report"
    assert [w.part for w in entry.weaknesses] == ["reject"]


def test_every_missing_part_is_named() -> None:
    """A boundary with only a name is weak on all four parts."""
    selection = select(_workload(boundaries=[{"name": "bare"}]))
    assert [w.part for w in selection.inventory[0].weaknesses] == [
        "proposer", "verifier", "commit", "reject"]


# --- the decision record -------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_decision_record_has_exactly_six_lines(name: str) -> None:
    """The architecture decision record is six lines: context to review trigger."""
    lines = select(load_builtin(name)).adr.render().splitlines()
    assert len(lines) == 6
    assert [line.split(":")[0] for line in lines] == [
        "Context", "Decision", "Patterns", "Boundaries", "Consequences", "Review trigger"]


def test_decision_record_stays_six_lines_with_multiline_input() -> None:
    """Newlines in names and descriptions cannot break the record's six lines."""
    workload = _workload(boundaries=[{"name": "two\nlines", "proposer": "a\nb"}])
    assert len(select(workload).adr.render().splitlines()) == 6


# --- the skeleton --------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_skeleton_compiles(name: str) -> None:
    """The generated skeleton is valid Python with one Boundary per inventoried crossing."""
    selection = select(load_builtin(name))
    source = render_skeleton(selection)
    compile(source, f"{name}_skeleton.py", "exec")
    tree = ast.parse(source)
    boundaries = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                  and isinstance(node.func, ast.Name) and node.func.id == "Boundary"]
    assert len(boundaries) == len(selection.inventory)
    for pattern in selection.patterns:
        assert pattern in source


def test_skeleton_compiles_with_hostile_names() -> None:
    """Keywords, quotes, digits, duplicates and control characters still give valid Python."""
    workload = _workload(
        side_effects=[{"name": "x", "reversibility": "irreversible"}],
        humans={"availability": "always", "roles": ['o"k'], "fallback": "approve_with_cap"},
        boundaries=[
            {"name": "class", "proposer": "p\x00\n\"\"\"", "verifiers": ["import", "a b"],
             "commit": "c", "reject": 'hand to o"k', "effect": "x"},
            {"name": "9 lives", "verifiers": ["import", "'quoted'"], "reject": "abort \\"},
            {"name": "Class", "verifiers": ["Boundary", "verifier"]},
            {"name": "é-ü", "verifiers": []},
        ],
    )
    source = render_skeleton(select(workload))
    compile(source, "hostile.py", "exec")


# --- loading errors ------------------------------------------------------------------------


def test_bad_field_gives_a_config_error_naming_file_and_field(tmp_path: Path) -> None:
    """A bad enum value raises ConfigError naming the file, the list item and the field."""
    path = _write(tmp_path, (
        "name: broken\nhorizon: 5d\nside_effects:\n"
        "  - name: pay\n    reversibility: sometimes\n"))
    with pytest.raises(WorkloadError) as caught:
        load_workload(path)
    error = caught.value
    assert isinstance(error, ConfigError) and isinstance(error, UsageError)
    assert error.field == "side_effects[0](pay).reversibility"
    assert str(path) in str(error) and "reversibility" in str(error)


def test_unknown_field_is_reported_by_name(tmp_path: Path) -> None:
    """A misspelt key is refused and named, instead of silently ignored."""
    path = _write(tmp_path, "name: typo\nhorizn: 5d\nhorizon: 5d\n")
    with pytest.raises(ConfigError, match=r"field horizn: unknown field"):
        load_workload(path)


def test_missing_required_field_is_reported(tmp_path: Path) -> None:
    """A workload without a horizon names the missing field."""
    with pytest.raises(ConfigError, match="field horizon: required field is missing"):
        load_workload(_write(tmp_path, "name: nohorizon\n"))


def test_dangling_effect_reference_names_the_boundary_field(tmp_path: Path) -> None:
    """A boundary committing an unknown side effect is refused with the field path."""
    path = _write(tmp_path, (
        "name: dangling\nhorizon: 1h\nboundaries:\n  - name: pay\n    effect: wire\n"))
    with pytest.raises(ConfigError, match=r"field boundaries\[0\]\.effect: 'wire'"):
        load_workload(path)


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    """Broken YAML syntax becomes a ConfigError with the file and the line."""
    path = _write(tmp_path, "name: x\nhorizon: [1d\n")
    with pytest.raises(ConfigError, match=r"workload\.yaml: invalid YAML: line \d+"):
        load_workload(path)


def test_bad_duration_explains_the_accepted_forms(tmp_path: Path) -> None:
    """An unreadable horizon says which duration forms are accepted."""
    with pytest.raises(ConfigError, match=r"field horizon: .*'90d'"):
        load_workload(_write(tmp_path, "name: x\nhorizon: soon\n"))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A workload path that does not exist is a ConfigError, not an OSError."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_workload(tmp_path / "absent.yaml")


def test_unknown_builtin_lists_the_known_ones() -> None:
    """Asking for a workload that is not shipped names the ones that are."""
    with pytest.raises(NotFoundError, match="contract-renewal"):
        load_builtin("nope")


def test_durations_read_the_documented_forms() -> None:
    """Compound durations, orders of magnitude and plain seconds all parse."""
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("7 years") == timedelta(days=7 * 365)
    assert parse_duration("days") == timedelta(days=7)
    assert parse_duration(45) == timedelta(seconds=45)


def test_reversible_flag_and_bare_blast_radius_are_accepted() -> None:
    """``reversible: false`` reads as irreversible and a bare blast radius as dollars."""
    workload = _workload(side_effects=[{"name": "wire", "reversible": False, "blast_radius": 9}])
    effect = workload.side_effects[0]
    assert effect.reversibility == "irreversible" and effect.blast_radius.dollars == 9


def test_public_names_stay_exported() -> None:
    """The methodology facade keeps exporting the selection API."""
    assert {"Workload", "load_workload", "builtin_workloads", "load_builtin", "select",
            "Selection", "render_skeleton"} <= set(methodology.__all__)


# --- the command line ----------------------------------------------------------------------


def test_cli_select_prints_one_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    """`threshold select NAME --json` exits 0 and prints the selection as valid JSON."""
    assert main(["select", "contract-renewal", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["runtime_class"] == "long-horizon"
    assert document["patterns"][0] == "P5"
    assert len(document["adr"]) == 6


def test_cli_select_reads_a_file_and_writes_a_skeleton(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A workload path is accepted, and --skeleton writes compilable Python beside the JSON."""
    workload = tmp_path / "mine.yaml"
    workload.write_text(load_builtin("invoice-payments").model_dump_json(), encoding="utf-8")
    skeleton = tmp_path / "agent.py"
    assert main(["select", str(workload), "--json", "--skeleton", str(skeleton)]) == 0
    assert json.loads(capsys.readouterr().out)["workload"] == "invoice-payments"
    compile(skeleton.read_text(encoding="utf-8"), str(skeleton), "exec")


def test_cli_select_prints_readable_text(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json the five steps, the inventory and the record are printed as text."""
    assert main(["select", "incident-remediation"]) == 0
    out = capsys.readouterr().out
    assert "1. classify the runtime class: autonomous" in out
    assert "update_status_page  WEAK" in out
    assert "Review trigger:" in out


def test_cli_workloads_list_and_show_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    """`workloads list --json` names the five workloads; `show --json` prints one of them."""
    assert main(["workloads", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [w["name"] for w in listed["workloads"]] == SHIPPED
    assert main(["workloads", "show", "research-report", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["fan_out"] == 6 and shown["horizon"] == "25m"


def test_cli_unknown_workload_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown workload name is a usage error: exit 2 with the known names on stderr."""
    assert main(["select", "no-such-workload"]) == 2
    assert "contract-renewal" in capsys.readouterr().err
