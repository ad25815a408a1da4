"""The SCEP CA that issues the iPads' device identities, laid out as micromdm/scep's file depot.

`init_scep_ca` makes (or imports) the CA once: <depot>/ca.pem, <depot>/ca.key (RSA, PKCS#1 PEM,
unencrypted, mode 0600: scepserver's depot reads only RSA keys) and the SCEP challenge, a secret
file (mode 0600) that scepserver gets through its environment and the enrolment profile carries.
NanoMDM's -ca is the same ca.pem: the identities it issues are what NanoMDM trusts.

    SCEPSetupError   (mdm_client.errors.MDMError, core.errors.InputError: exit 2)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from core.config import Config
from core.errors import InputError
from core.secrets import Secret, read_secret
from mdm_client.errors import MDMError

CA_YEARS = 10


class SCEPSetupError(MDMError, InputError):
    """The SCEP CA or its challenge cannot be made, imported or read."""


@dataclass(frozen=True)
class SCEPCA:
    """Where the SCEP CA and challenge are, and which CA it is."""

    depot: Path
    ca_cert: Path
    challenge_file: Path
    subject: str
    fingerprint_sha256: str
    not_after: dt.datetime
    created: bool

    def to_dict(self) -> dict[str, str | bool]:
        return {
            "depot": str(self.depot),
            "ca_cert": str(self.ca_cert),
            "challenge_file": str(self.challenge_file),
            "subject": self.subject,
            "fingerprint_sha256": self.fingerprint_sha256,
            "not_after": self.not_after.isoformat(),
            "created": self.created,
        }


def depot_dir(config: Config) -> Path:
    return config.scep.depot_dir or (config.state_dir / "scep" / "depot")


def challenge_file(config: Config) -> Path:
    return config.scep.challenge_file or (config.state_dir / "scep" / "challenge")


def read_challenge(config: Config) -> Secret:
    """The SCEP challenge (scep.challenge_env, else the challenge file)."""
    return read_secret(file=challenge_file(config), env=config.scep.challenge_env, what="SCEP challenge")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _new_ca(organization: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} iPad device CA"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _load_import(cert_file: Path, key_file: Path) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as e:
        raise SCEPSetupError(f"cannot load CA certificate {cert_file}: {e.__class__.__name__}") from None
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise SCEPSetupError(f"cannot load CA key {key_file} (must be unencrypted PEM): "
                             f"{e.__class__.__name__}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SCEPSetupError(f"CA key {key_file} is not an RSA key (scepserver signs with RSA only)")
    if key.public_key() != cert.public_key():
        raise SCEPSetupError(f"CA key {key_file} does not match {cert_file}")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise SCEPSetupError(f"{cert_file} is not a CA certificate (basicConstraints CA:TRUE missing)")
    return cert, key


def _describe(depot: Path, challenge: Path, created: bool) -> SCEPCA:
    cert = x509.load_pem_x509_certificate((depot / "ca.pem").read_bytes())
    return SCEPCA(
        depot=depot,
        ca_cert=depot / "ca.pem",
        challenge_file=challenge,
        subject=cert.subject.rfc4514_string(),
        fingerprint_sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        not_after=cert.not_valid_after_utc,
        created=created,
    )


def init_scep_ca(config: Config, import_cert: Path | None = None, import_key: Path | None = None) -> SCEPCA:
    """Make or import the SCEP CA and the challenge; an existing CA is kept (idempotent)."""
    depot, challenge = depot_dir(config), challenge_file(config)
    if (import_cert is None) != (import_key is None):
        raise SCEPSetupError("importing a CA needs both the certificate and the key")
    exists = (depot / "ca.pem").exists() or (depot / "ca.key").exists()
    if exists and import_cert is not None:
        raise SCEPSetupError(f"a SCEP CA already exists in {depot}; it is not replaced "
                             "(devices' identities chain to it)")
    created = False
    if not exists:
        if import_cert is not None and import_key is not None:
            cert, key = _load_import(import_cert, import_key)
        else:
            cert, key = _new_ca(config.scep.subject_organization)
        depot.mkdir(parents=True, exist_ok=True)
        os.chmod(depot, 0o700)
        _write_private(depot / "ca.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
        (depot / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        created = True
    if not challenge.exists():
        _write_private(challenge, secrets.token_urlsafe(24).encode() + b"\n")
    os.chmod(challenge, 0o600)
    return _describe(depot, challenge, created)


@dataclass(frozen=True)
class SCEPCheck:
    """What the SCEP server answered: its capabilities and CA, and whether it is werne's CA."""

    url: str
    caps: list[str]
    ca_subject: str
    ca_fingerprint_sha256: str
    matches_depot: bool | None  # None: no local depot to compare with

    def to_dict(self) -> dict[str, object]:
        return {"url": self.url, "caps": self.caps, "ca_subject": self.ca_subject,
                "ca_fingerprint_sha256": self.ca_fingerprint_sha256, "matches_depot": self.matches_depot}


def check_scep_server(config: Config, client: object) -> SCEPCheck:
    """GetCACaps and GetCACert; the CA is compared with the local depot's if there is one.

    `client` is an mdm_client.scep.SCEPClient. Raises SCEPSetupError when the server misses what
    iPads need (POSTPKIOperation, SHA-256) or serves another CA than the depot's.
    """
    from mdm_client.scep import fingerprint

    caps = client.get_ca_caps()  # type: ignore[attr-defined]
    certs = client.get_ca_cert()  # type: ignore[attr-defined]
    url = client.url  # type: ignore[attr-defined]
    missing = [c for c in ("POSTPKIOperation", "SHA-256") if c not in caps]
    if missing:
        raise SCEPSetupError(f"SCEP server {url} lacks {', '.join(missing)} (GetCACaps: {', '.join(caps)})")
    ca = certs[0]
    local = depot_dir(config) / "ca.pem"
    matches = None
    if local.is_file():
        matches = fingerprint(x509.load_pem_x509_certificate(local.read_bytes())) in {fingerprint(c) for c in certs}
        if not matches:
            raise SCEPSetupError(f"SCEP server {url} serves CA {ca.subject.rfc4514_string()}, not the one in {local}")
    return SCEPCheck(url, caps, ca.subject.rfc4514_string(), fingerprint(ca), matches)
