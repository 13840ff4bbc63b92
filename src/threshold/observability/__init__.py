"""Observability: OpenTelemetry spans for runs, crossings, model calls and effects (through
the runtime's ``tracer`` hook), and JSON-lines logs.

``Runtime(store, tracer=configure_tracing())`` exports over OTLP/HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (or ``endpoint=`` is given); tracing needs the
``otel`` extra, logging needs nothing.
"""

from threshold.observability._logging import JsonFormatter, configure_logging
from threshold.observability._tracing import OTelTracer, configure_tracing

__all__ = ["JsonFormatter", "OTelTracer", "configure_logging", "configure_tracing"]
