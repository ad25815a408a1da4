"""`werne ipad update`: Apple's catalogue (a generated fake beside its format contract), the plan per
model, one-line refusals with nothing sent, and a real run against a real KMFDDM."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from core.config import load_config
from core.db import Database
from ipad.ddm.os_catalogue import import_catalogue, load_catalogue, parse_pmv
from ipad.errors import CatalogueError
from ipad.models import MDMDevice, MDMDeviceFact
from tests.fixtures.kmfddm import KMFDDM_KEY
from tests.fixtures.site import write_config

TODAY = date.today()
DEADLINE = "2099-01-15 18:00"


# --- Apple's catalogue: the fake and its contract ----------------------------------------------------

def make_pmv(releases: list[dict]) -> dict:
    """A small catalogue in the shape of gdmf.apple.com/v2/pmv (see test_pmv_format_contract)."""
    return {"PublicAssetSets": {"iOS": releases, "macOS": []}, "AssetSets": {"iOS": [], "macOS": []}}


def release(version: str, build: str, posted_days_ago: int, devices: list[str],
            expires_in_days: int | None = None) -> dict:
    r = {"ProductVersion": version, "Build": build, "PostingDate": (TODAY - timedelta(posted_days_ago)).isoformat(),
         "SupportedDevices": devices}
    if expires_in_days is not None:
        r["ExpirationDate"] = (TODAY + timedelta(expires_in_days)).isoformat()
    return r


FLEET_PMV = make_pmv([
    release("17.7", "21H16", 200, ["iPad13,18", "iPad7,11"], expires_in_days=-30),
    release("18.2", "22C152", 60, ["iPad13,18", "iPad7,11"], expires_in_days=30),
    release("18.3", "22D63", 10, ["iPad13,18"]),
])

# The shape Apple's catalogue has, as Apple's schema names it (SoftwareUpdateDeviceID "to look up
# available OS updates through https://gdmf.apple.com/v2/pmv", apple/device-management
# mdm/commands/information.device.yaml) and as the answer is published: two lists keyed by
# platform, entries with ProductVersion, Build, PostingDate, ExpirationDate (optional) and
# SupportedDevices; an excerpt of a real answer, trimmed to two entries and a few models.
APPLE_PMV_EXCERPT = """{
 "PublicAssetSets": {"iOS": [
   {"ProductVersion": "17.3", "Build": "21D50", "PostingDate": "2024-01-22", "ExpirationDate": "2024-04-25",
    "SupportedDevices": ["iPad13,18", "iPad13,19", "iPhone15,2"]}],
   "macOS": [{"ProductVersion": "14.3", "Build": "23D56", "PostingDate": "2024-01-22",
    "ExpirationDate": "2024-04-25", "SupportedDevices": ["J413AP"]}]},
 "AssetSets": {"iOS": [
   {"ProductVersion": "16.7.5", "Build": "20H307", "PostingDate": "2024-01-22", "ExpirationDate": "2024-04-25",
    "SupportedDevices": ["iPad7,11", "iPad7,12"]}]}
}"""


def test_pmv_format_contract_and_the_fake_has_the_same_shape():
    real = json.loads(APPLE_PMV_EXCERPT)
    releases = parse_pmv(real, "excerpt")
    assert [(r.version, r.build, r.posted, r.expires) for r in releases] == [
        ("16.7.5", "20H307", date(2024, 1, 22), date(2024, 4, 25)),
        ("17.3", "21D50", date(2024, 1, 22), date(2024, 4, 25))]
    assert "iPad7,11" in releases[0].devices and "J413AP" not in releases[1].devices  # macOS is not iOS
    fake_keys = {k for r in FLEET_PMV["PublicAssetSets"]["iOS"] for k in r}
    real_keys = {k for r in real["PublicAssetSets"]["iOS"] for k in r}
    assert fake_keys == real_keys and set(FLEET_PMV) == set(real)


@pytest.mark.parametrize(("data", "message"), [
    ({"foo": 1}, "x: not Apple's pmv catalogue (no PublicAssetSets or AssetSets)"),
    (make_pmv([{"ProductVersion": "18.x", "Build": "1", "PostingDate": "2024-01-01", "SupportedDevices": []}]),
     "x: PublicAssetSets.iOS[0].ProductVersion: '18.x' is not a version like 18.3"),
    (make_pmv([{"ProductVersion": "18.3", "Build": "1", "PostingDate": "22.01.2024", "SupportedDevices": []}]),
     "x: PublicAssetSets.iOS[0].PostingDate: '22.01.2024' is not a date YYYY-MM-DD"),
    (make_pmv([{"ProductVersion": "18.3", "Build": "1", "PostingDate": "2024-01-01", "SupportedDevices": "iPad"}]),
     "x: PublicAssetSets.iOS[0].SupportedDevices: expected a list of model identifiers"),
    (make_pmv([]), "x: no iOS releases in the catalogue"),
])
def test_malformed_catalogue_is_one_line(data, message):
    with pytest.raises(CatalogueError) as e:
        parse_pmv(data, "x")
    assert str(e.value) == message and e.value.exit_code == 2


# --- a fleet in the store --------------------------------------------------------------------------

@pytest.fixture
def fleet(tmp_path, state_dir, inventory_copy):
    """Six gs-demo iPads: two iPad13,18 on 18.2 (one known by SoftwareUpdateDeviceID only), one
    already on 18.3, one iPad7,11 on 18.1 (Apple stops at 18.2), one of unknown model, one not enrolled."""
    pmv = tmp_path / "pmv.json"
    pmv.write_text(json.dumps(FLEET_PMV))
    cfg_path = write_config(tmp_path / "werne.toml", inventory_copy, state_dir,
                            '[mdm]\nblast_radius = 1\n[ddm]\nurl = "http://127.0.0.1:9"\n')
    cfg = load_config(cfg_path)
    import_catalogue(cfg, pmv)
    now = datetime.now(UTC)
    devices = [("ZDWK1DEGZD", "pupil", "iPad13,18", "18.2"), ("ZD8PCF32ER", "pupil", None, "18.2"),
               ("ZDF3DHQD1D", "teacher", "iPad13,18", "18.3"), ("ZDQCJU2KHV", "shared", "iPad7,11", "18.1"),
               ("ZDMGNZGEDP", "pupil", None, "18.1")]
    db = Database(cfg.database_url)
    with db.session() as s:
        for i, (serial, group, model, os_version) in enumerate(devices):
            eid = f"0000-UDID-{i}"
            s.add(MDMDevice(enrollment_id=eid, udid=eid, serial=serial, school="gs-demo", group=group, model=model,
                            os_version=os_version, state="enrolled", enrolled_at=now, last_seen_at=now))
        s.add(MDMDeviceFact(enrollment_id="0000-UDID-1", kind="DeviceInformation", at=now, command_uuid="c1",
                            value={"SoftwareUpdateDeviceID": "iPad13,18", "OSVersion": "18.2"}))
    db.dispose()
    return cfg_path


EXPECTED_PLAN = """\
(model unknown):
     1 iPad   cannot take it: model unknown (run werne ipad query)
     1 iPad   not enrolled: nothing sent
