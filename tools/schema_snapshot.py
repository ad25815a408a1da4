"""Write core/migrations/schema.sql: the SQLite schema that replaying every Alembic revision makes.

    .venv/bin/python tools/schema_snapshot.py          # after adding a revision

A new SQLite state database is created from this file in one transaction (core.db); the file names
the revision it stands for, and core.db uses it only when that is the newest one.
tests/core/test_schema_snapshot.py fails when the file and a replay differ. Source: this repo's own
migrations (core/migrations/versions); no outside data.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.db import SCHEMA_SNAPSHOT, head_revision, render_snapshot, upgrade_schema  # noqa: E402


def schema_statements(path: Path) -> list[str]:
    """Every CREATE statement of the database at `path`: the tables in the order SQLite made them,
    then the indexes (and any trigger or view) by name. Alembic's batch mode makes a table's indexes
    again in set order, which differs from one process to the next; their order means nothing."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
                            "ORDER BY type != 'table', CASE WHEN type = 'table' THEN rowid END, name").fetchall()
    conn.close()
    return [r[0] for r in rows]


def replayed_statements() -> list[str]:
    """The schema of a new database that Alembic migrated through every revision."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "werne.db"
        upgrade_schema(f"sqlite:///{path}")
        return schema_statements(path)


def main() -> int:
    head = head_revision()
    if head is None:
        print("schema_snapshot: the migrations are not one chain of revisions", file=sys.stderr)
        return 1
    SCHEMA_SNAPSHOT.write_text(render_snapshot(head, replayed_statements()), encoding="utf-8")
    print(f"wrote {SCHEMA_SNAPSHOT} at revision {head}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
