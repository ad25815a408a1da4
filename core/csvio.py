"""Reading the CSV files people really produce: Apple School Manager exports and German Excel.

Accepts UTF-8 with or without a BOM (and Windows-1252 as a fallback, which is what German Excel
writes by default), `,` or `;` separators, and header aliases. Rejects binaries with one clear line.
Writing neutralises cells that a spreadsheet would run as a formula (CSV injection).
"""

from __future__ import annotations

import csv
import io

from core.errors import InputError

MAX_CSV_BYTES = 5 * 1024 * 1024


class CSVFormatError(InputError):
    """A CSV file cannot be read as a table."""


def decode_csv_bytes(raw: bytes, name: str) -> str:
    if not raw.strip():
        raise CSVFormatError(f"{name}: the file is empty")
    if len(raw) > MAX_CSV_BYTES:
        raise CSVFormatError(f"{name}: the file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB")
    if raw[:4] == b"PK\x03\x04" or raw[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise CSVFormatError(f"{name}: this is an Excel workbook, not CSV; save it as 'CSV UTF-8' first")
    if b"\x00" in raw:
        raise CSVFormatError(f"{name}: this is not a text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def sniff_delimiter(text: str) -> str:
    first = text.splitlines()[0] if text else ""
    return ";" if first.count(";") > first.count(",") else ","


def read_rows(text: str, name: str, aliases: dict[str, set[str]], required: set[str]
              ) -> list[tuple[int, dict[str, str]]]:
    """Rows as (line number, {canonical column: value}). Header names are matched case-insensitively
    against `aliases` (canonical name -> accepted spellings)."""
    # strict: an unclosed quote at the end of the file is an error, not a cell that ends there.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise CSVFormatError(f"{name}: the file is empty") from None
    except csv.Error as e:
        raise CSVFormatError(f"{name}:1: {_reason(e)}") from None
    if reader.line_num != 1:
        raise CSVFormatError(f"{name}:1: the header runs over {reader.line_num} lines; is a closing quote missing?")
    lookup = {a.lower(): canon for canon, names in aliases.items() for a in names | {canon}}
    columns = [lookup.get(h.strip().lower()) for h in header]
    missing = required - {c for c in columns if c}
    if missing:
        raise CSVFormatError(f"{name}:1: missing column(s): {', '.join(sorted(missing))}")
    rows: list[tuple[int, dict[str, str]]] = []
    first = reader.line_num + 1  # the physical line the next record starts on
    try:
        for cells in reader:
            start, first = first, reader.line_num + 1
            if start != reader.line_num:
                # A quoted cell that runs over a line end: in these files always a stray or
                # unclosed quote, which would swallow the following rows into one cell.
                raise CSVFormatError(
                    f"{name}:{start}: a quoted cell runs over {reader.line_num - start + 1} lines "
                    f"(to line {reader.line_num}); is a closing quote missing?"
                )
            if not any(c.strip() for c in cells):
                continue
            row = {col: cell.strip() for col, cell in zip(columns, cells, strict=False) if col}
            rows.append((reader.line_num, row))
    except csv.Error as e:
        raise CSVFormatError(f"{name}:{first}: {_reason(e)}") from None
    return rows


def _reason(e: csv.Error) -> str:
    text = str(e)
    return "a quote opened on this line is never closed" if "unexpected end of data" in text else text


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: object) -> str:
    """Make a cell safe to open in a spreadsheet: a leading formula character gets a quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(rows: list[list[object]], excel: bool = True) -> str:
    """CSV that German Excel opens correctly: UTF-8 BOM, `;` separator, CRLF, neutralised cells."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";" if excel else ",", lineterminator="\r\n")
    for r in rows:
        w.writerow([neutralise_cell(c) for c in r])
    return ("\ufeff" if excel else "") + buf.getvalue()
