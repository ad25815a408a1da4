"""The ADE enrolment endpoint under real uvicorn (`werne web serve`), set up through the go-live
path: push certificate installed in a real NanoMDM, SCEP CA and a real scepserver, then a
(fake) iPad POSTs its signed MachineInfo, gets the signed enrolment profile, and enrols for its
identity at the real SCEP server with what the profile says. Refusals change nothing and are
recorded."""

from __future__ import annotations

import plistlib
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from sqlalchemy import select

from core.config import write_endpoints
from enrolment.models import ADEEnrolmentAttempt
from ipad.payloads import mdm_schema as schema
from lab import scep as lab_scep
from tests.fakes.fake_apple import FakeAppleDevice, FakeAppleDeviceCA, FakeApplePushCA, shared_device_ca
from tests.fixtures.enrolment import EnrolSite, InThreadServer, WebServer, make_site, start_web
from tests.fixtures.enrolment_profile import signing_identity
from tests.fixtures.mdm import NanoMDMProcess
from tests.fixtures.site import write_secret
from tests.parts import require_file

pytestmark = pytest.mark.mdm

KNOWN_SERIAL = "ZDWK1DEGZD"  # in the demo inventory
ENROL_PATH = "/mdm/enroll"  # the path of enrolment/dep_profile.yaml's url


@dataclass
class GoLive:
    site: EnrolSite
    web: WebServer
    topic: str
    signer: Path
    scep_url: str


@pytest.fixture(scope="module")
def golive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoLive]:
    from lab.certs import make_ca

    require_file("scepserver", lab_scep.SCEPSERVER_BIN, hint="run scripts/setup.sh")
    root = tmp_path_factory.mktemp("golive")
    ca, _ = make_ca(root / "nanomdm")
    api_key = secrets.token_urlsafe(24)
    key_file = root / "nanomdm-api-key"
    write_secret(key_file, api_key)
    key_file.chmod(0o600)
    nano = NanoMDMProcess(root / "nanomdm", ca, None, api_key, None)
    site = make_site(root / "site")
    scep = lab_scep.up(site.state_dir, site.config())
    cert_file, signing_key = signing_identity(root)
    extra = (f'\n[mdm]\nurl = "{nano.url}"\napi_key_file = "{key_file}"\n'
             f'server_url = "https://mdm.werne.example/mdm"\n'
             f'signing_cert_file = "{cert_file}"\nsigning_key_file = "{signing_key}"\n'
             f'[scep]\nurl = "{scep.url}"\n')
    site = make_site(root / "site", extra=extra, dep_name=site.dep_name)
    # MachineInfo is verified against the fake Apple device CA the fake iPads' identities come from.
    (root / "device-ca.pem").write_bytes(shared_device_ca().pem())
    write_endpoints(site.state_dir, "dep", {"machineinfo_ca_file": root / "device-ca.pem"})
    r = site.cli("mdm", "push-cert", "csr", "--out", str(root / "push.csr"))
    assert r.returncode == 0, r.stderr
    apple = FakeApplePushCA()
    topic = apple.new_topic()
    (root / "push.pem").write_bytes(apple.sign((root / "push.csr").read_bytes(), topic))
    r = site.cli("mdm", "push-cert", "install", str(root / "push.pem"))
    assert r.returncode == 0, r.stderr
    web = start_web(site)
    yield GoLive(site, web, topic, cert_file, scep.url)
    web.stop()
    lab_scep.down(site.state_dir)
    nano.stop()


def post(url: str, body: bytes) -> requests.Response:
    return requests.post(url + ENROL_PATH, data=body, timeout=30,
                         headers={"Content-Type": "application/pkcs7-signature"})


def attempts(site: EnrolSite) -> list[ADEEnrolmentAttempt]:
    with site.db().session() as s:
        return list(s.scalars(select(ADEEnrolmentAttempt).order_by(ADEEnrolmentAttempt.id)))


def openssl_verified(body: bytes, signer: Path) -> bytes:
    r = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-binary", "-CAfile", str(signer),
                        "-purpose", "any"], input=body, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_known_ipad_gets_the_signed_profile_and_then_its_identity(golive: GoLive, tmp_path: Path) -> None:
    device = FakeAppleDevice(KNOWN_SERIAL)
    r = post(golive.web.url, device.sign(device.machine_info()))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-apple-aspen-config"
    content = openssl_verified(r.content, golive.signer)
    assert schema.validate_profile(content) == []
    profile = plistlib.loads(content)
    scep, mdm = profile["PayloadContent"]
    assert mdm["Topic"] == golive.topic and mdm["SignMessage"] is True
    assert scep["PayloadContent"]["URL"] == golive.scep_url
    last = attempts(golive.site)[-1]
    assert (last.serial, last.udid, last.outcome, last.status_code) == (KNOWN_SERIAL, device.udid, "served", 200)
    # The device then does what the profile says: SCEP with its challenge, at its URL.
    workdir = tmp_path / "ipad"
    workdir.mkdir()
    enrolled = subprocess.run(
        [str(lab_scep.SCEPCLIENT_BIN), "-server-url", scep["PayloadContent"]["URL"],
         "-challenge", scep["PayloadContent"]["Challenge"], "-private-key", str(workdir / "key.pem"),
         "-certificate", str(workdir / "identity.pem"), "-cn", device.udid],
        cwd=workdir, capture_output=True, text=True, timeout=60)
    assert enrolled.returncode == 0 and (workdir / "identity.pem").is_file(), enrolled.stderr[-400:]
    identity = x509.load_pem_x509_certificate((workdir / "identity.pem").read_bytes())
    depot_ca = x509.load_pem_x509_certificate(
        (golive.site.state_dir / "scep" / "depot" / "ca.pem").read_bytes())
    assert identity.issuer == depot_ca.subject


