"""The state database works on a real PostgreSQL server with the same code as on SQLite (issue 2):
the whole Alembic chain migrates up, down and up again, core.audit and provisioning runs round-trip,
a failed transaction leaves nothing, and every package's tables take and give back a row."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Engine

from core.audit import list_events, record
from core.db import Base, Database, _alembic_config
from core.errors import StateError
from core.models import AuditEvent, ProvisioningHostResult, ProvisioningRun

# A detail payload with what JSON columns must carry unchanged: nesting, unicode, null, bools, floats.
DETAIL: dict[str, Any] = {
    "hosts": ["lap01", "lap02"],
    "school": "Grundschule Werne-Süd",
    "counts": {"ok": 2, "failed": 0},
    "ratio": 0.25,
    "check": False,
    "note": None,
    "tags": [],
}
# A zone that is neither UTC nor the server's session zone (Europe/Berlin, see fixtures_postgres).
EASTERN = timezone(timedelta(hours=-5))


def head_revision(url: str) -> str:
    head = ScriptDirectory.from_config(_alembic_config(url)).get_current_head()
    assert head is not None
    return head


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def _own_schema(db: Database) -> None:
    # The per-test schema really is where the tables went (else tests would see each other's rows).
    with db.engine.connect() as conn:
        schema = conn.scalar(text("SELECT current_schema()"))
        assert schema not in (None, "public")
        assert "alembic_version" in inspect(conn).get_table_names(schema=schema)


@pytest.fixture
def pg_db(fresh_postgres_url: str) -> Iterator[Database]:
    db = Database(fresh_postgres_url)
    _own_schema(db)
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """The same test on an SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'werne.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    db = Database(url)
    if request.param == "postgresql":
        _own_schema(db)
    yield db
    db.dispose()


# --- migrations ---------------------------------------------------------------------------------


def test_database_migrates_whole_chain_to_head_on_postgres(postgres_cluster):  # type: ignore[no-untyped-def]
    # A whole new database with a plain URL, as a site would configure it (no schema options).
    url = postgres_cluster.create_database()
    assert "?host=" in url and "options" not in url
    pg_db = Database(url)
    try:
        _check_at_head(pg_db)
    finally:
        pg_db.dispose()


def _check_at_head(pg_db: Database) -> None:
    assert pg_db.engine.dialect.name == "postgresql"
    with pg_db.engine.connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head_revision(pg_db.url)
    tables = table_names(pg_db.engine)
    assert {"provisioning_runs", "provisioning_host_results", "audit_events"} <= tables
    # Each revision of the chain created something (no revision left empty by mistake).
    script = ScriptDirectory.from_config(_alembic_config(pg_db.url))
    assert len(list(script.walk_revisions())) >= 5
    # Opening it again finds it at head and changes nothing.
    again = Database(pg_db.url)
    try:
        assert table_names(again.engine) == tables
    finally:
        again.dispose()


def _schema(engine: Engine) -> dict[str, Any]:
    """Tables, columns (nullability), indexes, unique column sets and foreign keys, dialect-neutral."""
    insp = inspect(engine)
    # get_multi_* reflects all tables in a few queries (else one per table and kind on PostgreSQL).
    columns, pks = insp.get_multi_columns(), insp.get_multi_pk_constraint()
    uniques_all, indexes_all, fks_all = (
        insp.get_multi_unique_constraints(),
        insp.get_multi_indexes(),
        insp.get_multi_foreign_keys(),
    )
    out: dict[str, Any] = {}
    for key in columns:
        t = key[1]
        if t == "alembic_version":
            continue
        uniques = {tuple(u["column_names"]) for u in uniques_all.get(key, [])}
        indexes = set()
        for ix in indexes_all.get(key, []):
            if ix.get("duplicates_constraint"):
                continue
            cols = tuple(ix["column_names"])
            if ix["unique"]:
                uniques.add(cols)
            else:
                indexes.add((ix["name"], cols))
        out[t] = {
            "columns": {c["name"]: bool(c["nullable"]) for c in columns[key]},
            "pk": set(pks[key]["constrained_columns"]),
            "indexes": indexes,
            "uniques": uniques,
            "fks": {
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    (f.get("options") or {}).get("ondelete"),
                )
                for f in fks_all.get(key, [])
            },
        }
    return out


