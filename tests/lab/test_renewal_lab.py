"""The renewal drill (issue 20), in the lab: 21 simulated iPads enrol the real way (MachineInfo verified
against the lab's stand-in for Apple's device CA, the signed profile, SCEP, NanoMDM on PostgreSQL)
with identities valid for one day (scepserver -crtvalid 1), so every one is due; `werne mdm renew`
renews them through the real scepserver and NanoMDM. Afterwards every iPad signs with its new
identity and NanoMDM accepts it; the one iPad that never answers is reported, run after run, not
lost (the inventory's classroom Apple TVs enrol beside them; `werne ipad query` asks them for their
CertificateList, so they are renewed the same way). Then a SCEP CA rotation: the old CA stays trusted
until the iPads have renewed, retiring it is refused while one still holds an old identity. And
enrolment stays closed to devices outside the device CA; `werne mdm check` fails while the check is
switched off."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509

from core.config import Config, load_config
from lab import mdm as lab_mdm
from tests.fixtures.mdm_lab import lab_serials

pytestmark = [pytest.mark.mdm, pytest.mark.postgres, pytest.mark.slow]

N_IPADS = 21
SILENT = N_IPADS - 1  # takes the re-sent enrolment profile and is never heard of again


@dataclass
class RenewalLab:
    state: Path
    config_file: Path
    lab: dict[str, Any]
    dsn: str
    timings: dict[str, float]

    def config(self) -> Config:
        return load_config(self.config_file, state_dir=self.state)

    def cli(self, *args: str) -> Any:
        from cli import main

        return CliRunner().invoke(main, ["--config", str(self.config_file), "--state-dir", str(self.state), *args])

    def json(self, *args: str) -> Any:
        r = self.cli(*args, "--json")
        assert r.output.startswith(("{", "[")), r.output
        return json.loads(r.output)

    def write_config(self, valid_days: int, extra: str = "") -> None:
        self.config_file.write_text(
            f'[site]\nstate_dir = "{self.state}"\ninventory = "{self.state / "mdm" / "inventory"}"\n'
            f'[mdm]\nquery_deadline_s = 60.0\nblast_radius = 30\n'
            f'[scep]\ncert_valid_days = {valid_days}\nrenew_deadline_s = 60.0\n{extra}', encoding="utf-8")


@pytest.fixture(scope="module")
def renewal_lab(tmp_path_factory: pytest.TempPathFactory, postgres_cluster) -> Iterator[RenewalLab]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("renewal-lab")
    state = root / "state"
    dsn = postgres_cluster.create_nanomdm_database("nanomdm_renewal")
    g = RenewalLab(state, root / "werne.toml", {}, dsn, {})
    g.write_config(valid_days=1)  # short-lived identities: every iPad is due at once
    try:
        t0 = time.monotonic()
        lab_mdm.up(state, N_IPADS, g.config(), poll_interval=0.5, storage="pgsql", storage_dsn=dsn,
                   faults={SILENT: {"renewal_never_answers": True}})
        g.lab = json.loads((state / "mdm" / "lab.json").read_text())
        enrolled(g, N_IPADS)
        g.timings["enrol"] = time.monotonic() - t0
        yield g
    finally:
        lab_mdm.down(state)
        print(f"\nrenewal drill timings (s): {json.dumps({k: round(v, 1) for k, v in g.timings.items()})}")


def ipad_serials(g: RenewalLab) -> set[str]:
    """The lab's iPads; the inventory's classroom Apple TVs enrol beside them (issue 23)."""
    return lab_serials(g.state / "mdm")


def enrolled_appletvs(g: RenewalLab) -> list[str]:
    tvs = lab_serials(g.state / "mdm", ipads=False)
    return [x["serial"] for x in g.json("ipad", "list") if x["serial"] in tvs and x["state"] == "enrolled"]


def every_appletv_enrolled(g: RenewalLab, timeout: float = 600) -> list[str]:
    """The classroom Apple TVs, once all of them are enrolled (they enrol at their own pace)."""
    tvs = lab_serials(g.state / "mdm", ipads=False)
    end = time.monotonic() + timeout
    while set(enrolled_appletvs(g)) != tvs and time.monotonic() < end:
        time.sleep(1)
    assert set(enrolled_appletvs(g)) == tvs and tvs, enrolled_appletvs(g)
    return sorted(tvs)


def renew_deferred(g: RenewalLab, status: dict[str, str], serials: list[str]) -> dict[str, str]:
    """An Apple TV still busy with its set-up's commands is deferred (the product's rule: NanoMDM
    drops queued commands when a device checks in with a new identity); the next run renews it,
    once its queue drained. Played here as the nightly timer would, at most three times."""
    for _ in range(3):
        waiting = [s for s in serials if status.get(s) == "deferred"]
        if not waiting:
            break
        time.sleep(5)
        r = g.cli("mdm", "renew", *waiting, "--json")
        status = {**status, **{d["serial"]: d["status"] for d in json.loads(r.output)["devices"]}}
    return status


def enrolled(g: RenewalLab, want: int, timeout: float = 180) -> list[dict[str, Any]]:
    end = time.monotonic() + timeout
    ipads = ipad_serials(g)
    while True:
        rows = [x for x in g.json("ipad", "list") if x["serial"] in ipads]
        if sum(1 for x in rows if x["state"] == "enrolled") >= want or time.monotonic() > end:
            return rows  # type: ignore[no-any-return]
        time.sleep(0.5)


def identities(g: RenewalLab) -> dict[str, tuple[str, str, str]]:
    """serial -> (sha256, issuer, not_after) of the identity each iPad last reported (CertificateList)."""
    plan = g.json("mdm", "renew", "--plan")
    from core.db import Database
    from ipad.store.registry import Registry

    db = Database(g.config().database_url)
    try:
        devices = Registry(db).devices_by_serial()
    finally:
        db.dispose()
    out = {}
    for item in plan["items"]:
        fact = devices[item["serial"]].answer("CertificateList") or []
        ident = next((c for c in fact if c.get("IsIdentity")), None)
        if ident is not None:
            out[item["serial"]] = (ident["sha256"], ident["issuer"], ident["not_after"])
    return out


def associations(g: RenewalLab) -> dict[str, set[str]]:
    """NanoMDM's certificate authorization: enrollment id -> the identity hashes it accepts."""
    import psycopg

    with psycopg.connect(g.dsn) as conn:
        rows = conn.execute("SELECT id, sha256 FROM cert_auth_associations").fetchall()
    out: dict[str, set[str]] = {}
    for eid, sha in rows:
        out.setdefault(eid, set()).add(sha.strip())
    return out


