"""The state database: SQLAlchemy engine and sessions, and its schema's Alembic revisions.

SQLite (a file in the state dir) by default; a PostgreSQL URL works with the same code. Every
package defines its tables on `Base` in its own `models.py` and adds an Alembic revision under
core/migrations/versions/. Migrations are an explicit step (`werne db upgrade`, `upgrade_schema`):
opening a database that is behind this werne's newest revision, or at a revision it does not know
(a newer werne's), is refused; only a new, empty database is created at the newest revision.

A new SQLite database is created from core/migrations/schema.sql, the schema that replaying every
revision makes, written by tools/schema_snapshot.py (as Rails loads schema.rb into a new database
instead of replaying its migrations): one transaction of 82 statements instead of 19
revisions through Alembic. tests/core/test_schema_snapshot.py proves the two schemas identical; a
snapshot that is not at the newest revision is not used (Alembic replays), and that test fails.
PostgreSQL databases are always made by Alembic.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import DateTime, String, create_engine, event, inspect
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from core.dbfile import check_sqlite_file, create_sqlite_file
from core.errors import StateError

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SCHEMA_SNAPSHOT = MIGRATIONS_DIR / "schema.sql"
SNAPSHOT_REVISION = "-- revision: "
SNAPSHOT_SEPARATOR = "\n;\n"


def _first_line(err: object) -> str:
    """A driver's message without the DETAIL/HINT lines PostgreSQL adds (they can hold row values)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else err.__class__.__name__


class Base(DeclarativeBase):
    """Declarative base for every werne table."""


class BoundedString(TypeDecorator[str]):
    """A VARCHAR(n) that cuts over-long values to n characters instead of failing the transaction.

    For text that devices send (OS versions, names, models): PostgreSQL rejects an over-long value
    and rolls back the whole transaction, which would lose a batch of other devices' events with it;
    SQLite stores anything. Cutting behaves the same on both. The DDL is plain VARCHAR(n).
    """

    impl = String
    cache_ok = True

    @property
    def max_length(self) -> int | None:
        """The n of VARCHAR(n) (None: unbounded)."""
        impl = self.impl_instance
        return impl.length if isinstance(impl, String) else None

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        length = self.max_length
        if isinstance(value, str) and length is not None and len(value) > length:
            return value[:length]
        return value

    def bind_processor(self, dialect: Dialect) -> Any:
        # The same as process_bind_param, as one closure (String needs no driver conversion on
        # SQLite or psycopg): this runs for every string cell the webhook receiver writes.
        impl_processor = self.impl_instance.bind_processor(dialect)
        length = self.max_length
        if impl_processor is not None or length is None:
            return super().bind_processor(dialect)

        def process(value: Any) -> Any:
            if isinstance(value, str) and len(value) > length:
                return value[:length]
            return value

        return process


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, on SQLite as on PostgreSQL.

    SQLite keeps no zone, so DateTime(timezone=True) reads back naive there; comparing naive and
    aware values then fails or, worse, compares wall clocks. Values are stored as UTC and read
    back as aware UTC everywhere. The DDL is the same as DateTime(timezone=True).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        # A naive value is taken to be UTC already (what datetime.utcnow() callers mean).
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_BULK_PLANS: dict[tuple[int, str, tuple[str, ...]], tuple[Any, str, list[tuple[str, Any]]]] = {}
_T = TypeVar("_T")
# Values per `IN (...)`: below SQLite's and PostgreSQL's parameter limits.
IN_CHUNK = 500


