"""NanoMDM's schema on PostgreSQL: loaded once at the pinned version, its version recorded, a later
pin's change files applied in one transaction (a failing one changes nothing), and a database a
newer werne upgraded refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from ipad.errors import NanoMDMSchemaError
from ipad.golive import nanomdm_db
from ipad.golive.nanomdm_db import MARKER_TABLE, SCHEMA_VERSION, load_schema, schema_file, schema_state

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def dsn(postgres_cluster) -> str:  # type: ignore[no-untyped-def]
    url = postgres_cluster.create_database("nanomdm")
    database = url.split("@/", 1)[1].split("?")[0]
    return f"host={postgres_cluster.socket_dir} user=postgres dbname={database} sslmode=disable"


def columns(dsn: str, table: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                            (table,)).fetchall()
    return {r[0] for r in rows}


def test_loaded_once_and_its_version_recorded(dsn: str) -> None:
    assert schema_state(dsn).version is None and schema_state(dsn).upgrade_needed
    first = load_schema(dsn)
    assert (first.created, first.before, first.version) == (True, None, SCHEMA_VERSION)
    again = load_schema(dsn)
    assert (again.created, again.before, again.applied) == (False, SCHEMA_VERSION, ())
    assert schema_state(dsn).to_dict() == {"version": SCHEMA_VERSION, "pinned": SCHEMA_VERSION,
                                           "upgrade_needed": False}
    with psycopg.connect(dsn) as conn:  # loaded by a werne that recorded no version: taken as the first pin's
        conn.execute(f"DROP TABLE {MARKER_TABLE}")
    assert schema_state(dsn).version == "v0.9.0"
    assert load_schema(dsn).before == "v0.9.0"


def test_a_later_pin_applies_its_change_files_in_one_transaction(dsn: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    load_schema(dsn)
    schema = tmp_path / "schema.sql"
    shutil.copyfile(schema_file(), schema)
    (tmp_path / "10_change.pgsql.sql").write_text("ALTER TABLE devices ADD COLUMN werne_test TEXT;\n")
    (tmp_path / "11_change.pgsql.sql").write_text("ALTER TABLE devices ADD COLUMN werne_other TEXT;\nSELECT 1/0;\n")
    monkeypatch.setattr(nanomdm_db, "SCHEMA_VERSION", "v0.11.0")
    monkeypatch.setattr(nanomdm_db, "SCHEMA_CHANGES", {"v0.9.0": (), "v0.10.0": ("10_change.pgsql.sql",),
                                                        "v0.11.0": ("11_change.pgsql.sql",)})
    assert schema_state(dsn).upgrade_needed
    with pytest.raises(NanoMDMSchemaError, match="division by zero"):
        load_schema(dsn, schema)
    assert not {"werne_test", "werne_other"} & columns(dsn, "devices")  # the first change rolled back too
    assert schema_state(dsn).version == "v0.9.0"
    (tmp_path / "11_change.pgsql.sql").write_text("ALTER TABLE devices ADD COLUMN werne_other TEXT;\n")
    done = load_schema(dsn, schema)
    assert (done.before, done.version, done.applied) == ("v0.9.0", "v0.11.0",
                                                         ("10_change.pgsql.sql", "11_change.pgsql.sql"))
    assert {"werne_test", "werne_other"} <= columns(dsn, "devices")


def test_a_newer_werne_s_schema_is_refused(dsn: str) -> None:
    load_schema(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute(f"UPDATE {MARKER_TABLE} SET version = 'v9.0.0'")  # noqa: S608 - a constant
    with pytest.raises(NanoMDMSchemaError, match="newer than this werne's v0.9.0"):
        load_schema(dsn)
    assert schema_state(dsn).version == "v9.0.0"
