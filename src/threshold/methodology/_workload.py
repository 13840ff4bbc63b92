"""A workload description: what an agent must do, in the terms the five-step method asks about.

Workloads are YAML files. Loading never lets a pydantic or YAML exception escape: every
problem becomes a ``WorkloadError`` that names the file and the field.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from threshold.errors import ConfigError, NotFoundError

# --- durations -------------------------------------------------------------------------

_UNIT_SECONDS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "wk": 604800, "week": 604800, "weeks": 604800,
    "mo": 2592000, "month": 2592000, "months": 2592000,
    "y": 31536000, "yr": 31536000, "year": 31536000, "years": 31536000,
}  # fmt: skip

# A bare order of magnitude ("days") stands for a typical value of that order.
_ORDER_OF_MAGNITUDE = {
    "seconds": timedelta(seconds=30),
    "minutes": timedelta(minutes=30),
    "hours": timedelta(hours=8),
    "days": timedelta(days=7),
    "weeks": timedelta(weeks=4),
    "months": timedelta(days=90),
}

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_DURATION_HINT = "a duration like '30s', '15m', '8h', '90d', '1h30m', or one of " + ", ".join(
    _ORDER_OF_MAGNITUDE
)


def parse_duration(value: object) -> timedelta:
    """Read ``90d``, ``1h30m``, ``7 years``, a number of seconds, or an order of magnitude."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected {_DURATION_HINT}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"expected {_DURATION_HINT}")
    text = value.strip().lower()
    if text in _ORDER_OF_MAGNITUDE:
        return _ORDER_OF_MAGNITUDE[text]
    parts = _PART.findall(text)
    if not parts or _PART.sub("", text).strip():
        raise ValueError(f"{value!r} is not {_DURATION_HINT}")
    seconds = 0.0
    for number, unit in parts:
        if unit not in _UNIT_SECONDS:
            raise ValueError(f"{value!r}: unknown unit {unit!r}; expected {_DURATION_HINT}")
        seconds += float(number) * _UNIT_SECONDS[unit]
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact form in the units ``parse_duration`` reads: ``90d``, ``1h30m``."""
    remaining = int(value.total_seconds())
    if remaining == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]

# --- the model ---------------------------------------------------------------------------

Reversibility = Literal["reversible", "compensable", "irreversible"]
"""reversible: undo is free (edit a page). compensable: a counter-action undoes it (a reversing
entry). irreversible: nothing undoes it (money sent, an email read, a database failed over)."""

Autonomy = Literal["suggest", "supervised", "bounded", "full"]
"""suggest: a person performs every action. supervised: the agent acts, a person approves what
matters. bounded: the agent acts alone inside policy caps. full: the agent acts without review."""

Consistency = Literal["eventual", "strong"]
"""strong: two concurrent writers to the same entity must never both win."""

Availability = Literal["none", "business_hours", "on_call", "always"]
Fallback = Literal["deny", "approve", "approve_with_cap"]


class FieldProblem(ValueError):
    """A cross-field check failed; ``field`` is the dotted path the user should fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class BlastRadius(_Record):
    """How much one commit can hurt: money at risk, entities touched, and in words."""

    dollars: float | None = Field(default=None, ge=0)
    units: int | None = Field(default=None, ge=0)
    scope: str = ""


class SideEffect(_Record):
    """An action with consequences outside the agent. ``reversible: bool`` is accepted too."""

    name: str = Field(min_length=1)
    reversibility: Reversibility
    blast_radius: BlastRadius = BlastRadius()
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _accept_reversible_flag(cls, data: Any) -> Any:
        if isinstance(data, dict) and "reversible" in data:
            data = dict(data)
            flag = data.pop("reversible")
            if "reversibility" in data:
                raise FieldProblem("reversible", "give reversible or reversibility, not both")
            if not isinstance(flag, bool):
                raise FieldProblem("reversible", f"expected true or false, got {flag!r}")
            data["reversibility"] = "reversible" if flag else "irreversible"
        return data

    @field_validator("blast_radius", mode="before")
    @classmethod
    def _accept_bare_dollars(cls, value: Any) -> Any:
        # ``blast_radius: 5000`` reads as dollars, the common case.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"dollars": value}
        return value


class BoundarySpec(_Record):
    """One LLM-to-action crossing as described; any part may be missing (that is the point)."""

    name: str = Field(min_length=1)
    proposer: str | None = None
    verifiers: tuple[str, ...] = ()
    commit: str | None = None
    reject: str | None = None
    effect: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "verifier" in data:
            if "verifiers" in data:
                raise FieldProblem("verifier", "give verifier or verifiers, not both")
            single = data.pop("verifier")
            data["verifiers"] = [] if single is None else [single]
        if data.get("verifiers") is None:
            data["verifiers"] = []
        # An empty string in YAML means "not there"; treat it the same as a missing key.
        for key in ("proposer", "commit", "reject", "effect"):
            if isinstance(data.get(key), str) and not data[key].strip():
                data[key] = None
        return data

    @field_validator("verifiers")
    @classmethod
    def _no_blank_verifiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not v for v in value):
            raise ValueError("a verifier name cannot be empty")
        return value


