"""Configuration profiles from the data files: values, secrets, stable UUIDs, group sets, signing, goldens."""

from __future__ import annotations

import datetime as dt
import json
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from core.config import Config
from core.errors import EXIT_INPUT, InputError
from ipad.errors import ProfileError
from ipad.payloads import profiles
from ipad.payloads.ikev2 import IKEv2Profile
from tests.fixtures.site import REPO
from tests.golden import GOLDEN_DIR, assert_golden
from tests.parts import require_tool

GOLDEN = GOLDEN_DIR / "profiles"
GOLDEN_WIFI_SECRET = "golden-test-passphrase"  # a test value, not a real Wi-Fi password


@pytest.fixture
def wifi_secret(tmp_path: Path) -> Path:
    p = tmp_path / "wifi.secret"
    p.write_text("Sch00l-WLAN-geheim\n", encoding="utf-8")
    return p


@pytest.fixture
def config(wifi_secret: Path, tmp_path: Path) -> Config:
    cfg = Config()
    cfg.mdm.wifi_secret_file = wifi_secret
    cfg.site.inventory = tmp_path / "no-inventory"
    return cfg


@pytest.fixture
def profiles_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "profiles"
    shutil.copytree(REPO / "profiles", dst)
    return dst


def payload(profile: profiles.Profile, index: int = 0) -> dict:
    return profile.content["PayloadContent"][index]


# --- values ------------------------------------------------------------------------------------

def test_passcode_follows_mscp_indigo_base(config):
    p = profiles.build_named_profile("passcode", config)
    body = payload(p)
    assert body["PayloadType"] == "com.apple.mobiledevice.passwordpolicy"
    # The values come from the derived mSCP data, rule by rule.
    mscp = json.loads((REPO / "data" / "mscp-ios-indigo.json").read_text())
    for rule_id in ("pwpolicy_minimum_length_enforce", "pwpolicy_account_lockout_enforce",
                    "pwpolicy_history_enforce", "pwpolicy_max_inactivity_enforce",
                    "pwpolicy_max_grace_period_enforce"):
        rule = mscp["rules"][rule_id]
        (key,) = rule["mobileconfig"][0]["keys"]
        assert body[key] == rule["odv"]["indigo_base"], rule_id
    # And they are the BSI iNDIGO base values.
    assert body["minLength"] == 8 and body["maxFailedAttempts"] == 10 and body["pinHistory"] == 2
    assert body["maxInactivity"] == 2 and body["maxGracePeriod"] == 0
    assert body["requireAlphanumeric"] is True and body["allowSimple"] is False and body["forcePIN"] is True


def test_restrictions_for_supervised_ipads(config):
    body = payload(profiles.build_named_profile("restrictions", config))
    assert body["allowUIConfigurationProfileInstallation"] is False
    assert body["allowVPNCreation"] is False
    assert body["forceAirDropUnmanaged"] is True
    assert body["allowHostPairing"] is False
    assert body["allowEnterpriseAppTrust"] is False
    # Excluded rules (each with a reason in profiles/restrictions.yaml) leave their keys out.
    assert "allowSafari" not in body and "blockedAppBundleIDs" not in body
    assert "allowListedAppBundleIDs" not in body


def test_mscp_exclusion_of_unknown_rule_is_an_error(config, profiles_copy):
    path = profiles_copy / "restrictions.yaml"
    path.write_text(path.read_text().replace("os_safari_disable:", "os_no_such_rule:"))
    with pytest.raises(ProfileError, match="excluded rule 'os_no_such_rule' is not in the baseline"):
        profiles.build_named_profile("restrictions", config, profiles_copy)


