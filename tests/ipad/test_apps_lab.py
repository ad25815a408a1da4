"""Issue 14 in the lab, through the whole chain (nginx HTTPS, ADE enrolment, real scepserver,
NanoMDM with Mdm-Signature, the webhook receiver, `werne web serve`): one school's iPads get their
group's apps with licences from the fake Apps and Books service; moving five of them to another
group takes licences back, assigns new ones and changes their apps; a wipe with Return to Service
brings one back through ADE into its new group with no manual step; its escrowed bypass code
round-trips and is in no log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from lab import certs as lab_certs
from lab import mdm as lab_mdm
from tests.fakes.fake_appsbooks import FakeAppsBooks
from tests.fixtures.apps import ALL
from tests.fixtures.site import DEMO_INVENTORY, write_secret

pytestmark = [pytest.mark.mdm, pytest.mark.slow]

SCHOOL = "gs-demo"


def _wait(what: str, check: Any, timeout: float = 90.0, poke: Any = None) -> Any:
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < end, f"timed out waiting for {what}"
        if poke is not None:
            poke()
        time.sleep(0.5)


def test_apps_move_return_to_service_and_bypass_code(tmp_path: Path) -> None:
    import shutil

    from core.config import load_config
    from core.db import Database
    from core.inventory import load_inventory
    from ipad.actions.activation_lock import new_key
    from ipad.actions.moves import move
    from ipad.actions.queries import query
    from ipad.actions.wipe import wipe as wipe_and_release
    from ipad.apps.catalogue import load_apps
    from ipad.apps.licences import apply
    from ipad.dispatch import IPadContext
    from ipad.models import IPadReturn
    from ipad.store.registry import Registry
    from lab.ipad_sim import bypass_code_for

    inv = tmp_path / "inventory"
    shutil.copytree(DEMO_INVENTORY, inv)
    schools = (inv / "schools.yml").read_text()
    (inv / "schools.yml").write_text(schools.replace("    support_email: it-schulen@demo.invalid\n",
                                                     "    support_email: it-schulen@demo.invalid\n"
                                                     "    apps_location: grundschulen\n", 1))
    serials = lab_certs.generated_serials(7, start=4000)
    groups = ["pupil"] * 6 + ["teacher"]
    (inv / "ipads.csv").write_text("serial;model;school;group;name\n" + "".join(
        f"{s};iPad (10th generation);{SCHOOL};{g};lab-{i}\n" for i, (s, g) in enumerate(zip(serials, groups,
                                                                                             strict=True))))
    write_secret(tmp_path / "escrow.key", new_key() + "\n")
    write_secret(tmp_path / "wifi", "schul-wlan-passwort\n")
    fake = FakeAppsBooks(pending_polls=0).start()
    state = tmp_path / "state"
    try:
        token = fake.add_location("grundschulen", dict.fromkeys(ALL, 20))
        write_secret(tmp_path / "gs.vpptoken", token + "\n")
        cfg_file = tmp_path / "werne.toml"
        cfg_file.write_text(
            f'[site]\ninventory = "{inv}"\nstate_dir = "{state}"\n'
            f'[mdm]\nwifi_secret_file = "{tmp_path / "wifi"}"\nquery_deadline_s = 30.0\n'
            f'[apps]\nurl = "{fake.url}"\nevent_poll_s = 0.01\nevent_timeout_s = 5.0\n'
            f'[apps.locations.grundschulen]\ntoken_file = "{tmp_path / "gs.vpptoken"}"\n'
            f'[activation_lock]\nkey_file = "{tmp_path / "escrow.key"}"\nallowed_users = ["pytest"]\n',
            encoding="utf-8")
        lab_mdm.up(state, 7, load_config(cfg_file, state_dir=state), poll_interval=0.5, faults=False)
        cfg = load_config(cfg_file, state_dir=state)
        db = Database(cfg.database_url)
        registry = Registry(db)
        # The demo inventory's Apple TVs enrol beside the test's iPads: count the iPads.
        _wait("7 enrolled iPads", lambda: sum(d.state == "enrolled" and d.serial in serials
                                              for d in registry.list_devices()) == 7, 120)

        def ctx() -> IPadContext:
            c = load_config(cfg_file, state_dir=state)
            return IPadContext(c, db, load_inventory(c.inventory_dir), actor="pytest")

        def managed(serial: str) -> set[str]:
            facts = registry.devices_by_serial()[serial].facts.get("ManagedApplicationList") or {}
            return {b for b, a in (facts.get("value") or {}).items() if a.get("Status") == "Managed"}

        cat = load_apps()

        def bundles(group: str) -> set[str]:
            return {a.bundle_id for a in cat.apps_for(group)}

        # 1. The school's iPads get their group's apps, with licences.
        report = apply(ctx(), school=SCHOOL, max_devices=7, deadline_s=30)
        assert report.failed == [], [d.lines for d in report.devices]
        assert query(ctx(), school=SCHOOL, deadline_s=30, with_apps=True).ok
        assert all(managed(s) == bundles(g) for s, g in zip(serials, groups, strict=True))

        # 2. Five pupils become teachers: garageband taken back and removed, imovie assigned and installed.
        five = serials[:5]
        moved = move(ctx(), tuple(five), group="teacher", max_devices=5, deadline_s=30)
        assert moved.ok, moved.to_dict()
        assert query(ctx(), serials=tuple(five), deadline_s=30, with_apps=True).ok
        assert all(managed(s) == bundles("teacher") for s in five)
        held = {s for _, s in fake.location("grundschulen").assignments}
        assert set(five) <= held
        assert not any(s in five for a, s in fake.location("grundschulen").assignments if a == ALL[3])

        # 3. Return to Service: erased, back through ADE by itself, into its (new) group.
        back = five[0]
        wiped = wipe_and_release(ctx(), (back,), yes=True, max_devices=1, deadline_s=30, return_to_service=True)
        assert wiped.devices[0].summary().startswith("EraseDevice: Acknowledged"), wiped.devices[0].summary()

        def returned() -> str | None:
            with db.session() as s:
                row = s.query(IPadReturn).filter(IPadReturn.serial == back).one()
                return row.status if row.status in ("done", "failed") else None

        assert _wait("the return to service", returned, 120) == "done"
        assert query(ctx(), serials=(back,), deadline_s=30, with_apps=True).ok
        assert managed(back) == bundles("teacher")
        from ipad.payloads.profiles import profile_identifiers_for

        plist = registry.devices_by_serial()[back].facts["ProfileList"]["value"]
        assert set(profile_identifiers_for("teacher")) <= {p["PayloadIdentifier"] for p in plist}

        # 4. The bypass code, asked on its return, round-trips and is in no log.
        code = bypass_code_for(lab_certs.udid_for(back))
        assert _wait("the escrowed code", lambda: _show(cfg, db, back)) == code
        for log in (state / "mdm" / "logs").glob("*"):
            if log.is_file():
                assert code not in log.read_text(errors="replace"), log
        db.dispose()
    finally:
        lab_mdm.down(state)
        fake.stop()


def _show(cfg: Any, db: Any, serial: str) -> str | None:
    from ipad.actions.activation_lock import show_code
    from ipad.errors import EscrowError

    try:
        return show_code(cfg, db, serial, actor="pytest")
    except EscrowError:
        return None