def test_migrated_schema_is_the_same_on_sqlite_and_postgres(pg_db: Database, tmp_path: Path):
    lite = Database(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        lite_schema, pg_schema = _schema(lite.engine), _schema(pg_db.engine)
    finally:
        lite.dispose()
    assert set(pg_schema) == set(lite_schema)
    for t in lite_schema:
        assert pg_schema[t] == lite_schema[t], t


def _alembic(url: str, engine: Engine, action: Callable[..., None], rev: str) -> None:
    cfg = _alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        action(cfg, rev)


def test_downgrade_to_base_and_upgrade_again_on_postgres(pg_db: Database):
    engine, url = pg_db.engine, pg_db.url
    at_head = _schema(engine)
    _alembic(url, engine, command.downgrade, "base")
    assert table_names(engine) <= {"alembic_version"}
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM alembic_version")) == 0
        # Nothing left behind that would make the next upgrade fail: enum types, sequences.
        assert (
            conn.scalars(
                text(
                    "SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                    "WHERE n.nspname = current_schema() AND t.typtype = 'e'"
                )
            ).all()
            == []
        )
        assert (
            conn.scalars(
                text(
                    "SELECT sequence_name FROM information_schema.sequences "
                    "WHERE sequence_schema = current_schema()"
                )
            ).all()
            == []
        )
    _alembic(url, engine, command.upgrade, "head")
    assert _schema(engine) == at_head
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head_revision(url)


def test_each_revision_downgrades_and_upgrades_on_postgres(pg_db: Database):
    """Step through the chain: every revision's downgrade undoes exactly its own upgrade."""
    engine, url = pg_db.engine, pg_db.url
    script = ScriptDirectory.from_config(_alembic_config(url))
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    _alembic(url, engine, command.downgrade, "base")
    before = _schema(engine)
    for rev in revisions:
        _alembic(url, engine, command.upgrade, rev)
        after = _schema(engine)
        assert set(after) > set(before), f"revision {rev} created no table"
        _alembic(url, engine, command.downgrade, "-1")
        assert _schema(engine) == before, f"downgrade of {rev} left something behind"
        _alembic(url, engine, command.upgrade, rev)
        assert _schema(engine) == after, f"upgrade of {rev} after its downgrade differs"
        before = after


# --- core behaviour, the same on both ----------------------------------------------------------


def test_audit_round_trip(any_db: Database):
    record(any_db, "vpn.revoke", "lap02", DETAIL, actor="admin")
    record(any_db, "ipad.wipe", "", {"serials": ["DMPX1"]}, actor="koordinator")
    events = list_events(any_db)
    assert [(e.actor, e.action, e.target, e.detail) for e in events] == [
        ("admin", "vpn.revoke", "lap02", DETAIL),
        ("koordinator", "ipad.wipe", "", {"serials": ["DMPX1"]}),
    ]
    assert events[0].at <= events[1].at
    # `since` with a UTC timestamp selects by time on both backends.
    assert [e.action for e in list_events(any_db, since=datetime.now(UTC) - timedelta(minutes=5))] == [
        "vpn.revoke",
        "ipad.wipe",
    ]
    assert list_events(any_db, since=datetime.now(UTC) + timedelta(minutes=5)) == []
    assert [e.action for e in list_events(any_db, limit=1)] == ["vpn.revoke"]


def test_audit_timestamps_are_timezone_aware_on_postgres(pg_db: Database):
    before = datetime.now(UTC)
    record(pg_db, "vpn.rotate", "lap01", {"n": 1}, actor="admin")
    (event,) = list_events(pg_db)
    assert event.at.tzinfo is not None
    assert before - timedelta(seconds=1) <= event.at <= datetime.now(UTC) + timedelta(seconds=1)
    # The same instant given in any zone selects the same rows.
    since = (before - timedelta(minutes=1)).astimezone(EASTERN)
    assert [e.action for e in list_events(pg_db, since=since)] == ["vpn.rotate"]
    assert list_events(pg_db, since=(before + timedelta(minutes=1)).astimezone(EASTERN)) == []


def test_provisioning_run_with_host_results(any_db: Database):
    started = datetime(2026, 11, 27, 1, 30, 0, 123456, tzinfo=UTC)
    with any_db.session() as s:
        run = ProvisioningRun(
            actor="admin",
            playbook="baseline.yml",
            hosts=["lap02", "lap01"],
            started_at=started,
            check_mode=True,
        )
        run.results = [
            ProvisioningHostResult(
                host="lap02", outcome="unreachable", unreachable=1, reason="no route to host"
            ),
            ProvisioningHostResult(host="lap01", outcome="changed", ok=11, changed=3),
        ]
        s.add(run)
    with any_db.session() as s:
        got = s.scalars(select(ProvisioningRun)).one()
        assert (got.actor, got.playbook, got.hosts, got.check_mode, got.status, got.finished_at) == (
            "admin",
            "baseline.yml",
            ["lap02", "lap01"],
            True,
            "running",
            None,
        )
        started_back = got.started_at if got.started_at.tzinfo else got.started_at.replace(tzinfo=UTC)
        assert started_back == started  # microseconds survive
        assert [
            (r.host, r.outcome, r.ok, r.changed, r.failed, r.unreachable, r.reason) for r in got.results
        ] == [
            ("lap01", "changed", 11, 3, 0, 0, None),
            ("lap02", "unreachable", 0, 0, 0, 1, "no route to host"),
        ]
        got.status, got.finished_at = "failed", datetime.now(UTC)
    with any_db.session() as s:
        assert s.scalars(select(ProvisioningRun.status)).all() == ["failed"]
        s.delete(s.scalars(select(ProvisioningRun)).one())
    with any_db.session() as s:
        assert s.scalars(select(ProvisioningHostResult)).all() == []


def test_rolled_back_session_leaves_nothing(any_db: Database):
    record(any_db, "kept", actor="admin")
    with pytest.raises(RuntimeError, match="killed"):
        with any_db.session() as s:
            s.add(AuditEvent(actor="x", action="never", target="", detail={}))
            s.add(ProvisioningRun(actor="x", playbook="p.yml", hosts=[]))
            s.flush()  # the rows reached the server inside the transaction
            raise RuntimeError("killed mid-transaction")
    # A database error (a host result for a run that does not exist) is a StateError, and rolls back too.
    with pytest.raises(StateError, match="state database error: IntegrityError"):
        with any_db.session() as s:
            s.add(AuditEvent(actor="x", action="never-either", target="", detail={}))
            s.add(ProvisioningHostResult(run_id=999_999, host="lap01", outcome="ok"))
    with any_db.session() as s:
        assert s.scalars(select(AuditEvent.action)).all() == ["kept"]
        assert s.scalars(select(ProvisioningRun)).all() == []
        assert s.scalars(select(ProvisioningHostResult)).all() == []


# --- every package's tables on PostgreSQL ------------------------------------------------------


def _rows_vpn(m: Any, now: datetime) -> list[Any]:
    return [
        m.VPNPeer(
            host="lap01",
            status=m.PEER_ACTIVE,
            public_key="A" * 43 + "=",
            address_v4="10.77.0.2",
            address_v6="fd77::2",
            created_at=now,
            key_created_at=now,
        ),
        m.VPNRetiredKey(public_key="B" * 43 + "=", host="lap01", retired_at=now, reason="rotated"),
        m.VPNGateway(
            host="vpngw",
            public_key="C" * 43 + "=",
            endpoint="vpn.werne.example:51820",
            config_sha256="d" * 64,
            peers=1,
            applied_at=now,
        ),
    ]


def _rows_mdm_client(m: Any, now: datetime) -> list[Any]:
    return [
        m.MDMDevice(
            enrollment_id="0000-UDID-1",
            udid="0000-UDID-1",
            serial="DMPX00000001",
            school="gs-demo",
            group="class",
            state="enrolled",
            enrolled_at=now,
            last_seen_at=now,
            token_update_tally=2,
            awaiting_configuration=False,
            unlock_token=b"\x00\xffunlock\x00",
            identity_cert_not_after=now + timedelta(days=365),
            facts={"SecurityInfo": {"PasscodePresent": True}},
        ),
        m.MDMCommand(
            command_uuid="5d0c7f0e-1111-4e3a-9f00-000000000001",
            enrollment_id="0000-UDID-1",
            request_type="InstallProfile",
            status="Error",
            actor="admin",
            detail={"profile": "de.werne.wifi"},
            enqueued_at=now,
            updated_at=now,
            not_now_count=1,
            error_chain=[{"ErrorCode": 4001, "ErrorDomain": "MCProfileErrorDomain"}],
            result={},
        ),
        m.MDMWebhookEvent(
            event_id="ev-1",
            topic="mdm.Connect",
            received_at=now,
            created_at="2026-11-27T01:30:00Z",
            enrollment_id="0000-UDID-1",
            command_uuid="5d0c7f0e-1111-4e3a-9f00-000000000001",
            status="Error",
            message=None,
        ),
    ]


def _rows_compliance(m: Any, now: datetime) -> list[Any]:
    run = m.ComplianceRun(
        started_at=now,
        finished_at=now,
        status="complete",
        scope="all",
        actor="nightly",
        pid=4242,
        tool_version="0.1.0",
        inventory_hash="1" * 64,
        baselines_hash="2" * 64,
        waivers_hash="3" * 64,
        prev_hash=None,
        record_hash="4" * 64,
        summary={"pass": 1, "fail": 0},
        rules={"SSH-01": {"severity": "high"}},
        devices={"lap01": {"reachable": True}},
    )
    run.results = [
        m.ComplianceResult(
            device="lap01", rule_id="SSH-01", status="pass", evidence="PermitRootLogin no", waiver=None
        )
    ]
    return [run]


def _rows_enrolment(m: Any, now: datetime) -> list[Any]:
    user = m.User(
        username="koordinator",
        password_hash="$argon2id$v=19$...",
        role="coordinator",
        active=True,
        created_at=now,
    )
    user.schools = [m.UserSchool(school_id="gs-demo")]
    req = m.EnrolmentRequest(
        school_id="gs-demo",
        device_group="class",
        purpose="Klasse 3b",
        status="submitted",
        created_by="koordinator",
        created_at=now,
        updated_at=now,
    )
    req.serials = [
        m.RequestSerial(serial="DMPX00000001", status="requested", pending_commands=["c-1"], updated_at=now)
    ]
    return [
        user,
        req,
        m.DEPProfile(
            school_id="gs-demo",
            digest="e" * 64,
            profile_uuid="P-UUID-1",
            defined_at=now,
            body={"profile_name": "GS Demo", "is_supervised": True},
        ),
        m.LoginAttempt(username="koordinator", address="127.0.0.1", at=now, success=False),
    ]


PACKAGE_ROWS: dict[str, Callable[[Any, datetime], list[Any]]] = {
    "vpn": _rows_vpn,
    "mdm_client": _rows_mdm_client,
    "compliance": _rows_compliance,
    "enrolment": _rows_enrolment,
}


def _import_models(package: str) -> Any:
    try:
        return importlib.import_module(f"{package}.models")
    except ModuleNotFoundError as e:
        if e.name == f"{package}.models" or e.name == package:
            pytest.skip(f"{package}/models.py does not exist yet")
        raise


def _column_values(obj: Any) -> dict[str, Any]:
    mapper = inspect(obj).mapper
    return {attr.key: getattr(obj, attr.key) for attr in mapper.column_attrs}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, datetime) and isinstance(b, datetime):
        return (a if a.tzinfo else a.replace(tzinfo=UTC)) == (b if b.tzinfo else b.replace(tzinfo=UTC))
    return bool(a == b)


