"""Report files (JSON, Markdown, PNG) from a reports folder, and the live diagnose panel.

Only files found by the listing can be opened, by their listed name: a request naming
``../secret`` or a symlink out of the folder finds nothing.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from threshold.errors import NotFoundError
from threshold.store import Store

KINDS = {".json": "json", ".md": "markdown", ".markdown": "markdown", ".png": "png"}
MAX_FILES = 500
MAX_TEXT_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 3


@dataclass(frozen=True, slots=True)
class ReportFile:
    name: str  # relative to the reports folder, with forward slashes
    kind: str
    size: int
    path: Path


@dataclass(frozen=True, slots=True)
class RenderedReport:
    file: ReportFile
    text: str | None  # JSON pretty-printed or Markdown as written; None for PNG
    note: str | None = None


def list_reports(folder: Path | None) -> list[ReportFile]:
    if folder is None or not folder.is_dir():
        return []
    root = folder.resolve()
    found: list[ReportFile] = []
    for path in sorted(root.rglob("*")):
        kind = KINDS.get(path.suffix.lower())
        rel = path.relative_to(root)
        if kind is None or len(rel.parts) > MAX_DEPTH or not path.is_file():
            continue
        if not path.resolve().is_relative_to(root):
            continue  # a symlink pointing out of the folder
        found.append(ReportFile(rel.as_posix(), kind, path.stat().st_size, path))
        if len(found) >= MAX_FILES:
            break
    return found


def find_report(folder: Path | None, name: str) -> ReportFile:
    for report in list_reports(folder):
        if report.name == name:
            return report
    raise NotFoundError(f"no report {name!r}")


def render_report(report: ReportFile) -> RenderedReport:
    if report.kind == "png":
        return RenderedReport(report, None)
    if report.size > MAX_TEXT_BYTES:
        return RenderedReport(report, None, f"too large to show ({report.size} bytes)")
    text = report.path.read_text(encoding="utf-8", errors="replace")
    if report.kind == "json":
        try:
            return RenderedReport(report, json.dumps(json.loads(text), indent=2,
                                                     ensure_ascii=False))
        except ValueError as exc:
            return RenderedReport(report, text, f"not valid JSON: {exc}")
    return RenderedReport(report, text)


@dataclass(frozen=True, slots=True)
class DiagnosePanel:
    available: bool
    text: str | None = None
    data: dict[str, Any] | None = None


DiagnoseFn = Callable[..., Awaitable[Any]]


def diagnose_function() -> DiagnoseFn | None:
    """``threshold.methodology.diagnose`` when that module is installed and exports it."""
    try:
        module = importlib.import_module("threshold.methodology")
    except ImportError:
        return None
    fn = getattr(module, "diagnose", None)
    return fn if callable(fn) else None


async def live_diagnosis(store: Store, run_id: str | None) -> DiagnosePanel:
    fn = diagnose_function()
    if fn is None:
        return DiagnosePanel(False)
    result = await fn(store, run_id=run_id or None)
    text = result.render_text() if hasattr(result, "render_text") else None
    data = result.to_dict() if hasattr(result, "to_dict") else None
    return DiagnosePanel(True, text if isinstance(text, str) else None,
                         data if isinstance(data, dict) else None)