def test_webfilter_and_vpn(config):
    web = payload(profiles.build_named_profile("webfilter", config))
    assert web["PayloadType"] == "com.apple.webcontent-filter"
    assert web["FilterType"] == "BuiltIn" and web["AutoFilterEnabled"] is True
    vpn = payload(profiles.build_named_profile("vpn", config))
    assert vpn["PayloadType"] == "com.apple.vpn.managed" and vpn["VPNType"] == "IKEv2"
    ike = vpn["IKEv2"]
    assert ike["IncludeAllNetworks"] == 1 and ike["OnDemandEnabled"] == 1
    assert ike["OnDemandRules"] == [{"Action": "Connect"}] and ike["OnDemandUserOverrideDisabled"] == 1
    assert ike["AuthenticationMethod"] == "None" and ike["ExtendedAuthEnabled"] == 1
    assert ike["IKESecurityAssociationParameters"]["DiffieHellmanGroup"] == 20


# --- the IKEv2 model -------------------------------------------------------------------------

IKE = {"name": "VPN", "remote_address": "vpn.example.invalid", "remote_identifier": "vpn.example.invalid",
       "local_identifier": "ipad.example.invalid"}


def test_ikev2_model_refuses_weak_or_inconsistent_settings():
    with pytest.raises(ValidationError):
        IKEv2Profile.model_validate({**IKE, "ike_sa": {"diffie_hellman_group": 2}})
    with pytest.raises(ValidationError, match="certificate_payload_uuid"):
        IKEv2Profile.model_validate({**IKE, "auth": "Certificate"})
    with pytest.raises(ValidationError):
        IKEv2Profile.model_validate({**IKE, "mtu": 9000})
    with pytest.raises(ValidationError):
        IKEv2Profile.model_validate({**IKE, "unknown_setting": 1})


def test_ikev2_certificate_auth_and_not_always_on():
    d = IKEv2Profile.model_validate({**IKE, "auth": "Certificate", "always_on": False,
                                     "certificate_payload_uuid": "6C8F0E8A-0000-4000-8000-000000000001"}
                                    ).ikev2_dict()
    assert d["AuthenticationMethod"] == "Certificate" and d["CertificateType"] == "ECDSA384"
    assert d["PayloadCertificateUUID"] == "6C8F0E8A-0000-4000-8000-000000000001"
    assert "OnDemandEnabled" not in d and "ExtendedAuthEnabled" not in d


def test_bad_ikev2_settings_in_the_data_file_are_a_profile_error(config, profiles_copy):
    path = profiles_copy / "vpn.yaml"
    path.write_text(path.read_text().replace("auth: EAP", "auth: PSK"))
    with pytest.raises(ProfileError, match="profile vpn: ikev2: auth"):
        profiles.build_named_profile("vpn", config, profiles_copy)


# --- secrets -----------------------------------------------------------------------------------

def test_wifi_password_comes_from_the_secret_file(config):
    p = profiles.build_named_profile("wifi", config)
    assert payload(p)["Password"] == "Sch00l-WLAN-geheim"
    assert b"Sch00l-WLAN-geheim" in p.to_bytes()
    assert "Sch00l-WLAN-geheim" not in repr(p) and "Sch00l-WLAN-geheim" not in p.content_hash


def test_no_wifi_secret_configured_is_a_clear_profile_error(config):
    config.mdm.wifi_secret_file = None
    with pytest.raises(ProfileError) as e:
        profiles.profile_set_for("pupil", config)
    assert str(e.value) == ("profile wifi: no Wi-Fi password configured "
                            "(set mdm.wifi_secret_file to a file holding it)")
    assert e.value.exit_code == EXIT_INPUT and isinstance(e.value, InputError)


def test_missing_or_empty_secret_file(config, tmp_path):
    config.mdm.wifi_secret_file = tmp_path / "nope"
    with pytest.raises(ProfileError, match=r"profile wifi: Wi-Fi password: secret file .*nope does not"):
        profiles.build_named_profile("wifi", config)
    empty = tmp_path / "empty"
    empty.write_text("")
    config.mdm.wifi_secret_file = empty
    with pytest.raises(ProfileError, match="is empty"):
        profiles.build_named_profile("wifi", config)


