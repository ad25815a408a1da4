"""Every command and profile werne emits matches Apple's schema; the validator and derivation are sound."""

from __future__ import annotations

import copy
import importlib.util
import json
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Config
from ipad import commands
from ipad.payloads import mdm_schema as schema
from ipad.payloads import profiles
from tests.fixtures.site import REPO
from tests.parts import require_file

REFERENCE = REPO.parent / "shared" / "reference"
APPLE_REF = REFERENCE / "apple-device-management"
MSCP_REF = REFERENCE / "mscp-ios"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def config(tmp_path: Path) -> Config:
    secret = tmp_path / "wifi"
    secret.write_text("schema-test-passphrase")
    cfg = Config()
    cfg.mdm.wifi_secret_file = secret
    cfg.site.inventory = tmp_path / "no-inventory"
    return cfg


# --- everything werne emits is valid -----------------------------------------------------------

@pytest.mark.parametrize("name", sorted(commands.ALL_BUILDERS))
def test_every_command_builder_is_valid(name):
    cmd = commands.ALL_BUILDERS[name]()
    assert schema.validate_command(cmd.to_dict()) == []
    assert schema.validate_command(cmd.to_plist()) == []  # the bytes NanoMDM gets


@pytest.mark.parametrize(("group", "platform"), [("pupil", "iOS"), ("teacher", "iOS"), ("shared", "iOS"),
                                                 ("appletv", "tvOS")])
def test_every_profile_of_every_group_is_valid(group, platform, config):
    room = (profiles.AirPlayDestination("gs-demo-R101", "AA:BB:CC:DD:EE:01"),)
    device = profiles.DeviceContext("ZDWK1DEGZD", group, airplay=room, airplay_school=room)
    built = profiles.profile_set_for(group, config, device=device)
    assert built
    for profile in built:
        assert schema.validate_profile(profile.to_bytes(), platform) == [], profile.name


def test_every_profile_data_file_is_valid_on_its_platform(config):
    for name in profiles.available_profiles():
        platform = profiles.load_profile_spec(name).platform
        assert schema.validate_profile(profiles.build_named_profile(name, config).content, platform) == [], name


def test_tvos_validation_refuses_what_an_apple_tv_does_not_have(config):
    ipad_only = profiles.build_named_profile("restrictions", config).content
    assert any("not supported on tvOS" in e for e in schema.validate_profile(ipad_only, "tvOS"))
    tv_only = profiles.build_named_profile("tv-airplay-security", config).content
    assert schema.validate_profile(tv_only, "tvOS") == []
    assert any("payload type is not supported on iOS" in e for e in schema.validate_profile(tv_only, "iOS"))
    tv_info = commands.device_information(commands.APPLETV_DEVICE_QUERIES).to_dict()
    assert schema.validate_command(tv_info, "tvOS") == []
    assert schema.validate_command(tv_info, "iOS") == ["Command.Queries[9]: 'DeviceID' is not supported on iOS"]
    lock = commands.device_lock().to_dict()
    assert schema.validate_command(lock, "tvOS") == ["Command.RequestType: DeviceLock is not supported on tvOS"]


# --- commands: each kind of problem is found ---------------------------------------------------

def cmd_dict(cmd: commands.Command) -> dict:
    return copy.deepcopy(cmd.to_dict())


def test_command_unknown_key():
    d = cmd_dict(commands.remove_profile("x"))
    d["Command"]["Identifer"] = "typo"
    assert schema.validate_command(d) == ["Command.Identifer: unknown key"]


def test_command_missing_required_key():
    d = cmd_dict(commands.remove_profile("x"))
    del d["Command"]["Identifier"]
    assert schema.validate_command(d) == ["Command.Identifier: missing required key"]


def test_command_wrong_type():
    d = cmd_dict(commands.clear_passcode(b"t"))
    d["Command"]["UnlockToken"] = "dG9rZW4="  # base64 text instead of data
    assert schema.validate_command(d) == ["Command.UnlockToken: expected data, got string"]
    d = cmd_dict(commands.device_information())
    d["Command"]["Queries"] = "SerialNumber"
    assert schema.validate_command(d) == ["Command.Queries: expected array, got string"]


