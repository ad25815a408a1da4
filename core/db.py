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
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, String, create_engine, event
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
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
        path = Path(url.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateError(f"cannot create state directory {path.parent}: {e.strerror}") from None
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

    def dispose(self) -> None:
        self.engine.dispose()
