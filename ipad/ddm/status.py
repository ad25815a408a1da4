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
mapped, KMFDDM never reached) is simply absent and gets all of the nightly MDM queries.

O(changes): given what an earlier read merged (`known`, kept by ipad.ddm.status_store), only the
reports newer than the newest one merged then are read, and merged over it: an iPad whose status
did not change costs one read of its newest report. Without `known`, the reports are read back to
the last full report as before; the result is the same, except that an iPad with more than
`max_reports` reports since its last full report keeps the older items instead of losing them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.timing import StepTimes
from mdm_client.kmfddm import KMFDDMClient

# The status items the nightly run uses (declarations/status-subscriptions.yaml subscribes them).
WANTED = (
    "device.model.identifier",
    "device.operating-system.build-version",
    "device.operating-system.supplemental.build-version",
    "device.operating-system.supplemental.extra-version",
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
    # Which report is the newest merged (report_identity): where the next read can stop.
    newest: str | None = None

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
            # A Rapid Security Response on top of the version: "(a)" and its own build.
            "os_extra_version": self.items.get("device.operating-system.supplemental.extra-version"),
            "supplemental_build": self.items.get("device.operating-system.supplemental.build-version"),
            "passcode_present": self.items.get("passcode.is-present"),
            "passcode_compliant": self.items.get("passcode.is-compliant"),
            "install_state": self.items.get("softwareupdate.install-state"),
            "pending_version": pending.get("os-version") if isinstance(pending, dict) else None,
            "failure_count": failure.get("count", 0) if isinstance(failure, dict) else 0,
            "failure_reason": failure.get("reason") if isinstance(failure, dict) else None,
            "declarations": [
                {"identifier": d.get("identifier"), "active": d.get("active"), "valid": d.get("valid"),
                 "current": d.get("current"), "reasons": reason_text(d.get("reasons"))}
                for d in self.declarations
            ],
            "errors": [error_text(e) for e in self.errors][:5],
        }


def _field(item: dict[str, Any], name: str) -> Any:
    """A key of a status report item as the device spells it (`code`) or as Apple's schema does (`Code`)."""
    return item.get(name, item.get(name.capitalize()))


def _plain(value: Any) -> str:
    """A value from a status report as text: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def reason_text(reasons: Any) -> str:
    """Apple's reasons (code, description, details) as one text: "code: description (Key: value)".

    The details are what tells two failures with the same code apart ("Profile Installation Failed"
    against "An internal error has occurred."), so they are kept."""
    if not isinstance(reasons, list):
        return ""
    out = []
    for r in reasons:
        if not isinstance(r, dict):
            continue
        text = f"{_plain(_field(r, 'code') or '?')}: {_plain(_field(r, 'description') or '')}".strip().rstrip(":")
        details = _field(r, "details")
        if isinstance(details, dict) and details:
            text += " (" + ", ".join(f"{_plain(k)}: {_plain(v)}" for k, v in sorted(details.items())) + ")"
        elif details:
            text += f" ({_plain(details)})"
        out.append(text)
    return "; ".join(out)


def error_text(error: Any) -> str:
    """One status error as KMFDDM keeps it ({path, error}) as text, never a Python repr.

    `error` is an item of the report's Errors (StatusItem, Reasons) or a declaration's status that is
    neither active nor valid (identifier, valid, reasons)."""
    if not isinstance(error, dict):
        return _plain(error)
    path, body = _plain(error.get("path") or ""), error.get("error")
    if isinstance(body, dict):
        what = body.get("StatusItem") or body.get("identifier") or ""
        valid = f" {_plain(body['valid'])}" if isinstance(body.get("valid"), str) else ""
        reasons = reason_text(_field(body, "reasons"))
        text = f"{_plain(what)}{valid}" + (f": {reasons}" if reasons else "")
    else:
        text = _plain(body) if body is not None else ""
    return f"{path}: {text}" if path else text


def status_item(items: dict[str, Any], name: str) -> tuple[bool, Any]:
    """The value of a status item (e.g. passcode.is-present) in a nested StatusItems dictionary."""
    node: Any = items
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def report_identity(report: dict[str, Any], when: datetime | None) -> str:
    """A report's identity across reads (its index moves as new reports come): when KMFDDM stored it
    (one-second resolution, so not enough alone) and a digest of its content."""
    digest = hashlib.sha256(json.dumps(report, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    return f"{when.isoformat() if when else '-'}|{digest}"


def read_one(client: KMFDDMClient, enrollment_id: str, wanted: Iterable[str] = WANTED,
             max_reports: int = 20, known: DDMStatus | None = None) -> DDMStatus | None:
    """Merge the raw reports of one enrolment, newest first; None when it never sent one. With
    `known` (an earlier read of it), stop at the newest report that read merged and take the rest
    from it."""
    want = list(wanted)
    status = DDMStatus(enrollment_id)
    for index in range(max_reports):
        got = client.status_report_at(enrollment_id, index)
        if got is None:
            break
        report, when = got
        ident = report_identity(report, when)
        if known is not None and ident == known.newest:
            _merge_known(status, known, want, first=index == 0)
            return status
        status.reports_read += 1
        if index == 0:
            status.reported_at, status.newest = when, ident
        items: dict[str, Any] = report["StatusItems"] if isinstance(report.get("StatusItems"), dict) else {}
        for name in want:
            if name in status.items:
                continue
            found, value = status_item(items, name)
            if found:
                status.items[name], status.item_times[name] = value, when
        if report.get("FullReport") is True or all(n in status.items for n in want):
            break
    return status if status.reports_read else None


def _merge_known(status: DDMStatus, known: DDMStatus, want: list[str], first: bool) -> None:
    """The reports older than this read's are the ones `known` merged: its items fill the gaps."""
    if first:
        status.reported_at, status.newest = known.reported_at, known.newest
    for name in want:
        if name not in status.items and name in known.items:
            status.items[name], status.item_times[name] = known.items[name], known.item_times.get(name)


def read_ddm_status(client: KMFDDMClient, enrollment_ids: Iterable[str], max_reports: int = 20,
                    workers: int = 8, times: StepTimes | None = None,
                    known: dict[str, DDMStatus] | None = None) -> dict[str, DDMStatus]:
    """enrolment id -> DDMStatus, for those that ever sent a status report.

    KMFDDM serves raw reports one enrolment at a time, so these are read on `workers` threads (the
    client's connection pool holds 8); the declaration status and errors come in batches. `known`:
    an earlier read's statuses (see the module docstring). `times` gets the step ddm.status (CPU:
    the caller's and the workers' threads)."""
    known = known or {}
    ids = list(dict.fromkeys(enrollment_ids))
    out: dict[str, DDMStatus] = {}
    w0, c0 = time.perf_counter(), time.thread_time()
    worker_cpu: list[float] = []

    def read(eid: str) -> DDMStatus | None:
        c = time.thread_time()
        try:
            return read_one(client, eid, max_reports=max_reports, known=known.get(eid))
        finally:
            worker_cpu.append(time.thread_time() - c)  # list.append is atomic

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(ids) or 1)),
                            thread_name_prefix="werne-ddm-status") as pool:
        for eid, one in zip(ids, pool.map(read, ids), strict=True):
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
    if times is not None:
        w1 = time.perf_counter()
        times.add("ddm.status", w1 - w0, time.thread_time() - c0 + sum(worker_cpu), "threads",
                  start=w0 - times.t0, end=w1 - times.t0, devices=len(ids),
                  reports=sum(s.reports_read for s in out.values()))
    return out
