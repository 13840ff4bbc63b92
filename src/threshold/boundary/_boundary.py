"""The boundary definition: propose -> verify -> commit | reject, for one class of action."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from threshold.boundary._policy import RejectPolicy, TransportPolicy
from threshold.boundary._prompt import Prompt
from threshold.boundary._schema import SCHEMA_VERIFIER, SCHEMA_VERIFIER_VERSION
from threshold.boundary._verdict import Verifier
from threshold.effects import EffectContext
from threshold.errors import ConfigError
from threshold.models._protocol import Sampling

M = TypeVar("M", bound=BaseModel)

CommitFn = Callable[[M, EffectContext], Awaitable[Any]]


class Boundary(Generic[M]):
    """The four-part contract for one class of action.

    ``commit`` runs at most once per idempotency key, only after every verifier (the
    built-in schema check first) accepted the exact proposal being committed. A boundary
    without ``commit`` records a decision and performs nothing.
    """

    def __init__(
        self,
        name: str,
        *,
        output: type[M],
        prompt: Prompt,
        verifiers: Sequence[Verifier[M]] = (),
        commit: CommitFn[M] | None = None,
        action: str | None = None,
        on_reject: RejectPolicy | None = None,
        transport: TransportPolicy | None = None,
        sampling: Sampling | None = None,
        version: str = "1",
    ) -> None:
        names = [v.name for v in verifiers]
        if SCHEMA_VERIFIER in names or len(set(names)) != len(names):
            raise ConfigError(f"boundary {name}: verifier names must be unique and not "
                              f"{SCHEMA_VERIFIER!r}: {names}")
        self.name = name
        self.output = output
        self.prompt = prompt
        self.verifiers = tuple(verifiers)
        self.commit = commit
        self.action = action or name
        self.on_reject = on_reject or RejectPolicy()
        self.transport = transport or TransportPolicy()
        self.sampling = sampling or Sampling()
        self.version = version

    @property
    def verifier_ids(self) -> list[tuple[str, str]]:
        """Every verifier that must accept, as (name, version), schema first."""
        return [(SCHEMA_VERIFIER, SCHEMA_VERIFIER_VERSION)] + [
            (v.name, v.version) for v in self.verifiers
        ]

    def __repr__(self) -> str:
        return f"Boundary({self.name!r}, output={self.output.__name__})"
