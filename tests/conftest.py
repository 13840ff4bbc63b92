"""Shared test setup: real model calls are blocked unless a test opts in. Services that
are absent skip a test on a developer's machine and fail it in CI: see `support.require`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Test helper modules (`helpers`, `support`, `procs`, ...) import by plain name.
sys.path.insert(0, str(Path(__file__).parent))

from threshold.models import set_model_requests_allowed


def pytest_configure(config: pytest.Config) -> None:
    set_model_requests_allowed(False)
