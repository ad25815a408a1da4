"""MDM lost mode: `werne ipad lost-mode` (on and off), and, only while an iPad is lost, where it is
(`locate`: DeviceLocation) and a sound to find it (`play_sound`: PlayLostModeSound).

A pupil's whereabouts are personal data (DSGVO Art. 5): the registry keeps only each lost iPad's
newest location and forgets it when lost mode ends (ipad.store.locations); `locate` refuses iPads
not in lost mode, and audits who asked (never the coordinates, which would outlive lost mode in the
audit trail).
"""

from __future__ import annotations

from core import audit
from ipad import commands
from ipad.dispatch import (
    ActionReport,
    CommandOrRefusal,
    IPadContext,
    Job,
    Target,
    audited,
    select_targets,
    send_and_wait,
    send_to_serials,
)
from ipad.errors import NotInLostModeError
from ipad.store.locations import in_lost_mode, locations


def lost_mode(
    ctx: IPadContext,
    serials: tuple[str, ...],
    message: str | None = None,
    phone: str | None = None,
    footnote: str | None = None,
    disable: bool = False,
    max_devices: int | None = None,
    deadline_s: float | None = None,
) -> ActionReport:
    """EnableLostMode (message or phone needed; default: the school's support phone) or DisableLostMode."""
    if disable:
        off = commands.disable_lost_mode()
        return send_to_serials(ctx, "lost-mode", serials, lambda _t: off, max_devices, deadline_s, {"disable": True})
    if message is None and phone is None:

        def make(t: Target) -> CommandOrRefusal:
            school = ctx.inventory.schools.get(t.school or "")
            if school is None or not school.support_phone:
                return "lost mode needs --message or --phone (the school has no support phone)"
            return commands.enable_lost_mode(f"Dieses iPad gehört der {school.name}.", school.support_phone, footnote)

        return send_to_serials(ctx, "lost-mode", serials, make, max_devices, deadline_s)
    on = commands.enable_lost_mode(message, phone, footnote)
    return send_to_serials(ctx, "lost-mode", serials, lambda _t: on, max_devices, deadline_s)


def _lost_targets(ctx: IPadContext, serials: tuple[str, ...], action: str) -> list[Target]:
    """The named iPads, all in lost mode now; else refused (audited), nothing sent."""
    targets = select_targets(ctx, serials=serials, require_serials=True)
    lost = in_lost_mode(ctx.db, [t.enrollment_id for t in targets if t.enrollment_id])
    refused = [t.serial for t in targets if t.enrollment_id not in lost]
    if refused:
        audit.record(ctx.db, f"ipad.{action}", ",".join(t.serial for t in targets),
                     {"devices": [t.serial for t in targets], "result": f"refused: not in lost mode: {refused}"},
                     actor=ctx.actor)
        raise NotInLostModeError(
            f"not in lost mode: {', '.join(refused)}; a location or a sound is asked for only while an iPad "
            "is lost (`werne ipad lost-mode SERIAL` first); nothing was sent")
    return targets


def locate(ctx: IPadContext, serials: tuple[str, ...], deadline_s: float | None = None) -> ActionReport:
    """DeviceLocation to iPads in lost mode; waits for the answers and shows where each one is.

    The audit record names who asked for which iPads and whether they answered, never where they are.
    """
    targets = _lost_targets(ctx, serials, "locate")
    deadline = 30.0 if deadline_s is None else deadline_s
    job = Job(commands.device_location(), targets)
    report = audited(ctx, "locate", targets, lambda: send_and_wait(ctx, "locate", [job], targets, deadline))
    found = locations(ctx.db, [t.enrollment_id for t in targets if t.enrollment_id])
    for d in report.devices:
        loc = found.get(d.enrollment_id or "")
        for o in d.outcomes:
            if o.request_type == "DeviceLocation" and o.status == "Acknowledged" and loc is not None:
                o.detail = loc.text()
    return report


def play_sound(ctx: IPadContext, serials: tuple[str, ...], deadline_s: float | None = None) -> ActionReport:
    """PlayLostModeSound to iPads in lost mode (it plays until found or lost mode ends). Audited."""
    targets = _lost_targets(ctx, serials, "lost-mode.sound")
    deadline = 30.0 if deadline_s is None else deadline_s
    job = Job(commands.play_lost_mode_sound(), targets)
    return audited(ctx, "lost-mode.sound", targets,
                   lambda: send_and_wait(ctx, "lost-mode sound", [job], targets, deadline))
