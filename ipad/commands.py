"""Builders for the Apple MDM commands werne sends through NanoMDM, serialized as XML plists.

Each builder returns a `Command` with a fresh CommandUUID; `Command.to_plist()` is the body of
NanoMDM's `PUT /v1/enqueue/{ids}`. Key names and types follow Apple's schema
(mdm/commands/*.yaml in apple/device-management); tests/ipad/test_schema.py checks every builder.
"""

from __future__ import annotations

import dataclasses
import plistlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from core.config import Config
from ipad.errors import CommandError

# What `werne ipad query` asks for: identity, OS, supervision, battery, storage and the states
# that the pain points in docs/mdm.md ask to show (activation lock, awaiting configuration, ...).
DEFAULT_DEVICE_QUERIES: tuple[str, ...] = (
    "UDID",
    "SerialNumber",
    "DeviceName",
    "Model",
    "ModelName",
    "ProductName",
    "OSVersion",
    "BuildVersion",
    "IsSupervised",
    "IsActivationLockEnabled",
    "IsDeviceLocatorServiceEnabled",
    "IsMDMLostModeEnabled",
    "AwaitingConfiguration",
    "BatteryLevel",
    "DeviceCapacity",
    "AvailableDeviceCapacity",
    "WiFiMAC",
    "IsMultiUser",
)

InstallAction = Literal["Default", "DownloadOnly", "InstallASAP", "NotifyOnly", "InstallLater",
                        "InstallForceRestart"]


@dataclass(frozen=True)
class Command:
    """One MDM command: its CommandUUID, RequestType and the request keys beside RequestType."""

    uuid: str
    request_type: str
    payload: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The command as Apple's wire structure: {CommandUUID, Command: {RequestType, ...}}."""
        return {"CommandUUID": self.uuid, "Command": {"RequestType": self.request_type, **self.payload}}

    def to_plist(self) -> bytes:
        """The XML plist body that NanoMDM's enqueue endpoint takes."""
        return plistlib.dumps(self.to_dict(), fmt=plistlib.FMT_XML, sort_keys=True)

    def with_uuid(self, uuid: str) -> Command:
        """The same command with another CommandUUID (NanoMDM keeps each CommandUUID once)."""
        return dataclasses.replace(self, uuid=uuid)


# Queries that change nothing on the device: asking one again is harmless, so an answer lost on its
# way to werne is asked again (ipad.dispatch, "lost answers").
READ_ONLY: frozenset[str] = frozenset({
    "DeviceInformation", "SecurityInfo", "ProfileList", "CertificateList", "InstalledApplicationList",
    "ManagedApplicationList", "Restrictions", "OSUpdateStatus", "AvailableOSUpdates",
})


def _command(request_type: str, **payload: Any) -> Command:
    # Apple treats absent and empty optional keys differently (an empty Message shows an empty
    # banner), so None means "leave the key out".
    return Command(uuid=str(uuid.uuid4()).upper(), request_type=request_type,
                   payload={k: v for k, v in payload.items() if v is not None})


def device_information(queries: list[str] | tuple[str, ...] | None = None) -> Command:
    """DeviceInformation with the given query names (default: DEFAULT_DEVICE_QUERIES)."""
    chosen = DEFAULT_DEVICE_QUERIES if queries is None else queries
    return _command("DeviceInformation", Queries=list(chosen))


# What an Apple TV is asked (tvOS has these queries, per Apple's schema): DeviceID is its AirPlay
# device id, which the iPads of its room get in their AirPlay allow list.
APPLETV_DEVICE_QUERIES: tuple[str, ...] = (
    "UDID", "SerialNumber", "DeviceName", "Model", "ModelName", "ProductName", "OSVersion", "BuildVersion",
    "IsSupervised", "DeviceID",
)


def security_info() -> Command:
    """SecurityInfo: passcode presence and compliance, hardware encryption, ..."""
    return _command("SecurityInfo")


def profile_list() -> Command:
    """ProfileList: the configuration profiles installed on the device."""
    return _command("ProfileList")


def certificate_list(managed_only: bool | None = None) -> Command:
    """CertificateList: the device's certificates (to read the identity certificate's expiry)."""
    return _command("CertificateList", ManagedOnly=managed_only)


