"""The first verifier of every boundary: untrusted text in, a typed value or a typed reject."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from threshold._json import loads
from threshold.boundary._verdict import Accept, Reject, Verdict

M = TypeVar("M", bound=BaseModel)

SCHEMA_VERIFIER = "schema"
SCHEMA_VERIFIER_VERSION = "1"
MAX_OUTPUT_CHARS = 64 * 1024

_PYDANTIC_CODES = {
    "missing": "schema.missing_field",
    "extra_forbidden": "schema.extra_field",
}


def parse_output(text: str, output: type[M]) -> tuple[M | None, Verdict]:
    """Parse model text into ``output``; every failure is a ``Reject`` with a stable code."""
    if len(text) > MAX_OUTPUT_CHARS:
        return None, Reject(
            "schema.too_large",
            f"output is {len(text)} characters, the limit is {MAX_OUTPUT_CHARS}",
            hint="answer with the JSON object only",
        )
    try:
        data: Any = loads(_strip_fence(text))
    # ValueError also covers integers too long to convert, which json raises apart from
    # its decode errors.
    except (ValueError, RecursionError) as exc:
        return None, Reject(
            "schema.not_json",
            f"output is not JSON ({exc.__class__.__name__})",
            hint="answer with one JSON object and nothing else",
        )
    if not isinstance(data, dict):
        return None, Reject("schema.not_object", f"expected a JSON object, got "
                            f"{type(data).__name__}")
    known = _field_names(output)
    if not known.issuperset(data):
        extra = sorted(k for k in data if k not in known)
        return None, Reject(
            "schema.extra_field",
            f"unexpected field {extra[0]!r}" + (f" and {len(extra) - 1} more" if extra[1:] else ""),
            field=extra[0],
            hint=f"use only the fields {', '.join(sorted(output.model_fields))}",
        )
    try:
        # The model's validator itself: ``model_validate`` only wraps it.
        value = output.__pydantic_validator__.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        code = _PYDANTIC_CODES.get(first["type"], "schema.invalid_value")
        return None, Reject(code, first["msg"], field=where)
    return value, Accept()


@lru_cache(maxsize=1024)
def _field_names(output: type[BaseModel]) -> frozenset[str]:
    """Every name a field may arrive under (its name and its alias); asked per proposal."""
    fields = output.model_fields
    return frozenset({f.alias or name for name, f in fields.items()} | set(fields))


def _strip_fence(text: str) -> str:
    """Models often wrap JSON in a Markdown fence; that is formatting, not content."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        inner = stripped[3:-3]
        return inner.split("\n", 1)[1] if "\n" in inner else inner
    return stripped
