"""The ADE endpoint's minimum OS (dep.minimum_os_version): an iPad below it is answered as Apple
specifies for iOS 17+ (HTTP 403, JSON ErrorCodeSoftwareUpdateRequired with the newest version Apple's
catalogue offers its model), an older device is refused, and each attempt is recorded; and every
served profile carries the device's own SCEP subject."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.config import load_config
from core.db import Database
from core.inventory import load_inventory
from enrolment.ade import answer_enrolment, minimum_os_answer, read_machine_info
from enrolment.models import ADEEnrolmentAttempt
from ipad.ddm.os_catalogue import import_catalogue
from tests.fakes.fake_apple import FakeAppleDevice, shared_device_ca
from tests.fixtures.site import REPO, write_config
from tests.parts import require_tool

SERIAL = "ZDWK1DEGZD"  # in the demo inventory
TODAY = datetime.now(UTC).date()
PMV = {"PublicAssetSets": {"iOS": [
    {"ProductVersion": "18.3", "Build": "22D63", "PostingDate": (TODAY - timedelta(30)).isoformat(),
     "SupportedDevices": ["iPad13,18", "iPad7,11"]},
    {"ProductVersion": "18.5", "Build": "22F76", "PostingDate": (TODAY - timedelta(5)).isoformat(),
     "SupportedDevices": ["iPad13,18"]}], "macOS": []}, "AssetSets": {"iOS": [], "macOS": []}}


@pytest.fixture
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    require_tool("openssl")
    (tmp_path / "device-ca.pem").write_bytes(shared_device_ca().pem())
    ca_line = f'machineinfo_ca_file = "{tmp_path / "device-ca.pem"}"\n'
    cfg_file = write_config(tmp_path / "werne.toml", REPO / "inventories" / "demo", tmp_path / "state",
                            '[dep]\nminimum_os_version = "18.3"\n' + ca_line)
    cfg = load_config(cfg_file)
    (tmp_path / "pmv.json").write_text(json.dumps(PMV), encoding="utf-8")
    import_catalogue(cfg, tmp_path / "pmv.json")
    db = Database(cfg.database_url)
    yield cfg, db, load_inventory(cfg.inventory_dir)
    db.dispose()


def _body(os_version: str, product: str = "iPad13,18", can_update: bool = True) -> bytes:
    dev = FakeAppleDevice(SERIAL, product=product, os_version=os_version)
    return dev.sign(dev.machine_info(MDM_CAN_REQUEST_SOFTWARE_UPDATE=can_update, SOFTWARE_UPDATE_DEVICE_ID=product))


def _info(cfg, *args, **kwargs):  # type: ignore[no-untyped-def]
    return read_machine_info(_body(*args, **kwargs), cfg.dep.machineinfo_ca_file)


def test_an_ipad_below_the_minimum_is_told_the_version_to_install(site) -> None:  # type: ignore[no-untyped-def]
    cfg, db, inventory = site
    answer = answer_enrolment(cfg, db, inventory, _body("17.6.1"), "10.0.0.7")
    assert answer.status == 403 and answer.content_type == "application/json"
    assert json.loads(answer.body) == {"code": "com.apple.softwareupdate.required",
                                       "details": {"OSVersion": "18.5", "BuildVersion": "22F76"}}
    # The model decides the version: an iPad7,11 gets the newest its model is offered.
    older = minimum_os_answer(cfg, _info(cfg, "17.6.1", "iPad7,11"))
    assert older is not None and json.loads(older.body)["details"] == {"OSVersion": "18.3", "BuildVersion": "22D63"}
    with db.session() as s:
        rows = list(s.scalars(select(ADEEnrolmentAttempt)))
    assert [(r.serial, r.outcome, r.status_code, r.os_version, r.reason) for r in rows] == [
        (SERIAL, "refused", 403, "17.6.1", "iPadOS 17.6.1 is below the minimum 18.3: asked to update to 18.5 (22F76)")]


def test_a_device_that_cannot_be_asked_or_has_no_version_is_refused(site) -> None:  # type: ignore[no-untyped-def]
    cfg, _db, _inv = site
    old = minimum_os_answer(cfg, _info(cfg, "16.7.5", can_update=False))
    assert old is not None and old.status == 403 and old.content_type == "text/plain"
    assert old.reason == ("iPadOS 16.7.5 is below the minimum 18.3 and the device cannot be asked to update "
                          "during enrolment (before iOS 17): update it by hand first")
    none = minimum_os_answer(cfg, _info(cfg, "17.6.1", "iPad6,11"))
    assert none is not None and none.reason == ("iPadOS 17.6.1 is below the minimum 18.3, and Apple offers "
                                                "iPad6,11 no version that meets it")
    assert minimum_os_answer(cfg, _info(cfg, "18.3")) is None  # at the minimum: enrols


def test_each_served_profile_has_the_devices_own_scep_subject(tmp_path: Path, state_dir: Path) -> None:
    """scepserver (-allowrenew 0) revokes an older identity of the same subject: each iPad its own CN.
    Without a device (Apple Configurator's one profile) the configured CN stays (its golden test)."""
    from ipad.payloads.enrolment_profile import build_enrolment_profile
    from tests.fixtures.enrolment_profile import install_topic, make_site

    cfg = load_config(make_site(tmp_path, state_dir), state_dir=state_dir)
    install_topic(cfg)
    db = Database(cfg.database_url)

    def cn(device: str | None) -> str:
        scep = build_enrolment_profile(cfg, db, device=device).content["PayloadContent"][0]["PayloadContent"]
        return dict(x[0] for x in scep["Subject"])["CN"]

    assert cn(None) == cfg.scep.subject_common_name
    assert cn(SERIAL) == f"{cfg.scep.subject_common_name} {SERIAL}" != cn("DMPXQ0Z1J28K")
