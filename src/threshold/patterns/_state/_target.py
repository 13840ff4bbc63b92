"""Where a state machine operation runs (inside a run, on a runtime, on a bare store) and
how a move's outcome is journaled inside a run."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from threshold.clock import Clock, SystemClock
from threshold.patterns._state._row import StateRow
from threshold.patterns._state._write import Illegal, Outcome, Stale
from threshold.runtime import RunContext, Runtime, principal_roles
from threshold.store import Store

Target = RunContext | Runtime | Store


def store_of(target: Target) -> Store:
    if isinstance(target, RunContext):
        return target.runtime.store
    return target.store if isinstance(target, Runtime) else target


def clock_of(target: Target) -> Clock:
    if isinstance(target, RunContext):
        return target.runtime.clock
    return target.clock if isinstance(target, Runtime) else SystemClock()


def has_role(principal: str, role: str) -> bool:
    roles = principal_roles(principal)
    return role in roles or "admin" in roles


def payload_of(payload: Any) -> dict[str, Any]:
    if payload is None:
        return {}
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    return dict(payload)


def encode(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Stale):
        return {"stale": [outcome.expected, outcome.actual]}
    if isinstance(outcome, Illegal):
        return {"illegal": [outcome.from_state, outcome.allowed]}
    return {"row": outcome.to_json()}


def decode(recorded: dict[str, Any]) -> Outcome:
    if "stale" in recorded:
        return Stale(*recorded["stale"])
    if "illegal" in recorded:
        return Illegal(*recorded["illegal"])
    return StateRow.from_json(recorded["row"])
