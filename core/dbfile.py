"""The SQLite state database file: made whole or not at all, and checked before it is opened.

SQLite treats a missing or a 0-byte file as a new, empty database, so a database truncated to
nothing would silently become a fresh history (`compliance verify`: "ok: 0 runs"). werne therefore
never leaves a 0-byte file behind: a new database is made under a temporary name, with its header
written, and linked into place. A file at the path that is empty, has no SQLite header, or is
shorter than its header says is damaged: one StateError (exit 3), never a traceback or a new history.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

from core.errors import StateError

SQLITE_MAGIC = b"SQLite format 3\x00"
RESTORE_HINT = "restore it from a backup (docs/operations.md), or move it away to start a new, empty history"


def create_sqlite_file(path: Path) -> None:
    """Make a new, empty SQLite database (WAL mode, header written) at `path` if nothing is there."""
    if path.exists() or path.is_symlink():
        return
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # writes page 1: the file has its header now
        finally:
            conn.close()
        try:
            os.link(tmp, path)  # never replaces a file another process made meanwhile
        except FileExistsError:
            pass
    except (OSError, sqlite3.Error) as e:
        raise StateError(f"cannot create state database {path}: {getattr(e, 'strerror', None) or e}") from None
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)


def check_sqlite_file(path: Path) -> None:
    """Raise StateError if the file at `path` is not a whole SQLite database (cheap checks first)."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return
    except OSError as e:
        raise StateError(f"cannot read state database {path}: {e.strerror}") from None
    if size == 0:
        raise StateError(f"state database {path} is empty (0 bytes): it was truncated; {RESTORE_HINT}")
    if not header.startswith(SQLITE_MAGIC):
        raise StateError(f"state database {path} is not an SQLite database (bad header); {RESTORE_HINT}")
    if len(header) < 100:
        raise StateError(f"state database {path} is damaged (shorter than its header); {RESTORE_HINT}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count in the header is valid when the change counter equals "version valid for".
    counted = header[24:28] == header[92:96] and pages > 0
    if page_size < 512 or page_size & (page_size - 1) or size % page_size or (counted and size < pages * page_size):
        # Shorter than it should be: let SQLite decide (a checkpoint in progress can look like this
        # for a moment; SQLite reads through the WAL and knows).
        _quick_check(path)


def _quick_check(path: Path) -> None:
    try:
        conn = sqlite3.connect(path, timeout=15)
        try:
            rows = conn.execute("PRAGMA quick_check(5)").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise StateError(f"state database {path} is damaged: {e}; {RESTORE_HINT}") from None
    problems = [str(r[0]) for r in rows if r and r[0] != "ok"]
    if problems:
        raise StateError(f"state database {path} is damaged: {problems[0][:200]}; {RESTORE_HINT}")
