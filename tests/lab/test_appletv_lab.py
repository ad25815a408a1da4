"""The classroom Apple TVs in the lab, through the real chain (nginx, werne's enrolment endpoint,
scepserver, NanoMDM, the webhook receiver, `werne web serve`'s arrival watcher): four simulated Apple
TVs enrol through ADE, get their tvOS profiles and their names from their rooms, report their AirPlay
ids, and the iPads of their rooms get an AirPlay allow list that names their room's Apple TV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.inventory import load_inventory
from ipad import commands
from ipad.actions.configure import wanted_profiles
from ipad.dispatch import IPadContext, select_targets
from ipad.payloads import mdm_schema
from ipad.store.registry import Registry
from lab import certs as lab_certs
from tests.fixtures.mdm_lab import mdm_lab, wait_for

pytestmark = [pytest.mark.mdm, pytest.mark.slow]


def test_four_apple_tvs_enrol_and_the_room_ipads_airplay_to_them(tmp_path: Path) -> None:
    from enrolment.models import ADEEnrolmentAttempt

    with mdm_lab(tmp_path, "query_deadline_s = 30.0\n") as lab:
        inventory = load_inventory(lab.inventory_dir)
        tvs = sorted(inventory.appletvs)
        assert len(tvs) == 4
        cfg, db = lab.config(), lab.db
        registry = Registry(db)

        def enrolled() -> bool:
            devs = registry.devices_by_serial()
            return all(s in devs and devs[s].state == "enrolled" for s in [*tvs, *inventory.ipads])

        wait_for("the iPads and the four Apple TVs to enrol", enrolled, 180)
        # They came through ADE: each posted its signed MachineInfo and was served the profile.
        with db.session() as s:
            served = {a.serial: a.product for a in s.scalars(select(ADEEnrolmentAttempt)) if a.outcome == "served"}
        assert {s: served.get(s) for s in tvs} == dict.fromkeys(tvs, "AppleTV14,1")

        ctx = IPadContext(cfg, db, inventory, actor="pytest")
        tv_targets = select_targets(ctx, serials=tuple(tvs), kind="appletv")
        want = wanted_profiles(ctx, tv_targets)

        def tv_profiles_in() -> bool:
            devs = registry.devices_by_serial()
            for s in tvs:
                have = {p["PayloadIdentifier"]: p["PayloadUUID"] for p in devs[s].installed_profiles() or []}
                if any(have.get(p.identifier) != p.uuid for p in want[s]):
                    return False
            return True

        # The web server's arrival watcher set them up by itself: every tvOS profile, as built.
        wait_for("the Apple TVs' profiles", tv_profiles_in, 120)
        for s in tvs:
            names = {p.name for p in want[s]}
            assert {"tv-airplay-security", "tv-restrictions", "wifi"} <= names
            for p in want[s]:
                assert mdm_schema.validate_profile(p.to_bytes(), "tvOS") == [], p.name
        for cmd in (commands.settings_device_name("gs-demo-R101"), commands.device_information(
                commands.APPLETV_DEVICE_QUERIES), commands.profile_list()):
            assert mdm_schema.validate_command(cmd.to_dict(), "tvOS") == []

        # Each got its name from its room and told its AirPlay id (DeviceInformation DeviceID).
        def reported() -> bool:
            devs = registry.devices_by_serial()
            return all(devs[s].device_information().get("DeviceID") for s in tvs)

        wait_for("the Apple TVs' DeviceInformation", reported, 60)
        devs = registry.devices_by_serial()
        tv101 = next(t for t in inventory.appletvs.values() if t.room == "R101")
        tv_id = devs[tv101.serial].device_information()["DeviceID"]
        assert tv_id == lab_certs_mac(tv101.serial)

        # The iPads of room R101 get an AirPlay allow list that names R101's Apple TV by its id.
        pupil = next(i for i in inventory.ipads.values() if i.room == "R101" and i.group == "pupil")
        teacher = next(i for i in inventory.ipads.values() if i.room == "R101" and i.group == "teacher")

        def airplay_of(serial: str) -> Any:
            prof = next(p for p in wanted_profiles(ctx, select_targets(ctx, serials=(serial,)))[serial]
                        if p.name == "airplay")
            have = {p["PayloadIdentifier"]: p["PayloadUUID"]
                    for p in registry.devices_by_serial()[serial].installed_profiles() or []}
            return prof if have.get(prof.identifier) == prof.uuid else None

        built = wait_for("the room's iPads' AirPlay allow list", lambda: airplay_of(pupil.serial), 120)
        assert built.content["PayloadContent"][0]["AllowList"] == [
            {"DeviceID": tv_id.lower(), "DeviceName": "gs-demo-R101"}]
        assert mdm_schema.validate_profile(built.to_bytes(), "iOS") == []
        # The teacher's iPad may AirPlay to every Apple TV of the school.
        teacher_list = next(p for p in wanted_profiles(ctx, select_targets(ctx, serials=(teacher.serial,)))
                            [teacher.serial] if p.name == "airplay").content["PayloadContent"][0]["AllowList"]
        assert [x["DeviceName"] for x in teacher_list] == ["gs-demo-R101", "gs-demo-R102"]


def lab_certs_mac(serial: str) -> str:
    """The AirPlay id the simulated Apple TV of `serial` reports."""
    from lab.ipad_sim import SimDevice

    return SimDevice(serial=serial, udid=lab_certs.udid_for(serial), platform="tvOS").airplay_device_id
