"""NanoMDM's PostgreSQL storage: its schema, loaded from the NanoMDM module werne installed.

NanoMDM does not create its tables; its `storage/pgsql/schema.sql` ships in the Go module source
(scripts/setup.sh pins the version, `go install` leaves the source in the module cache).
`load_schema` runs it once in the database NanoMDM's DSN names; a database that already has
NanoMDM's tables is left as it is. The DSN (libpq format, it may carry a password) comes from an
environment variable or a 0600 file, never from the command line.

    NanoMDMSchemaError   (mdm_client.errors.MDMError, core.errors.InputError: exit 2)
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from core.config import Config
from core.errors import InputError
from core.secrets import read_secret
from mdm_client.errors import MDMError

NANOMDM_MODULE = "github.com/micromdm/nanomdm@v0.9.0"  # the version scripts/setup.sh installs
SCHEMA_IN_MODULE = Path("storage/pgsql/schema.sql")


class NanoMDMSchemaError(MDMError, InputError):
    """NanoMDM's schema cannot be found or loaded."""


@dataclass(frozen=True)
class SchemaLoad:
    """What `load_schema` did."""

    schema_file: Path
    created: bool
    tables: int


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


def load_schema(dsn: str, schema: Path | None = None) -> SchemaLoad:
    """Create NanoMDM's tables in the DSN's database unless they are there; idempotent."""
    import psycopg

    schema = schema or schema_file()
    try:
        with psycopg.connect(dsn, autocommit=False, connect_timeout=10) as conn:
            exists = conn.execute("SELECT to_regclass('devices') IS NOT NULL").fetchone()
            if not (exists and exists[0]):
                conn.execute(schema.read_text(encoding="utf-8"))  # type: ignore[arg-type]
                conn.commit()
                created = True
            else:
                created = False
            row = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchone()
    except psycopg.Error as e:
        # libpq's message names host and database, never the password.
        raise NanoMDMSchemaError(f"NanoMDM's database: {str(e).strip().splitlines()[0]}") from None
    return SchemaLoad(schema, created, int(row[0]) if row else 0)
