"""Device identities through a real micromdm/scep server: CA set-up, the server in the lab, the
SCEP check, and real SCEP enrolments by scepclient (right challenge: an identity; wrong: refused)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from core.config import Config, load_config
from lab import scep as lab_scep
from mdm_client.scep import SCEPClient, SCEPError
from tests.fixtures.site import write_config
from tests.parts import require_file


@pytest.fixture(autouse=True)
def _scep_binaries() -> None:
    require_file("scepserver", lab_scep.SCEPSERVER_BIN, hint="run scripts/setup.sh")
    require_file("scepclient", lab_scep.SCEPCLIENT_BIN, hint="run scripts/setup.sh")


@pytest.fixture(scope="module")
def scep_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, lab_scep.LabSCEP]]:
    root = tmp_path_factory.mktemp("scep")
    cfg_file = write_config(root / "werne.toml", root / "inv", root / "state")
    cfg = load_config(cfg_file)
    server = lab_scep.up(cfg.state_dir, cfg)
    yield cfg, server
    lab_scep.down(cfg.state_dir)


def enrol(url: str, challenge: str, workdir: Path, cn: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One real SCEP enrolment (PKCSReq) by scepclient, in its own folder (it keeps csr.pem in cwd)."""
    workdir.mkdir(parents=True)
    out = workdir / "identity.pem"
    r = subprocess.run(
        [str(lab_scep.SCEPCLIENT_BIN), "-server-url", url, "-challenge", challenge, "-private-key",
         str(workdir / "key.pem"), "-certificate", str(out), "-cn", cn, "-organization", "Stadt Werne"],
        cwd=workdir, capture_output=True, text=True, timeout=60,
    )
    return r, out


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    pub = ca.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    try:
        pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                   cert.signature_hash_algorithm or hashes.SHA256())
    except Exception:
        return False
    return cert.issuer == ca.subject


# --- CA set-up -----------------------------------------------------------------------------------


def test_scep_init_lays_out_the_depot_and_a_secret_challenge(run_cli, tmp_path: Path, state_dir: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", tmp_path / "inv", state_dir)
    r = run_cli("mdm", "scep", "init", "--json", config=cfg)
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    depot = state_dir / "scep" / "depot"
    assert info["created"] is True and info["depot"] == str(depot)
    key = serialization.load_pem_private_key((depot / "ca.key").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert (depot / "ca.key").read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # what the depot reads
    ca = x509.load_pem_x509_certificate((depot / "ca.pem").read_bytes())
    assert ca.public_key() == key.public_key()
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for secret in (depot / "ca.key", state_dir / "scep" / "challenge"):
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    # Idempotent: the CA is kept, never replaced.
    again = json.loads(run_cli("mdm", "scep", "init", "--json", config=cfg).output)
    assert again["created"] is False and again["fingerprint_sha256"] == info["fingerprint_sha256"]


def test_scep_init_imports_an_existing_ca(run_cli, tmp_path: Path, state_dir: Path) -> None:
    from ipad.golive.scep_ca import new_ca as _new_ca

    cert, key = _new_ca("Imported")
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    cfg = write_config(tmp_path / "w.toml", tmp_path / "inv", state_dir)
    r = run_cli("mdm", "scep", "init", "--import-ca-cert", str(tmp_path / "ca.pem"),
                "--import-ca-key", str(tmp_path / "ca.key"), "--json", config=cfg)
    assert r.exit_code == 0, r.output
    assert (state_dir / "scep" / "depot" / "ca.pem").read_bytes() == cert.public_bytes(serialization.Encoding.PEM)
    # A second import would replace the CA devices chain to: refused.
    r = run_cli("mdm", "scep", "init", "--import-ca-cert", str(tmp_path / "ca.pem"),
                "--import-ca-key", str(tmp_path / "ca.key"), config=cfg)
    assert r.exit_code == 2 and "a SCEP CA already exists in" in r.output


def test_scep_init_refuses_a_non_rsa_key(run_cli, tmp_path: Path, state_dir: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ca.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    from ipad.golive.scep_ca import new_ca as _new_ca

    cert, _ = _new_ca("x")
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cfg = write_config(tmp_path / "w.toml", tmp_path / "inv", state_dir)
    r = run_cli("mdm", "scep", "init", "--import-ca-cert", str(tmp_path / "ca.pem"),
                "--import-ca-key", str(tmp_path / "ca.key"), config=cfg)
    assert r.exit_code == 2
    assert r.output == f"Error: CA key {tmp_path / 'ca.key'} is not an RSA key (scepserver signs with RSA only)\n"
    assert not (state_dir / "scep" / "depot").exists()


# --- the real server --------------------------------------------------------------------------------


def test_client_reads_caps_and_the_depot_ca(scep_lab) -> None:
    cfg, server = scep_lab
    client = SCEPClient(server.url, timeout=5)
    caps = client.get_ca_caps()
    assert "POSTPKIOperation" in caps and "SHA-256" in caps
    (ca,) = client.get_ca_cert()
    assert ca == x509.load_pem_x509_certificate((server.depot / "ca.pem").read_bytes())


def test_scep_check_cli_against_the_lab_server(scep_lab) -> None:
    from click.testing import CliRunner

    from cli import main

    cfg, server = scep_lab
    r = CliRunner().invoke(main, ["--config", cfg.source, "mdm", "scep", "check", "--url", server.url, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["matches_depot"] is True


def test_scep_check_refuses_a_server_with_another_ca(run_cli, scep_lab, tmp_path: Path, state_dir: Path) -> None:
    _, server = scep_lab
    cfg = write_config(tmp_path / "w.toml", tmp_path / "inv", state_dir)
    assert run_cli("mdm", "scep", "init", config=cfg).exit_code == 0  # another, local CA
    r = run_cli("mdm", "scep", "check", "--url", server.url, config=cfg)
    assert r.exit_code == 2
    assert r.output.startswith(f"Error: SCEP server {server.url} serves CA ") and "not the one in" in r.output


def test_client_errors_say_what_failed() -> None:
    from lab.processes import free_port

    url = f"http://127.0.0.1:{free_port()}/scep"
    with pytest.raises(SCEPError) as e:
        SCEPClient(url, timeout=2).get_ca_caps()
    assert str(e.value) == f"GET {url}?operation=GetCACaps: cannot connect (connection refused); " \
                           "is the SCEP server running?"


def test_right_challenge_gets_an_identity_from_the_ca(scep_lab, tmp_path: Path) -> None:
    from ipad.golive.scep_ca import read_challenge

    cfg, server = scep_lab
    r, out = enrol(server.url, read_challenge(cfg).reveal(), tmp_path / "ipad1", "SIMIPAD0001")
    assert r.returncode == 0 and out.is_file(), r.stderr[-500:]
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    ca = x509.load_pem_x509_certificate((server.depot / "ca.pem").read_bytes())
    assert issued_by(cert, ca)
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "SIMIPAD0001"
    key = serialization.load_pem_private_key((tmp_path / "ipad1" / "key.pem").read_bytes(), password=None)
    assert cert.public_key() == key.public_key()
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days == cfg.scep.cert_valid_days


def test_wrong_challenge_is_refused(scep_lab, tmp_path: Path) -> None:
    cfg, server = scep_lab
    index = server.depot / "index.txt"
    before = index.read_text()
    r, out = enrol(server.url, "not-the-challenge", tmp_path / "intruder", "INTRUDER")
    assert not out.exists()
    assert "failInfo: badRequest" in r.stdout + r.stderr
    assert index.read_text() == before  # nothing issued
