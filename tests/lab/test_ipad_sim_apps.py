"""The simulated iPads of issue 14: they install and remove App Store apps (with a failing app and a
full storage), answer ManagedApplicationList, report a location and play a sound only in lost mode,
give an Activation Lock bypass code, and honour Return to Service (iPadOS 17+ only)."""

from __future__ import annotations

import pytest

from ipad import commands
from ipad.apps.catalogue import load_apps
from lab.ipad_sim import SimDevice, bypass_code_for
from tests.fixtures.sim_devices import SimIdentity, run_command, sim_identity


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> SimIdentity:
    return sim_identity(tmp_path_factory, "ZDWK1DEGZE")


def device(identity: SimIdentity, **faults: object) -> SimDevice:
    return identity.device(**faults)


def run(dev: SimDevice, cmd: commands.Command) -> dict:
    return run_command(dev, cmd, validate=True)


def test_apps_install_fail_and_remove(identity) -> None:
    cat = load_apps()
    keynote, garageband, imovie = cat.apps["keynote"], cat.apps["garageband"], cat.apps["imovie"]
    dev = device(identity, fail_app=garageband.bundle_id)
    r = run(dev, keynote.install_command())
    assert (r["Status"], r["Identifier"], r["State"]) == ("Acknowledged", "com.apple.Keynote", "Managed")
    assert run(dev, garageband.install_command())["State"] == "Queued"
    listed = run(dev, commands.managed_application_list())["ManagedApplicationList"]
    assert {k: v["Status"] for k, v in listed.items()} == {
        "com.apple.Keynote": "Managed", "com.apple.mobilegarageband": "Failed"}
    assert listed["com.apple.Keynote"]["ManagementFlags"] == 1
    only = run(dev, commands.managed_application_list(["com.apple.Keynote"]))["ManagedApplicationList"]
    assert list(only) == ["com.apple.Keynote"]
    assert run(dev, keynote.remove_command())["Status"] == "Acknowledged"
    r = run(dev, imovie.remove_command())
    assert r["Status"] == "Error" and "not managed" in r["ErrorChain"][0]["USEnglishDescription"]
    assert list(run(dev, commands.managed_application_list())["ManagedApplicationList"]) == [
        "com.apple.mobilegarageband"]
    unknown = run(dev, commands.install_application(999999999, 1))
    assert unknown["Status"] == "Error" and "999999999 could not be found" in str(unknown["ErrorChain"])


def test_a_full_storage_refuses_installs(identity) -> None:
    dev = device(identity, storage_full=True)
    r = run(dev, load_apps().apps["pages"].install_command())
    assert r["Status"] == "Error" and "not enough storage" in r["ErrorChain"][-1]["USEnglishDescription"]
    assert run(dev, commands.managed_application_list())["ManagedApplicationList"] == {}


def test_location_and_sound_only_in_lost_mode(identity) -> None:
    dev = device(identity)
    assert run(dev, commands.device_location())["Status"] == "Error"
    assert run(dev, commands.play_lost_mode_sound())["Status"] == "Error"
    run(dev, commands.enable_lost_mode("Bitte abgeben", "+49 2389 0000"))
    loc = run(dev, commands.device_location())
    assert loc["Status"] == "Acknowledged" and 51 < loc["Latitude"] < 52 and 7 < loc["Longitude"] < 8
    assert run(dev, commands.play_lost_mode_sound())["Status"] == "Acknowledged" and dev.sounds_played == 1
    run(dev, commands.disable_lost_mode())
    assert run(dev, commands.device_location())["Status"] == "Error"
    blind = device(identity, location_unavailable=True)
    run(blind, commands.enable_lost_mode("x"))
    assert "not available" in str(run(blind, commands.device_location())["ErrorChain"])


def test_bypass_code(identity) -> None:
    dev = device(identity)
    code = run(dev, commands.activation_lock_bypass_code())["ActivationLockBypassCode"]
    assert code == bypass_code_for(dev.udid) and len(code.split("-")) == 6
    dev.supervised = False
    assert run(dev, commands.activation_lock_bypass_code())["Status"] == "Error"


def test_return_to_service_erases_and_needs_ipados_17(identity) -> None:
    dev = device(identity)
    run(dev, load_apps().apps["keynote"].install_command())
    r = run(dev, commands.erase_device(return_to_service=True, wifi_profile=b"<plist/>"))
    assert r["Status"] == "Acknowledged" and dev.erased and dev.return_to_service and dev.rts_wifi
    dev.reset_after_erase(keep_identity=False)
    assert dev.apps == {} and not dev.enrolled and dev.cert_pem == "" and not dev.erased
    old = device(identity, old_ipados=True)
    r = run(old, commands.erase_device(return_to_service=True))
    assert r["Status"] == "Error" and "iOS 17" in r["ErrorChain"][0]["USEnglishDescription"] and not old.erased
