"""Model specs (``sim``, ``sim:v2``, ``openai:NAME``...) resolved to models, by name only."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from threshold.errors import MissingExtraError, UnknownModelError
from threshold.models._protocol import Model, ModelRequest
from threshold.models._sim import PROFILES, SimModel

Factory = Callable[[str], Model]
SimGenerator = Callable[[random.Random, ModelRequest], BaseModel | dict[str, Any]]


class ModelRegistry:
    """Builds and caches models by spec. A journal names a model by spec; a run rebuilds it
    here and refuses what it cannot name."""

    def __init__(self, *, sim_seed: int = 0, options: dict[str, Any] | None = None) -> None:
        self.sim_seed = sim_seed
        self.options = dict(options or {})  # e.g. base_url, api_key for openai
        self._models: dict[str, Model] = {}
        self._sim_generators: dict[type[BaseModel], SimGenerator] = {}
        self._factories: dict[str, Factory] = {}

    def add(self, spec: str, model: Model) -> None:
        """Serve ``model`` under ``spec`` (a ScriptedModel in a test, say)."""
        self._models[normalize_spec(spec)] = model

    def add_factory(self, provider: str, factory: Factory) -> None:
        self._factories[provider] = factory

    def register_sim_generator(self, output: type[BaseModel], generator: SimGenerator) -> None:
        """Every sim version uses ``generator`` for ``output`` (applies to cached models)."""
        self._sim_generators[output] = generator
        for model in self._models.values():
            if isinstance(model, SimModel):
                model.register(output, generator)

    def known(self) -> list[str]:
        return sorted({*self._models, *(f"sim:{v}" for v in PROFILES),
                       "openai:<name>", "anthropic:<name>", *(f"{p}:<name>" for p in
                                                             self._factories)})

    def can_serve(self, spec: str) -> bool:
        try:
            self.get(spec)
        except (UnknownModelError, MissingExtraError):
            return False
        return True

    def get(self, spec: str) -> Model:
        key = normalize_spec(spec)
        model = self._models.get(key)
        if model is None:
            model = self._build(key)
            self._models[key] = model
        return model

    def _build(self, key: str) -> Model:
        provider, _, name = key.partition(":")
        if provider == "sim":
            if name not in PROFILES:
                raise UnknownModelError(key, self.known())
            return SimModel(name, seed=self.sim_seed, generators=self._sim_generators)
        if provider in self._factories:
            return self._factories[provider](name)
        if provider == "openai" and name:
            from threshold.models._openai import OpenAIModel

            options = {k: v for k, v in self.options.items()
                       if k in ("base_url", "api_key", "timeout_s")}
            if options.get("base_url") and "api_key" not in options \
                    and not os.environ.get("OPENAI_API_KEY"):
                # A custom base URL without a key is a local server (llama.cpp, vLLM,
                # Ollama), which takes any key; one that needs a real key answers 401.
                options["api_key"] = "local"
            return OpenAIModel(name, **options)
        if provider == "anthropic" and name:
            from threshold.models._anthropic import AnthropicModel  # type: ignore[import-not-found,unused-ignore]

            anthropic: Model = AnthropicModel(name, **{
                k: v for k, v in self.options.items() if k in ("base_url", "api_key", "timeout_s")})
            return anthropic
        raise UnknownModelError(key, self.known())


def normalize_spec(spec: str) -> str:
    """``sim`` means ``sim:v1``; everything else is taken as written."""
    spec = spec.strip()
    return "sim:v1" if spec == "sim" else spec
