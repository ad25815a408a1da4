"""Known vulnerabilities per laptop and across the fleet, from each laptop's freshest evidence (its
package list) and the newest imported data of its distribution: the `vulns` facts the rules judge,
`werne laptop vulns` (per package across the fleet, or per laptop) and the package inventory (CSV).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from compliance.evidence import freshest
from compliance.vulns.feeds import VulnDataError
from compliance.vulns.match import SEVERITY_ORDER, Finding, match, release_of
from compliance.vulns.packages import CSV_COLUMNS, package_list
from compliance.vulns.snapshots import Snapshot, latest
from core.config import Config
from core.csvio import write_csv
from core.db import Database


class Snapshots:
    """The newest data per distribution, loaded once per run (a few MB each)."""

    def __init__(self, config: Config, db: Database):
        self.config, self.db = config, db
        self._cache: dict[str, Snapshot | None] = {}

    def get(self, distro: str) -> Snapshot | None:
        if distro not in self._cache:
            self._cache[distro] = latest(self.config, self.db, distro)
        return self._cache[distro]


def packages_of(db: Database, host: str, facts: dict[str, Any]) -> list[list[Any]] | None:
    """The package list the facts name (by digest), or the list itself in facts not yet split."""
    pk = facts.get("packages")
    if not isinstance(pk, dict):
        return None
    if isinstance(pk.get("list"), list):
        return list(pk["list"])
    return package_list(db, host, str(pk.get("sha256") or ""))


def vuln_facts(snapshots: Snapshots, db: Database, host: str, facts: dict[str, Any]) -> dict[str, Any]:
    """The `vulns` section the rules read: the data used (distro, snapshot, its date) and the findings,
    or `not_applicable` with why (no data imported for this distribution), or `error` (no package list)."""
    distro, release = release_of(facts)
    pk = facts.get("packages")
    if isinstance(pk, dict) and pk.get("error"):
        return {"error": f"dpkg-query failed on the laptop: {pk['error']}"}
    if distro not in ("debian", "ubuntu"):
        return {"not_applicable": f"no security data for the distribution {distro or 'unknown'!r}"}
    snap = snapshots.get(distro)
    if snap is None:
        return {"not_applicable": f"no {distro} security data imported (`werne laptop vulns import FILE`)"}
    data = {"distro": distro, "release": release, "snapshot": snap.id, "as_of": snap.as_of.isoformat(),
            "format": snap.format}
    if release is None or release not in snap.releases:
        return {**data, "error": f"the {distro} data (snapshot {snap.id}) has no release {release!r}"}
    rows = packages_of(db, host, facts)
    if rows is None:
        return {**data, "error": "no package list in the evidence (collected before werne listed packages?)"}
    return {**data, "packages": len(rows), "findings": [f.to_dict() for f in match(snap, release, rows)]}


def add_controller_facts(config: Config, db: Database, devices: list[Any], now: datetime) -> None:
    """Add the facts only the controller has to each laptop judged on facts: `vulns` (this section)
    and `recovery_key` (provisioning.disk.escrow), copying the facts so stored evidence is untouched."""
    from provisioning.disk.escrow import recovery_key_facts  # the disk side's state, read-only

    snapshots = Snapshots(config, db)
    keys = recovery_key_facts(db, [d.device for d in devices if d.facts])
    for d in devices:
        if not d.facts:
            continue
        facts = dict(d.facts)
        try:
            facts["vulns"] = vuln_facts(snapshots, db, d.device, facts)
        except VulnDataError as e:
            facts["vulns"] = {"error": str(e)}
        facts["recovery_key"] = keys.get(d.device, {"escrowed": False})
        d.facts = facts


@dataclass
class PackageRow:
    """One source package with known vulnerabilities across the fleet."""

    source: str
    ids: set[str] = field(default_factory=set)
    fixable: set[str] = field(default_factory=set)
    laptops: dict[str, str] = field(default_factory=dict)  # laptop -> installed source version
    worst: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "vulnerabilities": len(self.ids), "fix_available": len(self.fixable),
                "worst_urgency": self.worst, "laptops": dict(sorted(self.laptops.items())),
                "ids": sorted(self.ids)}


@dataclass
class LaptopVulns:
    """One laptop's findings, or why it has none to show."""

    host: str
    evidence_at: datetime | None
    findings: list[Finding]
    reason: str = ""
    snapshot: int | None = None


def laptop_vulns(config: Config, db: Database, hosts: list[str]) -> list[LaptopVulns]:
    """Each laptop's findings from its freshest evidence."""
    snapshots = Snapshots(config, db)
    ev = freshest(db, hosts)
    out = []
    for h in hosts:
        if h not in ev:
            out.append(LaptopVulns(h, None, [], "never seen (no evidence yet)"))
            continue
        v = vuln_facts(snapshots, db, h, ev[h].facts)
        reason = str(v.get("not_applicable") or v.get("error") or "")
        findings = [Finding.from_dict(f) for f in v.get("findings", [])]
        out.append(LaptopVulns(h, ev[h].collected_at, findings, reason, v.get("snapshot")))
    return out


def fleet_by_package(results: list[LaptopVulns]) -> list[PackageRow]:
    """Per source package: its vulnerabilities and the laptops that have it, most exposed first."""
    rows: dict[str, PackageRow] = {}
    for lv in results:
        for f in lv.findings:
            r = rows.setdefault(f.source, PackageRow(f.source))
            r.ids.add(f.id)
            if f.fix_available:
                r.fixable.add(f.id)
            r.laptops[lv.host] = f.installed
            if not r.worst or SEVERITY_ORDER.get(f.urgency, 3) < SEVERITY_ORDER.get(r.worst, 3):
                r.worst = f.urgency
    return sorted(rows.values(), key=lambda r: (-len(r.fixable), SEVERITY_ORDER.get(r.worst, 3), -len(r.laptops),
                                                r.source))


def inventory_csv(db: Database, host: str) -> str:
    """A laptop's installed packages from its freshest evidence as CSV (cells neutralised for Excel)."""
    ev = freshest(db, [host])
    if host not in ev:
        raise VulnDataError(f"{host}: no evidence collected yet (run `werne compliance run` or wait for the watcher)")
    rows = packages_of(db, host, ev[host].facts)
    if rows is None:
        raise VulnDataError(f"{host}: its freshest evidence ({ev[host].collected_at:%Y-%m-%d %H:%M}) lists no packages")
    return write_csv([list(CSV_COLUMNS), *[[*r[:5], *[""] * (5 - len(r[:5]))] for r in rows]])
