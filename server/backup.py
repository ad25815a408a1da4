"""`werne backup create | verify | restore`: everything the MDM server needs to carry on after the
loss of its disk, in one encrypted archive (server.backup_archive), and back onto a fresh server.

What goes in is found from the config, not from a list of lab paths: the config folder
([server] config_dir: werne.toml, the keys, the services' environment files, the TLS files), the
state dir (the SCEP depot and challenge, the push key, KMFDDM's and NanoDEP's stores, the
catalogue, the artifacts), every file a setting names outside those two (the inventory, token
files, the Activation Lock key, signing keys, waivers), werne's database (SQLite's online backup
API, or pg_dump) and NanoMDM's PostgreSQL database (pg_dump, which reads one snapshot). The
services keep running while a backup is made. Left out on purpose: the backup password itself,
shipped data (under werne's install), the lab, the controller's install work dir and the archives.

A restore decrypts and checks the whole archive and writes it to a staging folder before it
touches anything; only then does it stop the services (timers first, then the services in reverse
start order), load the databases (one transaction each), put each file in place (atomic rename;
the stores KMFDDM, NanoDEP, the SCEP depot and the push folder are swapped whole, the old one kept
beside as <dir>.pre-restore-<time>), set owner and mode as recorded, and start and check them.
"""

from __future__ import annotations

import datetime as dt
import grp
import os
import pwd
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import core
from core.config import REPO_ROOT, Config
from core.secrets import Secret, read_secret
from ipad.golive.scep_ca import depot_dir
from server.backup_archive import (
    Entry,
    Manifest,
    check_password,
    decrypt,
    encrypt,
    pack,
    sha256_file,
    unpack,
)
from server.deploy import ServerLayout, server_layout
from server.errors import ArchiveRefused, BackupError

SUFFIX = ".wbk"
PG_TIMEOUT_S = 1800
SYSTEMCTL_TIMEOUT_S = 180
# Settings whose paths are not the site's data: werne's own install, the lab, the archives.
_NOT_DATA = {"lab.cache_dir", "vpn.wireguard_go", "server.install_dir", "server.bin_dir", "server.acme_root",
             "server.config_dir", "site.state_dir", "backup.dir", "backup.password_file"}
# Below the state dir: what a restore must not bring back (locks, SQLite's side files) or what is
# not the server's (the lab, the controller's install work dir).
_STATE_SKIP_DIRS = {"lab", "server-install"}
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".lock")
_SQLITE_MAGIC = b"SQLite format 3\x00"
TIMERS = ("werne-renew.timer", "werne-compliance.timer", "werne-backup.timer")


def archive_password(config: Config, password_file: Path | None = None) -> Secret:
    """The archives' password: --password-file, else backup.password_env or backup.password_file."""
    b = config.backup
    if password_file is not None:
        secret = read_secret(file=password_file, what="backup password")
    else:
        secret = read_secret(file=b.password_file, env=b.password_env, what="backup password")
    check_password(secret)
    return secret


# ---------------------------------------------------------------- what goes in ----------------


@dataclass(frozen=True)
class Source:
    """One file or tree of the server that goes into the archive, and the setting that names it."""

    path: Path
    what: str


def _setting_paths(model: BaseModel, prefix: str) -> Iterator[tuple[str, Path]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, Path):
            yield key, value
        elif isinstance(value, BaseModel):
            yield from _setting_paths(value, f"{key}.")
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, BaseModel):
                    yield from _setting_paths(v, f"{key}.{k}.")


def _shipped(path: Path) -> bool:
    """Data that comes with werne (its checkout or installed share/), restored by installing werne."""
    import sys

    return any(path.is_relative_to(root) for root in (REPO_ROOT, Path(sys.prefix)))


