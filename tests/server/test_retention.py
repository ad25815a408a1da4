"""Retention: a year of synthetic history (weekly compliance runs, hash-chained; webhook events,
command answers, provisioning artifact folders every day) pruned to the configured periods;
`compliance verify` holds before and after, and what is younger than its period stays."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from compliance.history import verify_chain
from core.audit import record
from ipad.models import MDMCommand, MDMWebhookEvent
from server.retention import artifact_dirs, prune
from tests.fixtures.compliance import fleet, store_run

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
DAYS = 365


def a_year_of_history(db, config) -> None:  # type: ignore[no-untyped-def]
    for week in range(DAYS // 7, -1, -1):
        store_run(db, config, fleet(1, 2), now=NOW - timedelta(days=7 * week))
    events, commands = [], []
    for day in range(DAYS):
        at = NOW - timedelta(days=day)
        for i in range(40):
            events.append({"event_id": f"e-{day}-{i}", "topic": "mdm.Connect", "received_at": at,
                           "created_at": at.isoformat(), "enrollment_id": f"ZDTEST{i:05d}",
                           "command_uuid": f"c-{day}-{i}", "status": "Acknowledged", "message": "x" * 200})
            commands.append({"command_uuid": f"c-{day}-{i}", "enrollment_id": f"ZDTEST{i:05d}",
                             "request_type": "DeviceInformation", "status": "Acknowledged", "actor": "nightly",
                             "detail": {}, "enqueued_at": at, "updated_at": at, "not_now_count": 0,
                             "error_chain": [], "result": {"QueryResponses": {"OSVersion": "18.1"}}})
        folder = artifact_dirs(config) / str(1000 + day)
        folder.mkdir(parents=True)
        (folder / "stdout").write_text("ok\n" * 100)
        os.utime(folder, (at.timestamp(), at.timestamp()))
    commands.append({**commands[-1], "command_uuid": "still-waiting", "status": "queued"})  # a year old, unanswered
    with db.transaction() as conn:
        conn.execute(insert(MDMWebhookEvent), events)
        conn.execute(insert(MDMCommand), commands)
    record(db, "ipad.lock", "ZDTEST00001", {"why": "a year ago"})


def count(db, model, where=True) -> int:  # type: ignore[no-untyped-def]
    with db.transaction() as conn:
        return int(conn.scalar(select(func.count()).select_from(model).where(where)) or 0)


def size_mb(db, path: Path) -> float:  # type: ignore[no-untyped-def]
    db.dispose()  # no pooled connection may hold the WAL open
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM")  # in WAL mode into the WAL: the checkpoint shrinks the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size / 1e6


def test_a_year_pruned_to_its_periods_and_the_chain_still_verifies(compliance_db, compliance_config,
                                                                    state_dir: Path, run_cli, tmp_path: Path) -> None:
    db = compliance_db
    a_year_of_history(db, compliance_config)
    chain_before = verify_chain(db)
    before = size_mb(db, state_dir / "werne.db")

    dry = prune(compliance_config, db, now=NOW, dry_run=True)
    assert count(db, MDMWebhookEvent) == 40 * DAYS  # a dry run deletes nothing
    result = prune(compliance_config, db, now=NOW)
    assert (dry.webhook_events, dry.command_results, dry.artifact_dirs) == \
           (result.webhook_events, result.command_results, result.artifact_dirs)
    # Defaults: events 90 days, command answers 400 (all of this year stays), artifacts 90 days.
    assert result.webhook_events == 40 * (DAYS - 91) and count(db, MDMWebhookEvent) == 40 * 91
    assert result.command_results == 0
    assert result.artifact_dirs == DAYS - 91
    assert len(list(artifact_dirs(compliance_config).iterdir())) == 91

    # Command answers have their own period: 30 days here.
    compliance_config.retention.command_results_days = 30
    assert prune(compliance_config, db, now=NOW).command_results == 40 * (DAYS - 31)
    assert count(db, MDMCommand, MDMCommand.command_uuid == "still-waiting") == 1

    report = verify_chain(db)
    assert report.ok and (report.runs_checked, report.head) == (chain_before.runs_checked, chain_before.head)
    after = size_mb(db, state_dir / "werne.db")
    assert after < before
    print(f"\nretention: state database {before:.1f} MB -> {after:.1f} MB after pruning a year")

    r = run_cli("prune", "--json", config=tmp_path / "werne.toml")
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.output)) >= {"webhook_events", "command_results", "artifact_dirs", "cutoffs"}


def tree(folder: Path) -> set[str]:
    """Every path under `folder` (folders and files, hidden ones too), relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_artifact_folders_past_their_period_are_gone_from_disk(compliance_db, compliance_config) -> None:
    """Only the run folders older than run_artifacts_days go, with everything in them; a folder an
    interrupted prune had renamed is finished; younger folders, loose files and symlinks stay."""
    base = artifact_dirs(compliance_config)
    compliance_config.retention.run_artifacts_days = 10
    ages = {"2001": 30, "2002": 11, "2003": 9, "2004": 0}  # days old
    for name, days in ages.items():
        (base / name / "job_events").mkdir(parents=True)
        (base / name / "job_events" / "1-ok.json").write_text("{}")
        (base / name / "stdout").write_text("ok\n")
        at = (NOW - timedelta(days=days)).timestamp()
        os.utime(base / name, (at, at))
    (base / ".pruned-1999" / "job_events").mkdir(parents=True)  # an interrupted prune's leftover
    (base / ".pruned-1999" / "stdout").write_text("half gone\n")
    (base / "README").write_text("not a run\n")
    (base / "elsewhere").symlink_to(base / "2003")
    old = NOW.timestamp() - 400 * 86400
    os.utime(base / "README", (old, old))
    os.utime(base / "elsewhere", (old, old), follow_symlinks=False)

    assert prune(compliance_config, compliance_db, now=NOW, dry_run=True).artifact_dirs == 2
    assert {"2001", "2002", ".pruned-1999"} <= {p.name for p in base.iterdir()}  # a dry run deletes nothing
    result = prune(compliance_config, compliance_db, now=NOW)
    assert result.artifact_dirs == 2
    kept = {f"{n}{s}" for n in ("2003", "2004") for s in ("", "/job_events", "/job_events/1-ok.json", "/stdout")}
    assert tree(base) == kept | {"README", "elsewhere"}
    assert (base / "2003" / "stdout").read_text() == "ok\n"


