"""core/migrations/schema.sql, from which a new SQLite state database is created, is exactly what
replaying every Alembic revision makes; a snapshot that is not at the newest revision is not used."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import core.db
from core.db import SCHEMA_SNAPSHOT, Database, head_revision, read_snapshot, render_snapshot
from tests.fixtures.site import REPO
from tools.schema_snapshot import replayed_statements


def schema(path: Path) -> list[tuple[str, str, str, str | None]]:
    """Everything in sqlite_master (tables, indexes, SQLite's own autoindexes and sequence table)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    conn.close()
    return rows


def revision(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    conn.close()
    return rows


def test_the_committed_snapshot_is_what_the_revisions_make() -> None:
    """Fails after a new revision until `tools/schema_snapshot.py` has written the file again."""
    head = head_revision()
    assert head is not None
    assert SCHEMA_SNAPSHOT.read_text(encoding="utf-8") == render_snapshot(head, replayed_statements())


def test_a_new_database_from_the_snapshot_equals_one_alembic_migrated(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    replayed = tmp_path / "replayed.db"
    core.db.upgrade_schema(f"sqlite:///{replayed}")

    def no_alembic(engine: object) -> None:
        raise AssertionError("a new SQLite database went through alembic")

    monkeypatch.setattr(core.db, "_run_alembic", no_alembic)
    fresh = tmp_path / "fresh.db"
    Database(f"sqlite:///{fresh}").dispose()
    assert schema(fresh) == schema(replayed)
    assert revision(fresh) == revision(replayed) == [(head_revision(),)]


def test_a_snapshot_behind_the_newest_revision_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = read_snapshot()
    assert snapshot is not None
    stale = tmp_path / "schema.sql"
    stale.write_text(render_snapshot("0001", snapshot[1][:3]), encoding="utf-8")
    monkeypatch.setattr(core.db, "SCHEMA_SNAPSHOT", stale)
    replays: list[object] = []
    real = core.db._run_alembic
    monkeypatch.setattr(core.db, "_run_alembic", lambda engine: (replays.append(engine), real(engine)))
    path = tmp_path / "werne.db"
    Database(f"sqlite:///{path}").dispose()
    assert len(replays) == 1
    assert revision(path) == [(head_revision(),)]
    assert len(schema(path)) > 3


OPEN = "import sys; from core.db import Database; Database(sys.argv[1]).dispose()"


def test_processes_creating_the_same_new_database_at_once_all_succeed(tmp_path: Path) -> None:
    """The snapshot goes in under SQLite's write lock and looks again first: the second of two
    processes finds the schema made and opens it, instead of failing on 'table exists'."""
    url = f"sqlite:///{tmp_path / 'werne.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, url], cwd=REPO, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    assert revision(tmp_path / "werne.db") == [(head_revision(),)]
