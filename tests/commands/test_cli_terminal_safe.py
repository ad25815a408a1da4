"""Text from outside never drives IT staff's terminal: escape sequences put into every field the
CLI prints (a device's model, OS version, name, serial and ErrorChain; app names from the site's
app list; Apple's error texts; facts a laptop reports over SSH) come out escaped (`\\x1b`), on
stdout and stderr, through the real commands. Coordinators' text: tests/commands/test_hostile_cli.py.

The devices are simulated iPads behind a real NanoMDM and the real webhook receiver; Apple's
Apps and Books service is the contract-tested fake."""

from __future__ import annotations

import base64
import json
import plistlib
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from cli import main
from tests.fakes import fake_appsbooks
from tests.fakes.fake_appsbooks import FakeAppsBooks
from tests.fixtures.site import REPO

# CSI (ESC [ 31m), OSC 52 (write the clipboard), a bare CR (overwrite the line), C1 CSI (0x9b),
# and the bidi controls that display text in another order than it is stored.
HOSTILE = "\x1b[31mX\x1b]52;c;ZXZpbA==\x07\rY\x9b2JZ\u202eW\u2066V"
ESCAPED = "\\x1b[31mX\\x1b]52;c;ZXZpbA==\\x07\\x0dY\\x9b2JZ\\u202eW\\u2066V"
# What an XML plist can carry (XML has no ESC, BEL or bare CR): the one-byte C1 CSI and OSC
# (0x9b, 0x9d ... ST 0x9c) and the bidi controls.
HOSTILE_XML = "\x9b31mX\x9d52;c;ZXZpbA==\x9cY\u202eW\u2066V"
ESCAPED_XML = "\\x9b31mX\\x9d52;c;ZXZpbA==\\x9cY\\u202eW\\u2066V"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\x9c", "\x9d", "\u202e", "\u2066")


def werne(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)


def unsafe(out: str, escaped: str = ESCAPED) -> list[str]:
    """What is wrong with a command's output: raw control characters, or no escaped hostile text."""
    problems = [f"raw {c!r}" for c in RAW if c in out]
    return problems + ([] if escaped in out else ["the hostile text is not shown escaped"])


def assert_escaped(r: Result, code: int = 0, escaped: str = ESCAPED) -> None:
    """Exit `code`; no raw control character on stdout or stderr, and the hostile text shown escaped."""
    out = r.stdout + r.stderr
    assert r.exit_code == code, out
    assert unsafe(out, escaped) == [], out


def test_the_check_can_fail() -> None:
    assert unsafe(f"model {HOSTILE}\n") == [f"raw {c!r}" for c in RAW if c in HOSTILE] + [
        "the hostile text is not shown escaped"]
    assert unsafe(f"model {ESCAPED}\n") == []
    assert unsafe(f"model {HOSTILE_XML}\n", ESCAPED_XML)[:3] == ["raw '\\x9b'", "raw '\\x9c'", "raw '\\x9d'"]


def import_catalogue_for(config_path: Path, tmp_path: Path) -> None:
    """Apple's catalogue (a small pmv answer): iPadOS 18.3 for the iPad13,18."""
    from core.config import load_config
    from ipad.ddm.os_catalogue import import_catalogue

    pmv = tmp_path / "pmv.json"
    pmv.write_text(json.dumps({"PublicAssetSets": {"iOS": [
        {"ProductVersion": "18.3", "Build": "22D63", "PostingDate": (date.today() - timedelta(10)).isoformat(),
         "SupportedDevices": ["iPad13,18"]}], "macOS": []}, "AssetSets": {"iOS": [], "macOS": []}}))
    import_catalogue(load_config(config_path), pmv)


# ---------------------------------------------------------------- what iPads send (any plist) --

def webhook_event(topic: str, udid: str, message: dict[str, Any], event_id: str) -> bytes:
    """A NanoMDM webhook event carrying what a device sent, as a binary plist (which holds any text)."""
    raw = base64.b64encode(plistlib.dumps(message, fmt=plistlib.FMT_BINARY)).decode()
    kind = "acknowledge_event" if topic == "mdm.Connect" else "checkin_event"
    extra = {"status": message["Status"], "command_uuid": message["CommandUUID"]} if "Status" in message else {}
    return json.dumps({"topic": topic, "event_id": event_id, "created_at": "2026-11-27T10:00:00Z",
                       kind: {"udid": udid, "ids": {"id": udid, "type": "Device"}, "raw_payload": raw,
                              **extra}}).encode()


