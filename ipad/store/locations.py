"""Where iPads in MDM lost mode are: their newest DeviceLocation answer, kept only while they are lost.

A pupil's whereabouts are personal data (DSGVO Art. 5: purpose limitation, storage limitation). So:
the webhook parser takes the coordinates out of the stored answer (`ParsedEvent.location`);
`LostModeLocations`, an observer every registry has, keeps only the newest location per iPad in
`ipad_lost_mode_locations`, and deletes it in the same transaction as an acknowledged
DisableLostMode or EraseDevice; `locations` shows them only for iPads in lost mode now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection

from core.db import Database, upsert
from core.models import utcnow
from ipad.models import LostModeLocation, MDMCommand
from ipad.store.events import ParsedEvent
from ipad.store.messages import Batch, DeviceMessages

# The commands whose acknowledged answer ends (or starts) MDM lost mode.
LOST_MODE_COMMANDS = ("EnableLostMode", "DisableLostMode", "EraseDevice")
ENDS_LOST_MODE = ("DisableLostMode", "EraseDevice")
LOCATION_COLUMNS = ("latitude", "longitude", "horizontal_accuracy", "device_timestamp", "command_uuid", "received_at")

_SEL_ENDED = select(MDMCommand.enrollment_id).where(
    MDMCommand.command_uuid.in_(bindparam("uuids", expanding=True)),
    MDMCommand.request_type.in_(ENDS_LOST_MODE),
    MDMCommand.status == "Acknowledged",
)


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def store_location(conn: Connection, enrollment_id: str, command_uuid: str | None, location: dict[str, Any]) -> None:
    """Keep (replace) an iPad's newest location, inside the webhook batch's transaction."""
    lat, lon = _float(location.get("Latitude")), _float(location.get("Longitude"))
    if lat is None or lon is None:
        return
    row = {"enrollment_id": enrollment_id, "latitude": lat, "longitude": lon,
           "horizontal_accuracy": _float(location.get("HorizontalAccuracy")),
           "device_timestamp": str(location.get("Timestamp") or "")[:64], "command_uuid": command_uuid,
           "received_at": utcnow()}
    conn.execute(upsert(LostModeLocation.__table__, conn.dialect.name, ("enrollment_id",), LOCATION_COLUMNS), row)


def forget_locations_of_ended_lost_mode(conn: Connection, events: Sequence[ParsedEvent]) -> None:
    """Delete the location of every iPad whose DisableLostMode or EraseDevice was acknowledged in this
    batch. Those answers carry no response keys, so only such answers are looked up (by CommandUUID)."""
    uuids = list({e.command_uuid for e in events if e.status == "Acknowledged" and not e.payload and e.command_uuid})
    ended: set[str] = set()
    for start in range(0, len(uuids), 500):
        ended.update(r[0] for r in conn.execute(_SEL_ENDED, {"uuids": uuids[start:start + 500]}))
    if ended:
        conn.execute(delete(LostModeLocation).where(LostModeLocation.enrollment_id.in_(sorted(ended))))


class LostModeLocations(DeviceMessages):
    """Keeps each lost iPad's newest location and forgets it when lost mode ends (see the module docstring)."""

    def command_and_report_results(self, batch: Batch, e: ParsedEvent) -> None:
        if e.location is not None and e.command_uuid and e.acknowledged:
            store_location(batch.conn, e.enrollment_id, e.command_uuid, e.location)

    def batch_written(self, batch: Batch) -> None:
        forget_locations_of_ended_lost_mode(batch.conn, batch.command_reports)


def in_lost_mode(db: Database, enrollment_ids: Sequence[str]) -> set[str]:
    """The enrollment ids whose newest acknowledged lost-mode command (Enable, Disable, Erase) is EnableLostMode."""
    newest: dict[str, tuple[datetime, int, str]] = {}
    with db.session() as s:
        for c in s.scalars(select(MDMCommand).where(MDMCommand.enrollment_id.in_(enrollment_ids),
                                                    MDMCommand.request_type.in_(LOST_MODE_COMMANDS),
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


def locations(db: Database, enrollment_ids: Sequence[str]) -> dict[str, Location]:
    """The stored locations of these iPads, only of those in lost mode now."""
    lost = in_lost_mode(db, enrollment_ids)
    with db.session() as s:
        rows = s.scalars(select(LostModeLocation).where(LostModeLocation.enrollment_id.in_(sorted(lost))))
        return {r.enrollment_id: Location(r.latitude, r.longitude, r.horizontal_accuracy, r.device_timestamp)
                for r in rows}
