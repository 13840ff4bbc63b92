"""The renewal policy: loading the versioned YAML and the pure gate rules."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from threshold.apps.renewal.customers import data_file
from threshold.errors import ConfigError
from threshold.patterns.policy import (
    GateDecision,
    Policy,
    Principal,
    check_discount,
    check_term,
    check_throttle,
    escalation_for,
    load_policy,
    may_use_kill_switch,
    policy_from_mapping,
)

SHIPPED = data_file("policy.yaml")


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(SHIPPED)


def write_variant(tmp_path: Path, old: str, new: str) -> Path:
    """The shipped policy with one textual edit, written to a temporary file."""
    text = SHIPPED.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "policy.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_shipped_policy_loads_as_v7(policy: Policy) -> None:
    """The packaged policy file loads as version v7 with its documented values."""
    assert policy.version == "v7"
    assert policy.effective_from == date(2026, 1, 1)
    assert (policy.discount.max_pct, policy.discount.warn_pct) == (30, 20)
    assert policy.discount.overrides == {"C-001": 35, "C-012": 40}
    assert policy.discount.review_sample_rate == 0.1
    assert policy.auto_close.max_term_months == 36
    assert policy.throttle.daily_dollars_cap == 100.0
    assert policy.audit.retention_days == 2555


def test_ninety_percent_discount_is_denied_by_the_cap(policy: Policy) -> None:
    """A 90 % discount is denied by rule discount.max_pct and routed to its trigger."""
    decision = check_discount(policy, "C-999", 90, sample=0.5)
    assert not decision.allowed
    assert decision.rule == "discount.max_pct"
    assert decision.policy_version == "v7"
    assert decision.escalate_to == "counsel + human_specialist"
    assert "90 %" in decision.reason and "30 %" in decision.reason


def test_tenant_override_allows_forty_and_denies_forty_one(policy: Policy) -> None:
    """Tenant C-012's override cap of 40 % admits 40 and refuses 41."""
    assert check_discount(policy, "C-012", 40, sample=0.5).allowed
    denied = check_discount(policy, "C-012", 41, sample=0.5)
    assert not denied.allowed
    assert denied.rule == "discount.overrides"
    assert "C-012" in denied.reason
    assert not check_discount(policy, "C-013", 40, sample=0.5).allowed


def test_warn_band_allows_with_warning_and_samples_review(policy: Policy) -> None:
    """25 % is allowed with warn=True; review sampling follows the caller's draw."""
    sampled = check_discount(policy, "C-999", 25, sample=0.05)
    unsampled = check_discount(policy, "C-999", 25, sample=0.5)
    for decision in (sampled, unsampled):
        assert decision.allowed and decision.warn
        assert decision.rule == "discount.warn_pct"
    assert sampled.sampled_for_review and not unsampled.sampled_for_review


def test_discount_below_warn_is_plainly_allowed(policy: Policy) -> None:
    """A 10 % discount is allowed with no warning and no review."""
    decision = check_discount(policy, "C-999", 10, sample=0.0)
    assert decision == GateDecision(
        allowed=True,
        rule="discount.max_pct",
        reason="10 % is within the policy cap of 30 %",
        policy_version="v7",
    )


def test_negative_discount_and_bad_sample_are_refused(policy: Policy) -> None:
    """A negative discount is denied; a sample outside [0, 1) is a usage error."""
    assert check_discount(policy, "C-999", -5, sample=0.5).rule == "discount.range"
    with pytest.raises(ConfigError, match="sample"):
        check_discount(policy, "C-999", 10, sample=1.0)


@given(pct=st.floats(0, 100), sample=st.floats(0, 1, exclude_max=True))
def test_discount_allowed_exactly_up_to_the_cap(pct: float, sample: float) -> None:
    """For any discount and draw, allowed is pct <= cap and warn is the band above warn_pct."""
    policy = load_policy(SHIPPED)
    decision = check_discount(policy, "C-999", pct, sample=sample)
    assert decision.allowed == (pct <= 30)
    assert decision.warn == (20 <= pct <= 30)
    assert decision.sampled_for_review == (decision.warn and sample < 0.1)


def test_kill_switch_admits_listed_roles_only(policy: Policy) -> None:
    """role:on_call_engineer may use the kill switch; role:intern may not."""
    allowed = may_use_kill_switch(policy, "role:on_call_engineer")
    refused = may_use_kill_switch(policy, "role:intern")
    assert allowed.allowed and not refused.allowed
    assert allowed.rule == refused.rule == "kill_switch.authorized_principals"
    assert may_use_kill_switch(policy, "alice@director_ai").allowed
    assert not may_use_kill_switch(policy, "alice").allowed


def test_kill_switch_refuses_malformed_principal(policy: Policy) -> None:
    """A malformed principal string is refused with a reason, not raised."""
    decision = may_use_kill_switch(policy, "role:on call; drop table")
    assert not decision.allowed
    assert "not 'name'" in decision.reason