def test_unknown_serial_is_refused_and_recorded(golive: GoLive) -> None:
    device = FakeAppleDevice("FOREIGN0001")
    r = post(golive.web.url, device.sign(device.machine_info()))
    assert r.status_code == 403
    assert b"<plist" not in r.content and "aspen" not in r.headers["content-type"]
    last = attempts(golive.site)[-1]
    assert (last.serial, last.outcome, last.status_code) == ("FOREIGN0001", "refused", 403)
    assert last.reason == "serial FOREIGN0001 is not in the inventory"


@pytest.mark.parametrize(
    "case, reason",
    [
        ("unsigned plist", "body is not CMS-signed (expected a signed MachineInfo plist)"),
        ("signed, not a plist", "signed content is not a plist"),
        ("tampered", "MachineInfo signature does not verify"),
        ("no serial", "MachineInfo lacks SERIAL"),
        ("empty", "empty body: expected a CMS-signed MachineInfo plist"),
    ],
)
def test_bad_bodies_are_400_and_recorded(golive: GoLive, case: str, reason: str) -> None:
    device = FakeAppleDevice(KNOWN_SERIAL)
    info = device.machine_info()
    body = {
        "unsigned plist": info,
        "signed, not a plist": device.sign(b"SERIAL=" + KNOWN_SERIAL.encode()),
        "no serial": device.sign(plistlib.dumps({"UDID": device.udid})),
        "empty": b"",
    }.get(case)
    if case == "tampered":
        signed = bytearray(device.sign(info))
        at = bytes(signed).index(KNOWN_SERIAL.encode())
        signed[at] ^= 0x01  # one bit of the signed serial
        body = bytes(signed)
    before = len(attempts(golive.site))
    r = post(golive.web.url, body or b"")
    assert r.status_code == 400
    assert b"<plist" not in r.content
    rows = attempts(golive.site)
    assert len(rows) == before + 1
    assert (rows[-1].outcome, rows[-1].status_code, rows[-1].reason) == ("refused", 400, reason)


def test_oversized_body_is_413(golive: GoLive) -> None:
    r = post(golive.web.url, b"\x30" * (70 * 1024))
    assert r.status_code == 413
    assert attempts(golive.site)[-1].status_code == 413


def test_signer_must_chain_to_the_configured_device_ca(golive: GoLive, tmp_path: Path) -> None:
    from enrolment.web.app import create_app

    other_ca = FakeAppleDeviceCA("Another Fake Apple iPhone Device CA")
    trusted = FakeAppleDevice(KNOWN_SERIAL, ca=other_ca)
    ca_file = tmp_path / "apple-device-ca.pem"
    ca_file.write_bytes(trusted.ca_pem())
    cfg = golive.site.config()
    cfg.dep.machineinfo_ca_file = ca_file
    with InThreadServer(create_app(cfg)) as srv:
        ok = post(srv.url, trusted.sign(trusted.machine_info()))
        assert ok.status_code == 200 and ok.headers["content-type"] == "application/x-apple-aspen-config"
        stranger = FakeAppleDevice(KNOWN_SERIAL)  # the same serial, signed under another CA
        r = post(srv.url, stranger.sign(stranger.machine_info()))
        assert r.status_code == 403 and r.content == b"device not verified\n"
    assert attempts(golive.site)[-1].reason == (
        "MachineInfo signer is not issued by Apple's device CA (apple-device-ca.pem): its issuer is "
        "O=Fake Apple Inc.,CN=Fake Apple iPhone Device CA")


def test_not_set_up_yet_is_503(tmp_path: Path) -> None:
    from enrolment.web.app import create_app

    site = make_site(tmp_path / "site")
    cfg = site.config()
    cfg.dep.machineinfo_ca_file = tmp_path / "device-ca.pem"
    cfg.dep.machineinfo_ca_file.write_bytes(shared_device_ca().pem())
    with InThreadServer(create_app(cfg)) as srv:
        device = FakeAppleDevice(KNOWN_SERIAL)
        r = post(srv.url, device.sign(device.machine_info()))
        assert r.status_code == 503
    assert attempts(site)[-1].reason == ("profile not available: enrolment profile: it must be signed; "
                                         "set mdm.signing_cert_file and mdm.signing_key_file")