def installed_application_list(managed_apps_only: bool | None = None) -> Command:
    """InstalledApplicationList, optionally only managed apps."""
    return _command("InstalledApplicationList", ManagedAppsOnly=managed_apps_only)


def install_profile(mobileconfig: bytes) -> Command:
    """InstallProfile with the .mobileconfig bytes (plain or CMS-signed) as Payload data."""
    return _command("InstallProfile", Payload=bytes(mobileconfig))


def remove_profile(identifier: str) -> Command:
    """RemoveProfile by the profile's top-level PayloadIdentifier."""
    return _command("RemoveProfile", Identifier=identifier)


def device_lock(message: str | None = None, phone: str | None = None, pin: str | None = None) -> Command:
    """DeviceLock, with an optional lock-screen message and phone number (PIN is macOS only)."""
    return _command("DeviceLock", Message=message, PhoneNumber=phone, PIN=pin)


def enable_lost_mode(message: str | None = None, phone: str | None = None,
                     footnote: str | None = None) -> Command:
    """EnableLostMode (supervised only); Apple needs at least a message or a phone number."""
    if message is None and phone is None:
        # Apple answers CommandFormatError otherwise; refusing here gives a clear reason.
        raise CommandError("lost mode needs a message or a phone number")
    return _command("EnableLostMode", Message=message, PhoneNumber=phone, Footnote=footnote)


def disable_lost_mode() -> Command:
    """DisableLostMode."""
    return _command("DisableLostMode")


def clear_passcode(unlock_token: bytes) -> Command:
    """ClearPasscode with the UnlockToken the device sent in its TokenUpdate check-in."""
    return _command("ClearPasscode", UnlockToken=bytes(unlock_token))


def erase_device(preserve_data_plan: bool | None = None, disallow_proximity_setup: bool | None = None,
                 return_to_service: bool | None = None, wifi_profile: bytes | None = None,
                 mdm_profile: bytes | None = None) -> Command:
    """EraseDevice: wipes the iPad. Callers must gate this (see the ipad wipe safety rules).

    With `return_to_service` (iPadOS 17+) the iPad re-enrols by itself after the erase: it joins the
    Wi-Fi of `wifi_profile` (a .mobileconfig) and enrols with `mdm_profile`, or, without one, through
    Automated Device Enrolment (the ADE path: the DEP profile's URL, as on first setup).
    """
    rts: dict[str, Any] | None = None
    if return_to_service:
        rts = {"Enabled": True}
        if wifi_profile is not None:
            rts["WiFiProfileData"] = bytes(wifi_profile)
        if mdm_profile is not None:
            rts["MDMProfileData"] = bytes(mdm_profile)
    elif wifi_profile is not None or mdm_profile is not None:
        raise CommandError("Wi-Fi and MDM profile data belong to Return to Service only")
    return _command("EraseDevice", PreserveDataPlan=preserve_data_plan,
                    DisallowProximitySetup=disallow_proximity_setup, ReturnToService=rts)


def settings_device_name(name: str) -> Command:
    """Settings with one DeviceName item (supervised devices)."""
    return _command("Settings", Settings=[{"Item": "DeviceName", "DeviceName": name}])


def schedule_os_update(install_action: InstallAction = "Default", product_version: str | None = None,
                       product_key: str | None = None) -> Command:
    """ScheduleOSUpdate for one update (by ProductVersion or ProductKey) or the newest one."""
    item: dict[str, Any] = {"InstallAction": install_action}
    if product_version is not None:
        item["ProductVersion"] = product_version
    if product_key is not None:
        item["ProductKey"] = product_key
    return _command("ScheduleOSUpdate", Updates=[item])


def os_update_status() -> Command:
    """OSUpdateStatus: download and install progress of OS updates."""
    return _command("OSUpdateStatus")


def available_os_updates() -> Command:
    """AvailableOSUpdates: which OS updates the device can install."""
    return _command("AvailableOSUpdates")


def install_application(itunes_store_id: int, management_flags: int | None = None,
                        configuration: dict[str, Any] | None = None, attributes: dict[str, Any] | None = None,
                        purchase_method: int | None = None) -> Command:
    """InstallApplication of an App Store app by its iTunesStoreID (adamId); PurchaseMethod 1 uses a
    device-based Apps and Books licence, which must be assigned to the serial first."""
    options = {"PurchaseMethod": purchase_method} if purchase_method is not None else None
    return _command("InstallApplication", iTunesStoreID=int(itunes_store_id), ManagementFlags=management_flags,
                    Configuration=configuration, Attributes=attributes, Options=options)


