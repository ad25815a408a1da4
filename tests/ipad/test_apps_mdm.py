"""`werne apps apply` through a real NanoMDM: after Apple (the fake) confirms the licences, the
InstallApplication commands are enqueued for the enrolled iPads (recorded as queued, audited), an
iPad not enrolled gets none, and a wipe takes the wiped iPad's licences back."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from core.models import AuditEvent, utcnow
from ipad.models import AppLicence, MDMCommand, MDMDevice
from tests.fakes.fake_appsbooks import FakeAppsBooks
from tests.fixtures.apps import CITY, KEYNOTE, City, wanted_counts

pytestmark = pytest.mark.mdm


def test_apply_enqueues_installs_for_enrolled_ipads_and_wipe_releases(tmp_path: Path) -> None:
    from lab.certs import issue_identities, make_scep_ca
    from lab.ipad_sim import SimDevice, Simulator
    from tests.fixtures.mdm import NanoMDMProcess

    api_key = "apps-test-api-key-0123456789"
    ca, ca_key = make_scep_ca(tmp_path / "scep")
    nanomdm = NanoMDMProcess(tmp_path, ca, None, api_key, None)
    sim = None
    fake = FakeAppsBooks(pending_polls=0).start()
    try:
        need = wanted_counts(CITY)
        (tmp_path / "city").mkdir()
        city = City(tmp_path / "city", fake, {loc: dict(apps) for loc, apps in need.items()})
        (tmp_path / "api_key").write_text(api_key)
        city.config_path.write_text(city.config_path.read_text().replace(
            "[mdm]\n", f'[mdm]\nurl = "{nanomdm.url}"\napi_key_file = "{tmp_path / "api_key"}"\n'))
        ctx = city.ctx()
        school = "gs-sonnenhof"
        serials = sorted(i.serial for i in ctx.inventory.ipads_of_school(school))
        enrolled = serials[:3]
        devices = [SimDevice(serial=s, udid=u, cert_pem=p, key_pem=k)
                   for s, u, p, k in issue_identities(ca, ca_key, enrolled)]
        sim = Simulator(nanomdm.url, devices, poll_interval=60).start()
        assert sim.wait_enrolled(30)
        now = utcnow()
        with city.db.session() as s:  # the registry as the webhook receiver would have filled it
            s.add_all(MDMDevice(enrollment_id=d.udid, udid=d.udid, serial=d.serial, school=school, state="enrolled",
                                enrolled_at=now, last_seen_at=now, token_update_tally=1) for d in devices)
        from ipad.apps.licences import apply

        report = apply(city.ctx(), school=school, max_devices=len(serials))
        assert report.failed == []
        by = {d.serial: d for d in report.devices}
        assert any(line.startswith("InstallApplication keynote: queued") for line in by[enrolled[0]].lines)
        assert any("InstallApplication keynote: not sent (not enrolled" in line for line in by[serials[5]].lines)
        with city.db.session() as s:
            rows = list(s.scalars(select(MDMCommand).where(MDMCommand.request_type == "InstallApplication")))
            audit = [a.action for a in s.scalars(select(AuditEvent))]
        assert {r.enrollment_id for r in rows} == {d.udid for d in devices}
        assert all(r.status == "queued" and r.detail["action"] == "apps.apply" for r in rows)
        assert "apps.apply" in audit
        # The wipe takes the wiped iPad's licences back (after EraseDevice was queued).
        from ipad.actions.wipe import wipe as wipe_and_release

        wiped = wipe_and_release(city.ctx(), (enrolled[1],), yes=True, max_devices=1, deadline_s=0)
        summary = wiped.devices[0].summary()
        assert "EraseDevice: queued" in summary and f"licence {KEYNOTE} taken back (grundschulen)" in summary
        with city.db.session() as s:
            assert not list(s.scalars(select(AppLicence).where(AppLicence.serial == enrolled[1])))
        assert not any(s == enrolled[1] for _, s in fake.location("grundschulen").assignments)
        city.db.dispose()
    finally:
        if sim is not None:
            sim.stop()
        nanomdm.stop()
        fake.stop()
