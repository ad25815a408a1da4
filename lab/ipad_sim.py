"""Simulated iPads that speak Apple's enrolment, check-in and command protocol to a real NanoMDM.

Each device enrols the way a real one does in Setup Assistant (`ADEEnrolment`, used by the lab):
it POSTs its CMS-signed MachineInfo to the enrolment URL (werne's web app behind nginx on HTTPS),
verifies the signed enrolment profile it gets back, asks the real SCEP server named in the profile
for its identity with the profile's challenge (the real `scepclient`), and then talks to the
profile's ServerURL, signing every message with that identity (`Mdm-Signature`: a detached CMS
signature over the body, which NanoMDM verifies against its -ca). Bulk test fixtures may hand a
device an identity already issued by the SCEP CA instead (`cert_pem`/`key_pem`); the messages are
signed the same way. There is no header shortcut.

A device enrols (Authenticate, then TokenUpdate with a push token, PushMagic and UnlockToken), then
polls: Idle, run the command NanoMDM hands out, send the report, take the next command, until the
queue is empty. Answers use the keys and types of Apple's `responsekeys`
(data/apple-mdm-schema.json); InstallProfile/RemoveProfile really change what ProfileList reports,
ClearPasscode needs the right UnlockToken, and so on.

Faults per device: offline (never talks), a NotNow streak of K (as if locked before first unlock),
no passcode, an old iPadOS, a profile it refuses to install (InstallProfile answers Error with an
ErrorChain), and an EraseDevice it never answers.

One asyncio loop drives every device over HTTP/1.1 keep-alive connections (TLS when the URL is
https), so 523 devices fit on two cores. Use it as a library (`Simulator(...).start()`) or as a
process:
    python -m lab.ipad_sim --state-dir STATE  (reads STATE/mdm/devices.json and lab.json)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import os
import plistlib
import random
import signal
import ssl
import threading
import time
import urllib.parse
import zoneinfo
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key, pkcs7
from cryptography.x509.oid import NameOID

log = logging.getLogger("werne.mdm.simulator")

CHECKIN_CT = "application/x-apple-aspen-mdm-checkin"
CURRENT_IPADOS = ("17.6.1", "21G93")
OLD_IPADOS = ("15.7.9", "19H365")
# Simulated Apple TVs (platform "tvOS"): an Apple TV 4K (3rd generation) on tvOS 18.1.
CURRENT_TVOS = ("18.1", "22J580")
OLD_TVOS = ("16.6", "20M73")
APPLETV_PRODUCT = "AppleTV14,1"
TOPIC = "com.apple.mgmt.External.werne-lab"


@dataclass
class DeviceFaults:
    """What is wrong with one simulated iPad."""

    offline: bool = False
    not_now_streak: int = 0
    no_passcode: bool = False
    old_ipados: bool = False
    # InstallProfile of an identifier ending with this text fails with an ErrorChain.
    refuse_profile: str | None = None
    erase_never_answers: bool = False
    # Apps (issue 14): InstallApplication of this bundle id (or App Store id) is accepted but the
    # install fails (ManagedApplicationList: Failed); a full storage refuses every install.
    fail_app: str | None = None
    storage_full: bool = False
    # DeviceLocation in lost mode answers Error (location services cannot get a fix).
    location_unavailable: bool = False
    # Identity renewal (issue 20): the first N re-installs of the enrolment profile fail at SCEP
    # (the device answers Error and keeps its old identity); or the iPad takes the re-install and
    # is never heard of again (switched off for good, battery dead).
    renewal_failures: int = 0
    renewal_never_answers: bool = False


@dataclass
class SimDevice:
    """One simulated iPad and its state."""

    serial: str
    udid: str
    # The identity (PEM) issued by the SCEP CA; empty until the device has enrolled by SCEP.
    cert_pem: str = ""
    key_pem: str = ""
    model: str = "iPad13,18"
    product_name: str = "iPad13,18"
    name: str = ""
    supervised: bool = True
    # "iOS" (an iPad) or "tvOS" (an Apple TV: answers only what tvOS has, by Apple's schema).
    platform: str = "iOS"
    faults: DeviceFaults = field(default_factory=DeviceFaults)
    # Runtime state
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    passcode_present: bool = True
    lost_mode: bool = False
    locked_message: str | None = None
    not_now_left: int = 0
    unlock_token: bytes = b""
    enrolled: bool = False
    erased: bool = False
    hung: bool = False
    answered: int = 0
    # How often this device ran each command (CommandUUID -> times; NotNow not counted): a command
    # NanoMDM hands out again after the device answered it would show as 2.
    executed: dict[str, int] = field(default_factory=dict)
    not_now_sent: int = 0
    cert_der: bytes = b""
    # Apps, lost mode and Return to Service (issue 14): bundle id -> ManagedApplicationList entry.
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    sounds_played: int = 0
    return_to_service: bool = False  # erased with ReturnToService: re-enrols by itself
    rts_wifi: bool = False  # the erase carried a Wi-Fi profile to join after the erase
    erases: int = 0
    # The push topic, from the enrolment profile's com.apple.mdm payload.
    topic: str = TOPIC
    # The installed enrolment profile: its identifier and UUID, and its MDM payload's ServerURL and
    # CheckInURL (empty: not enrolled by a profile this simulator saw; ProfileList shows a stand-in).
    enrolment_profile: dict[str, str] = field(default_factory=dict)
    # Identity renewals: how many re-installs of the enrolment profile replaced the identity, and
    # the SHA-256 fingerprints of every identity this device held (oldest first).
    renewals: int = 0
    identities: list[str] = field(default_factory=list)
    # Seconds per enrolment step (machineinfo, profile_verify, scep, checkin: each with the wait
    # for a free process slot; *_run: the process alone), for bench/enrol_full_path.py.
    timings: dict[str, float] = field(default_factory=dict)
    # Declarative device management (the DDM section below): declarations, status, update state.
    ddm: DDMState = field(default_factory=lambda: DDMState())
    _signer: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.passcode_present = not self.faults.no_passcode
        self.not_now_left = self.faults.not_now_streak
        self.unlock_token = hashlib.sha256(b"unlock:" + self.udid.encode()).digest()
        if self.platform == "tvOS":
            self.model = self.product_name = APPLETV_PRODUCT
            self.passcode_present = False  # an Apple TV has no passcode
        self.name = self.name or f"{'Apple TV' if self.platform == 'tvOS' else 'iPad'} {self.serial}"
        if self.cert_pem:
            self.set_identity(self.cert_pem, self.key_pem)

    def set_identity(self, cert_pem: str, key_pem: str) -> None:
        """Take the identity (certificate and key, PEM) that the SCEP server issued."""
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        self.cert_pem, self.key_pem = cert_pem, key_pem
        self.cert_der = cert.public_bytes(Encoding.DER)
        fingerprint = hashlib.sha256(self.cert_der).hexdigest()
        if not self.identities or self.identities[-1] != fingerprint:
            self.identities.append(fingerprint)
        self._signer = (cert, load_pem_private_key(key_pem.encode(), password=None)) if key_pem else None

    def mdm_signature(self, body: bytes) -> str:
        """The Mdm-Signature header: base64 of a detached CMS signature over the body by the identity."""
        if self._signer is None:
            raise ValueError(f"device {self.serial} has no identity key to sign with")
        cert, key = self._signer
        der = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(body)
            .add_signer(cert, key, hashes.SHA256())
            # Binary: sign the body's bytes as they are (without it, \n is signed as \r\n, S/MIME's
            # canonical text, and NanoMDM rightly finds a digest mismatch).
            .sign(Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary,
                                 pkcs7.PKCS7Options.NoCapabilities])
        )
        return base64.b64encode(der).decode()

    @property
    def os(self) -> tuple[str, str]:
        if self.ddm.os is not None:  # updated (DDM enforcement; on tvOS, ScheduleOSUpdate)
            return self.ddm.os
        if self.platform == "tvOS":
            return OLD_TVOS if self.faults.old_ipados else CURRENT_TVOS
        return OLD_IPADOS if self.faults.old_ipados else CURRENT_IPADOS

    @property
    def airplay_device_id(self) -> str:
        """An Apple TV's AirPlay device id (tvOS DeviceInformation DeviceID): a MAC-shaped id."""
        return _mac(self.udid, 7).upper()

    # -- messages --------------------------------------------------------------------------

    def authenticate(self) -> dict[str, Any]:
        # iOS sends no Model, ModelName or DeviceName here (Apple's checkin/authenticate.yaml).
        return {
            "MessageType": "Authenticate",
            "UDID": self.udid,
            "Topic": self.topic,
            "SerialNumber": self.serial,
            "ProductName": self.product_name,
            "OSVersion": self.os[0],
            "BuildVersion": self.os[1],
        }

    def token_update(self) -> dict[str, Any]:
        return {
            "MessageType": "TokenUpdate",
            "UDID": self.udid,
            "Topic": self.topic,
            "Token": hashlib.sha256(b"token:" + self.udid.encode()).digest(),
            "PushMagic": str(hashlib.md5(self.udid.encode()).hexdigest()).upper(),  # noqa: S324
            "UnlockToken": self.unlock_token,
            "AwaitingConfiguration": False,
        }

    def execute(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """The report for one command, or None for a command this device never answers."""
        uuid = command.get("CommandUUID", "")
        body = command.get("Command") or {}
        rt = body.get("RequestType", "")
        base = {"UDID": self.udid, "CommandUUID": uuid}
        if self.not_now_left > 0:
            self.not_now_left -= 1
            self.not_now_sent += 1
            return {**base, "Status": "NotNow"}
        handler = getattr(self, f"_do_{rt}", None)
        if handler is not None and self.platform == "tvOS" and not _on_tvos(rt):
            handler = None  # an Apple TV does not know the command (Apple's schema says so)
        if handler is None:
            return {
                **base,
                "Status": "Error",
                "ErrorChain": [_err("MCMDMErrorDomain", 12021, f"The request type {rt} is not supported.")],
            }
        out = handler(body)
        self.executed[uuid] = self.executed.get(uuid, 0) + 1
        if out is None:
            return None
        self.answered += 1
        if self.platform == "tvOS":
            out = _tvos_answer(rt, out)
        return {**base, **out}

    # -- commands --------------------------------------------------------------------------

    def _do_DeviceInformation(self, body: dict[str, Any]) -> dict[str, Any]:
        known: dict[str, Any] = {
            "UDID": self.udid,
            "SerialNumber": self.serial,
            "DeviceName": self.name,
            "Model": self.model,
            "ModelName": "iPad",
            "ProductName": self.product_name,
            "OSVersion": self.os[0],
            "BuildVersion": self.os[1],
            "IsSupervised": self.supervised,
            "IsActivationLockEnabled": False,
            "IsDeviceLocatorServiceEnabled": False,
            "IsMDMLostModeEnabled": self.lost_mode,
            "AwaitingConfiguration": False,
            "BatteryLevel": 0.81,
            "DeviceCapacity": 64.0,
            "AvailableDeviceCapacity": 41.5,
            "WiFiMAC": _mac(self.udid, 1),
            "BluetoothMAC": _mac(self.udid, 2),
            "IsMultiUser": False,
            "IsCloudBackupEnabled": False,
            "IsDoNotDisturbInEffect": False,
            "TimeZone": "Europe/Berlin",
            "ModelNumber": "MPQ03FD/A",
            "IsRoaming": False,
        }
        if self.platform == "tvOS":
            known.update(ModelName="Apple TV", ModelNumber="MN893FD/A", DeviceID=self.airplay_device_id)
        queries = body.get("Queries") or list(known)
        return {"Status": "Acknowledged", "QueryResponses": {q: known[q] for q in queries if q in known}}

    def _do_SecurityInfo(self, _body: dict[str, Any]) -> dict[str, Any]:
        return {
            "Status": "Acknowledged",
            "SecurityInfo": {
                "HardwareEncryptionCaps": 3,
                "PasscodePresent": self.passcode_present,
                "PasscodeCompliant": self.passcode_present,
                "PasscodeCompliantWithProfiles": self.passcode_present,
                "PasscodeLockGracePeriodEnforced": 0,
                "AutoLockTime": 120,
                # On iOS, ManagementStatus has only IsUserEnrollment (Apple's responsekeys).
                "ManagementStatus": {"IsUserEnrollment": False},
            },
        }

    def _do_ProfileList(self, _body: dict[str, Any]) -> dict[str, Any]:
        enrollment = {
            "PayloadIdentifier": self.enrolment_profile.get("identifier") or "com.werne.lab.mdm",
            "PayloadUUID": self.enrolment_profile.get("uuid") or _uuid(self.udid + "mdm"),
            "PayloadDisplayName": "MDM-Registrierung",
            "PayloadVersion": 1,
            "PayloadOrganization": "Stadt Werne",
            "PayloadRemovalDisallowed": False,
            "HasRemovalPasscode": False,
            "IsEncrypted": False,
            "IsManaged": False,
            "PayloadContent": [
                {
                    "PayloadType": "com.apple.mdm",
                    "PayloadIdentifier": "com.werne.lab.mdm.mdm",
                    "PayloadUUID": _uuid(self.udid + "mdm-p"),
                    "PayloadVersion": 1,
                }
            ],
        }
        return {"Status": "Acknowledged", "ProfileList": [enrollment, *self.profiles.values()]}

    def _do_CertificateList(self, _body: dict[str, Any]) -> dict[str, Any]:
        names = x509.load_der_x509_certificate(self.cert_der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return {
            "Status": "Acknowledged",
            "CertificateList": [
                {"CommonName": str(names[0].value) if names else self.serial, "IsIdentity": True,
                 "Data": self.cert_der}
            ],
        }

    def _do_InstalledApplicationList(self, _body: dict[str, Any]) -> dict[str, Any]:
        apps = [
            ("com.apple.Keynote", "Keynote", "14.1"),
            ("com.apple.Pages", "Pages", "14.1"),
            ("de.westermann.bibox", "BiBox", "3.2.0"),
        ]
        return {
            "Status": "Acknowledged",
            "InstalledApplicationList": [
                {
                    "Identifier": i,
                    "Name": n,
                    "ShortVersion": v,
                    "Version": v,
                    "BundleSize": 150_000_000,
                    "DynamicSize": 2_000_000,
                    "IsValidated": True,
                    "Installing": False,
                }
                for i, n, v in apps
            ],
        }

    def _do_InstallProfile(self, body: dict[str, Any]) -> dict[str, Any]:
        profile = _profile_from_payload(body.get("Payload"))
        if profile is None:
            return {
                "Status": "Error",
                "ErrorChain": [_err("MCProfileErrorDomain", 1000, "The profile could not be read.")],
            }
        ident = profile.get("PayloadIdentifier", "")
        foreign = _foreign_payloads(profile, self.platform)
        if foreign:
            return {
                "Status": "Error",
                "ErrorChain": [
                    _err("MCInstallationErrorDomain", 4001, "Profile Installation Failed"),
                    _err("MCPayloadErrorDomain", 2000, f"The payload type {foreign[0]} is not supported."),
                ],
            }
        refuse = self.faults.refuse_profile
        if refuse and ident.endswith(refuse):
            return {
                "Status": "Error",
                "ErrorChain": [
                    _err("MCInstallationErrorDomain", 4001, "Profile Installation Failed"),
                    _err("MCPayloadErrorDomain", 2003, "The payload could not be installed."),
                ],
            }
        self.profiles[ident] = {
            "PayloadIdentifier": ident,
            "PayloadUUID": profile.get("PayloadUUID", ""),
            "PayloadDisplayName": profile.get("PayloadDisplayName", ident),
            "PayloadVersion": int(profile.get("PayloadVersion", 1)),
            "PayloadOrganization": profile.get("PayloadOrganization", ""),
            "PayloadRemovalDisallowed": bool(profile.get("PayloadRemovalDisallowed", False)),
            "HasRemovalPasscode": False,
            "IsEncrypted": False,
            "IsManaged": True,
            "PayloadContent": [
                {
                    k: p[k]
                    for k in ("PayloadType", "PayloadIdentifier", "PayloadUUID", "PayloadVersion")
                    if k in p
                }
                for p in profile.get("PayloadContent", [])
                if isinstance(p, dict)
            ],
        }
        self.ddm.restriction_payloads[ident] = [  # for the Restrictions command
            p for p in profile.get("PayloadContent", [])
            if isinstance(p, dict) and p.get("PayloadType") == "com.apple.applicationaccess"]
        if (
            any(
                isinstance(p, dict) and p.get("PayloadType") == "com.apple.mobiledevice.passwordpolicy"
                for p in profile.get("PayloadContent", [])
            )
            and not self.faults.no_passcode
        ):
            self.passcode_present = True
        return {"Status": "Acknowledged"}

    def _do_RemoveProfile(self, body: dict[str, Any]) -> dict[str, Any]:
        ident = body.get("Identifier", "")
        self.ddm.restriction_payloads.pop(ident, None)
        if self.profiles.pop(ident, None) is None:
            return {
                "Status": "Error",
                "ErrorChain": [
                    _err("MCProfileErrorDomain", 1001, f"The profile “{ident}” could not be found.")
                ],
            }
        return {"Status": "Acknowledged"}

    def _do_DeviceLock(self, body: dict[str, Any]) -> dict[str, Any]:
        self.locked_message = body.get("Message") or ""
        return {"Status": "Acknowledged"}

    def _do_EnableLostMode(self, _body: dict[str, Any]) -> dict[str, Any]:
        if not self.supervised:
            return {
                "Status": "Error",
                "ErrorChain": [_err("MCMDMErrorDomain", 12078, "The device is not supervised.")],
            }
        self.lost_mode = True
        return {"Status": "Acknowledged"}

    def _do_DisableLostMode(self, _body: dict[str, Any]) -> dict[str, Any]:
        self.lost_mode = False
        return {"Status": "Acknowledged"}

    def _do_ClearPasscode(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("UnlockToken") != self.unlock_token:
            return {
                "Status": "Error",
                "ErrorChain": [_err("MCMDMErrorDomain", 12024, "The unlock token is invalid.")],
            }
        self.passcode_present = False
        return {"Status": "Acknowledged"}

    def _do_EraseDevice(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.faults.erase_never_answers:
            self.hung = True
            return None
        rts = body.get("ReturnToService") or {}
        if rts.get("Enabled"):
            if _os_tuple(self.os[0]) < (17,):
                # Apple: Return to Service needs iOS 17; an older iPad refuses the whole command.
                return {"Status": "Error", "ErrorChain": [_err(
                    "MCMDMErrorDomain", 12021, "Return to Service requires iOS 17 or later.")]}
            self.return_to_service = True
            self.rts_wifi = isinstance(rts.get("WiFiProfileData"), bytes)
        self.erased = True
        self.erases += 1
        return {"Status": "Acknowledged"}

    def _do_Settings(self, body: dict[str, Any]) -> dict[str, Any]:
        # Apple's responsekeys: one Settings dictionary (Status, ErrorChain) for the whole command.
        errors = []
        for item in body.get("Settings") or []:
            if item.get("Item") == "DeviceName" and self.supervised:
                self.name = str(item.get("DeviceName", self.name))
            else:
                errors.append(
                    _err("MCMDMErrorDomain", 12021, f"Setting {item.get('Item')} is not supported.")
                )
        result: dict[str, Any] = {"Status": "Error" if errors else "Acknowledged"}
        if errors:
            result["ErrorChain"] = errors
        return {"Status": "Acknowledged", "Settings": result}

    def _do_ScheduleOSUpdate(self, body: dict[str, Any]) -> dict[str, Any]:
        updates = body.get("Updates") or [{"InstallAction": "Default"}]
        if self.platform == "tvOS":
            # An Apple TV installs an InstallASAP update at once (it has no user to defer it).
            for u in updates:
                version = u.get("ProductVersion")
                if u.get("InstallAction") == "InstallASAP" and version and \
                        _ddm_version_key(version) > _ddm_version_key(self.os[0]):
                    self.ddm.os = (str(version), ddm_build_for(str(version)))
        return {
            "Status": "Acknowledged",
            "UpdateResults": [
                {
                    "ProductKey": f"iOSUpdate{u.get('ProductVersion', CURRENT_IPADOS[0])}",
                    "InstallAction": u.get("InstallAction", "InstallASAP")
                    if u.get("InstallAction") != "Default"
                    else "InstallASAP",
                    "Status": "Idle",
                }
                for u in updates
            ],
        }

    # -- apps, lost mode location and sound, bypass code, Return to Service (issue 14) -----------

    def _do_InstallApplication(self, body: dict[str, Any]) -> dict[str, Any]:
        adam = body.get("iTunesStoreID")
        known = app_store().get(adam) if isinstance(adam, int) else None
        if known is None or not isinstance(adam, int):
            return {"Status": "Error", "ErrorChain": [_err(
                "MCMDMErrorDomain", 12030, f"The app with iTunes Store ID {adam} could not be found.")]}
        bundle, name = known
        if self.faults.storage_full:
            return {"Status": "Error", "ErrorChain": [
                _err("MCInstallationErrorDomain", 4025, f"{name} could not be installed."),
                _err("MIInstallerErrorDomain", 4, "There is not enough storage space on the device."),
            ]}
        failing = self.faults.fail_app is not None and self.faults.fail_app in (bundle, str(adam))
        self.apps[bundle] = {
            "Status": "Failed" if failing else "Managed",
            "ManagementFlags": int(body.get("ManagementFlags") or 0),
            "UnusedRedemptionCode": "",
            "HasConfiguration": bool(body.get("Configuration")),
            "HasFeedback": False,
            "IsValidated": not failing,
            "ExternalVersionIdentifier": 800_000_000 + adam % 1000,
        }
        return {"Status": "Acknowledged", "Identifier": bundle, "State": "Queued" if failing else "Managed"}

    def _do_RemoveApplication(self, body: dict[str, Any]) -> dict[str, Any]:
        ident = body.get("Identifier", "")
        if self.apps.pop(ident, None) is None:
            return {"Status": "Error", "ErrorChain": [_err(
                "MCMDMErrorDomain", 12029, f"The app “{ident}” is not managed.")]}
        return {"Status": "Acknowledged"}

    def _do_ManagedApplicationList(self, body: dict[str, Any]) -> dict[str, Any]:
        wanted = body.get("Identifiers")
        apps = {k: dict(v) for k, v in self.apps.items() if not wanted or k in wanted}
        return {"Status": "Acknowledged", "ManagedApplicationList": apps}

    def _do_DeviceLocation(self, _body: dict[str, Any]) -> dict[str, Any]:
        if not self.lost_mode:
            return {"Status": "Error", "ErrorChain": [_err(
                "MCMDMErrorDomain", 12067, "The device is not in lost mode.")]}
        if self.faults.location_unavailable:
            return {"Status": "Error", "ErrorChain": [_err(
                "MCMDMErrorDomain", 12068, "The device location is not available.")]}
        lat, lon = sim_location(self.udid)
        return {"Status": "Acknowledged", "Latitude": lat, "Longitude": lon, "HorizontalAccuracy": 12.0,
                "VerticalAccuracy": 8.0, "Altitude": 61.0, "Speed": 0.0, "Course": -1.0,
                "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def _do_PlayLostModeSound(self, _body: dict[str, Any]) -> dict[str, Any]:
        if not self.lost_mode:
            return {"Status": "Error", "ErrorChain": [_err(
                "MCMDMErrorDomain", 12067, "The device is not in lost mode.")]}
        self.sounds_played += 1
        return {"Status": "Acknowledged"}

    def _do_ActivationLockBypassCode(self, _body: dict[str, Any]) -> dict[str, Any]:
        if not self.supervised:
            return {"Status": "Error", "ErrorChain": [_err(
                "MCMDMErrorDomain", 12078, "The device is not supervised.")]}
        return {"Status": "Acknowledged", "ActivationLockBypassCode": bypass_code_for(self.udid)}

    def reset_after_erase(self, keep_identity: bool) -> None:
        """What an erase leaves: nothing installed, not in lost mode, not enrolled; with an ADE
        re-enrolment the identity goes too (a new one comes from SCEP)."""
        self.profiles.clear()
        self.apps.clear()
        self.lost_mode = False
        self.locked_message = None
        self.passcode_present = not self.faults.no_passcode
        self.enrolled = False
        self.erased = False
        self.return_to_service = False
        if not keep_identity:
            self.cert_pem = self.key_pem = ""
            self.cert_der = b""
            self._signer = None

    def _do_Restrictions(self, _body: dict[str, Any]) -> dict[str, Any]:
        return {"Status": "Acknowledged", "GlobalRestrictions": effective_restrictions(self),
                "ProfileRestrictions": {}}

    def _do_DeclarativeManagement(self, _body: dict[str, Any]) -> dict[str, Any]:
        # Acknowledge, then synchronise over the check-in channel (Simulator: ddm_sync).
        self.ddm.sync_pending = True
        return {"Status": "Acknowledged"}


def _os_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split(".") if x.isdigit())


def _on_tvos(request_type: str) -> bool:
    """Whether Apple's schema has the command on tvOS (the simulated Apple TVs answer only those)."""
    from ipad.payloads.mdm_schema import load_schema  # lazy: the iPads never need the schema

    entry = load_schema()["commands"].get(request_type)
    return entry is not None and entry.get("tvos") is not False


def _tvos_answer(request_type: str, out: dict[str, Any]) -> dict[str, Any]:
    """An answer as tvOS gives it: every response key (at any depth, DeviceInformation's query names
    included) that Apple's schema does not have on tvOS is left out."""
    from ipad.payloads.mdm_schema import load_schema

    schema = load_schema()
    pruned: dict[str, Any] = _prune_tvos(out, schema["commands"][request_type]["response"], schema["defs"])
    return pruned


def _prune_tvos(value: Any, nodes: list[dict[str, Any]], defs: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        by_name = {n["key"]: n for n in nodes}
        wild = next((n for k, n in by_name.items() if k == "ANY" or k.startswith("ANY ")), None)
        out = {}
        for k, v in value.items():
            node = by_name.get(k, wild)
            if node is None:
                out[k] = v  # an envelope key (Status, UDID, ...)
            elif node.get("tvos") is not False:
                out[k] = _prune_tvos(v, defs.get(node["ref"], []) if "ref" in node else node.get("sub") or [], defs)
        return out
    if isinstance(value, list) and len(nodes) == 1:
        return [_prune_tvos(v, nodes[0].get("sub") or [], defs) for v in value]
    return value


def _foreign_payloads(profile: dict[str, Any], platform: str) -> list[str]:
    """Payload types of a profile that the platform does not have (an Apple TV refuses the profile)."""
    if platform != "tvOS":
        return []
    from ipad.payloads.mdm_schema import load_schema

    known = load_schema()["profiles"]
    return [str(p.get("PayloadType")) for p in profile.get("PayloadContent") or [] if isinstance(p, dict)
            and not any(v.get("tvos") is not False for v in known.get(str(p.get("PayloadType")), []))]


_APP_STORE: dict[int, tuple[str, str]] = {}


def app_store() -> dict[int, tuple[str, str]]:
    """The simulated App Store: App Store id -> (bundle id, name), from werne's shipped app list."""
    if not _APP_STORE:
        from ipad.apps.catalogue import load_apps

        for app in load_apps().apps.values():
            _APP_STORE[int(app.adam_id)] = (app.bundle_id, app.name)
    return _APP_STORE


def bypass_code_for(udid: str) -> str:
    """A simulated iPad's Activation Lock bypass code (Apple's shape: 6 groups of 5)."""
    alphabet = "0123456789ACDEFGHJKLMNPQRTUVWXYZ"
    h = hashlib.sha256(b"bypass:" + udid.encode()).digest()
    chars = "".join(alphabet[b % len(alphabet)] for b in h[:30])
    return "-".join(chars[i:i + 5] for i in range(0, 30, 5))


def sim_location(udid: str) -> tuple[float, float]:
    """Where a simulated iPad in lost mode is: somewhere near Werne's town hall."""
    h = hashlib.sha256(b"loc:" + udid.encode()).digest()
    return round(51.6634 + (h[0] - 128) / 20000, 6), round(7.6322 + (h[1] - 128) / 20000, 6)


def _err(domain: str, code: int, text: str) -> dict[str, Any]:
    return {
        "ErrorDomain": domain,
        "ErrorCode": code,
        "LocalizedDescription": text,
        "USEnglishDescription": text,
    }


def _mac(seed: str, n: int) -> str:
    h = hashlib.sha256(f"{seed}:{n}".encode()).hexdigest()
    return ":".join(h[i : i + 2] for i in range(0, 12, 2))


def _uuid(seed: str) -> str:
    h = hashlib.sha256(seed.encode()).hexdigest().upper()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _profile_from_payload(payload: Any) -> dict[str, Any] | None:
    if not isinstance(payload, bytes):
        return None
    raw = payload
    if not raw.lstrip().startswith(b"<?xml") and not raw.startswith(b"bplist"):
        # CMS-signed: the XML plist is the attached content inside the DER.
        start, end = raw.find(b"<?xml"), raw.rfind(b"</plist>")
        if start < 0 or end < 0:
            return None
        raw = raw[start : end + len(b"</plist>")]
    try:
        data = plistlib.loads(raw)
    except Exception:  # noqa: BLE001 - a bad profile is the device's Error, not a crash
        return None
    return data if isinstance(data, dict) else None


# --- HTTP/1.1 over asyncio streams --------------------------------------------------------------


class _HTTPError(Exception):
    """The MDM server answered a device with a non-2xx status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status

    @property
    def server_away(self) -> bool:
        """The proxy could not reach the MDM server (restarting, down): an iPad just tries later."""
        return self.status in (502, 503, 504)


class EnrolmentFailed(Exception):
    """A simulated iPad could not enrol (refused, bad profile, SCEP failed); it tries again later."""


class _Conn:
    """One keep-alive HTTP/1.1 connection (TLS for https), reopened on failure."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None, server_hostname: str | None = None):
        self.host, self.port = host, port
        self.tls, self.server_hostname = tls, server_hostname
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None
        self.headers: dict[str, str] = {}

    def close(self) -> None:
        if self.w is not None:
            self.w.close()
        self.r = self.w = None

    async def aclose(self) -> None:
        """Close and wait until the transport is gone (a TLS close is asynchronous: a loop that ends
        right after close() leaves the socket to the garbage collector, a ResourceWarning)."""
        w = self.w
        self.close()
        if w is None:
            return
        try:
            await asyncio.wait_for(w.wait_closed(), 2)
        except (Exception, asyncio.CancelledError):  # a dead peer: drop the transport
            w.transport.abort()

    async def put(
        self, path: str, body: bytes, headers: dict[str, str], timeout: float = 15.0
    ) -> tuple[int, bytes]:
        return await self.request("PUT", path, body, headers, timeout)

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str], timeout: float = 15.0
    ) -> tuple[int, bytes]:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        host = self.server_hostname or self.host
        req = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
            f"{head}\r\n"
        ).encode() + body
        for attempt in (0, 1):
            try:
                if self.w is None:
                    kw: dict[str, Any] = {}
                    if self.tls is not None:
                        kw = {"ssl": self.tls, "server_hostname": self.server_hostname or self.host}
                    self.r, self.w = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port, **kw), timeout
                    )
                assert self.r is not None and self.w is not None
                self.w.write(req)
                await self.w.drain()
                return await asyncio.wait_for(self._response(), timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _response(self) -> tuple[int, bytes]:
        assert self.r is not None
        head = await self.r.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        self.headers = hdrs
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.r.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    await self.r.readuntil(b"\r\n")
                    break
                parts.append(await self.r.readexactly(size))
                await self.r.readexactly(2)
            body = b"".join(parts)
        else:
            body = await self.r.readexactly(int(hdrs.get("content-length", "0")))
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, body


def _conn_for(url: str, tls_ca_file: Path | None, server_hostname: str | None = None,
              resolve: dict[str, str] | None = None) -> tuple[_Conn, str]:
    """A connection for an http(s) URL and the URL's path. `resolve` maps a host name to the
    address to connect to (curl's --resolve): the name still goes out as TLS SNI and Host."""
    parsed = urllib.parse.urlsplit(url)
    tls = None
    if parsed.scheme == "https":
        tls = ssl.create_default_context(cafile=str(tls_ca_file) if tls_ca_file else None)
    default_port = 443 if parsed.scheme == "https" else 80
    host = parsed.hostname or "127.0.0.1"
    if resolve and host in resolve:
        server_hostname, host = server_hostname or host, resolve[host]
    return (
        _Conn(host, parsed.port or default_port, tls, server_hostname),
        parsed.path or "/",
    )


def resolved_url(url: str, resolve: dict[str, str] | None) -> str:
    """The URL with its host replaced by the address `resolve` maps it to (for tools that take no
    --resolve, such as scepclient: the server's certificate must name that address too)."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    if not resolve or host not in resolve:
        return url
    netloc = resolve[host] + (f":{parsed.port}" if parsed.port else "")
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


# --- Automated Device Enrolment, as an iPad in Setup Assistant does it ---------------------------


@dataclass(frozen=True)
class SCEPClientSetup:
    """How a simulated iPad asks a SCEP server for an identity: the real scepclient, a folder per
    device for its key and certificate, and the CA of an https SCEP URL's server certificate."""

    scepclient: Path
    workdir: Path
    tls_ca_file: Path | None = None


@dataclass(frozen=True)
class ADEEnrolment:
    """What a simulated iPad needs to enrol the real way.

    enrol_url        the DEP profile's URL (werne's enrolment endpoint behind the TLS proxy)
    tls_ca_file      the CA of the proxy's server certificate
    profile_ca_file  the CA the enrolment profile's signer chains to (the device checks the profile)
    device_ca_cert/device_ca_key  the CA that stands in for Apple's device CA: it signs the identity
                     each device signs its MachineInfo with (the lab's fake Apple, never a real one)
    workdir          per-device folders for scepclient (its key and the issued certificate)
    """

    enrol_url: str
    tls_ca_file: Path
    profile_ca_file: Path
    device_ca_cert: Path
    device_ca_key: Path
    workdir: Path
    scepclient: Path
    parallel: int = 4

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    def scep_setup(self) -> SCEPClientSetup:
        return SCEPClientSetup(self.scepclient, self.workdir, self.tls_ca_file)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ADEEnrolment:
        paths = {"tls_ca_file", "profile_ca_file", "device_ca_cert", "device_ca_key", "workdir", "scepclient"}
        values: dict[str, Any] = {k: Path(v) if k in paths else v for k, v in data.items()}
        return cls(**values)


def _machine_info_signer(ca_cert_file: Path, ca_key_file: Path, udid: str) -> tuple[Any, Any]:
    """A device's MachineInfo signing identity, issued by the stand-in for Apple's device CA."""
    ca = x509.load_pem_x509_certificate(ca_cert_file.read_bytes())
    ca_key = load_pem_private_key(ca_key_file.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, udid)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert, key


def signed_machine_info(d: SimDevice, cert: Any, key: Any) -> bytes:
    """The device's MachineInfo plist (Apple's other/machineinfo.yaml), CMS-signed, content attached."""
    info = plistlib.dumps({
        "UDID": d.udid,
        "SERIAL": d.serial,
        "PRODUCT": d.product_name,
        "VERSION": d.os[1],
        "OS_VERSION": d.os[0],
        "LANGUAGE": "de-DE",
        # iOS 17+: the enrolment may answer "update first" (ErrorCodeSoftwareUpdateRequired).
        "MDM_CAN_REQUEST_SOFTWARE_UPDATE": d.platform == "iOS" and _ddm_version_key(d.os[0])[0] >= 17,
        "SOFTWARE_UPDATE_DEVICE_ID": d.product_name,
    })
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(info)
        .add_signer(cert, key, hashes.SHA256())
        .sign(Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


async def _run(argv: list[str], stdin: bytes | None, cwd: Path | None = None,
               env: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(cwd) if cwd else None,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out, err


def _payload(profile: dict[str, Any], payload_type: str) -> dict[str, Any]:
    for p in profile.get("PayloadContent") or []:
        if isinstance(p, dict) and p.get("PayloadType") == payload_type:
            return p
    raise EnrolmentFailed(f"the enrolment profile has no {payload_type} payload")


def mdm_profile_of(command: dict[str, Any]) -> dict[str, Any] | None:
    """The profile of an InstallProfile command if it carries an MDM payload (an enrolment profile)."""
    body = command.get("Command") or {}
    if body.get("RequestType") != "InstallProfile":
        return None
    profile = _profile_from_payload(body.get("Payload"))
    if profile is None:
        return None
    types = {p.get("PayloadType") for p in profile.get("PayloadContent") or [] if isinstance(p, dict)}
    return profile if "com.apple.mdm" in types else None


def _enrolment_profile_facts(profile: dict[str, Any], mdm: dict[str, Any]) -> dict[str, str]:
    return {"identifier": str(profile.get("PayloadIdentifier") or ""), "uuid": str(profile.get("PayloadUUID") or ""),
            "server_url": str(mdm.get("ServerURL") or ""), "checkin_url": str(mdm.get("CheckInURL") or "")}


def _subject_value(subject: Any, oid: str) -> str | None:
    for rdn in subject or []:
        for pair in rdn:
            if len(pair) == 2 and pair[0] == oid:
                return str(pair[1])
    return None


# --- the fleet ---------------------------------------------------------------------------------


class Simulator:
    """Many simulated iPads on one asyncio loop in a background thread (or in the foreground).

    `url` is NanoMDM's device endpoint (with or without the path; default path /mdm); a device
    that enrolled by ADE talks to the ServerURL of its profile instead.
    """

    def __init__(
        self,
        url: str,
        devices: list[SimDevice],
        poll_interval: float = 2.0,
        path: str = "/mdm",
        tls_ca_file: Path | None = None,
        ade: ADEEnrolment | None = None,
        clock: Callable[[], datetime] | None = None,
        scep: SCEPClientSetup | None = None,
        resolve: dict[str, str] | None = None,
    ):
        parsed = urllib.parse.urlsplit(url)
        # Host name -> address, for a server whose name this machine cannot resolve (lab.server).
        self.resolve = dict(resolve or {})
        self.url = url if parsed.path not in ("", "/") else url.rstrip("/") + path
        self.devices = devices
        self.by_serial = {d.serial: d for d in devices}
        self.poll_interval = poll_interval
        self.tls_ca_file = tls_ca_file or (ade.tls_ca_file if ade else None)
        self.ade = ade
        # SCEP for enrolment and for identity renewal (the enrolment profile re-sent by InstallProfile).
        self.scep = scep or (ade.scep_setup() if ade else None)
        self.errors = 0
        self.answered_renewals = 0
        self.enrol_errors: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._wake: dict[str, asyncio.Event] = {}
        self._ready = threading.Event()
        self._server_url: dict[str, str] = {}
        self._limit: asyncio.Semaphore | None = None
        # The devices' wall clock (DDM: when an enforced update's deadline has come); tests set it.
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Simulator:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.run()), name="werne-ipad-sim", daemon=True
        )
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=15)

    def wake(self, serials: list[str] | None = None) -> None:
        """Make devices poll now, as an APNs push would (thread-safe)."""
        if self._loop is None:
            return
        for s in serials or list(self._wake):
            ev = self._wake.get(s)
            if ev is not None:
                self._loop.call_soon_threadsafe(ev.set)

    def wait_enrolled(self, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        want = [d for d in self.devices if not d.faults.offline]
        while time.monotonic() < end:
            if all(d.enrolled for d in want):
                return True
            time.sleep(0.05)
        return False

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wake = {d.serial: asyncio.Event() for d in self.devices}
        self._limit = asyncio.Semaphore(self.ade.parallel if self.ade else 4)
        self._ready.set()
        tasks = [asyncio.create_task(self._device_loop(d)) for d in self.devices if not d.faults.offline]
        await self._stop.wait()
        # Python 3.11's wait_for can swallow a cancellation that meets its timeout (the device loop
        # then goes on): cancel again until every device is done, and the loop checks _stop too.
        while pending := [t for t in tasks if not t.done()]:
            for t in pending:
                t.cancel()
            await asyncio.wait(pending, timeout=1.0)
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- enrolment (ADE, SCEP) ---------------------------------------------------------------

    async def enrol_ade(self, d: SimDevice) -> None:
        """MachineInfo -> signed profile (verified) -> SCEP identity; then the device can check in."""
        ade = self.ade
        assert ade is not None and self._limit is not None
        t0 = time.perf_counter()
        cert, key = _machine_info_signer(ade.device_ca_cert, ade.device_ca_key, d.udid)
        body = signed_machine_info(d, cert, key)
        conn, path = _conn_for(ade.enrol_url, ade.tls_ca_file, resolve=self.resolve)
        try:
            status, answer = await conn.request("POST", path, body, {
                "Content-Type": "application/pkcs7-signature", "User-Agent": "MDM/1.0 werne-simulator"})
            ctype = conn.headers.get("content-type", "")
        finally:
            conn.close()
        if status != 200:
            raise EnrolmentFailed(f"{d.serial}: the enrolment URL answered HTTP {status}")
        if not ctype.startswith("application/x-apple-aspen-config"):
            raise EnrolmentFailed(f"{d.serial}: the enrolment URL answered {ctype or 'no content type'}")
        t1 = time.perf_counter()
        async with self._limit:
            tv = time.perf_counter()
            rc, content, _err = await _run(
                ["openssl", "cms", "-verify", "-inform", "DER", "-binary", "-CAfile", str(ade.profile_ca_file),
                 "-purpose", "any"], answer)
            d.timings["profile_verify_run"] = time.perf_counter() - tv
        if rc != 0:
            raise EnrolmentFailed(f"{d.serial}: the enrolment profile's signature does not verify")
        profile = plistlib.loads(content)
        scep = _payload(profile, "com.apple.security.scep")["PayloadContent"]
        mdm = _payload(profile, "com.apple.mdm")
        if mdm.get("SignMessage") is not True:
            raise EnrolmentFailed(f"{d.serial}: the profile does not ask for signed messages")
        t2 = time.perf_counter()
        cert_pem, key_pem = await self._scep(d, scep)
        t3 = time.perf_counter()
        d.set_identity(cert_pem, key_pem)
        d.topic = str(mdm["Topic"])
        self._server_url[d.serial] = str(mdm["ServerURL"])
        d.enrolment_profile = _enrolment_profile_facts(profile, mdm)
        d.timings.update({"machineinfo": t1 - t0, "profile_verify": t2 - t1, "scep": t3 - t2})

    async def _scep(self, d: SimDevice, scep: dict[str, Any]) -> tuple[str, str]:
        """The identity from the real SCEP server, by the real scepclient.

        scepclient takes the challenge on its command line: acceptable only here, in the lab's
        simulated devices (a real iPad keeps it inside the profile). It trusts the proxy's
        certificate through SSL_CERT_FILE (Go's x509 reads it).
        """
        setup = self.scep
        if setup is None or self._limit is None:
            raise EnrolmentFailed(f"{d.serial}: this simulator has no SCEP client set up")
        work = setup.workdir / d.serial
        work.mkdir(parents=True, exist_ok=True)
        for old in ("key.pem", "identity.pem", "csr.pem"):
            (work / old).unlink(missing_ok=True)
        argv = [str(setup.scepclient), "-server-url", resolved_url(str(scep["URL"]), self.resolve),
                "-challenge", str(scep.get("Challenge", "")),
                "-private-key", str(work / "key.pem"), "-certificate", str(work / "identity.pem"),
                "-keySize", str(scep.get("Keysize", 2048)),
                "-cn", _subject_value(scep.get("Subject"), "CN") or d.udid,
                "-organization", _subject_value(scep.get("Subject"), "O") or "",
                "-ou", "AppleTV" if d.platform == "tvOS" else "iPad", "-country", "DE"]
        async with self._limit:
            ts = time.perf_counter()
            env = {"SSL_CERT_FILE": str(setup.tls_ca_file)} if setup.tls_ca_file else None
            rc, out, err = await _run(argv, None, cwd=work, env=env)
            d.timings["scep_run"] = time.perf_counter() - ts
        if rc != 0 or not (work / "identity.pem").is_file():
            text = (out + err).decode(errors="replace")
            reason = "refused (failInfo: badRequest)" if "badRequest" in text else f"scepclient exit {rc}"
            raise EnrolmentFailed(f"{d.serial}: SCEP enrolment {reason}")
        return (work / "identity.pem").read_text(), (work / "key.pem").read_text()

    # -- per device ------------------------------------------------------------------------

    def _headers(self, d: SimDevice, checkin: bool, body: bytes) -> dict[str, str]:
        return {
            "Mdm-Signature": d.mdm_signature(body),
            "Content-Type": CHECKIN_CT if checkin else "application/x-apple-aspen-mdm",
            "User-Agent": "MDM/1.0 werne-simulator",
        }

    async def _send(self, conn: _Conn, path: str, d: SimDevice, msg: dict[str, Any], checkin: bool) -> bytes:
        body = plistlib.dumps(msg)
        status, answer = await conn.put(path, body, self._headers(d, checkin, body))
        if status != 200:
            raise _HTTPError(f"{d.serial}: {msg.get('MessageType') or msg.get('Status')}: HTTP {status}", status)
        return answer

    async def _device_loop(self, d: SimDevice) -> None:
        wake = self._wake[d.serial]
        rnd = random.Random(d.udid)
        await asyncio.sleep(rnd.random() * min(self.poll_interval, 1.0))
        conn: _Conn | None = None
        path = "/mdm"
        try:
            while not (self._stop is not None and self._stop.is_set()):
                try:
                    if not d.cert_pem and self.ade is not None:
                        await self.enrol_ade(d)
                    if conn is None:
                        conn, path = _conn_for(self._server_url.get(d.serial, self.url), self.tls_ca_file,
                                               resolve=self.resolve)
                    if not d.enrolled:
                        t0 = time.perf_counter()
                        await self._send(conn, path, d, d.authenticate(), True)
                        await self._send(conn, path, d, d.token_update(), True)
                        d.timings["checkin"] = time.perf_counter() - t0
                        d.timings.setdefault("enrolled_at", time.time())
                        d.enrolled = True
                    if not await self._poll(conn, path, d):
                        return
                except _HTTPError as e:
                    # E.g. NanoMDM restarted with in-memory storage and forgot us: enrol again (a lab
                    # convenience). Not when the proxy could not reach NanoMDM (restarting): a real
                    # iPad just tries later, and an Authenticate would make NanoMDM clear its queue.
                    self.errors += 1
                    d.enrolled = d.enrolled and e.server_away
                    log.debug("device %s: %s", d.serial, e)
                except EnrolmentFailed as e:
                    self.errors += 1
                    self.enrol_errors[d.serial] = str(e)
                    log.warning("device %s: %s", d.serial, e)
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                    self.errors += 1
                    log.debug("device %s: %s", d.serial, e)
                try:
                    await asyncio.wait_for(wake.wait(), self.poll_interval * (0.8 + 0.4 * rnd.random()))
                except TimeoutError:
                    pass
                wake.clear()
        finally:
            if conn is not None:
                await conn.aclose()

    async def _poll(self, conn: _Conn, path: str, d: SimDevice) -> bool:
        """One Idle poll and the commands it yields; False when the device stops talking."""
        body = await self._send(conn, path, d, {"UDID": d.udid, "Status": "Idle"}, False)
        while body:
            command = plistlib.loads(body)
            profile = mdm_profile_of(command) if d.not_now_left == 0 else None
            if profile is not None:
                report = await self.reinstall_enrolment_profile(conn, path, d, command, profile)
                d.answered += report is not None
            else:
                report = d.execute(command)
            if report is None:
                return False  # e.g. an erase that never answers: the device goes silent
            body = await self._send(conn, path, d, report, False)
            if d.erased:
                return self._return_to_service(d)
            if report["Status"] == "NotNow":
                break
        await ddm_sync(self, conn, path, d)
        return True

    async def reinstall_enrolment_profile(self, conn: _Conn, path: str, d: SimDevice, command: dict[str, Any],
                                          profile: dict[str, Any]) -> dict[str, Any] | None:
        """InstallProfile of a profile with an MDM payload, as iOS handles it (issue 20): the update
        of the installed enrolment profile, the way an MDM server renews the device identity.

        iOS takes it only as an update of the installed MDM profile (same PayloadIdentifier) whose
        Topic, ServerURL and CheckInURL did not change (Apple's com.apple.mdm: "When updating the
        payload, the value of this key must not change"). It then makes a new key and asks the SCEP
        server of the profile's SCEP payload for a new identity, and checks in with it (Authenticate,
        TokenUpdate, signed by the new identity: that is how NanoMDM's certauth associates the new
        certificate with the enrollment); only then is the command acknowledged, signed by the new
        identity. Any failure leaves the old profile and the old identity in place (Error answer).
        """
        if d.faults.renewal_never_answers:
            d.hung = True
            return None
        base = {"UDID": d.udid, "CommandUUID": command.get("CommandUUID", "")}
        mdm = _payload(profile, "com.apple.mdm")
        installed = d.enrolment_profile
        current = {"identifier": installed.get("identifier") or profile.get("PayloadIdentifier"),
                   "server_url": installed.get("server_url") or self._server_url.get(d.serial, self.url),
                   "checkin_url": installed.get("checkin_url", "")}
        if profile.get("PayloadIdentifier") != current["identifier"]:
            return {**base, "Status": "Error", "ErrorChain": [_err(
                "MCProfileErrorDomain", 1017, "Only one MDM profile can be installed; this is not an update of it.")]}
        changed = [k for k, now in (("Topic", d.topic), ("ServerURL", current["server_url"]),
                                    ("CheckInURL", current["checkin_url"])) if str(mdm.get(k) or "") != now]
        if changed:
            return {**base, "Status": "Error", "ErrorChain": [_err(
                "MCMDMErrorDomain", 12011, f"The MDM payload’s {', '.join(changed)} cannot change in an update.")]}
        try:
            if d.faults.renewal_failures > 0:
                d.faults.renewal_failures -= 1
                raise EnrolmentFailed(f"{d.serial}: SCEP enrolment refused (simulated fault)")
            cert_pem, key_pem = await self._scep(d, _payload(profile, "com.apple.security.scep")["PayloadContent"])
        except EnrolmentFailed as e:
            log.info("device %s: identity renewal failed: %s", d.serial, e)
            return {**base, "Status": "Error", "ErrorChain": [
                _err("MCInstallationErrorDomain", 4001, "Profile Installation Failed"),
                _err("MCSCEPErrorDomain", 22013, "The SCEP server returned an invalid response.")]}
        old = (d.cert_pem, d.key_pem)
        d.set_identity(cert_pem, key_pem)
        try:
            await self._send(conn, path, d, d.authenticate(), True)
            await self._send(conn, path, d, d.token_update(), True)
        except _HTTPError as e:
            d.set_identity(*old)  # the server refused the new identity: iOS keeps the installed profile
            log.info("device %s: the server refused the renewed identity: %s", d.serial, e)
            return {**base, "Status": "Error", "ErrorChain": [_err(
                "MCMDMErrorDomain", 12084, "The MDM server refused the device’s new identity.")]}
        d.renewals += 1
        d.enrolment_profile = _enrolment_profile_facts(profile, mdm)
        self.answered_renewals += 1
        return {**base, "Status": "Acknowledged"}

    def _return_to_service(self, d: SimDevice) -> bool:
        """After an erase: with Return to Service the iPad enrols again by itself (True: keep
        polling), through ADE when the simulator has the ADE path; else it goes silent (False)."""
        if not d.return_to_service:
            return False
        d.reset_after_erase(keep_identity=self.ade is None)
        self._server_url.pop(d.serial, None)
        return True


# --- declarative device management (DDM) --------------------------------------------------------
#
# A device that got the DeclarativeManagement command synchronises over the check-in channel, as
# Apple's declarative protocol describes (declarative/protocol/*.yaml): DeclarativeManagement
# check-ins with Endpoint "tokens", "declaration-items" and "declaration/<type>/<identifier>", which
# NanoMDM forwards to KMFDDM; then one with Endpoint "status" and a status report (StatusItems per
# subscription, Errors, management.declarations with active/valid/reasons). It applies the passcode
# settings, the software-update enforcement and the status subscriptions (and keeps the
# software-update settings), and rejects any other declaration type with a reason. An enforced
# update moves the OS at TargetLocalDateTime on the Simulator's clock (in the device's time zone);
# a model that cannot run the target reports softwareupdate.failure-reason instead.

DDM_TIME_ZONE = "Europe/Berlin"
# The newest iPadOS major version each simulated model runs (models not listed run every version).
DDM_MODEL_MAX_MAJOR = {"iPad7,11": 18, "iPad7,12": 18, "iPad6,11": 17, "iPad6,12": 17}
DDM_UNDERSTOOD = {
    "com.apple.configuration.passcode.settings",
    "com.apple.configuration.softwareupdate.enforcement.specific",
    "com.apple.configuration.management.status-subscriptions",
    "com.apple.configuration.softwareupdate.settings",
}
DDM_ITEM_KEYS = {"Activations": "activation", "Configurations": "configuration", "Assets": "asset",
                 "Management": "management"}


@dataclass
class DDMState:
    """What one simulated iPad holds of declarative management."""

    sync_pending: bool = False
    declarations_token: str = ""
    # identifier -> (type, server token, payload) of every declaration fetched
    declarations: dict[str, tuple[str, str, dict[str, Any]]] = field(default_factory=dict)
    # identifier -> {"active", "valid", "server-token", "reasons"} as last reported
    declaration_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: set[str] = field(default_factory=set)
    reported: dict[str, Any] = field(default_factory=dict)  # status item -> value last sent
    os: tuple[str, str] | None = None  # after an enforced update
    failure: dict[str, Any] | None = None  # softwareupdate.failure-reason once an install failed
    reports_sent: int = 0
    fetches: int = 0
    # The com.apple.applicationaccess payloads of the installed profiles (the Restrictions command
    # answers with their effective sum); kept here, beside the other settings state.
    restriction_payloads: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def ddm_build_for(version: str) -> str:
    """A stable, Apple-shaped build number for a simulated iPadOS version (e.g. 18.3 -> 22D...)."""
    parts = [int(x) for x in version.split(".")[:3]] + [0, 0]
    return f"{parts[0] + 4}{chr(ord('A') + parts[1] % 26)}{60 + parts[2]:d}"


def _ddm_target(d: SimDevice) -> tuple[str, datetime] | None:
    """The active enforcement's version and deadline (aware, in the device's zone), if any."""
    for ident, (dtype, _tok, payload) in d.ddm.declarations.items():
        st = d.ddm.declaration_status.get(ident, {})
        if dtype.endswith("softwareupdate.enforcement.specific") and st.get("active"):
            when = datetime.fromisoformat(str(payload["TargetLocalDateTime"]))
            return str(payload["TargetOSVersion"]), when.replace(tzinfo=zoneinfo.ZoneInfo(DDM_TIME_ZONE))
    return None


def _ddm_version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in v.split("."))


