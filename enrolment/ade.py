"""Automated Device Enrolment: the endpoint the DEP profile's `url` names.

In Setup Assistant the iPad POSTs its MachineInfo (a plist with SERIAL, UDID, PRODUCT, VERSION,
OS_VERSION, ...; Apple's other/machineinfo.yaml), CMS-signed by the device, and gets the signed
enrolment profile back (application/x-apple-aspen-config). werne checks the signature with
`openssl cms -verify` (cryptography cannot verify CMS yet), against dep.machineinfo_ca_file when set,
and answers only serials in the inventory: no foreign device gets the city's profile. Every request,
served or refused, is recorded in enrol_ade_attempts.

    EnrolmentError
    └── MachineInfoError   the body is not a CMS-signed MachineInfo plist (also InputError; HTTP 400)
"""

from __future__ import annotations

import json
import plistlib
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from core.config import Config
from core.db import Database
from core.errors import InputError, WerneError
from core.inventory import Inventory
from enrolment.errors import EnrolmentError
from enrolment.models import ADEEnrolmentAttempt

PROFILE_CONTENT_TYPE = "application/x-apple-aspen-config"
DEFAULT_ENROL_PATH = "/mdm/enroll"
# A MachineInfo is well under 16 KB with its signature and certificate chain.
MAX_BODY = 64 * 1024
OPENSSL_TIMEOUT_S = 10


class MachineInfoError(EnrolmentError, InputError):
    """The request body is not a CMS-signed MachineInfo plist."""


@dataclass(frozen=True)
class MachineInfo:
    """What the device says about itself (the keys werne uses)."""

    serial: str
    udid: str
    product: str
    version: str
    os_version: str
    # iOS 17+: the device can be told to update before it enrols (ErrorCodeSoftwareUpdateRequired).
    can_request_update: bool = False
    update_device_id: str = ""


@dataclass(frozen=True)
class ADEAnswer:
    """The HTTP answer for one enrolment request."""

    status: int
    body: bytes
    content_type: str
    reason: str = ""


def enrol_path(config: Config) -> str:
    """The URL path the enrolment endpoint is served at: that of dep.enrol_url, else of the DEP
    profile file's `url`."""
    url = config.dep.enrol_url
    if not url:
        from enrolment.dep import load_profile_template

        try:
            url = str(load_profile_template(config.dep.profile_file).get("url") or "")
        except WerneError:
            url = ""
    return urlparse(url).path or DEFAULT_ENROL_PATH


