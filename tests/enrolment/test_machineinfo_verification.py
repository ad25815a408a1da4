"""Enrolment verified by default: a MachineInfo is served only if its signer was issued by Apple's
device CA (shipped, the default) or the configured one; anything else is 403 and recorded (attempt,
audit, log, escaped); only the loudly named lab setting switches the check off, and `werne mdm
check` fails while it is on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from core.audit import list_events
from core.config import load_config
from core.db import Database
from core.inventory import load_inventory
from enrolment.ade import (
    APPLE_DEVICE_CA,
    MachineInfoError,
    UnverifiedDevice,
    answer_enrolment,
    device_ca_file,
    read_machine_info,
)
from enrolment.models import ADEEnrolmentAttempt
from tests.fakes.fake_apple import FakeAppleDevice, FakeAppleDeviceCA, apple_shaped_device, shared_device_ca
from tests.fixtures.site import write_config
from tests.parts import require_tool

REPO = Path(__file__).resolve().parents[2]
SERIAL = "ZDWK1DEGZD"  # in the demo inventory


@pytest.fixture
def site(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A site with the default device CA (Apple's) and its database."""
    require_tool("openssl")
    cfg = load_config(write_config(tmp_path / "werne.toml", REPO / "inventories" / "demo", tmp_path / "state"))
    db = Database(cfg.database_url)
    yield cfg, db, load_inventory(cfg.inventory_dir)
    db.dispose()


