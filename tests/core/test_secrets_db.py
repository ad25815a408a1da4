"""Secrets never show themselves; the state database migrates and survives a failed transaction."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from core.audit import list_events, record
from core.db import Database
from core.errors import SecretError
from core.models import AuditEvent
from core.secrets import read_secret


def test_secret_never_prints(tmp_path: Path):
    f = tmp_path / "k"
    f.write_text("s3cr3t-value\n")
    s = read_secret(file=f, what="MDM API key")
    assert s.reveal() == "s3cr3t-value"
    assert "s3cr3t" not in f"{s} {s!r} {[s]}"
    with pytest.raises(SecretError, match="does not exist"):
        read_secret(file=tmp_path / "missing", what="MDM API key")
    f.chmod(0o000)
    import os
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(SecretError, match="not readable"):
            read_secret(file=f, what="MDM API key")


def test_env_wins_over_file(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("X_KEY", "from-env")
    assert read_secret(file=tmp_path / "missing", env="X_KEY", what="x").reveal() == "from-env"


def test_database_migrates_and_rolls_back(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    record(db, "test.action", "lap01", {"n": 1}, actor="tester")
    with pytest.raises(RuntimeError):
        with db.session() as s:
            s.add(AuditEvent(actor="x", action="never", target="", detail={}))
            raise RuntimeError("killed mid-transaction")
    events = list_events(db)
    assert [(e.actor, e.action, e.detail) for e in events] == [("tester", "test.action", {"n": 1})]
    with db.session() as s:
        assert s.scalars(select(AuditEvent.action)).all() == ["test.action"]


def test_timestamps_read_back_timezone_aware_utc(tmp_path: Path):
    from datetime import UTC, datetime, timedelta, timezone

    db = Database(f"sqlite:///{tmp_path / 'tz.db'}")
    berlin = timezone(timedelta(hours=1))
    with db.session() as s:
        s.add(AuditEvent(at=datetime(2026, 11, 27, 10, 0, tzinfo=berlin), actor="a", action="x", target="", detail={}))
    (event,) = list_events(db)
    assert event.at == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert event.at.tzinfo is not None
    # Filtering by an aware time compares instants, not wall clocks.
    assert list_events(db, since=datetime(2026, 11, 27, 9, 30, tzinfo=UTC)) == []
