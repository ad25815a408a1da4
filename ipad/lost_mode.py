"""Lost mode with location: where a lost iPad is (DeviceLocation) and a sound to find it
(PlayLostModeSound), only while it is in MDM lost mode.

A pupil's whereabouts are personal data (DSGVO Art. 5: purpose limitation, storage limitation). So:
the webhook parser takes the coordinates out of the stored answer; `store_location` keeps only the
newest location per iPad in `ipad_lost_mode_locations`; `locate` refuses iPads not in lost mode,
and audits who asked (never the coordinates, which would outlive lost mode in the audit trail); an
acknowledged DisableLostMode (or EraseDevice) deletes the row in the same transaction as the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, select

from core import audit
from core.errors import InputError
from core.models import utcnow
from ipad import commands
from ipad.models import LostModeLocation, MDMCommand
from mdm_client.errors import MDMError

# The commands whose acknowledged answer ends (or starts) MDM lost mode.
_LOST_MODE_COMMANDS = ("EnableLostMode", "DisableLostMode", "EraseDevice")
_ENDS_LOST_MODE = ("DisableLostMode", "EraseDevice")


class NotInLostModeError(MDMError, InputError):
    """A location or a sound was asked for an iPad that is not in lost mode; nothing was sent (exit 2)."""

    exit_code = 2


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def store_location(conn: Any, enrollment_id: str, command_uuid: str | None, location: dict[str, Any]) -> None:
    """Keep (replace) an iPad's newest location, inside the webhook batch's transaction."""
    from ipad.store import _dialect_insert

    lat, lon = _float(location.get("Latitude")), _float(location.get("Longitude"))
    if lat is None or lon is None:
        return
    ins = _dialect_insert(LostModeLocation.__table__, conn.dialect.name)
    row = {"enrollment_id": enrollment_id, "latitude": lat, "longitude": lon,
           "horizontal_accuracy": _float(location.get("HorizontalAccuracy")),
           "device_timestamp": str(location.get("Timestamp") or "")[:64], "command_uuid": command_uuid,
           "received_at": utcnow()}
    conn.execute(ins.on_conflict_do_update(
        index_elements=["enrollment_id"], set_={k: ins.excluded[k] for k in row if k != "enrollment_id"}), row)


_SEL_ENDED = select(MDMCommand.enrollment_id).where(
    MDMCommand.command_uuid.in_(bindparam("uuids", expanding=True)),
    MDMCommand.request_type.in_(_ENDS_LOST_MODE),
    MDMCommand.status == "Acknowledged",
)


def forget_locations_of_ended_lost_mode(conn: Any, events: list[Any]) -> None:
    """Delete the location of every iPad whose DisableLostMode or EraseDevice was acknowledged in this
    batch. Those answers carry no response keys, so only such answers are looked up (by CommandUUID)."""
    uuids = list({e.command_uuid for e in events if e.status == "Acknowledged" and not e.payload and e.command_uuid})
    ended: set[str] = set()
    for start in range(0, len(uuids), 500):
        ended.update(r[0] for r in conn.execute(_SEL_ENDED, {"uuids": uuids[start:start + 500]}))
    if ended:
        conn.execute(delete(LostModeLocation).where(LostModeLocation.enrollment_id.in_(sorted(ended))))


def in_lost_mode(db: Any, enrollment_ids: list[str]) -> set[str]:
    """The enrollment ids whose newest acknowledged lost-mode command (Enable, Disable, Erase) is EnableLostMode."""
    newest: dict[str, tuple[Any, int, str]] = {}
    with db.session() as s:
        for c in s.scalars(select(MDMCommand).where(MDMCommand.enrollment_id.in_(enrollment_ids),
                                                    MDMCommand.request_type.in_(_LOST_MODE_COMMANDS),
                                                    MDMCommand.status == "Acknowledged")):
            key = (c.updated_at, c.id, c.request_type)
            if c.enrollment_id not in newest or key[:2] > newest[c.enrollment_id][:2]:
                newest[c.enrollment_id] = key
    return {eid for eid, (_, _, rt) in newest.items() if rt == "EnableLostMode"}


@dataclass(frozen=True)
class Location:
    """Where a lost iPad was (its newest DeviceLocation answer)."""

    latitude: float
    longitude: float
    horizontal_accuracy: float | None
    device_timestamp: str

    def text(self) -> str:
        acc = f" ±{self.horizontal_accuracy:.0f} m" if self.horizontal_accuracy is not None else ""
        return (f"{self.latitude:.5f}, {self.longitude:.5f}{acc} at {self.device_timestamp or '?'} "
                f"(https://www.openstreetmap.org/?mlat={self.latitude:.5f}&mlon={self.longitude:.5f}#map=18/"
                f"{self.latitude:.5f}/{self.longitude:.5f})")


def locations(db: Any, enrollment_ids: list[str]) -> dict[str, Location]:
    """The stored locations of these iPads, only of those in lost mode now."""
    lost = in_lost_mode(db, enrollment_ids)
    with db.session() as s:
        rows = s.scalars(select(LostModeLocation).where(LostModeLocation.enrollment_id.in_(sorted(lost))))
        return {r.enrollment_id: Location(r.latitude, r.longitude, r.horizontal_accuracy, r.device_timestamp)
                for r in rows}


def _lost_targets(ctx: Any, serials: tuple[str, ...], action: str) -> list[Any]:
    from ipad.ops import select_targets

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


def locate(ctx: Any, serials: tuple[str, ...], deadline_s: float | None = None) -> Any:
    """DeviceLocation to iPads in lost mode; waits for the answers and shows where each one is.

    The audit record names who asked for which iPads and whether they answered, never where they are.
    """
    from ipad.ops import _audited, _send_and_wait, _Sent

    targets = _lost_targets(ctx, serials, "locate")
    deadline = 30.0 if deadline_s is None else deadline_s
    job = _Sent(commands.device_location(), targets)
    report = _audited(ctx, "locate", targets, lambda: _send_and_wait(ctx, "locate", [job], targets, deadline))
    found = locations(ctx.db, [t.enrollment_id for t in targets if t.enrollment_id])
    for d in report.devices:
        loc = found.get(d.enrollment_id or "")
        for o in d.outcomes:
            if o.request_type == "DeviceLocation" and o.status == "Acknowledged" and loc is not None:
                o.detail = loc.text()
    return report


def play_sound(ctx: Any, serials: tuple[str, ...], deadline_s: float | None = None) -> Any:
    """PlayLostModeSound to iPads in lost mode (it plays until found or lost mode ends). Audited."""
    from ipad.ops import _audited, _send_and_wait, _Sent

    targets = _lost_targets(ctx, serials, "lost-mode.sound")
    deadline = 30.0 if deadline_s is None else deadline_s
    job = _Sent(commands.play_lost_mode_sound(), targets)
    return _audited(ctx, "lost-mode.sound", targets,
                    lambda: _send_and_wait(ctx, "lost-mode sound", [job], targets, deadline))