def test_the_shipped_ca_is_apples_iphone_device_ca() -> None:
    cert = x509.load_pem_x509_certificate(APPLE_DEVICE_CA.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=Apple iPhone Device CA,OU=Apple iPhone,O=Apple Inc.,C=US"
    assert cert.issuer.rfc4514_string().startswith("CN=Apple iPhone Certification Authority,")
    der = cert.public_bytes(serialization.Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == "76f27d00e1333bc88de0e2916c38c9a7f2b75774c25a794c092a80e3c4c66cce"
    source = (APPLE_DEVICE_CA.parent / "SOURCE.md").read_text(encoding="utf-8")
    assert "76:F2:7D:00" in source and "profile-service" in source and "pkg/crypto/apple.go" in source


def test_by_default_machineinfo_must_come_from_apples_device_ca(site) -> None:  # type: ignore[no-untyped-def]
    cfg, db, inventory = site
    assert cfg.dep.machineinfo_ca_file is None and device_ca_file(cfg) == APPLE_DEVICE_CA
    assert cfg.dep.insecure_skip_machineinfo_verification is False
    device = FakeAppleDevice(SERIAL)  # signed under a CA that is not Apple's: anyone could make one
    answer = answer_enrolment(cfg, db, inventory, device.sign(device.machine_info()), "203.0.113.9")
    assert (answer.status, answer.body) == (403, b"device not verified\n")
    assert b"<plist" not in answer.body
    reason = ("MachineInfo signer is not issued by Apple's device CA (apple-iphone-device-ca.pem): its issuer is "
              "O=Fake Apple Inc.,CN=Fake Apple iPhone Device CA")
    assert answer.reason == reason
    with db.session() as s:
        rows = list(s.scalars(select(ADEEnrolmentAttempt)))
    assert [(r.serial, r.outcome, r.status_code, r.reason) for r in rows] == [("", "refused", 403, reason)]
    events = [e for e in list_events(db) if e.action == "enrol.ade.unverified-device"]
    assert [(e.target, e.detail["reason"]) for e in events] == [("203.0.113.9", reason)]


def test_the_configured_ca_decides_and_a_stranger_is_refused(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, db, inventory = site
    ca_file = tmp_path / "device-ca.pem"
    ca_file.write_bytes(shared_device_ca().pem())
    trusted = FakeAppleDevice(SERIAL)
    assert read_machine_info(trusted.sign(trusted.machine_info()), ca_file).serial == SERIAL
    stranger = FakeAppleDevice(SERIAL, ca=FakeAppleDeviceCA())  # the same serial, another CA
    with pytest.raises(UnverifiedDevice):
        read_machine_info(stranger.sign(stranger.machine_info()), ca_file)
    # A CA of the same name but another key is no better.
    twin = FakeAppleDevice(SERIAL, ca=FakeAppleDeviceCA("Fake Apple iPhone Device CA"))
    assert twin.cert.issuer == trusted.cert.issuer
    with pytest.raises(UnverifiedDevice):
        read_machine_info(twin.sign(twin.machine_info()), ca_file)
    cfg.dep.machineinfo_ca_file = ca_file
    assert answer_enrolment(cfg, db, inventory, stranger.sign(stranger.machine_info()), "10.0.0.1").status == 403


def test_a_real_ipads_shape_is_accepted_expired_ca_and_sha1(tmp_path: Path) -> None:
    require_tool("openssl")
    device, ca_pem = apple_shaped_device(SERIAL, tmp_path / "apple")
    assert device.cert.signature_hash_algorithm is not None and device.cert.signature_hash_algorithm.name == "sha1"
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca_pem)
    assert x509.load_pem_x509_certificate(ca_pem).not_valid_after_utc.year == 2014
    assert read_machine_info(device.sign(device.machine_info()), ca_file).serial == SERIAL
    # The same shape under Apple's real CA (the default) is refused: it is not Apple's key.
    with pytest.raises(UnverifiedDevice):
        read_machine_info(device.sign(device.machine_info()), APPLE_DEVICE_CA)


def test_what_the_device_sent_is_escaped_in_the_reason(site) -> None:  # type: ignore[no-untyped-def]
    cfg, db, inventory = site
    evil = FakeAppleDevice(SERIAL, ca=FakeAppleDeviceCA("\x1b]0;owned\x07 CA"))
    answer = answer_enrolment(cfg, db, inventory, evil.sign(evil.machine_info()), "10.0.0.2")
    assert answer.status == 403
    assert "\x1b" not in answer.reason and "\x07" not in answer.reason
    assert "CN=\\x1b]0\\;owned\\x07 CA" in answer.reason  # visible escapes (and RFC 4514's \;)


def test_tampered_content_is_still_400(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ca_file = tmp_path / "device-ca.pem"
    ca_file.write_bytes(shared_device_ca().pem())
    device = FakeAppleDevice(SERIAL)
    signed = bytearray(device.sign(device.machine_info()))
    at = bytes(signed).index(SERIAL.encode())
    signed[at] ^= 0x01
    with pytest.raises(MachineInfoError) as e:
        read_machine_info(bytes(signed), ca_file)
    assert not isinstance(e.value, UnverifiedDevice)


def test_an_unreadable_ca_file_is_503_not_served(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, db, inventory = site
    cfg.dep.machineinfo_ca_file = tmp_path / "missing.pem"
    device = FakeAppleDevice(SERIAL)
    answer = answer_enrolment(cfg, db, inventory, device.sign(device.machine_info()), "10.0.0.3")
    assert answer.status == 503
    assert answer.reason == f"profile not available: dep.machineinfo_ca_file {tmp_path / 'missing.pem'}: cannot " \
                            "read: FileNotFoundError"


def test_only_the_loud_lab_setting_switches_the_check_off(site) -> None:  # type: ignore[no-untyped-def]
    from enrolment.live_check import check_machineinfo

    cfg, db, inventory = site
    ok = check_machineinfo(cfg)
    assert ok.ok and ok.name == "machineinfo" and "Apple iPhone Device CA" in ok.detail
    device = FakeAppleDevice(SERIAL)
    cfg.dep.insecure_skip_machineinfo_verification = True
    # The signer's issuer is no longer checked: the request gets past it (to the profile: none here).
    answer = answer_enrolment(cfg, db, inventory, device.sign(device.machine_info()), "10.0.0.4")
    assert answer.status == 503 and "enrolment profile" in answer.reason
    failing = check_machineinfo(cfg)
    assert not failing.ok
    assert failing.detail.startswith("dep.insecure_skip_machineinfo_verification is true")
    cfg.dep.insecure_skip_machineinfo_verification = False
    cfg.dep.machineinfo_ca_file = Path("/nonexistent/ca.pem")
    assert not check_machineinfo(cfg).ok
