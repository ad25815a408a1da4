"""The library behind `werne ipad update`: enforce an iPadOS version by a deadline through KMFDDM.

For each iPad in scope it decides, from the model and OS version the store has (DeviceInformation:
SoftwareUpdateDeviceID, else ProductName) and Apple's catalogue (ipad.ddm.os_catalogue), whether the iPad
is updated, already there, or cannot take the target (with the reason). `plan` only counts that per
model. Otherwise, behind the blast-radius gate, it puts per school the enforcement declaration
(com.apple.configuration.softwareupdate.enforcement.specific, deadline in the school's local time)
and the status subscriptions into the set `werne-<school>-update-<version>`, maps each iPad to be
updated into that set and out of the school's other update sets; KMFDDM then sends the
DeclarativeManagement command through NanoMDM. Every run leaves an audit record.

Refused with one line (exit 2) and nothing sent: a version Apple does not offer, a deadline in the
past, a missing, malformed or stale catalogue, bad declaration data.
"""

from __future__ import annotations

import re
import zoneinfo
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from core import audit
from core.errors import InputError
from core.findings import Findings
from ipad.ddm.os_catalogue import Catalogue, load_catalogue, version_key
from ipad.dispatch import IPadContext, Target, check_blast_radius, select_targets, target_text
from ipad.errors import IPadError
from ipad.payloads.declarations import (
    build_activation,
    build_declaration,
    build_update_declaration,
    load_declaration_groups,
    load_declaration_spec,
    update_set_name,
)
from mdm_client.errors import MDMError
from mdm_client.factory import kmfddm_client
from mdm_client.kmfddm import KMFDDMClient

DEADLINE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?$")
UPDATE = "update"
STATUS_SUBSCRIPTIONS = "status-subscriptions"


@dataclass
class UpdateRow:
    """What the update does for one iPad."""

    serial: str
    school: str | None
    model: str | None
    os_version: str | None
    outcome: str  # update | already | cannot | not enrolled
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("update", "already")


@dataclass
class UpdateReport(Findings):
    """The result of `werne ipad update` (or its plan), per iPad."""

    target: str
    deadline: str  # local time at the schools, as sent
    plan_only: bool
    rows: list[UpdateRow] = field(default_factory=list)
    mapped: dict[str, str] = field(default_factory=dict)  # serial -> what happened in KMFDDM

    def plan(self) -> dict[str, dict[str, int]]:
        """model -> change -> number of iPads."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rows:
            per = out.setdefault(r.model or "(model unknown)", {})
            key = {"update": f"update to {self.target} by {self.deadline}",
                   "already": f"already on {self.target} or newer"}.get(r.outcome, r.detail)
            per[key] = per.get(key, 0) + 1
        return out

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.outcome for r in self.rows))

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": "update --plan" if self.plan_only else "update",
            "target": self.target,
            "deadline": self.deadline,
            "counts": self.counts(),
            "plan": self.plan(),
            "devices": [{"serial": r.serial, "school": r.school, "model": r.model, "os_version": r.os_version,
                         "outcome": r.outcome, "detail": r.detail, "kmfddm": self.mapped.get(r.serial)}
                        for r in self.rows],
        }


def device_model(target: Target) -> str | None:
    """The model identifier Apple's catalogue lists (SoftwareUpdateDeviceID, else ProductName)."""
    dev = target.device
    if dev is None:
        return None
    info = dev.device_information()
    model: str | None = info.get("SoftwareUpdateDeviceID") or info.get("ProductName") or dev.model or None
    return model


def parse_deadline(text: str) -> datetime:
    """'2027-01-15 18:00' (or with T and seconds) -> a naive local time; one line when malformed."""
    if not DEADLINE_RE.match(text.strip()):
        raise InputError(f"deadline {text!r} is not a local time like 2027-01-15 18:00")
    try:
        return datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        raise InputError(f"deadline {text!r} is not a valid date and time") from None


def _zone(ctx: IPadContext, school: str | None) -> zoneinfo.ZoneInfo:
    s = ctx.inventory.schools.get(school or "")
    name = (s.time_zone if s is not None else "") or ctx.config.ddm.default_time_zone
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InputError(f"unknown time zone {name!r} (ddm.default_time_zone or the school's time_zone)") from None


