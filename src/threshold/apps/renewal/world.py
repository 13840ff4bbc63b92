"""Everything the renewal agent touches outside its own journal: the policy, the CRM, the
mail server, the state rows, the product topic, and the simulated customers.

The agent function stays a readable script; this module holds its effects, each keyed by
its idempotency key so a crash can repeat it without doubling it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from threshold.apps.renewal.crm import Crm
from threshold.apps.renewal.customers import Customer
from threshold.apps.renewal.mail import Mailer
from threshold.apps.renewal.proposals import CloseTerms, Offer, SignalReport
from threshold.apps.renewal.response import CustomerResponseModel
from threshold.boundary import Boundary
from threshold.clock import to_iso
from threshold.effects import EffectContext
from threshold.errors import SagaAborted
from threshold.ids import derive_seed
from threshold.patterns.delegation import Orchestrator, RetryBudget, SubAgent, Substitute
from threshold.patterns.policy import Policy
from threshold.patterns.saga import Saga
from threshold.runtime import RunContext, Runtime
from threshold.store import EventRecord

EOL_TOPIC = "product.eol"
ROWS = "state"  # the namespace of the renewal rows (P5)


class SignalTask(BaseModel):
    source: str
    customer_id: str
    tenure_months: int
    internet_service: str
    payment_method: str
    tech_support: str


class UsageTask(SignalTask): ...


class NetworkTask(SignalTask): ...


class BillingTask(SignalTask): ...


class SupportTask(SignalTask): ...


TASKS: dict[str, type[SignalTask]] = {"usage": UsageTask, "network": NetworkTask,
                                      "billing": BillingTask, "support": SupportTask}

# The row's legal moves (P5). Pauses such as human_required are ordinary states.
TRANSITIONS: dict[str, set[str]] = {
    "init": {"window_open"},
    "window_open": {"scoring"},
    "scoring": {"offer_sent", "human_required", "closed", "scoring"},
    "offer_sent": {"closed", "human_required", "expired", "offer_sent"},
    "human_required": {"offer_sent", "closed"},
    "expired": {"closed"},
    "closed": set(),
}


class RenewalRows:
    """One versioned row per customer, moved by compare-and-swap inside an effect, so a
    resumed run never applies a transition twice and a racing writer loses cleanly."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def transition(self, ctx: RunContext, customer_id: str, to_state: str,
                         payload: Mapping[str, Any]) -> dict[str, Any]:
        async def move(effect: EffectContext) -> dict[str, Any]:
            store = self.runtime.store
            for _ in range(5):  # re-read and retry on a stale write
                row = await store.get_record(ROWS, customer_id)
                state = "init" if row is None else row.value["state"]
                version = 0 if row is None else row.version
                if row is not None and row.value.get("last_key") == effect.key:
                    return {"state": state, "version": version}  # applied before a crash
                owner = None if row is None else row.value.get("run_id")
                if to_state == "window_open" and owner not in (None, ctx.run_id):
                    return {"refused": f"window already opened by {owner}"}
                if to_state not in TRANSITIONS[state]:
                    return {"refused": f"illegal transition {state} -> {to_state}"}
                value = {**(row.value if row else {}), **payload, "state": to_state,
                         "run_id": ctx.run_id, "last_key": effect.key}
                event = EventRecord(ctx.run_id, "state.transition", {
                    "row": customer_id, "from": state, "to": to_state,
                    "version": version + 1}, to_iso(effect.now))
                written = await store.cas_record(ROWS, customer_id, expected_version=version,
                                                 value=value, now=to_iso(effect.now),
                                                 event=event)
                if written is not None:
                    return {"state": to_state, "version": written.version}
                await store.append_event(EventRecord(ctx.run_id, "state.stale_write", {
                    "row": customer_id, "expected": version}, to_iso(effect.now)))
            return {"refused": "row kept moving"}

        result: dict[str, Any] = await ctx.effect(f"state:{to_state}", move)
        return result

    async def absorb(self, ctx: RunContext, customer_id: str,
                     payload: Mapping[str, Any]) -> dict[str, Any]:
        """Fold an event into the row without changing its state (a version bump)."""
        row = await ctx.step("state.read", self._state_of, customer_id)
        return await self.transition(ctx, customer_id, str(row), payload)

    async def _state_of(self, customer_id: str) -> str:
        row = await self.runtime.store.get_record(ROWS, customer_id)
        return "init" if row is None else str(row.value["state"])