def test_kill_switch_admits_a_principal_listed_by_name(tmp_path: Path) -> None:
    """A bare name in the policy admits that person whatever role they act in."""
    path = write_variant(tmp_path, "    - role:director_ai", "    - alice")
    policy = load_policy(path)
    assert may_use_kill_switch(policy, "alice@intern").allowed
    assert not may_use_kill_switch(policy, "role:director_ai").allowed


def test_principal_parsing_forms() -> None:
    """Principals parse from 'name', 'name@role' and 'role:x', and print back the same."""
    for text, name, roles in [
        ("alice", "alice", set()),
        ("alice@on_call_engineer", "alice", {"on_call_engineer"}),
        ("role:intern", None, {"intern"}),
    ]:
        principal = Principal.parse(text)
        assert (principal.name, set(principal.roles)) == (name, roles)
        assert str(principal) == text
    with pytest.raises(ConfigError):
        Principal.parse("alice@")


def test_term_rules(policy: Policy) -> None:
    """Terms up to 36 months auto-close; longer terms and mergers do not."""
    assert check_term(policy, 36, is_merger=False).allowed
    long = check_term(policy, 48, is_merger=False)
    assert not long.allowed and long.rule == "auto_close.max_term_months"
    merger = check_term(policy, 12, is_merger=True)
    assert not merger.allowed
    assert merger.rule == "auto_close.require_human_for_mergers"
    assert merger.escalate_to == "human_specialist"
    assert not check_term(policy, 0, is_merger=False).allowed


def test_escalation_triggers(policy: Policy) -> None:
    """A listed trigger names whom to escalate to; an unlisted kind needs nobody."""
    pii = escalation_for(policy, "pii_present")
    assert (pii.allowed, pii.escalate_to) == (False, "privacy_officer")
    assert pii.rule == "escalation_triggers.pii_present"
    other = escalation_for(policy, "weather")
    assert other.allowed and other.escalate_to is None


def test_throttle_tightest_cap_wins(policy: Policy) -> None:
    """The first throttle a further action would pass decides; nonsense amounts fail closed."""
    ok = check_throttle(policy, actions_last_minute=0, tenant_actions_last_hour=0, dollars_today=0)
    assert ok.allowed
    per_min = check_throttle(
        policy, actions_last_minute=60, tenant_actions_last_hour=0, dollars_today=0
    )
    assert per_min.rule == "throttle.per_min" and not per_min.allowed
    tenant = check_throttle(
        policy, actions_last_minute=1, tenant_actions_last_hour=12, dollars_today=0
    )
    assert tenant.rule == "throttle.per_tenant_per_hour"
    dollars = check_throttle(
        policy, actions_last_minute=1, tenant_actions_last_hour=1, dollars_today=99, dollars=2
    )
    assert dollars.rule == "throttle.daily_dollars_cap"
    nan = check_throttle(
        policy, actions_last_minute=0, tenant_actions_last_hour=0, dollars_today=float("nan")
    )
    assert (nan.allowed, nan.rule) == (False, "throttle.range")


def test_missing_version_raises_config_error_naming_it(tmp_path: Path) -> None:
    """A policy file without a version is refused, naming the file and the field."""
    path = write_variant(tmp_path, "version: v7\n", "")
    with pytest.raises(ConfigError, match=r"version: Field required") as caught:
        load_policy(path)
    assert str(path) in str(caught.value)


def test_non_numeric_cap_raises_config_error_naming_the_field(tmp_path: Path) -> None:
    """`max_pct: "abc"` is refused with the field path discount.max_pct."""
    path = write_variant(tmp_path, "max_pct: 30", 'max_pct: "abc"')
    with pytest.raises(ConfigError, match=r"discount\.max_pct: .*'abc'"):
        load_policy(path)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("max_pct: 30", 'max_pct: "30"', "discount.max_pct"),
        ("warn_pct: 20", "warn_pct: 45", "discount"),
        ("C-012: 40", "C-012: 140", "discount.overrides.C-012"),
        ("per_min: 60", "per_min: 0", "throttle.per_min"),
        ("enabled: true", "enabled: sometimes", "auto_close.enabled"),
        ("    - role:director_ai", "    - bob@director_ai", "kill_switch.authorized_principals"),
        ("kind: pii_present", "kind: contract_merger", "escalation_triggers"),
        ("retention_days: 2555", "retention_days: 2555\n  extra: 1", "audit.extra"),
    ],
)
def test_invalid_values_name_their_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    """Each invalid value raises ConfigError naming the field path it sits at."""
    with pytest.raises(ConfigError, match=rf"{field}"):
        load_policy(write_variant(tmp_path, old, new))


def test_duplicate_keys_and_broken_yaml_are_refused(tmp_path: Path) -> None:
    """A key given twice or unparsable YAML is a ConfigError with the line, never a merge."""
    path = write_variant(tmp_path, "version: v7\n", "version: v7\nversion: v8\n")
    with pytest.raises(ConfigError, match=r"policy\.yaml:6: .*duplicate key 'version'"):
        load_policy(path)
    path.write_text("version: [v7\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(path)
    path.write_bytes(b"version: v\xff7\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_policy(path)
    with pytest.raises(ConfigError, match="must be a mapping"):
        policy_from_mapping(["v7"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")
