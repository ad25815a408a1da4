"""What `werne ipad configure` changes on an iPad, from its newest ProfileList: the group's profiles
it lacks are installed, werne's own profiles the group does not want are removed, and the enrolment
profile (which carries the MDM payload; the iPad lists it under werne's prefix once it enrolled
through the ADE endpoint, and again after each identity renewal) is never removed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from core.config import load_config
from core.db import Database
from core.inventory import load_inventory
from ipad.actions.configure import profile_changes, wanted_profiles
from ipad.dispatch import IPadContext, select_targets
from ipad.models import MDMDevice, MDMDeviceFact
from ipad.payloads.profiles import load_group_assignment
from tests.fixtures.site import DEMO_INVENTORY, write_config, write_secret

SERIAL = "ZDWK1DEGZD"  # a pupil's iPad in the demo inventory


def test_the_enrolment_profile_is_never_removed(tmp_path: Path) -> None:
    wifi = write_secret(tmp_path / "wifi.secret", "Sch00l-WLAN-geheim\n")
    cfg = load_config(write_config(tmp_path / "werne.toml", DEMO_INVENTORY, tmp_path / "state",
                                   f'[mdm]\nwifi_secret_file = "{wifi}"\n'))
    prefix = load_group_assignment(cfg).identifier_prefix
    db = Database(cfg.database_url)
    try:
        with db.session() as s:
            s.add(MDMDevice(enrollment_id="E1", udid="E1", serial=SERIAL, school="gs-demo", state="enrolled"))
        ctx = IPadContext(cfg, db, load_inventory(DEMO_INVENTORY), actor="pytest")
        want = wanted_profiles(ctx, select_targets(ctx, serials=[SERIAL]))[SERIAL]
        listed = [{"PayloadIdentifier": p.identifier, "PayloadUUID": p.uuid} for p in want[1:]]
        listed += [{"PayloadIdentifier": f"{prefix}.enrolment", "PayloadUUID": "E"},
                   {"PayloadIdentifier": f"{prefix}.obsolete", "PayloadUUID": "O"},
                   {"PayloadIdentifier": "com.example.other-mdm", "PayloadUUID": "X"}]
        with db.session() as s:
            s.add(MDMDeviceFact(enrollment_id="E1", kind="ProfileList", value=listed,
                                at=dt.datetime.now(dt.UTC)))
        change = profile_changes(ctx, select_targets(ctx, serials=[SERIAL]))[SERIAL]
    finally:
        db.dispose()
    assert change.known
    assert [p.identifier for p in change.install] == [want[0].identifier]
    assert change.remove == [f"{prefix}.obsolete"]