def ddm_tick(d: SimDevice, now: datetime) -> None:
    """Install an enforced update whose deadline has come (or record why it cannot be)."""
    target = _ddm_target(d)
    if target is None or _ddm_version_key(d.os[0]) >= _ddm_version_key(target[0]) or now < target[1]:
        return
    version = target[0]
    limit = DDM_MODEL_MAX_MAJOR.get(d.product_name)
    if limit is not None and _ddm_version_key(version)[0] > limit:
        count = (d.ddm.failure or {}).get("count", 0)
        if count == 0:
            d.ddm.failure = {"count": 1, "reason": f"iPadOS {version} is not available for {d.product_name}",
                             "timestamp": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        return
    d.ddm.os = (version, ddm_build_for(version))
    d.ddm.failure = None


def ddm_status_items(d: SimDevice) -> dict[str, Any]:
    """The current value of every status item this device can report (flat names)."""
    target = _ddm_target(d)
    pending = None
    if target is not None and _ddm_version_key(d.os[0]) < _ddm_version_key(target[0]):
        pending = {"os-version": target[0], "build-version": ddm_build_for(target[0])}
    state = "failed" if d.ddm.failure else ("prepared" if pending else "none")
    policy = [p for t, _tok, p in d.ddm.declarations.values() if t.endswith("passcode.settings")]
    required = any(p.get("RequirePasscode") for p in policy)
    return {
        "device.model.identifier": d.product_name,
        "device.operating-system.version": d.os[0],
        "device.operating-system.build-version": d.os[1],
        "device.identifier.serial-number": d.serial,
        "passcode.is-present": d.passcode_present,
        "passcode.is-compliant": d.passcode_present or not required,
        "softwareupdate.install-state": state,
        "softwareupdate.pending-version": pending or {},
        "softwareupdate.failure-reason": d.ddm.failure or {"count": 0},
        "softwareupdate.install-reason": {"reason": ["declaration"] if pending else []},
    }


def _ddm_nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b.c": v} -> {"a": {"b": {"c": v}}}: Apple's StatusItems are nested by name parts."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def ddm_status_report(d: SimDevice, full: bool = False) -> dict[str, Any] | None:
    """The status report to send now (changed subscribed items, changed declaration status), or
    None when nothing changed."""
    values = ddm_status_items(d)
    items: dict[str, Any] = {}
    errors = []
    for name in sorted(d.ddm.subscriptions):
        if name not in values:
            if full or name not in d.ddm.reported:
                errors.append({"StatusItem": name, "Reasons": [
                    {"Code": "Error.StatusItemNotSupported", "Description": f"{name} is not supported"}]})
                d.ddm.reported[name] = None
            continue
        if full or d.ddm.reported.get(name, object()) != values[name]:
            items[name] = values[name]
            d.ddm.reported[name] = values[name]
    decl_changed = full or d.ddm.reported.get("_declarations") != d.ddm.declaration_status
    if not items and not errors and not decl_changed:
        return None
    nested = _ddm_nest(items)
    if decl_changed:
        d.ddm.reported["_declarations"] = json.loads(json.dumps(d.ddm.declaration_status))
        groups: dict[str, list[dict[str, Any]]] = {"activations": [], "configurations": [], "assets": [],
                                                   "management": []}
        for ident, st in sorted(d.ddm.declaration_status.items()):
            groups[st["_kind"] + "s" if st["_kind"] != "management" else "management"].append(
                {"identifier": ident, **{k: v for k, v in st.items() if not k.startswith("_")}})
        nested.setdefault("management", {})["declarations"] = groups
    report: dict[str, Any] = {"StatusItems": nested, "Errors": errors}
    if full:
        report["FullReport"] = True
    return report


def ddm_apply(d: SimDevice, items: dict[str, Any]) -> None:
    """Activate what the activations name, validate every configuration, take the subscriptions."""
    active_ids: set[str] = set()
    for dtype, _tok, payload in d.ddm.declarations.values():
        if dtype.startswith("com.apple.activation."):
            active_ids.update(payload.get("StandardConfigurations") or [])
    subs: set[str] = set()
    status: dict[str, dict[str, Any]] = {}
    for ident, (dtype, tok, payload) in d.ddm.declarations.items():
        kind = dtype.split(".")[2] if dtype.count(".") >= 2 else "configuration"
        st: dict[str, Any] = {"_kind": kind, "server-token": tok, "active": True, "valid": "valid"}
        if kind == "configuration":
            if dtype not in DDM_UNDERSTOOD:
                st.update(active=False, valid="invalid", reasons=[{
                    "code": "Error.UnknownDeclarationType",
                    "description": f"The declaration type {dtype} is not supported on this device.",
                    "details": {"Identifier": ident, "ServerToken": tok}}])
            elif ident not in active_ids:
                st.update(active=False)
            elif dtype.endswith("status-subscriptions"):
                subs.update(str(x.get("Name")) for x in payload.get("StatusItems") or [] if isinstance(x, dict))
        status[ident] = st
    d.ddm.declaration_status = status
    d.ddm.subscriptions = subs
    # A new enforcement starts a new install: the old failure no longer counts.
    if _ddm_target(d) is None:
        d.ddm.failure = None


def effective_restrictions(d: SimDevice) -> dict[str, Any]:
    """GlobalRestrictions as iOS reports it: the most restrictive value of every installed payload
    (allow*: false wins, force*: true wins; integers: the smallest)."""
    bools: dict[str, bool] = {}
    values: dict[str, int] = {}
    for payloads in d.ddm.restriction_payloads.values():
        for p in payloads:
            for key, value in p.items():
                if key.startswith("Payload"):
                    continue
                if isinstance(value, bool):
                    old = bools.get(key)
                    bools[key] = value if old is None else ((old and value) if key.startswith("allow")
                                                            else (old or value))
                elif isinstance(value, int):
                    values[key] = min(values.get(key, value), value)
    return {"restrictedBool": {k: {"value": v} for k, v in sorted(bools.items())},
            "restrictedValue": {k: {"value": v} for k, v in sorted(values.items())},
            "intersection": {}, "union": {}}


async def _ddm_checkin(sim: Simulator, conn: _Conn, path: str, d: SimDevice, endpoint: str,
                       data: bytes | None = None) -> tuple[int, bytes]:
    msg: dict[str, Any] = {"MessageType": "DeclarativeManagement", "UDID": d.udid, "Endpoint": endpoint}
    if data is not None:
        msg["Data"] = data
    body = plistlib.dumps(msg)
    d.ddm.fetches += 1
    return await conn.put(path, body, sim._headers(d, True, body))


async def ddm_sync(sim: Simulator, conn: _Conn, path: str, d: SimDevice) -> None:
    """After a poll: synchronise when the DeclarativeManagement command asked for it, let the clock
    act on an enforced update, and send a status report when anything changed."""
    state = d.ddm
    full = False
    if state.sync_pending:
        state.sync_pending = False
        status, body = await _ddm_checkin(sim, conn, path, d, "tokens")
        if status != 200:
            log.debug("device %s: DDM tokens: HTTP %s", d.serial, status)
            state.sync_pending = True
            return
        token = str((json.loads(body).get("SyncTokens") or {}).get("DeclarationsToken", ""))
        if token != state.declarations_token:
            status, body = await _ddm_checkin(sim, conn, path, d, "declaration-items")
            if status != 200:
                state.sync_pending = True
                return
            listed = json.loads(body).get("Declarations") or {}
            keep: dict[str, tuple[str, str, dict[str, Any]]] = {}
            for key, kind in DDM_ITEM_KEYS.items():
                for item in listed.get(key) or []:
                    ident, tok = str(item["Identifier"]), str(item["ServerToken"])
                    old = state.declarations.get(ident)
                    if old is not None and old[1] == tok:
                        keep[ident] = old
                        continue
                    st, raw = await _ddm_checkin(sim, conn, path, d, f"declaration/{kind}/{ident}")
                    if st != 200:
                        state.sync_pending = True
                        return
                    decl = json.loads(raw)
                    keep[ident] = (str(decl.get("Type", "")), tok, dict(decl.get("Payload") or {}))
            state.declarations = keep
            state.declarations_token = token
            ddm_apply(d, keep)
            full = state.reports_sent == 0
    if not state.declarations:
        return
    ddm_tick(d, sim.clock())
    report = ddm_status_report(d, full)
    if report is None:
        return
    status, _ = await _ddm_checkin(sim, conn, path, d, "status", json.dumps(report).encode())
    if status == 200:
        state.reports_sent += 1
    else:  # sent again with the next change: forget what this report carried
        state.reported.clear()
        log.debug("device %s: DDM status: HTTP %s", d.serial, status)


# --- devices.json (written by lab.mdm) and the process entry point ----------------------------


def load_devices(path: Path) -> list[SimDevice]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        SimDevice(
            serial=x["serial"],
            udid=x["udid"],
            cert_pem=x.get("cert_pem", ""),
            key_pem=x.get("key_pem", ""),
            name=x.get("name", ""),
            platform=x.get("platform", "iOS"),
            faults=DeviceFaults(**x.get("faults", {})),
        )
        for x in data["devices"]
    ]


