"""`werne ipad lock` and `werne ipad clear-passcode`: one command per named iPad, audited."""

from __future__ import annotations

from ipad import commands
from ipad.dispatch import ActionReport, CommandOrRefusal, IPadContext, Target, send_to_serials


def lock(
    ctx: IPadContext,
    serials: tuple[str, ...],
    message: str | None = None,
    phone: str | None = None,
    max_devices: int | None = None,
    deadline_s: float | None = None,
) -> ActionReport:
    """DeviceLock on the named iPads."""
    cmd = commands.device_lock(message, phone)
    return send_to_serials(ctx, "lock", serials, lambda _t: cmd, max_devices, deadline_s)


def clear_passcode(
    ctx: IPadContext,
    serials: tuple[str, ...],
    max_devices: int | None = None,
    deadline_s: float | None = None,
) -> ActionReport:
    """ClearPasscode with each iPad's UnlockToken (from its TokenUpdate)."""

    def make(t: Target) -> CommandOrRefusal:
        token = t.device.unlock_token if t.device is not None else None
        if not token:
            return "no UnlockToken stored for this iPad (it sent none at enrolment)"
        return commands.clear_passcode(token)

    return send_to_serials(ctx, "clear-passcode", serials, make, max_devices, deadline_s)
