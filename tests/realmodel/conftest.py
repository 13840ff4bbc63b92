"""Session fixtures: two versions of the tiny model, generated and served by a real llama.cpp.

The model files are built into a temporary directory by ``make_model.py`` and served by
``server.py`` (the ``xllamacpp`` wheel), one server process per version. Without the
``realmodel`` extra the tests that need them are skipped, except under ``CI=true``, where a
missing extra is a failure: CI must never go green by skipping its only real-model tests.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent

# (alias, seed, biases): v2 is another seed *and* a preference for "reject", so the two
# versions differ in their decisions, not only in their random weights.
VERSIONS = (
    ("model-v1", 1, {}),
    ("model-v2", 2, {"reject": 8.0}),
)


def require_extra(*modules: str) -> None:
    """Skip (or, under CI=true, fail) unless every module imports."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        message = (
            f"real-model tests need {', '.join(missing)}: "
            "pip install 'threshold[realmodel,openai]'"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)", pytrace=False)
        pytest.skip(message)


def _load(name: str) -> ModuleType:
    """Import a helper script of this folder by path, under a name no other test can take.

    This folder is not a package, so a plain ``import server`` would depend on pytest's
    import mode and could pick up another folder's ``server.py``.
    """
    module_name = f"_threshold_realmodel_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class RealModels:
    """The served model versions, by alias: base URL (``.../v1``), GGUF file, and the
    measured start-up time (spawn until ``/health`` answered 200)."""

    urls: dict[str, str]
    paths: dict[str, Path]
    startup_s: dict[str, float]


@pytest.fixture(scope="session")
def realmodel_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The GGUF files of both model versions, generated for this session."""
    require_extra("gguf", "numpy", "xllamacpp")
    make_model = _load("make_model")
    directory = tmp_path_factory.mktemp("realmodel")
    paths = {}
    for alias, seed, bias in VERSIONS:
        paths[alias] = directory / f"{alias}.gguf"
        make_model.build_model(str(paths[alias]), seed=seed, bias=bias)
    return paths


@pytest.fixture(scope="session")
def realmodels(realmodel_paths: dict[str, Path]) -> Iterator[RealModels]:
    """Both versions served at once, each by its own llama.cpp server process."""
    server = _load("server")
    processes = []
    urls, startup_s = {}, {}
    try:
        for alias, path in realmodel_paths.items():
            started = time.perf_counter()  # a measurement for the report, nothing else
            url, process = server.start_server(path, alias)
            startup_s[alias] = time.perf_counter() - started
            processes.append(process)
            urls[alias] = url + "/v1"
        yield RealModels(urls=urls, paths=realmodel_paths, startup_s=startup_s)
    finally:
        for process in processes:
            server.stop_server(process)


@dataclass(frozen=True)
class SpawnedServer:
    url: str  # without /v1
    process: subprocess.Popen[str]


@pytest.fixture
def spawn_realmodel_server(
    realmodel_paths: dict[str, Path],
) -> Iterator[Callable[[str], SpawnedServer]]:
    """Start an extra, private server for one version (for tests that kill it)."""
    server = _load("server")
    processes: list[subprocess.Popen[str]] = []

    def spawn(alias: str) -> SpawnedServer:
        url, process = server.start_server(realmodel_paths[alias], alias)
        processes.append(process)
        return SpawnedServer(url, process)

    yield spawn
    for process in processes:
        server.stop_server(process)
