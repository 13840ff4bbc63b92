"""The spine ablation: P3 (wide proposal) and P5 (narrow proposal) on real Telco customers,
recorded under one model version and replayed under another."""

from __future__ import annotations

import asyncio
import json

import pytest

from threshold.apps.renewal.customers import load_customers
from threshold.cli._main import main
from threshold.replay._ablation import AblationConfig, bootstrap_ci, spine_ablation
from threshold.replay._spines import EVENT_STATES, STATES, TRANSITIONS

SMALL = AblationConfig(customers=24, bootstrap=300, seed=3)


def _cells(result: dict) -> list[dict]:  # type: ignore[type-arg]
    return [s[m] for s in result["spines"].values()
            for m in ("changed_rate", "state_divergence", "any_divergence")]


def test_ablation_measures_both_spines_with_intervals() -> None:
    """Both spines are replayed for every customer; every rate lies inside its bootstrap
    interval, and the paired difference is reported."""
    result = asyncio.run(spine_ablation(SMALL))
    assert result["customers"] == 24 and result["models"] == ["sim:v1", "sim:v2"]
    assert set(result["spines"]) == {"P3", "P5"}
    for cell in _cells(result):
        low, high = cell["ci95"]
        assert cell["n"] == 24 and 0.0 <= low <= cell["value"] <= high <= 1.0
    for spine in result["spines"].values():
        assert spine["runs"] == 24 and spine["crossings"]["total"] >= 24
        # "Changed" implies "diverged": the rates are nested.
        assert spine["changed_rate"]["value"] <= spine["any_divergence"]["value"]
    difference = result["difference_P3_minus_P5"]["changed_rate"]
    p3, p5 = (result["spines"][s]["changed_rate"]["value"] for s in ("P3", "P5"))
    assert difference["value"] == pytest.approx(p3 - p5, abs=1e-6)


def test_ablation_is_reproducible_from_its_seed() -> None:
    """The same configuration gives the same numbers, intervals included."""
    assert asyncio.run(spine_ablation(SMALL)) == asyncio.run(spine_ablation(SMALL))


def test_same_model_on_both_sides_shows_no_drift() -> None:
    """Replaying under the recording model itself finds no divergence in either spine."""
    result = asyncio.run(spine_ablation(AblationConfig(customers=12, bootstrap=100,
                                                       models=("sim:v1", "sim:v1"))))
    assert all(cell["value"] == 0.0 for cell in _cells(result))


def test_spines_use_real_customers_and_one_state_machine() -> None:
    """The inputs are the packaged Telco rows, and every event word folds into a state of the
    machine both spines share."""
    customers = load_customers(subset=True).customers
    assert len(customers) == 100 and customers[0].customer_id == "7493-TPUWZ"
    assert {s for s in EVENT_STATES.values() if s is not None} <= set(STATES)
    assert all(set(t) <= set(STATES) for t in TRANSITIONS.values())


def test_bootstrap_interval_is_seeded_and_paired() -> None:
    """The bootstrap is deterministic per seed; a constant sample has a zero-width interval;
    a paired difference resamples the same units on both sides."""
    values = [1, 0, 1, 1, 0, 1, 0, 1]
    first = bootstrap_ci(values, resamples=500, seed=9)
    assert first == bootstrap_ci(values, resamples=500, seed=9)
    assert first["value"] == pytest.approx(5 / 8)
    assert bootstrap_ci([1, 1, 1], resamples=50, seed=1)["ci95"] == [1.0, 1.0]
    paired = bootstrap_ci(values, paired=values, resamples=200, seed=2)
    assert paired["value"] == 0.0 and paired["ci95"] == [0.0, 0.0]


def test_cli_ablation_spine(capsys: pytest.CaptureFixture[str]) -> None:
    """`threshold ablation spine --json` prints the report as one JSON object."""
    assert main(["ablation", "spine", "--customers", "8", "--bootstrap", "100", "--seed", "1",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["customers"] == 8 and set(data["spines"]) == {"P3", "P5"}
    assert main(["ablation", "spine", "--customers", "4", "--bootstrap", "50"]) == 0
    assert "P3-P5" in capsys.readouterr().out
    assert main(["ablation", "spine", "--models", "sim:v1"]) == 2
