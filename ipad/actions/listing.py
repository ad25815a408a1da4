"""`werne ipad list`: every iPad of the inventory and every enrolled device, with its problems."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ipad.dispatch import IPadContext
from ipad.models import MDMCommand
from ipad.results import error_chain_text
from ipad.store.devices import Device, version_tuple
from ipad.store.facts import SERIAL_CONFLICT


@dataclass
class IPadRow:
    """One iPad as `werne ipad list` shows it."""

    serial: str
    school: str | None
    group: str | None
    state: str  # enrolled | authenticated | checked_out | not_enrolled
    enrollment_id: str | None = None
    last_seen: datetime | None = None
    os_version: str | None = None
    pending: int = 0
    not_now: int = 0
    identity_cert_not_after: datetime | None = None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "school": self.school,
            "group": self.group,
            "state": self.state,
            "enrollment_id": self.enrollment_id,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "os_version": self.os_version,
            "pending": self.pending,
            "not_now": self.not_now,
            "identity_cert_not_after": self.identity_cert_not_after.isoformat()
            if self.identity_cert_not_after
            else None,
            "problems": self.problems,
        }


class _Problems:
    """What `werne ipad list` finds wrong with one enrolled device (the checks in order)."""

    def __init__(self, ctx: IPadContext, now: datetime):
        self.ctx = ctx
        self.now = now
        self.cfg = ctx.config.mdm
        self.min_os = version_tuple(ctx.config.compliance.min_ipados)

    def of(self, dev: Device, r: IPadRow, cmds: list[MDMCommand], err: MDMCommand | None) -> list[str]:
        out = self._state(dev) + self._queue(r, cmds) + self._identity(dev) + self._security(dev)
        if err is not None:
            what = err.request_type + (f" {err.detail.get('profile')}" if err.detail.get("profile") else "")
            out.append(f"{what} failed: {error_chain_text(err.error_chain) or err.status}")
        return out

    def _state(self, dev: Device) -> list[str]:
        out = []
        if dev.state == "checked_out":
            out.append("checked out (MDM profile removed): re-enrol")
        elif dev.state == "authenticated":
            out.append("enrolment incomplete (no TokenUpdate)")
        elif dev.state == "unconfirmed":
            out.append("answers without a stored enrolment (no Authenticate, no TokenUpdate)")
        conflict = dev.answer(SERIAL_CONFLICT)
        if isinstance(conflict, dict):
            out.append(f"answered with another serial number: {conflict.get('reported')}")
        if dev.awaiting_configuration:
            out.append("stuck in Setup Assistant (awaiting configuration)")
        days = self.cfg.stale_after_days
        if dev.last_seen_at is None or self.now - dev.last_seen_at > timedelta(days=days):
            out.append(f"not seen for more than {days} days")
        return out

    def _queue(self, r: IPadRow, cmds: list[MDMCommand]) -> list[str]:
        out = []
        if r.not_now >= 3:
            out.append(f"NotNow {r.not_now} times (locked? the queue waits)")
        oldest = min((c.enqueued_at or c.updated_at for c in cmds), default=None)
        if oldest is not None and self.now - oldest > timedelta(days=1):
            out.append(f"queue blocked: {len(cmds)} command(s) unanswered since {oldest:%Y-%m-%d}")
        return out

    def _identity(self, dev: Device) -> list[str]:
        if dev.identity_cert_not_after is None:
            return []
        left = dev.identity_cert_not_after - self.now
        if left.total_seconds() <= 0:
            return [f"identity certificate expired {dev.identity_cert_not_after:%Y-%m-%d}"]
        if left < timedelta(days=self.cfg.cert_warn_days):
            return [f"identity certificate expires {dev.identity_cert_not_after:%Y-%m-%d}"]
        return []

    def _security(self, dev: Device) -> list[str]:
        out = []
        if self.min_os and dev.os_version and version_tuple(dev.os_version) < self.min_os:
            out.append(f"iPadOS {dev.os_version} older than {self.ctx.config.compliance.min_ipados}")
        if dev.security_info().get("PasscodePresent") is False:
            out.append("no passcode")
        return out


def list_ipads(ctx: IPadContext, school: str | None = None, now: datetime | None = None) -> list[IPadRow]:
    """Every iPad of the inventory (or one school) and every enrolled device, with its problems."""
    now = now or datetime.now(UTC)
    by_serial = ctx.registry.devices_by_serial()
    pending = ctx.registry.pending_commands()
    errors = ctx.registry.last_errors()
    problems = _Problems(ctx, now)

    def row_for(dev: Device, serial: str, school_: str | None, group: str | None) -> IPadRow:
        cmds = pending.get(dev.enrollment_id, [])
        r = IPadRow(
            serial=serial,
            school=school_,
            group=group,
            state=dev.state,
            enrollment_id=dev.enrollment_id,
            last_seen=dev.last_seen_at,
            os_version=dev.os_version,
            pending=len(cmds),
            not_now=max((c.not_now_count for c in cmds), default=0),
            identity_cert_not_after=dev.identity_cert_not_after,
        )
        r.problems = problems.of(dev, r, cmds, errors.get(dev.enrollment_id))
        return r

    rows: list[IPadRow] = []
    seen: set[str] = set()
    for ipad in ctx.inventory.ipads_of_school(school):
        seen.add(ipad.serial)
        dev = by_serial.get(ipad.serial)
        if dev is None:
            rows.append(IPadRow(serial=ipad.serial, school=ipad.school, group=ipad.group, state="not_enrolled",
                                problems=["not enrolled in MDM"]))
        else:
            rows.append(row_for(dev, ipad.serial, ipad.school, ipad.group))
    if school is None:
        for serial, dev in by_serial.items():
            if serial not in seen:
                r = row_for(dev, serial, dev.school, dev.group)
                r.problems.insert(0, "not in the inventory (ipads.csv)")
                rows.append(r)
    return sorted(rows, key=lambda r: (r.school or "~", r.serial))
