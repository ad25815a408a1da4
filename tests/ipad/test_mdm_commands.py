"""Command builders (plist wire format, fresh UUIDs) and parsing of device reports and check-ins."""

from __future__ import annotations

import base64
import plistlib
import uuid

import pytest

from core.errors import EXIT_INPUT, WerneError
from ipad import commands
from ipad.errors import CommandError, MalformedReport
from ipad.errors import IPadError as MDMError  # the iPad side's root (was mdm_client's)
from ipad.results import (
    CommandResult,
    DeviceInformationResult,
    InstalledApplicationListResult,
    OSUpdateStatusResult,
    ProfileListResult,
    SecurityInfoResult,
    parse_checkin,
    parse_report,
    typed_view,
)


def report(**keys) -> bytes:
    return plistlib.dumps({"UDID": "00008020-000A1C2E3E80002E", **keys})


# --- builders --------------------------------------------------------------------------------

def test_command_plist_is_apples_wire_format():
    cmd = commands.remove_profile("de.werne.ipad.wifi")
    data = plistlib.loads(cmd.to_plist())
    assert data == {"CommandUUID": cmd.uuid,
                    "Command": {"RequestType": "RemoveProfile", "Identifier": "de.werne.ipad.wifi"}}
    assert cmd.to_plist().startswith(b"<?xml")
    uuid.UUID(cmd.uuid)


def test_every_builder_gets_a_fresh_command_uuid():
    for name, build in commands.ALL_BUILDERS.items():
        a, b = build(), build()
        assert a.uuid != b.uuid, name
        assert a.request_type == b.request_type


def test_all_builders_cover_every_command_of_the_issue():
    emitted = {build().request_type for build in commands.ALL_BUILDERS.values()}
    assert {"DeviceInformation", "SecurityInfo", "ProfileList", "InstalledApplicationList",
            "InstallProfile", "RemoveProfile", "DeviceLock", "EnableLostMode", "DisableLostMode",
            "ClearPasscode", "EraseDevice", "Settings", "ScheduleOSUpdate", "OSUpdateStatus"} <= emitted


def test_device_information_default_and_custom_queries():
    default = commands.device_information().payload["Queries"]
    for q in ("SerialNumber", "UDID", "OSVersion", "ModelName", "DeviceName", "IsSupervised", "BatteryLevel",
              "AvailableDeviceCapacity", "BuildVersion", "ProductName", "IsActivationLockEnabled"):
        assert q in default
    assert commands.device_information(["SerialNumber"]).payload == {"Queries": ["SerialNumber"]}


def test_install_profile_carries_the_bytes_as_plist_data():
    blob = b"\x30\x82signed-profile"
    data = plistlib.loads(commands.install_profile(blob).to_plist())
    assert data["Command"]["Payload"] == blob


def test_clear_passcode_carries_the_unlock_token_as_data():
    data = plistlib.loads(commands.clear_passcode(b"\x01\x02token").to_plist())
    assert data["Command"] == {"RequestType": "ClearPasscode", "UnlockToken": b"\x01\x02token"}


def test_optional_keys_are_left_out_not_empty():
    assert commands.device_lock().payload == {}
    assert commands.device_lock("Bitte abgeben").payload == {"Message": "Bitte abgeben"}
    assert commands.erase_device().payload == {}
    assert commands.erase_device(return_to_service=True).payload == {"ReturnToService": {"Enabled": True}}


def test_lost_mode_needs_message_or_phone():
    with pytest.raises(CommandError) as e:
        commands.enable_lost_mode()
    assert e.value.exit_code == EXIT_INPUT and "message or a phone number" in str(e.value)
    cmd = commands.enable_lost_mode(phone="+49 2389 0", footnote="Rathaus")
    assert cmd.payload == {"PhoneNumber": "+49 2389 0", "Footnote": "Rathaus"}


def test_settings_device_name_and_os_update():
    assert commands.settings_device_name("GS-01").payload == {
        "Settings": [{"Item": "DeviceName", "DeviceName": "GS-01"}]}
    assert commands.schedule_os_update("InstallASAP", product_version="17.6.1").payload == {
        "Updates": [{"InstallAction": "InstallASAP", "ProductVersion": "17.6.1"}]}


# --- reports ---------------------------------------------------------------------------------

def test_parse_acknowledged_device_information():
    raw = report(CommandUUID="C-1", Status="Acknowledged",
                 QueryResponses={"SerialNumber": "DMPXK2ABCD12", "OSVersion": "17.5.1", "IsSupervised": True,
                                 "BatteryLevel": 0.8, "ModelName": "iPad"})
    result = parse_report(raw)
    assert result.status == "Acknowledged" and result.command_uuid == "C-1" and result.is_final
    assert result.request_type == "DeviceInformation"
    view = typed_view(result)
    assert isinstance(view, DeviceInformationResult)
    assert view.query_responses.serial_number == "DMPXK2ABCD12"
    assert view.query_responses.os_version == "17.5.1"
    assert view.query_responses.is_supervised is True
    assert view.query_responses.battery_level == pytest.approx(0.8)


