"""The simulated iPads answer with Apple's response keys and types, and keep their state."""

from __future__ import annotations

import plistlib

import pytest

from ipad import commands
from ipad.commands import certificate_list
from ipad.payloads.mdm_schema import validate_checkin, validate_response
from lab.ipad_sim import SimDevice
from tests.fixtures.sim_devices import SimIdentity, run_command, sim_identity


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> SimIdentity:
    return sim_identity(tmp_path_factory, "ZDWK1DEGZD")


def device(identity: SimIdentity, **faults: object) -> SimDevice:
    return identity.device(**faults)


def run(dev: SimDevice, cmd: commands.Command) -> dict:
    return run_command(dev, cmd)


@pytest.mark.parametrize("name", sorted(commands.ALL_BUILDERS))
def test_every_answer_matches_apples_response_keys(identity, name: str) -> None:
    cmd = commands.ALL_BUILDERS[name]()
    report = run(device(identity), cmd)
    assert report["Status"] in ("Acknowledged", "Error")
    assert report["CommandUUID"] == cmd.uuid
    assert validate_response(cmd.request_type, report) == []


def test_certificate_list_and_checkins_match_the_schema(identity) -> None:
    dev = device(identity)
    report = run(dev, certificate_list())
    assert validate_response("CertificateList", report) == []
    assert report["CertificateList"][0]["IsIdentity"] is True
    assert validate_checkin(dev.authenticate()) == []
    assert validate_checkin(dev.token_update()) == []


def test_profiles_really_change_and_faults_show(identity) -> None:
    dev = device(identity, refuse_profile="webfilter", no_passcode=True, old_ipados=True, not_now_streak=1)
    profile = {
        "PayloadIdentifier": "de.werne.ipad.wifi",
        "PayloadUUID": "U1",
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadContent": [],
    }
    first = run(dev, commands.install_profile(plistlib.dumps(profile)))
    assert first["Status"] == "NotNow"  # the streak: as if locked before first unlock
    assert run(dev, commands.install_profile(plistlib.dumps(profile)))["Status"] == "Acknowledged"
    listed = {p["PayloadIdentifier"] for p in run(dev, commands.profile_list())["ProfileList"]}
    assert "de.werne.ipad.wifi" in listed
    refused = run(
        dev,
        commands.install_profile(plistlib.dumps({**profile, "PayloadIdentifier": "de.werne.ipad.webfilter"})),
    )
    assert refused["Status"] == "Error" and refused["ErrorChain"][0]["ErrorCode"] == 4001
    assert run(dev, commands.remove_profile("de.werne.ipad.wifi"))["Status"] == "Acknowledged"
    assert run(dev, commands.remove_profile("de.werne.ipad.wifi"))["Status"] == "Error"
    assert "de.werne.ipad.wifi" not in {
        p["PayloadIdentifier"] for p in run(dev, commands.profile_list())["ProfileList"]
    }
    assert run(dev, commands.security_info())["SecurityInfo"]["PasscodePresent"] is False
    assert run(dev, commands.device_information(["OSVersion"]))["QueryResponses"] == {"OSVersion": "15.7.9"}
    assert run(dev, commands.clear_passcode(b"wrong"))["Status"] == "Error"
    assert run(dev, commands.clear_passcode(dev.unlock_token))["Status"] == "Acknowledged"


def test_an_erase_that_never_answers(identity) -> None:
    dev = device(identity, erase_never_answers=True)
    assert dev.execute(plistlib.loads(commands.erase_device().to_plist())) is None
    assert dev.hung
