"""Upgrades are an explicit step: a database behind this werne, or at a newer werne's revision, is
refused with one line (exit 3) until `werne db upgrade` (or the newer werne) deals with it; an
upgrade runs in one transaction, so an interrupted one leaves the old revision and a second run
completes it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine

from core.db import Database, alembic_config, head_revision, inspect_schema, revision_chain, upgrade_schema
from core.errors import StateError

OLD = "0010"  # behind: 0011 makes the laptop_* tables, 0012 chain_signatures, then the newer ones


def after_old() -> list[str]:
    """The revisions after OLD up to the head, oldest first (from the files' chain)."""
    chain, order, rev = revision_chain(), [], head_revision()
    while rev is not None and rev != OLD:
        order.append(rev)
        rev = chain[rev]
    return order[::-1]


def database_at(path: Path, revision: str) -> str:
    """An SQLite state database migrated only up to `revision`, as an older werne left it."""
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()
    return url


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def revision(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def test_the_revisions_are_one_chain_ending_at_the_head() -> None:
    chain = revision_chain()
    assert OLD in chain and chain[str(head_revision())] is not None


def test_a_database_behind_is_refused_until_upgraded(run_cli, state_dir: Path) -> None:
    path = state_dir / "werne.db"
    database_at(path, OLD)
    r = run_cli("audit")
    assert (r.exit_code, r.output) == (3, f"Error: state database is at revision {OLD}, this werne needs "
                                          f"{head_revision()}: run werne db upgrade\n")
    assert revision(path) == OLD and "laptop_pending" not in tables(path)  # nothing migrated by the refusal

    r = run_cli("db", "status", "--json")
    assert r.exit_code == 0, r.output
    status = json.loads(r.output)["werne"]
    assert status == {"current": OLD, "head": head_revision(), "pending": after_old(), "known": True,
                      "upgrade_needed": True}

    r = run_cli("db", "upgrade", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["werne"] == {"before": OLD, "after": head_revision(), "applied": after_old()}
    assert revision(path) == head_revision()
    assert run_cli("audit").exit_code == 0
    r = run_cli("db", "upgrade", "--json")  # again: nothing to do
    assert json.loads(r.output)["werne"]["applied"] == []


def test_a_newer_werne_s_database_is_left_alone(run_cli, state_dir: Path) -> None:
    path = state_dir / "werne.db"
    upgrade_schema(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    before = path.read_bytes()
    for args in (("audit",), ("db", "upgrade")):
        r = run_cli(*args)
        assert r.exit_code == 3, r.output
        assert r.output.startswith("Error: state database is at revision 0099, newer than this werne's newest")
        assert r.output.count("\n") == 1
    assert path.read_bytes() == before
    r = run_cli("db", "status", "--json")
    assert r.exit_code == 3
    assert json.loads(r.output.split("\nError:")[0])["werne"]["known"] is False


def test_an_interrupted_upgrade_leaves_the_old_revision_and_a_second_run_completes_it(tmp_path: Path) -> None:
    path = tmp_path / "werne.db"
    url = database_at(path, OLD)
    with sqlite3.connect(path) as conn:  # 0012's table is in the way: the upgrade fails in its last step
        conn.execute("CREATE TABLE chain_signatures (x INTEGER)")
    with pytest.raises(StateError, match="cannot upgrade state database: table chain_signatures already exists"):
        upgrade_schema(url)
    assert revision(path) == OLD
    assert "laptop_pending" not in tables(path)  # 0011, applied before the failure, is rolled back too
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE chain_signatures")
    assert upgrade_schema(url).applied == tuple(after_old())
    assert inspect_schema(url).pending == ()
    Database(url).dispose()
