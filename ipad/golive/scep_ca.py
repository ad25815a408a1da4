"""The SCEP CA that issues the iPads' device identities, laid out as micromdm/scep's file depot.

`init_scep_ca` makes (or imports) the CA once: <depot>/ca.pem, <depot>/ca.key (RSA, PKCS#1 PEM,
unencrypted, mode 0600: scepserver's depot reads only RSA keys) and the SCEP challenge, a secret
file (mode 0600) that scepserver gets through its environment and the enrolment profile carries.
NanoMDM's -ca is the trust bundle (scep.trust_bundle_file, default <state_dir>/scep/nanomdm-ca.pem):
the CAs whose identities it accepts, normally the depot's ca.pem alone.

Rotation (`rotate_scep_ca`, docs/go-live.md): a new CA goes into the depot (scepserver signs every
new and renewed identity with it), the old one moves to <depot>/retired/<fingerprint>/ and stays in
the trust bundle, so the iPads keep working with the identities it issued; the renewal
(ipad.golive.renewal) replaces those first. `retire_old_cas` drops the old CA from the bundle once no
enrolled iPad holds an identity from it.

    SCEPSetupError   (ipad.errors.IPadError, core.errors.InputError: exit 2)
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

from core import audit
from core.config import Config
from core.db import Database
from core.files import read_input
from core.secrets import Secret, read_secret
from ipad.errors import SCEPSetupError
from mdm_client.scep import SCEPClient, fingerprint

CA_YEARS = 10


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


def trust_bundle_file(config: Config) -> Path:
    """NanoMDM's -ca: the PEM bundle of the CAs whose device identities it accepts."""
    return config.scep.trust_bundle_file or (config.state_dir / "scep" / "nanomdm-ca.pem")


def retired_dir(config: Config) -> Path:
    return depot_dir(config) / "retired"


