"""Merging sub-agent results by declared priority: a pure function, never a model call."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from threshold.ids import canonical_json


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two or more sub-agents gave different values for one field; ``winner`` is the child
    whose value was kept and ``rule`` the declared rule that chose it."""

    field: str
    values: tuple[tuple[str, Any], ...]  # (child, value), highest priority first
    winner: str
    rule: str

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "values": [list(v) for v in self.values],
                "winner": self.winner, "rule": self.rule}


def merge_by_priority(
    fields: Sequence[str],
    contributions: Mapping[str, Mapping[str, Any]],
    ranking: Callable[[str], tuple[Sequence[str], str]],
) -> tuple[dict[str, Any], list[Conflict]]:
    """For each field, keep the value of the highest-ranked child that gave one (not None).

    ``contributions`` maps a child to its result fields; ``ranking(field)`` gives the
    children in priority order for that field and the name of the rule that ordered them.
    The outcome depends only on the inputs, never on the order in which children finished.
    """
    merged: dict[str, Any] = {}
    conflicts: list[Conflict] = []
    for name in fields:
        order, rule = ranking(name)
        given = [(child, contributions[child][name]) for child in order
                 if child in contributions and contributions[child].get(name) is not None]
        if not given:
            continue
        merged[name] = given[0][1]
        if len({canonical_json(value) for _, value in given}) > 1:
            conflicts.append(Conflict(name, tuple(given), given[0][0], rule))
    return merged, conflicts