def test_parse_error_with_error_chain():
    raw = report(CommandUUID="C-2", Status="Error", ErrorChain=[
        {"ErrorCode": 4001, "ErrorDomain": "MCProfileErrorDomain",
         "LocalizedDescription": "Profil konnte nicht installiert werden.",
         "USEnglishDescription": "The profile could not be installed."},
        {"ErrorCode": 2003, "ErrorDomain": "MCInstallationErrorDomain"}])
    result = parse_report(raw)
    assert result.status == "Error" and result.is_final
    assert [e.error_code for e in result.error_chain] == [4001, 2003]
    assert result.error_text() == ("MCProfileErrorDomain 4001: The profile could not be installed.; "
                                   "MCInstallationErrorDomain 2003:")


def test_idle_and_notnow():
    idle = parse_report(report(Status="Idle"))
    assert idle.status == "Idle" and idle.command_uuid is None and not idle.is_final
    notnow = parse_report(report(Status="NotNow", CommandUUID="C-3"))
    assert notnow.status == "NotNow" and not notnow.is_final


def test_security_info_view_and_data_protection():
    result = parse_report(report(CommandUUID="C", Status="Acknowledged", SecurityInfo={
        "HardwareEncryptionCaps": 3, "PasscodePresent": True, "PasscodeCompliant": True,
        "PasscodeCompliantWithProfiles": False,
        "ManagementStatus": {"EnrolledViaDEP": True, "IsUserEnrollment": False}}))
    view = SecurityInfoResult.from_result(result)
    assert view.security_info.data_protection is True
    assert view.security_info.passcode_compliant_with_profiles is False
    assert view.security_info.management_status.enrolled_via_dep is True
    no_passcode = parse_report(report(CommandUUID="C", Status="Acknowledged",
                                      SecurityInfo={"HardwareEncryptionCaps": 3, "PasscodePresent": False}))
    assert SecurityInfoResult.from_result(no_passcode).security_info.data_protection is False


def test_profile_list_and_app_list_views():
    pl = parse_report(report(CommandUUID="C", Status="Acknowledged", ProfileList=[
        {"PayloadIdentifier": "de.werne.ipad.wifi", "PayloadUUID": "U1", "PayloadDisplayName": "WLAN",
         "IsManaged": True, "PayloadContent": [{"PayloadType": "com.apple.wifi.managed"}]},
        {"PayloadIdentifier": "com.example.mdm", "IsManaged": True}]))
    view = ProfileListResult.from_result(pl)
    assert view.identifiers == {"de.werne.ipad.wifi", "com.example.mdm"}
    assert view.profiles[0].payload_content[0]["PayloadType"] == "com.apple.wifi.managed"
    apps = parse_report(report(CommandUUID="C", Status="Acknowledged", InstalledApplicationList=[
        {"Identifier": "com.apple.Pages", "Name": "Pages", "ShortVersion": "14.0", "BundleSize": 1000}]))
    assert typed_view(apps).applications[0].identifier == "com.apple.Pages"  # type: ignore[union-attr]
    assert isinstance(typed_view(apps), InstalledApplicationListResult)
    osu = parse_report(report(CommandUUID="C", Status="Acknowledged", OSUpdateStatus=[
        {"ProductKey": "iOSUpdate21F90", "IsDownloaded": False, "DownloadPercentComplete": 0.5}]))
    assert isinstance(typed_view(osu), OSUpdateStatusResult)


def test_acknowledged_without_its_response_key_is_malformed():
    result = parse_report(report(CommandUUID="C", Status="Acknowledged"))
    with pytest.raises(MalformedReport, match="Acknowledged without SecurityInfo"):
        SecurityInfoResult.from_result(result)
    # An error report has no response keys; the view is empty rather than an error.
    err = parse_report(report(CommandUUID="C", Status="Error"))
    assert ProfileListResult.from_result(err).profiles == []


def test_typed_view_with_explicit_request_type_and_unknown():
    result = parse_report(report(CommandUUID="C", Status="Acknowledged"))
    assert result.request_type is None
    assert typed_view(result, "DeviceLock") is None
    with pytest.raises(MalformedReport):
        typed_view(result, "ProfileList")


def test_wrong_type_inside_a_response_is_malformed_not_a_crash():
    result = parse_report(report(CommandUUID="C", Status="Acknowledged", SecurityInfo="not a dict"))
    with pytest.raises(MalformedReport, match="SecurityInfo report"):
        typed_view(result)


def test_user_enrollment_report_uses_enrollment_id():
    raw = plistlib.dumps({"EnrollmentID": "E-77", "Status": "Idle"})
    assert parse_report(raw).udid == "E-77"