@dataclass
class World:
    runtime: Runtime
    policy: Policy
    crm: Crm
    mailer: Mailer | None
    seed: int
    boundaries: dict[str, Boundary[Any]] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    saga_failure_rate: float = 0.03

    def __post_init__(self) -> None:
        self.rows = RenewalRows(self.runtime)
        self.responses = CustomerResponseModel(self.seed)

    # P1: signals ------------------------------------------------------------------------
    def orchestrator(self) -> Orchestrator[SignalReport]:
        signal = self.boundaries["signal"]
        neutral = {"source": "usage", "risk": 50, "finding": "no signal: neutral default"}
        agents = [SubAgent(name, signal, timeout=30.0, on_missing=Substitute(
            {**neutral, "source": name})) for name in TASKS]
        return Orchestrator("signals", merge_into=SignalReport, subagents=agents,
                            routes={task: name for name, task in TASKS.items()},
                            # billing facts outrank behaviour; symptoms come last
                            priority=["billing", "usage", "support", "network"])

    async def gather_signals(self, ctx: RunContext, c: Customer) -> dict[str, Any]:
        base = {"customer_id": c.customer_id, "tenure_months": c.tenure_months,
                "internet_service": c.internet_service, "payment_method": c.payment_method,
                "tech_support": c.tech_support}
        tasks = [TASKS[s](source=s, **base) for s in TASKS]
        result = await self.orchestrator().delegate(ctx, tasks, budget=RetryBudget(8))
        reports = {o.subagent: o.value for o in result.children if o.value is not None}
        risks = [int(v["risk"]) for v in reports.values()]
        merged = {"risk": round(sum(risks) / len(risks)) if risks else 50,
                  "primary": result.value.model_dump(), "conflicts": len(result.conflicts)}
        await self._signal_saga(ctx, c, reports)
        return merged

    async def _signal_saga(self, ctx: RunContext, c: Customer,
                           reports: dict[str, dict[str, Any]]) -> None:
        """P2: the four CRM writes are one saga; a failed write undoes the earlier ones."""
        rng = random.Random(derive_seed(self.seed, c.customer_id, "crm-outage"))
        failing = next((s for s in reports if rng.random() < self.saga_failure_rate), None)

        def write(source: str, report: dict[str, Any]) -> Any:
            async def act(effect: EffectContext) -> bool:
                if source == failing:
                    raise ConnectionError(f"CRM {source} endpoint timed out")
                return self.crm.write_signal(effect.key, c.customer_id, source,
                                             int(report["risk"]), report["finding"],
                                             to_iso(effect.now))
            return act

        async def undo(result: Any, effect: EffectContext) -> bool:
            return self.crm.delete_signal(effect.key.removesuffix("/compensate"))

        try:
            async with Saga(ctx, "signals") as saga:
                for source, report in sorted(reports.items()):
                    await saga.step(source, write(source, report), compensate=undo)
        except SagaAborted:
            return  # the CRM is back as it was; the strategy works from the proposals

    # P3: the product topic --------------------------------------------------------------
    async def eol_notice(self, plan: str, now: str) -> dict[str, Any] | None:
        for event in await self.runtime.store.read_topic(EOL_TOPIC, after=0, limit=1000):
            # Strictly before: at the very moment of publication, whether a run saw the
            # event would depend on which worker (or actor) went first.
            if event.payload.get("plan") == plan and event.event_time < now:
                return {"offset": event.offset, **event.payload}
        return None

    # commits ----------------------------------------------------------------------------
    async def _mail(self, key: str, c: Customer, subject: str, body: str) -> str | None:
        if self.mailer is None:
            return None
        return await self.mailer.send(key, f"{c.customer_id.lower()}@customers.example",
                                      subject, body)

    async def send_offer(self, offer: Offer, effect: EffectContext) -> dict[str, Any]:
        run_id = effect.run_id
        c = self.customers[run_id.removeprefix("renewal-")]
        message_id = await self._mail(effect.key, c, f"Your renewal: {offer.headline}",
                                      f"Dear customer {c.customer_id},\n\n{offer.headline}; "
                                      f"plan: {offer.plan}.\nReply to accept.\n")
        self.crm.record_offer(effect.key, c.customer_id, offer.discount_pct, offer.term_months,
                              offer.plan, message_id, to_iso(effect.now))
        self.crm.upsert_account(c, "offer_sent", to_iso(effect.now))
        await self.runtime.start("renewal.customer", {
            "renewal_run_id": run_id, "customer_id": c.customer_id,
            "discount_pct": offer.discount_pct, "term_months": offer.term_months,
        }, run_id=f"customer-{c.customer_id}", seed=derive_seed(self.seed, c.customer_id))
        return {"message_id": message_id}

    async def send_reminder(self, effect: EffectContext, c: Customer, n: int) -> str:
        return await self._mail(effect.key, c, f"Reminder {n}: your renewal offer",
                                "Your renewal offer is waiting for you.\n") or ""

    async def record_close(self, terms: CloseTerms, effect: EffectContext) -> dict[str, Any]:
        c = self.customers[effect.run_id.removeprefix("renewal-")]
        self.crm.upsert_account(c, f"closing:{terms.decision}", to_iso(effect.now))
        message_id = await self._mail(effect.key, c, "Your renewal is confirmed",
                                      f"{terms.decision}: {terms.discount_pct}% off for "
                                      f"{terms.term_months} months.\n")
        return {"message_id": message_id}

    # the simulated customer ---------------------------------------------------------------
    async def customer(self, ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        """A customer is a run too: it reads the mail, waits, and answers into the
        renewal run's inbox (or never answers)."""
        c = self.customers[inp["customer_id"]]
        response = self.responses.respond(c, inp["discount_pct"], inp["term_months"], 3,
                                          inp["renewal_run_id"])
        if response.kind == "no_reply":
            return {"reply": "no_reply"}
        delay = random.Random(derive_seed(self.seed, c.customer_id, "reply-delay")).uniform(
            0.5, 20.0)
        await ctx.sleep(timedelta(days=delay), purpose="customer.thinks")

        async def answer(effect: EffectContext) -> bool:
            return await ctx.deliver(inp["renewal_run_id"], "customer.reply",
                                     f"reply/{inp['renewal_run_id']}", {
                                         "kind": response.kind,
                                         "counter_pct": response.counter_pct})

        await ctx.effect("customer.reply", answer)
        return {"reply": response.kind, "counter_pct": response.counter_pct}
