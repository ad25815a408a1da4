"""Issue 22: CSV that werne writes (reports, exports) opened in a spreadsheet or read by a CSV reader:
a cell from outside neither runs as a formula nor starts a row of its own."""

from __future__ import annotations

import csv
import io

from core.csvio import write_csv


def test_a_line_feed_stays_in_its_cell_and_no_cell_starts_a_formula() -> None:
    hostile = ["ok\n=HYPERLINK(\"http://x\")", "=1+2", "+SUM(A1)", "-2", "@cmd", "\tx", "\r=y", "fine"]
    text = write_csv([["device", *(f"c{i}" for i in range(len(hostile)))], ["ZD1", *hostile]])
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=";"))
    assert len(rows) == 2  # the line feed did not forge a row
    cells = rows[1][1:]
    assert cells[0] == "ok\n=HYPERLINK(\"http://x\")"  # inside a quoted cell: text, not a formula
    assert all(not c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells), cells
    assert cells[1:5] == ["'=1+2", "'+SUM(A1)", "'-2", "'@cmd"] and cells[-1] == "fine"
