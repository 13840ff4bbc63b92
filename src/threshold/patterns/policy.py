"""The renewal policy as code: a versioned YAML file and pure gate rules over it.

``load_policy`` reads a file such as ``apps/renewal/data/policy.yaml`` into a frozen
``Policy``; the rule functions (``check_discount``, ``check_term``, ``check_throttle``,
``escalation_for``, ``may_use_kill_switch``) are pure functions of (policy, request) and
return a ``GateDecision`` that carries the policy version, the rule that decided and a
reason a person can read, so the journal can say why every side effect was allowed.

Principals are written in one of three forms:

- ``"alice"``: a person with no role;
- ``"alice@on_call_engineer"``: a person acting in a role;
- ``"role:on_call_engineer"``: anyone in that role (the form policy files list).

A policy entry ``role:x`` admits every principal holding role ``x``; a bare entry
``alice`` admits the principal named ``alice`` whatever their role.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from threshold.errors import ConfigError

# Strict: `max_pct: "30"` or `max_pct: yes` in a policy file is a mistake, not a number.
Pct = Annotated[float, Strict(), Field(ge=0, le=100, allow_inf_nan=False)]
Rate = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]
Dollars = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
_NAME = r"[A-Za-z0-9_.-]+"
_PRINCIPAL: Final = re.compile(
    rf"(?:role:(?P<role>{_NAME}))|(?P<name>{_NAME})(?:@(?P<as>{_NAME}))?"
)


class _Section(BaseModel):
    """A policy section: immutable, and unknown keys are errors (typos must not pass)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DiscountPolicy(_Section):
    """Discount caps in percent; a tenant in ``overrides`` gets its own cap."""

    max_pct: Pct
    warn_pct: Pct
    overrides: dict[StrictStr, Pct] = Field(default_factory=dict)
    # Share of warn-band discounts routed to the sampled review queue.
    review_sample_rate: Rate = 0.1

    @model_validator(mode="after")
    def _warn_below_cap(self) -> DiscountPolicy:
        if self.warn_pct > self.max_pct:
            raise ValueError(f"warn_pct ({self.warn_pct}) is above max_pct ({self.max_pct})")
        return self


class AutoClosePolicy(_Section):
    """Which renewals may close without a human."""

    enabled: StrictBool
    max_term_months: StrictInt = Field(gt=0)
    require_human_for_mergers: StrictBool


class ThrottlePolicy(_Section):
    """Blast-radius caps on side effects; the tightest one wins."""

    per_min: StrictInt = Field(gt=0)
    daily_dollars_cap: Dollars
    per_tenant_per_hour: StrictInt = Field(gt=0)


class EscalationTrigger(_Section):
    """An event ``kind`` that needs the principal or group named by ``require``."""

    kind: StrictStr = Field(min_length=1)
    require: StrictStr = Field(min_length=1)