class Humans(_Record):
    """Who can decide, how fast, and what happens when nobody does."""

    availability: Availability = "none"
    approval_sla: Duration | None = None
    roles: tuple[str, ...] = ()
    fallback: Fallback | None = None

    @model_validator(mode="after")
    def _sla_needs_people(self) -> Humans:
        if self.approval_sla is not None and self.availability == "none":
            raise FieldProblem(
                "approval_sla", "an approval SLA is set but availability is 'none'"
            )
        return self


class Audit(_Record):
    retention: Duration | None = None
    replay_required: bool = False


class Workload(_Record):
    """Everything the five steps need to know about an agent's job."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    horizon: Duration
    autonomy: Autonomy = "supervised"
    side_effects: tuple[SideEffect, ...] = ()
    transactions: tuple[tuple[str, ...], ...] = ()
    fan_out: int | None = Field(default=None, ge=1)
    delegation: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    humans: Humans = Humans()
    audit: Audit = Audit()
    latency_budget: Duration | None = None
    consistency: Consistency = "eventual"
    boundaries: tuple[BoundarySpec, ...] = ()

    def effect(self, name: str) -> SideEffect | None:
        return next((e for e in self.side_effects if e.name == name), None)

    @model_validator(mode="after")
    def _references_resolve(self) -> Workload:
        _require_unique("side_effects", [e.name for e in self.side_effects])
        _require_unique("boundaries", [b.name for b in self.boundaries])
        known = {e.name for e in self.side_effects}
        for i, boundary in enumerate(self.boundaries):
            if boundary.effect is not None and boundary.effect not in known:
                raise FieldProblem(
                    f"boundaries[{i}].effect",
                    f"{boundary.effect!r} is not a side effect; known: {_listing(known)}",
                )
        for i, group in enumerate(self.transactions):
            if len(group) < 2:
                raise FieldProblem(f"transactions[{i}]", "a transaction needs two effects")
            for name in group:
                if name not in known:
                    raise FieldProblem(
                        f"transactions[{i}]",
                        f"{name!r} is not a side effect; known: {_listing(known)}",
                    )
        return self


def _require_unique(field: str, names: list[str]) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise FieldProblem(f"{field}[{i}].name", f"duplicate name {name!r}")
        seen.add(name)


def _listing(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none"


# --- loading -----------------------------------------------------------------------------


class WorkloadError(ConfigError):
    """A workload file cannot be read or is invalid. ``field`` is a dotted path or None."""

    def __init__(self, source: str, field: str | None, detail: str) -> None:
        where = f" field {field}:" if field else ""
        super().__init__(f"{source}:{where} {detail}")
        self.source, self.field, self.detail = source, field, detail


def parse_workload(text: str, source: str) -> Workload:
    """Parse YAML text; ``source`` names the file in every error."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkloadError(source, None, f"invalid YAML: {at}{problem}") from None
    if not isinstance(raw, dict):
        raise WorkloadError(source, None, "expected a mapping of workload fields at the top")
    try:
        return Workload.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field, detail = _describe(first, raw)
        more = len(exc.errors()) - 1
        if more:
            detail += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise WorkloadError(source, field, detail) from None


def _describe(error: Any, raw: Any) -> tuple[str | None, str]:
    """Turn one pydantic error into (field path, message), naming list items by their name."""
    loc: tuple[str | int, ...] = tuple(error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, FieldProblem):
        parent = _field_path(loc, raw)
        return (f"{parent}.{cause.field}" if parent else cause.field), str(cause)
    message = str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling)"
    elif error["type"] == "missing":
        message = "required field is missing"
    return _field_path(loc, raw) or None, message


def _field_path(loc: tuple[str | int, ...], raw: Any) -> str:
    path, node = "", raw
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            name = node.get("name") if isinstance(node, dict) else None
            if isinstance(name, str):
                path += f"({name})"
        else:
            path += f".{part}" if path else part
            node = node.get(part) if isinstance(node, dict) else None
    return path


def load_workload(path: str | os.PathLike[str]) -> Workload:
    """Load a workload YAML file."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(source, None, f"cannot read: {exc}") from None
    return parse_workload(text, source)


# --- shipped workloads -------------------------------------------------------------------

_BUILTIN_PACKAGE = "threshold.methodology"
_BUILTIN_DIR = "workloads"


def builtin_names() -> tuple[str, ...]:
    """The names of the workloads shipped with the package, sorted."""
    folder = resources.files(_BUILTIN_PACKAGE).joinpath(_BUILTIN_DIR)
    return tuple(
        sorted(item.name[: -len(".yaml")] for item in folder.iterdir()
               if item.name.endswith(".yaml"))
    )


def load_builtin(name: str) -> Workload:
    """Load a shipped workload by name (``contract-renewal``, ...)."""
    names = builtin_names()
    if name not in names:
        raise NotFoundError(f"no built-in workload {name!r}; built-in: {', '.join(names)}")
    resource = resources.files(_BUILTIN_PACKAGE).joinpath(_BUILTIN_DIR).joinpath(f"{name}.yaml")
    return parse_workload(resource.read_text(encoding="utf-8"),
                          f"{_BUILTIN_PACKAGE}/{_BUILTIN_DIR}/{name}.yaml")


def builtin_workloads() -> tuple[Workload, ...]:
    """Every shipped workload, in name order."""
    return tuple(load_builtin(name) for name in builtin_names())
