"""``threshold worker``: loading agent definitions by import path, and a worker process
that serves a store until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from threshold import Runtime, open_store
from threshold.cli import main
from threshold.cli._worker import load_agents
from threshold.errors import ConfigError
from threshold.store._url import redact_url

HERE = Path(__file__).parent


def test_load_agents_accepts_registering_and_returning_functions() -> None:
    """A function taking the runtime may register agents; one taking nothing may return
    them; either way the worker learns exactly the definitions added."""
    runtime = Runtime(open_store("memory://"))
    assert [(d.name, d.version) for d in load_agents(runtime, "procs.echo_agents:agents")] == [
        ("echo", "1")]
    added = load_agents(runtime, "procs.echo_agents:definitions")
    assert sorted((d.name, d.version) for d in added) == [("echo", "2"), ("shout", "1")]
    assert runtime.latest_version("echo") == "2"


@pytest.mark.parametrize(("spec", "message"), [
    ("procs.echo_agents", "expected package.module:function"),
    ("procs.no_such_module:agents", "cannot import"),
    ("procs.echo_agents:missing", "has no attribute"),
    ("procs.echo_agents:NOT_CALLABLE", "neither callable"),
    ("procs.echo_agents:nothing", "defined no agent"),
])
def test_load_agents_refuses_what_defines_nothing(spec: str, message: str) -> None:
    """A bad --agents value is a ConfigError that says what is wrong with it."""
    with pytest.raises(ConfigError, match=message):
        load_agents(Runtime(open_store("memory://")), spec)


def test_worker_command_exits_2_on_a_bad_agents_path(capsys: pytest.CaptureFixture[str]) -> None:
    """The command reports a bad --agents value as a typed error with exit status 2."""
    assert main(["worker", "--db", "memory://", "--agents", "nowhere:agents"]) == 2
    assert "ConfigError" in capsys.readouterr().err


def test_redact_hides_the_password() -> None:
    """Logs name the store without its password."""
    assert redact_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"


def test_worker_process_serves_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    """A worker process on a SQLite file completes a run started by another process and
    exits cleanly (status 0) on SIGTERM."""
    url = f"sqlite:///{tmp_path / 'w.db'}"

    async def start() -> None:
        store = open_store(url)
        runtime = Runtime(store)
        load_agents(runtime, "procs.echo_agents:agents")
        await runtime.start("echo", {"text": "hi"}, run_id="r1")
        await store.close()

    asyncio.run(start())
    proc = subprocess.Popen(
        [sys.executable, "-m", "threshold.cli._main", "worker", "--db", url, "--agents",
         "procs.echo_agents:agents", "--poll-seconds", "0.1"], cwd=HERE, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(HERE)})
    try:
        assert proc.stdout is not None
        assert "serving echo@1" in proc.stdout.readline()

        async def result() -> object:
            store = open_store(url)
            try:
                run = await store.get_run("r1")
                return None if run is None else (run.status, run.result)
            finally:
                await store.close()

        deadline = time.monotonic() + 20
        while asyncio.run(result()) != ("completed", {"echo": "hi"}):
            assert time.monotonic() < deadline, asyncio.run(result())
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
