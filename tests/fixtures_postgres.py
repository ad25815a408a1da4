"""Pytest fixtures for the PostgreSQL tests (registered in tests/conftest.py): a throwaway PostgreSQL
cluster for the test session, and a fresh, empty database in it for each test.

The cluster is Debian's `postgresql` package (installed by scripts/setup.sh), run by the `postgres`
system user because the server refuses to run as root. It listens only on a unix socket in its own
temporary directory (no TCP port), so parallel test runs cannot collide, and it is stopped and
removed at the end of the session, also when tests fail.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import parts

PG_LIB = Path("/usr/lib/postgresql")
PG_USER = "postgres"
# Not UTC on purpose: timestamps must come back as the same instant whatever the session zone.
PG_TIMEZONE = "Europe/Berlin"


def postgres_bindir() -> Path | None:
    """The newest installed server's bin dir, e.g. /usr/lib/postgresql/15/bin (None if none)."""
    versions = [d for d in PG_LIB.glob("*/bin") if (d / "pg_ctl").is_file() and (d / "initdb").is_file()]
    if not versions:
        return None

    def key(d: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", d.parent.name)) or (0,)

    return max(versions, key=key)


def _as_postgres(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", PG_USER, "--", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class PostgresCluster:
    """A running throwaway cluster: connect through its socket dir as the `postgres` role (trust auth)."""

    base: Path
    socket_dir: Path
    data_dir: Path
    log_file: Path
    bindir: Path
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "werne") -> str:
        return f"postgresql+psycopg://{PG_USER}@/{database}?host={self.socket_dir}"

    def admin_connect(self):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(
            host=str(self.socket_dir), user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=10
        )

    def create_database(self, prefix: str = "werne") -> str:
        """Create a new empty database and return its SQLAlchemy URL (about a second: a template copy)."""
        name = f"{prefix}_{next(self._counter)}"
        with self.admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_schema(self, prefix: str = "t") -> str:
        """Create a new empty schema in the `werne` database and return a URL whose connections use only it.

        Milliseconds instead of a second per database; the URL sets the search_path through libpq's
        `options`, so unqualified names (all of werne's) land in the schema, alembic_version included.
        """
        name = f"{prefix}_{next(self._counter)}"
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir), user=PG_USER, dbname="werne", autocommit=True, connect_timeout=10
        ) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url('werne')}&options=-csearch_path%3D{name}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _stop(cluster: PostgresCluster) -> None:
    """pg_ctl stop -m fast; if that fails, SIGKILL the postmaster named in its pid file."""
    if (cluster.data_dir / "postmaster.pid").exists():
        r = _as_postgres(
            [
                str(cluster.bindir / "pg_ctl"),
                "stop",
                "-D",
                str(cluster.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                "30",
            ],
            cwd=cluster.base,
            timeout=60,
        )
        if r.returncode != 0:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])
                os.kill(pid, signal.SIGKILL)


OWNER_FILE = "owner.pid"  # the pid of the pytest process that started the cluster


def _alive(pid: int) -> bool:
    # Not kill -0: an unreaped zombie would count as alive (see the lab notes).
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())


def sweep_orphans(bindir: Path) -> None:
    """Stop and remove clusters left by a test session that was killed before its teardown."""
    for base in Path(tempfile.gettempdir()).glob("werne-pg-*"):
        try:
            owner = int((base / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not one of ours, or still being set up
        if _alive(owner):
            continue
        _stop(
            PostgresCluster(
                base=base, socket_dir=base, data_dir=base / "data", log_file=base / "server.log", bindir=bindir
            )
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server for the whole session, on a unix socket in its own temporary directory."""
    parts.require_root("PostgreSQL", marker="postgres",
                       why="PostgreSQL tests start a throwaway server as the 'postgres' user: run them as root")
    bindir = postgres_bindir()
    if bindir is None:
        parts.require("PostgreSQL", f"no server binaries under {PG_LIB}; scripts/setup.sh installs Debian's postgresql")
    try:
        pg = pwd.getpwnam(PG_USER)
    except KeyError:
        parts.require("PostgreSQL", "no 'postgres' system user; scripts/setup.sh installs Debian's postgresql")

    # Under /tmp, not pytest's tmp_path: that sits in a root-only (0700) directory the server cannot enter.
    sweep_orphans(bindir)
    base = Path(tempfile.mkdtemp(prefix="werne-pg-"))
    (base / OWNER_FILE).write_text(str(os.getpid()))
    cluster = PostgresCluster(
        base=base, socket_dir=base, data_dir=base / "data", log_file=base / "server.log", bindir=bindir
    )
    try:
        os.chown(base, pg.pw_uid, pg.pw_gid)
        r = _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(cluster.data_dir),
                "-U",
                PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            cwd=base,
        )
        if r.returncode != 0:
            pytest.fail(f"initdb failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
        # Written to the config file rather than passed through pg_ctl -o, which goes through a shell.
        with (cluster.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                "\n# werne test cluster\n"
                "listen_addresses = ''\n"
                f"unix_socket_directories = '{cluster.socket_dir}'\n"
                f"timezone = '{PG_TIMEZONE}'\n"
                # Throwaway data: durability is not what these tests are about.
                "fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n"
                "shared_buffers = 16MB\nmax_connections = 40\n"
            )
        r = _as_postgres(
            [
                str(bindir / "pg_ctl"),
                "start",
                "-D",
                str(cluster.data_dir),
                "-l",
                str(cluster.log_file),
                "-w",
                "-t",
                "60",
            ],
            cwd=base,
        )
        if r.returncode != 0:
            pytest.fail(f"pg_ctl start failed ({r.returncode}): {r.stderr.strip()}\n{cluster.log_tail()}")
        with cluster.admin_connect() as conn:
            conn.execute('CREATE DATABASE "werne"')
        yield cluster
    finally:
        _stop(cluster)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh_postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A new, empty schema of its own for one test, so each test migrates from nothing.

    Tests that need a whole new database (a plain URL, the `public` schema) call
    `postgres_cluster.create_database()` instead.
    """
    # Function-scoped, so this sees every test that uses PostgreSQL, also through
    # request.getfixturevalue (which the collection-time marking cannot see).
    parts.check_marker("PostgreSQL", "postgres")
    return postgres_cluster.create_schema()