@pytest.mark.parametrize("raw, reason", [
    (b"", "empty body"),
    (b"not a plist at all", "not a valid plist"),
    (b"\xff\xfe\x00garbage", "not a valid plist"),
    (b"bplist00\x00\x01", "not a valid plist"),
    (plistlib.dumps(["a", "list"]), "is a list, not a dictionary"),
    (plistlib.dumps({"Status": "Idle"}), "missing UDID"),
    (plistlib.dumps({"UDID": "U"}), "missing Status"),
    (plistlib.dumps({"UDID": "U", "Status": "Done"}), "unknown Status 'Done'"),
    (plistlib.dumps({"UDID": "U", "Status": "Acknowledged"}), "Acknowledged without CommandUUID"),
    (plistlib.dumps({"UDID": 5, "Status": "Idle"}), "UDID"),
    (plistlib.dumps({"UDID": "U", "Status": "Error", "CommandUUID": "C", "ErrorChain": "x"}), "ErrorChain"),
    (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa">]><plist><dict><key>UDID</key>'
     b'<string>&a;</string></dict></plist>', "not a valid plist"),
])
def test_malformed_reports_give_one_line_reasons(raw, reason):
    with pytest.raises(MalformedReport) as e:
        parse_report(raw)
    msg = str(e.value)
    assert reason in msg and "\n" not in msg
    assert isinstance(e.value, MDMError) and isinstance(e.value, WerneError)
    assert e.value.exit_code == EXIT_INPUT


def test_dict_input_is_accepted():
    assert isinstance(parse_report({"UDID": "U", "Status": "Idle"}), CommandResult)


# --- check-ins -------------------------------------------------------------------------------

def test_parse_authenticate_tokenupdate_checkout():
    auth = parse_checkin(plistlib.dumps({
        "MessageType": "Authenticate", "UDID": "U-1", "SerialNumber": "DMPXK2ABCD12",
        "Topic": "com.apple.mgmt.X",
        "OSVersion": "17.5", "BuildVersion": "21F79", "ProductName": "iPad13,18", "DeviceName": "iPad",
        "Model": "iPad13,18", "ModelName": "iPad"}))
    assert auth.message_type == "Authenticate" and auth.serial_number == "DMPXK2ABCD12"
    assert auth.device_id == "U-1" and auth.os_version == "17.5"
    tu = parse_checkin(plistlib.dumps({
        "MessageType": "TokenUpdate", "UDID": "U-1", "Topic": "com.apple.mgmt.X", "PushMagic": "PM-1",
        "Token": b"\x01\x02", "UnlockToken": b"very-secret-unlock", "AwaitingConfiguration": False}))
    assert tu.push_magic == "PM-1" and tu.token == b"\x01\x02" and tu.unlock_token == b"very-secret-unlock"
    # The unlock token clears a passcode: it must not show up in logs through repr().
    assert "very-secret-unlock" not in repr(tu) and "very-secret-unlock" not in str(tu)
    out = parse_checkin(plistlib.dumps({"MessageType": "CheckOut", "UDID": "U-1", "Topic": "t"}))
    assert out.message_type == "CheckOut"


def test_checkin_from_a_nanomdm_webhook_raw_payload():
    body = plistlib.dumps({"MessageType": "Authenticate", "UDID": "U-9", "SerialNumber": "ABCDEFGHJK"})
    webhook_raw_payload = base64.b64encode(body).decode()
    assert parse_checkin(base64.b64decode(webhook_raw_payload)).serial_number == "ABCDEFGHJK"


@pytest.mark.parametrize("raw, reason", [
    (b"<plist", "not a valid plist"),
    (plistlib.dumps({"UDID": "U"}), "missing MessageType"),
    (plistlib.dumps({"MessageType": "Authenticate"}), "missing UDID"),
    (plistlib.dumps({"MessageType": "Hello", "UDID": "U"}), "MessageType: Input should be"),
    (plistlib.dumps({"MessageType": "TokenUpdate", "UDID": "U", "Token": "not-data"}), "Token"),
    (plistlib.dumps({"MessageType": "TokenUpdate", "UDID": "U", "AwaitingConfiguration": "yes"}),
     "AwaitingConfiguration"),
])
def test_malformed_checkins(raw, reason):
    with pytest.raises(MalformedReport) as e:
        parse_checkin(raw)
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_certificate_list_view_reads_identity_expiry():
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from ipad.results import CertificateListResult

    def cert(cn: str, days: int) -> bytes:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(1).not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
                .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))

    raw = report(CommandUUID="C", Status="Acknowledged", CertificateList=[
        {"CommonName": "Werne Lab CA", "IsIdentity": False, "Data": cert("ca", 3650)},
        {"CommonName": "device", "IsIdentity": True, "Data": cert("device", 365)},
        {"CommonName": "broken", "IsIdentity": True, "Data": b"\x00not der"}])
    result = parse_report(raw)
    assert result.request_type == "CertificateList"
    view = typed_view(result)
    assert isinstance(view, CertificateListResult)
    assert view.identity_expiry() == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert commands.certificate_list().request_type == "CertificateList"