def sources(config: Config, layout: ServerLayout) -> list[Source]:
    """The config folder, the state dir, and each path a setting names outside them (sorted, no
    path twice); settings naming werne's own files or nothing that exists are left out."""
    roots = [Source(layout.config_dir, "server.config_dir"), Source(config.state_dir, "site.state_dir")]
    found: list[Source] = list(roots)
    for key, path in _setting_paths(config, ""):
        if key in _NOT_DATA or not path.is_absolute() or _shipped(path) or not path.exists():
            continue
        if any(path.is_relative_to(s.path) for s in found):
            continue
        found.append(Source(path, key))
    db = Path(config.database_url.removeprefix("sqlite:///"))
    if config.database_url.startswith("sqlite:///") and db.is_file() and not any(
            db.is_relative_to(s.path) for s in found):
        found.append(Source(db, "site.database_url"))
    return found


def _skipped(path: Path, config: Config, excluded: list[Path]) -> bool:
    if path.name.endswith((*_SKIP_SUFFIXES, ".werne-restore")) or any(".pre-restore-" in p for p in path.parts):
        return True
    if path.is_relative_to(config.state_dir):
        rel = path.relative_to(config.state_dir)
        if rel.parts and rel.parts[0] in _STATE_SKIP_DIRS:
            return True
    return any(path == e or path.is_relative_to(e) for e in excluded)


def _walk(root: Path) -> Iterator[Path]:
    if root.is_file() or not root.is_dir():
        yield root
        return
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for d in dirnames:
            yield Path(dirpath) / d
        for f in sorted(filenames):
            yield Path(dirpath) / f


def _owner(st: os.stat_result) -> tuple[str, str]:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return user, group


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def _sqlite_copy(src: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API), never a file copy."""
    try:
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=60)
        try:
            target = sqlite3.connect(dest)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
    except sqlite3.Error as e:
        raise BackupError(f"{src}: SQLite's online backup failed: {e}") from None
    finally:
        _give_back_side_files(src)


def _give_back_side_files(db: Path) -> None:
    """Reading a WAL database as root may create its -wal/-shm files as root; the service account
    that writes the database must keep owning them, or its next write fails."""
    if os.geteuid() != 0:
        return
    try:
        st = db.stat()
    except OSError:
        return
    for side in ("-wal", "-shm"):
        f = Path(f"{db}{side}")
        try:
            if f.stat().st_uid != st.st_uid:
                os.chown(f, st.st_uid, st.st_gid)
        except OSError:
            continue


def _sqlite_revision(path: Path) -> str | None:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            con.close()
            _give_back_side_files(path)
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


# ---------------------------------------------------------------- PostgreSQL ------------------


@dataclass(frozen=True)
class PgTarget:
    """A PostgreSQL database as libpq's environment names it (PGHOST, PGDATABASE, ...), never argv."""

    name: str
    env: dict[str, str]
    os_user: str | None  # run pg_dump/psql as this account (peer authentication), when root


_DSN_PAIR = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_DSN_ENV = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE",
            "password": "PGPASSWORD", "sslmode": "PGSSLMODE"}


def pg_env(dsn: str) -> dict[str, str]:
    """libpq's environment for a DSN in URL (postgresql://) or key=value form."""
    if "://" in dsn:
        from sqlalchemy.engine import make_url

        url = make_url(dsn)
        env = {"PGHOST": str(url.query.get("host") or url.host or ""), "PGPORT": str(url.port or ""),
               "PGUSER": url.username or "", "PGPASSWORD": url.password or "", "PGDATABASE": url.database or ""}
    else:
        env = {}
        for key, value in _DSN_PAIR.findall(dsn):
            if key in _DSN_ENV:
                env[_DSN_ENV[key]] = value.strip("'")
    return {k: v for k, v in env.items() if v}