@pytest.fixture
def reported(tmp_path: Path, inventory_copy: Path, state_dir: Path) -> Path:
    """A site whose state database holds what two devices reported, stored by the webhook's own
    parser and store: an iPad of the inventory with a hostile model, OS version and name and a
    command it refused with a hostile ErrorChain, and a device not in the inventory with a hostile
    serial number."""
    from core.config import load_config
    from core.db import Database
    from core.inventory import load_inventory
    from ipad.store.registry import Registry
    from ipad.webhook import parse_event
    from tests.fixtures.site import write_config

    cfg = write_config(tmp_path / "werne.toml", inventory_copy, state_dir)
    inventory = load_inventory(inventory_copy)
    db = Database(load_config(cfg).database_url)
    registry = Registry(db, school_of=lambda s: (inventory.ipads[s].school, inventory.ipads[s].group)
                        if s in inventory.ipads else None)
    known, unknown = "00008120-000000000000AAAA", "00008120-000000000000BBBB"
    chain = [{"ErrorDomain": HOSTILE, "ErrorCode": 4001, "LocalizedDescription": HOSTILE,
              "USEnglishDescription": HOSTILE}]
    events = [
        webhook_event("mdm.Authenticate", known, {
            "MessageType": "Authenticate", "UDID": known, "SerialNumber": "ZDWK1DEGZD", "Topic": "com.apple.mgmt.x",
            "OSVersion": HOSTILE, "ProductName": HOSTILE, "DeviceName": HOSTILE}, "e1"),
        webhook_event("mdm.TokenUpdate", known, {
            "MessageType": "TokenUpdate", "UDID": known, "Topic": "com.apple.mgmt.x", "Token": b"t",
            "PushMagic": "m", "UnlockToken": b"u"}, "e2"),
        webhook_event("mdm.Connect", known, {
            "UDID": known, "Status": "Error", "CommandUUID": "C-1", "ErrorChain": chain}, "e3"),
        webhook_event("mdm.Authenticate", unknown, {
            "MessageType": "Authenticate", "UDID": unknown, "SerialNumber": "SER" + HOSTILE,
            "Topic": "com.apple.mgmt.x", "OSVersion": HOSTILE, "ProductName": HOSTILE}, "e4"),
    ]
    try:
        stored, _ = registry.apply_events([parse_event(e) for e in events])
    finally:
        db.dispose()
    assert stored == [True] * len(events)
    return cfg


def test_what_ipads_report_is_escaped_in_ipad_list_and_the_update_plan(reported: Path, tmp_path: Path) -> None:
    r = werne(reported, "ipad", "list")
    assert_escaped(r)
    row = next(line for line in r.stdout.splitlines() if line.startswith("ZDWK1DEGZD"))
    assert ESCAPED in row and f"failed: {ESCAPED} 4001: {ESCAPED}" in row  # OS version, ErrorChain
    # A serial number the device reported (the store keeps it upper case and cut to length).
    assert any(line.startswith("SER\\x1b[31MX\\x1b]52;C;") for line in r.stdout.splitlines())
    import_catalogue_for(reported, tmp_path)
    r = werne(reported, "ipad", "update", "--school", "gs-demo", "--to", "18.3", "--by", "2099-01-15 18:00", "--plan")
    assert_escaped(r)
    assert r.stdout.startswith(f"{ESCAPED}:\n     1 iPad   cannot take 18.3"), r.stdout  # the model heads its group


# ---------------------------------------------------------------- iPads behind NanoMDM --------

def hostile_ipad(**kw: Any) -> Any:
    """A simulated iPad whose answers carry what an XML plist can: DeviceInformation (name, model,
    OS version) and a DeviceLock refused with a hostile ErrorChain."""
    from lab.ipad_sim import SimDevice

    class HostileIPad(SimDevice):
        def execute(self, command: dict[str, Any]) -> dict[str, Any] | None:
            report = super().execute(command)
            request_type = (command.get("Command") or {}).get("RequestType")
            if report is None or report.get("Status") != "Acknowledged":
                return report
            if request_type == "DeviceInformation":
                answers = report["QueryResponses"]
                for key in ("DeviceName", "Model", "ProductName", "OSVersion", "BuildVersion"):
                    if key in answers:
                        answers[key] = HOSTILE_XML
            if request_type == "DeviceLock":
                chain = [{"ErrorDomain": "MCMDMErrorDomain", "ErrorCode": 12345,
                          "LocalizedDescription": HOSTILE_XML, "USEnglishDescription": HOSTILE_XML}]
                return {"UDID": self.udid, "CommandUUID": report["CommandUUID"], "Status": "Error",
                        "ErrorChain": chain}
            return report

    return HostileIPad(**kw)


@pytest.fixture(scope="module")
def hostile_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.fixtures.mdm import open_mdm_world

    with open_mdm_world(tmp_path_factory.mktemp("hostile-world"), n_per_school=1, faults={},
                        make_device=hostile_ipad) as world:
        assert world.wait_enrolled(60)
        yield world


