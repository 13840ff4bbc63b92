"""The command line's event loop: uvloop where installed (it is a dependency on this
platform), asyncio's when ``THRESHOLD_EVENT_LOOP=asyncio`` asks for it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from threshold._loop import ENV, run


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_the_cli_loop_is_uvloop_unless_asked_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert run(_loop_module()) == "uvloop"
    monkeypatch.setenv(ENV, "asyncio")
    assert run(_loop_module()) == "asyncio"


def test_the_main_job_ends_the_same_on_either_loop(tmp_path: Path) -> None:
    """The loop is an implementation detail: a seeded portfolio, run as the command line
    runs it, in a process of its own, ends with the same outcomes and audit on both."""
    summaries = []
    for loop in ("uvloop", "asyncio"):
        proc = subprocess.run(
            ["threshold", "renewal", "run", "--customers", "30", "--json",
             "--db", f"sqlite:///{tmp_path / f'{loop}.db'}"],
            capture_output=True, text=True, timeout=300, env={**os.environ, ENV: loop})
        assert proc.returncode == 0, proc.stderr
        summaries.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    uv, plain = summaries
    assert uv["outcomes"] == plain["outcomes"] and sum(uv["outcomes"].values()) == 30
    assert uv["sdb"] == plain["sdb"] and uv["sdb"]["audit_ok"]
    assert uv["mail"] == plain["mail"] and uv["mail"]["messages"] > 0
