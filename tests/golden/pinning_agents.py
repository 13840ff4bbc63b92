"""Agents for the pinning tests: ``pin.wait`` version 1 (recorded), and the deployment
that replaced it: version 2 (compatible: the same journal, another result) and version 3
(incompatible: another operation at step 2) and version 4 (the reading boundary bumped to
version 2: the same operations, a new definition). Version 1 used the model
``scripted:old``, which the deployment no longer serves; it serves ``scripted:new``.

    1 cross reading   2 event transition   3 receive go
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from threshold import Boundary, Prompt, RunContext, Runtime, ScriptedModel

AGENT = "pin.wait"


class Reading(BaseModel):
    level: int


READING = Boundary("reading", output=Reading,
                   prompt=Prompt("reading", "1", "Rate {who} from 1 to 5."))
READING_V2 = Boundary("reading", output=Reading, version="2",
                      prompt=Prompt("reading", "1", "Rate {who} from 1 to 5."))


async def _wait(ctx: RunContext, inp: dict[str, Any], *, note: str = "transition",
                boundary: Boundary[Reading] = READING) -> dict[str, Any]:
    crossing = await ctx.cross(boundary, {"who": inp["who"]})
    await ctx.event(note, to="waiting")
    go = await ctx.receive("go")
    return {"level": None if crossing.value is None else crossing.value.level, "go": go}


def register_v1(runtime: Runtime) -> None:
    runtime.models.add("scripted:old", ScriptedModel(['{"level": 3}'], name="scripted",
                                                     version="old"))

    @runtime.agent(AGENT, version="1")
    async def wait_v1(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        return await _wait(ctx, inp)


def register_deployed(runtime: Runtime) -> None:
    runtime.models.add("scripted:new", ScriptedModel(['{"level": 4}'], name="scripted",
                                                     version="new"))

    @runtime.agent(AGENT, version="2")
    async def wait_v2(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        return {**await _wait(ctx, inp), "definition": "2"}

    @runtime.agent(AGENT, version="3")
    async def wait_v3(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        return await _wait(ctx, inp, note="waiting.started")

    @runtime.agent(AGENT, version="4")
    async def wait_v4(ctx: RunContext, inp: dict[str, Any]) -> dict[str, Any]:
        return await _wait(ctx, inp, boundary=READING_V2)
