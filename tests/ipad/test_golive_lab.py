"""The whole go-live chain in the lab, all through nginx on HTTPS with a lab-CA certificate:
20 simulated iPads post their signed MachineInfo to the enrolment URL, verify the signed profile,
get their identities from the real scepserver, and check in to NanoMDM (on PostgreSQL, its
schema loaded by `werne mdm db-init`'s code), which verifies every message by Mdm-Signature.
Then `werne mdm check` against the lab: all green, and each fault on its own failing line."""

from __future__ import annotations

import base64
import json
import plistlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy import select

from core.config import Config, load_config
from lab import certs as lab_certs
from lab import mdm as lab_mdm
from lab import processes
from lab import scep as lab_scep
from lab.ipad_sim import SimDevice
from tests.fakes.fake_dep import FakeDEP
from tests.fixtures.enrolment import NanoDEP, start_nanodep

pytestmark = [pytest.mark.mdm, pytest.mark.nanodep, pytest.mark.postgres, pytest.mark.slow]

N_IPADS = 20
# The lines of `werne mdm check` here: the live checks, then the expiry view's items (the lab uses
# NanoDEP, so its token is one; no Apps and Books location).
CHECKS = ["tls", "nanomdm-api", "push-cert", "scep", "enrolment", "machineinfo", "webhook", "nanodep", "kmfddm",
          "scep-ca", "dep-token", "signing-cert", "identities"]


@dataclass
class GoLiveLab:
    state: Path
    config_file: Path
    lab: dict
    dsn: str
    nanodep: NanoDEP

    def config(self) -> Config:
        return load_config(self.config_file, state_dir=self.state)

    def cli(self, *args: str):  # type: ignore[no-untyped-def]
        from cli import main

        return CliRunner().invoke(main, ["--config", str(self.config_file), "--state-dir", str(self.state), *args])


def libpq_dsn(cluster, database: str) -> str:  # type: ignore[no-untyped-def]
    return f"host={cluster.socket_dir} user=postgres dbname={database} sslmode=disable"


@pytest.fixture(scope="module")
def golive_lab(tmp_path_factory: pytest.TempPathFactory, postgres_cluster) -> Iterator[GoLiveLab]:  # type: ignore[no-untyped-def]
    from ipad.golive.nanomdm_db import load_schema

    root = tmp_path_factory.mktemp("golive-lab")
    state = root / "state"
    url = postgres_cluster.create_database("nanomdm")
    dsn = libpq_dsn(postgres_cluster, url.split("@/", 1)[1].split("?")[0])
    loaded = load_schema(dsn)
    assert loaded.created and loaded.tables >= 5
    assert load_schema(dsn).created is False  # idempotent
    nanodep = start_nanodep(root / "nanodep")
    fake = FakeDEP().start()
    name = "t" + secrets.token_hex(4)
    nanodep.configure(name, fake)
    wifi = root / "wifi"
    wifi.write_text("schul-wlan-passwort\n")
    cfg_file = root / "werne.toml"
    cfg_file.write_text(
        f'[site]\nstate_dir = "{state}"\n'
        f'[mdm]\nwifi_secret_file = "{wifi}"\nquery_deadline_s = 30.0\n'
        f'[dep]\nurl = "{nanodep.url}"\nname = "{name}"\napi_key_file = "{nanodep.key_file}"\n',
        encoding="utf-8")
    try:
        lab_mdm.up(state, N_IPADS, load_config(cfg_file, state_dir=state), poll_interval=0.5,
                   storage="pgsql", storage_dsn=dsn, faults=False)
        lab = json.loads((state / "mdm" / "lab.json").read_text())
        yield GoLiveLab(state, cfg_file, lab, dsn, nanodep)
    finally:
        lab_mdm.down(state)
        fake.stop()
        nanodep.stop()


