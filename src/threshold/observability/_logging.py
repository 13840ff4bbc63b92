"""Structured logs: one JSON object per line from the stdlib ``logging``.

The runtime logs crossings, rejects and escalations on the ``threshold`` logger with their
ids as ``extra`` fields; ``JsonFormatter`` writes those fields, the level, the logger, the
message and, inside an OpenTelemetry span, its trace and span ids (to join logs to traces).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": "INFO", "logger": "threshold", "message": ..., **extra}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        entry.update(_trace_ids())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _trace_ids() -> dict[str, str]:
    try:
        from opentelemetry import trace
    except ModuleNotFoundError:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


_MARK = "_threshold_json_handler"


def configure_logging(level: int | str = logging.INFO, *, stream: TextIO | None = None,
                      logger: str = "threshold") -> logging.Handler:
    """Send ``logger``'s records at ``level`` and above to ``stream`` (stderr) as JSON lines.
    Calling it again replaces the handler it added before, so handlers never pile up."""
    target = logging.getLogger(logger)
    for old in [h for h in target.handlers if getattr(h, _MARK, False)]:
        target.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _MARK, True)
    target.addHandler(handler)
    target.setLevel(level)
    return handler
