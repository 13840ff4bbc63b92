"""P4 throttles: durable caps on side effects, counted in the store, tightest cap first.

Each cap is a fixed window aligned to the injected clock (UTC) and stored as one versioned
record, ``throttle/<name>/<scope>/<window start>``:

- ``per_min``: every effect of this throttle in one minute;
- ``tenant/<t>/per_hour``: one tenant's effects in one hour;
- ``dollars``: the dollars of this throttle's effects in one day.

A record holds the idempotency keys it counted, so counting is exact and survives restarts,
new store objects and other workers: capacity is taken by compare-and-swap against the
version the decision was made on, and taking it twice for one key is a no-op.

When capacity is consumed: at commit, inside the effect, never at verify time
(``guard_commit``/``guard_effect``). The windows are those of the effect's recorded intent
time, so a resumed commit counts in the windows it first counted in. Consequences:

- a crossing rejected by any verifier never reaches the commit and consumes nothing;
- an effect that raises gives its capacity back (it reported that it did not happen);
- a crash anywhere in between is resumed with the same key: at most once, not twice;
- the one leak accepted: a run stopped for good after capacity was taken and before its
  effect was recorded (killed mid-effect, or crashed and never resumed) keeps one unit in
  each of its windows until they end. The effect may have happened, so counting it is the
  safe side for a blast-radius cap, and it expires with the window.

``ThrottleGate`` is the budget gate: a read-only look, before the side effect, that turns a
full window into a typed reject (with rule and policy version) instead of a failed effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from threshold.boundary import CommitFn, Verdict, VerifyContext
from threshold.clock import Clock, SystemClock, from_iso, to_iso
from threshold.effects import EffectContext
from threshold.errors import StoreError, ThrottleExceeded
from threshold.patterns.gate import fact, to_verdict
from threshold.patterns.policy import GateDecision, Policy, check_throttle
from threshold.store import EventRecord, Store, VersionedRecord

M = TypeVar("M", bound=BaseModel)

NAMESPACE = "throttle"
MAX_CAS_ROUNDS = 64  # conflicting writers, not retries of one failure; each round re-reads

Extract = Callable[[M, EffectContext], Any] | str | None


@dataclass(frozen=True, slots=True)
class Window:
    scope: str  # "per_min" | "per_tenant_per_hour" | "dollars"
    key: str


def _keys(row: VersionedRecord | None) -> dict[str, float]:
    return {} if row is None else dict(row.value["keys"])


class Throttle:
    """The policy's ``throttle`` caps for one class of side effects, named ``name``."""

    def __init__(self, store: Store, policy: Policy, *, name: str = "effects",
                 clock: Clock | None = None) -> None:
        self.store, self.policy, self.name = store, policy, name
        self.clock: Clock = clock or SystemClock()

    def windows(self, at: datetime, tenant: str | None, dollars: float) -> list[Window]:
        """The windows an effect at ``at`` counts in (no tenant: no tenant window; no
        dollars: no dollar window, since it cannot move the sum)."""
        t = at.astimezone(UTC)
        found = [Window("per_min", f"{self.name}/per_min/{t:%Y-%m-%dT%H:%MZ}")]
        if tenant:
            found.append(Window("per_tenant_per_hour",
                                f"{self.name}/tenant/{tenant}/per_hour/{t:%Y-%m-%dT%HZ}"))
        if dollars:
            found.append(Window("dollars", f"{self.name}/dollars/{t:%Y-%m-%d}"))
        return found

    async def _read(self, windows: list[Window]) -> dict[str, VersionedRecord | None]:
        return {w.scope: await self.store.get_record(NAMESPACE, w.key) for w in windows}

    def _decide(self, rows: dict[str, VersionedRecord | None], key: str | None,
                dollars: float) -> GateDecision:
        """The policy's decision for one more effect, not counting ``key`` itself."""

        def others(scope: str) -> dict[str, float]:
            return {k: v for k, v in _keys(rows.get(scope)).items() if k != key}

        return check_throttle(
            self.policy, actions_last_minute=len(others("per_min")),
            tenant_actions_last_hour=len(others("per_tenant_per_hour")),
            dollars_today=sum(others("dollars").values()), dollars=dollars)

    async def check(self, *, at: datetime | None = None, tenant: str | None = None,
                    dollars: float = 0.0) -> GateDecision:
        """Would one more effect fit every cap now? Reads only; consumes nothing."""
        at = at or self.clock.now()
        return self._decide(await self._read(self.windows(at, tenant, dollars)), None, dollars)

    async def consume(self, key: str, *, at: datetime, tenant: str | None = None,
                      dollars: float = 0.0, run_id: str | None = None) -> GateDecision:
        """Count the effect ``key`` in every window, or raise ``ThrottleExceeded`` having
        counted it nowhere. Idempotent per key."""
        windows = self.windows(at, tenant, dollars)
        for _ in range(MAX_CAS_ROUNDS):
            rows = await self._read(windows)
            missing = [w for w in windows if key not in _keys(rows[w.scope])]
            if not missing:
                return GateDecision(True, "throttle", f"{key} is already counted",
                                    self.policy.version)
            decision = self._decide(rows, key, dollars)
            if not decision.allowed:
                # Undo what an interrupted earlier attempt for this key may have taken.
                await self._drop(key, windows, run_id, "throttle.refused", decision)
                raise ThrottleExceeded(decision.rule, decision.reason, decision.policy_version)
            if await self._add(key, dollars, missing, rows, run_id, decision):
                return decision
        raise StoreError(f"throttle {self.name}: {MAX_CAS_ROUNDS} write conflicts in a row")

    async def release(self, key: str, *, at: datetime, tenant: str | None = None,
                      dollars: float = 0.0, run_id: str | None = None) -> None:
        """Give back what ``key`` consumed (its effect did not happen). Idempotent."""
        await self._drop(key, self.windows(at, tenant, dollars), run_id, "throttle.released")

    async def usage(self, *, at: datetime | None = None,
                    tenant: str | None = None) -> dict[str, float]:
        """What the windows around ``at`` hold: counts, and dollars for the day."""
        rows = await self._read(self.windows(at or self.clock.now(), tenant, 1.0))
        return {"per_min": len(_keys(rows["per_min"])),
                "per_tenant_per_hour": len(_keys(rows.get("per_tenant_per_hour"))),
                "dollars": sum(_keys(rows["dollars"]).values())}

    async def _add(self, key: str, dollars: float, missing: list[Window],
                   rows: dict[str, VersionedRecord | None], run_id: str | None,
                   decision: GateDecision) -> bool:
        now = to_iso(self.clock.now())
        for index, window in enumerate(missing):
            row = rows[window.scope]
            keys = {**_keys(row), key: dollars}
            event = None
            if index == len(missing) - 1:  # journaled with the write that completes the count
                event = EventRecord(run_id, "throttle.consumed", {
                    "throttle": self.name, "key": key, "dollars": dollars,
                    "windows": [w.key for w in missing], "rule": decision.rule,
                    "policy_version": decision.policy_version}, now)
            written = await self.store.cas_record(
                NAMESPACE, window.key, expected_version=0 if row is None else row.version,
                value={"keys": keys, "count": len(keys), "dollars": sum(keys.values())},
                now=now, event=event)
            if written is None:
                return False  # someone counted first: re-read and decide again
        return True

    async def _drop(self, key: str, windows: list[Window], run_id: str | None, kind: str,
                    decision: GateDecision | None = None) -> None:
        now = to_iso(self.clock.now())
        dropped: list[str] = []
        for window in windows:
            for _ in range(MAX_CAS_ROUNDS):
                row = await self.store.get_record(NAMESPACE, window.key)
                keys = _keys(row)
                if row is None or key not in keys:
                    break
                del keys[key]
                if await self.store.cas_record(
                        NAMESPACE, window.key, expected_version=row.version,
                        value={"keys": keys, "count": len(keys), "dollars": sum(keys.values())},
                        now=now) is not None:
                    dropped.append(window.key)
                    break
            else:
                raise StoreError(f"throttle {self.name}: {MAX_CAS_ROUNDS} write conflicts")
        data: dict[str, Any] = {"throttle": self.name, "key": key, "windows": dropped}
        if decision is not None:
            data.update(rule=decision.rule, reason=decision.reason,
                        policy_version=decision.policy_version)
        await self.store.append_event(EventRecord(run_id, kind, data, now))

    # wiring into boundaries and effects ----------------------------------------------------
    def gate(self, *, tenant_fact: str = "tenant", dollars_field: str | None = None,
             name: str = "policy.throttle") -> ThrottleGate:
        """The budget gate for this throttle, to put in a boundary's verifiers."""
        return ThrottleGate(self, tenant_fact=tenant_fact, dollars_field=dollars_field,
                            name=name)

    def guard_commit(self, commit: CommitFn[M], *, tenant: Extract[M] = None,
                     dollars: Extract[M] = None) -> CommitFn[M]:
        """``commit`` that first takes capacity for its effect key (see the module notes).
        ``tenant``/``dollars``: a field name of the proposal, or ``fn(value, effect_ctx)``."""

        async def guarded(value: M, ectx: EffectContext) -> Any:
            return await self._guarded(ectx, _extract(tenant, value, ectx),
                                       _extract(dollars, value, ectx), lambda: commit(value, ectx))

        return guarded

    def guard_effect(self, fn: Callable[[EffectContext], Awaitable[Any]], *,
                     tenant: str | None = None,
                     dollars: float = 0.0) -> Callable[[EffectContext], Awaitable[Any]]:
        """The same guard for ``ctx.effect(action, fn)``."""

        async def guarded(ectx: EffectContext) -> Any:
            return await self._guarded(ectx, tenant, dollars, lambda: fn(ectx))

        return guarded

    async def _guarded(self, ectx: EffectContext, tenant: Any, dollars: Any,
                       perform: Callable[[], Awaitable[Any]]) -> Any:
        intent = await self.store.get_effect(ectx.key)
        at = ectx.now if intent is None else from_iso(intent.intent_at)
        tenant_name = None if tenant is None else str(tenant)
        amount = 0.0 if dollars is None else float(dollars)
        await self.consume(ectx.key, at=at, tenant=tenant_name, dollars=amount,
                           run_id=ectx.run_id)
        try:
            return await perform()
        except Exception:
            await self.release(ectx.key, at=at, tenant=tenant_name, dollars=amount,
                               run_id=ectx.run_id)
            raise


def _extract(how: Extract[M], value: M, ectx: EffectContext) -> Any:
    if how is None:
        return None
    if isinstance(how, str):
        return getattr(value, how)
    return how(value, ectx)


class ThrottleGate:
    """The budget gate: refuses, before the side effect, what the throttle would refuse at
    commit. Reads only; the commit's guard is what counts (and settles races)."""

    def __init__(self, throttle: Throttle, *, tenant_fact: str = "tenant",
                 dollars_field: str | None = None, name: str = "policy.throttle") -> None:
        self.throttle, self._tenant_fact, self._dollars = throttle, tenant_fact, dollars_field
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self.throttle.policy.version

    async def check(self, value: BaseModel, ctx: VerifyContext) -> Verdict:
        tenant = fact(ctx, value, self._tenant_fact)
        dollars = 0.0 if self._dollars is None else float(getattr(value, self._dollars))
        decision = await self.throttle.check(at=ctx.now, tenant=None if tenant is None
                                             else str(tenant), dollars=dollars)
        # Proposing again does not free capacity: a full window is not the model's to fix.
        return to_verdict(decision, retryable=False)
