"""A world for identity renewal tests: a real scepserver with werne's SCEP CA, a real NanoMDM that
trusts its bundle, a webhook receiver into the registry, and simulated iPads enrolled with
identities from that CA (open_world). Used by tests/lab/test_ipad_sim_renewal.py (the simulator's
contract) and tests/ipad/test_renewal_mdm.py (werne's renewal against it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.fixtures.site import write_secret
from tests.parts import require_file

TOPIC = "com.apple.mgmt.External.werne-lab"  # lab.ipad_sim's devices carry this push topic


@dataclass
class RenewalWorld:
    root: Path
    cfg: Any
    db: Any
    ctx: Any
    sim: Any
    devices: dict[str, Any]
    ca: x509.Certificate


@contextmanager
def open_world(root: Path, faults: list[dict[str, Any]], identity_days: int = 365, cert_valid_days: int = 30,
               extra: str = "") -> Iterator[RenewalWorld]:
    """A real scepserver (its CA in the depot), a real NanoMDM trusting its bundle, a webhook receiver
    and one simulated iPad per entry of `faults`, enrolled with identities from the SCEP CA."""
    from core.config import load_config
    from core.db import Database
    from core.inventory import load_inventory
    from core.secrets import Secret
    from ipad.dispatch import IPadContext
    from ipad.golive.scep_ca import depot_dir, trust_bundle_file
    from ipad.store.registry import Registry
    from lab import scep as lab_scep
    from lab.certs import generated_serials, issue_identities
    from lab.ipad_sim import DeviceFaults, SCEPClientSetup, SimDevice, Simulator
    from mdm_client.nanomdm import NanoMDMClient
    from tests.fixtures.mdm import NanoMDMProcess, start_webhook

    require_file("scepserver", lab_scep.SCEPSERVER_BIN, marker="mdm", hint="run scripts/setup.sh")
    require_file("scepclient", lab_scep.SCEPCLIENT_BIN, marker="mdm", hint="run scripts/setup.sh")
    state = root / "state"
    state.mkdir()
    api_key = "renewal-api-key-0123456789"
    write_secret(root / "api_key", api_key)
    cfg_file = root / "werne.toml"

    def write_cfg(nanomdm_url: str, scep_url: str) -> None:
        cfg_file.write_text(
            f'[site]\nstate_dir = "{state}"\n'
            f'[mdm]\nurl = "{nanomdm_url}"\napi_key_file = "{root / "api_key"}"\nserver_url = "{nanomdm_url}/mdm"\n'
            f'{extra}'
            f'[scep]\nurl = "{scep_url}"\ncert_valid_days = {cert_valid_days}\nrenew_days_before = 200\n',
            encoding="utf-8")

    write_cfg("http://127.0.0.1:9", "http://127.0.0.1:9/scep")
    cfg = load_config(cfg_file)
    scep = lab_scep.up(state, cfg)  # makes the SCEP CA (depot) and its trust bundle first
    db = Database(cfg.database_url)
    webhook = start_webhook(Registry(db), None)
    nanomdm = NanoMDMProcess(root, trust_bundle_file(cfg), webhook.url, api_key, None)
    sim = None
    try:
        write_cfg(nanomdm.url, scep.url)
        cfg = load_config(cfg_file)
        ca_pem, ca_key = depot_dir(cfg) / "ca.pem", depot_dir(cfg) / "ca.key"
        serials = generated_serials(len(faults), start=7000 + 100 * len(faults))
        devices = {s: SimDevice(serial=s, udid=u, cert_pem=p, key_pem=k, faults=DeviceFaults(**f))
                   for (s, u, p, k), f in zip(issue_identities(ca_pem, ca_key, serials, days=identity_days), faults,
                                               strict=True)}
        sim = Simulator(nanomdm.url, list(devices.values()), poll_interval=0.3,
                        scep=SCEPClientSetup(lab_scep.SCEPCLIENT_BIN, root / "ipads")).start()
        assert sim.wait_enrolled(30)
        ctx = IPadContext(cfg, db, load_inventory(cfg.inventory_dir),
                          client=NanoMDMClient(nanomdm.url, Secret(api_key, "test")), actor="pytest")
        yield RenewalWorld(root, cfg, db, ctx, sim, devices, x509.load_pem_x509_certificate(ca_pem.read_bytes()))
    finally:
        if sim is not None:
            sim.stop()
        nanomdm.stop()
        webhook.stop()
        lab_scep.down(state)
        db.dispose()


