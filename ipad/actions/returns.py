"""Return to Service: an iPad erased with `werne ipad wipe --return-to-service` enrols again by
itself (iPadOS 17+), and werne treats the new enrolment as the same iPad going back to its group,
as ipads.csv says now (a move between the wipe and the return takes effect on arrival).

Each such wipe is one `ipad_returns` row, moved on by `process_returns` (the arrival round of
`werne web serve` runs it every few seconds): erasing -> enrolling when the EraseDevice is
acknowledged -> configuring when the iPad checks in again (a TokenUpdate after the erase): its stale
answers are forgotten, the group's profiles, the group's apps (licences were taken back at the
wipe; assigned again) and the bypass-code request are sent -> done when nothing is pending, or
failed with the first error. No manual step.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from core import audit
from core.config import Config
from core.db import Database
from core.errors import WerneError
from core.inventory import load_inventory
from core.models import utcnow
from ipad import commands
from ipad.actions.activation_lock import escrow_key, request_codes
from ipad.actions.configure import configure
from ipad.apps.licences import apply
from ipad.commands import Command
from ipad.dispatch import ActionReport, IPadContext, Target
from ipad.errors import ReturnToServiceError
from ipad.models import IPadReturn, MDMCommand, MDMDeviceFact, MDMWebhookEvent
from ipad.payloads.profiles import build_named_profile, profile_payload_for_install
from ipad.results import error_chain_text
from ipad.store.devices import version_tuple
from mdm_client.nanomdm import NanoMDMClient

log = logging.getLogger("werne.ipad.returns")
RETURNS_ACTOR = "werne-return"
MIN_IPADOS = (17,)
_OPEN = ("erasing", "enrolling", "configuring")


def rts_refusal(target: Target) -> str | None:
    """Why this iPad cannot be erased with Return to Service (None: it can)."""
    dev = target.device
    version = dev.os_version if dev is not None else None
    if not version:
        return "iPadOS version unknown: run `werne ipad query` first (Return to Service needs iPadOS 17)"
    if version_tuple(version) < MIN_IPADOS:
        return (f"iPadOS {version}: Return to Service needs iPadOS 17 or later; update it, or wipe without "
                "--return-to-service and set it up by hand")
    return None


def return_to_service_command(ctx: IPadContext) -> Command:
    """EraseDevice with ReturnToService: the Wi-Fi profile werne builds, and the enrolment profile
    unless the iPad enrols again through ADE (mdm.return_to_service_enrolment)."""
    try:
        wifi = profile_payload_for_install(build_named_profile("wifi", ctx.config), ctx.config)
    except WerneError as e:
        raise ReturnToServiceError(f"Return to Service needs the Wi-Fi profile: {e}; nothing was wiped") from None
    mdm_profile = None
    if ctx.config.mdm.return_to_service_enrolment == "profile":
        # Imported here: it loads cryptography (~70 ms), and only this way of returning needs it.
        from ipad.payloads.enrolment_profile import signed_enrolment_profile

        try:
            mdm_profile = signed_enrolment_profile(ctx.config, ctx.db)
        except WerneError as e:
            raise ReturnToServiceError(f"Return to Service needs the enrolment profile: {e}; nothing was wiped"
                                       ) from None
    return commands.erase_device(return_to_service=True, wifi_profile=wifi, mdm_profile=mdm_profile)


def record_returns(ctx: IPadContext, report: ActionReport, cmd: Command) -> None:
    """One ipad_returns row per iPad the erase was queued for."""
    now = utcnow()
    rows = []
    for d in report.devices:
        sent = [o for o in d.outcomes if o.request_type == "EraseDevice" and o.status != "not sent"]
        if sent and d.enrollment_id:
            rows.append(IPadReturn(serial=d.serial, enrollment_id=d.enrollment_id, command_uuid=cmd.uuid,
                                   status="erasing", pending_commands=[], requested_at=now,
                                   requested_by=ctx.actor, updated_at=now))
    if rows:
        with ctx.db.session() as s:
            s.add_all(rows)


def _set(db: Database, row_id: int, **values: Any) -> None:
    with db.session() as s:
        r = s.get(IPadReturn, row_id)
        if r is not None:
            for k, v in {**values, "updated_at": utcnow()}.items():
                setattr(r, k, v)


def process_returns(db: Database, cfg: Config, client: NanoMDMClient | None = None) -> dict[str, str]:
    """One round over the open returns; serial -> the status it reached in this round."""
    with db.session() as s:
        rows = [(r.id, r.serial, r.enrollment_id, r.command_uuid, r.status, r.updated_at)
                for r in s.scalars(select(IPadReturn).where(IPadReturn.status.in_(_OPEN)))]
    out: dict[str, str] = {}
    ctx = None
    for rid, serial, eid, uuid, status, since in rows:
        with db.session() as s:
            erase = s.scalars(select(MDMCommand).where(MDMCommand.command_uuid == uuid,
                                                       MDMCommand.enrollment_id == eid)).first()
            if status == "erasing" and erase is not None:
                if erase.status == "Acknowledged":
                    status = "enrolling"
                elif erase.status in ("Error", "CommandFormatError", "enqueue_failed"):
                    why = error_chain_text(erase.error_chain, brief=True) or erase.status
                    _set(db, rid, status="failed", reason=f"EraseDevice failed: {why}"[:500])
                    out[serial] = "failed"
                    continue
                if status == "enrolling":
                    _set(db, rid, status="enrolling")
                    since = utcnow() if erase.updated_at is None else erase.updated_at
            back = status == "enrolling" and s.scalars(
                select(MDMWebhookEvent.id).where(MDMWebhookEvent.enrollment_id == eid,
                                                 MDMWebhookEvent.topic == "mdm.TokenUpdate",
                                                 MDMWebhookEvent.received_at > since)).first() is not None
        if status == "enrolling" and back:
            if ctx is None:
                ctx = IPadContext(cfg, db, load_inventory(cfg.inventory_dir), client=client, actor=RETURNS_ACTOR)
            status = _arrive(ctx, rid, serial, eid)
        elif status == "configuring":
            status = _check_configured(db, rid, eid, since)
        out[serial] = status
    return out


def _arrive(ctx: IPadContext, rid: int, serial: str, eid: str) -> str:
    """The returned iPad: forget its stale answers, send its group's profiles, apps and the bypass-code request."""
    if serial not in ctx.inventory.ipads:
        _set(ctx.db, rid, status="failed", reason="not in ipads.csv any more (retired?): nothing installed")
        return "failed"
    with ctx.db.session() as s:  # answers from before the erase describe a device that is gone
        s.execute(delete(MDMDeviceFact).where(MDMDeviceFact.enrollment_id == eid,
                                              ~MDMDeviceFact.kind.like("_checkin.%")))
    started = utcnow()
    _set(ctx.db, rid, status="configuring")
    done: list[str] = []
    try:
        report = configure(ctx, serials=(serial,), max_devices=1, deadline_s=0)
        done.append(f"profiles: {report.devices[0].summary()}"[:300])
        if ctx.config.apps.locations:
            apps = apply(ctx, max_devices=1, serials={serial})
            done.extend(f"apps: {line}" for d in apps.devices for line in d.lines)
        if escrow_key(ctx.config) is not None:  # a broken key stops here, as a site problem
            request_codes(ctx, serials=(serial,), max_devices=1, deadline_s=0)
            done.append("bypass code requested")
    except WerneError as e:
        # A site problem (NanoMDM down, too few licences): the next round tries again.
        log.warning("return of %s: %s", serial, e)
        _set(ctx.db, rid, status="enrolling", reason=str(e)[:500])
        return "enrolling"
    _set(ctx.db, rid, updated_at=started, reason=None)
    audit.record(ctx.db, "ipad.return", serial, {"enrollment_id": eid, "group": ctx.inventory.ipads[serial].group,
                                                  "sent": done}, actor=RETURNS_ACTOR)
    return "configuring"


def _check_configured(db: Database, rid: int, eid: str, since: datetime) -> str:
    with db.session() as s:
        cmds = list(s.scalars(select(MDMCommand).where(MDMCommand.enrollment_id == eid,
                                                       MDMCommand.enqueued_at >= since)))
    failed = [c for c in cmds if c.status in ("Error", "CommandFormatError", "enqueue_failed")]
    if failed:
        c = failed[0]
        what = c.request_type + (f" {c.detail.get('profile') or c.detail.get('app')}" if c.detail else "")
        why = error_chain_text(c.error_chain, brief=True) or c.status
        _set(db, rid, status="failed", reason=f"{what}: {why}"[:500])
        return "failed"
    if any(c.status in ("queued", "NotNow") for c in cmds):
        return "configuring"
    _set(db, rid, status="done")
    return "done"


def open_returns(db: Database) -> list[IPadReturn]:
    """Returns not yet done or failed (for `werne ipad list` and the tests)."""
    with db.session() as s:
        return list(s.scalars(select(IPadReturn).order_by(IPadReturn.id)))
