"""What the runtime adds to a real model call: durable crossing time vs. the bare call.

Starts its own llama.cpp server with the tiny generated model (the helpers of
``tests/realmodel``, loaded by path) and, in one process and one event loop, measures

- the floor: ``OpenAIModel.complete`` called directly with a JSON schema, and
- a durable crossing through the runtime (SQLite WAL file store, one boundary with the
  schema check, two verifiers and a commit effect), with the same model object,

on the *same* requests: a warm-up pass records the requests the crossings send, and the
floor replays exactly those (same prompts, schema, sampling and seeds, so the server
generates the same tokens for both; ``same_outputs`` checks it). Passes are interleaved and
alternate in order, so server and machine drift hit both alike. The overhead is the median
crossing minus the median call, as a fraction of the call (target <= 5 %). That difference
of two ~15 ms medians is at the mercy of machine noise, so a third pass measures the runtime
alone: the same crossings answered at once with the recorded completions. Prints one JSON
line last.

    python bench/model_overhead.py [--crossings 20] [--repeats 9]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel

from threshold import (
    Accept,
    Boundary,
    EffectContext,
    Prompt,
    Reject,
    RunContext,
    Runtime,
    VerifyContext,
    VirtualClock,
    open_store,
    verifier,
)
from threshold.models import Completion, ModelRegistry, ModelRequest, ModelSpec
from threshold.models._openai import OpenAIModel

REALMODEL = Path(__file__).resolve().parent.parent / "tests" / "realmodel"
ALIAS = "model-v1"
SPEC = f"openai:{ALIAS}"
TARGET_FRACTION = 0.05


def load_helper(name: str) -> ModuleType:
    """Import ``tests/realmodel/<name>.py`` by path (that folder is not a package)."""
    module_name = f"_bench_realmodel_{name}"
    spec = importlib.util.spec_from_file_location(module_name, REALMODEL / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


class Verdict(BaseModel):
    decision: Literal["approve", "review", "reject"]
    score: int


# Two real verifiers that the random model's grammar-constrained output passes, so every
# crossing is one model call: the benchmark measures the runtime, not retries.
@verifier("known_decision", version="1")
def known_decision(value: Verdict, ctx: VerifyContext) -> Accept | Reject:
    ok = value.decision in ("approve", "review", "reject")
    return Accept() if ok else Reject("rule.decision", "unknown decision")


@verifier("finite_score", version="1")
def finite_score(value: Verdict, ctx: VerifyContext) -> Accept | Reject:
    return Accept() if abs(value.score) < 10**12 else Reject("rule.score", "score overflow")


async def record(value: Verdict, effect: EffectContext) -> dict[str, Any]:
    return {"key": effect.key, "decision": value.decision}


BOUNDARY = Boundary(
    "bench.decide", output=Verdict,
    prompt=Prompt("decide", "1", "Customer {customer}, tenure {tenure} months. Decide."),
    verifiers=[known_decision, finite_score], commit=record)


class Recording:
    """Passes calls through to the model and keeps each request (warm-up pass only)."""

    def __init__(self, model: OpenAIModel) -> None:
        self.model = model
        self.requests: list[ModelRequest] = []
        self.completions: dict[int | None, Completion] = {}

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    async def complete(self, request: ModelRequest) -> Completion:
        self.requests.append(request)
        completion = await self.model.complete(request)
        self.completions[request.seed] = completion
        return completion


class Replaying:
    """Answers each request at once with the completion recorded for its seed: crossings
    through it cost the runtime's work alone, free of the model's latency and its noise."""

    def __init__(self, spec: ModelSpec, completions: dict[int | None, Completion]) -> None:
        self._spec, self.completions = spec, completions

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    async def complete(self, request: ModelRequest) -> Completion:
        return self.completions[request.seed]


async def crossing_pass(path: Path, model: OpenAIModel | Recording | Replaying,
                        n: int) -> tuple[list[float], list[str]]:
    """n crossings in one run on a fresh SQLite file: ms per crossing, proposals' raw text."""
    registry = ModelRegistry()
    registry.add(SPEC, model)
    runtime = Runtime(open_store(f"sqlite:///{path}"), clock=VirtualClock(), models=registry,
                      default_model=SPEC)
    times: list[float] = []

    @runtime.agent("bench.model_overhead")
    async def agent(ctx: RunContext, inp: dict[str, Any]) -> int:
        for i in range(inp["n"]):
            started = time.perf_counter()  # a measurement kept outside the journal
            crossing = await ctx.cross(BOUNDARY, {"customer": f"C{i:03d}",
                                                  "tenure": (i * 7) % 72})
            times.append((time.perf_counter() - started) * 1000.0)
            if not crossing.committed:
                raise RuntimeError(f"crossing {i} ended {crossing.outcome}: {crossing.reason}")
        return int(inp["n"])

    try:
        # Same run id and seed every pass: the same request seeds, so the same tokens.
        await runtime.start("bench.model_overhead", {"n": n}, run_id="bench", seed=7)
        await runtime.run_until_idle()
        attempts = await runtime.store.list_attempts()
    finally:
        await runtime.store.close()
    if len(attempts) != n or any(a.kind != "proposal" for a in attempts):
        raise RuntimeError(f"expected {n} single-attempt crossings, got {len(attempts)} attempts")
    return times, [a.raw or "" for a in sorted(attempts, key=lambda a: a.crossing_id)]