# NanoMDM v0.9.0's statements (storage/pgsql/queue.go): an enqueue, and what it runs in one
# transaction when a device answers a command with -storage-options delete=1 (deleteCommand).
ENQUEUE = ("INSERT INTO commands (command_uuid, request_type, command) VALUES (%s, 'DeviceInformation', "
           "'<?xml version=\"1.0\"?><plist/>')")
ANSWERED = (
    "DELETE FROM enrollment_queue WHERE id = %(id)s AND command_uuid = %(uuid)s",
    "DELETE FROM command_results WHERE id = %(id)s AND command_uuid = %(uuid)s",
    "DELETE FROM commands USING commands AS c LEFT JOIN enrollment_queue AS q ON q.command_uuid = c.command_uuid "
    "LEFT JOIN command_results AS r ON r.command_uuid = c.command_uuid WHERE c.command_uuid = %(uuid)s AND "
    "q.command_uuid IS NULL AND r.command_uuid IS NULL AND commands.command_uuid = c.command_uuid",
)


def nanomdm_commands(dsn: str) -> set[str]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT command_uuid FROM commands")}


@pytest.mark.postgres
def test_nanomdm_commands_two_ipads_answered_at_once_are_pruned_and_nothing_else(
        compliance_db, compliance_config, postgres_cluster, run_cli, tmp_path: Path) -> None:
    """Two iPads answer one command at the same moment, each in NanoMDM's own transaction: each still
    sees the other's queue entry, so neither deletes the command, and its row stays with nothing
    queued and no result. `werne prune` deletes that row, and no command still queued or answered."""
    import psycopg

    dsn = postgres_cluster.create_nanomdm_database("nanomdm_prune")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in (1, 2, 3):
            conn.execute("INSERT INTO devices (id, authenticate, authenticate_at) VALUES (%s, 'x', now())", (f"D{i}",))
            conn.execute("INSERT INTO enrollments (id, device_id, type, topic, push_magic, token_hex, last_seen_at) "
                         "VALUES (%s, %s, 'Device', 't', 'm', 'aa', now())", (f"D{i}", f"D{i}"))
        for uuid, ids in (("together", ("D1", "D2")), ("queued", ("D3",)), ("answered-kept", ("D3",))):
            conn.execute(ENQUEUE, (uuid,))
            for i in ids:
                conn.execute("INSERT INTO enrollment_queue (id, command_uuid) VALUES (%s, %s)", (i, uuid))
        # NanoMDM without delete=1 keeps a result: that command is not left behind.
        conn.execute("DELETE FROM enrollment_queue WHERE command_uuid = 'answered-kept'")
        conn.execute("INSERT INTO command_results (id, command_uuid, status, result) VALUES "
                     "('D3', 'answered-kept', 'Acknowledged', '<?xml version=\"1.0\"?><plist/>')")
    first, second = psycopg.connect(dsn), psycopg.connect(dsn)
    try:
        for conn, device in ((first, "D1"), (second, "D2")):
            for statement in ANSWERED:
                conn.execute(statement, {"id": device, "uuid": "together"})
        first.commit()
        second.commit()
    finally:
        first.close()
        second.close()
    assert nanomdm_commands(dsn) == {"together", "queued", "answered-kept"}  # NanoMDM left it

    env = {"NANOMDM_STORAGE_DSN": dsn}
    config = tmp_path / "werne.toml"
    dry = run_cli("prune", "--dry-run", "--json", config=config, env=env)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["nanomdm_commands"] == 1
    assert nanomdm_commands(dsn) == {"together", "queued", "answered-kept"}  # a dry run deletes nothing
    done = run_cli("prune", config=config, env=env)
    assert done.exit_code == 0, done.output
    assert "1 of NanoMDM's answered commands it left behind" in done.output
    assert nanomdm_commands(dsn) == {"queued", "answered-kept"}

    # Without a NanoMDM database named, prune leaves NanoMDM alone and says nothing of it.
    alone = run_cli("prune", "--json", config=config, env={"NANOMDM_STORAGE_DSN": ""})
    assert alone.exit_code == 0 and json.loads(alone.output)["nanomdm_commands"] is None

    # Its database unreachable: werne's own part is done, then one line and exit 3 (the alert).
    old = NOW - timedelta(days=400)
    with compliance_db.transaction() as conn:
        conn.execute(insert(MDMWebhookEvent), [{"event_id": "old", "topic": "mdm.Connect", "received_at": old,
                                                "created_at": old.isoformat(), "status": "Acknowledged"}])
    gone = run_cli("prune", config=config,
                   env={"NANOMDM_STORAGE_DSN": f"host={tmp_path / 'no-socket'} dbname=nanomdm password=s3cr3t-pw"})
    assert gone.exit_code == 3, gone.output
    assert gone.output.startswith("Error: NanoMDM's database:") and len(gone.output.strip().splitlines()) == 1
    assert "s3cr3t-pw" not in gone.output and "Traceback" not in gone.output
    assert count(compliance_db, MDMWebhookEvent) == 0