def _nanomdm_dsn(config: Config, layout: ServerLayout) -> str | None:
    """NanoMDM's DSN: mdm.storage_dsn_file (or its variable), else the one the install wrote into
    NanoMDM's environment file."""
    from ipad.golive.nanomdm_db import configured_storage_dsn

    dsn = configured_storage_dsn(config)
    if dsn is not None:
        return dsn
    env_file = layout.env_file("nanomdm")
    try:
        text = env_file.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("NANOMDM_STORAGE_DSN="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def _pg_targets(config: Config, layout: ServerLayout) -> tuple[PgTarget | None, PgTarget | None]:
    """(werne's database if on PostgreSQL, NanoMDM's database if on PostgreSQL)."""
    os_user = layout.user if os.geteuid() == 0 else None
    werne = None
    if config.database_url.startswith("postgresql"):
        werne = PgTarget("werne", pg_env(config.database_url), os_user)
    dsn = _nanomdm_dsn(config, layout)
    nano = PgTarget("nanomdm", pg_env(dsn), os_user) if dsn else None
    return werne, nano


def _pg_run(target: PgTarget, argv: list[str], what: str, stdin: Any = None, stdout: Any = None,
            ) -> subprocess.CompletedProcess[bytes]:
    if target.os_user is not None and target.os_user != pwd.getpwuid(os.geteuid()).pw_name:
        argv = ["runuser", "-u", target.os_user, "--", *argv]
    env = {**os.environ, **target.env}
    try:
        # cwd /: the service account may not enter root's working directory.
        p = subprocess.run(argv, env=env, stdin=stdin, stdout=stdout if stdout is not None else subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=PG_TIMEOUT_S, check=False, cwd="/")
    except FileNotFoundError:
        raise BackupError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise BackupError(f"{what}: took longer than {PG_TIMEOUT_S} s") from None
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise BackupError(f"{what} failed: {lines[-1] if lines else f'exit {p.returncode}'}")
    return p


def _pg_dump(target: PgTarget, dest: Path) -> None:
    with dest.open("wb") as out:
        _pg_run(target, ["pg_dump", "--clean", "--if-exists", "--no-owner", "--no-privileges"],
                f"pg_dump of {target.env.get('PGDATABASE', target.name)}", stdout=out)


def _pg_scalar(target: PgTarget, sql: str) -> str:
    p = _pg_run(target, ["psql", "-X", "-tAc", sql], f"reading {target.env.get('PGDATABASE', target.name)}")
    return p.stdout.decode(errors="replace").strip()


def _pg_load(target: PgTarget, dump: Path) -> None:
    with dump.open("rb") as f:
        _pg_run(target, ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", "-"],
                f"loading {target.env.get('PGDATABASE', target.name)}", stdin=f)


# ---------------------------------------------------------------- create ----------------------


@dataclass
class BackupResult:
    """One archive made: where, its size, what it holds, how long it took, what was pruned."""

    archive: Path
    size: int
    entries: int
    databases: list[str]
    left_out: list[str]
    duration_s: float
    pruned: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"archive": str(self.archive), "size": self.size, "entries": self.entries,
                "databases": self.databases, "left_out": self.left_out, "duration_s": round(self.duration_s, 2),
                "pruned": [str(p) for p in self.pruned]}


def _file_entry(member: str, kind: str, path: Path, what: str, local: Path, st: os.stat_result) -> Entry:
    user, group = _owner(st)
    return Entry(member=member, kind=kind, path=str(path), what=what, sha256=sha256_file(local),
                 size=local.stat().st_size, mode=st.st_mode & 0o7777, owner=user, group=group)