async def direct_pass(model: OpenAIModel,
                      requests: Sequence[ModelRequest]) -> tuple[list[float], list[str]]:
    """The floor: the same requests straight to the adapter, ms per call, text per call."""
    times, texts = [], []
    for request in requests:
        started = time.perf_counter()
        completion = await model.complete(request)
        times.append((time.perf_counter() - started) * 1000.0)
        texts.append(completion.text if isinstance(completion.text, str) else "")
    return times, texts


async def measure(url: str, folder: Path, n: int, repeats: int) -> dict[str, Any]:
    model = OpenAIModel(ALIAS, base_url=url + "/v1", api_key="local", max_retries=0)
    try:
        recorder = Recording(model)
        await crossing_pass(folder / "warmup.db", recorder, n)  # also warms server and client
        requests = recorder.requests
        replaying = Replaying(model.spec, recorder.completions)
        model_ms: list[float] = []
        crossing_ms: list[float] = []
        runtime_only_ms: list[float] = []
        paired: list[float] = []
        same_outputs = True
        for r in range(repeats):
            # Alternate which pass goes first, so neither always runs on a warmer server.
            if r % 2 == 0:
                direct, texts = await direct_pass(model, requests)
                crossed, raws = await crossing_pass(folder / f"rep{r}.db", model, n)
            else:
                crossed, raws = await crossing_pass(folder / f"rep{r}.db", model, n)
                direct, texts = await direct_pass(model, requests)
            runtime_only_ms += (await crossing_pass(folder / f"stub{r}.db", replaying, n))[0]
            model_ms += direct
            crossing_ms += crossed
            paired += [c - d for c, d in zip(crossed, direct, strict=True)]
            same_outputs = same_outputs and sorted(texts) == sorted(raws)
    finally:
        await model.aclose()
    model_median = statistics.median(model_ms)
    crossing_median = statistics.median(crossing_ms)
    overhead = crossing_median - model_median
    runtime_only = statistics.median(runtime_only_ms)
    print(f"model call median {model_median:.2f} ms, crossing median {crossing_median:.2f} ms, "
          f"overhead {overhead:.2f} ms ({overhead / model_median:.1%}); paired median "
          f"{statistics.median(paired):.2f} ms over {len(paired)} pairs; runtime alone (replayed "
          f"completions) {runtime_only:.2f} ms per crossing", file=sys.stderr)
    return {
        "model_median_ms": round(model_median, 3),
        "crossing_median_ms": round(crossing_median, 3),
        "overhead_ms": round(overhead, 3),
        "overhead_fraction": round(overhead / model_median, 4),
        "paired_overhead_median_ms": round(statistics.median(paired), 3),
        "runtime_only_median_ms": round(runtime_only, 3),
        "runtime_only_fraction": round(runtime_only / model_median, 4),
        "target_fraction": TARGET_FRACTION,
        # Conservative: both estimates of the overhead must be within the target.
        "within_target": max(overhead, runtime_only) / model_median <= TARGET_FRACTION,
        "same_outputs": same_outputs,
        "crossings_per_repeat": n,
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crossings", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    make_model, server = load_helper("make_model"), load_helper("server")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        gguf = folder / f"{ALIAS}.gguf"
        make_model.build_model(str(gguf), seed=1, bias={})
        with server.running_server(gguf, ALIAS) as (url, _process):
            result = asyncio.run(measure(url, folder, args.crossings, args.repeats))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
