"""Imported security data: `import_snapshot` checks a file (format, truncation, age), carries over
when each fix first appeared, and stores it normalised; `latest` loads the newest per distribution.

The controller may have no internet, so the data arrives as a file someone downloaded. A file that
is older than the last one imported, truncated (not valid JSON, or far fewer source packages than
the last one), or in another format is refused (exit 2) and nothing changes.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from compliance.models import VulnSnapshot
from compliance.vulns.feeds import Entry, Feed, VulnDataError, parse
from core import audit
from core.config import Config
from core.db import Database
from core.files import read_regular_file

# A new file with fewer source packages than this share of the last one's is taken as truncated.
MIN_SHARE_OF_LAST = 0.5
MAX_FILE_BYTES = 1 << 30


@dataclass(frozen=True)
class Snapshot:
    """One imported file as the matcher uses it."""

    id: int
    distro: str
    format: str
    as_of: datetime
    imported_at: datetime
    releases: dict[str, dict[str, list[Entry]]]
    counts: dict[str, int]


def store_dir(config: Config) -> Path:
    return config.state_dir / "vulns"


def _utc(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _carry_fix_since(feed: Feed, last: Snapshot | None) -> None:
    """A fix keeps the time it first appeared; one not in the last snapshot appears now. With no
    earlier snapshot the time is unknown (None): "before the first import", as old as any limit."""
    if feed.format != "debian-tracker":
        return  # USN entries carry their notice's own date
    now = feed.as_of.isoformat() if feed.as_of else None
    for release, sources in feed.releases.items():
        old_rel = last.releases.get(release, {}) if last else {}
        for source, entries in sources.items():
            old = {e.id: e for e in old_rel.get(source, [])}
            for i, e in enumerate(entries):
                if e.fixed is None:
                    continue
                prev = old.get(e.id)
                if last is None:
                    since = None
                elif prev is not None and prev.fixed == e.fixed:
                    since = prev.fix_since
                else:
                    since = now
                entries[i] = Entry(e.id, e.fixed, e.urgency, e.status, since)


def import_snapshot(config: Config, db: Database, path: Path, as_of: datetime | None = None,
                    actor: str | None = None) -> Snapshot:
    """Import one security data file. A Debian tracker file is dated `as_of`, else by its
    modification time (keep it from the download: `curl -R`). Raises VulnDataError (exit 2)."""
    try:
        raw = read_regular_file(path, limit=MAX_FILE_BYTES)
    except OSError as e:
        raise VulnDataError(f"cannot read {path}: {e.strerror or e.__class__.__name__}") from None
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise VulnDataError(f"{path}: not a complete gzip file (truncated?): {e}") from None
    when = as_of or datetime.fromtimestamp(path.stat().st_mtime, UTC)
    feed = parse(raw, _utc(when))
    if feed.as_of is None:
        feed.as_of = _utc(when)
    last = latest(config, db, feed.distro)
    counts = feed.counts()
    if last is not None:
        if feed.as_of < last.as_of:
            raise VulnDataError(f"{path.name} is from {feed.as_of:%Y-%m-%d %H:%M} UTC, older than the last "
                                f"{feed.distro} data imported ({last.as_of:%Y-%m-%d %H:%M} UTC, snapshot {last.id})")
        if counts["sources"] < MIN_SHARE_OF_LAST * last.counts.get("sources", 0):
            raise VulnDataError(f"{path.name} names {counts['sources']} source packages, the last {feed.distro} "
                                f"data {last.counts['sources']}: truncated?")
    _carry_fix_since(feed, last)
    body = json.dumps({"format": feed.format, "distro": feed.distro, "as_of": feed.as_of.isoformat(),
                       "releases": {r: {s: [e.to_row() for e in v] for s, v in sorted(src.items())}
                                    for r, src in sorted(feed.releases.items())}},
                      sort_keys=True, separators=(",", ":")).encode()
    data = gzip.compress(body, mtime=0)
    digest = hashlib.sha256(data).hexdigest()
    out_dir = store_dir(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{feed.distro}-{digest[:16]}.json.gz"
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    actor = actor or audit.current_actor()
    with db.session() as s:
        row = VulnSnapshot(distro=feed.distro, format=feed.format, as_of=feed.as_of, imported_by=actor,
                           source_sha256=hashlib.sha256(raw).hexdigest(), path=str(out), sha256=digest,
                           counts=counts)
        s.add(row)
        s.flush()
        sid, imported_at = row.id, row.imported_at
    audit.record(db, "laptop.vulns.import", feed.distro,
                 {"snapshot": sid, "file": path.name, "as_of": feed.as_of.isoformat(), **counts}, actor=actor)
    return Snapshot(sid, feed.distro, feed.format, feed.as_of, _utc(imported_at), feed.releases, counts)


@functools.lru_cache(maxsize=4)
def _read(path: str, sha256: str) -> dict[str, Any]:
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise VulnDataError(f"{path}: the stored security data was changed after its import (digest differs)")
    parsed: dict[str, Any] = json.loads(gzip.decompress(data))
    return parsed


def latest(config: Config, db: Database, distro: str) -> Snapshot | None:
    """The newest imported data of a distribution, or None. Raises VulnDataError when its stored
    file is gone or was altered."""
    with db.session() as s:
        row = s.scalars(select(VulnSnapshot).where(VulnSnapshot.distro == distro)
                        .order_by(VulnSnapshot.as_of.desc(), VulnSnapshot.id.desc())).first()
        if row is None:
            return None
        sid, fmt, as_of, imported_at, path, sha, counts = (row.id, row.format, row.as_of, row.imported_at,
                                                           row.path, row.sha256, dict(row.counts))
    try:
        body = _read(path, sha)
    except OSError as e:
        raise VulnDataError(f"the {distro} security data of snapshot {sid} is unreadable ({path}: "
                            f"{e.strerror or e.__class__.__name__}); import the file again") from None
    releases = {r: {s: [Entry.from_row(x) for x in v] for s, v in src.items()} for r, src in body["releases"].items()}
    return Snapshot(sid, distro, fmt, _utc(as_of), _utc(imported_at), releases, counts)
