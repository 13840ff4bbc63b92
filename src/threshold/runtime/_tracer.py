"""The tracing hook: the runtime opens spans through this tiny protocol, so it does not
depend on OpenTelemetry. ``threshold.observability`` ships the OpenTelemetry adapter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol


class SpanHandle(Protocol):
    """An open span: attributes learnt after it started (tokens, outcome) are set here."""

    def set(self, **attributes: Any) -> None: ...


class Tracer(Protocol):
    """``with tracer.span("threshold.crossing", **attributes) as span: ...``. Attribute
    names may be dotted (``gen_ai.request.model``) when passed as ``**{...}``."""

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[SpanHandle]: ...


class _NoopSpan:
    __slots__ = ()

    def set(self, **attributes: Any) -> None:
        return None


_NOOP_SPAN = _NoopSpan()


class NoopTracer:
    """The default: spans cost one generator frame and record nothing."""

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[SpanHandle]:
        yield _NOOP_SPAN


NOOP_TRACER = NoopTracer()