def _openssl_verify(body: bytes, ca_file: Path | None) -> bytes:
    argv = ["openssl", "cms", "-verify", "-inform", "DER", "-binary"]
    argv += ["-CAfile", str(ca_file), "-purpose", "any"] if ca_file else ["-noverify"]
    try:
        r = subprocess.run(argv, input=body, capture_output=True, timeout=OPENSSL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise WerneError(f"openssl cms -verify could not run: {e.__class__.__name__}") from None
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace")
        if "certificate verify error" in err or "unable to get local issuer" in err:
            raise MachineInfoError("MachineInfo signer is not issued by a CA in dep.machineinfo_ca_file")
        raise MachineInfoError("MachineInfo signature does not verify")
    return r.stdout


def read_machine_info(body: bytes, ca_file: Path | None = None) -> MachineInfo:
    """The verified MachineInfo; raises MachineInfoError with a one-line reason."""
    from cryptography.hazmat.primitives.serialization import pkcs7

    if not body:
        raise MachineInfoError("empty body: expected a CMS-signed MachineInfo plist")
    try:
        pkcs7.load_der_pkcs7_certificates(body)
    except ValueError:
        raise MachineInfoError("body is not CMS-signed (expected a signed MachineInfo plist)") from None
    content = _openssl_verify(body, ca_file)
    try:
        info = plistlib.loads(content)
    except (plistlib.InvalidFileException, ValueError, OverflowError):
        raise MachineInfoError("signed content is not a plist") from None
    if not isinstance(info, dict):
        raise MachineInfoError("MachineInfo is not a plist dictionary")
    missing = [k for k in ("SERIAL", "UDID") if not isinstance(info.get(k), str) or not info.get(k)]
    if missing:
        raise MachineInfoError(f"MachineInfo lacks {', '.join(missing)}")
    return MachineInfo(
        serial=str(info["SERIAL"])[:64],
        udid=str(info["UDID"])[:64],
        product=str(info.get("PRODUCT") or "")[:64],
        version=str(info.get("VERSION") or "")[:32],
        os_version=str(info.get("OS_VERSION") or "")[:32],
        can_request_update=info.get("MDM_CAN_REQUEST_SOFTWARE_UPDATE") is True,
        update_device_id=str(info.get("SOFTWARE_UPDATE_DEVICE_ID") or "")[:64],
    )


def minimum_os_answer(config: Config, info: MachineInfo) -> ADEAnswer | None:
    """None when the device may enrol; otherwise the answer for an iPad below dep.minimum_os_version.

    iOS 17+ (MDM_CAN_REQUEST_SOFTWARE_UPDATE) gets Apple's ErrorCodeSoftwareUpdateRequired: HTTP 403
    with JSON {"code": "com.apple.softwareupdate.required", "details": {"OSVersion", "BuildVersion"}},
    naming the newest version Apple's catalogue offers its model (SOFTWARE_UPDATE_DEVICE_ID, else
    PRODUCT); Setup Assistant installs it and asks again. An older device, or a model the catalogue
    offers nothing new enough for, is refused (it cannot join up to date).
    """
    from ipad.catalogue import CatalogueError, load_catalogue, version_key

    minimum = config.dep.minimum_os_version
    if not minimum or (info.os_version and version_key(info.os_version) >= version_key(minimum)):
        return None
    have = info.os_version or "an unknown version"
    if not info.can_request_update:
        return ADEAnswer(403, b"software update required\n", "text/plain",
                         f"iPadOS {have} is below the minimum {minimum} and the device cannot be asked to "
                         "update during enrolment (before iOS 17): update it by hand first")
    try:
        catalogue = load_catalogue(config)
    except CatalogueError as e:
        return ADEAnswer(503, b"enrolment not available\n", "text/plain", f"minimum OS: {e}")
    model = info.update_device_id or info.product
    day = datetime.now(UTC).date()
    offered = [v for v in catalogue.versions_for(model, day) if version_key(v) >= version_key(minimum)]
    if not offered:
        return ADEAnswer(403, b"software update required\n", "text/plain",
                         f"iPadOS {have} is below the minimum {minimum}, and Apple offers {model or 'this model'} "
                         "no version that meets it")
    version = offered[-1]
    build = next(r.build for r in catalogue.offered(day) if r.version == version and model in r.devices)
    body = json.dumps({"code": "com.apple.softwareupdate.required",
                       "details": {"OSVersion": version, "BuildVersion": build}}).encode()
    return ADEAnswer(403, body, "application/json",
                     f"iPadOS {have} is below the minimum {minimum}: asked to update to {version} ({build})")


def _record(db: Database, address: str, info: MachineInfo | None, answer: ADEAnswer) -> None:
    with db.session() as s:
        s.add(ADEEnrolmentAttempt(
            address=address[:64],
            serial=info.serial if info else "",
            udid=info.udid if info else "",
            product=info.product if info else "",
            os_version=info.os_version[:32] if info else "",
            outcome="served" if answer.status == 200 else "refused",
            status_code=answer.status,
            reason=answer.reason,
        ))


def answer_enrolment(config: Config, db: Database, inventory: Inventory, body: bytes, address: str) -> ADEAnswer:
    """Check one device's MachineInfo and answer with the signed enrolment profile, or refuse.

    400 not signed / not a plist / signature bad, 403 serial not in the inventory, 503 when the
    profile cannot be built (no push certificate, challenge or signing identity yet). Recorded.
    """
    from ipad.enrolment_profile import signed_enrolment_profile

    info: MachineInfo | None = None
    try:
        info = read_machine_info(body, config.dep.machineinfo_ca_file)
        if info.serial not in inventory.ipads:
            answer = ADEAnswer(403, b"unknown device\n", "text/plain", f"serial {info.serial} is not in the inventory")
        else:
            answer = minimum_os_answer(config, info) or ADEAnswer(
                200, signed_enrolment_profile(config, db, device=info.serial), PROFILE_CONTENT_TYPE)
    except MachineInfoError as e:
        answer = ADEAnswer(400, b"bad request\n", "text/plain", str(e))
    except WerneError as e:
        # Our side is not ready (or openssl is missing): the device retries later.
        answer = ADEAnswer(503, b"enrolment not available\n", "text/plain", f"profile not available: {e}")
    _record(db, address, info, answer)
    return answer


def refuse_too_large(db: Database, address: str) -> ADEAnswer:
    answer = ADEAnswer(413, b"too large\n", "text/plain", f"body larger than {MAX_BODY} bytes")
    _record(db, address, None, answer)
    return answer
