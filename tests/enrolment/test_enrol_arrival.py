"""On arrival, against real NanoMDM, its webhook receiver and simulated iPads: profiles are sent when
a requested serial enrols, a refused profile fails that serial with Apple's reason, NanoMDM down
defers (nothing lost), unrequested iPads get nothing, and the webhook hook reacts to TokenUpdate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from enrolment import requests as reqs
from enrolment.accounts import Principal
from enrolment.arrival import enrolment_hook, process_arrivals
from tests.fakes.fake_dep import FakeDEP
from tests.fixtures.enrolment import SCHOOL_A, EnrolSite, free_port, make_site
from tests.fixtures.site import write_secret

pytestmark = [pytest.mark.mdm, pytest.mark.slow]

A = Principal("anna", "coordinator", frozenset({SCHOOL_A}))
ADMIN = Principal("it", "admin")


@dataclass
class World:
    site: EnrolSite
    db: Any
    fake: FakeDEP
    nanomdm: Any
    ca: tuple[Path, Path]
    sims: list[Any]

    def approved_request(self, serials: list[str], group: str = "pupil") -> int:
        from core.inventory import load_inventory

        self.fake.add_devices(serials)
        cfg = self.site.config()
        inv = load_inventory(self.site.inventory)
        rid = reqs.create_request(self.db, inv, A, SCHOOL_A, group, "5b", "\n".join(serials)).id
        view = reqs.approve_request(self.db, cfg, inv, ADMIN, rid)
        assert [s.status for s in view.serials] == ["assigned"] * len(serials)  # all(...) passed on none
        return rid

    def ipads(self, serials: list[str], **faults: Any) -> list[Any]:
        from lab.certs import issue_identities
        from lab.ipad_sim import DeviceFaults, SimDevice, Simulator

        devices = [
            SimDevice(serial=s, udid=u, cert_pem=pem, key_pem=key, faults=DeviceFaults(**faults.get(s, {})))
            for s, u, pem, key in issue_identities(*self.ca, serials)
        ]
        sim = Simulator(self.nanomdm.url, devices, poll_interval=0.3).start()
        self.sims.append(sim)
        assert sim.wait_enrolled(60)
        return devices

    def wait_registered(self, serials: list[str], timeout: float = 30) -> None:
        """Until the webhook's writer thread has stored the TokenUpdate of every serial."""
        from ipad.store.registry import Registry

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            known = Registry(self.db).devices_by_serial()
            if all(s in known and known[s].state == "enrolled" for s in serials):
                return
            time.sleep(0.1)
        raise AssertionError(f"the registry did not record {serials} as enrolled")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, nanodep) -> Iterator[World]:  # type: ignore[no-untyped-def]
    import enrolment.models  # noqa: F401
    from core.db import Database
    from core.secrets import Secret
    from ipad.actions.activation_lock import BypassCodeEscrow, key_of, new_key
    from ipad.store.registry import Registry
    from lab.certs import make_scep_ca
    from tests.fixtures.mdm import NanoMDMProcess, start_webhook

    root = tmp_path_factory.mktemp("arrival") / "site"
    (root / "state").mkdir(parents=True)
    sec = root / "secrets"
    sec.mkdir(mode=0o700)
    api_key, hmac_key = "arrival-api-key-0123456789", "arrival-hmac-key-0123456789"
    write_secret((sec / "mdm_api_key"), api_key + "\n")
    (sec / "wifi").write_text("schul-wlan-passwort\n")
    escrow_key = new_key()  # the receiver escrows bypass codes; a site asks for them only where a test sets the key
    write_secret(sec / "escrow.key", escrow_key + "\n")
    db = Database(f"sqlite:///{root / 'state' / 'werne.db'}")
    registry = Registry(db, observers=[BypassCodeEscrow(key_of(Secret(escrow_key, "test")))])
    webhook = start_webhook(registry, Secret(hmac_key, "test"))
    ca = make_scep_ca(root / "scep")
    nanomdm = NanoMDMProcess(root, ca[0], webhook.url, api_key, hmac_key)
    fake = FakeDEP().start()
    site = make_site(
        root,
        nanodep.url,
        nanodep.key_file,
        extra=(
            f'\n[mdm]\nurl = "{nanomdm.url}"\napi_key_file = "{sec / "mdm_api_key"}"\n'
            f'wifi_secret_file = "{sec / "wifi"}"\n'
        ),
    )
    nanodep.configure(site.dep_name, fake)
    w = World(site, db, fake, nanomdm, ca, [])
    try:
        yield w
    finally:
        for sim in w.sims:
            sim.stop()
        nanomdm.stop()
        webhook.stop()
        fake.stop()
        db.dispose()


