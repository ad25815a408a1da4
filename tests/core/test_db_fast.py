"""core.db's fast paths for the webhook receiver: bulk_execute, select_rows, deferred WAL checkpoints.

Each fast path must store and read exactly what SQLAlchemy's own conn.execute does; the tests
compare the raw stored text (read with plain sqlite3) of both paths, on a real SQLite file.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import bindparam, insert, select, update

from core.db import Database, bulk_execute, select_rows
from core.errors import StateError
from ipad.models import MDMCommand, MDMDevice, MDMDeviceFact
from ipad.store.statements import upsert_facts as _upsert_facts
from tests.fixtures.mdm import rows_in_db_file

T_CMD = MDMCommand.__table__
T_DEV = MDMDevice.__table__
T_FACT = MDMDeviceFact.__table__
NOW = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
CET = timezone(timedelta(hours=1))


def command_rows(n: int) -> list[dict]:
    return [
        {
            "command_uuid": f"C{i % 3}",
            "enrollment_id": f"E{i:03d}",
            "request_type": "DeviceInformation" if i % 2 else "X" * 100,  # over-long: cut to 64
            "status": "Acknowledged",
            "actor": "",
            "detail": {"profile": f"p{i}", "umlaut": "Grundschule Süd"},
            "enqueued_at": None if i % 2 else datetime(2026, 1, 1, 12, tzinfo=CET),  # stored as 11:00 UTC
            "updated_at": NOW,
            "not_now_count": i,
            "error_chain": [] if i % 3 else [{"ErrorCode": 12, "ErrorDomain": "D"}],
            "result": {"QueryResponses": {"OSVersion": "17.6.1", "n": i, "ok": True, "r": 0.5}},
        }
        for i in range(n)
    ]


def raw_rows(db_file: Path, table: str) -> list[tuple]:
    con = sqlite3.connect(db_file)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()  # noqa: S608 - fixed table names
    finally:
        con.close()


@pytest.fixture
def two_dbs(tmp_path: Path, migrated_db):  # type: ignore[no-untyped-def]
    a, b = Database(migrated_db(tmp_path / "a.db")), Database(migrated_db(tmp_path / "b.db"))
    yield (a, tmp_path / "a.db"), (b, tmp_path / "b.db")
    a.dispose()
    b.dispose()


def test_bulk_execute_stores_what_conn_execute_stores(two_dbs) -> None:  # type: ignore[no-untyped-def]
    (fast, fast_file), (plain, plain_file) = two_dbs
    rows = command_rows(12)
    with fast.transaction() as conn:
        bulk_execute(conn, insert(T_CMD), rows)
    with plain.transaction() as conn:
        conn.execute(insert(T_CMD), rows)
    stored = raw_rows(fast_file, "mdm_commands")
    assert len(stored) == 12
    assert stored == raw_rows(plain_file, "mdm_commands")
    # The conversions really ran (not just the same mistake on both sides).
    assert stored[0][3] == "X" * 64 and "2026-01-01 11:00:00" in stored[0][7]
    assert '"Grundschule S' in stored[0][6]

    # UPDATE ... WHERE by bound keys, and an ON CONFLICT upsert, through both paths.
    changes = [{"b_command_uuid": "C0", "b_enrollment_id": f"E{i:03d}", "b_status": "Error", "b_updated_at": NOW}
               for i in (0, 3, 6)]  # fmt: skip
    stmt = (
        update(T_CMD)
        .where(T_CMD.c.command_uuid == bindparam("b_command_uuid"))
        .where(T_CMD.c.enrollment_id == bindparam("b_enrollment_id"))
        .values(status=bindparam("b_status"), updated_at=bindparam("b_updated_at"))
    )
    facts = [{"enrollment_id": "E1", "kind": k, "at": NOW, "command_uuid": None, "value": {"k": k}} for k in "ab"]
    facts.append({"enrollment_id": "E1", "kind": "a", "at": NOW, "command_uuid": "C9", "value": [1, None]})
    for db, run in ((fast, bulk_execute), (plain, None)):
        with db.transaction() as conn:
            for s, r in ((stmt, changes), (_upsert_facts("sqlite"), facts[:2]), (_upsert_facts("sqlite"), facts[2:])):
                bulk_execute(conn, s, r) if run else conn.execute(s, r)
    assert [r[4] for r in raw_rows(fast_file, "mdm_commands")].count("Error") == 3
    assert raw_rows(fast_file, "mdm_commands") == raw_rows(plain_file, "mdm_commands")
    assert raw_rows(fast_file, "mdm_device_facts") == raw_rows(plain_file, "mdm_device_facts")
    assert [r[5] for r in raw_rows(fast_file, "mdm_device_facts")] == ["[1, null]", '{"k": "b"}']


def test_bulk_execute_falls_back_where_sqlalchemy_must_decide(two_dbs) -> None:  # type: ignore[no-untyped-def]
    (fast, fast_file), (plain, plain_file) = two_dbs
    # Columns left to Python-side defaults (updated_at=utcnow, detail=dict, ...): SQLAlchemy fills them.
    few = [{"command_uuid": "C1", "enrollment_id": f"E{i}", "request_type": "ProfileList"} for i in range(3)]
    with fast.transaction() as conn:
        bulk_execute(conn, insert(T_CMD), few)
    stored = raw_rows(fast_file, "mdm_commands")
    assert len(stored) == 3 and all(r[8] is not None and r[6] == "{}" for r in stored)
    # Rows with differing keys: SQLAlchemy's error, as a StateError, and nothing stored.
    bad = [*command_rows(2), {"command_uuid": "C", "enrollment_id": "E", "oops": 1}]
    with pytest.raises(StateError), fast.transaction() as conn:
        bulk_execute(conn, insert(T_CMD), bad)
    assert len(raw_rows(fast_file, "mdm_commands")) == 3
    # A constraint violation inside the fast path rolls back the whole transaction.
    with pytest.raises(StateError, match="UNIQUE"), fast.transaction() as conn:
        bulk_execute(conn, insert(T_CMD), command_rows(2))
        bulk_execute(conn, insert(T_CMD), command_rows(2))
    assert len(raw_rows(fast_file, "mdm_commands")) == 3
    with plain.transaction() as conn:
        conn.execute(insert(T_CMD), few)
    assert [r[1:6] for r in raw_rows(plain_file, "mdm_commands")] == [r[1:6] for r in stored]


IDS_IN = select(T_DEV).where(T_DEV.c.enrollment_id.in_(bindparam("ids", expanding=True)))
TWO_LISTS_AND_FIXED = select(T_FACT.c.enrollment_id, T_FACT.c.kind, T_FACT.c.value, T_FACT.c.at).where(
    T_FACT.c.enrollment_id.in_(bindparam("ids", expanding=True)),
    T_FACT.c.kind.in_(bindparam("kinds", expanding=True)),
    T_FACT.c.kind.like("_checkin.%"),
)


def test_select_rows_reads_what_conn_execute_reads(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with db.transaction() as conn:
            conn.execute(
                insert(T_DEV),
                [{"enrollment_id": f"E{i:03d}", "udid": f"U{i}", "state": "enrolled", "last_seen_at": NOW,
                  "awaiting_configuration": i % 2 == 0, "unlock_token": b"\x00t" if i == 1 else None,
                  "token_update_tally": i} for i in range(700)],
            )  # fmt: skip
            conn.execute(
                insert(T_FACT),
                [{"enrollment_id": f"E{i:03d}", "kind": k, "at": NOW, "value": {"t": k, "i": i}}
                 for i in range(5) for k in ("_checkin.Authenticate", "_checkin.TokenUpdate", "SecurityInfo")],
            )  # fmt: skip
        with db.transaction() as conn:
            for ids in (["E001"], ["E000", "E002", "nope"], [f"E{i:03d}" for i in range(0, 700, 2)]):
                want = [dict(r) for r in conn.execute(IDS_IN, {"ids": ids}).mappings()]
                got = select_rows(conn, IDS_IN, {"ids": ids})
                assert got == want and len(got) == len([i for i in ids if i != "nope"])
            got = select_rows(conn, IDS_IN, {"ids": ["E001"]})[0]
            assert (got["last_seen_at"], got["unlock_token"], got["awaiting_configuration"]) == (NOW, b"\x00t", False)
            params = {"ids": ["E001", "E003", "E004"], "kinds": ["_checkin.TokenUpdate", "SecurityInfo"]}
            want = [dict(r) for r in conn.execute(TWO_LISTS_AND_FIXED, params).mappings()]
            got = select_rows(conn, TWO_LISTS_AND_FIXED, params)
            assert got == want
            assert sorted((r["enrollment_id"], r["value"]["t"]) for r in got) == [
                ("E001", "_checkin.TokenUpdate"), ("E003", "_checkin.TokenUpdate"), ("E004", "_checkin.TokenUpdate")
            ]  # fmt: skip
            assert select_rows(conn, IDS_IN, {"ids": []}) == []
    finally:
        db.dispose()


def test_deferred_checkpoints_keep_the_wal_until_checkpoint(tmp_path: Path) -> None:
    """With defer_checkpoints, commits stay in the WAL (no fsync'd copy per commit) until checkpoint()."""
    db_file = tmp_path / "w.db"
    db = Database(f"sqlite:///{db_file}")

    try:
        db.defer_checkpoints()
        db.defer_checkpoints()  # idempotent
        for start in range(0, 3000, 100):  # ~1,500 WAL pages: past SQLite's own 1,000-page checkpoint
            with db.transaction() as conn:
                rows = command_rows(100)
                for j, r in enumerate(rows):
                    r["enrollment_id"] = f"E{start + j}"
                    r["result"] = {"pad": "x" * 1500}
                bulk_execute(conn, insert(T_CMD), rows)
        assert rows_in_db_file(db_file, "mdm_commands") == 0
        db.checkpoint()
        assert rows_in_db_file(db_file, "mdm_commands") == 3000
    finally:
        db.dispose()
