"""Opening a state database: one at the newest revision opens without alembic (its import and
script loading cost every command 0.2 s); a new SQLite one is created at the newest revision from
the schema snapshot, also without alembic (tests/core/test_schema_snapshot.py proves the snapshot
is what alembic makes; one behind is refused: tests/core/test_db_upgrade.py); the head werne reads
from the revision files is alembic's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from core.db import MIGRATIONS_DIR, Database, head_revision
from tests.fixtures.site import REPO

OPEN = """
import sys
from core.db import Database
db = Database(sys.argv[1])
with db.engine.connect() as conn:
    print(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar(), "alembic" in sys.modules)
"""


def opened_in_a_new_process(url: str) -> tuple[str, bool]:
    """(the revision the database is at after Database(url), whether alembic was imported)."""
    r = subprocess.run([sys.executable, "-c", OPEN, url], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    revision, imported = r.stdout.split()
    return revision, imported == "True"


def test_head_revision_is_alembics_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_new_database_is_created_at_the_head_and_opens_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'werne.db'}"
    assert opened_in_a_new_process(url) == (head_revision(), False)
    assert opened_in_a_new_process(url) == (head_revision(), False)


def test_an_emptied_database_is_created_again_at_the_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'werne.db'}"
    db = Database(url)
    newest = set(inspect(db.engine).get_table_names())
    with db.engine.begin() as conn:  # back to an empty schema that says it is at no revision yet
        for table in newest - {"alembic_version"}:
            conn.exec_driver_sql(f'DROP TABLE "{table}"')
        conn.exec_driver_sql("DELETE FROM alembic_version")
    db.dispose()
    assert opened_in_a_new_process(url) == (head_revision(), False)
    db = Database(url)
    assert set(inspect(db.engine).get_table_names()) == newest
    db.dispose()
