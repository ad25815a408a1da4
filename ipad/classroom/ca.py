"""werne's own CA for Apple Classroom: the certificates iPads show each other in a class.

Apple's Education payload wants, per device, an identity (PKCS#12) that is both a TLS client and a
TLS server (Classroom devices talk peer to peer), whose common name starts with "leader" (a teacher's
iPad) or "member" (a pupil's), and the anchor certificates that validate the whole chain of the other
side. As Apple recommends to MDM vendors: one root, an intermediate for leaders and one for members,
one certificate per device. The students' profile trusts leaders through [root, leader CA], members
through [root, member CA]; so a member certificate can never pass as a leader's.

Everything lives under STATE/classroom/ (keys mode 0600): ca/{root,leader,member}.{pem,key} and one
identity per device and role, identities/<serial>-<role>.{p12,pass} (the PKCS#12 and its random
password, kept so that an unchanged class gives the same profile bytes). An identity is renewed when
it has less than RENEW_DAYS left. No Managed Apple ID and no Apple service is involved.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ipad.errors import ClassroomError

ROLES = ("leader", "member")
CA_YEARS = 10
IDENTITY_DAYS = 2 * 365
RENEW_DAYS = 60
ORGANISATION = "werne Classroom"


@dataclass(frozen=True)
class Identity:
    """One device's Classroom identity: the PKCS#12 (certificate and key) and its password."""

    serial: str
    role: str
    p12: bytes
    password: str
    certificate: x509.Certificate


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class ClassroomCA:
    """The root and the two intermediates, made on first use, under `directory` (STATE/classroom)."""

    def __init__(self, directory: Path, now: dt.datetime | None = None):
        self.directory = directory
        self.now = now or dt.datetime.now(dt.UTC)
        self._certs: dict[str, x509.Certificate] = {}
        self._keys: dict[str, Any] = {}
        self._load_or_make()

    # -- the CA --------------------------------------------------------------------------------

    def _paths(self, which: str) -> tuple[Path, Path]:
        return self.directory / "ca" / f"{which}.pem", self.directory / "ca" / f"{which}.key"

    def _load_or_make(self) -> None:
        for which in ("root", *ROLES):
            cert_path, key_path = self._paths(which)
            if cert_path.is_file() and key_path.is_file():
                try:
                    self._certs[which] = x509.load_pem_x509_certificate(cert_path.read_bytes())
                    self._keys[which] = serialization.load_pem_private_key(key_path.read_bytes(), None)
                except (OSError, ValueError) as e:
                    raise ClassroomError(f"Classroom CA {cert_path}: cannot be read ({e.__class__.__name__})") from None
                continue
            self._make(which)

    def _make(self, which: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cn = "werne Classroom Root CA" if which == "root" else f"werne Classroom {which.capitalize()} CA"
        issuer_name = _name(cn) if which == "root" else self._certs["root"].subject
        signer = key if which == "root" else self._keys["root"]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - dt.timedelta(hours=1))
            .not_valid_after(self.now + dt.timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None if which == "root" else 0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        cert = builder.sign(signer, hashes.SHA256())
        cert_path, key_path = self._paths(which)
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._certs[which], self._keys[which] = cert, key

    def certificate(self, which: str) -> x509.Certificate:
        """"root", "leader" or "member": the CA certificate."""
        return self._certs[which]

    def anchors(self, role: str) -> list[x509.Certificate]:
        """The chain that validates a `role` peer: the root and that role's intermediate."""
        return [self._certs["root"], self._certs[role]]

    # -- the devices' identities -----------------------------------------------------------------

    def identity(self, serial: str, role: str) -> Identity:
        """The device's identity for `role`, issued on first use and renewed before it runs out."""
        if role not in ROLES:
            raise ClassroomError(f"unknown Classroom role {role!r}")
        base = self.directory / "identities" / f"{serial}-{role}"
        p12_path, pass_path = base.with_suffix(".p12"), base.with_suffix(".pass")
        if p12_path.is_file() and pass_path.is_file():
            password = pass_path.read_text(encoding="utf-8").strip()
            _key, cert, _more = pkcs12.load_key_and_certificates(p12_path.read_bytes(), password.encode())
            if cert is not None and cert.not_valid_after_utc - self.now > dt.timedelta(days=RENEW_DAYS) \
                    and cert.issuer == self._certs[role].subject:
                return Identity(serial, role, p12_path.read_bytes(), password, cert)
        return self._issue(serial, role, p12_path, pass_path)

    def _issue(self, serial: str, role: str, p12_path: Path, pass_path: Path) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            # Apple: the common name starts with "leader" or "member" (case-insensitive).
            .subject_name(_name(f"{role} {serial}"))
            .issuer_name(self._certs[role].subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - dt.timedelta(hours=1))
            .not_valid_after(self.now + dt.timedelta(days=IDENTITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_agreement=True,
                                         content_commitment=False, data_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            # Apple: every Classroom identity is both a TLS client and a TLS server.
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._certs[role].public_key()), critical=False)  # type: ignore[arg-type]
            .sign(self._keys[role], hashes.SHA256())
        )
        password = secrets.token_urlsafe(24)
        # PKCS#12 with AES and SHA-256 (iOS reads it; the legacy RC2/3DES encryption is not needed).
        encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                      .kdf_rounds(50_000)
                      .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                      .hmac_hash(hashes.SHA256())
                      .build(password.encode()))
        p12 = pkcs12.serialize_key_and_certificates(f"{role} {serial}".encode(), key, cert,
                                                    [self._certs[role]], encryption)
        _write_private(p12_path, p12)
        _write_private(pass_path, password.encode() + b"\n")
        return Identity(serial, role, p12, password, cert)