def enrolled_serials(g: GoLiveLab) -> set[str]:
    """The serials NanoMDM (on PostgreSQL) holds as enrolled devices."""
    import psycopg

    with psycopg.connect(g.dsn) as conn:
        return {str(r[0]) for r in conn.execute("SELECT serial_number FROM devices").fetchall()}


def enrolled_rows(g: GoLiveLab, want: int, tvs: frozenset[str] = frozenset(), timeout: float = 90) -> list[dict]:
    """`ipad list --json` once `want` iPads are enrolled and every Apple TV in `tvs` has checked in
    (they enrol beside the iPads; werne lists them by serial, whatever its rows hold)."""
    end = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < end:
        rows = json.loads(g.cli("ipad", "list", "--json").output)
        ipads = sum(1 for x in rows if x["state"] == "enrolled" and x["serial"] not in tvs)
        if ipads >= want and tvs <= enrolled_serials(g):
            break
        time.sleep(0.3)
    return rows


def test_twenty_ipads_enrol_through_the_full_path(golive_lab: GoLiveLab) -> None:
    import psycopg

    from core.db import Database
    from enrolment.models import ADEEnrolmentAttempt
    from ipad.actions.configure import configure
    from ipad.dispatch import IPadContext

    g = golive_lab
    assert g.lab["server_url"].startswith("https://127.0.0.1:") and g.lab["enrol_url"].startswith("https://")
    from core.inventory import load_inventory

    # The demo inventory's Apple TVs (issue 23) enrol through the same path beside the 20 iPads.
    tvs = frozenset(load_inventory(g.state / "mdm" / "inventory").appletvs)
    rows = [x for x in enrolled_rows(g, N_IPADS, tvs) if x["serial"] not in tvs]
    assert sum(1 for x in rows if x["state"] == "enrolled") == N_IPADS
    serials = sorted(x["serial"] for x in rows)
    # Every iPad posted its MachineInfo through nginx and was served the signed profile.
    db = Database(g.config().database_url)
    try:
        with db.session() as s:
            served = {a.serial for a in s.scalars(select(ADEEnrolmentAttempt)) if a.outcome == "served"}
        assert served == set(serials) | tvs
        # Every identity was issued by the real scepserver, from werne's SCEP CA.
        ca = x509.load_pem_x509_certificate((g.state / "scep" / "depot" / "ca.pem").read_bytes())
        index = (g.state / "scep" / "depot" / "index.txt").read_text().splitlines()
        # One entry per issued identity. All share the profile's subject, so scepserver's file depot
        # marks the older ones "R" in its index (no CRL is published; NanoMDM checks the chain only).
        assert len(index) >= N_IPADS
        for serial in serials:
            cert = x509.load_pem_x509_certificate((g.state / "mdm" / "ipads" / serial / "identity.pem").read_bytes())
            ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),  # type: ignore[call-arg, union-attr]
                                   cert.signature_hash_algorithm)  # type: ignore[arg-type]
        # NanoMDM (on PostgreSQL) stored each device with that identity: it read it from Mdm-Signature.
        with psycopg.connect(g.dsn) as conn:
            stored = dict(conn.execute("SELECT serial_number, identity_cert FROM devices").fetchall())
        assert set(stored) == set(serials) | tvs
        for serial in serials:
            pem = (g.state / "mdm" / "ipads" / serial / "identity.pem").read_text()
            assert x509.load_pem_x509_certificate(stored[serial].encode()) == \
                x509.load_pem_x509_certificate(pem.encode())
        log = (g.state / "mdm" / "logs" / "nanomdm.log").read_text()
        assert "verifying Mdm-Signature header err" not in log
        # ... and the profiles install over the same path.
        cfg = g.config()
        # The lab's inventory: the demo's 12 iPads plus the 8 generated serials its endpoint answers for.
        result = configure(IPadContext(cfg, db, load_inventory(g.state / "mdm" / "inventory"), actor="pytest"),
                           max_devices=N_IPADS, deadline_s=60.0)
        assert result.counts() == {"ok": N_IPADS}, [d.summary() for d in result.devices if not d.ok][:3]
    finally:
        db.dispose()


