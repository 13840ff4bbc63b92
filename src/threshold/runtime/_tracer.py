"""The tracing hook: the runtime opens spans through this tiny protocol, so it does not
depend on OpenTelemetry. ``threshold.observability`` ships the OpenTelemetry adapter."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol


class SpanHandle(Protocol):
    """An open span: attributes learnt after it started (tokens, outcome) are set here."""

    def set(self, **attributes: Any) -> None: ...


class Tracer(Protocol):
    """``with tracer.span("threshold.crossing", **attributes) as span: ...``. Attribute
    names may be dotted (``gen_ai.request.model``) when passed as ``**{...}``."""

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[SpanHandle]: ...


class _NoopSpan(AbstractContextManager[SpanHandle]):
    """Its own context manager and handle: one shared object, nothing allocated per span."""

    __slots__ = ()

    def __enter__(self) -> SpanHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set(self, **attributes: Any) -> None:
        return None


_NOOP_SPAN = _NoopSpan()


class NoopTracer:
    """The default: spans record nothing and cost about a microsecond."""

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[SpanHandle]:
        return _NOOP_SPAN


NOOP_TRACER = NoopTracer()
