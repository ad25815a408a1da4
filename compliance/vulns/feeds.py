"""Reading the distributions' own security data into one normalised shape.

Debian: the security tracker's JSON (security-tracker.debian.org/tracker/data/json):
`{source package: {CVE or TEMP id: {"description", "scope", "debianbug", "releases": {codename:
{"status": "resolved"|"open"|"undetermined", "repositories": {suite: version}, "fixed_version",
"urgency", "nodsa"...}}}}}`. A release is affected below `fixed_version` when resolved ("0" means
never affected), and in every version while open or undetermined (no fix there yet).

Ubuntu: the USN database (usn.ubuntu.com/usn-db/database.json): `{USN id: {"id", "timestamp",
"cves": [...], "releases": {codename: {"sources": {source: {"version"}}, "binaries", "allbinaries"}}}}`.
A USN is a fix: every source version below it is affected. USNs list only fixed issues and carry
no priority, so Ubuntu laptops get no "without a fix" listing and severity "unknown".

Normalised: `Feed(distro, format, as_of, releases={codename: {source: [Entry...]}})`; an entry is
one vulnerability id of one source package in one release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from compliance.errors import ComplianceError
from core.debversion import compare
from core.errors import InputError

DEBIAN = "debian-tracker"
UBUNTU = "ubuntu-usn"
FORMATS = (DEBIAN, UBUNTU)
DISTRO = {DEBIAN: "debian", UBUNTU: "ubuntu"}
# Debian's urgencies as the tracker writes them ("low**" marks an urgency taken from elsewhere).
URGENCIES = ("high", "medium", "low", "unimportant", "not yet assigned", "end-of-life", "unknown")


class VulnDataError(ComplianceError, InputError):
    """A security data file is not in a format werne reads, is truncated, or is older than the last one."""


@dataclass(frozen=True)
class Entry:
    """One vulnerability of one source package in one release: fixed in `fixed` (None: no fix yet)."""

    id: str
    fixed: str | None
    urgency: str
    status: str  # resolved | open | undetermined
    # When the fix first appeared in imported data (None: before the first import; USN: its date).
    fix_since: str | None = None

    def to_row(self) -> list[Any]:
        return [self.id, self.fixed, self.urgency, self.status, self.fix_since]

    @classmethod
    def from_row(cls, row: list[Any]) -> Entry:
        return cls(str(row[0]), row[1], str(row[2]), str(row[3]), row[4])


@dataclass
class Feed:
    """A parsed security data file."""

    format: str
    as_of: datetime | None
    releases: dict[str, dict[str, list[Entry]]] = field(default_factory=dict)

    @property
    def distro(self) -> str:
        return DISTRO[self.format]

    def counts(self) -> dict[str, int]:
        sources = {s for r in self.releases.values() for s in r}
        entries = sum(len(v) for r in self.releases.values() for v in r.values())
        return {"releases": len(self.releases), "sources": len(sources), "entries": entries}


def _urgency(value: Any) -> str:
    u = str(value or "not yet assigned").strip().rstrip("*").strip().lower()
    return u if u in URGENCIES else "unknown"


def detect(data: Any) -> str:
    """Which of the two formats `data` (parsed JSON) is. Raises VulnDataError for anything else."""
    if not isinstance(data, dict) or not data:
        raise VulnDataError("not security data: the file is not a JSON object with entries")
    for value in list(data.values())[:50]:
        if not isinstance(value, dict):
            continue
        if isinstance(value.get("releases"), dict) and ("cves" in value or "timestamp" in value):
            return UBUNTU
        inner = [v for v in value.values() if isinstance(v, dict)]
        if inner and all(isinstance(v.get("releases"), dict) for v in inner):
            return DEBIAN
    raise VulnDataError("not the Debian security tracker's JSON nor Ubuntu's USN database "
                        "(no package entries with per-release data)")


def parse_debian(data: dict[str, Any], as_of: datetime | None) -> Feed:
    feed = Feed(DEBIAN, as_of)
    bad = 0
    for source, vulns in data.items():
        if not isinstance(vulns, dict):
            bad += 1
            continue
        for vid, rec in vulns.items():
            releases = rec.get("releases") if isinstance(rec, dict) else None
            if not isinstance(releases, dict):
                bad += 1
                continue
            for release, info in releases.items():
                if not isinstance(info, dict):
                    bad += 1
                    continue
                status = str(info.get("status") or "")
                fixed = info.get("fixed_version")
                if status == "resolved":
                    if not fixed:
                        bad += 1
                        continue
                    if str(fixed) == "0":
                        continue  # never affected in this release
                    entry = Entry(str(vid), str(fixed), _urgency(info.get("urgency")), status)
                elif status in ("open", "undetermined"):
                    entry = Entry(str(vid), None, _urgency(info.get("urgency")), status)
                else:
                    bad += 1
                    continue
                feed.releases.setdefault(str(release), {}).setdefault(str(source), []).append(entry)
    _check_not_garbage(feed, bad)
    return feed


def parse_ubuntu(data: dict[str, Any]) -> Feed:
    fixes: dict[tuple[str, str, str], tuple[str, float]] = {}
    newest = 0.0
    bad = 0
    for usn_id, usn in data.items():
        if not isinstance(usn, dict) or not isinstance(usn.get("releases"), dict):
            bad += 1
            continue
        ts = float(usn.get("timestamp") or 0)
        newest = max(newest, ts)
        ids = [c for c in usn.get("cves") or [] if isinstance(c, str) and c.startswith("CVE-")] or [f"USN-{usn_id}"]
        for release, rel in usn["releases"].items():
            sources = rel.get("sources") if isinstance(rel, dict) else None
            if not isinstance(sources, dict):
                bad += 1
                continue
            for source, info in sources.items():
                version = info.get("version") if isinstance(info, dict) else None
                if not version:
                    bad += 1
                    continue
                for vid in ids:
                    key = (str(release), str(source), vid)
                    # The same issue in two notices (a regression fix): the newer fix counts.
                    if key not in fixes or compare(str(version), fixes[key][0]) > 0:
                        fixes[key] = (str(version), ts)
    feed = Feed(UBUNTU, datetime.fromtimestamp(newest, UTC) if newest else None)
    for (release, source, vid), (version, ts) in sorted(fixes.items()):
        since = datetime.fromtimestamp(ts, UTC).isoformat() if ts else None
        feed.releases.setdefault(release, {}).setdefault(source, []).append(
            Entry(vid, version, "unknown", "resolved", since))
    _check_not_garbage(feed, bad)
    return feed


def _check_not_garbage(feed: Feed, bad: int) -> None:
    good = feed.counts()["entries"]
    if not good:
        raise VulnDataError(f"no usable entries in the {feed.format} data")
    if bad > good:
        raise VulnDataError(f"{bad} malformed entries against {good} usable ones: not {feed.format} data")


def parse(text: str | bytes, as_of: datetime | None = None) -> Feed:
    """Parse a security data file's text. `as_of` dates a Debian file (the tracker's JSON has no
    date of its own; Ubuntu's is the newest USN). Raises VulnDataError for a truncated or wrong file."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise VulnDataError(f"not valid JSON (truncated?): {str(e)[:120]}") from None
    fmt = detect(data)
    return parse_debian(data, as_of) if fmt == DEBIAN else parse_ubuntu(data)
