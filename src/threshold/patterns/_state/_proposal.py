"""The LLM's narrow proposal (one ``to_state`` and its payload) and the verifier that
checks it is legal from the state the row was read in."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar, cast

from pydantic import BaseModel, Field, create_model

from threshold.boundary import Reject, Verdict, VerifyContext

P = TypeVar("P")

FACTS_KEY = "state_row"  # where ``StateMachine.facts(row)`` puts the row a verifier checks


class TransitionProposal(BaseModel, Generic[P]):
    """One proposed move: the target state, its payload and a short reason.

    ``StateMachine.proposal_type`` narrows ``to_state`` to the machine's declared states,
    so the schema tells the model which names exist; which of them are legal *now* is the
    verifier's business."""

    to_state: str
    payload: P
    reason: str = Field(default="", max_length=500)


def proposal_type(machine: str, states: Sequence[str],
                  payload_type: Any) -> type[TransitionProposal[Any]]:
    """``TransitionProposal[payload_type]`` with ``to_state`` restricted to ``states``."""
    base: Any = TransitionProposal[payload_type]
    name = "".join(p.capitalize() for p in _words(machine)) + "Transition"
    # Typed as Any: pydantic's stubs for a dynamic Literal differ between 2.13 and 2.14.
    to_state: Any = (Literal[tuple(states)], ...)
    model = create_model(name, __base__=base, to_state=to_state)
    return cast(type[TransitionProposal[Any]], model)


def _words(name: str) -> list[str]:
    return [w for w in "".join(c if c.isalnum() else " " for c in name).split() if w]


class LegalTransition:
    """Deterministic: is ``to_state`` allowed from the state the row had at the version
    read? The row comes from the crossing's facts (``StateMachine.facts(row)``); a crossing
    without them is refused, never waved through."""

    def __init__(self, machine: str, version: str,
                 check: Callable[[str, str], Verdict]) -> None:
        self._machine, self._version, self._check = machine, version, check

    @property
    def name(self) -> str:
        return "state.legal_transition"

    @property
    def version(self) -> str:
        return f"{self._machine}@{self._version}"

    def check(self, value: TransitionProposal[Any], ctx: VerifyContext) -> Verdict:
        row = ctx.facts.get(FACTS_KEY)
        if not isinstance(row, Mapping) or row.get("machine") != self._machine:
            return Reject("state.no_row", f"no {self._machine} row was read for this "
                          "crossing (pass facts=machine.facts(row))", retryable=False)
        return self._check(str(row["state"]), value.to_state)
