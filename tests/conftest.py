"""Shared test setup: real model calls are blocked unless a test opts in; services that are
absent skip a test on a developer's machine and fail it in CI (CI=true)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from threshold.models import set_model_requests_allowed

sys.path.insert(0, str(Path(__file__).parent))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    set_model_requests_allowed(False)


def require(condition: bool, reason: str) -> None:
    """Skip when a needed service or tool is missing; in CI, that is a failure instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)
