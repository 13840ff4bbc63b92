"""Verdicts and verifiers: deterministic checks with a name and a version."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from threshold._record import record

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class Accept:
    """Every verifier of a boundary must return this for a proposal to be committed."""

    note: str = ""
    kind: Literal["accept"] = "accept"


@dataclass(frozen=True, slots=True)
class Reject:
    """A typed refusal. ``retryable`` says whether feeding it back to the proposer may help."""

    code: str
    message: str
    retryable: bool = True
    hint: str = ""
    field: str | None = None
    kind: Literal["reject"] = "reject"

    def feedback(self) -> str:
        """The line the proposer sees on a retry."""
        where = f" (field {self.field})" if self.field else ""
        hint = f" Hint: {self.hint}" if self.hint else ""
        return f"[{self.code}]{where} {self.message}.{hint}"


Verdict = Accept | Reject


@record
class VerifyContext:
    """What a verifier may look at besides the proposal: data, never live services."""

    run_id: str
    step: int
    boundary: str
    inputs: Mapping[str, Any]
    now: datetime
    attempt: int = 1
    facts: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Verifier(Protocol[T_contra]):
    """A deterministic check of (proposal, context). Sync or async; no side effects."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def check(self, value: T_contra, ctx: VerifyContext) -> Verdict | Awaitable[Verdict]: ...


class FunctionVerifier(Generic[T]):
    """A verifier made from a function by ``@verifier(name, version=...)``."""

    def __init__(
        self,
        fn: Callable[[T, VerifyContext], Verdict | Awaitable[Verdict]],
        name: str,
        version: str,
    ) -> None:
        self._fn, self._name, self._version = fn, name, version
        self.__doc__ = fn.__doc__

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._version

    def check(self, value: T, ctx: VerifyContext) -> Verdict | Awaitable[Verdict]:
        return self._fn(value, ctx)

    def __repr__(self) -> str:
        return f"verifier({self._name!r}, version={self._version!r})"


def verifier(
    name: str, *, version: str = "1"
) -> Callable[[Callable[[T, VerifyContext], Verdict | Awaitable[Verdict]]], FunctionVerifier[T]]:
    """Decorate ``fn(value, ctx) -> Accept | Reject`` into a named, versioned verifier."""

    def wrap(
        fn: Callable[[T, VerifyContext], Verdict | Awaitable[Verdict]],
    ) -> FunctionVerifier[T]:
        return FunctionVerifier(fn, name, version)

    return wrap


_VERDICT_TYPES = (Accept, Reject)


def start_verifier(check: Verifier[T], value: T, ctx: VerifyContext
                   ) -> Verdict | Awaitable[Verdict]:
    """Run one verifier up to its first await: the verdict of a synchronous verifier (the
    common case, with no coroutine to schedule), else what ``finish_verifier`` awaits. An
    exception inside it is a reject, never a crash or an accept."""
    try:
        outcome = check.check(value, ctx)
    except Exception as exc:  # a buggy verifier must fail closed
        return _raised(check, exc)
    if isinstance(outcome, _VERDICT_TYPES) or inspect.isawaitable(outcome):
        return outcome
    return _not_a_verdict(check, outcome)


async def finish_verifier(check: Verifier[T], pending: Awaitable[Verdict]) -> Verdict:
    """Await an asynchronous verifier that ``start_verifier`` started."""
    try:
        outcome = await pending
    except Exception as exc:
        return _raised(check, exc)
    if not isinstance(outcome, _VERDICT_TYPES):
        return _not_a_verdict(check, outcome)
    return outcome


async def run_verifier(check: Verifier[T], value: T, ctx: VerifyContext) -> Verdict:
    """Run one verifier to its verdict; an exception inside it is a reject."""
    outcome = start_verifier(check, value, ctx)
    if isinstance(outcome, _VERDICT_TYPES):
        return outcome
    return await finish_verifier(check, outcome)


def _raised(check: Verifier[Any], exc: Exception) -> Reject:
    return Reject(code="verifier.error",
                  message=f"verifier {check.name} raised {type(exc).__name__}: {exc}",
                  retryable=False)


def _not_a_verdict(check: Verifier[Any], outcome: object) -> Reject:
    return Reject(code="verifier.error",
                  message=f"verifier {check.name} returned {type(outcome).__name__}, "
                          "not a verdict",
                  retryable=False)