# --- stable identity ---------------------------------------------------------------------------

def test_same_inputs_same_bytes_and_uuids(config):
    a = profiles.profile_set_for("teacher", config)
    b = profiles.profile_set_for("teacher", config)
    assert [p.to_bytes() for p in a] == [p.to_bytes() for p in b]
    assert [p.uuid for p in a] == [p.uuid for p in b]
    assert len({p.uuid for p in a}) == len(a)


def test_changed_content_changes_uuid_but_not_identifier(config, profiles_copy, wifi_secret):
    before = profiles.build_named_profile("wifi", config, profiles_copy)
    wifi_secret.write_text("another-password")
    after_secret = profiles.build_named_profile("wifi", config, profiles_copy)
    assert after_secret.identifier == before.identifier
    assert after_secret.uuid != before.uuid and after_secret.content_hash != before.content_hash
    path = profiles_copy / "wifi.yaml"
    path.write_text(path.read_text().replace("SSID_STR: Werne-Schulen", "SSID_STR: Werne-Gast"))
    after_ssid = profiles.build_named_profile("wifi", config, profiles_copy)
    assert after_ssid.uuid not in (before.uuid, after_secret.uuid)


# --- groups ------------------------------------------------------------------------------------

def test_group_profile_sets(config):
    names = {g: [p.name for p in profiles.profile_set_for(g, config)] for g in ("pupil", "teacher", "shared")}
    assert "webfilter" in names["pupil"] and "vpn" not in names["pupil"]
    assert "vpn" in names["teacher"] and "webfilter" not in names["teacher"]
    for group in names.values():
        assert {"passcode", "restrictions", "wifi"} <= set(group)
    assert {g: profiles.GROUP_PROFILES[g] for g in names} == names
    assert [p.name for p in profiles.profile_set_for("appletv", config)] == profiles.GROUP_PROFILES["appletv"]
    teacher = profiles.profile_set_for("teacher", config)
    assert [p.identifier for p in teacher][:1] == ["de.werne.ipad.passcode"]
    assert all(p.content["PayloadOrganization"] == "Stadt Werne" for p in teacher)


def test_profile_identifiers_need_no_secret(config):
    config.mdm.wifi_secret_file = None
    assert profiles.profile_identifiers_for("teacher", config) == [
        "de.werne.ipad.passcode", "de.werne.ipad.restrictions", "de.werne.ipad.wifi", "de.werne.ipad.vpn",
        "de.werne.ipad.airplay"]
    with pytest.raises(ProfileError, match="unknown iPad group"):
        profiles.profile_identifiers_for("visitor", config)


def test_unknown_group(config):
    with pytest.raises(ProfileError, match=r"unknown iPad group 'guest' \(known: appletv, pupil, shared, teacher\)"):
        profiles.profile_set_for("guest", config)


def test_inventory_can_override_the_group_assignment(config, tmp_path):
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "ipad-profiles.yml").write_text(
        "organization: Stadt Beispiel\nidentifier_prefix: de.beispiel.ipad\n"
        "groups:\n  pupil: [passcode]\n  teacher: [passcode, vpn]\n  shared: [passcode]\n")
    config.site.inventory = inv
    pupil = profiles.profile_set_for("pupil", config)
    assert [p.identifier for p in pupil] == ["de.beispiel.ipad.passcode"]
    assert pupil[0].content["PayloadOrganization"] == "Stadt Beispiel"
    (inv / "ipad-profiles.yml").write_text(
        "organization: X\nidentifier_prefix: de.x.ipad\ngroups:\n  pupil: [passcode, nosuch]\n")
    with pytest.raises(ProfileError, match="group 'pupil' names unknown profile 'nosuch'"):
        profiles.profile_set_for("pupil", config)


