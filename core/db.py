"""The state database: SQLAlchemy engine and sessions, with Alembic migrations applied on open.

SQLite (a file in the state dir) by default; a PostgreSQL URL works with the same code. Every
package defines its tables on `Base` in its own `models.py` and adds an Alembic revision under
core/migrations/versions/.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, String, create_engine, event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DatabaseError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from core.errors import StateError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


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

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        length = self.impl.length  # type: ignore[attr-defined]
        if isinstance(value, str) and length is not None and len(value) > length:
            return value[:length]
        return value

    def bind_processor(self, dialect: Dialect) -> Any:
        # The same as process_bind_param, as one closure (String needs no driver conversion on
        # SQLite or psycopg): this runs for every string cell the webhook receiver writes.
        impl_processor = self.impl_instance.bind_processor(dialect)
        length = self.impl.length  # type: ignore[attr-defined]
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
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, params)
    except Exception as e:  # noqa: BLE001 - raised as SQLAlchemy would, so Database.session maps it
        from sqlalchemy.exc import DBAPIError

        raise DBAPIError.instance(sql, None, e, conn.dialect.loaded_dbapi.Error) from e
    finally:
        cursor.close()


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
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("".join(sql), flat)
        raw = cursor.fetchall()
    except Exception as e:  # noqa: BLE001 - raised as SQLAlchemy would, so Database.session maps it
        from sqlalchemy.exc import DBAPIError

        raise DBAPIError.instance("".join(sql), None, e, conn.dialect.loaded_dbapi.Error) from e
    finally:
        cursor.close()
    if not any(processors):
        return [dict(zip(keys, row, strict=True)) for row in raw]
    return [
        {k: (v if p is None or v is None else p(v)) for k, p, v in zip(keys, processors, row, strict=True)}
        for row in raw
    ]


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
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
            from core.dbfile import check_sqlite_file, create_sqlite_file

            create_sqlite_file(path)
            check_sqlite_file(path)
        engine = create_engine(url, connect_args={"timeout": 15, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command

    url = engine.url.render_as_string(hide_password=False)
    with _migrate_lock:
        if url in _migrated:
            return
        cfg = _alembic_config(url)
        try:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as e:
            raise StateError(f"cannot open state database: {_first_line(e.orig)}") from None
        except DatabaseError as e:
            # Not a database, or a damaged one ("file is not a database", "disk image is malformed").
            raise StateError(f"state database {engine.url.database or ''} is damaged: {_first_line(e.orig)}; "
                             "restore it from a backup (docs/operations.md)") from None
        _migrated.add(url)


class Database:
    """One engine and session factory for a state database, migrated on first use."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
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


def _no_autocheckpoint(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")
