"""Reports of a stored run: HTML (one self-contained file), CSV (German Excel), JSON (documented
schema, compliance/report.schema.json) and JUnit XML. Entry point: `write_report`."""

from __future__ import annotations

import contextlib
from pathlib import Path

from compliance.errors import ReportFormatError
from compliance.reports.model import build_report
from core.db import Database

FORMATS = ("html", "csv", "json", "junit")


def render(db: Database, run_id: int | None, fmt: str) -> bytes:
    """The report of run `run_id` (the latest complete run when None) in format `fmt`, as bytes."""
    if fmt not in FORMATS:
        raise ReportFormatError(f"unknown report format '{fmt}' (use one of: {', '.join(FORMATS)})")
    report = build_report(db, run_id, with_trend=fmt in ("html", "json"))
    if fmt == "html":
        from compliance.reports.html import render_html

        return render_html(report).encode("utf-8")
    if fmt == "csv":
        from compliance.reports.tabular import render_csv

        return render_csv(report).encode("utf-8")
    if fmt == "json":
        from compliance.reports.tabular import render_json

        return render_json(report).encode("utf-8")
    from compliance.reports.tabular import render_junit

    return render_junit(report)


def write_report(db: Database, run_id: int | None, fmt: str, out_path: str | Path) -> Path:
    """Write the report atomically to `out_path` (a temporary file, then a rename); returns the path."""
    out = Path(out_path)
    data = render(db, run_id, fmt)
    if out.is_dir():
        raise ReportFormatError(f"{out} is a directory; give a file name")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(out)
    except OSError as e:
        with contextlib.suppress(OSError):  # on a read-only file system even this fails
            tmp.unlink(missing_ok=True)
        raise ReportFormatError(f"cannot write {out}: {e.strerror}") from None
    return out