def remove_application(identifier: str) -> Command:
    """RemoveApplication of a managed app by its bundle identifier."""
    return _command("RemoveApplication", Identifier=identifier)


def managed_application_list(identifiers: list[str] | None = None) -> Command:
    """ManagedApplicationList: the managed apps' status (optionally only these bundle ids)."""
    return _command("ManagedApplicationList", Identifiers=identifiers)


def device_location() -> Command:
    """DeviceLocation: where an iPad in MDM lost mode is (supervised; Error outside lost mode)."""
    return _command("DeviceLocation")


def play_lost_mode_sound() -> Command:
    """PlayLostModeSound: the iPad in lost mode plays a sound until found or lost mode ends."""
    return _command("PlayLostModeSound")


def activation_lock_bypass_code() -> Command:
    """ActivationLockBypassCode: the code that lifts Activation Lock (answer escrowed encrypted)."""
    return _command("ActivationLockBypassCode")


def _sample_profile() -> bytes:
    # A real profile (the passcode policy needs no secret), so the schema test also checks the
    # profile embedded in InstallProfile. Imported here: the builders need no profile code, and
    # importing ipad.payloads.profiles reads profiles/groups.yaml.
    from ipad.payloads.profiles import build_named_profile

    return build_named_profile("passcode", Config()).to_bytes()


# One sample call of every builder, so the schema test covers every command werne can emit.
ALL_BUILDERS: dict[str, Callable[[], Command]] = {
    "device_information": lambda: device_information(),
    "device_information_one": lambda: device_information(["SerialNumber"]),
    "security_info": security_info,
    "profile_list": profile_list,
    "certificate_list": lambda: certificate_list(),
    "certificate_list_managed": lambda: certificate_list(managed_only=True),
    "installed_application_list": lambda: installed_application_list(),
    "installed_application_list_managed": lambda: installed_application_list(managed_apps_only=True),
    "install_profile": lambda: install_profile(_sample_profile()),
    "remove_profile": lambda: remove_profile("de.werne.ipad.wifi"),
    "device_lock": lambda: device_lock("Bitte im Sekretariat abgeben", "+49 2389 0000"),
    "device_lock_plain": lambda: device_lock(),
    "enable_lost_mode": lambda: enable_lost_mode("Dieses iPad gehört der Stadt Werne", "+49 2389 0000",
                                                 "Fundbüro"),
    "disable_lost_mode": disable_lost_mode,
    "clear_passcode": lambda: clear_passcode(b"\x00unlock-token\x01"),
    "erase_device": lambda: erase_device(),
    "erase_device_rts": lambda: erase_device(preserve_data_plan=True, disallow_proximity_setup=True,
                                             return_to_service=True),
    "settings_device_name": lambda: settings_device_name("GS-Mitte-007"),
    "schedule_os_update": lambda: schedule_os_update("InstallASAP", product_version="17.6.1"),
    "schedule_os_update_default": lambda: schedule_os_update(),
    "os_update_status": os_update_status,
    "available_os_updates": available_os_updates,
    "install_application": lambda: install_application(361285480, 1, {"ServerURL": "https://schule.invalid"},
                                                       {"Removable": False}, 1),
    "install_application_plain": lambda: install_application(361285480),
    "remove_application": lambda: remove_application("com.apple.Keynote"),
    "managed_application_list": lambda: managed_application_list(["com.apple.Keynote"]),
    "activation_lock_bypass_code": activation_lock_bypass_code,
    "erase_device_rts_profiles": lambda: erase_device(return_to_service=True, wifi_profile=_sample_profile(),
                                                      mdm_profile=_sample_profile()),
    "device_location": device_location,
    "play_lost_mode_sound": play_lost_mode_sound,
}


def restrictions(profile_restrictions: bool | None = None) -> Command:
    """Restrictions: the device's effective restrictions (GlobalRestrictions: restrictedBool,
    restrictedValue, intersection, union), what the installed profiles add up to on the device."""
    return _command("Restrictions", ProfileRestrictions=profile_restrictions)
