"""Plumbing of the store contract: the target, the check registry, records and assertions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from threshold.clock import DEFAULT_EPOCH, to_iso
from threshold.store import RunRecord, Store


class ContractViolation(AssertionError):
    """A store broke a promise of the contract."""


@dataclass
class ContractTarget:
    """The store under test, on a fresh database, and optionally a way to open another
    handle on that same database (a second connection, as a second worker would have)."""

    store: Store
    reopen: Callable[[], Store] | None = None


Check = Callable[[ContractTarget], Awaitable[None]]
CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    """Register ``check_<name>`` under ``<name>``."""
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


async def run_contract(make_target: Callable[[], Awaitable[ContractTarget]],
                       *, only: list[str] | None = None) -> None:
    """Run every check (or ``only`` these) each on a fresh target from ``make_target``;
    raise one ``ContractViolation`` listing every failed check."""
    failures = []
    for name in only or sorted(CHECKS):
        target = await make_target()
        try:
            await CHECKS[name](target)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
        finally:
            await target.store.close()
    if failures:
        raise ContractViolation(f"{len(failures)} contract check(s) failed:\n"
                                + "\n".join(failures))


@asynccontextmanager
async def handles(target: ContractTarget, n: int) -> AsyncIterator[list[Store]]:
    """``n`` handles on the target's database: the store plus ``n - 1`` reopened ones (or
    the store again when the backend cannot reopen)."""
    extra = [target.reopen() for _ in range(n - 1)] if target.reopen else []
    try:
        yield [target.store, *extra] if extra else [target.store] * n
    finally:
        for store in extra:
            await store.close()


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ContractViolation(message)


def equal(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise ContractViolation(f"{what}: expected {expected!r}, found {actual!r}")


async def raises(awaitable: Awaitable[Any], error: type[BaseException], what: str) -> None:
    try:
        await awaitable
    except error:
        return
    raise ContractViolation(f"{what}: expected {error.__name__}, nothing was raised")


def at(seconds: float) -> str:
    """A journal timestamp ``seconds`` after the contract's epoch."""
    return to_iso(DEFAULT_EPOCH + timedelta(seconds=seconds))


def run(run_id: str, *, status: str = "ready", created: float = 0, agent: str = "agent",
        **fields: Any) -> RunRecord:
    stamp = at(created)
    return RunRecord(run_id, agent, "1", status, fields.pop("input", {"n": 1}),
                     fields.pop("seed", 7), stamp, stamp, **fields)