def test_command_value_not_in_list_and_nested_paths():
    d = cmd_dict(commands.schedule_os_update("InstallASAP", product_version="17.6"))
    d["Command"]["Updates"][0]["InstallAction"] = "Now"
    errors = schema.validate_command(d)
    assert len(errors) == 1
    assert errors[0].startswith(
        "Command.Updates[0].InstallAction: value 'Now' not allowed (allowed: Default,")
    d = cmd_dict(commands.device_information(["SerialNumber", "FavouriteColour"]))
    assert schema.validate_command(d) == ["Command.Queries[1]: value 'FavouriteColour' is not a known name"]


def test_command_nested_wrong_type():
    # Apple's command schema has no ranged request keys; ranges in commands are covered by the
    # synthetic TreeCommand below, and in profiles by test_profile_out_of_range_and_not_in_list.
    d = cmd_dict(commands.erase_device(return_to_service=True))
    d["Command"]["ReturnToService"]["Enabled"] = 1  # an integer is not a boolean in a plist
    assert schema.validate_command(d) == ["Command.ReturnToService.Enabled: expected boolean, got integer"]


def test_command_array_alternatives_settings():
    d = cmd_dict(commands.settings_device_name("GS-01"))
    assert schema.validate_command(d) == []
    d["Command"]["Settings"][0]["DeviceName"] = 7
    assert schema.validate_command(d) == ["Command.Settings[0].DeviceName: expected string, got integer"]
    d["Command"]["Settings"][0] = {"Item": "NoSuchSetting"}
    assert schema.validate_command(d) and all("Settings[0]" in e for e in schema.validate_command(d))


def test_command_envelope_and_request_type():
    assert schema.validate_command({"CommandUUID": "x", "Command": {"RequestType": "Dance"}}) == [
        "Command.RequestType: unknown request type 'Dance'"]
    assert schema.validate_command({"Command": {"RequestType": "ProfileList"}, "Extra": 1}) == [
        "Extra: unknown key", "CommandUUID: missing or not a string"]
    assert schema.validate_command(b"garbage") == ["command: not a valid plist (InvalidFileException)"]
    # A macOS-only command and a macOS-only key are errors for iPads, fine without a platform.
    mac = {"CommandUUID": "x", "Command": {"RequestType": "SetFirmwarePassword", "NewPassword": "p"}}
    assert schema.validate_command(mac) == [
        "Command.RequestType: SetFirmwarePassword is not supported on iOS"]
    assert schema.validate_command(mac, platform=None) == []
    pin = cmd_dict(commands.device_lock(pin="123456"))
    assert schema.validate_command(pin) == ["Command.PIN: not supported on iOS"]
    assert schema.validate_command(pin, platform=None) == []


# --- profiles: each kind of problem is found ---------------------------------------------------

def profile_dict(name: str, config: Config) -> dict:
    return copy.deepcopy(profiles.build_named_profile(name, config).content)


def test_profile_unknown_key(config):
    d = profile_dict("restrictions", config)
    d["PayloadContent"][0]["allowEverything"] = True
    d["PayloadColour"] = "blue"
    assert schema.validate_profile(d) == [
        "PayloadColour: unknown key",
        "PayloadContent[0] (com.apple.applicationaccess).allowEverything: unknown key"]


def test_profile_missing_required_key(config):
    d = profile_dict("passcode", config)
    del d["PayloadUUID"]
    del d["PayloadContent"][0]["PayloadIdentifier"]
    assert schema.validate_profile(d) == [
        "PayloadUUID: missing required key",
        "PayloadContent[0] (com.apple.mobiledevice.passwordpolicy).PayloadIdentifier: missing required key"]


def test_profile_wrong_type(config):
    d = profile_dict("wifi", config)
    d["PayloadContent"][0]["AutoJoin"] = "yes"
    d["PayloadRemovalDisallowed"] = 1
    assert schema.validate_profile(d) == [
        "PayloadRemovalDisallowed: expected boolean, got integer",
        "PayloadContent[0] (com.apple.wifi.managed).AutoJoin: expected boolean, got string"]


