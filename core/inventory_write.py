"""Changing ipads.csv, the source of truth for each iPad's school and group (moves, retirements).

Why a rewrite of the CSV and not an override table in the state database: the inventory is what
people read, diff and keep in version control, and every other reader (`werne inventory check`, the
enrolment page, compliance, the lab) loads only it; a second place that silently wins would make
ipads.csv lie. So a move edits exactly the cells it changes:

- only the school and group cells of the named rows change; every other line keeps its bytes
  (delimiter, quoting, BOM, line ends, comments in other columns, Excel's Windows-1252);
- the new file is parsed again before it replaces the old one: same serials in the same order, no
  other cell changed, every row still valid, or nothing is written;
- it replaces the old file atomically (a temporary file beside it, fsync, rename), after a backup
  `ipads.csv.<UTC time>.bak`, under a lock, so two moves never interleave and a crash leaves either
  the old or the new file, never half of one.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.csvio import decode_csv_bytes, sniff_delimiter
from core.errors import InputError, InventoryError
from core.files import read_regular_file
from core.inventory import IPAD_CSV_ALIASES, IPAD_GROUPS, Inventory, load_inventory
from core.locks import file_lock


class InventoryWriteError(InputError):
    """ipads.csv cannot be changed as asked; it was left as it was (exit 2)."""


@dataclass(frozen=True)
class Placement:
    """Where an iPad goes: its school and group."""

    school: str
    group: str


def _encoding_of(raw: bytes) -> tuple[str, bool]:
    if raw.startswith(b"\xef\xbb\xbf"):
        return "utf-8", True
    try:
        raw.decode("utf-8")
        return "utf-8", False
    except UnicodeDecodeError:
        return "cp1252", False


def _split_line_end(line: str) -> tuple[str, str]:
    body = line.rstrip("\r\n")
    return body, line[len(body):]


def rewrite_ipads(root: Path, moves: dict[str, Placement] | None = None,
                  remove: set[str] | frozenset[str] = frozenset(), now: datetime | None = None) -> Path:
    """Apply moves (serial -> new school/group) and removals to root/ipads.csv; returns the backup.

    Raises InventoryWriteError (nothing written) for a serial not in the file, an unknown school or
    group, or a result that would not load exactly as intended.
    """
    moves = dict(moves or {})
    path = root / "ipads.csv"
    with file_lock(root / ".ipads.csv.lock", wait=30, what="inventory change"):
        raw = read_regular_file(path)
        text = decode_csv_bytes(raw, str(path))
        encoding, bom = _encoding_of(raw)
        delimiter = sniff_delimiter(text)
        lines = text.splitlines(keepends=True)
        header = next(csv.reader([lines[0]], delimiter=delimiter))
        lookup = {a.lower(): canon for canon, names in IPAD_CSV_ALIASES.items() for a in names | {canon}}
        col = {lookup.get(h.strip().lower()): i for i, h in enumerate(header)}
        before = load_inventory(root)
        for place in moves.values():
            if place.school not in before.schools:
                raise InventoryWriteError(f"unknown school '{place.school}' (not in {root / 'schools.yml'})")
            if place.group not in IPAD_GROUPS:
                raise InventoryWriteError(f"unknown group '{place.group}' (groups: {', '.join(IPAD_GROUPS)})")
        wanted = set(moves) | set(remove)
        unknown = sorted(wanted - set(before.ipads))
        if unknown:
            raise InventoryWriteError(f"not in {path}: {', '.join(unknown)}")
        out: list[str] = [lines[0]]
        seen: set[str] = set()
        for line in lines[1:]:
            body, end = _split_line_end(line)
            cells = next(csv.reader([body], delimiter=delimiter), [])
            serial = cells[col["serial"]].strip().upper() if len(cells) > col["serial"] else ""
            if serial in remove:
                seen.add(serial)
                continue
            if serial in moves and serial not in seen:
                seen.add(serial)
                cells = cells + [""] * (len(header) - len(cells))
                cells[col["school"]], cells[col["group"]] = moves[serial].school, moves[serial].group
                buf = io.StringIO()
                csv.writer(buf, delimiter=delimiter, lineterminator="").writerow(cells)
                line = buf.getvalue() + (end or "\n")
            out.append(line)
        new_text = "".join(out)
        _verify(root, before, new_text, moves, set(remove))
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
        backup = root / f"ipads.csv.{stamp}.bak"
        shutil.copy2(path, backup)
        tmp = root / f".ipads.csv.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(new_text.encode(encoding, errors="strict") if not bom
                        else b"\xef\xbb\xbf" + new_text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            shutil.copymode(path, tmp)
            os.replace(tmp, path)
            dir_fd = os.open(root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            tmp.unlink(missing_ok=True)
    return backup


def _verify(root: Path, before: Inventory, new_text: str, moves: dict[str, Placement], remove: set[str]) -> None:
    """Load the new file as the inventory would; it must hold exactly the intended change."""
    with tempfile.TemporaryDirectory(dir=root, prefix=".verify-") as d:
        for name in ("schools.yml", "hosts.yml"):
            if (root / name).exists():
                shutil.copy2(root / name, Path(d) / name)
        (Path(d) / "ipads.csv").write_text(new_text, encoding="utf-8")
        try:
            after = load_inventory(d)
        except InventoryError as e:
            raise InventoryWriteError(f"ipads.csv would not load after the change ({e.problems[0]}); "
                                      "nothing was written") from None
    expect = [s for s in before.ipads if s not in remove]
    if list(after.ipads) != expect:
        raise InventoryWriteError("ipads.csv would lose or reorder rows; nothing was written")
    for serial in expect:
        a, b = before.ipads[serial], after.ipads[serial]
        want = moves.get(serial)
        if want is not None and (b.school, b.group) != (want.school, want.group):
            raise InventoryWriteError(f"{serial}: the change did not take ({b.school}/{b.group}); nothing was written")
        if want is None and a != b or (a.serial, a.model, a.name) != (b.serial, b.model, b.name):
            raise InventoryWriteError(f"{serial}: another cell would change; nothing was written")
