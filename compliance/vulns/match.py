"""Matching a laptop's installed packages against imported security data, in Debian's version order.

The data is keyed by source package; a laptop's facts list each binary package with its source
package and source version (dpkg's `source:Package`, `source:Version`). A source package is affected
by an entry when the entry has no fix in the laptop's release, or the installed source version is
lower than the fixed one (core.debversion, dpkg's own order).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from compliance.vulns.feeds import Entry
from compliance.vulns.snapshots import Snapshot
from core.debversion import lower

# Debian's VERSION_ID -> codename, for facts that lack VERSION_CODENAME (old os-release files).
DEBIAN_CODENAMES = {"10": "buster", "11": "bullseye", "12": "bookworm", "13": "trixie", "14": "forky"}
SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "unknown": 3, "not yet assigned": 3, "end-of-life": 4,
                  "unimportant": 5}


@dataclass(frozen=True)
class Finding:
    """One vulnerability of one installed source package."""

    id: str
    source: str
    packages: tuple[str, ...]
    installed: str
    fixed: str | None
    urgency: str
    status: str
    fix_since: str | None

    @property
    def fix_available(self) -> bool:
        return self.fixed is not None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "packages": list(self.packages), "installed": self.installed,
                "fixed": self.fixed, "urgency": self.urgency, "status": self.status, "fix_since": self.fix_since}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(d["id"], d["source"], tuple(d["packages"]), d["installed"], d["fixed"], d["urgency"],
                   d["status"], d["fix_since"])


@dataclass(frozen=True)
class Installed:
    """One source package as installed: its version and the binary packages built from it."""

    source: str
    version: str
    packages: tuple[str, ...]


def installed_sources(packages: list[list[Any]]) -> dict[str, Installed]:
    """Source package -> what is installed of it, from the facts' rows [package, version, source,
    source version, arch]; a binary without a source field is its own source."""
    by_source: dict[tuple[str, str], list[str]] = {}
    for row in packages:
        name, version = str(row[0]), str(row[1])
        source = str(row[2] or "") or name.split(":", 1)[0]
        sversion = str(row[3] or "") or version
        by_source.setdefault((source, sversion), []).append(name)
    out: dict[str, Installed] = {}
    for (source, version), names in sorted(by_source.items()):
        have = out.get(source)
        # Two versions of one source at once (a partial upgrade): the older one is what is exposed.
        if have is None or lower(version, have.version):
            out[source] = Installed(source, version, tuple(sorted(names)))
    return out


def release_of(facts: dict[str, Any]) -> tuple[str, str | None]:
    """(distro id, codename) of a laptop from its facts' os section."""
    os_ = facts.get("os") or {}
    distro = str(os_.get("id") or "").lower()
    codename = str(os_.get("version_codename") or "") or None
    if codename is None and distro == "debian":
        codename = DEBIAN_CODENAMES.get(str(os_.get("version_id") or "").split(".")[0])
    return distro, codename


def affected(entry: Entry, installed: Installed) -> bool:
    return entry.fixed is None or lower(installed.version, entry.fixed)


def match(snapshot: Snapshot, release: str, packages: list[list[Any]]) -> list[Finding]:
    """Every vulnerability of the installed packages in `release`, most urgent first."""
    data = snapshot.releases.get(release, {})
    out = []
    for source, inst in installed_sources(packages).items():
        for e in data.get(source, ()):
            if affected(e, inst):
                out.append(Finding(e.id, source, inst.packages, inst.version, e.fixed, e.urgency, e.status,
                                   e.fix_since))
    out.sort(key=lambda f: (SEVERITY_ORDER.get(f.urgency, 3), f.source, f.id))
    return out


def fix_age_days(f: Finding, first_import: datetime, now: datetime) -> float | None:
    """Days since the fix became known; None for a fix known before the first import (age unknown)."""
    if f.fixed is None:
        return None
    if f.fix_since is None:
        return None
    return (now - datetime.fromisoformat(f.fix_since)).total_seconds() / 86400