def _collect(config: Config, layout: ServerLayout, work: Path) -> tuple[Manifest, dict[str, Path]]:
    """Every entry (files, directories, database dumps) and where its bytes are on this machine."""
    werne_db = Path(config.database_url.removeprefix("sqlite:///")) if config.database_url.startswith(
        "sqlite:///") else None
    excluded = [config.backup.dir, *([config.backup.password_file] if config.backup.password_file else [])]
    manifest = Manifest(site=config.site.name, werne_version=core.__version__,
                        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), host=socket.gethostname())
    local: dict[str, Path] = {}
    n = 0
    for src in sources(config, layout):
        for path in _walk(src.path):
            if _skipped(path, config, excluded):
                continue
            try:
                st = path.lstat()
            except OSError as e:
                raise BackupError(f"{path}: cannot read it ({e.strerror})") from None
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                manifest.left_out.append(f"{path} (not a regular file or folder)")
                continue
            what = src.what if path == src.path else f"{src.what} ({path.relative_to(src.path)})"
            if path.is_dir():
                user, group = _owner(st)
                manifest.entries.append(Entry(member=f"files{path}", kind="dir", path=str(path), what=what,
                                              mode=st.st_mode & 0o7777, owner=user, group=group))
                continue
            member = f"files{path}"
            if path == werne_db or (path.suffix in (".db", ".sqlite", ".sqlite3") and _is_sqlite(path)):
                n += 1
                copy = work / f"sqlite-{n}"
                _sqlite_copy(path, copy)
                kind, what = "sqlite", ("werne's database" if path == werne_db else what)
            else:
                if not os.access(path, os.R_OK):
                    raise BackupError(f"{path}: not readable by this account (run the backup as root)")
                copy, kind = path, "file"
            manifest.entries.append(_file_entry(member, kind, path, what, copy, st))
            local[member] = copy
    if werne_db is not None:
        manifest.schema["werne"] = _sqlite_revision(local.get(f"files{werne_db}", werne_db))
    werne_pg, nano_pg = _pg_targets(config, layout)
    for target, what in ((werne_pg, "werne's database"), (nano_pg, "NanoMDM's database")):
        if target is None:
            if what.startswith("NanoMDM"):
                manifest.left_out.append("NanoMDM's database (no PostgreSQL DSN: mdm.storage_dsn_file or "
                                         f"{layout.env_file('nanomdm')})")
            continue
        dump = work / f"{target.name}.sql"
        _pg_dump(target, dump)
        member = f"db/{target.name}.sql"
        manifest.entries.append(Entry(member=member, kind="postgresql", path=target.env.get("PGDATABASE", target.name),
                                      what=what, sha256=sha256_file(dump), size=dump.stat().st_size))
        local[member] = dump
        if target.name == "werne":
            manifest.schema["werne"] = _pg_scalar(target, "SELECT version_num FROM alembic_version") or None
    schema = layout.install_dir / "nanomdm-schema.sql"
    manifest.schema["nanomdm"] = sha256_file(schema)[:16] if schema.is_file() else None
    manifest.trees = [str(p) for p in _trees(config) if p.is_dir()]
    return manifest, local


def _trees(config: Config) -> list[Path]:
    """Folders a restore swaps whole: a store with a file too many is not the store that was saved."""
    from ipad.golive.push_cert import push_key_file

    return [config.state_dir / "kmfddm", config.state_dir / "nanodep", depot_dir(config), push_key_file(config).parent]