def new_ca(organization: str, suffix: str = "") -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A new SCEP CA; `suffix` tells a rotated CA's name from its predecessor's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"{organization} iPad device CA{' ' + suffix if suffix else ''}"),
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
    cert_pem = read_input(cert_file, "CA certificate", limit=1024 * 1024)  # never a FIFO or a device
    key_pem = read_input(key_file, "CA key", limit=1024 * 1024)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise SCEPSetupError(f"cannot load CA certificate {cert_file}: {e.__class__.__name__}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
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
            cert, key = new_ca(config.scep.subject_organization)
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
    bundle = trust_bundle_file(config)
    if created or not bundle.is_file():
        _write_public(bundle, (depot / "ca.pem").read_bytes())
    return _describe(depot, challenge, created)


def _write_public(path: Path, data: bytes) -> None:
    """Replace a certificate file in one step (NanoMDM or scepserver may start at any moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def current_ca(config: Config) -> x509.Certificate:
    """The CA scepserver signs with (the depot's ca.pem); SCEPSetupError when there is none."""
    path = depot_dir(config) / "ca.pem"
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise SCEPSetupError(f"no SCEP CA in {path.parent}; run `werne mdm scep init`") from None
    except (OSError, ValueError) as e:
        raise SCEPSetupError(f"{path}: not a readable PEM certificate ({e.__class__.__name__})") from None


def trusted_cas(config: Config) -> list[x509.Certificate]:
    """The CAs NanoMDM trusts (the trust bundle), the current one first; without a bundle, the
    depot's CA alone."""
    current = current_ca(config)
    try:
        bundled = x509.load_pem_x509_certificates(trust_bundle_file(config).read_bytes())
    except (OSError, ValueError):
        bundled = []
    others = [c for c in bundled if _fingerprint(c) != _fingerprint(current)]
    return [current, *others]


@dataclass(frozen=True)
class CARotation:
    """What `rotate_scep_ca` or `retire_old_cas` did."""

    current_subject: str
    current_fingerprint_sha256: str
    current_not_after: dt.datetime
    trusted: list[str]  # subjects of every CA in the trust bundle, current first
    retired: list[str]  # subjects of CAs moved out of the depot (rotate) or out of the bundle (retire)
    trust_bundle: Path

    def to_dict(self) -> dict[str, object]:
        return {"current_subject": self.current_subject, "current_fingerprint_sha256": self.current_fingerprint_sha256,
                "current_not_after": self.current_not_after.isoformat(), "trusted": self.trusted,
                "retired": self.retired, "trust_bundle": str(self.trust_bundle)}


def _rotation(config: Config, retired: list[str]) -> CARotation:
    cas = trusted_cas(config)
    return CARotation(cas[0].subject.rfc4514_string(), _fingerprint(cas[0]), cas[0].not_valid_after_utc,
                      [c.subject.rfc4514_string() for c in cas], retired, trust_bundle_file(config))


def rotate_scep_ca(config: Config, db: Database, actor: str | None = None,
                   now: dt.datetime | None = None) -> CARotation:
    """Put a new CA into the depot and trust it beside the old one (module docstring); audited.

    Refused while an earlier rotation is not finished (the bundle still trusts a retired CA): one
    old CA at a time keeps "who still has an old identity" a single question.
    """
    now = now or dt.datetime.now(dt.UTC)
    depot = depot_dir(config)
    old = current_ca(config)
    if len(trusted_cas(config)) > 1:
        raise SCEPSetupError("a SCEP CA rotation is not finished: the trust bundle still holds the previous CA; "
                             "renew the remaining identities and run `werne mdm scep retire-old` first")
    old_key = (depot / "ca.key").read_bytes()
    keep = retired_dir(config) / _fingerprint(old)[:16]
    keep.mkdir(parents=True, exist_ok=True)
    os.chmod(keep.parent, 0o700)
    (keep / "ca.pem").write_bytes(_pem(old))
    if not (keep / "ca.key").exists():
        _write_private(keep / "ca.key", old_key)
    cert, key = new_ca(config.scep.subject_organization, f"{now:%Y-%m-%d}")
    key_tmp = depot / "ca.key.new"
    key_tmp.unlink(missing_ok=True)
    _write_private(key_tmp, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.TraditionalOpenSSL,
                                              serialization.NoEncryption()))
    # The bundle first, so that NanoMDM trusts the new CA before scepserver can issue from it.
    _write_public(trust_bundle_file(config), _pem(cert) + _pem(old))
    os.replace(key_tmp, depot / "ca.key")
    _write_public(depot / "ca.pem", _pem(cert))
    result = _rotation(config, [old.subject.rfc4514_string()])
    audit.record(db, "mdm.scep.rotated", result.current_subject,
                 {"old": old.subject.rfc4514_string(), "old_sha256": _fingerprint(old),
                  "new_sha256": result.current_fingerprint_sha256, "kept_in": str(keep)}, actor=actor)
    return result


def retire_old_cas(config: Config, db: Database, still_holding: list[str], force: bool = False,
                   actor: str | None = None) -> CARotation:
    """Trust only the current CA; refused (SCEPSetupError) while enrolled iPads still hold an
    identity from an old one (`still_holding`: their serials, from the renewal plan) unless `force`."""
    cas = trusted_cas(config)
    old = cas[1:]
    if not old:
        return _rotation(config, [])
    if still_holding and not force:
        more = len(still_holding) - 10
        shown = ", ".join(still_holding[:10]) + (f" (+{more} more)" if more > 0 else "")
        raise SCEPSetupError(f"{len(still_holding)} enrolled iPad(s) still hold an identity from the previous SCEP CA "
                             f"or none is known: {shown}; renew them first (`werne mdm renew`), or --force (they "
                             "would stop reaching the MDM)")
    _write_public(trust_bundle_file(config), _pem(cas[0]))
    result = _rotation(config, [c.subject.rfc4514_string() for c in old])
    audit.record(db, "mdm.scep.retired", ",".join(result.retired),
                 {"forced": bool(still_holding and force), "still_holding": still_holding[:50]}, actor=actor)
    return result


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


def check_scep_server(config: Config, client: SCEPClient) -> SCEPCheck:
    """GetCACaps and GetCACert; the CA is compared with the local depot's if there is one.

    Raises SCEPSetupError when the server misses what iPads need (POSTPKIOperation, SHA-256) or
    serves another CA than the depot's.
    """
    caps = client.get_ca_caps()
    certs = client.get_ca_cert()
    url = client.url
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
