"""The simulated Apple TVs answer as tvOS does: only the commands and keys Apple's schema has on tvOS,
an iPad-only profile refused, a tvOS update installed, the AirPlay device id reported."""

from __future__ import annotations

import pytest

from core.config import Config
from ipad import commands
from ipad.payloads import profiles
from ipad.payloads.mdm_schema import load_schema, validate_checkin, validate_response
from lab.ipad_sim import CURRENT_TVOS, SimDevice
from tests.fixtures.sim_devices import run_command, sim_identity


@pytest.fixture(scope="module")
def tv(tmp_path_factory: pytest.TempPathFactory) -> SimDevice:
    return sim_identity(tmp_path_factory, "DYTVGS1010").device(platform="tvOS")


def run(dev: SimDevice, cmd: commands.Command) -> dict:
    return run_command(dev, cmd)


@pytest.mark.parametrize("name", sorted(commands.ALL_BUILDERS))
def test_every_answer_is_tvos_shaped(tv: SimDevice, name: str) -> None:
    cmd = commands.ALL_BUILDERS[name]()
    report = run(tv, cmd)
    on_tvos = load_schema()["commands"][cmd.request_type].get("tvos") is not False
    if not on_tvos:
        assert report["Status"] == "Error", name
        assert "not supported" in report["ErrorChain"][0]["USEnglishDescription"]
    else:
        assert report["Status"] in ("Acknowledged", "Error")
    assert validate_response(cmd.request_type, report, "tvOS") == []


def test_device_information_is_tvos_with_its_airplay_id(tv: SimDevice) -> None:
    answer = run(tv, commands.device_information(["DeviceID", "OSVersion", "ModelName", "IsSupervised",
                                                  "BatteryLevel"]))["QueryResponses"]
    assert answer["OSVersion"] == CURRENT_TVOS[0] and answer["ModelName"] == "Apple TV"
    assert answer["DeviceID"] == tv.airplay_device_id and len(answer["DeviceID"].split(":")) == 6
    assert "BatteryLevel" not in answer  # an iPad's query, not on tvOS
    assert validate_checkin(tv.authenticate(), "tvOS") == []


def test_an_ipad_profile_is_refused_and_a_tvos_one_installed(tv: SimDevice, tmp_path) -> None:
    cfg = Config()
    ipad_only = profiles.build_named_profile("passcode", cfg)
    refused = run(tv, commands.install_profile(ipad_only.to_bytes()))
    assert refused["Status"] == "Error"
    assert "com.apple.mobiledevice.passwordpolicy" in refused["ErrorChain"][1]["USEnglishDescription"]
    ok = profiles.build_named_profile("tv-airplay-security", cfg)
    assert run(tv, commands.install_profile(ok.to_bytes()))["Status"] == "Acknowledged"
    assert tv.profiles[ok.identifier]["PayloadUUID"] == ok.uuid


def test_a_tvos_update_installs(tv: SimDevice) -> None:
    before = tv.os[0]
    run(tv, commands.schedule_os_update("InstallASAP", product_version="18.2"))
    assert (before, tv.os[0]) == (CURRENT_TVOS[0], "18.2")
