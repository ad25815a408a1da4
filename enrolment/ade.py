"""Automated Device Enrolment: the endpoint the DEP profile's `url` names.

In Setup Assistant the iPad POSTs its MachineInfo (a plist with SERIAL, UDID, PRODUCT, VERSION,
OS_VERSION, ...; Apple's other/machineinfo.yaml), CMS-signed with its device identity, and gets the
signed enrolment profile back (application/x-apple-aspen-config). werne checks the signature with
`openssl cms -verify` (cryptography cannot verify CMS yet) and that the signer's certificate is
issued by Apple's device CA (dep.machineinfo_ca_file, by default the "Apple iPhone Device CA"
shipped in data/apple/), and answers only serials in the inventory (ipads.csv, and the Apple TVs of
appletvs.csv, which enrol through the same endpoint with their tvOS DEP profile): no foreign device
gets the city's profile. Every request, served or refused, is recorded in enrol_ade_attempts; a
device outside the CA is also written to the audit trail.

Apple's device CA expired in 2014 and signs with SHA-1, yet devices still present identities it
issued (Apple: "the certificate chain should validate against the Apple Root CA"): so the issuer's
signature is checked by hand, without validity dates, as MicroMDM's pkg/crypto/apple.go does.

    EnrolmentError
    └── MachineInfoError     the body is not a CMS-signed MachineInfo plist (also InputError; HTTP 400)
        └── UnverifiedDevice the signer is not issued by a CA in dep.machineinfo_ca_file (HTTP 403)
"""

from __future__ import annotations

import json
import plistlib
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core import audit
from core.config import REPO_ROOT, Config
from core.db import Database
from core.errors import InputError, WerneError
from core.inventory import Inventory
from core.text import one_line
from enrolment.errors import EnrolmentError
from enrolment.models import ADEEnrolmentAttempt
from ipad.ddm.os_catalogue import load_catalogue, version_key
from ipad.errors import CatalogueError

PROFILE_CONTENT_TYPE = "application/x-apple-aspen-config"
DEFAULT_ENROL_PATH = "/mdm/enroll"
# A MachineInfo is well under 16 KB with its signature and certificate chain.
MAX_BODY = 64 * 1024
OPENSSL_TIMEOUT_S = 10
# Requests per client address (core.ratelimit): a school's iPads enrol from behind one NAT address,
# 30 at once with a retry or two each; beyond that the endpoint answers 429 without a row in
# enrol_ade_attempts, an openssl run or a log line (one per address and minute says it is limited).
RATE_BURST = 60
RATE_PER_SECOND = 0.5
RATE_MAX_CLIENTS = 10_000
# Apple's iPhone Device CA, the issuer of the identities devices sign MachineInfo with.
APPLE_DEVICE_CA = REPO_ROOT / "data" / "apple" / "apple-iphone-device-ca.pem"


class MachineInfoError(EnrolmentError, InputError):
    """The request body is not a CMS-signed MachineInfo plist."""


class UnverifiedDevice(MachineInfoError):
    """The MachineInfo is signed, but the signer is not issued by a CA in dep.machineinfo_ca_file."""


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
        # Lazy, as the two below: `werne deploy write` and the lab's nginx import this module for
        # enrol_path alone; NanoDEP's client (requests) and profile signing (cryptography, ipad's
        # profile builders) would add some 270 modules they never use.
        from enrolment.dep import load_profile_template

        try:
            url = str(load_profile_template(config.dep.profile_file).get("url") or "")
        except WerneError:
            url = ""
    return urlparse(url).path or DEFAULT_ENROL_PATH


def device_ca_file(config: Config) -> Path:
    """The PEM file of the CAs whose devices may enrol: dep.machineinfo_ca_file, else Apple's."""
    return config.dep.machineinfo_ca_file or APPLE_DEVICE_CA


def load_device_cas(path: Path) -> list[Any]:
    """The CA certificates in `path`; WerneError (our side is not ready: 503) when there are none."""
    from cryptography import x509  # lazy: see enrol_path

    try:
        cas = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as e:
        raise WerneError(f"dep.machineinfo_ca_file {path}: cannot read: {e.__class__.__name__}") from None
    except ValueError:
        raise WerneError(f"dep.machineinfo_ca_file {path}: no PEM certificate in it") from None
    return cas


