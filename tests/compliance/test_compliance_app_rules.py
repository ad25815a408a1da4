"""The app rules of the iPad baseline: from each iPad's ManagedApplicationList answer (the nightly
sweep asks for it), its group's app list and the newest failed InstallApplication: a required app
missing, not managed, failed to install (with the reason), and an app outside the group's list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from compliance.collect_ipads import SweptIPad, collect_ipads
from compliance.engine import evaluate
from compliance.facts import EvalContext
from compliance.rules import load_baselines
from core.models import utcnow
from ipad.apps.catalogue import load_apps
from ipad.models import MDMCommand, MDMDevice
from tests.fakes.fake_appsbooks import FakeAppsBooks
from tests.fixtures.apps import CITY, City, wanted_counts

RULES = ("ios-apps-required", "ios-apps-managed", "ios-apps-install-failed", "ios-apps-not-allowed")


@pytest.fixture
def city(tmp_path: Path) -> Iterator[City]:
    with FakeAppsBooks() as fake:
        c = City(tmp_path, fake, wanted_counts(CITY))
        yield c
        c.db.dispose()


def managed(*bundles: str, **status: str) -> dict:
    out = {b: {"Status": "Managed", "IsValidated": True, "ManagementFlags": 1} for b in bundles}
    for b, st in status.items():
        out[b.replace("_", ".")] = {"Status": st, "IsValidated": False, "ManagementFlags": 1}
    return out


def test_app_rules_with_reasons(city: City) -> None:
    ctx = city.ctx()
    cat = load_apps()
    pupils = sorted(i.serial for i in ctx.inventory.ipads_of_school("gs-sonnenhof") if i.group == "pupil")
    ok, missing, user, failed, full, extra = pupils[:6]
    pupil_apps = [a.bundle_id for a in cat.apps_for("pupil")]  # keynote, pages, numbers, garageband
    keynote, pages, numbers, garageband = pupil_apps
    answers = {
        ok: managed(*pupil_apps),
        missing: managed(pages, numbers, garageband),
        user: {**managed(keynote, numbers, garageband), pages: {"Status": "UserInstalledApp"}},
        failed: {**managed(keynote, pages, numbers), garageband: {"Status": "Failed"}},
        full: managed(keynote, pages, garageband),  # numbers: InstallApplication answered Error
        extra: managed(*pupil_apps, "com.apple.iMovie"),
    }
    now = utcnow()
    with city.db.session() as s:
        s.add(MDMDevice(enrollment_id="E-FULL", udid="E-FULL", serial=full, state="enrolled", enrolled_at=now))
        s.add(MDMCommand(command_uuid="C1", enrollment_id="E-FULL", request_type="InstallApplication",
                         status="Error", detail={"app": "numbers", "adam_id": cat.apps["numbers"].adam_id},
                         updated_at=now, error_chain=[
                             {"ErrorDomain": "MIInstallerErrorDomain", "ErrorCode": 4,
                              "USEnglishDescription": "There is not enough storage space on the device."}]))

    def sweep(_deadline: float) -> list[SweptIPad]:
        info = {"OSVersion": "17.6.1", "IsSupervised": True, "SerialNumber": "x"}
        return [SweptIPad(s, "answered", {"DeviceInformation": info, "SecurityInfo": {}, "ProfileList": [],
                                          "ManagedApplicationList": a}) for s, a in answers.items()]

    devices = collect_ipads(ctx.config, ctx.inventory, city.db, sweep=sweep)
    rules = [r for r in load_baselines().for_fleet("ipads") if r.id in RULES]
    assert len(rules) == 4 and all(r.references.grundschutz for r in rules)
    results = {(r.device, r.rule_id): (r.status, r.evidence) for r in evaluate(rules, devices, EvalContext(ctx.config))}
    # iPads that did not answer ManagedApplicationList (here: not swept) get no app results at all.
    assert {d for d, _ in results} == set(answers)
    bad = {k: v for k, v in results.items() if v[0] != "pass"}
    assert bad == {
        (missing, "ios-apps-required"): ("fail", "missing keynote: `werne apps apply --school gs-sonnenhof`"),
        (user, "ios-apps-managed"): ("fail", "not managed: pages (UserInstalledApp)"),
        (failed, "ios-apps-install-failed"): ("fail", "install failed: garageband: status Failed"),
        (full, "ios-apps-install-failed"): ("fail", "install failed: numbers: MIInstallerErrorDomain 4: "
                                                    "There is not enough storage space on the device."),
        (extra, "ios-apps-not-allowed"): ("fail", "not in the app list of group pupil: com.apple.iMovie"),
    }
    assert results[(ok, "ios-apps-required")] == ("pass", "4 required app(s) on the iPad")


def test_no_app_facts_where_the_site_manages_no_apps(tmp_path: Path) -> None:
    from compliance.collect_ipads import ipad_app_facts
    from core.config import Config

    assert ipad_app_facts(Config(), None, None) is None