def archive_name(config: Config, now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"werne-{config.site.name}-{stamp}{SUFFIX}"


def prune(directory: Path, site: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` archives of this site in directory (by their names' time)."""
    pattern = re.compile(rf"^werne-{re.escape(site)}-\d{{8}}T\d{{6}}Z{re.escape(SUFFIX)}$")
    archives = sorted(p for p in directory.iterdir() if pattern.match(p.name) and p.is_file())
    old = archives[:-keep] if keep > 0 else archives
    for p in old:
        p.unlink()
    return old


def create_backup(config: Config, password: Secret, out_dir: Path | None = None, keep: int | None = None
                  ) -> BackupResult:
    """Write one encrypted archive of the server into out_dir (backup.dir), then prune to `keep`."""
    started = time.monotonic()
    check_password(password)
    layout = server_layout(config)
    out_dir = Path(out_dir or config.backup.dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise BackupError(f"{out_dir}: cannot make the archive folder ({e.strerror})") from None
    with tempfile.TemporaryDirectory(prefix=".werne-backup-", dir=out_dir) as tmp:
        manifest, local = _collect(config, layout, Path(tmp))
        data = encrypt(pack(manifest, local), password)
    target = out_dir / archive_name(config)
    partial = target.with_name(f".{target.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, target)
    pruned = prune(out_dir, config.site.name, keep if keep is not None else config.backup.keep)
    files = [e for e in manifest.entries if e.kind != "dir"]
    return BackupResult(target, len(data), len(files), [e.what for e in files if e.kind in ("sqlite", "postgresql")],
                        manifest.left_out, time.monotonic() - started, pruned)


# ---------------------------------------------------------------- verify ----------------------


@dataclass
class VerifyResult:
    """An archive checked: its manifest, without anything restored."""

    archive: Path
    manifest: Manifest

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        files = [e for e in m.entries if e.kind != "dir"]
        return {"archive": str(self.archive), "site": m.site, "werne_version": m.werne_version,
                "created": m.created, "host": m.host, "schema": m.schema, "entries": len(files),
                "size": sum(e.size for e in files),
                "databases": [e.what for e in files if e.kind in ("sqlite", "postgresql")],
                "left_out": m.left_out}


def _read_archive(archive: Path) -> bytes:
    try:
        return Path(archive).read_bytes()
    except FileNotFoundError:
        raise ArchiveRefused(f"{archive}: no such archive") from None
    except OSError as e:
        raise ArchiveRefused(f"{archive}: cannot read it ({e.strerror})") from None


def _open(config: Config, archive: Path, password: Secret, dest: Path | None) -> Manifest:
    manifest = unpack(decrypt(_read_archive(archive), password), dest)
    if manifest.site != config.site.name:
        raise ArchiveRefused(f"the archive is from site '{manifest.site}', this server is site '{config.site.name}'")
    return manifest


def verify_backup(config: Config, archive: Path, password: Secret) -> VerifyResult:
    """Decrypt the archive and check its manifest and every checksum; nothing is written."""
    return VerifyResult(Path(archive), _open(config, archive, password, None))


# ---------------------------------------------------------------- restore ---------------------


@dataclass
class RestoreResult:
    """A restore done: from which archive, what was put back, what was kept aside, the services' state."""

    archive: Path
    site: str
    created: str
    files: int
    databases: list[str]
    kept_aside: list[str]
    services: dict[str, str]
    duration_s: float

    @property
    def ok(self) -> bool:
        return all(state == "active" for state in self.services.values())

    def to_dict(self) -> dict[str, Any]:
        return {"archive": str(self.archive), "site": self.site, "created": self.created, "files": self.files,
                "databases": self.databases, "kept_aside": self.kept_aside, "services": self.services,
                "ok": self.ok, "duration_s": round(self.duration_s, 2)}


def _holds_data(config: Config, layout: ServerLayout) -> str | None:
    """What on this server would be lost by a restore (enrolled iPads, runs), or None."""
    werne_pg, nano_pg = _pg_targets(config, layout)
    if nano_pg is not None:
        try:
            n = _pg_scalar(nano_pg, "SELECT count(*) FROM enrollments")
        except BackupError:
            n = "0"  # no schema yet: nothing enrolled
        if n not in ("", "0"):
            return f"NanoMDM holds {n} enrolments"
    queries = {"mdm_devices": "iPads", "compliance_runs": "compliance runs"}
    if werne_pg is not None:
        for table, what in queries.items():
            try:
                n = _pg_scalar(werne_pg, f"SELECT count(*) FROM {table}")
            except BackupError:
                continue
            if n not in ("", "0"):
                return f"werne's database holds {n} {what}"
        return None
    db = Path(config.database_url.removeprefix("sqlite:///"))
    if not config.database_url.startswith("sqlite:///") or not db.is_file():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for table, what in queries.items():
            try:
                (n,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
            except sqlite3.Error:
                continue
            if n:
                return f"werne's database holds {n} {what}"
    finally:
        con.close()
        _give_back_side_files(db)
    return None


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT_S,
                              check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        raise BackupError(f"systemctl {' '.join(args)}: {e.__class__.__name__}") from None


def _installed(units: tuple[str, ...]) -> list[str]:
    return [u for u in units if _systemctl("cat", u).returncode == 0]


def _stop(units: list[str]) -> None:
    for unit in units:
        p = _systemctl("stop", unit)
        if p.returncode != 0:
            raise BackupError(f"cannot stop {unit}: {(p.stderr or p.stdout).strip()[-200:]}")


def _start_and_check(units: list[str], timers: list[str]) -> dict[str, str]:
    states: dict[str, str] = {}
    for unit in [*units, *timers]:
        _systemctl("start", unit)
    for unit in [*units, *timers]:
        state = ""
        for _ in range(30):
            state = _systemctl("is-active", unit).stdout.strip()
            if state in ("active", "failed"):
                break
            time.sleep(1)
        states[unit] = state
    if _systemctl("is-active", "nginx.service").stdout.strip() == "active":
        _systemctl("reload", "nginx.service")  # the TLS files may have come back from the archive
    return states


def _set_owner(path: Path, entry: Entry) -> None:
    if os.geteuid() == 0:
        try:
            uid = pwd.getpwnam(entry.owner).pw_uid
        except KeyError:
            uid = 0
        try:
            gid = grp.getgrnam(entry.group).gr_gid
        except KeyError:
            gid = 0
        os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, entry.mode)


def _put_files(manifest: Manifest, staging: Path, stamp: str) -> tuple[int, list[str]]:
    """Each file to its place by an atomic rename; the stores swapped whole (the old kept aside)."""
    kept: list[str] = []
    for tree in manifest.trees:
        t = Path(tree)
        if t.exists():
            aside = t.with_name(f"{t.name}.pre-restore-{stamp}")
            os.replace(t, aside)
            kept.append(str(aside))
    files = 0
    for entry in manifest.entries:
        target = Path(entry.path)
        if entry.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
            _set_owner(target, entry)
            continue
        if entry.kind == "postgresql":
            continue
        staged = staging / entry.member
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.werne-restore")
        shutil.copyfile(staged, tmp)
        _set_owner(tmp, entry)
        if entry.kind == "sqlite":
            for side in ("-wal", "-shm", "-journal"):
                Path(f"{target}{side}").unlink(missing_ok=True)
        os.replace(tmp, target)
        files += 1
    return files, kept


def restore_backup(config: Config, archive: Path, password: Secret, force: bool = False,
                   manage_services: bool = True) -> RestoreResult:
    """Put the archive back onto this server. Refused (ArchiveRefused, nothing changed) when the
    archive is not whole, not this site's or not for this password, or when the server holds data
    and force is not given. manage_services=False leaves systemd alone (a machine without the units)."""
    started = time.monotonic()
    layout = server_layout(config)
    parent = config.state_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".werne-restore-", dir=parent))
    try:
        manifest = _open(config, archive, password, staging)
        if not force:
            held = _holds_data(config, layout)
            if held:
                raise ArchiveRefused(f"this server is not empty ({held}): restore with --force to replace it")
        units = _installed(layout.units) if manage_services else []
        timers = _installed(TIMERS) if manage_services else []
        _stop([*timers, *reversed(units)])
        werne_pg, nano_pg = _pg_targets(config, layout)
        databases: list[str] = []
        for entry in manifest.entries:
            if entry.kind != "postgresql":
                continue
            target = {"db/werne.sql": werne_pg, "db/nanomdm.sql": nano_pg}.get(entry.member)
            if target is None:
                raise BackupError(f"{entry.what} is in the archive, but this server's config names no "
                                  "PostgreSQL database for it")
            _pg_load(target, staging / entry.member)
            databases.append(entry.what)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        files, kept = _put_files(manifest, staging, stamp)
        databases += [e.what for e in manifest.entries if e.kind == "sqlite"]
        states = _start_and_check(units, timers) if manage_services else {}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(Path(archive), manifest.site, manifest.created, files, databases, kept, states,
                         time.monotonic() - started)
