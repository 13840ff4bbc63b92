"""``threshold worker``: serve runs from a store until stopped (SIGTERM or Ctrl-C).

A generic worker knows no agents by itself; ``--agents package.module:function`` names a
function that registers them on the worker's runtime (``function(runtime)``) or returns
them (an ``AgentDef`` or a list of them). Many workers, in many processes or on many
machines, can serve one PostgreSQL store: each claims due runs under a lease that lapses
if the worker dies, so the others finish its runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import signal
import sys
from collections.abc import Iterable
from typing import Any

from threshold._loop import run as run_async
from threshold.cli._common import add_db_option
from threshold.clock import Clock, SystemClock, VirtualClock
from threshold.errors import ConfigError
from threshold.runtime import AgentDef, Runtime
from threshold.store import open_store
from threshold.store._url import redact_url


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "worker", help="serve runs from a store (many workers may share a PostgreSQL store)",
        description=__doc__)
    add_db_option(worker)
    worker.add_argument("--agents", action="append", required=True, metavar="MODULE:FUNCTION",
                        help="import path of a function that registers or returns agent "
                             "definitions; repeat for several")
    worker.add_argument("--concurrency", type=int, default=16,
                        help="runs executed at once by this worker (default: %(default)s)")
    worker.add_argument("--lease-seconds", type=float, default=30.0,
                        help="a dead worker's runs are taken over after this long "
                             "(default: %(default)s)")
    worker.add_argument("--poll-seconds", type=float, default=1.0,
                        help="longest idle wait between looks for work; PostgreSQL wakes "
                             "workers sooner by notification (default: %(default)s)")
    worker.add_argument("--clock", choices=("system", "virtual"), default="system",
                        help="business time: real, or simulated (jumps to the next timer "
                             "when idle, resumed from the store)")
    worker.add_argument("--grace-seconds", type=float, default=10.0,
                        help="on SIGTERM, how long runs in flight may go on to their next "
                             "wait before they are interrupted (default: %(default)s)")
    worker.add_argument("--migrate", action="store_true",
                        help="upgrade an older store schema before serving")
    worker.set_defaults(handler=_serve)


def load_agents(runtime: Runtime, spec: str) -> list[AgentDef]:
    """Import ``package.module:function`` and let it define agents on ``runtime``; returns
    the definitions it added. The function may take the runtime or nothing, and may
    register agents itself or return an ``AgentDef`` or an iterable of them."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--agents {spec!r}: expected package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--agents {spec!r}: cannot import {module_name}: {exc}") from exc
    target = getattr(module, attr, None)
    if target is None:
        raise ConfigError(f"--agents {spec!r}: {module_name} has no attribute {attr!r}")
    before = {(d.name, d.version) for d in runtime.definitions()}
    produced: Any = target
    if not isinstance(target, AgentDef):
        if not callable(target):
            raise ConfigError(f"--agents {spec!r}: {attr} is neither callable nor an AgentDef")
        wants_runtime = bool(inspect.signature(target).parameters)
        produced = target(runtime) if wants_runtime else target()
    for definition in _definitions(produced, spec):
        runtime.register(definition)
    added = [d for d in runtime.definitions() if (d.name, d.version) not in before]
    if not added:
        raise ConfigError(f"--agents {spec!r} defined no agent")
    return added


def _definitions(produced: Any, spec: str) -> Iterable[AgentDef]:
    if produced is None:
        return []
    if isinstance(produced, AgentDef):
        return [produced]
    if isinstance(produced, Iterable) and not isinstance(produced, str | bytes):
        items = list(produced)
        if all(isinstance(item, AgentDef) for item in items):
            return items
    raise ConfigError(f"--agents {spec!r} returned {type(produced).__name__}, expected None, "
                      "an AgentDef or AgentDefs")


def _serve(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or args.lease_seconds <= 0 or args.poll_seconds <= 0:
        raise ConfigError("--concurrency, --lease-seconds and --poll-seconds must be positive")
    return run_async(_serve_async(args))


async def _serve_async(args: argparse.Namespace) -> int:
    store = open_store(args.db, migrate=args.migrate)
    clock: Clock = VirtualClock() if args.clock == "virtual" else SystemClock()
    runtime = Runtime(store, clock=clock, concurrency=args.concurrency,
                      lease_seconds=args.lease_seconds)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        served: list[AgentDef] = []
        for spec in args.agents:
            served += load_agents(runtime, spec)
        names = ", ".join(f"{d.name}@{d.version}" for d in served)
        print(f"threshold worker {runtime.owner} serving {names} from {redact_url(args.db)}",
              flush=True)
        serving = asyncio.create_task(
            runtime.serve(poll_seconds=args.poll_seconds, stop=stopping.is_set))
        await _until_stopped(serving, stopping, args.grace_seconds)
    finally:
        await store.close()
    print(f"threshold worker {runtime.owner} stopped", file=sys.stderr, flush=True)
    return 0


async def _until_stopped(serving: asyncio.Task[None], stopping: asyncio.Event,
                         grace: float) -> None:
    """Serve until a signal; then let the current round finish within ``grace`` seconds.
    Runs interrupted after that keep their lease until it lapses (or until this process is
    seen to be gone), and another worker resumes them from their journal."""
    signalled = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({serving, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            done, _ = await asyncio.wait({serving}, timeout=grace)
            if not done:
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
                return
        serving.result()  # a failure of the loop itself (the store is gone) is raised
    finally:
        signalled.cancel()
