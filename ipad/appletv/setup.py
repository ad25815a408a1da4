"""Setting up the classroom Apple TVs once they enrolled (ADE, like the iPads): their profiles (AirPlay
security, restrictions, Wi-Fi, and what their school wants, e.g. Conference Room Display), the name
from their room (Settings DeviceName), and a DeviceInformation question whose DeviceID answer is the
AirPlay id; once it is known (and not written in appletvs.csv), the iPads of the room get their AirPlay
allow list rebuilt with it.

`set_up_appletvs` is one sweep; the web server's arrival watcher runs it (enrolment.arrival), and
`werne appletv configure` sends the profiles again by hand. Nothing waits: the answers come back
through the webhook, and the nightly check (compliance/baselines/tvos.yaml) judges the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select

from core.db import Database
from core.errors import WerneError
from core.findings import Findings
from ipad import commands
from ipad.actions.configure import configure
from ipad.appletv.airplay import ipads_in_room, learned_airplay_ids
from ipad.dispatch import APPLETV_GROUP, IPadContext, Job, select_targets, send_and_wait
from ipad.models import AppleTVSetup

log = logging.getLogger("werne.appletv")


@dataclass
class AppleTVSweep(Findings):
    """What one sweep did: Apple TVs set up, rooms whose iPads got the Apple TV's AirPlay id, problems."""

    set_up: list[str] = field(default_factory=list)
    rooms_refreshed: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def set_up_one(ctx: IPadContext, serial: str) -> None:
    """Send one enrolled Apple TV its profiles, its name and the DeviceInformation question (no wait)."""
    tv = ctx.inventory.appletvs[serial]
    configure(ctx, serials=(serial,), kind=APPLETV_GROUP, deadline_s=0, max_devices=1)
    targets = select_targets(ctx, serials=(serial,), kind=APPLETV_GROUP)
    jobs = [Job(commands.settings_device_name(tv.device_name), targets, "DeviceName", {"name": tv.device_name}),
            Job(commands.device_information(commands.APPLETV_DEVICE_QUERIES), targets)]
    send_and_wait(ctx, "appletv-setup", jobs, targets, 0)


def set_up_appletvs(ctx: IPadContext, now: datetime | None = None) -> AppleTVSweep:
    """One sweep over the inventory's Apple TVs (safe to repeat: each enrolment is set up once)."""
    report = AppleTVSweep()
    if not ctx.inventory.appletvs:
        return report
    now = now or datetime.now(UTC)
    devices = ctx.registry.devices_by_serial()
    with ctx.db.session() as s:
        done = {r.serial: (r.enrollment_id, r.airplay_id) for r in s.scalars(select(AppleTVSetup))}
    learned = learned_airplay_ids(devices)
    for serial, tv in sorted(ctx.inventory.appletvs.items()):
        dev = devices.get(serial)
        if dev is None or dev.state != "enrolled":
            continue
        row = done.get(serial)
        try:
            if row is None or row[0] != dev.enrollment_id:
                set_up_one(ctx, serial)
                _store(ctx.db, serial, dev.enrollment_id, "", now)
                report.set_up.append(serial)
                continue
            airplay_id = tv.airplay_id or learned.get(serial, "")
            if airplay_id and row[1] != airplay_id:
                room = ipads_in_room(ctx.inventory, tv.school, tv.room)
                if room:
                    configure(ctx, serials=tuple(room), deadline_s=0, max_devices=len(room))
                _store(ctx.db, serial, dev.enrollment_id, airplay_id, now)
                report.rooms_refreshed.append(f"{tv.school}/{tv.room}")
        except WerneError as e:
            report.problems[serial] = str(e)
            log.warning("Apple TV %s not set up: %s", serial, e)
    return report


def _store(db: Database, serial: str, enrollment_id: str, airplay_id: str, now: datetime) -> None:
    with db.session() as s:
        row = s.get(AppleTVSetup, serial)
        if row is None:
            s.add(AppleTVSetup(serial=serial, enrollment_id=enrollment_id, sent_at=now, airplay_id=airplay_id,
                               updated_at=now))
            return
        if row.enrollment_id != enrollment_id:
            row.sent_at = now
        row.enrollment_id, row.airplay_id, row.updated_at = enrollment_id, airplay_id, now
