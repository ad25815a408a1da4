"""What the iPads report on their own through declarative device management, read back from KMFDDM.

iPads (iPadOS 17+) with the status subscriptions send status reports (Apple's StatusReport:
StatusItems, Errors, management.declarations) through NanoMDM to KMFDDM. KMFDDM stores every report
before it answers the device, keeps them all (with the time it stored each), and keeps the newest
declaration status per enrolment. werne reads them from there, not from NanoMDM's webhook topic
mdm.DeclarativeManagement: the webhook is fire-and-forget (no retry), and reports are incremental
(only what changed), so one lost webhook post would leave a wrong value until the next full report
("safety sync", about daily). KMFDDM v0.8.3 parses only device.* and management.* into its
status-values, so the passcode.* and softwareupdate.* items come from the raw reports: newest first,
back to the last full report (or until every wanted item is found, or `max_reports`).

`read_ddm_status` answers per enrolment id; an iPad without any report (before iOS 17, never
mapped, KMFDDM never reached) is simply absent and gets the MDM query sweep.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mdm_client.kmfddm import KMFDDMClient

# The status items the nightly run uses (declarations/status-subscriptions.yaml subscribes them).
WANTED = (
    "device.model.identifier",
    "device.operating-system.build-version",
    "device.operating-system.version",
    "passcode.is-compliant",
    "passcode.is-present",
    "softwareupdate.failure-reason",
    "softwareupdate.install-state",
    "softwareupdate.pending-version",
)
BATCH = 50  # enrolment ids per declaration-status / status-errors call (URL length)


@dataclass
class DDMStatus:
    """One iPad's declarative status: each item with the time it was reported, and the declarations."""

    enrollment_id: str
    reported_at: datetime | None = None  # the newest report
    items: dict[str, Any] = field(default_factory=dict)
    item_times: dict[str, datetime | None] = field(default_factory=dict)
    declarations: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    reports_read: int = 0

    def has(self, *names: str) -> bool:
        return all(n in self.items for n in names)

    def to_facts(self) -> dict[str, Any]:
        """The `ddm` facts of the compliance engine."""
        failure = self.items.get("softwareupdate.failure-reason") or {}
        pending = self.items.get("softwareupdate.pending-version") or {}
        return {
            "reported_at": self.reported_at.isoformat() if self.reported_at else None,
            "model": self.items.get("device.model.identifier"),
            "os_version": self.items.get("device.operating-system.version"),
            "build": self.items.get("device.operating-system.build-version"),
            "passcode_present": self.items.get("passcode.is-present"),
            "passcode_compliant": self.items.get("passcode.is-compliant"),
            "install_state": self.items.get("softwareupdate.install-state"),
            "pending_version": pending.get("os-version") if isinstance(pending, dict) else None,
            "failure_count": failure.get("count", 0) if isinstance(failure, dict) else 0,
            "failure_reason": failure.get("reason") if isinstance(failure, dict) else None,
            "declarations": [
                {"identifier": d.get("identifier"), "active": d.get("active"), "valid": d.get("valid"),
                 "current": d.get("current"), "reasons": _reason_text(d.get("reasons"))}
                for d in self.declarations
            ],
            "errors": [str(e.get("path", "")) + ": " + str(e.get("error", "")) for e in self.errors][:5],
        }


def _reason_text(reasons: Any) -> str:
    if not isinstance(reasons, list):
        return ""
    return "; ".join(
        f"{r.get('code', '?')}: {r.get('description', '')}".strip().rstrip(":")
        for r in reasons if isinstance(r, dict)
    )


def status_item(items: dict[str, Any], name: str) -> tuple[bool, Any]:
    """The value of a status item (e.g. passcode.is-present) in a nested StatusItems dictionary."""
    node: Any = items
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def read_one(client: KMFDDMClient, enrollment_id: str, wanted: Iterable[str] = WANTED,
             max_reports: int = 20) -> DDMStatus | None:
    """Merge the raw reports of one enrolment, newest first; None when it never sent one."""
    want = list(wanted)
    status = DDMStatus(enrollment_id)
    for index in range(max_reports):
        got = client.status_report_at(enrollment_id, index)
        if got is None:
            break
        report, when = got
        status.reports_read += 1
        if index == 0:
            status.reported_at = when
        items = report.get("StatusItems") if isinstance(report.get("StatusItems"), dict) else {}
        for name in want:
            if name in status.items:
                continue
            found, value = status_item(items, name)
            if found:
                status.items[name], status.item_times[name] = value, when
        if report.get("FullReport") is True or all(n in status.items for n in want):
            break
    return status if status.reports_read else None


def read_ddm_status(client: KMFDDMClient, enrollment_ids: Iterable[str], max_reports: int = 20,
                    workers: int = 8) -> dict[str, DDMStatus]:
    """enrolment id -> DDMStatus, for those that ever sent a status report.

    KMFDDM serves raw reports one enrolment at a time, so these are read on `workers` threads (the
    client's connection pool holds 8); the declaration status and errors come in batches."""
    ids = list(dict.fromkeys(enrollment_ids))
    out: dict[str, DDMStatus] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(ids) or 1)),
                            thread_name_prefix="werne-ddm-status") as pool:
        for eid, one in zip(ids, pool.map(lambda e: read_one(client, e, max_reports=max_reports), ids),
                            strict=True):
            if one is not None:
                out[eid] = one
    reporting = list(out)
    for start in range(0, len(reporting), BATCH):
        chunk = reporting[start:start + BATCH]
        for eid, decls in client.declaration_status(chunk).items():
            if eid in out:
                out[eid].declarations = list(decls or [])
        for eid, errs in client.status_errors(chunk).items():
            if eid in out:
                out[eid].errors = list(errs or [])
    return out
