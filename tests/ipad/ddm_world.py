"""A declarative-management world for the lab tests: a real NanoMDM forwarding DeclarativeManagement
check-ins to a real KMFDDM (-dm), KMFDDM enqueueing DeclarativeManagement through NanoMDM's API
(-enqueue), the webhook receiver, and simulated iPads whose clock the test moves."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests import parts
from tests.fixtures.mdm import RunningWebhook, start_webhook
from tests.fixtures.site import REPO, write_secret

SCHOOLS = ("gs-demo", "gym-demo")
PER_SCHOOL = 3
# The catalogue werne has: 18.3 for the 10th generation and (wrongly, as the device knows) for the
# 6th generation, whose iPads stop at iPadOS 17 (lab.ipad_sim.DDM_MODEL_MAX_MAJOR).
_TODAY = datetime.now(UTC).date()
PMV = {"PublicAssetSets": {"iOS": [
    {"ProductVersion": "17.7", "Build": "21H16", "PostingDate": (_TODAY - timedelta(200)).isoformat(),
     "SupportedDevices": ["iPad13,18", "iPad6,11"]},
    {"ProductVersion": "18.3", "Build": "22D63", "PostingDate": (_TODAY - timedelta(10)).isoformat(),
     "SupportedDevices": ["iPad13,18", "iPad6,11"]}], "macOS": []}, "AssetSets": {"iOS": [], "macOS": []}}
OLD_MODEL = "iPad6,11"


@dataclass
class Clock:
    """The simulated iPads' wall clock: real time plus an offset the test moves."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class DDMWorld:
    root: Path
    config_path: Path
    serials: dict[str, list[str]]
    old_model: str  # the serial of the iPad that cannot take 18.3
    nanomdm_url: str
    kmfddm_url: str
    ddm_key: str
    webhook: RunningWebhook
    sim: Any
    db: Any
    clock: Clock
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def config(self) -> Any:
        from core.config import load_config

        return load_config(self.config_path)

    def context(self) -> Any:
        from core.inventory import load_inventory
        from ipad.dispatch import IPadContext

        cfg = self.config()
        return IPadContext(cfg, self.db, load_inventory(cfg.inventory_dir), actor="pytest")

    def kmfddm(self) -> Any:
        from mdm_client.factory import kmfddm_client

        return kmfddm_client(self.config())

    def device(self, serial: str) -> Any:
        return self.sim.by_serial[serial]

    def wait(self, what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ok():
                return
            self.sim.wake()
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")


def _inventory(dst: Path) -> tuple[dict[str, list[str]], str]:
    from lab.certs import generated_serials

    shutil.copytree(REPO / "inventories" / "demo", dst)
    it = iter(generated_serials(len(SCHOOLS) * PER_SCHOOL, start=7000))
    serials: dict[str, list[str]] = {}
    rows = ["serial;model;school;group;name"]
    for school in SCHOOLS:
        for i in range(PER_SCHOOL):
            s = next(it)
            serials.setdefault(school, []).append(s)
            rows.append(f"{s};iPad (10th generation);{school};pupil;{school}-{i:02d}")
    (dst / "ipads.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return serials, serials[SCHOOLS[0]][-1]


@pytest.fixture(scope="module")
def ddm_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DDMWorld]:
    from core.db import Database
    from core.inventory import load_inventory
    from core.secrets import Secret
    from ipad.ddm.os_catalogue import import_catalogue
    from ipad.store.registry import Registry
    from lab import kmfddm as lab_kmfddm
    from lab import processes
    from lab.certs import issue_identities, make_scep_ca
    from lab.ipad_sim import SimDevice, Simulator
    from lab.mdm import NANOMDM_BIN, nanomdm_argv
    from lab.processes import HTTPReady, Service, free_port

    parts.require_file("NanoMDM", NANOMDM_BIN, marker="mdm", hint="scripts/setup.sh installs it")
    parts.require_file("KMFDDM", lab_kmfddm.KMFDDM_BIN, marker="kmfddm", hint="scripts/setup.sh installs it")
    root = tmp_path_factory.mktemp("ddm-world")
    state = root / "state"
    state.mkdir()
    serials, old = _inventory(root / "inventory")
    api_key, hmac_key, ddm_key = "ddm-world-api-key-01234", "ddm-world-hmac-key-56789", "ddm-world-kmfddm-key"
    sec = root / "secrets"
    sec.mkdir(mode=0o700)
    for name, value in (("api_key", api_key), ("ddm_key", ddm_key)):
        write_secret(sec / name, value + "\n")
    ca, ca_key = make_scep_ca(root / "scep")
    db = Database(f"sqlite:///{state / 'werne.db'}")
    inventory = load_inventory(root / "inventory")
    registry = Registry(db, school_of=lambda s: (inventory.ipads[s].school, inventory.ipads[s].group)
                        if s in inventory.ipads else None)
    webhook = start_webhook(registry, Secret(hmac_key, "test"))
    nano_port = free_port()
    nanomdm_url = f"http://127.0.0.1:{nano_port}"
    mdm_dir = root / "nanomdm"
    mdm_dir.mkdir()
    clock = Clock()
    sim = None
    try:
        ddm = lab_kmfddm.up(state, Secret(ddm_key, "test"), enqueue_url=nanomdm_url + "/v1/enqueue/",
                            enqueue_key=Secret(api_key, "test"))
        processes.up(Service(
            name="nanomdm", what="NanoMDM", directory=mdm_dir,
            argv=tuple(nanomdm_argv(f"127.0.0.1:{nano_port}", ca, webhook.url, dm_url=ddm.url + "/")),
            env={"NANOMDM_API": api_key, "NANOMDM_WEBHOOK_HMAC_KEY": hmac_key},
            ready=HTTPReady(nanomdm_url + "/version")))
        cfg_path = root / "werne.toml"
        cfg_path.write_text(
            f'[site]\ninventory = "{root / "inventory"}"\nstate_dir = "{state}"\n'
            f'[mdm]\nurl = "{nanomdm_url}"\napi_key_file = "{sec / "api_key"}"\nblast_radius = 50\n'
            f'query_deadline_s = 15.0\n'
            f'[ddm]\nurl = "{ddm.url}"\napi_key_file = "{sec / "ddm_key"}"\n'
            f'[compliance]\nquery_deadline_s = 15.0\n',
            encoding="utf-8")
        pmv = root / "pmv.json"
        pmv.write_text(json.dumps(PMV), encoding="utf-8")
        from core.config import load_config

        import_catalogue(load_config(cfg_path), pmv)
        all_serials = [s for school in SCHOOLS for s in serials[school]]
        devices = []
        for serial, udid, pem, key in issue_identities(ca, ca_key, all_serials):
            model = OLD_MODEL if serial == old else "iPad13,18"
            devices.append(SimDevice(serial=serial, udid=udid, cert_pem=pem, key_pem=key, model=model,
                                     product_name=model))
        sim = Simulator(nanomdm_url, devices, poll_interval=0.3, clock=clock).start()
        assert sim.wait_enrolled(30)
        world = DDMWorld(root, cfg_path, serials, old, nanomdm_url, ddm.url, ddm_key, webhook, sim, db, clock)
        world.wait("the webhook to store every enrolment", lambda: sum(
            1 for d in registry.devices_by_serial().values() if d.state == "enrolled") == len(all_serials))
        yield world
    finally:
        if sim is not None:
            sim.stop()
        processes.stop("nanomdm", mdm_dir)
        lab_kmfddm.down(state)
        webhook.stop()
        db.dispose()
