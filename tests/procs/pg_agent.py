"""A small agent for multi-worker tests on PostgreSQL, served by ``threshold worker``:

    threshold worker --db URL --agents procs.pg_agent:agents

Each run crosses one boundary (sim proposer, two verifiers) whose commit writes to a real
sink table in the store's own schema, pauses briefly (so a worker can be killed mid-run),
then performs a plain effect into the same sink. The sink is an outside system done right:
``sink`` applies each idempotency key once, and ``sink_deliveries`` logs every delivery
(with the delivering process) so a test can count what was performed, and by whom.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Literal

import psycopg
from pydantic import BaseModel, Field

from threshold import (
    Accept,
    Boundary,
    EffectContext,
    Prompt,
    Reject,
    RunContext,
    Runtime,
    VerifyContext,
    verifier,
)

AGENT = "pg_small"
SINK_DDL = (
    "CREATE TABLE IF NOT EXISTS sink (key TEXT PRIMARY KEY, run_id TEXT NOT NULL, "
    "body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sink_deliveries (key TEXT NOT NULL, run_id TEXT NOT NULL, "
    "pid INTEGER NOT NULL, performed INTEGER NOT NULL)",
)


class Offer(BaseModel):
    action: Literal["renew", "escalate", "churn"]
    discount_pct: int = Field(ge=0, le=100)


@verifier("discount_cap", version="1")
def discount_cap(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    if offer.discount_pct > 30:
        return Reject("policy.discount_cap", f"{offer.discount_pct}% is over 30%",
                      retryable=True, field="discount_pct", hint="offer at most 30")
    return Accept()


@verifier("no_discount_on_churn", version="1")
def no_discount_on_churn(offer: Offer, ctx: VerifyContext) -> Accept | Reject:
    if offer.action == "churn" and offer.discount_pct > 0:
        return Reject("rule.churn_discount", "a churn decision carries no discount")
    return Accept()


def create_sink(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SINK_DDL:
            conn.execute(statement)


class Sink:
    """One connection per worker process, opened on first delivery."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def deliver(self, e: EffectContext, body: Any) -> dict[str, Any]:
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            async with self._conn.transaction():
                await self._conn.execute(
                    "INSERT INTO sink_deliveries VALUES (%s, %s, %s, %s)",
                    (e.key, e.run_id, os.getpid(), e.performed))
                await self._conn.execute(
                    "INSERT INTO sink VALUES (%s, %s, %s) ON CONFLICT (key) DO NOTHING",
                    (e.key, e.run_id, json.dumps(body, sort_keys=True)))
        return {"key": e.key}


def agents(runtime: Runtime) -> None:
    """Register the test agent on ``runtime``; its effects go to the store's database."""
    sink = Sink(runtime.store.url)

    async def send_offer(offer: Offer, e: EffectContext) -> dict[str, Any]:
        return await sink.deliver(e, offer.model_dump())

    offer_boundary = Boundary(
        "offer", output=Offer, prompt=Prompt("offer", "1", "Customer {c}: propose a renewal."),
        verifiers=[discount_cap, no_discount_on_churn], commit=send_offer)

    @runtime.agent(AGENT, version="1")
    async def small(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        crossing = await ctx.cross(offer_boundary, {"c": inp["c"]})
        await ctx.step("pause", asyncio.sleep, inp.get("pause_s", 0.05))

        async def note(e: EffectContext) -> dict[str, Any]:
            return await sink.deliver(e, {"note": inp["c"]})

        await ctx.effect("note", note)
        return {"offer": crossing.outcome, "worker": os.getpid()}