def _issued_by(cert: Any, ca: Any) -> bool:
    """Did `ca`'s key sign `cert`? Names and signature only: Apple's device CA is long expired and
    signs with SHA-1, which cryptography's verify_directly_issued_by refuses."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    if cert.issuer != ca.subject or cert.signature_hash_algorithm is None:
        return False
    key = ca.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _openssl_verify(body: bytes) -> tuple[bytes, bytes]:
    """The signed content and the signer's certificate (PEM); the signature over the content is
    checked against the certificate the CMS carries, its issuer is not (see verify_signer)."""
    argv = ["openssl", "cms", "-verify", "-inform", "DER", "-binary", "-noverify"]
    with tempfile.TemporaryDirectory(prefix="werne-ade-") as tmp:
        signer = Path(tmp) / "signer.pem"
        try:
            r = subprocess.run([*argv, "-signer", str(signer)], input=body, capture_output=True,
                               timeout=OPENSSL_TIMEOUT_S, check=False, cwd=tmp)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise WerneError(f"openssl cms -verify could not run: {e.__class__.__name__}") from None
        if r.returncode != 0:
            raise MachineInfoError("MachineInfo signature does not verify")
        return r.stdout, signer.read_bytes() if signer.is_file() else b""


def verify_signer(signer_pem: bytes, ca_file: Path) -> None:
    """Raise UnverifiedDevice unless the MachineInfo's signer is issued by a CA in ca_file."""
    from cryptography import x509  # lazy: see enrol_path

    try:
        signer = x509.load_pem_x509_certificates(signer_pem)[0]
    except (ValueError, IndexError):
        raise MachineInfoError("MachineInfo carries no signer certificate") from None
    cas = load_device_cas(ca_file)
    if not any(_issued_by(signer, ca) for ca in cas):
        # The issuer name is the sender's text: cut and escaped (it goes into the log and the audit).
        raise UnverifiedDevice(f"MachineInfo signer is not issued by Apple's device CA ({ca_file.name}): its "
                               f"issuer is {one_line(signer.issuer.rfc4514_string(), 120)}")


def read_machine_info(body: bytes, ca_file: Path | None) -> MachineInfo:
    """The verified MachineInfo; raises MachineInfoError (UnverifiedDevice) with a one-line reason.
    ca_file None: the signer's issuer is not checked (dep.insecure_skip_machineinfo_verification)."""
    from cryptography.hazmat.primitives.serialization import pkcs7  # lazy: see enrol_path

    if not body:
        raise MachineInfoError("empty body: expected a CMS-signed MachineInfo plist")
    try:
        pkcs7.load_der_pkcs7_certificates(body)
    except ValueError:
        raise MachineInfoError("body is not CMS-signed (expected a signed MachineInfo plist)") from None
    content, signer = _openssl_verify(body)
    if ca_file is not None:
        verify_signer(signer, ca_file)
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

    400 not signed / not a plist / signature bad, 403 signer not issued by the device CA or serial
    not in the inventory, 503 when the profile cannot be built (no push certificate, challenge or
    signing identity yet) or the device CA file cannot be read. Recorded; a device outside the CA
    also in the audit trail.
    """
    from ipad.payloads.enrolment_profile import signed_enrolment_profile  # lazy: see enrol_path

    info: MachineInfo | None = None
    ca_file = None if config.dep.insecure_skip_machineinfo_verification else device_ca_file(config)
    try:
        info = read_machine_info(body, ca_file)
        if info.serial not in inventory.ipads and info.serial not in inventory.appletvs:
            answer = ADEAnswer(403, b"unknown device\n", "text/plain", f"serial {info.serial} is not in the inventory")
        elif info.serial in inventory.appletvs:
            # dep.minimum_os_version is an iPadOS version; Apple TVs are held to compliance.min_tvos
            # by the nightly check and updated by `werne appletv update`.
            answer = ADEAnswer(200, signed_enrolment_profile(config, db, device=info.serial), PROFILE_CONTENT_TYPE)
        else:
            answer = minimum_os_answer(config, info) or ADEAnswer(
                200, signed_enrolment_profile(config, db, device=info.serial), PROFILE_CONTENT_TYPE)
    except UnverifiedDevice as e:
        answer = ADEAnswer(403, b"device not verified\n", "text/plain", str(e))
        audit.record(db, "enrol.ade.unverified-device", one_line(address, 64), {"reason": str(e)}, actor="enrolment")
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