def sweep_until(world: World, done: Callable[[], bool], cfg: Any = None, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process_arrivals(world.db, cfg or world.site.config())
        if done():
            return True
        time.sleep(0.5)
    return False


def statuses(world: World, rid: int) -> dict[str, str]:
    return {s.serial: s.status for s in reqs.get_request(world.db, ADMIN, rid).serials}


def test_refused_profile_fails_that_serial_with_reason(world: World) -> None:
    ok, bad = "ARRSER00001", "ARRSER00002"
    rid = world.approved_request([ok, bad])
    world.ipads([ok, bad], **{bad: {"refuse_profile": "webfilter"}})
    assert sweep_until(
        world,
        lambda: (
            set(statuses(world, rid).values()) <= {"configured", "failed"}
            and len(set(statuses(world, rid).values())) == 2
        ),
    )
    view = reqs.get_request(world.db, ADMIN, rid)
    by = {s.serial: s for s in view.serials}
    assert by[ok].status == "configured"
    assert by[bad].status == "failed" and by[bad].reason.startswith("InstallProfile failed: ")
    assert view.status == "configured"  # every iPad that can be is configured; the failure is shown


def test_nanomdm_down_defers_and_nothing_is_lost(world: World) -> None:
    serial = "ARRSER00003"
    rid = world.approved_request([serial], group="teacher")
    devices = world.ipads([serial])
    dead = world.site.config()
    dead.mdm.url = f"http://127.0.0.1:{free_port()}"
    world.wait_registered([serial])
    r = process_arrivals(world.db, dead)
    assert serial in r.deferred and "cannot connect" in r.deferred[serial]
    assert statuses(world, rid) == {serial: "assigned"}
    assert sweep_until(world, lambda: statuses(world, rid) == {serial: "configured"})
    from ipad.payloads.profiles import profile_set_for

    assert {p.identifier for p in profile_set_for("teacher", world.site.config())} <= set(devices[0].profiles)


def test_unrequested_ipad_gets_nothing(world: World) -> None:
    from ipad.store.registry import Registry

    (device,) = world.ipads(["ARRSER00009"])
    world.wait_registered(["ARRSER00009"])
    registry = Registry(world.db)
    r = process_arrivals(world.db, world.site.config())
    assert "ARRSER00009" not in r.enrolled
    mine = [
        c
        for cs in registry.pending_commands().values()
        for c in cs
        if c.enrollment_id == registry.devices_by_serial()["ARRSER00009"].enrollment_id
    ]
    assert mine == [] and device.profiles == {}


def test_webhook_hook_wakes_the_watcher_on_token_update(world: World) -> None:
    from enrolment.arrival import ArrivalWatcher
    from ipad.webhook import on_enrolled

    serial = "ARRSER00004"
    rid = world.approved_request([serial])
    # An hour between sweeps: only the hook can make this one happen while the test waits.
    watcher = ArrivalWatcher(world.db, world.site.config(), interval=3600).start()
    remove = on_enrolled(enrolment_hook(watcher))
    try:
        deadline = time.monotonic() + 30
        while watcher.sweeps < 1 and time.monotonic() < deadline:  # the first, immediate sweep
            time.sleep(0.05)
        assert statuses(world, rid)[serial] == "assigned"
        world.ipads([serial])
        deadline = time.monotonic() + 60
        while statuses(world, rid)[serial] == "assigned" and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        remove()
        watcher.stop()
    assert statuses(world, rid)[serial] in ("enrolled", "configured")


@pytest.mark.kmfddm
def test_an_arriving_ipad_joins_its_group_declaration_set(world: World, kmfddm: str, tmp_path: Path) -> None:
    """Where KMFDDM is set up, the arrival also writes the group's declaration set and maps the new
    iPad into it (declarative management follows the group from the first enrolment)."""
    from ipad.store.registry import Registry
    from tests.fixtures.kmfddm import KMFDDM_KEY

    serial = "ARRSER00011"
    rid = world.approved_request([serial], group="teacher")
    world.ipads([serial])
    cfg = world.site.config()
    cfg.ddm.url = kmfddm
    cfg.ddm.api_key_file = write_secret(tmp_path / "ddm_key", KMFDDM_KEY + "\n")
    assert sweep_until(world, lambda: statuses(world, rid) == {serial: "configured"}, cfg=cfg)
    enrollment_id = Registry(world.db).devices_by_serial()[serial].enrollment_id
    school = reqs.get_request(world.db, ADMIN, rid).school_id
    from core.secrets import Secret
    from mdm_client.kmfddm import KMFDDMClient

    sets = KMFDDMClient(kmfddm, Secret(KMFDDM_KEY, "test")).enrollment_sets(enrollment_id)
    assert sets == [f"werne-{school}-teacher"]


def test_an_arriving_ipad_is_asked_for_its_bypass_code_where_the_site_escrows(world: World, tmp_path: Path) -> None:
    """With activation_lock.key_file set, arrival also sends ActivationLockBypassCode, and the webhook
    escrows the answer (encrypted); "configured" does not wait for it. Without a key nothing is sent."""
    from sqlalchemy import select

    from core.config import load_config
    from ipad.actions.activation_lock import escrow_key, escrowed_serials
    from ipad.models import MDMCommand

    key = world.site.root / "secrets" / "escrow.key"  # the key the webhook's registry escrows with
    escrowing = tmp_path / "werne.toml"
    escrowing.write_text(world.site.config_path.read_text(encoding="utf-8")
                         + f'\n[activation_lock]\nkey_file = "{key}"\n', encoding="utf-8")
    cfg = load_config(escrowing)

    def bypass_commands() -> list[str]:
        with world.db.session() as s:
            return [c.actor for c in s.scalars(select(MDMCommand).where(
                MDMCommand.request_type == "ActivationLockBypassCode"))]

    plain, escrowed = "ARRSER00021", "ARRSER00022"
    rid = world.approved_request([plain])
    world.ipads([plain])
    assert sweep_until(world, lambda: statuses(world, rid) == {plain: "configured"})
    assert bypass_commands() == []  # the site without a key asks for nothing

    assert escrow_key(cfg) is not None
    rid = world.approved_request([escrowed])
    world.ipads([escrowed])
    assert sweep_until(world, lambda: statuses(world, rid) == {escrowed: "configured"}, cfg=cfg)
    assert bypass_commands() == ["werne-arrival"]
    deadline = time.monotonic() + 30
    while escrowed not in escrowed_serials(world.db) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert escrowed_serials(world.db) == {escrowed}
