"""The push certificate lifecycle against a real NanoMDM: key and CSR, install, renewal, refusals.

Apple's signing is the only fake (tests/fakes/fake_apple.py); the upload goes to a real NanoMDM, which
reads the topic itself and answers with it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from core.audit import list_events
from core.config import load_config
from core.db import Database
from ipad.golive.push_cert_store import current_push_cert
from tests.fakes.fake_apple import FakeApplePushCA
from tests.fixtures.mdm import NanoMDMProcess
from tests.fixtures.site import write_config, write_secret


@pytest.fixture(scope="module")
def nanomdm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NanoMDMProcess, Path]]:
    from lab.certs import make_ca

    d = tmp_path_factory.mktemp("nanomdm")
    ca, _ = make_ca(d)
    key = secrets.token_urlsafe(24)
    key_file = d / "api_key"
    write_secret(key_file, key)
    key_file.chmod(0o600)
    proc = NanoMDMProcess(d, ca, None, key, None)
    yield proc, key_file
    proc.stop()


@pytest.fixture
def site(tmp_path: Path, state_dir: Path, nanomdm: tuple[NanoMDMProcess, Path]) -> Path:
    proc, key_file = nanomdm
    return write_config(
        tmp_path / "werne.toml", tmp_path / "no-inventory", state_dir,
        f'[mdm]\nurl = "{proc.url}"\napi_key_file = "{key_file}"\ntimeout = 5.0\n',
    )


@pytest.fixture(scope="module")
def apple() -> FakeApplePushCA:
    return FakeApplePushCA()


def db_of(config: Path) -> Database:
    return Database(load_config(config).database_url)


def csr(run_cli, site: Path, tmp_path: Path) -> bytes:
    out = tmp_path / "push.csr"
    r = run_cli("mdm", "push-cert", "csr", "--out", str(out), config=site)
    assert r.exit_code == 0, r.output
    return out.read_bytes()


def write_cert(tmp_path: Path, pem: bytes, name: str = "push.pem") -> Path:
    p = tmp_path / name
    p.write_bytes(pem)
    return p


def refusals(config: Path) -> list[str]:
    return [e.detail["reason"] for e in list_events(db_of(config)) if e.action == "mdm.push-cert.refused"]


# --- the fake's contract --------------------------------------------------------------------------


def test_fake_push_cert_is_accepted_by_real_nanomdm(nanomdm, apple: FakeApplePushCA) -> None:
    """NanoMDM itself reads the fake's topic: the fake is shaped like Apple's certificates."""
    import requests

    proc, key_file = nanomdm
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    req = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    topic = apple.new_topic()
    cert = apple.sign(req.public_bytes(serialization.Encoding.PEM), topic)
    body = cert + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
    r = requests.put(proc.url + "/v1/pushcert", data=body, auth=("nanomdm", key_file.read_text()), timeout=5)
    assert r.status_code == 200 and r.json()["topic"] == topic


# --- key and CSR ---------------------------------------------------------------------------------


def test_csr_makes_a_private_key_once_and_signs_with_it(run_cli, site: Path, tmp_path: Path, state_dir: Path) -> None:
    first = x509.load_pem_x509_csr(csr(run_cli, site, tmp_path))
    key_file = state_dir / "mdm" / "push" / "push.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert first.is_signature_valid
    assert first.public_key() == key.public_key()
    # A second CSR (a renewal) keeps the key.
    second = x509.load_pem_x509_csr(csr(run_cli, site, tmp_path))
    assert second.public_key() == key.public_key()


def test_csr_uses_the_configured_key_path(run_cli, tmp_path: Path, state_dir: Path) -> None:
    key_file = tmp_path / "secrets" / "apns.key"
    cfg = write_config(tmp_path / "w.toml", tmp_path / "inv", state_dir, f'[mdm]\npush_key_file = "{key_file}"\n')
    r = run_cli("mdm", "push-cert", "csr", config=cfg)
    assert r.exit_code == 0 and r.output.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert not (state_dir / "mdm" / "push" / "push.key").exists()


# --- install -------------------------------------------------------------------------------------


def test_install_uploads_to_nanomdm_and_records(run_cli, site: Path, tmp_path: Path, apple) -> None:
    topic = apple.new_topic()
    cert = write_cert(tmp_path, apple.sign(csr(run_cli, site, tmp_path), topic, days=365))
    r = run_cli("mdm", "push-cert", "install", str(cert), config=site)
    expires = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
    assert r.exit_code == 0, r.output
    assert r.output == f"installed push certificate {topic}, valid until {expires:%Y-%m-%d}\n"
    current = current_push_cert(db_of(site))
    assert current is not None and current.topic == topic and current.not_after == expires
    shown = run_cli("mdm", "push-cert", "show", "--json", config=site)
    assert shown.exit_code == 0 and json.loads(shown.output)["topic"] == topic


def test_show_without_a_certificate(run_cli, site: Path) -> None:
    r = run_cli("mdm", "push-cert", "show", config=site)
    assert r.exit_code == 2
    assert r.output.startswith("Error: no push certificate installed")


def test_renewal_with_the_same_topic_replaces_the_certificate(run_cli, site: Path, tmp_path: Path, apple) -> None:
    topic = apple.new_topic()
    request = csr(run_cli, site, tmp_path)
    assert run_cli("mdm", "push-cert", "install", str(write_cert(tmp_path, apple.sign(request, topic, days=30))),
                   config=site).exit_code == 0
    renewed = write_cert(tmp_path, apple.sign(request, topic, days=365), "renewed.pem")
    r = run_cli("mdm", "push-cert", "install", str(renewed), config=site)
    assert r.exit_code == 0, r.output
    current = current_push_cert(db_of(site))
    assert current is not None and current.topic == topic
    assert current.not_after == x509.load_pem_x509_certificate(renewed.read_bytes()).not_valid_after_utc


def test_renewal_with_another_topic_is_refused_unless_forced(run_cli, site: Path, tmp_path: Path, apple) -> None:
    request = csr(run_cli, site, tmp_path)
    old, new = apple.new_topic(), apple.new_topic()
    assert run_cli("mdm", "push-cert", "install", str(write_cert(tmp_path, apple.sign(request, old))),
                   config=site).exit_code == 0
    other = write_cert(tmp_path, apple.sign(request, new), "other.pem")
    r = run_cli("mdm", "push-cert", "install", str(other), config=site)
    assert r.exit_code == 2
    assert r.output == (
        f"Error: {other} has topic {new}, the installed one {old}: every iPad would have to be enrolled again "
        "(renew under the same Apple ID, or pass --force)\n"
    )
    assert current_push_cert(db_of(site)).topic == old
    assert len(refusals(site)) == 1
    r = run_cli("mdm", "push-cert", "install", "--force", str(other), config=site)
    assert r.exit_code == 0, r.output
    assert current_push_cert(db_of(site)).topic == new


@pytest.mark.parametrize(
    "case, expected",
    [
        ("other key", "does not match the push certificate key (was the CSR made with another key?)"),
        ("expired", "expired on "),
        ("no uid", "is not an MDM push certificate (no subject UID, need com.apple.mgmt.…)"),
        ("foreign uid", "is not an MDM push certificate (subject UID is 'com.example.web', need com.apple.mgmt.…)"),
        ("not a cert", "is not a PEM or DER certificate"),
    ],
)
def test_bad_certificates_are_refused_and_change_nothing(
    run_cli, site: Path, tmp_path: Path, apple, case: str, expected: str
) -> None:
    request = csr(run_cli, site, tmp_path)
    topic = apple.new_topic()
    if case == "other key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        pem = apple.sign(request, topic, public_key=other)
    elif case == "expired":
        pem = apple.sign(request, topic, days=30, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=60))
    elif case == "no uid":
        pem = apple.sign(request, None)
    elif case == "foreign uid":
        pem = apple.sign(request, "com.example.web")
    else:
        pem = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    cert = write_cert(tmp_path, pem)
    r = run_cli("mdm", "push-cert", "install", str(cert), config=site)
    assert r.exit_code == 2
    assert r.output.startswith(f"Error: {cert} ") and expected in r.output and r.output.count("\n") == 1
    assert current_push_cert(db_of(site)) is None
    assert len(refusals(site)) == 1 and expected in refusals(site)[0]


def test_install_without_nanomdm_records_nothing(run_cli, tmp_path: Path, state_dir: Path, apple) -> None:
    from lab.processes import free_port

    key_file = tmp_path / "k"
    key_file.write_text("x")
    cfg = write_config(tmp_path / "w.toml", tmp_path / "inv", state_dir,
                       f'[mdm]\nurl = "http://127.0.0.1:{free_port()}"\napi_key_file = "{key_file}"\ntimeout = 2\n')
    cert = write_cert(tmp_path, apple.sign(csr(run_cli, cfg, tmp_path), apple.new_topic()))
    r = run_cli("mdm", "push-cert", "install", str(cert), config=cfg)
    assert r.exit_code == 3
    assert "PUT http://127.0.0.1:" in r.output and "/v1/pushcert: cannot connect" in r.output
    assert current_push_cert(db_of(cfg)) is None
