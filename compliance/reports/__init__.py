"""Reports of a stored run: HTML (one self-contained file), CSV (German Excel), JSON (documented
schema, compliance/report.schema.json), JUnit XML and OSCAL assessment results (compliance.oscal).
Entry point: `write_report`."""

from __future__ import annotations

from pathlib import Path

from compliance.errors import ReportFormatError
from compliance.reports.html import render_html
from compliance.reports.model import build_report
from compliance.reports.tabular import render_csv, render_json, render_junit
from core.db import Database
from core.files import write_output

FORMATS = ("html", "csv", "json", "junit", "oscal")


def render(db: Database, run_id: int | None, fmt: str) -> bytes:
    """The report of run `run_id` (the latest complete run when None) in format `fmt`, as bytes."""
    if fmt not in FORMATS:
        raise ReportFormatError(f"unknown report format '{fmt}' (use one of: {', '.join(FORMATS)})")
    if fmt == "oscal":
        from compliance.oscal import render_oscal

        return render_oscal(db, run_id)
    report = build_report(db, run_id, with_trend=fmt in ("html", "json"))
    if fmt == "html":
        return render_html(report).encode("utf-8")
    if fmt == "csv":
        return render_csv(report).encode("utf-8")
    if fmt == "json":
        return render_json(report).encode("utf-8")
    return render_junit(report)


def write_report(db: Database, run_id: int | None, fmt: str, out_path: str | Path) -> Path:
    """Write the report atomically to `out_path` (a temporary file, then a rename); returns the path."""
    return write_output(out_path, render(db, run_id, fmt), parents=True)
