"""End to end, with real parts except Apple: a coordinator logs in with headless chromium, uploads
an Apple School Manager CSV (';' separated, with a BOM) and submits; IT approves in the CLI; the
fake DEP (through real NanoDEP) records the assignment; simulated iPads with those serials enrol
through real NanoMDM and its webhook; the web server's arrival sweep installs the group's profiles;
the coordinator's page shows "configured"."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core.actor import real_user
from tests.fakes.fake_dep import FakeDEP
from tests.fixtures.enrolment import PASSWORD, SCHOOL_A, add_user, make_site, start_web
from tests.fixtures.site import write_secret

pytestmark = [pytest.mark.mdm, pytest.mark.browser, pytest.mark.slow]

SERIALS = ["E2ESER00001", "E2ESER00002", "E2ESER00003"]



def status_on_page(page, timeout_s: float, want: str) -> str:  # type: ignore[no-untyped-def]
    """Reload the request page until #request-status says `want` (or the deadline passes)."""
    deadline = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < deadline:
        page.reload()
        status = page.locator("#request-status").get_attribute("data-status") or ""
        if status == want:
            break
        time.sleep(1)
    return status


def test_coordinator_to_configured_ipads(tmp_path: Path, nanodep, browser) -> None:  # type: ignore[no-untyped-def]
    import enrolment.models  # noqa: F401
    from core.db import Database
    from core.secrets import Secret
    from ipad.store.registry import Registry
    from lab.certs import issue_identities, make_scep_ca
    from lab.ipad_sim import SimDevice, Simulator
    from tests.fixtures.mdm import NanoMDMProcess, start_webhook

    root = tmp_path / "site"
    (root / "state").mkdir(parents=True)
    secrets_dir = root / "secrets"
    secrets_dir.mkdir(mode=0o700)
    api_key, hmac_key = "e2e-api-key-0123456789", "e2e-hmac-key-9876543210"
    write_secret((secrets_dir / "mdm_api_key"), api_key + "\n")
    (secrets_dir / "wifi").write_text("schul-wlan-passwort\n")
    db = Database(f"sqlite:///{root / 'state' / 'werne.db'}")
    webhook = start_webhook(Registry(db), Secret(hmac_key, "test"))
    ca, ca_key = make_scep_ca(root / "scep")
    nanomdm = NanoMDMProcess(root, ca, webhook.url, api_key, hmac_key)
    fake = FakeDEP(set(SERIALS)).start()
    sim = None
    server = None
    try:
        site = make_site(
            root,
            nanodep.url,
            nanodep.key_file,
            extra=(
                f'\n[mdm]\nurl = "{nanomdm.url}"\napi_key_file = "{secrets_dir / "mdm_api_key"}"\n'
                f'wifi_secret_file = "{secrets_dir / "wifi"}"\n'
            ),
        )
        nanodep.configure(site.dep_name, fake)
        add_user(site, "anna", "coordinator", SCHOOL_A)
        server = start_web(site)

        # 1. The coordinator logs in and uploads the ASM export.
        csv_file = tmp_path / "Geraete_ASM.csv"
        csv_file.write_bytes(
            (
                "\ufeffSerial Number;Device Model;Order Number\r\n"
                + "".join(f"{s};iPad (10th generation);BESTELLUNG-7\r\n" for s in SERIALS)
            ).encode("utf-8")
        )
        page = browser.new_page()
        page.goto(server.url + "/login")
        page.fill("#username", "anna")
        page.fill("#password", PASSWORD)
        page.click("#login-submit")
        page.goto(server.url + "/requests/new")
        page.select_option("#school", SCHOOL_A)
        page.select_option("#group", "pupil")
        page.fill("#purpose", "Klasse 5b")
        page.set_input_files("#csv_file", str(csv_file))
        page.click("#submit-request")
        page.wait_for_url("**/requests/*")
        request_id = int(page.url.rsplit("/", 1)[1])
        assert page.locator("#request-status").get_attribute("data-status") == "submitted"
        rows = page.locator("#serials tbody tr")
        assert [rows.nth(i).get_attribute("data-serial") for i in range(rows.count())] == SERIALS

        # 2. IT approves in the CLI; the fake DEP records the assignment through NanoDEP.
        r = site.cli("enrol", "approve", str(request_id))
        assert r.returncode == 0, r.stdout + r.stderr
        (profile_uuid,) = fake.profiles
        assert fake.assigned_serials() == {s: profile_uuid for s in SERIALS}
        assert status_on_page(page, 5, "assigned") == "assigned"

        # 3. The iPads arrive: they enrol through real NanoMDM, the webhook records it, the web
        #    server's arrival sweep sends the pupil profile set, the iPads acknowledge.
        devices = [
            SimDevice(serial=s, udid=u, cert_pem=pem, key_pem=key)
            for s, u, pem, key in issue_identities(ca, ca_key, SERIALS)
        ]
        sim = Simulator(nanomdm.url, devices, poll_interval=0.5).start()
        assert sim.wait_enrolled(60)
        assert status_on_page(page, 180, "configured") == "configured"
        serial_states = [
            page.locator(f'#serials tr[data-serial="{s}"] td.status').get_attribute("data-status")
            for s in SERIALS
        ]
        assert serial_states == ["configured"] * 3
        assert "konfiguriert" in page.locator("#request-status").inner_text()

        # Every iPad really holds the pupil profile set.
        from ipad.payloads.profiles import profile_set_for

        want = {p.identifier for p in profile_set_for("pupil", site.config())}
        for d in devices:
            assert want <= set(d.profiles), d.serial

        # 4. The audit trail has the whole story.
        audit = json.loads(site.cli("audit", "--json").stdout)
        actions = [e["action"] for e in audit]
        for a in (
            "enrol.request",
            "dep.define_profile",
            "enrol.approve",
            "dep.assign_profile",
            "mdm.install_profiles",
            "enrol.configured",
        ):
            assert a in actions, a
        assert {e["actor"] for e in audit if e["action"] == "enrol.request"} == {"anna"}
        assert {e["actor"] for e in audit if e["action"] == "enrol.approve"} == {real_user()}
    finally:
        if server is not None:
            server.stop()
        if sim is not None:
            sim.stop()
        nanomdm.stop()
        webhook.stop()
        fake.stop()
        db.dispose()