def test_profile_out_of_range_and_not_in_list(config):
    d = profile_dict("passcode", config)
    d["PayloadContent"][0]["minLength"] = 17
    d["PayloadContent"][0]["maxFailedAttempts"] = 1
    pp = "PayloadContent[0] (com.apple.mobiledevice.passwordpolicy)"
    assert schema.validate_profile(d) == [f"{pp}.maxFailedAttempts: value 1 below minimum 2",
                                          f"{pp}.minLength: value 17 above maximum 16"]
    w = profile_dict("wifi", config)
    w["PayloadContent"][0]["EncryptionType"] = "WPA4"
    (err,) = schema.validate_profile(w)
    assert err.startswith(
        "PayloadContent[0] (com.apple.wifi.managed).EncryptionType: value 'WPA4' not allowed")
    v = profile_dict("vpn", config)
    v["PayloadContent"][0]["IKEv2"]["MTU"] = 1500
    assert schema.validate_profile(v) == [
        "PayloadContent[0] (com.apple.vpn.managed).IKEv2.MTU: value 1500 above maximum 1400"]
    v["PayloadContent"][0]["IKEv2"]["MTU"] = 1400
    v["PayloadContent"][0]["IKEv2"]["OnDemandRules"] = [{"Action": "Maybe"}]
    (err,) = schema.validate_profile(v)
    assert err.startswith(
        "PayloadContent[0] (com.apple.vpn.managed).IKEv2.OnDemandRules[0].Action: value 'Maybe'")


def test_profile_unknown_payload_type_and_top_level_constants(config):
    d = profile_dict("passcode", config)
    d["PayloadContent"].append({"PayloadType": "com.example.nothing"})
    d["PayloadVersion"] = 2
    assert schema.validate_profile(d) == [
        "PayloadVersion: value 2 not allowed (allowed: 1)",
        "PayloadContent[1].PayloadType: unknown payload type 'com.example.nothing'"]


# --- recursion and duplicates in Apple's real data ---------------------------------------------

def test_recursive_anchor_in_real_data_validates_deep_structures():
    folder_page = [{"Type": "App", "BundleID": "com.apple.Pages"}]
    nested = {"Type": "Folder", "DisplayName": "Schule",
              "Pages": [[{"Type": "Folder", "DisplayName": "Mathe", "Pages": [folder_page]}]]}
    payload = {"PayloadType": "com.apple.homescreenlayout", "PayloadVersion": 1, "PayloadIdentifier": "x",
               "PayloadUUID": "3E1B7CFB-4A3D-4C59-9A8E-1E0C3B6D6F10",
               "Dock": [{"Type": "App", "BundleID": "com.apple.mobilesafari"}],
               "Pages": [[nested]]}
    assert schema.validate_payload(payload) == []
    payload["Pages"][0][0]["Pages"][0][0]["Pages"][0][0]["BundleID"] = 42
    (err,) = schema.validate_payload(payload)
    assert "Pages[0][0].Pages[0][0].Pages[0][0].BundleID: expected string, got integer" in err


def test_duplicate_payload_type_in_real_data_is_validated_against_the_union():
    # com.apple.MCX is defined by six files; one payload may combine keys of several of them.
    base = {"PayloadType": "com.apple.MCX", "PayloadVersion": 1, "PayloadIdentifier": "x",
            "PayloadUUID": "3E1B7CFB-4A3D-4C59-9A8E-1E0C3B6D6F11"}
    combined = {**base, "dontAllowFDEDisable": True, "SleepDisabled": True, "timeServer": "ptbtime1.ptb.de"}
    assert schema.validate_payload(combined, platform=None) == []
    assert schema.validate_payload({**combined, "NoSuchMCXKey": 1}, platform=None) == [
        "payload (com.apple.MCX).NoSuchMCXKey: unknown key"]
    errors = schema.validate_payload({**combined, "SleepDisabled": "no"}, platform=None)
    assert errors == ["payload (com.apple.MCX).SleepDisabled: expected boolean, got string"]
    # MCX is macOS only: for an iPad it is an error.
    assert any("not supported on iOS" in e for e in schema.validate_payload(combined))


def test_derived_json_has_no_prose_and_names_its_source():
    data = json.loads((REPO / "data" / "apple-mdm-schema.json").read_text())
    assert "apple/device-management" in data["_source"] and "MIT" in data["_licence"]
    text = json.dumps(data)
    assert '"content"' not in text and '"title"' not in text and '"description"' not in text
    assert set(data["defs"]) >= {"profiles/com.apple.homescreenlayout#1"}


# --- the derivation on synthetic data ----------------------------------------------------------

