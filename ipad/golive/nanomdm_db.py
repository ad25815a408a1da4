"""NanoMDM's PostgreSQL storage: its schema, loaded from the NanoMDM module werne installed.

NanoMDM does not create its tables; its `storage/pgsql/schema.sql` ships in the Go module source
(scripts/setup.sh pins the version, `go install` leaves the source in the module cache).
`load_schema` runs it once in the database NanoMDM's DSN names; a database that already has
NanoMDM's tables is brought to the pinned version's schema instead (`werne db upgrade`), and the
version it holds is recorded in a table of werne's own beside NanoMDM's. The DSN (libpq format,
it may carry a password) comes from an environment variable or a 0600 file, never from the
command line.

`prune_orphaned_commands` deletes the command rows NanoMDM itself leaves behind (below).

    NanoMDMSchemaError   (ipad.errors.IPadError, core.errors.InputError: exit 2)
    NanoMDMStorageError  (ipad.errors.IPadError: exit 3)
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Config
from core.secrets import read_secret
from ipad.errors import NanoMDMSchemaError, NanoMDMStorageError

NANOMDM_MODULE = "github.com/micromdm/nanomdm@v0.9.0"  # the version scripts/setup.sh installs
SCHEMA_IN_MODULE = Path("storage/pgsql/schema.sql")
SCHEMA_VERSION = NANOMDM_MODULE.rsplit("@", 1)[1]
# NanoMDM's operations guide: create the tables with the schema.sql of your version, and on each
# update "apply any schema changes for each updated version (i.e. execute the numbered schema change
# files)" that ship beside it in storage/pgsql/. Here: every NanoMDM version werne has pinned, oldest
# first, with the change files that lead to it from the one before. v0.9.0 is the first werne pinned;
# a new pin adds its line (and the files) here, and `werne db upgrade` applies them in order.
SCHEMA_CHANGES: dict[str, tuple[str, ...]] = {"v0.9.0": ()}
# The version whose schema NanoMDM's database holds, recorded by werne (NanoMDM records none).
MARKER_TABLE = "werne_nanomdm_schema"


@dataclass(frozen=True)
class SchemaLoad:
    """What `load_schema` did."""

    schema_file: Path
    created: bool
    tables: int
    before: str | None = None
    version: str = SCHEMA_VERSION
    applied: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"schema_file": str(self.schema_file), "created": self.created, "tables": self.tables,
                "before": self.before, "version": self.version, "applied": list(self.applied)}


@dataclass(frozen=True)
class SchemaState:
    """Which NanoMDM schema the database holds, against the pinned version."""

    version: str | None  # None: no NanoMDM tables yet
    pinned: str = SCHEMA_VERSION

    @property
    def upgrade_needed(self) -> bool:
        return self.version != self.pinned

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "pinned": self.pinned, "upgrade_needed": self.upgrade_needed}


def schema_file() -> Path:
    """schema.sql of the installed NanoMDM module ($GOMODCACHE, else `go env GOMODCACHE`)."""
    cache = os.environ.get("GOMODCACHE", "")
    if not cache:
        try:
            cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, timeout=30,
                                   check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            cache = str(Path.home() / "go" / "pkg" / "mod")
    path = Path(cache) / NANOMDM_MODULE / SCHEMA_IN_MODULE
    if not path.is_file():
        raise NanoMDMSchemaError(f"NanoMDM's schema is not at {path}; run scripts/setup.sh (go install of "
                                 f"{NANOMDM_MODULE})")
    return path


def storage_dsn(config: Config) -> str:
    return read_secret(file=config.mdm.storage_dsn_file, env=config.mdm.storage_dsn_env,
                       what="NanoMDM storage DSN").reveal()


def configured_storage_dsn(config: Config) -> str | None:
    """NanoMDM's DSN when this host names one (mdm.storage_dsn_file, or its variable set), else None;
    a named file that cannot be read is an error (core.errors.SecretError), not None."""
    if config.mdm.storage_dsn_file is None and not os.environ.get(config.mdm.storage_dsn_env):
        return None
    return storage_dsn(config)


# NanoMDM (pgsql storage, `-storage-options delete=1`) deletes an answered command's row only when no
# other enrollment still has it queued, and checks that inside the answering transaction
# (storage/pgsql/queue.go, deleteCommand). Two devices that answer one command at the same moment each
# still see the other's queue row (neither has committed), so neither deletes it: the row stays, with
# no queue entry and no result. No device can be sent it again; it only takes space, one row per
# such coincidence, which with one command sent to many iPads at once is most nights. werne deletes
# them. An enqueue writes the command and its queue rows in one transaction, so a command without
# either is never one still being queued.
_ORPHANED = ("FROM commands AS c WHERE NOT EXISTS (SELECT 1 FROM enrollment_queue AS q WHERE "
             "q.command_uuid = c.command_uuid) AND NOT EXISTS (SELECT 1 FROM command_results AS r "
             "WHERE r.command_uuid = c.command_uuid)")


def _db_error(e: Exception) -> str:
    # libpq's message names host and database, never the password.
    return f"NanoMDM's database: {str(e).strip().splitlines()[0]}"


def prune_orphaned_commands(dsn: str, dry_run: bool = False) -> int:
    """Delete (or, with dry_run, count) NanoMDM's command rows that no enrollment has queued and none
    answered: left by concurrent answers, see above. Returns how many."""
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            if dry_run:
                row = conn.execute(f"SELECT count(*) {_ORPHANED}").fetchone()  # noqa: S608 - a constant
                return int(row[0]) if row else 0
            return conn.execute(f"DELETE {_ORPHANED}").rowcount  # noqa: S608 - a constant
    except psycopg.Error as e:
        raise NanoMDMStorageError(_db_error(e)) from None


def _semver(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split(".") if p.isdigit())


def _held_version(conn: Any) -> tuple[bool, str | None]:
    """(whether NanoMDM's tables are there, the version werne recorded for them)."""
    row = conn.execute("SELECT to_regclass('devices') IS NOT NULL, to_regclass(%s) IS NOT NULL",
                       (MARKER_TABLE,)).fetchone()
    exists, marked = bool(row and row[0]), bool(row and row[1])
    if not marked:
        return exists, None
    held = conn.execute(f"SELECT version FROM {MARKER_TABLE}").fetchone()  # noqa: S608 - a constant
    return exists, (str(held[0]) if held else None)


def _newer_than_pinned(version: str) -> NanoMDMSchemaError:
    return NanoMDMSchemaError(f"NanoMDM's database holds the schema of NanoMDM {version}, newer than this "
                              f"werne's {SCHEMA_VERSION}: install the werne that pinned {version}")


def schema_state(dsn: str) -> SchemaState:
    """The NanoMDM schema version the DSN's database holds (read only)."""
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            exists, version = _held_version(conn)
    except psycopg.Error as e:
        raise NanoMDMSchemaError(_db_error(e)) from None
    # Tables without a record: loaded by a werne before it recorded versions, which only ever
    # pinned SCHEMA_CHANGES' first version.
    return SchemaState(version or (next(iter(SCHEMA_CHANGES)) if exists else None), SCHEMA_VERSION)


def _changes_after(version: str) -> list[str]:
    """The change files from `version` to the pinned one, in order."""
    versions = list(SCHEMA_CHANGES)
    return [f for v in versions[versions.index(version) + 1:] for f in SCHEMA_CHANGES[v]]


def load_schema(dsn: str, schema: Path | None = None) -> SchemaLoad:
    """Create NanoMDM's tables, or bring them from the version they hold to the pinned one (its
    numbered change files, found beside schema.sql); idempotent, in one transaction, so an
    interrupted upgrade leaves the old schema and running it again completes it."""
    # Imported here: psycopg is the optional `postgres` extra, needed only by sites on PostgreSQL.
    import psycopg

    schema = schema or schema_file()
    try:
        with psycopg.connect(dsn, autocommit=False, connect_timeout=10) as conn:
            exists, held = _held_version(conn)
            before = held or (next(iter(SCHEMA_CHANGES)) if exists else None)
            if before is not None and before not in SCHEMA_CHANGES:
                if _semver(before) > _semver(SCHEMA_VERSION):
                    raise _newer_than_pinned(before)
                raise NanoMDMSchemaError(f"NanoMDM's database holds the schema of NanoMDM {before}, which no "
                                         f"werne pinned (known: {', '.join(SCHEMA_CHANGES)})")
            applied: list[str] = []
            if before is None:
                conn.execute(schema.read_text(encoding="utf-8"))
            else:
                for name in _changes_after(before):
                    change = schema.parent / name
                    if not change.is_file():
                        raise NanoMDMSchemaError(f"NanoMDM's schema change {name} is not at {change}")
                    conn.execute(change.read_text(encoding="utf-8"))
                    applied.append(name)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (version TEXT NOT NULL, "
                         "recorded_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            conn.execute(f"DELETE FROM {MARKER_TABLE}")  # noqa: S608 - a constant
            conn.execute(f"INSERT INTO {MARKER_TABLE} (version) VALUES (%s)", (SCHEMA_VERSION,))  # noqa: S608
            conn.commit()
            row = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchone()
    except psycopg.Error as e:
        raise NanoMDMSchemaError(_db_error(e)) from None
    return SchemaLoad(schema, before is None, int(row[0]) if row else 0, before, SCHEMA_VERSION, tuple(applied))