def query_all(g: RenewalLab) -> dict[str, Any]:
    # The silent iPad never answers again: a short deadline for it.
    r = g.json("ipad", "query", "--deadline", "20")
    return {d["serial"]: d for d in r["devices"]}


def test_the_renewal_drill(renewal_lab: RenewalLab) -> None:
    g = renewal_lab
    rows = enrolled(g, N_IPADS)
    serials = sorted(x["serial"] for x in rows if x["state"] == "enrolled")
    assert len(serials) == N_IPADS
    silent = json.loads((g.state / "mdm" / "devices.json").read_text())["devices"][SILENT]["serial"]
    tvs = every_appletv_enrolled(g)
    answered = query_all(g)  # CertificateList, the Apple TVs' too: every identity and its expiry is known
    assert all(answered[s]["ok"] for s in serials + tvs), [answered[s] for s in serials + tvs if not answered[s]["ok"]]
    before = identities(g)
    assert set(before) == set(serials) | set(tvs)
    plan = g.json("mdm", "renew", "--plan")
    states = {i["serial"]: i["state"] for i in plan["items"]}
    assert set(states.values()) == {"due"} and set(states) == set(serials) | set(tvs)
    assert all(i["days_left"] == 0 for i in plan["items"])
    expiry = g.json("mdm", "expiry")
    ids = next(i for i in expiry["items"] if i["item"] == "identities")
    assert (ids["within_limit"], ids["ok"]) == (N_IPADS + len(tvs), False)

    # Renewed identities are valid for a year: scepserver restarted with the normal validity.
    g.write_config(valid_days=365)
    lab_mdm.restart_identity_servers(g.state, g.config(), storage_dsn=g.dsn)
    t0 = time.monotonic()
    r = g.cli("mdm", "renew", "--json")
    g.timings["renew_21"] = time.monotonic() - t0
    report = json.loads(r.output)
    assert r.exit_code == 1, r.output  # the silent iPad is a finding
    status = {d["serial"]: d["status"] for d in report["devices"]}
    assert {s: st for s, st in status.items() if s in serials} == {**dict.fromkeys(serials, "renewed"),
                                                                     silent: "no answer"}
    # The classroom Apple TVs are renewed the same way (one still busy with its set-up: the next run).
    assert set(status) == set(serials) | set(tvs), status
    status = renew_deferred(g, status, tvs)
    assert {status[s] for s in tvs} == {"renewed"}, status
    renewed = [s for s in serials if s != silent]
    new_expiry = {d["serial"]: d["new_not_after"] for d in report["devices"] if d["status"] == "renewed"}
    assert all(datetime.fromisoformat(new_expiry[s]) - datetime.fromisoformat(before[s][2]) > timedelta(days=360)
               for s in renewed)

    # Every renewed iPad signs with its new identity, and NanoMDM accepts it.
    after_query = query_all(g)
    assert all(after_query[s]["ok"] for s in renewed)
    after = identities(g)
    ca = x509.load_pem_x509_certificate((g.state / "scep" / "depot" / "ca.pem").read_bytes())
    for s in renewed:
        assert after[s][0] != before[s][0] and after[s][1] == ca.subject.rfc4514_string()
        on_disk = x509.load_pem_x509_certificate((g.state / "mdm" / "ipads" / s / "identity.pem").read_bytes())
        assert (on_disk.not_valid_after_utc - on_disk.not_valid_before_utc).days == 365
    assert after[silent] == before[silent]
    accepted = associations(g)
    from lab.certs import udid_for

    for s in renewed:  # NanoMDM associated the new certificate on the iPad's Authenticate
        assert after[s][0] in accepted[udid_for(s)] and before[s][0] in accepted[udid_for(s)]
    assert accepted[udid_for(silent)] == {before[silent][0]}

    # The silent iPad is reported, run after run; the plan shows it waiting, nothing else is due.
    plan = g.json("mdm", "renew", "--plan")
    by = {i["serial"]: i for i in plan["items"]}
    assert by[silent]["state"] == "sent" and {by[s]["state"] for s in renewed} == {"planned"}
    again = g.cli("mdm", "renew", "--json")
    assert again.exit_code == 1
    assert [(d["serial"], d["status"]) for d in json.loads(again.output)["devices"]
            if d["serial"] in serials] == [(silent, "woken again")]
    check = {c["name"]: c for c in g.json("mdm", "check")["checks"]}
    assert not check["identities"]["ok"] and "1 within the limit" in check["identities"]["detail"]
    assert check["machineinfo"]["ok"] and check["scep-ca"]["ok"]


