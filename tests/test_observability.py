"""Tracing and structured logs: OpenTelemetry spans per run, crossing, model call and
effect (GenAI conventions), exported in memory and over real OTLP/HTTP, and JSON-lines
logs joined to the traces. The runtime itself never imports OpenTelemetry."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from threshold.apps.demo import Customer, register
from threshold.clock import VirtualClock
from threshold.models import ModelRegistry, ScriptedModel
from threshold.observability import (
    OTelTracer,
    configure_logging,
    configure_tracing,
)
from threshold.runtime import NoopTracer, Runtime, Tracer
from threshold.store import open_store

QUOTE_10 = json.dumps({"action": "renew", "discount_pct": 10, "term_months": 12})
QUOTE_45 = json.dumps({"action": "renew", "discount_pct": 45, "term_months": 12})
BROKEN = '{"action": "renew"'  # not JSON: a schema reject, retried


async def _demo(url: str, tracer: Tracer | None, script: list[str], run_id: str) -> None:
    store = open_store(url)
    try:
        models = ModelRegistry()
        models.add("scripted:quoter", ScriptedModel(script, name="quoter", version="7"))
        rt = Runtime(store, clock=VirtualClock(), models=models, default_model="scripted:quoter",
                     tracer=tracer)
        register(rt)
        await rt.start("demo.quote", Customer(customer_id="C-1", monthly_charges=40.0,
                                              tenure_months=24), run_id=run_id, seed=5)
        await rt.run_until_idle()
    finally:
        await store.close()


def _by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def test_spans_for_run_crossing_model_call_and_effect(tmp_path: Path) -> None:
    """A committed crossing yields run > crossing > (chat per attempt, effect) spans; the
    chat spans carry the GenAI request/response/usage attributes."""
    exporter = InMemorySpanExporter()
    tracer = configure_tracing(exporter=exporter, batch=False)
    asyncio.run(_demo(f"sqlite:///{tmp_path / 'o.db'}", tracer, [BROKEN, QUOTE_10], "r-ok"))
    spans = exporter.get_finished_spans()
    names = sorted(s.name for s in spans)
    assert names == ["chat quoter", "chat quoter", "crossing quote", "effect quote",
                     "run demo.quote"]
    by = _by_name(spans)
    run_span, crossing = by["run demo.quote"], by["crossing quote"]
    assert crossing.parent is not None and crossing.parent.span_id == \
        run_span.context.span_id
    chats = [s for s in spans if s.name == "chat quoter"]
    for child in [*chats, by["effect quote"]]:
        assert child.parent is not None and child.parent.span_id == crossing.context.span_id
    attrs = dict(chats[1].attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "scripted"
    assert attrs["gen_ai.request.model"] == "quoter"
    assert attrs["gen_ai.response.model"] == "scripted:quoter"  # what the server said
    assert attrs["gen_ai.request.temperature"] == 0.0
    assert isinstance(attrs["gen_ai.request.seed"], int)
    assert attrs["gen_ai.usage.input_tokens"] == 0
    assert attrs["gen_ai.usage.output_tokens"] == len(QUOTE_10) // 4
    assert [dict(c.attributes or {})["threshold.attempt"] for c in chats] == [1, 2]
    cattrs = dict(crossing.attributes or {})
    assert cattrs["threshold.outcome"] == "committed" and cattrs["threshold.attempts"] == 2
    assert dict(by["effect quote"].attributes or {})["threshold.effect.key"] == "r-ok/1/quote"
    assert dict(run_span.attributes or {})["threshold.run_id"] == "r-ok"
    assert all(s.status.status_code != StatusCode.ERROR for s in spans)


def test_an_escalation_suspends_without_an_error_span(tmp_path: Path) -> None:
    """A crossing waiting for a human ends its span marked suspended, not failed; when the
    SLA lapses the run executes again (a second run span) and the crossing ends denied."""
    exporter = InMemorySpanExporter()
    tracer = configure_tracing(exporter=exporter, batch=False)
    asyncio.run(_demo(f"sqlite:///{tmp_path / 'o.db'}", tracer, [QUOTE_45], "r-esc"))
    spans = exporter.get_finished_spans()
    assert "effect quote" not in _by_name(spans)
    assert all(s.status.status_code != StatusCode.ERROR for s in spans)
    assert len([s for s in spans if s.name == "run demo.quote"]) == 2
    first, resumed = [dict(s.attributes or {}) for s in spans if s.name == "crossing quote"]
    assert "awaiting pricing_lead" in str(first["threshold.suspended"])
    assert "threshold.suspended" not in resumed and resumed["threshold.outcome"] == "denied"


class _Collector(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A stand-in OTLP/HTTP receiver on 127.0.0.1 that keeps every request body."""
    _Collector.bodies = []
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Collector.bodies
    finally:
        server.shutdown()
        server.server_close()