def in_chunks(values: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """`values` in slices of IN_CHUNK, for one `IN (...)` statement each."""
    for start in range(0, len(values), IN_CHUNK):
        yield values[start:start + IN_CHUNK]


_BULK_LOCK = threading.Lock()


def bulk_execute(conn: Connection, stmt: Any, rows: list[dict[str, Any]]) -> None:
    """`conn.execute(stmt, rows)` (executemany) with less per-row overhead, for hot write paths.

    On SQLite the statement is compiled once per set of keys, with SQLAlchemy's own SQL and bind
    processors (the type decorators above, JSON, dates), and the rows go straight to the DBAPI
    cursor's executemany inside the connection's transaction; SQLAlchemy's generic per-row work
    (parameter dicts, cache keys, result set-up) is skipped, about half the cost of a batch. A
    value object repeated across rows (the batch's timestamp) is converted once. The result is
    the same rows as conn.execute; anything the plan does not cover (another dialect, a column
    the rows leave to a Python-side default, rows with differing keys) takes conn.execute.
    Plans are kept per statement object: pass statements built once (module constants, caches).
    """
    if not rows:
        return
    keys = tuple(rows[0])
    if conn.dialect.name != "sqlite" or conn.dialect.paramstyle != "qmark":
        conn.execute(stmt, rows)
        return
    cache_key = (id(stmt), conn.dialect.name, keys)
    plan = _BULK_PLANS.get(cache_key)
    if plan is None:
        compiled = stmt.compile(dialect=conn.dialect, column_keys=list(keys))
        names = compiled.positiontup or []
        processors = compiled._bind_processors  # noqa: SLF001 - SQLAlchemy's own converters
        if set(names) - set(keys) or compiled.literal_execute_params or compiled.post_compile_params:
            plan = (stmt, "", [])  # needs SQLAlchemy (defaults, expanding params): never fast
        else:
            plan = (stmt, compiled.string, [(n, processors.get(n)) for n in names])
        with _BULK_LOCK:
            _BULK_PLANS[cache_key] = plan
    _stmt, sql, columns = plan
    if not sql or not columns or any(len(r) != len(keys) for r in rows):
        conn.execute(stmt, rows)
        return
    get = itemgetter(*[name for name, _ in columns])
    converted = [(i, proc) for i, (_, proc) in enumerate(columns) if proc is not None]
    memo: dict[tuple[int, int], Any] = {}
    params = []
    for row in rows:
        try:
            values = get(row)
        except KeyError:  # a row with other keys than the first: let SQLAlchemy say what is wrong
            conn.execute(stmt, rows)
            return
        if len(columns) == 1:
            values = (values,)
        if converted:
            values = list(values)
            for i, proc in converted:
                value = values[i]
                if type(value) is datetime:  # the batch's `now` is in every row: convert it once
                    key = (i, id(value))
                    if key not in memo:
                        memo[key] = (value, proc(value))
                    values[i] = memo[key][1]
                else:
                    values[i] = proc(value)
        params.append(values)
    cursor = _driver_cursor(conn)
    try:
        cursor.executemany(sql, params)
    except Exception as e:  # noqa: BLE001 - raised as SQLAlchemy would, so Database.session maps it
        raise DBAPIError.instance(sql, None, e, conn.dialect.loaded_dbapi.Error) from e
    finally:
        cursor.close()


def _driver_cursor(conn: Connection) -> Any:
    """A cursor of the driver's own connection under `conn` (sqlite3's, for the fast paths)."""
    driver = conn.connection.driver_connection
    if driver is None:  # only a connection SQLAlchemy invalidated has none; callers hold a live one
        raise StateError("the database connection was closed")
    return driver.cursor()


_SELECT_PLANS: dict[tuple[int, str], tuple[Any, list[str], list[str | None], list[Any], list[Any]]] = {}


def select_rows(conn: Connection, stmt: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    """`[dict(r) for r in conn.execute(stmt, params).mappings()]`, cheaper for hot read paths.

    For a SELECT whose list parameters are expanding bindparams (`col.in_(bindparam(..., expanding=True))`):
    on SQLite it is compiled once, each list's `IN (?)` is widened to the call's length, and the
    rows are converted with SQLAlchemy's own result processors, so the values are the same as
    conn.execute gives. Elsewhere, or with an empty list, it is conn.execute. Plans are kept per
    statement object: pass statements built once, and the same parameters as lists on every call.
    """
    if conn.dialect.name != "sqlite" or conn.dialect.paramstyle != "qmark" or any(
        isinstance(v, list | tuple) and not v for v in params.values()
    ):
        return [dict(r) for r in conn.execute(stmt, params).mappings()]
    cache_key = (id(stmt), conn.dialect.name)
    plan = _SELECT_PLANS.get(cache_key)
    if plan is None:
        probe = {k: ([v[0]] if isinstance(v, list | tuple) else v) for k, v in params.items()}
        compiled = stmt.params(**probe).compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        names = list(compiled.positiontup or [])
        segments = compiled.string.split("?")
        if len(segments) != len(names) + 1:
            raise ValueError("select_rows: cannot map the statement's parameters")  # a '?' in a literal
        # Which caller parameter each placeholder is: an expanding list renders as name_1.
        sources: list[str | None] = []
        for n in names:
            base = n.rsplit("_", 1)[0]
            sources.append(base if base in params and isinstance(params[base], list | tuple) else None)
        fixed = [
            compiled.binds[n].effective_value if src is None else None for n, src in zip(names, sources, strict=True)
        ]
        columns = list(stmt.selected_columns)
        processors = [c.type.dialect_impl(conn.dialect).result_processor(conn.dialect, None) for c in columns]
        binders = compiled._bind_processors  # noqa: SLF001 - SQLAlchemy's own converters
        bind_procs = [binders.get(n) for n in names]
        plan = (stmt, segments, sources, fixed, [processors, bind_procs, [c.key for c in columns]])
        with _BULK_LOCK:
            _SELECT_PLANS[cache_key] = plan
    _stmt, segments, sources, fixed, (processors, bind_procs, keys) = plan
    sql = [segments[0]]
    flat: list[Any] = []
    for i, src in enumerate(sources):
        proc = bind_procs[i]
        if src is None:
            sql.append("?")
            flat.append(fixed[i] if proc is None else proc(fixed[i]))
        else:
            values = params[src]
            sql.append(", ".join("?" * len(values)))
            flat.extend(values if proc is None else [proc(v) for v in values])
        sql.append(segments[i + 1])
    cursor = _driver_cursor(conn)
    try:
        cursor.execute("".join(sql), flat)
        raw = cursor.fetchall()
    except Exception as e:  # noqa: BLE001 - raised as SQLAlchemy would, so Database.session maps it
        raise DBAPIError.instance("".join(sql), None, e, conn.dialect.loaded_dbapi.Error) from e
    finally:
        cursor.close()
    if not any(processors):
        return [dict(zip(keys, row, strict=True)) for row in raw]
    return [
        {k: (v if p is None or v is None else p(v)) for k, p, v in zip(keys, processors, row, strict=True)}
        for row in raw
    ]


_UPSERTS: dict[tuple[str, str, tuple[str, ...], Any], Any] = {}


def upsert(
    table: Any,
    dialect: str,
    conflict: Sequence[str],
    update: Sequence[str] | Callable[[Any], dict[str, Any]],
) -> Any:
    """INSERT ... ON CONFLICT (`conflict` columns) DO UPDATE, for SQLite or PostgreSQL (`conn.dialect.name`).

    `update` names the columns that take the new row's value, or is a function of the new row
    (`excluded`) that returns the SET clause (for values that combine old and new). The statement
    is built once per table, dialect and arguments and then reused, so bulk_execute's plans (kept
    per statement object) apply to it; a function for `update` must therefore be a module-level
    one, not a fresh lambda per call.
    """
    key = (table.name, dialect, tuple(conflict), tuple(update) if not callable(update) else update)
    stmt = _UPSERTS.get(key)
    if stmt is None:
        if dialect == "postgresql":
            # Imported here: the PostgreSQL dialect costs ~40 ms to import, and most runs use SQLite.
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        else:
            raise ValueError(f"upsert: no ON CONFLICT support for dialect {dialect!r}")
        ins = dialect_insert(table)
        set_ = update(ins.excluded) if callable(update) else {c: ins.excluded[c] for c in update}
        stmt = ins.on_conflict_do_update(index_elements=list(conflict), set_=set_)
        with _BULK_LOCK:
            _UPSERTS[key] = stmt
    return stmt


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    # WAL keeps readers (web, reports) going while the nightly run writes; a killed writer
    # leaves the last committed state intact.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=15000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateError(f"cannot create state directory {path.parent}: {e.strerror}") from None
        if str(path) != ":memory:":
            create_sqlite_file(path)
            check_sqlite_file(path)
        engine = create_engine(url, connect_args={"timeout": 15, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> AlembicConfig:
    # Lazy: alembic costs about 0.2 s to import, and only a first open of a database migrates.
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


_migrated: set[str] = set()
_migrate_lock = threading.Lock()
_REVISION_LINE = re.compile(r"""^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:None|["']([^"']+)["'])\s*$""", re.M)


@dataclass(frozen=True)
class SchemaStatus:
    """Where a state database's schema stands against this werne's Alembic revisions."""

    current: str | None  # None: a new, empty database
    head: str
    pending: tuple[str, ...]  # the revisions `werne db upgrade` would apply, oldest first
    known: bool  # False: the database is at a revision this werne does not have (a newer werne's)

    @property
    def upgrade_needed(self) -> bool:
        return self.known and bool(self.pending)

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.current, "head": self.head, "pending": list(self.pending),
                "known": self.known, "upgrade_needed": self.upgrade_needed}

    def raise_if_unusable(self) -> None:
        """StateError unless this werne may open the database as it is (at the newest revision, or new)."""
        if not self.known:
            raise StateError(f"state database is at revision {self.current}, newer than this werne's newest "
                             f"({self.head}): a newer werne upgraded it; install that version "
                             "(docs/operations.md, Upgrading)")
        if self.current is not None and self.pending:
            raise StateError(f"state database is at revision {self.current}, this werne needs {self.head}: "
                             "run werne db upgrade")



def revision_chain() -> dict[str, str | None]:
    """Every revision of core/migrations/versions and the one before it, read from the files'
    `revision` and `down_revision` lines (no alembic import: that costs every command 0.2 s)."""
    ups: dict[str, str | None] = {}
    for f in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = dict((key, value or None) for key, value in _REVISION_LINE.findall(f.read_text(encoding="utf-8")))
        if not found.get("revision") or "down_revision" not in found:
            raise StateError(f"migration {f.name} names no revision and down_revision")
        ups[str(found["revision"])] = found["down_revision"]
    return ups


def head_revision() -> str | None:
    """The newest revision; None when the revisions are not one plain chain (then alembic decides)."""
    try:
        ups = revision_chain()
    except StateError:
        return None
    heads = set(ups) - {down for down in ups.values() if down}
    return heads.pop() if len(heads) == 1 else None


def _revisions_in_order() -> list[str]:
    ups = revision_chain()
    head = head_revision()
    if head is None:
        raise StateError("werne's migrations are not one chain of revisions (a bad merge?)")
    order: list[str] = []
    rev: str | None = head
    while rev is not None:
        order.append(rev)
        rev = ups.get(rev)
    return order[::-1]


def _stored_revision(engine: Engine) -> tuple[bool, str | None]:
    """(whether the database holds any table besides alembic's, its alembic revision or None)."""
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            if "alembic_version" not in tables:
                return bool(tables), None
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            tables.discard("alembic_version")
    except OperationalError as e:
        raise StateError(f"cannot open state database: {_first_line(e.orig)}") from None
    except DatabaseError as e:
        raise StateError(f"state database {engine.url.database or ''} is damaged: {_first_line(e.orig)}; "
                         "restore it from a backup (docs/operations.md)") from None
    if len(rows) > 1:
        raise StateError(f"state database is at several revisions at once ({', '.join(r[0] for r in rows)})")
    return bool(tables), (str(rows[0][0]) if rows else None)


def schema_status(engine: Engine) -> SchemaStatus:
    """The database's revision, this werne's newest and what lies between."""
    order = _revisions_in_order()
    has_tables, current = _stored_revision(engine)
    if current is None:
        if has_tables:
            raise StateError("state database has tables but no Alembic revision: not a werne database, "
                             "or a damaged one; restore it from a backup (docs/operations.md)")
        return SchemaStatus(None, order[-1], tuple(order), True)
    if current not in order:
        return SchemaStatus(current, order[-1], (), False)
    return SchemaStatus(current, order[-1], tuple(order[order.index(current) + 1:]), True)



@dataclass(frozen=True)
class SchemaUpgrade:
    """What `upgrade_schema` did."""

    before: str | None
    after: str
    applied: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "applied": list(self.applied)}


def _at_head(engine: Engine) -> bool:
    """True when the database says it is at the newest revision: nothing to check further, and no
    need to import alembic (0.2 s of every command's start). Any doubt is False."""
    head = head_revision()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    except SQLAlchemyError:
        return False
    return [tuple(r) for r in rows] == [(head,)]


def inspect_schema(url: str) -> SchemaStatus:
    """The schema status of the database at `url` (read only)."""
    engine = make_engine(url)
    try:
        return schema_status(engine)
    finally:
        engine.dispose()


def _atomic_ddl(engine: Engine) -> None:
    """SQLite: one real transaction around the whole upgrade. Python's sqlite3 opens transactions
    only before DML, so each CREATE/ALTER would otherwise commit on its own and an interrupted
    upgrade would leave half a revision (the SQLAlchemy docs' pysqlite recipe)."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _no_implicit(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _run_alembic(engine: Engine) -> None:
    from alembic import command  # lazy, as in alembic_config

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except OperationalError as e:
        raise StateError(f"cannot upgrade state database: {_first_line(e.orig)}") from None
    except DatabaseError as e:
        # Not a database, or a damaged one ("file is not a database", "disk image is malformed").
        raise StateError(f"state database {engine.url.database or ''} is damaged: {_first_line(e.orig)}; "
                         "restore it from a backup (docs/operations.md)") from None


def upgrade_schema(url: str) -> SchemaUpgrade:
    """Apply every revision the database lacks, all in one transaction: interrupted, the database
    keeps its old revision and running this again completes the upgrade. A database at a revision
    this werne does not know (a newer werne's) is refused."""
    engine = make_engine(url)
    try:
        _atomic_ddl(engine)
        status = schema_status(engine)
        if not status.known:
            status.raise_if_unusable()
        if status.pending:
            _run_alembic(engine)
            _migrated.discard(url)
        return SchemaUpgrade(status.current, status.head, status.pending)
    finally:
        engine.dispose()


def check_schema(engine: Engine) -> None:
    """Refuse a database this werne must not use as it is; create a new, empty one at the newest
    revision (nothing to migrate there: every process would make the same tables)."""
    url = engine.url.render_as_string(hide_password=False)
    with _migrate_lock:
        if url in _migrated or _at_head(engine):
            _migrated.add(url)
            return
        status = schema_status(engine)
        status.raise_if_unusable()
        if status.current is None and not _create_from_snapshot(engine, status.head):
            # On this engine (an in-memory database exists only there), as werne always created
            # new databases; `werne db upgrade` makes them in one transaction on its own engine.
            _run_alembic(engine)
        _migrated.add(url)


def render_snapshot(revision: str, statements: list[str]) -> str:
    """The text of a schema snapshot (what read_snapshot reads back): the revision line, then the
    statements, each followed by a line holding only ';'."""
    return f"{SNAPSHOT_REVISION}{revision}\n" + SNAPSHOT_SEPARATOR.join(statements) + SNAPSHOT_SEPARATOR


def read_snapshot(path: Path | None = None) -> tuple[str, list[str]] | None:
    """(revision, statements) of a schema snapshot (default core/migrations/schema.sql), or None
    when there is none or it is unreadable."""
    try:
        text = (path or SCHEMA_SNAPSHOT).read_text(encoding="utf-8")
    except OSError:
        return None
    first, _, body = text.partition("\n")
    if not first.startswith(SNAPSHOT_REVISION):
        return None
    statements = [st.strip() for st in body.split(SNAPSHOT_SEPARATOR) if st.strip()]
    return first.removeprefix(SNAPSHOT_REVISION).strip(), statements


def _create_from_snapshot(engine: Engine, head: str) -> bool:
    """Make a new SQLite database's schema from the snapshot, in one transaction that first looks
    again whether another process made it meanwhile. False (nothing done) when there is no snapshot
    at `head`, or the database is not SQLite: then Alembic replays the revisions."""
    snapshot = read_snapshot() if engine.dialect.name == "sqlite" else None
    if snapshot is None or snapshot[0] != head:
        return False
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        old_level = conn.isolation_level  # type: ignore[union-attr]
        conn.isolation_level = None  # type: ignore[union-attr]  # no implicit commits: ours is the one transaction
        cur = conn.cursor()  # type: ignore[union-attr]
        try:
            cur.execute("BEGIN IMMEDIATE")
            tables = {r[0] for r in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                "AND name NOT LIKE 'sqlite_%'")}
            if tables <= {"alembic_version"}:  # else another process made it since we looked
                if tables and cur.execute("SELECT count(*) FROM alembic_version").fetchone()[0]:
                    raise StateError("state database changed while it was created: open it again")
                # An empty alembic_version (an emptied database) is made again with the rest.
                cur.execute("DROP TABLE IF EXISTS alembic_version")
                for statement in snapshot[1]:
                    cur.execute(statement)
                cur.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (head,))
            cur.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # type: ignore[union-attr]
                cur.execute("ROLLBACK")
            raise
        finally:
            cur.close()
            conn.isolation_level = old_level  # type: ignore[union-attr]
    except sqlite3.Error as e:  # the driver's own: these statements do not go through SQLAlchemy
        raise StateError(f"cannot create state database: {_first_line(e)}") from None
    finally:
        raw.close()
    return True


class Database:
    """One engine and session factory for a state database at this werne's newest revision
    (`check_schema`: a new database is created there, any other must be at it already)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        check_schema(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        s = self._sessions()
        try:
            yield s
            s.commit()
        except SQLAlchemyError as e:
            s.rollback()
            reason = _first_line(getattr(e, "orig", None) or e)
            raise StateError(f"state database error: {e.__class__.__name__}: {reason}") from None
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core-level transaction (no ORM session), for hot write paths: committed on success,
        rolled back on any error, with the same StateError as `session`."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as e:
            reason = _first_line(getattr(e, "orig", None) or e)
            raise StateError(f"state database error: {e.__class__.__name__}: {reason}") from None

    def dispose(self) -> None:
        self.engine.dispose()

    def defer_checkpoints(self) -> None:
        """SQLite: this process's connections stop checkpointing the WAL on their own commits.

        A checkpoint (copying the WAL back into the database file, with fsyncs) otherwise runs
        inside whichever commit crosses 1,000 WAL pages, every few batches of a busy writer. A
        long-running writer (the webhook receiver) calls this once before it opens connections,
        then `checkpoint()` on a timer, so the copy happens about once a second instead. Other
        processes keep SQLite's default. No effect on other databases.
        """
        if self.engine.dialect.name == "sqlite" and not event.contains(self.engine, "connect", _no_autocheckpoint):
            event.listen(self.engine, "connect", _no_autocheckpoint)
            self.engine.dispose()

    def checkpoint(self) -> None:
        """SQLite: a passive WAL checkpoint (never waits for readers or writers). Else nothing."""
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def _no_autocheckpoint(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")
