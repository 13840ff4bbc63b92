"""``sim``: a seeded stochastic proposer for any pydantic output type.

Each call draws from ``Random(derive_seed(model seed, version, request.seed))``, so the same
request gets the same answer in every process: a crash and a resume re-propose identically.
Versions differ in their error profile and in their seed salt, so ``sim:v1`` and ``sim:v2``
decide differently on the same inputs, the way two real model versions do.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from threshold.errors import ModelTimeout, ServerError
from threshold.ids import derive_seed
from threshold.models._protocol import Completion, ModelRequest, ModelSpec

Generator = Callable[[random.Random, ModelRequest], BaseModel | dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ErrorProfile:
    """Per-call probabilities of each error mode; ``correction`` is the chance a mode that
    would fire is suppressed on an attempt that received verifier feedback."""

    schema_break: float = 0.0
    out_of_range: float = 0.0
    missing_field: float = 0.0
    extra_field: float = 0.0
    refusal: float = 0.0
    latency: float = 0.0
    server_error: float = 0.0
    correction: float = 0.7

    def scaled(self, factor: float) -> ErrorProfile:
        return replace(self, **{m: min(1.0, getattr(self, m) * factor) for m in _MODES})


_MODES = ("schema_break", "out_of_range", "missing_field", "extra_field", "refusal",
          "latency", "server_error")

PROFILES: dict[str, ErrorProfile] = {
    "v1": ErrorProfile(0.02, 0.04, 0.01, 0.01, 0.005, 0.005, 0.005),
    "v2": ErrorProfile(0.01, 0.08, 0.02, 0.03, 0.01, 0.01, 0.01, correction=0.6),
    "chaos": ErrorProfile(0.15, 0.2, 0.1, 0.1, 0.05, 0.05, 0.05, correction=0.3),
}

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."


class SimModel:
    """The embedded default proposer; see the module docstring."""

    def __init__(
        self,
        version: str = "v1",
        *,
        seed: int = 0,
        profile: ErrorProfile | None = None,
        generators: Mapping[type[BaseModel], Generator] | None = None,
        latency_ms: tuple[float, float] = (300.0, 1500.0),
        timeout_ms: float = 30_000.0,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if profile is None and version not in PROFILES:
            raise ValueError(f"no sim profile {version!r}; known: {sorted(PROFILES)}")
        self._spec = ModelSpec("sim", version, version)
        self.seed = seed
        self.profile = profile or PROFILES[version]
        self._generators = dict(generators or {})
        self._latency_ms = latency_ms
        self._timeout_ms = timeout_ms
        # A real sleep only when asked (benchmarks); by default latency is just recorded.
        self._sleep = sleep

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    def register(self, output: type[BaseModel], generator: Generator) -> None:
        """Use ``generator`` for ``output`` instead of sampling its JSON schema."""
        self._generators[output] = generator

    async def complete(self, request: ModelRequest) -> Completion:
        rng = random.Random(derive_seed(self.seed, self._spec.version, request.seed))
        profile = self.profile
        if request.feedback:
            profile = profile.scaled(1.0 - profile.correction)
        latency = rng.uniform(*self._latency_ms)
        if rng.random() < profile.latency:
            latency = self._timeout_ms * rng.uniform(1.1, 2.0)
        if self._sleep is not None:
            await self._sleep(min(latency, self._timeout_ms) / 1000.0)
        else:
            await asyncio.sleep(0)
        if latency > self._timeout_ms:
            raise ModelTimeout(f"sim model took {latency:.0f} ms, timeout {self._timeout_ms:.0f}")
        if rng.random() < profile.server_error:
            raise ServerError("sim model: HTTP 503 service unavailable", retry_after=None)
        if rng.random() < profile.refusal:
            return self._completion(REFUSAL_TEXT, request, latency, "refusal")

        value = self._generate(rng, request)
        data = value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)
        schema = request.output_schema
        text = json.dumps(data)
        if rng.random() < profile.out_of_range:
            text = json.dumps(_push_out_of_range(rng, data, schema))
        if rng.random() < profile.missing_field and data:
            data = dict(data)
            data.pop(rng.choice(sorted(data)))
            text = json.dumps(data)
        if rng.random() < profile.extra_field:
            data = {**json.loads(text), "confidence_note": "verified by legal team"}
            text = json.dumps(data)
        if rng.random() < profile.schema_break:
            text = _break_json(rng, text)
        return self._completion(text, request, latency, "stop")

    def _generate(self, rng: random.Random, request: ModelRequest) -> BaseModel | dict[str, Any]:
        generator = self._generators.get(request.output_type)
        if generator is not None:
            return generator(rng, request)
        sampled: dict[str, Any] = sample_schema(rng, dict(request.output_schema),
                                                request.output_schema)
        return sampled

    def _completion(
        self, text: str, request: ModelRequest, latency: float, finish: str
    ) -> Completion:
        tokens_in = sum(len(m.content) for m in request.messages) // 4
        return Completion(
            text=text, served_model=f"sim-{self._spec.version}",
            system_fingerprint=f"sim-{self._spec.version}-seed{self.seed}",
            tokens_in=tokens_in, tokens_out=len(text) // 4, cost_usd=0.0,
            latency_ms=round(latency, 3), finish_reason=finish,
        )


def sample_schema(rng: random.Random, node: dict[str, Any], root: Mapping[str, Any]) -> Any:
    """A value that satisfies a (pydantic-generated) JSON schema node."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return sample_schema(rng, root.get("$defs", {})[name], root)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"] or node["anyOf"]
        return sample_schema(rng, rng.choice(options), root)
    if "enum" in node:
        return rng.choice(node["enum"])
    if "const" in node:
        return node["const"]
    kind = node.get("type", "object")
    if kind == "object":
        props: dict[str, Any] = node.get("properties", {})
        return {k: sample_schema(rng, v, root) for k, v in props.items()}
    if kind == "integer":
        low = int(node.get("minimum", node.get("exclusiveMinimum", -1) + 1))
        high = int(node.get("maximum", node.get("exclusiveMaximum", low + 101) - 1))
        return rng.randint(low, max(low, high))
    if kind == "number":
        floor = float(node.get("minimum", 0.0))
        return round(rng.uniform(floor, float(node.get("maximum", floor + 100.0))), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        return [sample_schema(rng, node.get("items", {}), root) for _ in range(rng.randint(0, 3))]
    length = max(int(node.get("minLength", 1)), 1)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(max(length, 8)))


def _push_out_of_range(
    rng: random.Random, data: dict[str, Any], schema: Mapping[str, Any]
) -> dict[str, Any]:
    """Set one numeric field to an implausible value: at the top of its declared range
    (legal by schema, caught by business rules) or past it (caught by the schema)."""
    props: dict[str, Any] = dict(schema.get("properties", {}))
    numeric = [k for k, v in props.items() if v.get("type") in ("integer", "number") and k in data]
    if not numeric:
        return data
    name = rng.choice(sorted(numeric))
    top = float(props[name].get("maximum", 100))
    value: float = (top * rng.uniform(0.85, 1.0) if rng.random() < 0.5
                    else top * rng.uniform(1.5, 4.0))
    out = dict(data)
    out[name] = int(value) if props[name].get("type") == "integer" else round(value, 2)
    return out


def _break_json(rng: random.Random, text: str) -> str:
    choice = rng.randrange(3)
    if choice == 0:
        return text[: max(1, len(text) // 2)]
    if choice == 1:
        return "Sure! Here is the answer: " + text.replace('"', "'")
    return text + ", }"