iPad13,18:
     1 iPad   already on 18.3 or newer
     2 iPads  update to 18.3 by 2099-01-15 18:00
iPad7,11:
     1 iPad   cannot take 18.3: Apple offers iPad7,11 only 18.2
Plan only: nothing was sent.
"""


def test_plan_for_a_mixed_fleet(run_cli, fleet):
    r = run_cli("ipad", "update", "--school", "gs-demo", "--to", "18.3", "--by", DEADLINE, "--plan", config=fleet)
    assert (r.exit_code, r.output) == (0, EXPECTED_PLAN)


def test_plan_by_group_and_by_serial(run_cli, fleet):
    r = run_cli("ipad", "update", "--school", "gs-demo", "--group", "teacher", "--to", "18.3", "--by", DEADLINE,
                "--plan", config=fleet)
    assert r.output == "iPad13,18:\n     1 iPad   already on 18.3 or newer\nPlan only: nothing was sent.\n"
    r = run_cli("ipad", "update", "ZDQCJU2KHV", "--to", "18.2", "--by", DEADLINE, "--plan", config=fleet)
    assert r.output == "iPad7,11:\n     1 iPad   update to 18.2 by 2099-01-15 18:00\nPlan only: nothing was sent.\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--to", "18.4", "--by", DEADLINE], "Apple does not offer iPadOS 18.4 (offered now: 18.2, 18.3)"),
    (["--to", "17.7", "--by", DEADLINE], "Apple does not offer iPadOS 17.7 (offered now: 18.2, 18.3)"),
    (["--to", "18.3", "--by", "2001-01-01 08:00"],
     "deadline 2001-01-01 08:00 is in the past at gs-demo (Europe/Berlin)"),
    (["--to", "18.3", "--by", "next friday"], "deadline 'next friday' is not a local time like 2027-01-15 18:00"),
])
def test_refusals_are_one_line_exit_2_and_nothing_is_sent(run_cli, fleet, args, message):
    # ddm.url points at a closed port: had anything been sent, the error would be exit 3.
    r = run_cli("ipad", "update", "--school", "gs-demo", *args, config=fleet)
    assert (r.exit_code, r.stdout, r.stderr) == (2, "", f"Error: {message}\n")


def test_stale_or_missing_catalogue_is_refused(run_cli, fleet, state_dir):
    stored = state_dir / "ddm" / "apple-pmv.json"
    data = json.loads(stored.read_text())
    data["imported_at"] = (datetime.now(UTC) - timedelta(days=45)).isoformat()
    stored.write_text(json.dumps(data))
    r = run_cli("ipad", "update", "--school", "gs-demo", "--to", "18.3", "--by", DEADLINE, config=fleet)
    assert r.exit_code == 2 and r.stderr == (
        f"Error: catalogue {stored} is 45 days old (ddm.catalogue_max_age_days 30); save "
        "https://gdmf.apple.com/v2/pmv and run `werne ipad catalogue import FILE`\n")
    stored.unlink()
    r = run_cli("ipad", "update", "--school", "gs-demo", "--to", "18.3", "--by", DEADLINE, config=fleet)
    assert r.exit_code == 2 and r.stderr.startswith(f"Error: no catalogue of Apple's OS versions at {stored};")


def test_catalogue_import_cli(run_cli, fleet, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run_cli("ipad", "catalogue", "import", str(bad), config=fleet)
    assert r.exit_code == 2 and r.stderr.startswith(f"Error: catalogue {bad}: not JSON")
    good = tmp_path / "pmv.json"
    r = run_cli("ipad", "catalogue", "import", str(good), config=fleet)
    assert r.exit_code == 0 and r.output.endswith(": 3 iOS releases, offered now: 18.2, 18.3\n")
    assert load_catalogue(load_config(fleet)).source == "pmv.json"


# --- the real thing: KMFDDM -------------------------------------------------------------------------

def test_update_puts_the_enforcement_and_maps_the_ipads_in_kmfddm(run_cli, fleet, kmfddm, monkeypatch):
    from core.audit import list_events
    from core.secrets import Secret
    from mdm_client.kmfddm import KMFDDMClient

    cfg_text = fleet.read_text().replace('url = "http://127.0.0.1:9"', f'url = "{kmfddm}"')
    fleet.write_text(cfg_text)
    monkeypatch.setenv("WERNE_DDM_API_KEY", KMFDDM_KEY)
    # The blast radius is 1 and two iPads would be updated.
    r = run_cli("ipad", "update", "--school", "gs-demo", "--to", "18.3", "--by", DEADLINE, config=fleet)
    assert (r.exit_code, r.stderr) == (2, "Error: update would touch 2 iPads, more than mdm.blast_radius 1; "
                                          "add --max-devices 2 to confirm; nothing was sent\n")
    c = KMFDDMClient(kmfddm, Secret(KMFDDM_KEY, source="test"))
    assert c.declarations() == []

    r = run_cli("ipad", "update", "--school", "gs-demo", "--to", "18.3", "--by", DEADLINE, "--max-devices", "2",
                config=fleet)
    assert r.exit_code == 1, r.output  # two cannot take it, one not enrolled
    assert r.output.splitlines()[-1] == ("update to 18.3 by 2099-01-15 18:00: 2 to update, 1 already there, "
                                         "2 cannot take it, 1 not enrolled")
    decl = c.get_declaration("de.werne.ddm.update.gs-demo.18.3")
    assert decl["Payload"] == {"TargetOSVersion": "18.3", "TargetLocalDateTime": "2099-01-15T18:00:00",
                               "DetailsURL": "https://schulen.werne.invalid/ipad-updates"}
    # The activation names both configurations: without it a device keeps them inactive.
    assert c.set_declarations("werne-gs-demo-update-18.3") == [
        "de.werne.ddm.activation.werne-gs-demo-update-18.3",
        "de.werne.ddm.status-subscriptions", "de.werne.ddm.update.gs-demo.18.3"]
    assert c.get_declaration("de.werne.ddm.activation.werne-gs-demo-update-18.3")["Payload"] == {
        "StandardConfigurations": ["de.werne.ddm.status-subscriptions",
                                   "de.werne.ddm.update.gs-demo.18.3"]}
    assert c.enrollment_sets("0000-UDID-0") == ["werne-gs-demo-update-18.3"]
    assert c.enrollment_sets("0000-UDID-1") == ["werne-gs-demo-update-18.3"]
    for eid in ("0000-UDID-2", "0000-UDID-3", "0000-UDID-4"):
        assert c.enrollment_sets(eid) == []

    # Another target for an iPad moves it out of the school's other update set.
    cfg = load_config(fleet)
    db = Database(cfg.database_url)
    with db.session() as sess:
        sess.query(MDMDevice).filter_by(serial="ZD8PCF32ER").update({"os_version": "18.1"})
    db.dispose()
    r = run_cli("ipad", "update", "ZDQCJU2KHV", "ZD8PCF32ER", "ZDWK1DEGZD", "--to", "18.2", "--by", DEADLINE,
                "--max-devices", "2", config=fleet)
    assert r.exit_code == 0, r.output
    assert c.enrollment_sets("0000-UDID-3") == ["werne-gs-demo-update-18.2"]
    assert c.enrollment_sets("0000-UDID-1") == ["werne-gs-demo-update-18.2"]
    assert c.enrollment_sets("0000-UDID-0") == ["werne-gs-demo-update-18.3"]  # already on 18.2: untouched

    db = Database(cfg.database_url)
    events = [e for e in list_events(db) if e.action == "ipad.update"]
    db.dispose()
    assert events[0].detail["target"] == "18.3" and events[0].detail["mapped"] == {
        "ZDWK1DEGZD": "in werne-gs-demo-update-18.3", "ZD8PCF32ER": "in werne-gs-demo-update-18.3"}
    assert events[0].detail["per_device"]["ZDQCJU2KHV"] == "cannot take 18.3: Apple offers iPad7,11 only 18.2"


def test_update_builds_a_valid_declaration_for_a_school_id_of_the_maximum_length(run_cli, fleet, kmfddm,
                                                                                   inventory_copy, monkeypatch):
    """Issue 22: `werne ipad update` for a school whose id is as long as the inventory allows puts a
    declaration KMFDDM takes, with an identifier within Apple's 64 octets."""
    from core.inventory import SCHOOL_ID_MAX
    from core.secrets import Secret
    from ipad.payloads.declarations import IDENTIFIER_MAX
    from mdm_client.kmfddm import KMFDDMClient

    longest = ("gesamtschule-werne-" + "a" * SCHOOL_ID_MAX)[:SCHOOL_ID_MAX]
    for f in inventory_copy.rglob("*"):
        if f.is_file() and "gs-demo" in f.read_text():
            f.write_text(f.read_text().replace("gs-demo", longest))
    fleet.write_text(fleet.read_text().replace('url = "http://127.0.0.1:9"', f'url = "{kmfddm}"'))
    db = Database(load_config(fleet).database_url)
    with db.session() as s:
        s.query(MDMDevice).update({"school": longest})
    db.dispose()
    monkeypatch.setenv("WERNE_DDM_API_KEY", KMFDDM_KEY)
    r = run_cli("ipad", "update", "--school", longest, "--to", "18.3", "--by", DEADLINE, "--max-devices", "2",
                config=fleet)
    assert r.exit_code == 1, r.output  # as for gs-demo: two cannot take it, one not enrolled
    identifier = f"de.werne.ddm.update.{longest}.18.3"
    assert len(identifier.encode()) <= IDENTIFIER_MAX
    c = KMFDDMClient(kmfddm, Secret(KMFDDM_KEY, source="test"))
    assert c.get_declaration(identifier)["Payload"]["TargetOSVersion"] == "18.3"
    assert identifier in c.set_declarations(f"werne-{longest}-update-18.3")
    assert c.enrollment_sets("0000-UDID-0") == [f"werne-{longest}-update-18.3"]