def _signed_put(g: GoLiveLab, device: SimDevice, msg: dict, tamper: bool = False) -> requests.Response:
    body = plistlib.dumps(msg)
    sig = device.mdm_signature(body)
    if tamper:
        body = body.replace(b"Authenticate", b"Authenticatf")
    return requests.put(g.lab["server_url"], data=body, timeout=10, verify=g.lab["tls_ca_file"],
                        headers={"Mdm-Signature": sig, "Content-Type": "application/x-apple-aspen-mdm-checkin"})


def test_a_device_from_another_ca_is_refused(golive_lab: GoLiveLab, tmp_path: Path) -> None:
    g = golive_lab
    ca, key = lab_certs.make_scep_ca(tmp_path / "other-ca")
    serial, udid, pem, device_key = lab_certs.issue_identities(ca, key, ["FOREIGN0001"])[0]
    intruder = SimDevice(serial=serial, udid=udid, cert_pem=pem, key_pem=device_key)
    r = _signed_put(g, intruder, intruder.authenticate())
    assert r.status_code in (400, 401), r.status_code
    log = (g.state / "mdm" / "logs" / "nanomdm.log").read_text()
    assert "error verifying MDM certificate" in log
    with __import__("psycopg").connect(g.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM devices WHERE id = %s", (udid,)).fetchone() == (0,)


def test_a_tampered_message_is_refused(golive_lab: GoLiveLab) -> None:
    g = golive_lab
    serial = sorted(p.name for p in (g.state / "mdm" / "ipads").iterdir())[0]
    d = g.state / "mdm" / "ipads" / serial
    device = SimDevice(serial=serial, udid=lab_certs.udid_for(serial), cert_pem=(d / "identity.pem").read_text(),
                       key_pem=(d / "key.pem").read_text())
    assert _signed_put(g, device, device.authenticate(), tamper=True).status_code == 400
    assert base64.b64decode(device.mdm_signature(b"x"))  # a real CMS blob, not a header shortcut


def failing(g: GoLiveLab) -> tuple[int, set[str], str]:
    r = g.cli("mdm", "check")
    lines = r.output.strip().splitlines()
    assert len(lines) == len(CHECKS), r.output
    return r.exit_code, {line.split()[1] for line in lines if line.startswith("FAIL")}, r.output


def test_mdm_check_against_the_lab(golive_lab: GoLiveLab) -> None:
    g = golive_lab
    enrolled_rows(g, N_IPADS)
    code, bad, out = failing(g)
    assert (code, bad) == (0, set()), out
    data = json.loads(g.cli("mdm", "check", "--json").output)
    assert data["ok"] is True
    assert [c["name"] for c in data["checks"]] == CHECKS

    # The push certificate near expiry (renewed with 10 days left): only push-cert fails.
    lab_mdm.install_lab_push_cert(g.config(), days=10)
    code, bad, out = failing(g)
    assert (code, bad) == (1, {"push-cert"}), out
    assert "expires in" in out
    lab_mdm.install_lab_push_cert(g.config())
    assert failing(g)[:2] == (0, set())

    # The SCEP server stopped: only scep fails.
    scep_port = int(lab_scep.status(g.state).url.split(":")[2].split("/")[0])  # type: ignore[union-attr]
    lab_scep.down(g.state)
    code, bad, out = failing(g)
    assert (code, bad) == (1, {"scep"}), out
    lab_scep.up(g.state, g.config(), port=scep_port)
    assert failing(g)[:2] == (0, set())

    # The webhook receiver stopped: only webhook fails.
    processes.stop("webhook", g.state / "mdm")
    code, bad, out = failing(g)
    assert (code, bad) == (1, {"webhook"}), out
    assert "connection refused" in out
