"""Property-based requests against the JSON API from its own OpenAPI spec (schemathesis,
in-process over ASGI): whatever the input, with or without a token, no 5xx and every
response matches the spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from threshold.store import open_store  # noqa: E402
from threshold.web import create_app  # noqa: E402
from web_support import ADA, ANN, BOB, TOKENS, bearer, run, seed  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture
def api_schema(tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    run(seed(url, committed="demo-10", xss="xss-1", journal={"j-saga": ["saga.step"]}))
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(
        open_store(url), tokens=TOKENS))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx(case: Any) -> None:
    """Each generated request, anonymous and as three principals (a role holder, one
    without roles, an admin), gets a documented non-5xx answer that fits its schema."""
    for headers in ({}, bearer(ANN), bearer(BOB), bearer(ADA)):
        case.call_and_validate(headers=headers, checks=CHECKS)
