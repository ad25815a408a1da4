"""`werne ipad wipe`: EraseDevice behind a typed confirmation, then the app licences of every wiped
iPad taken back (Apple's Apps and Books); with Return to Service the iPad enrols again by itself and
ipad.actions.returns brings it back into its group (its licences are assigned again there)."""

from __future__ import annotations

from sqlalchemy import select

from core import audit
from core.errors import InputError
from core.inventory import normalise_serial
from ipad import commands
from ipad.actions.returns import record_returns, return_to_service_command, rts_refusal
from ipad.apps.licences import release_licences
from ipad.dispatch import ActionReport, CommandOutcome, IPadContext, send_to_serials
from ipad.errors import SafetyError
from ipad.models import AppLicence


def _confirmed(ctx: IPadContext, wanted: list[str], typed_confirmation: str | None, yes: bool,
               max_devices: int | None) -> int | None:
    """The --max-devices to use once the wipe is confirmed; refused (SafetyError) otherwise."""
    if yes:
        if max_devices != len(wanted):
            raise SafetyError(f"wipe --yes needs --max-devices {len(wanted)} (the number of serials); nothing was sent")
        return max_devices
    typed = sorted(normalise_serial(s) for s in (typed_confirmation or "").replace(",", " ").split())
    if typed != sorted(wanted):
        audit.record(ctx.db, "ipad.wipe", ",".join(wanted), {"devices": wanted, "result": "not confirmed"},
                     actor=ctx.actor)
        raise SafetyError("the serials typed did not match; nothing was wiped")
    return max_devices if max_devices is not None else len(wanted)


def _erase(ctx: IPadContext, wanted: list[str], max_devices: int | None, deadline_s: float | None,
           return_to_service: bool) -> ActionReport:
    if not return_to_service:
        cmd = commands.erase_device()
        return send_to_serials(ctx, "wipe", wanted, lambda _t: cmd, max_devices, deadline_s)
    cmd = return_to_service_command(ctx)  # builds the Wi-Fi (and enrolment) profile first: may refuse
    report = send_to_serials(ctx, "wipe", wanted, lambda t: rts_refusal(t) or cmd, max_devices, deadline_s,
                             {"return_to_service": True})
    record_returns(ctx, report, cmd)
    return report


def _release_licences(ctx: IPadContext, report: ActionReport) -> None:
    """Take back the licences werne recorded for every iPad the erase was sent to; each release is
    one more outcome of that iPad (Acknowledged when Apple confirmed it, Error otherwise)."""
    sent = [d.serial for d in report.devices if d.outcomes and all(o.status != "not sent" for o in d.outcomes)]
    if not sent:
        return
    with ctx.db.session() as s:
        holding = set(s.scalars(select(AppLicence.serial).where(AppLicence.serial.in_(sent))))
    if not holding:
        return
    released = release_licences(ctx, sorted(holding), "wiped")
    for d in report.devices:
        for r in released.get(d.serial, []):
            d.outcomes.append(CommandOutcome("licence", "Acknowledged" if r.taken_back else "Error", str(r)))


def wipe(
    ctx: IPadContext,
    serials: tuple[str, ...],
    typed_confirmation: str | None = None,
    yes: bool = False,
    max_devices: int | None = None,
    deadline_s: float | None = None,
    return_to_service: bool = False,
) -> ActionReport:
    """EraseDevice, then the wiped iPads' app licences taken back. Needs the serials typed again, or
    `yes` with `max_devices` equal to the count.

    `return_to_service`: the iPad re-enrols by itself after the erase (iPadOS 17+; older ones are
    not sent the erase, with the reason) and ipad.actions.returns brings it back into its group.
    """
    wanted = list(dict.fromkeys(normalise_serial(s) for s in serials))
    if not wanted:
        raise InputError("name the iPads to wipe by serial")
    max_devices = _confirmed(ctx, wanted, typed_confirmation, yes, max_devices)
    report = _erase(ctx, wanted, max_devices, deadline_s, return_to_service)
    _release_licences(ctx, report)
    return report
