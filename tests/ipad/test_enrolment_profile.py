"""The MDM enrolment profile: built from config, the SCEP challenge and the installed push
certificate; valid against Apple's schema; golden; CMS-signed (checked by openssl, independently)."""

from __future__ import annotations

import os
import plistlib
import stat
import subprocess
from pathlib import Path

import pytest

from core.config import Config, load_config
from core.db import Database
from ipad.payloads import mdm_schema as schema
from ipad.payloads.enrolment_profile import build_enrolment_profile
from tests.fixtures.enrolment_profile import GOLDEN_CHALLENGE, GOLDEN_TOPIC, install_topic, make_site
from tests.golden import GOLDEN_DIR, assert_golden

GOLDEN = GOLDEN_DIR / "profiles" / "enrolment.mobileconfig"


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
