"""The MDM enrolment profile: built from config, the SCEP challenge and the installed push
certificate; valid against Apple's schema; golden; CMS-signed (checked by openssl, independently)."""

from __future__ import annotations

import datetime as dt
import os
import plistlib
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from core.config import Config, load_config
from core.db import Database
from ipad import schema
from ipad.enrolment_profile import build_enrolment_profile
from ipad.models import MDMPushCertificate
from ipad.pushcert_store import record_push_cert
from tests.conftest import write_config
from tests.golden import assert_golden

GOLDEN = Path(__file__).resolve().parent / "golden" / "profiles" / "enrolment.mobileconfig"
GOLDEN_TOPIC = "com.apple.mgmt.External.5f2c6d8e-0000-4000-8000-000000000001"
GOLDEN_CHALLENGE = "golden-test-scep-challenge"  # a test value, not a real challenge


def signing_identity(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "werne profile signing (test)")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "signing.pem", directory / "signing.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def make_site(tmp_path: Path, state_dir: Path, signed: bool = True, challenge: bool = True) -> Path:
    extra = '[mdm]\nserver_url = "https://mdm.werne.example/mdm"\n'
    if signed:
        cert_file, key_file = signing_identity(tmp_path)
        extra += f'signing_cert_file = "{cert_file}"\nsigning_key_file = "{key_file}"\n'
    challenge_file = tmp_path / "scep-challenge"
    if challenge:
        challenge_file.write_text(GOLDEN_CHALLENGE + "\n")
        challenge_file.chmod(0o600)
    extra += f'[scep]\nurl = "https://mdm.werne.example/scep"\nchallenge_file = "{challenge_file}"\n'
    return write_config(tmp_path / "werne.toml", tmp_path / "no-inventory", state_dir, extra)


def install_topic(config: Config, topic: str = GOLDEN_TOPIC) -> None:
    now = dt.datetime.now(dt.UTC)
    record_push_cert(Database(config.database_url), MDMPushCertificate(
        topic=topic, serial="1", fingerprint_sha256="0" * 64, subject=f"UID={topic}", not_before=now,
        not_after=now + dt.timedelta(days=365), cert_pem="", installed_by="test"))


@pytest.fixture
def config(tmp_path: Path, state_dir: Path) -> Config:
    cfg = load_config(make_site(tmp_path, state_dir), state_dir=state_dir)
    install_topic(cfg)
    return cfg


def test_profile_names_push_topic_scep_identity_and_server(config: Config) -> None:
    p = build_enrolment_profile(config, Database(config.database_url))
    scep, mdm = p.content["PayloadContent"]
    assert scep["PayloadType"] == "com.apple.security.scep" and mdm["PayloadType"] == "com.apple.mdm"
    assert mdm["Topic"] == GOLDEN_TOPIC
    assert mdm["ServerURL"] == "https://mdm.werne.example/mdm"
    assert mdm["IdentityCertificateUUID"] == scep["PayloadUUID"]
    assert mdm["SignMessage"] is True and mdm["CheckOutWhenRemoved"] is True
    assert mdm["AccessRights"] == 8191 and "CheckInURL" not in mdm
    assert scep["PayloadContent"]["URL"] == "https://mdm.werne.example/scep"
    assert scep["PayloadContent"]["Challenge"] == GOLDEN_CHALLENGE
    assert scep["PayloadContent"]["Keysize"] == 2048 and scep["PayloadContent"]["Key Type"] == "RSA"


def test_profile_matches_apple_schema(config: Config) -> None:
    p = build_enrolment_profile(config, Database(config.database_url))
    assert schema.validate_profile(p.to_bytes()) == []
    # The validator does catch a broken payload here (so the check above means something).
    broken = plistlib.loads(p.to_bytes())
    broken["PayloadContent"][1]["SignMessage"] = "yes"
    broken["PayloadContent"][0]["PayloadContent"]["Keysize"] = 1000
    problems = schema.validate_profile(broken)
    assert any("SignMessage" in x for x in problems) and any("Keysize" in x for x in problems)


def test_golden_enrolment_profile(config: Config) -> None:
    """Given this config, challenge and topic, exactly this profile (WERNE_UPDATE_GOLDEN=1 rewrites it)."""
    produced = build_enrolment_profile(config, Database(config.database_url)).to_bytes()
    assert_golden(GOLDEN, produced)


def test_checkin_url_when_configured(config: Config) -> None:
    config.mdm.checkin_url = "https://mdm.werne.example/checkin"
    mdm = build_enrolment_profile(config, Database(config.database_url)).content["PayloadContent"][1]
    assert mdm["CheckInURL"] == "https://mdm.werne.example/checkin"


def test_cli_writes_a_signed_profile_openssl_verifies(run_cli, tmp_path: Path, state_dir: Path) -> None:
    site = make_site(tmp_path, state_dir)
    install_topic(load_config(site, state_dir=state_dir))
    out = tmp_path / "enrol.mobileconfig"
    r = run_cli("mdm", "enrolment-profile", "--out", str(out), config=site)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600  # it carries the SCEP challenge
    signer = tmp_path / "signing.pem"
    v = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(out), "-binary",
                        "-CAfile", str(signer), "-purpose", "any"],
                       capture_output=True, timeout=30)
    assert v.returncode == 0, v.stderr
    content = plistlib.loads(v.stdout)
    assert content["PayloadContent"][1]["Topic"] == GOLDEN_TOPIC
    assert schema.validate_profile(v.stdout) == []


@pytest.mark.parametrize(
    "case, message",
    [
        ("no push cert", "Error: enrolment profile: no push certificate installed (its topic is the profile's "
                         "Topic); run `werne mdm push-cert install` first\n"),
        ("unsigned", "Error: enrolment profile: it must be signed; set mdm.signing_cert_file and "
                     "mdm.signing_key_file\n"),
        ("no challenge", "Error: enrolment profile: SCEP challenge: secret file "),
    ],
)
def test_cli_refuses_without_its_inputs(run_cli, tmp_path: Path, state_dir: Path, case: str, message: str) -> None:
    site = make_site(tmp_path, state_dir, signed=case != "unsigned", challenge=case != "no challenge")
    if case != "no push cert":
        install_topic(load_config(site, state_dir=state_dir))
    out = tmp_path / "enrol.mobileconfig"
    r = run_cli("mdm", "enrolment-profile", "--out", str(out), config=site)
    assert r.exit_code == 2
    assert r.output.startswith(message)
    assert not out.exists()