SYNTHETIC_COMMAND = """
title: Tree
payload:
  requesttype: TreeCommand
  supportedOS:
    iOS: {introduced: '17.0'}
payloadkeys:
- key: Tree
  type: <dictionary>
  presence: required
  subkeys: &tree
  - key: Name
    type: <string>
    presence: required
  - key: Level
    type: <integer>
    range: {min: 0, max: 9}
  - key: Children
    type: <array>
    subkeys:
    - key: Child
      type: <dictionary>
      subkeys: *tree
responsekeys:
- key: Count
  type: <integer>
  presence: required
"""

TOP = """
title: TopLevel
payload: {payloadtype: Configuration}
payloadkeys:
- {key: PayloadType, type: <string>, presence: required, rangelist: [Configuration]}
- {key: PayloadContent, type: <array>, presence: required, subkeys: [{key: Item, type: <dictionary>}]}
"""
COMMON = """
title: Common
payload: {payloadtype: Common}
payloadkeys:
- {key: PayloadType, type: <string>, presence: required}
"""
DUP_A = """
title: A
payload: {payloadtype: com.example.dup}
payloadkeys:
- {key: Alpha, type: <string>, presence: required}
- {key: Shared, type: <boolean>}
"""
DUP_B = """
title: B
payload: {payloadtype: com.example.dup}
payloadkeys:
- {key: Beta, type: <integer>, range: {max: 5}}
- {key: Shared, type: <integer>}
"""


@pytest.fixture
def synthetic_reference(tmp_path: Path) -> Path:
    ref = tmp_path / "ref"
    for sub in ("mdm/commands", "mdm/checkin", "mdm/profiles"):
        (ref / sub).mkdir(parents=True)
    (ref / "mdm/commands/tree.yaml").write_text(SYNTHETIC_COMMAND)
    (ref / "mdm/profiles/TopLevel.yaml").write_text(TOP)
    (ref / "mdm/profiles/CommonPayloadKeys.yaml").write_text(COMMON)
    (ref / "mdm/profiles/dup(a).yaml").write_text(DUP_A)
    (ref / "mdm/profiles/dup(b).yaml").write_text(DUP_B)
    (ref / "SOURCE.txt").write_text("synthetic test data")
    return ref


def test_derivation_breaks_anchor_cycles(synthetic_reference):
    tool = load_tool("derive_apple_schema")
    derived = tool.derive(synthetic_reference)
    json.dumps(derived)  # would raise on a cyclic structure
    tree = derived["commands"]["TreeCommand"]["request"][0]
    child = tree["sub"][2]["sub"][0]
    assert child["key"] == "Child" and child["ref"] in derived["defs"]
    assert [n["key"] for n in derived["defs"][child["ref"]]] == ["Name", "Level", "Children"]
    assert derived["commands"]["TreeCommand"]["response"] == [
        {"key": "Count", "type": "integer", "req": True}]

    deep = {"Name": "root", "Children": [{"Name": "a", "Level": 1, "Children": [{"Name": "b", "Level": 2}]}]}
    command = {"CommandUUID": "x", "Command": {"RequestType": "TreeCommand", "Tree": deep}}
    assert schema.validate_command(command, schema=derived) == []
    deep["Children"][0]["Children"][0]["Level"] = 10
    del deep["Children"][0]["Name"]
    assert schema.validate_command(command, schema=derived) == [
        "Command.Tree.Children[0].Children[0].Level: value 10 above maximum 9",
        "Command.Tree.Children[0].Name: missing required key"]
    answer = {"Status": "Acknowledged", "UDID": "u"}
    assert schema.validate_response("TreeCommand", answer, schema=derived) == ["Count: missing required key"]


def test_derivation_keeps_duplicate_payload_types_and_validates_the_union(synthetic_reference):
    derived = load_tool("derive_apple_schema").derive(synthetic_reference)
    assert [v["file"] for v in derived["profiles"]["com.example.dup"]] == ["dup(a).yaml", "dup(b).yaml"]

    def check(**keys):
        return schema.validate_payload({"PayloadType": "com.example.dup", **keys}, schema=derived)

    assert check(Alpha="a") == []
    assert check(Beta=3) == []                    # variant B alone: Alpha is not required there
    assert check(Alpha="a", Beta=3) == []         # union of A and B
    assert check(Shared=True, Alpha="a") == [] and check(Shared=2, Beta=1) == []
    assert check(Beta=9) == ["payload (com.example.dup).Beta: value 9 above maximum 5"]
    assert check(Alpha="a", Gamma=1) == ["payload (com.example.dup).Gamma: unknown key"]
    assert check(Shared="x", Beta=1) == ["payload (com.example.dup).Shared: expected integer, got string"]