def test_enrolment_stays_closed_to_devices_outside_the_device_ca(renewal_lab: RenewalLab, tmp_path: Path) -> None:
    from tests.fakes.fake_apple import FakeAppleDevice, FakeAppleDeviceCA

    g = renewal_lab
    serial = json.loads((g.state / "mdm" / "devices.json").read_text())["devices"][0]["serial"]
    stranger = FakeAppleDevice(serial, ca=FakeAppleDeviceCA("Apple iPhone Device CA"))  # the right name only
    r = requests.post(g.lab["enrol_url"], data=stranger.sign(stranger.machine_info()), timeout=30,
                      verify=g.lab["tls_ca_file"], headers={"Content-Type": "application/pkcs7-signature"})
    assert (r.status_code, r.content) == (403, b"device not verified\n")
    from core.audit import list_events
    from core.db import Database

    db = Database(g.config().database_url)
    try:
        assert any(e.action == "enrol.ade.unverified-device" for e in list_events(db))
    finally:
        db.dispose()
    insecure = tmp_path / "insecure.toml"
    insecure.write_text(g.config_file.read_text() + "[dep]\ninsecure_skip_machineinfo_verification = true\n")
    from cli import main

    r2 = CliRunner().invoke(main, ["--config", str(insecure), "--state-dir", str(g.state), "mdm", "check", "--json"])
    checks = {c["name"]: c for c in json.loads(r2.output)["checks"]}
    assert r2.exit_code == 1 and not checks["machineinfo"]["ok"]
    assert "insecure_skip_machineinfo_verification is true" in checks["machineinfo"]["detail"]


