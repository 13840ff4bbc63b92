"""Agent definitions for ``threshold worker --agents`` tests, in each shape it accepts."""

from __future__ import annotations

from typing import Any

from threshold import RunContext, Runtime
from threshold.runtime import AgentDef


async def echo(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
    said = await ctx.step("say", lambda: inp.get("text", ""))
    return {"echo": said}


def agents(runtime: Runtime) -> None:
    """Registers on the runtime it is given."""
    runtime.register(AgentDef("echo", "1", echo))


def definitions() -> list[AgentDef]:
    """Takes nothing and returns definitions."""
    return [AgentDef("echo", "2", echo), AgentDef("shout", "1", echo)]


def nothing(runtime: Runtime) -> None:
    """Defines no agent."""


NOT_CALLABLE = 3