@pytest.mark.parametrize("text, reason", [
    ("name: wifi\ndisplay_name: [unclosed\n", r"wifi\.yaml:\d+: broken YAML"),
    ("name: wifi\ndisplay_name: W\npayloads: []\n", "payloads: List should have at least 1 item"),
    ("name: wifi\ndisplay_name: W\ncolour: red\npayloads: [{type: com.apple.wifi.managed}]\n",
     "colour: unknown key"),
    ("name: other\ndisplay_name: W\npayloads: [{type: x, keys: {a: 1}}]\n",
     "name is 'other', expected 'wifi'"),
    ("name: wifi\ndisplay_name: W\npayloads: [{type: com.apple.wifi.managed, secrets: {Password: vault}}]\n",
     "unknown secret 'vault'"),
])
def test_broken_profile_files_are_one_line_profile_errors(config, profiles_copy, text, reason):
    (profiles_copy / "wifi.yaml").write_text(text)
    with pytest.raises(ProfileError, match=reason) as e:
        profiles.build_named_profile("wifi", config, profiles_copy)
    assert "\n" not in str(e.value)


# --- CMS signing -------------------------------------------------------------------------------

def make_signing_identity(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Werne Profile Signing (test)")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "sign.crt", tmp_path / "sign.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def openssl_cms_verify(signed: bytes, tmp_path: Path) -> subprocess.CompletedProcess:
    blob = tmp_path / "signed.der"
    blob.write_bytes(signed)
    return subprocess.run(["openssl", "cms", "-verify", "-noverify", "-binary", "-inform", "DER",
                           "-in", str(blob)], capture_output=True, timeout=30, check=False)


def test_signed_profile_verifies_and_contains_the_profile(config, tmp_path):
    require_tool("openssl", hint="Debian's openssl package")
    cert_file, key_file = make_signing_identity(tmp_path)
    config.mdm.signing_cert_file, config.mdm.signing_key_file = cert_file, key_file
    profile = profiles.build_named_profile("passcode", config)
    signed = profiles.profile_payload_for_install(profile, config)
    assert signed != profile.to_bytes() and signed[:1] == b"\x30"  # DER SEQUENCE
    out = openssl_cms_verify(signed, tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == profile.to_bytes()
    # A flipped byte inside the signed content breaks the signature.
    at = signed.index(b"minLength")
    tampered = signed[:at] + b"maxLength" + signed[at + 9:]
    assert openssl_cms_verify(tampered, tmp_path).returncode != 0


def test_unsigned_when_no_identity_and_half_configured_is_an_error(config, tmp_path):
    profile = profiles.build_named_profile("passcode", config)
    assert profiles.profile_payload_for_install(profile, config) == profile.to_bytes()
    cert_file, _ = make_signing_identity(tmp_path)
    config.mdm.signing_cert_file = cert_file
    with pytest.raises(ProfileError, match="needs both mdm.signing_cert_file and mdm.signing_key_file"):
        profiles.profile_payload_for_install(profile, config)
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    config.mdm.signing_key_file = bad_key
    with pytest.raises(ProfileError, match=r"cannot load private key .*bad.key \(must be unencrypted PEM\)"):
        profiles.profile_payload_for_install(profile, config)


# --- golden files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", profiles.available_profiles())
def test_golden_profile(name, tmp_path):
    """Given the repo's data files and this Wi-Fi test secret, exactly these bytes.

    Regenerate after an intended change with WERNE_UPDATE_GOLDEN=1 and review the diff.
    """
    secret = tmp_path / "wifi"
    secret.write_text(GOLDEN_WIFI_SECRET)
    cfg = Config()
    cfg.mdm.wifi_secret_file = secret
    cfg.site.inventory = tmp_path / "no-inventory"
    produced = profiles.build_named_profile(name, cfg).to_bytes()
    golden = GOLDEN / f"{name}.mobileconfig"
    assert_golden(golden, produced)
    assert plistlib.loads(produced)["PayloadIdentifier"] == f"de.werne.ipad.{name}"
