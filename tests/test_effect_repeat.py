"""Effects learn when they may be a repeat, so the receiving system can dedupe by key."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers import offer_boundary, offer_json, scripted_runtime
from threshold import EffectContext, RunContext
from threshold.errors import CrashInjected
from threshold.testing import CrashPlan


def run_once(url: str, crash: CrashPlan | None, seen: list[tuple[str, int]]) -> None:
    async def commit(offer: object, effect: EffectContext) -> str:
        seen.append((effect.key, effect.performed))
        return effect.key

    runtime, _ = scripted_runtime([offer_json()], url, crash_hook=crash)
    boundary = offer_boundary()
    boundary.commit = commit

    @runtime.agent("one")
    async def agent(ctx: RunContext, inp: dict[str, object]) -> str:
        return (await ctx.cross(boundary, {"c": "x"})).outcome

    async def go() -> None:
        await runtime.start("one", {}, run_id="r")
        await runtime.run_until_idle()

    try:
        asyncio.run(go())
    except* CrashInjected:
        pass


def test_a_resumed_commit_is_told_it_may_be_a_repeat(tmp_path: Path) -> None:
    """After a crash between an effect and its record, the re-performed commit receives
    `performed >= 1` with the same key."""
    seen: list[tuple[str, int]] = []
    url = f"sqlite:///{tmp_path / 'p.db'}"
    run_once(url, CrashPlan("after_effect", mode="raise"), seen)
    run_once(url, None, seen)
    assert seen == [("r/1/offer", 0), ("r/1/offer", 1)]
