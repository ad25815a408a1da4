"""Which Apple TVs an iPad may AirPlay to: those of its room (or, for groups that move between rooms,
of its school), named by the name werne gives them and by their AirPlay device id.

The device id is the inventory's `airplay_id` where IT wrote it down, else what the Apple TV itself
reported as DeviceID in its newest DeviceInformation answer (tvOS only); until then only the name
is known (iOS 18 and later match by name anyway).
"""

from __future__ import annotations

from collections.abc import Mapping

from core.inventory import AppleTV, Inventory, room_key
from ipad.payloads.profiles import AirPlayDestination, DeviceContext
from ipad.store.devices import Device


def learned_airplay_ids(devices_by_serial: Mapping[str, Device]) -> dict[str, str]:
    """Apple TV serial -> the DeviceID it reported (DeviceInformation), for those that did."""
    out = {}
    for serial, dev in devices_by_serial.items():
        value = dev.device_information().get("DeviceID")
        if isinstance(value, str) and value:
            out[serial] = value
    return out


def destination(tv: AppleTV, learned: Mapping[str, str]) -> AirPlayDestination:
    return AirPlayDestination(tv.device_name, tv.airplay_id or learned.get(tv.serial, ""))


def device_context(inventory: Inventory, serial: str, learned: Mapping[str, str]) -> DeviceContext | None:
    """The context an iPad's device-specific profiles are built from; None for a serial not in ipads.csv."""
    ipad = inventory.ipads.get(serial)
    if ipad is None:
        return None
    school = tuple(destination(t, learned) for t in inventory.appletvs_of_school(ipad.school))
    room = tuple(destination(t, learned) for t in inventory.appletvs_in_room(ipad.school, ipad.room)) \
        if ipad.room else ()
    return DeviceContext(serial, ipad.group, airplay=room, airplay_school=school)


def ipads_in_room(inventory: Inventory, school: str, room: str) -> list[str]:
    """The serials of the iPads whose room is `room` (whose AirPlay list names its Apple TVs)."""
    key = room_key(room)
    return sorted(i.serial for i in inventory.ipads.values() if i.school == school and room_key(i.room) == key)
