"""The OpenTelemetry adapter for the runtime's tracing hook (``Runtime(tracer=...)``).

Spans: ``run <agent>`` per execution, ``crossing <boundary>``, ``chat <model>`` per attempt
(GenAI semantic conventions: ``gen_ai.operation.name``, ``gen_ai.request.model``,
``gen_ai.usage.input_tokens``...) and ``effect <action>``. A run that suspends (a timer, a
message, a human) is not an error: its span ends with ``threshold.suspended`` set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from threshold.errors import MissingExtraError, Signal, Suspend
from threshold.runtime import SpanHandle

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

_Scalar = str | bool | int | float


def _attribute(value: Any) -> Any:
    """OpenTelemetry takes scalars and homogeneous sequences of them; None is left out."""
    if isinstance(value, _Scalar):
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        items = [v for v in value if v is not None]
        if items and all(isinstance(v, str) for v in items):
            return [str(v) for v in items]
        if items and all(isinstance(v, bool | int | float) for v in items):
            return list(items)
        return [str(v) for v in items]
    return str(value)


def _attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: _attribute(v) for k, v in attributes.items() if v is not None}


class _Handle:
    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def set(self, **attributes: Any) -> None:
        self._span.set_attributes(_attributes(attributes))


class OTelTracer:
    """Implements ``threshold.runtime.Tracer`` on an OpenTelemetry tracer provider."""

    def __init__(self, provider: TracerProvider, *, owns_provider: bool = True) -> None:
        self.provider = provider
        self._tracer: Tracer = provider.get_tracer("threshold")
        self._owns = owns_provider

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[SpanHandle]:
        from opentelemetry.trace import Status, StatusCode

        with self._tracer.start_as_current_span(
                name, attributes=_attributes(attributes), record_exception=False,
                set_status_on_exception=False) as span:
            try:
                yield _Handle(span)
            except Signal as signal:  # a suspend or a kill: control flow, not a failure
                key = "threshold.suspended" if isinstance(signal, Suspend) else "threshold.signal"
                span.set_attribute(key, str(signal))
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise
            except BaseException as exc:  # cancelled (kill switch, shutdown) or crashed
                span.set_attribute("threshold.interrupted", type(exc).__name__)
                raise

    def force_flush(self, timeout_ms: int = 10_000) -> bool:
        return bool(self.provider.force_flush(timeout_ms))

    def shutdown(self) -> None:
        if self._owns:
            self.provider.shutdown()


def configure_tracing(*, endpoint: str | None = None, service_name: str = "threshold",
                      exporter: SpanExporter | None = None, batch: bool = True,
                      headers: dict[str, str] | None = None) -> OTelTracer:
    """A tracer for ``Runtime(tracer=...)``. Spans go to ``exporter`` if given (tests pass an
    in-memory one), else via OTLP/HTTP to ``endpoint`` or to ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (or ``..._TRACES_ENDPOINT``) when set; otherwise they are made and dropped. The provider
    is this tracer's own: the process-global OpenTelemetry provider is left alone."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ModuleNotFoundError as exc:
        raise MissingExtraError("otel", exc.name or "opentelemetry-sdk") from exc
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is None and (endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                             or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        exporter = _otlp_exporter(endpoint, headers)
    if exporter is not None:
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
    return OTelTracer(provider)


def _otlp_exporter(endpoint: str | None, headers: dict[str, str] | None) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ModuleNotFoundError as exc:
        raise MissingExtraError("otel", exc.name or "opentelemetry-exporter-otlp") from exc
    if endpoint is None:  # the exporter reads the OTEL_EXPORTER_OTLP_* variables itself
        return OTLPSpanExporter(headers=headers)
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"  # as the OTLP spec derives it from a base endpoint
    return OTLPSpanExporter(endpoint=url, headers=headers)