@pytest.mark.mdm
def test_what_ipads_answer_is_escaped_in_the_per_device_lines_and_plans(hostile_world: Any, tmp_path: Path) -> None:
    world = hostile_world
    cfg = world.config_path
    serial = world.serials["gs-demo"][0]
    r = werne(cfg, "ipad", "query", "--school", "gs-demo", "--deadline", "30")
    assert r.exit_code == 0, r.output
    assert_escaped(werne(cfg, "ipad", "list", "--school", "gs-demo"), escaped=ESCAPED_XML)  # OS version
    # The per-device line of an action: the iPad refuses DeviceLock with a hostile ErrorChain.
    r = werne(cfg, "ipad", "lock", serial, "--deadline", "30")
    assert_escaped(r, code=1, escaped=ESCAPED_XML)
    assert r.stdout.startswith(f"{serial}    gs-demo      NOT OK  DeviceLock: Error (MCMDMErrorDomain 12345: ")
    import_catalogue_for(cfg, tmp_path)
    r = werne(cfg, "ipad", "update", "--school", "gs-demo", "--to", "18.3", "--by", "2099-01-15 18:00", "--plan")
    assert_escaped(r, escaped=ESCAPED_XML)
    assert r.stdout.startswith(ESCAPED_XML + ":\n"), r.stdout  # the model they report heads the plan


# ---------------------------------------------------------------- apps: the site's list, Apple's errors

KEYNOTE = "361285480"
SCHOOL = "gs-am-markt"  # 96 iPads at location grundschulen


@pytest.fixture
def apps_site(tmp_path: Path) -> Iterator[tuple[Path, FakeAppsBooks]]:
    """The example city's inventory, an app list whose one app has a hostile name, and Apple's
    Apps and Books service (the fake) with enough licences at both locations."""
    inv = tmp_path / "inventory"
    shutil.copytree(REPO / "inventories" / "example-city", inv)
    name = "Keynote " + HOSTILE
    apps_file = tmp_path / "apps.yaml"
    apps_file.write_text(yaml.safe_dump({
        "apps": {name: {"adam_id": int(KEYNOTE), "bundle_id": "com.apple.Keynote"}},
        "groups": {"pupil": [name], "teacher": [name], "shared": [name]},
    }), encoding="utf-8")
    with FakeAppsBooks(page_size=500, pending_polls=1) as fake:
        locations = ""
        for loc in ("grundschulen", "weiterfuehrende"):
            token = fake.add_location(loc, {KEYNOTE: 600})
            (tmp_path / f"{loc}.vpptoken").write_text(token + "\n")
            locations += f'[apps.locations.{loc}]\ntoken_file = "{tmp_path / (loc + ".vpptoken")}"\n'
        cfg = tmp_path / "werne.toml"
        cfg.write_text(
            f'[site]\ninventory = "{inv}"\nstate_dir = "{tmp_path / "state"}"\n[mdm]\nblast_radius = 25\n'
            f'[apps]\nurl = "{fake.url}"\napps_file = "{apps_file}"\nevent_poll_s = 0.01\nevent_timeout_s = 5.0\n'
            + locations, encoding="utf-8")
        yield cfg, fake


def test_app_names_in_apps_plan_and_the_per_device_lines_of_apps_apply_are_escaped(
        apps_site: tuple[Path, FakeAppsBooks]) -> None:
    cfg, _ = apps_site
    r = werne(cfg, "apps", "plan", "--school", SCHOOL)
    assert_escaped(r)
    assert f"  96 iPads  get Keynote {ESCAPED}" in r.stdout
    r = werne(cfg, "apps", "apply", "--school", SCHOOL, "--max-devices", "96")
    assert_escaped(r, code=0)
    assert r.stdout.count(f"licence Keynote {ESCAPED} assigned") == 96


def test_apples_error_text_is_escaped(apps_site: tuple[Path, FakeAppsBooks], monkeypatch: pytest.MonkeyPatch) -> None:
    # The client already makes Apple's message one terminal-safe line; this checks the whole way
    # to the terminal, through the error boundary.
    cfg, fake = apps_site
    monkeypatch.setitem(fake_appsbooks.ERRORS, 9625, (HOSTILE, 401))
    fake.location("grundschulen").revoked = True
    r = werne(cfg, "apps", "apply", "--school", SCHOOL, "--max-devices", "96")
    assert_escaped(r, code=3)
    assert r.stderr.startswith("Error: ") and "9625" in r.stderr


# ---------------------------------------------------------------- what laptops report over SSH --

def test_facts_a_laptop_reports_are_escaped_in_compliance_diff(tmp_path: Path, state_dir: Path) -> None:
    from core.config import load_config
    from core.db import Database
    from tests.fixtures.compliance import NOW, fleet, laptop_facts, store_run
    from tests.fixtures.site import write_config

    cfg = write_config(tmp_path / "werne.toml", REPO / "inventories" / "demo", state_dir)
    config = load_config(cfg)
    db = Database(config.database_url)
    try:
        first = store_run(db, config, fleet())
        devices = fleet(now=NOW + timedelta(days=1))
        devices[1].facts = laptop_facts(sshd__permitrootlogin=HOSTILE)  # what `sshd -T` printed
        second = store_run(db, config, devices, now=NOW + timedelta(days=1))
    finally:
        db.dispose()
    # Evidence is stored as one line (compliance keeps it so): the bare CR is a space there.
    one_line = ESCAPED.replace("\\x0d", " ")
    r = werne(cfg, "compliance", "diff", str(first), str(second))
    assert_escaped(r, escaped=one_line)
    assert f"  lap02          lx-ssh-no-root-login       pass -> fail  sshd.permitrootlogin={one_line}" in r.stdout
