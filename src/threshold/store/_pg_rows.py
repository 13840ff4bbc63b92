"""PostgreSQL's own encoding (free text made storable) and a join helper;
the column lists and row readers are shared with SQLite in ``_rows``."""

from __future__ import annotations


def qualified(cols: str, alias: str) -> str:
    """``a, b`` -> ``t.a, t.b``, for statements that join."""
    return ", ".join(f"{alias}.{c.strip()}" for c in cols.split(","))


def text(value: str | None) -> str | None:
    """PostgreSQL text holds no NUL and no lone surrogate; outside text (error messages,
    reasons) may carry both. Exact model output is kept JSON-encoded instead (``raw``)."""
    if value is None:
        return None
    value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value