# --- the committed JSON is what the tool makes --------------------------------------------------

def test_derive_apple_schema_reproduces_the_committed_json(tmp_path):
    require_file("Apple's device-management reference data", APPLE_REF)
    out = tmp_path / "schema.json"
    tool = REPO / "tools" / "derive_apple_schema.py"
    run = subprocess.run([sys.executable, str(tool), str(APPLE_REF), str(out)],
                         capture_output=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr.decode()
    assert out.read_bytes() == (REPO / "data" / "apple-mdm-schema.json").read_bytes()


def test_derive_mscp_reproduces_the_committed_json(tmp_path):
    require_file("the mSCP reference data", MSCP_REF)
    out = tmp_path / "mscp.json"
    run = subprocess.run([sys.executable, str(REPO / "tools" / "derive_mscp.py"), str(MSCP_REF), str(out)],
                         capture_output=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr.decode()
    assert out.read_bytes() == (REPO / "data" / "mscp-ios-indigo.json").read_bytes()


# --- responses, for the simulated iPads ---------------------------------------------------------

def test_response_validation_and_keys():
    good = {"UDID": "u", "Status": "Acknowledged", "CommandUUID": "c",
            "SecurityInfo": {"HardwareEncryptionCaps": 3, "PasscodePresent": True, "PasscodeCompliant": True,
                             "PasscodeCompliantWithProfiles": True}}
    assert schema.validate_response("SecurityInfo", good) == []
    bad = copy.deepcopy(good)
    bad["SecurityInfo"]["PasscodePresent"] = "yes"
    assert schema.validate_response("SecurityInfo", bad) == [
        "SecurityInfo.PasscodePresent: expected boolean, got string"]
    assert schema.validate_response("SecurityInfo", {"UDID": "u", "Status": "NotNow"}) == []
    keys = {n["key"]: n["type"] for n in schema.response_keys("DeviceInformation")}
    assert keys == {"QueryResponses": "dictionary"}
    assert plistlib.dumps(good)  # a realistic answer is a valid plist


def test_install_profile_validates_the_embedded_unsigned_profile(config):
    good = commands.install_profile(profiles.build_named_profile("wifi", config).to_bytes())
    assert schema.validate_command(good.to_dict()) == []
    bad = commands.install_profile(plistlib.dumps({"PayloadType": "Configuration", "PayloadVersion": 1,
                                                   "PayloadIdentifier": "x", "PayloadUUID": "u",
                                                   "PayloadContent": [{"PayloadType": "com.example.x"}]}))
    assert schema.validate_command(bad.to_dict()) == [
        "Command.Payload: PayloadContent[0].PayloadType: unknown payload type 'com.example.x'"]
    # A CMS-signed blob is opaque here (it was checked before signing).
    assert schema.validate_command(commands.install_profile(b"\x30\x82\x01\x00signed").to_dict()) == []


def test_checkin_messages_as_an_ipad_sends_them():
    auth = {"MessageType": "Authenticate", "UDID": "u", "Topic": "com.apple.mgmt.X", "SerialNumber": "X",
            "OSVersion": "17.5", "BuildVersion": "21F79", "ProductName": "iPad13,18"}
    assert schema.validate_checkin(auth) == []
    assert schema.validate_checkin(plistlib.dumps(auth)) == []
    # DeviceName is in macOS's Authenticate only; EnrollmentID only with User Enrollment.
    assert schema.validate_checkin({**auth, "DeviceName": "iPad"}) == ["DeviceName: not supported on iOS"]
    token = {"MessageType": "TokenUpdate", "UDID": "u", "Topic": "t", "Token": b"\x01", "PushMagic": "p"}
    assert schema.validate_checkin(token) == []
    assert schema.validate_checkin({**token, "Token": "AQ=="}) == ["Token: expected data, got string"]
    assert schema.validate_checkin({"MessageType": "TokenUpdate", "UDID": "u"}) == [
        "Topic: missing required key", "Token: missing required key", "PushMagic: missing required key"]
    assert schema.validate_checkin({"MessageType": "Hello"}) == [
        "MessageType: unknown check-in message type 'Hello'"]