def classify(targets: list[Target], version: str, catalogue: Catalogue, day: date) -> list[UpdateRow]:
    """What the update does for each target: update, already (there or newer), cannot (why), not enrolled."""
    rows = []
    for t in targets:
        model = device_model(t)
        os_version = t.device.os_version if t.device is not None else None
        row = UpdateRow(t.serial, t.school, model, os_version, "cannot")
        if t.enrollment_id is None:
            row.outcome, row.detail = "not enrolled", "not enrolled: nothing sent"
        elif os_version and version_key(os_version) >= version_key(version):
            row.outcome = "already"
        elif model is None:
            row.detail = "cannot take it: model unknown (run werne ipad query)"
        elif version not in catalogue.versions_for(model, day):
            offered = catalogue.versions_for(model, day)
            row.detail = (f"cannot take {version}: Apple offers {model} only "
                          f"{', '.join(offered[-3:])}" if offered else
                          f"cannot take {version}: Apple offers no version for {model}")
        else:
            row.outcome = "update"
        rows.append(row)
    return rows


def update(
    ctx: IPadContext,
    version: str,
    deadline: str,
    school: str | None = None,
    group: str | None = None,
    serials: tuple[str, ...] = (),
    plan: bool = False,
    max_devices: int | None = None,
    ddm: KMFDDMClient | None = None,
    now: datetime | None = None,
) -> UpdateReport:
    """Plan or send the software-update enforcement (see the module docstring)."""
    now = now or datetime.now(UTC)
    local_deadline = parse_deadline(deadline)
    targets = select_targets(ctx, school, serials)
    if group is not None:
        targets = [t for t in targets if t.group == group]
    if not targets:
        raise InputError("no iPads in scope" + (f" (group {group})" if group else ""))
    catalogue = load_catalogue(ctx.config, now)
    if version not in catalogue.offered_versions(now.date()):
        offered = catalogue.offered_versions(now.date())
        raise InputError(f"Apple does not offer iPadOS {version} (offered now: {', '.join(offered[-5:])})")
    schools = sorted({t.school or "" for t in targets})
    for s in schools:
        zone = _zone(ctx, s)
        if local_deadline.replace(tzinfo=zone) <= now:
            raise InputError(f"deadline {local_deadline:%Y-%m-%d %H:%M} is in the past at {s or 'the school'} "
                             f"({zone.key})")
    # Build (and so check) every declaration before anything is sent.
    groups = load_declaration_groups()
    status = build_declaration(load_declaration_spec(STATUS_SUBSCRIPTIONS), groups.identifier_prefix)
    enforcement = {s: build_update_declaration(s, version, local_deadline) for s in schools}
    report = UpdateReport(version, f"{local_deadline:%Y-%m-%d %H:%M}", plan,
                          classify(targets, version, catalogue, now.date()))
    if plan:
        audit.record(ctx.db, "ipad.update.plan", target_text(targets),
                     {"devices": [t.serial for t in targets], "target": version, "deadline": report.deadline,
                      "plan": report.plan()}, actor=ctx.actor)
        return report
    to_update = {r.serial for r in report.rows if r.outcome == "update"}
    check_blast_radius(ctx, len(to_update), max_devices, "update")
    detail: dict[str, Any] = {"devices": [t.serial for t in targets], "target": version,
                              "deadline": report.deadline}
    try:
        client = ddm or kmfddm_client(ctx.config)
        for s in schools:
            set_name = update_set_name(groups, s, version)
            client.put_declaration(enforcement[s].to_dict())
            client.add_to_set(set_name, enforcement[s].identifier)
            client.put_declaration(status.to_dict())
            client.add_to_set(set_name, status.identifier)
            # Without an activation naming them, a device keeps configurations inactive.
            activation = build_activation(groups, set_name, [enforcement[s], status])
            client.put_declaration(activation.to_dict())
            client.add_to_set(set_name, activation.identifier)
            prefix = f"{groups.set_prefix}-{s}-update-"
            for t in targets:
                if t.serial not in to_update or (t.school or "") != s or t.enrollment_id is None:
                    continue
                for old in client.enrollment_sets(t.enrollment_id):
                    if old.startswith(prefix) and old != set_name:
                        client.unmap_enrollment(t.enrollment_id, old)
                changed = client.map_enrollment(t.enrollment_id, set_name)
                report.mapped[t.serial] = f"in {set_name}" + ("" if changed else " (already)")
    except (IPadError, MDMError) as e:
        audit.record(ctx.db, "ipad.update", target_text(targets),
                     {**detail, "mapped": report.mapped, "result": f"error: {e}"}, actor=ctx.actor)
        raise
    audit.record(ctx.db, "ipad.update", target_text(targets),
                 {**detail, "result": report.counts(), "mapped": report.mapped,
                  "per_device": {r.serial: r.detail or r.outcome for r in report.rows}}, actor=ctx.actor)
    return report

