"""Agent code for replay, named by import path: the runtime needs the code to re-execute it.

``package.module:function`` names a callable that registers agents on a ``Runtime`` (the
convention of ``threshold worker --agents``). If it also takes a ``policy`` parameter, a
replay under another policy passes the loaded ``Policy`` to it.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from threshold.boundary import Prompt
from threshold.errors import ConfigError
from threshold.replay._engine import Register
from threshold.runtime import Runtime

DEFAULT_AGENTS = "threshold.apps.demo:register"


def _resolve(spec: str) -> tuple[Any, Callable[..., Any]]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--agents {spec!r}: expected package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--agents {spec!r}: cannot import {module_name}: {exc}") from exc
    target = getattr(module, attr, None)
    if not callable(target):
        raise ConfigError(f"--agents {spec!r}: {module_name}.{attr} is not a callable")
    return module, target


def agents_register(specs: Sequence[str], *, policy: Any = None) -> Register:
    """One ``Register`` that calls every named function on the runtime it is given."""
    targets = [(spec, _resolve(spec)[1]) for spec in specs or [DEFAULT_AGENTS]]
    for spec, target in targets:
        if policy is not None and "policy" not in inspect.signature(target).parameters:
            raise ConfigError(f"--policy: {spec} takes no 'policy' parameter, so a replay "
                              "cannot give it another policy")

    def register(runtime: Runtime) -> None:
        for _, target in targets:
            if policy is not None:
                target(runtime, policy=policy)
            else:
                target(runtime)

    return register


def prompt_variants(version: str, *, path: str | None, agents: Sequence[str]) -> dict[str,
                                                                                        Prompt]:
    """The prompts at ``version``, by prompt id: from ``path`` (a YAML or JSON list of
    ``{id, version, template, system?}``), else from a ``PROMPTS`` list of ``Prompt`` in
    the agents' modules."""
    candidates: list[Prompt] = []
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        if not isinstance(data, list):
            raise ConfigError(f"--prompts {path}: expected a list of prompts")
        try:
            candidates = [Prompt(str(d["id"]), str(d["version"]), str(d["template"]),
                                 **({"system": str(d["system"])} if "system" in d else {}))
                          for d in data]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"--prompts {path}: each prompt needs id, version and "
                              f"template ({exc!r})") from exc
    else:
        for spec in agents or [DEFAULT_AGENTS]:
            module, _ = _resolve(spec)
            candidates += [p for p in getattr(module, "PROMPTS", []) if isinstance(p, Prompt)]
    chosen = {p.id: p for p in candidates if p.version == version}
    if not chosen:
        where = path or "the agents' PROMPTS"
        raise ConfigError(f"--prompt-version {version}: no prompt at that version in {where}")
    return chosen