class KillSwitchPolicy(_Section):
    """Who may stop runs: ``role:<role>`` entries or bare names."""

    authorized_principals: list[StrictStr]

    @field_validator("authorized_principals")
    @classmethod
    def _entries_are_principals(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            found = _PRINCIPAL.fullmatch(entry)
            if found is None or found["as"] is not None:
                raise ValueError(f"{entry!r} is neither 'role:<role>' nor a bare name")
        return entries


class AuditPolicy(_Section):
    """How long decisions are kept and what they record."""

    retention_days: StrictInt = Field(ge=0)
    pii_redaction: StrictBool
    log_decision_lineage: StrictBool


class Policy(_Section):
    """A versioned renewal policy; every section is required, so nothing is implied."""

    version: StrictStr = Field(min_length=1)
    effective_from: date
    discount: DiscountPolicy
    auto_close: AutoClosePolicy
    throttle: ThrottlePolicy
    escalation_triggers: list[EscalationTrigger]
    kill_switch: KillSwitchPolicy
    audit: AuditPolicy

    @field_validator("escalation_triggers")
    @classmethod
    def _one_trigger_per_kind(cls, triggers: list[EscalationTrigger]) -> list[EscalationTrigger]:
        kinds = [t.kind for t in triggers]
        twice = sorted({k for k in kinds if kinds.count(k) > 1})
        if twice:
            raise ValueError(f"kind listed more than once: {', '.join(twice)}")
        return triggers


# --- loading ------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: two `max_pct` lines must not silently merge."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def policy_from_mapping(data: object, *, source: str = "<policy>") -> Policy:
    """Validate an already-parsed policy document; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a policy must be a mapping, got {type(data).__name__}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{_field_path(err['loc'])}: {err['msg']}"
            # Echo scalars only: a whole section's repr would bury the message.
            + ("" if isinstance(err["input"], dict | list) else f" (got {err['input']!r})")
            for err in exc.errors()
        ]
        raise ConfigError(f"{source}: invalid policy: " + "; ".join(problems)) from None


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy YAML file; ConfigError names the file and the field."""
    file = Path(path)
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read policy: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: policy is not UTF-8 (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        where = f"{file}:{exc.problem_mark.line + 1}" if exc.problem_mark else str(file)
        raise ConfigError(f"{where}: policy is not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: policy is not valid YAML: {exc}") from None
    return policy_from_mapping(data, source=str(file))


# --- decisions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateDecision:
    """The answer of one policy rule. ``allowed=False`` means: not without a human."""

    allowed: bool
    rule: str
    reason: str
    policy_version: str
    warn: bool = False
    escalate_to: str | None = None
    # True when a warn-band decision was drawn for the sampled review queue.
    sampled_for_review: bool = False


@dataclass(frozen=True, slots=True)
class Principal:
    """Who asks: a name, a set of roles, or both (see the module docstring)."""

    name: str | None
    roles: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Principal:
        found = _PRINCIPAL.fullmatch(text)
        if found is None:
            raise ConfigError(f"principal {text!r} is not 'name', 'name@role' or 'role:<role>'")
        if found["role"] is not None:
            return cls(name=None, roles=frozenset({found["role"]}))
        return cls(name=found["name"], roles=frozenset({found["as"]} if found["as"] else ()))

    def __str__(self) -> str:
        role = ",".join(sorted(self.roles))
        if self.name is None:
            return f"role:{role}"
        return f"{self.name}@{role}" if role else self.name


def _pct(value: float) -> str:
    return f"{value:g} %"


def _allow(policy: Policy, rule: str, reason: str, **extra: Any) -> GateDecision:
    return GateDecision(True, rule, reason, policy.version, **extra)


def _deny(policy: Policy, rule: str, reason: str, **extra: Any) -> GateDecision:
    return GateDecision(False, rule, reason, policy.version, **extra)


def escalation_for(policy: Policy, kind: str) -> GateDecision:
    """Whether an event of ``kind`` (e.g. ``contract_merger``) needs a human, and whom."""
    for trigger in policy.escalation_triggers:
        if trigger.kind == kind:
            return _deny(
                policy,
                f"escalation_triggers.{kind}",
                f"{kind} requires {trigger.require}",
                escalate_to=trigger.require,
            )
    return _allow(policy, "escalation_triggers", f"no escalation trigger for {kind}")


def _escalate_to(policy: Policy, kind: str) -> str | None:
    return escalation_for(policy, kind).escalate_to


def check_discount(policy: Policy, tenant: str, pct: float, *, sample: float) -> GateDecision:
    """Gate a discount of ``pct`` percent for ``tenant``.

    Above the cap (the tenant's override if it has one, else ``max_pct``) it is denied and
    routed to the ``discount_over_policy`` trigger. From ``warn_pct`` up to the cap it is
    allowed with ``warn=True``, and sampled for review when ``sample`` (a caller-supplied
    deterministic draw in [0, 1)) falls below ``review_sample_rate``.
    """
    if not 0 <= sample < 1:
        raise ConfigError(f"check_discount: sample must be in [0, 1), got {sample}")
    rules = policy.discount
    if not math.isfinite(pct) or pct < 0:
        return _deny(policy, "discount.range", f"{_pct(pct)} is not a discount")
    override = rules.overrides.get(tenant)
    cap, rule = (
        (rules.max_pct, "discount.max_pct")
        if override is None
        else (override, "discount.overrides")
    )
    whose = "the policy cap" if override is None else f"{tenant}'s override cap"
    if pct > cap:
        return _deny(
            policy,
            rule,
            f"{_pct(pct)} is above {whose} of {_pct(cap)}",
            escalate_to=_escalate_to(policy, "discount_over_policy"),
        )
    if pct >= rules.warn_pct:
        sampled = sample < rules.review_sample_rate
        return _allow(
            policy,
            "discount.warn_pct",
            f"{_pct(pct)} is within {whose} of {_pct(cap)} but at or above the warn level of "
            f"{_pct(rules.warn_pct)}" + ("; sampled for review" if sampled else ""),
            warn=True,
            sampled_for_review=sampled,
        )
    return _allow(policy, rule, f"{_pct(pct)} is within {whose} of {_pct(cap)}")


def check_term(policy: Policy, months: int, is_merger: bool) -> GateDecision:
    """Whether a renewal of ``months`` may close without a human."""
    rules = policy.auto_close
    if months <= 0:
        return _deny(policy, "auto_close.term", f"a {months}-month term is not a term")
    if not rules.enabled:
        return _deny(policy, "auto_close.enabled", "auto-close is disabled")
    if is_merger and rules.require_human_for_mergers:
        return _deny(
            policy,
            "auto_close.require_human_for_mergers",
            "contract mergers need a human to close",
            escalate_to=_escalate_to(policy, "contract_merger"),
        )
    if months > rules.max_term_months:
        return _deny(
            policy,
            "auto_close.max_term_months",
            f"a {months}-month term is above the auto-close limit of "
            f"{rules.max_term_months} months",
        )
    return _allow(
        policy,
        "auto_close.max_term_months",
        f"a {months}-month term is within the auto-close limit of {rules.max_term_months} months",
    )


def check_throttle(
    policy: Policy,
    *,
    actions_last_minute: int,
    tenant_actions_last_hour: int,
    dollars_today: float,
    dollars: float = 0.0,
) -> GateDecision:
    """Whether one more action (costing ``dollars``) fits every throttle; tightest cap wins.

    The counts are of actions already done in the window, supplied by the caller, so the
    rule stays pure.
    """
    rules = policy.throttle
    amounts = (dollars_today, dollars)
    if (
        not all(math.isfinite(x) and x >= 0 for x in amounts)
        or min(actions_last_minute, tenant_actions_last_hour) < 0
    ):
        # Fail closed: a NaN would compare False against every cap and slip through.
        return _deny(policy, "throttle.range", "counts and dollar amounts must be >= 0")
    if actions_last_minute + 1 > rules.per_min:
        return _deny(
            policy,
            "throttle.per_min",
            f"{actions_last_minute} actions in the last minute; the cap is {rules.per_min}",
        )
    if tenant_actions_last_hour + 1 > rules.per_tenant_per_hour:
        return _deny(
            policy,
            "throttle.per_tenant_per_hour",
            f"{tenant_actions_last_hour} actions for this tenant in the last hour; "
            f"the cap is {rules.per_tenant_per_hour}",
        )
    if dollars_today + dollars > rules.daily_dollars_cap:
        return _deny(
            policy,
            "throttle.daily_dollars_cap",
            f"${dollars_today + dollars:.2f} today would pass the cap of "
            f"${rules.daily_dollars_cap:.2f}",
        )
    return _allow(policy, "throttle", "within every throttle")


def may_use_kill_switch(policy: Policy, principal: str | Principal) -> GateDecision:
    """Whether ``principal`` may pull the kill switch; a malformed principal is refused."""
    rule = "kill_switch.authorized_principals"
    if isinstance(principal, str):
        try:
            principal = Principal.parse(principal)
        except ConfigError as exc:
            return _deny(policy, rule, str(exc))
    for entry in policy.kill_switch.authorized_principals:
        allowed = Principal.parse(entry)
        if allowed.name is None and allowed.roles & principal.roles:
            return _allow(policy, rule, f"{principal} holds {entry}")
        if allowed.name is not None and allowed.name == principal.name:
            return _allow(policy, rule, f"{principal} is listed by name")
    return _deny(policy, rule, f"{principal} is not an authorized principal")


__all__ = [
    "AuditPolicy",
    "AutoClosePolicy",
    "DiscountPolicy",
    "EscalationTrigger",
    "GateDecision",
    "KillSwitchPolicy",
    "Policy",
    "Principal",
    "ThrottlePolicy",
    "check_discount",
    "check_term",
    "check_throttle",
    "escalation_for",
    "load_policy",
    "may_use_kill_switch",
    "policy_from_mapping",
]
