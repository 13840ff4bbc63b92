"""A small portfolio run in a subprocess for crash-equivalence tests.

    python -m procs.crash_workload DB SINK [--crash WINDOW:NTH] [--runs N] [--model SPEC]

Two boundaries with effects into an external sink (a separate SQLite file that dedupes by
idempotency key and counts every delivery), an escalation with an SLA fallback, a 10-day
durable timer and a plain effect. Prints one JSON line with the final state when done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from threshold import (
    Accept,
    ApproveWithCap,
    Boundary,
    EffectContext,
    Escalate,
    Prompt,
    Reject,
    RejectPolicy,
    RunContext,
    Runtime,
    VerifyContext,
    VirtualClock,
    audit,
    open_store,
    verifier,
)
from threshold.testing import CrashPlan


class Offer(BaseModel):
    action: Literal["renew", "escalate", "churn"]
    discount_pct: int = Field(ge=0, le=100)


class Confirm(BaseModel):
    channel: Literal["email", "phone", "letter"]
    priority: int = Field(ge=1, le=5)


@verifier("cap", version="1")
def cap(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    if offer.discount_pct > 30:
        return Reject("policy.cap", f"{offer.discount_pct} over 30", retryable=False)
    return Accept()


@verifier("not_churn_without_discount", version="1")
def sane(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    if offer.action == "churn" and offer.discount_pct > 0:
        return Reject("rule.churn_discount", "no discount for a churn decision")
    return Accept()


@verifier("priority_ok", version="1")
def priority_ok(confirm: Confirm, ctx: VerifyContext) -> Accept | Reject:
    return Accept() if confirm.priority <= 4 else Reject("rule.priority", "priority 5 reserved")


class Sink:
    """The outside world: applies each key once, but counts every delivery."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, body TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS deliveries (key TEXT, body TEXT)")

    def deliver(self, key: str, body: Any) -> dict[str, Any]:
        text = json.dumps(body, sort_keys=True)
        self.db.execute("INSERT INTO deliveries VALUES (?, ?)", (key, text))
        self.db.execute("INSERT OR IGNORE INTO applied VALUES (?, ?)", (key, text))
        return {"key": key}


def build(runtime: Runtime, sink: Sink) -> None:
    async def send_offer(offer: Offer, e: EffectContext) -> dict[str, Any]:
        return sink.deliver(e.key, offer.model_dump())

    async def send_confirm(confirm: Confirm, e: EffectContext) -> dict[str, Any]:
        return sink.deliver(e.key, confirm.model_dump())

    offer_b = Boundary("offer", output=Offer, prompt=Prompt("offer", "1", "Customer {c}."),
                       verifiers=[cap, sane], commit=send_offer,
                       on_reject=RejectPolicy(max_attempts=3, routes={"policy.": Escalate(
                           role="pricing", sla=timedelta(days=1),
                           fallback=ApproveWithCap("discount_pct", 30))}))
    confirm_b = Boundary("confirm", output=Confirm, prompt=Prompt("confirm", "1", "Confirm {c}."),
                         verifiers=[priority_ok], commit=send_confirm)

    @runtime.agent("crashy")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        offer = await ctx.cross(offer_b, {"c": inp["c"]})
        await ctx.sleep(timedelta(days=10), purpose="reminder")

        async def note(e: EffectContext) -> dict[str, Any]:
            return sink.deliver(e.key, {"note": inp["c"]})

        await ctx.effect("note", note)
        confirm = await ctx.cross(confirm_b, {"c": inp["c"]})
        return {"offer": offer.outcome, "discount": None if offer.value is None else
                offer.value.discount_pct, "confirm": confirm.outcome,
                "at": ctx.now().isoformat()}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    crash = CrashPlan.parse(args.crash) if args.crash else None
    store = open_store(f"sqlite:///{args.db}")
    runtime = Runtime(store, clock=VirtualClock(), default_model=args.model, crash_hook=crash)
    sink = Sink(args.sink)
    build(runtime, sink)
    for i in range(args.runs):
        await runtime.start("crashy", {"c": f"c{i}"}, run_id=f"run-{i:03d}", seed=1000 + i)
    await runtime.run_until_idle()
    return await snapshot(store)


async def snapshot(store: Any) -> dict[str, Any]:
    runs = {r.run_id: [r.status, r.result] for r in await store.list_runs()}
    commits = sorted([c.crossing_id, c.committed_hash] for c in await store.list_crossings()
                     if c.status == "committed")
    report = await audit(store)
    return {"runs": runs, "commits": commits, "audit_ok": report.ok,
            "commits_with_accept": report.commits_with_accept, "commit_count": report.commits}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("sink")
    parser.add_argument("--crash")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--model", default="sim:chaos")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
