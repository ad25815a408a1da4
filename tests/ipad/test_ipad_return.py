"""Return to Service through a real NanoMDM, the real webhook receiver and simulated iPads: the
erase carries the Wi-Fi profile werne builds, the iPad enrols again by itself, and the arrival sweep
brings it back into its group as ipads.csv says now (moved while it was away): the new group's
profiles and the bypass-code request, no manual step. An iPad older than iPadOS 17 is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from core.inventory_write import Placement, rewrite_ipads
from tests.ipad.lost_mode_world import World, make_world

pytestmark = pytest.mark.mdm


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("rts"), 3, {2: {"old_ipados": True}})


def test_return_to_service_re_enrols_into_the_new_group(world: World) -> None:
    from enrolment.arrival import process_arrivals
    from ipad.actions.activation_lock import escrowed_serials
    from ipad.actions.configure import configure
    from ipad.actions.wipe import wipe as wipe_and_release
    from ipad.models import IPadReturn
    from ipad.payloads.profiles import profile_identifiers_for

    serial, old = world.serials[0], world.serials[2]
    dev = world.sim.by_serial[serial]
    assert configure(world.ctx(), serials=(serial,), deadline_s=20).ok
    group = world.ctx().inventory.ipads[serial].group
    assert set(dev.profiles) == set(profile_identifiers_for(group))
    new_group = "teacher" if group != "teacher" else "pupil"
    erases_before = dev.erases

    # An iPad older than iPadOS 17 is not erased, with the reason; the other one is.
    report = wipe_and_release(world.ctx(), (serial, old), yes=True, max_devices=2, deadline_s=20,
                              return_to_service=True)
    by = {d.serial: d for d in report.devices}
    assert by[old].summary().startswith("wipe: not sent (iPadOS 15.7.9: Return to Service needs iPadOS 17")
    assert world.sim.by_serial[old].erases == 0
    assert by[serial].summary() == "EraseDevice: Acknowledged", by[serial].summary()
    assert dev.erases == erases_before + 1 and dev.rts_wifi  # the Wi-Fi profile travelled with the erase
    # Moved to another group while it was away: it comes back into the new one.
    rewrite_ipads(world.ctx().config.inventory_dir, {serial: Placement(world.ctx().inventory.ipads[serial].school,
                                                                       new_group)})
    end = time.monotonic() + 40
    status = None
    while time.monotonic() < end:
        process_arrivals(world.db, world.ctx().config)  # what `werne web serve` runs every 5 s
        with world.db.session() as s:
            row = s.scalars(select(IPadReturn).where(IPadReturn.serial == serial)).one()
            status, reason = row.status, row.reason
        if status in ("done", "failed"):
            break
        world.sim.wake([serial])
        time.sleep(0.3)
    assert status == "done", (status, reason)
    assert set(dev.profiles) == set(profile_identifiers_for(new_group))
    assert serial in escrowed_serials(world.db)
    with world.db.session() as s:
        assert s.scalars(select(IPadReturn).where(IPadReturn.serial == old)).first() is None


def test_return_to_service_without_a_wifi_profile_is_refused(world: World, tmp_path) -> None:
    from ipad.actions.wipe import wipe
    from ipad.errors import ReturnToServiceError

    ctx = world.ctx()
    ctx.config.mdm.wifi_secret_file = tmp_path / "missing"
    with pytest.raises(ReturnToServiceError, match="Return to Service needs the Wi-Fi profile: .*nothing was wiped"):
        wipe(ctx, (world.serials[1],), yes=True, max_devices=1, return_to_service=True)
    assert world.sim.by_serial[world.serials[1]].erases == 0