def dump_devices(path: Path, devices: list[SimDevice]) -> None:
    rows = [
        {
            "serial": d.serial,
            "udid": d.udid,
            "cert_pem": d.cert_pem,
            "key_pem": d.key_pem,
            "name": d.name,
            "platform": d.platform,
            "faults": asdict(d.faults),
        }
        for d in devices
    ]
    path.write_text(json.dumps({"devices": rows}, indent=1), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.ipad_sim", description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--count", type=int, default=None, help="simulate only the first N devices")
    p.add_argument("--poll-interval", type=float, default=None)
    args = p.parse_args(argv)
    mdm_dir = args.state_dir / "mdm"
    lab = json.loads((mdm_dir / "lab.json").read_text(encoding="utf-8"))
    devices = load_devices(mdm_dir / "devices.json")[: args.count]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ade = ADEEnrolment.from_dict(lab["ade"]) if lab.get("ade") else None
    sim = Simulator(
        lab.get("server_url") or lab["nanomdm_url"],
        devices,
        args.poll_interval or float(lab.get("poll_interval", 2.0)),
        ade=ade,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(sim.run())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: sim._stop.set() if sim._stop else None)
        log.info("simulating %d iPads against %s", len(devices), sim.url)
        await task
        # For bench/enrol_full_path.py: seconds per enrolment step and device.
        (mdm_dir / "timings.json").write_text(json.dumps({d.serial: d.timings for d in devices}), encoding="utf-8")
        # For tests/ipad/test_replicas_lab.py: which commands each device ran, and how often.
        (mdm_dir / "executed.json").write_text(json.dumps({d.serial: d.executed for d in devices}), encoding="utf-8")

    asyncio.run(run())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