def test_a_scep_ca_rotation(renewal_lab: RenewalLab) -> None:
    g = renewal_lab
    rows = enrolled(g, N_IPADS)
    silent = json.loads((g.state / "mdm" / "devices.json").read_text())["devices"][SILENT]["serial"]
    renewed = sorted(x["serial"] for x in rows if x["state"] == "enrolled" and x["serial"] != silent)
    tvs = every_appletv_enrolled(g)
    old_ca = x509.load_pem_x509_certificate((g.state / "scep" / "depot" / "ca.pem").read_bytes())
    r = g.cli("mdm", "scep", "rotate", "--json")
    assert r.exit_code == 0, r.output
    rotation = json.loads(r.output)
    assert rotation["retired"] == [old_ca.subject.rfc4514_string()] and len(rotation["trusted"]) == 2
    lab_mdm.restart_identity_servers(g.state, g.config(), storage_dsn=g.dsn)
    # The old CA's identities keep working beside the new CA.
    answered = query_all(g)
    assert all(answered[s]["ok"] for s in renewed), [answered[s]["summary"] for s in renewed if not answered[s]["ok"]]
    plan = {i["serial"]: i for i in g.json("mdm", "renew", "--plan")["items"]}
    assert all((plan[s]["state"], plan[s]["detail"]) == ("due", "issued by the previous SCEP CA") for s in renewed)
    refused = g.cli("mdm", "scep", "retire-old")
    assert refused.exit_code == 2 and "still hold an identity from the previous SCEP CA" in refused.output
    t0 = time.monotonic()
    r = g.cli("mdm", "renew", "--json")
    g.timings["renew_20_after_rotation"] = time.monotonic() - t0
    status = {d["serial"]: d["status"] for d in json.loads(r.output)["devices"]}
    assert {status[s] for s in renewed} == {"renewed"} and status[silent] == "woken again"
    new_ca = x509.load_pem_x509_certificate((g.state / "scep" / "depot" / "ca.pem").read_bytes())
    assert query_all(g) and all(identities(g)[s][1] == new_ca.subject.rfc4514_string() for s in renewed)
    # The classroom Apple TVs were asked for their CertificateList by `ipad query` and renewed too.
    status = renew_deferred(g, status, tvs)
    assert {status[s] for s in tvs} == {"renewed"}, status
    # Only the silent iPad still holds an old identity: retiring is refused until forced.
    refused = g.cli("mdm", "scep", "retire-old")
    assert refused.exit_code == 2, refused.output
    # The refusal names only the silent iPad.
    count, _, rest = refused.output.partition(" enrolled iPad(s) still hold an identity from the previous SCEP CA")
    named = rest.split(": ", 1)[1].split(";", 1)[0].split(", ")
    assert (int(count.rsplit(" ", 1)[1]), named) == (1, [silent]), refused.output
    forced = g.cli("mdm", "scep", "retire-old", "--force", "--json")
    assert forced.exit_code == 0 and json.loads(forced.output)["trusted"] == [new_ca.subject.rfc4514_string()]
    lab_mdm.restart_identity_servers(g.state, g.config(), storage_dsn=g.dsn)
    answered = query_all(g)
    assert all(answered[s]["ok"] for s in renewed)