def _exported_names(bodies: list[tuple[str, bytes]]) -> list[str]:
    names = []
    for path, body in bodies:
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            assert service["service.name"] == "threshold-test"
            names += [s.name for scope in resource.scope_spans for s in scope.spans]
    return sorted(names)


def test_spans_are_exported_over_otlp_http(
        tmp_path: Path, collector: tuple[str, list[tuple[str, bytes]]]) -> None:
    """With an explicit endpoint, spans reach an OTLP/HTTP receiver as protobuf at
    /v1/traces."""
    endpoint, bodies = collector
    tracer = configure_tracing(endpoint=endpoint, service_name="threshold-test")
    asyncio.run(_demo(f"sqlite:///{tmp_path / 'o.db'}", tracer, [QUOTE_10], "r-otlp"))
    assert tracer.force_flush()
    tracer.shutdown()
    assert _exported_names(bodies) == ["chat quoter", "crossing quote", "effect quote",
                                       "run demo.quote"]


def test_otlp_endpoint_from_the_environment(
        tmp_path: Path, collector: tuple[str, list[tuple[str, bytes]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_EXPORTER_OTLP_ENDPOINT`` alone turns export on; without it nothing is sent."""
    endpoint, bodies = collector
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    quiet = configure_tracing(service_name="threshold-test")
    asyncio.run(_demo(f"sqlite:///{tmp_path / 'a.db'}", quiet, [QUOTE_10], "r-quiet"))
    quiet.force_flush()
    assert bodies == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    tracer = configure_tracing(service_name="threshold-test")
    asyncio.run(_demo(f"sqlite:///{tmp_path / 'b.db'}", tracer, [QUOTE_10], "r-env"))
    assert tracer.force_flush()
    tracer.shutdown()
    assert "run demo.quote" in _exported_names(bodies)


def test_the_runtime_does_not_need_opentelemetry(tmp_path: Path) -> None:
    """A runtime without a tracer uses the no-op hook and never imports OpenTelemetry."""
    script = (
        "import asyncio, sys\n"
        "from threshold.apps.demo import run_demo\n"
        "from threshold.store import open_store\n"
        f"print(asyncio.run(run_demo(open_store('sqlite:///{tmp_path / 'n.db'}'), "
        "customers=3))['runs'])\n"
        "print(any(m.startswith('opentelemetry') for m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["3", "False"]
    assert isinstance(Runtime(open_store("memory://")).tracer, NoopTracer)
    assert isinstance(configure_tracing(), OTelTracer)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging(logging.INFO, stream=stream)
    logger = logging.getLogger("threshold")
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_json_logs_for_rejects_commits_and_escalations(
        tmp_path: Path, json_log: io.StringIO) -> None:
    """Rejects and commits log at INFO, escalations at WARNING, one JSON object per line
    with the run and crossing ids; lines written inside a span carry its trace id."""
    exporter = InMemorySpanExporter()
    tracer = configure_tracing(exporter=exporter, batch=False)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    asyncio.run(_demo(url, tracer, [BROKEN, QUOTE_10], "r-log"))
    asyncio.run(_demo(url, None, [QUOTE_45], "r-esc"))
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    seen = [(x["level"], x["message"], x["run_id"]) for x in lines]
    assert seen == [("INFO", "proposal rejected", "r-log"), ("INFO", "crossing committed",
                                                              "r-log"),
                    ("INFO", "proposal rejected", "r-esc"),
                    ("WARNING", "crossing escalated", "r-esc"),
                    ("WARNING", "crossing denied", "r-esc")]  # the SLA fallback
    rejected, committed, _, escalated, denied = lines
    assert rejected["codes"] == ["schema.not_json"] and rejected["attempt"] == 1
    assert committed["crossing_id"] == "r-log/1" and committed["attempts"] == 2
    assert escalated["approval_id"] == "apr-r-esc/1" and escalated["role"] == "pricing_lead"
    assert denied["decided_by"] == "sla-fallback" and denied["outcome"] == "denied"
    assert all(x["logger"] == "threshold" and x["ts"].endswith("+00:00") for x in lines)
    trace_id = f"{exporter.get_finished_spans()[0].context.trace_id:032x}"
    assert rejected["trace_id"] == trace_id and "trace_id" not in escalated


def test_configure_logging_twice_keeps_one_handler(json_log: io.StringIO) -> None:
    """Reconfiguring replaces the JSON handler instead of doubling every line."""
    second = io.StringIO()
    handler = configure_logging(stream=second)
    try:
        logging.getLogger("threshold").info("once", extra={"k": 1})
        assert json_log.getvalue() == ""
        assert [json.loads(x)["k"] for x in second.getvalue().splitlines()] == [1]
    finally:
        logging.getLogger("threshold").removeHandler(handler)