@pytest.mark.parametrize("package", list(PACKAGE_ROWS))
def test_package_tables_take_and_return_a_row_on_postgres(package: str, pg_db: Database):
    models = _import_models(package)
    now = datetime(2026, 11, 27, 2, 0, 0, 654321, tzinfo=UTC)
    with pg_db.session() as s:
        rows = PACKAGE_ROWS[package](models, now)
        s.add_all(rows)
        s.flush()
        written = [(type(o), _column_values(o)) for o in s.identity_map.values()]
    mapped = {m.class_ for m in Base.registry.mappers if m.class_.__module__ == models.__name__}
    missing = {c.__name__ for c in mapped} - {cls.__name__ for cls, _ in written}
    assert not missing, f"a {package} table got no row in this test: {missing}"
    with pg_db.session() as s:
        for cls, values in written:
            table = cls.__tablename__
            pk = tuple(values[c.key] for c in inspect(cls).primary_key)
            got = s.get(cls, pk if len(pk) > 1 else pk[0])
            assert got is not None, table
            back = _column_values(got)
            diffs = {k: (v, back[k]) for k, v in values.items() if not _same(v, back[k])}
            assert not diffs, f"{table}: {diffs}"
            for k, v in back.items():
                if isinstance(v, datetime):
                    assert v.tzinfo is not None, f"{table}.{k} came back without a zone"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_models_match_migrations(backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    """What the models declare is what the migrations build (types, nullability, indexes, uniques)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    for package in PACKAGE_ROWS:
        try:
            importlib.import_module(f"{package}.models")
        except ModuleNotFoundError:
            pass  # its migration's tables then show up below as "remove_table"
    url = (
        f"sqlite:///{tmp_path / 'w.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("fresh_postgres_url")
    )
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            diffs = compare_metadata(ctx, Base.metadata)
    finally:
        db.dispose()
    assert diffs == []
