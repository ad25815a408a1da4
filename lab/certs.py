"""The lab's certificates: its CA, leaf certificates from it (the nginx server certificate, the
profile signer), the stand-in for Apple's push CA, and the simulated iPads' identities and serials.

Every key is EC P-256 and written 0600. Nothing here is for production: `werne mdm scep init` and
`werne mdm push-cert install` make and take the real ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.config import Config
from ipad.golive.scep_ca import init_scep_ca
from lab.errors import LabServiceError

# The host name in the lab nginx's certificate (clients connect to 127.0.0.1, also in its SAN).
LAB_HOST = "mdm.lab.werne.test"
LAB_TOPIC = "com.apple.mgmt.External.werne-lab"


@dataclass(frozen=True)
class LabTLS:
    """The lab's TLS CA and the proxy's server certificate."""

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path


class LabIdentity(NamedTuple):
    """A simulated iPad's identity: issued by the SCEP CA, with the device's own key."""

    serial: str
    udid: str
    cert_pem: str
    key_pem: str


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file with mode 0600 from its creation on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_ca(ca_cert: Path, ca_key: Path) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise LabServiceError(f"{ca_key}: neither an EC nor an RSA key")
    return cert, key


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return builder.not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=days))


def make_ca(directory: Path) -> tuple[Path, Path]:
    """A test CA (EC P-256, 10 years) as ca.pem and ca.key (0600); kept if it exists."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "werne lab device CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "werne lab")])
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()))
    cert = (_validity(builder, 3650)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .sign(key, hashes.SHA256()))
    write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issue_leaf(ca_cert: Path, ca_key: Path, common_name: str, out_cert: Path, out_key: Path, *,
               days: int = 3650, extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
               keep: bool = True) -> None:
    """A certificate (and its EC key) from a lab CA; with `keep`, an existing pair is left as it is.
    `extensions` are (x509 extension, critical) pairs, e.g. a TLS server's SubjectAlternativeName."""
    if keep and out_cert.is_file() and out_key.is_file():
        return
    ca, signer = _load_ca(ca_cert, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _validity(
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number()), days)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    cert = builder.sign(signer, hashes.SHA256())
    write_private(out_key, _key_pem(key))
    out_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_tls(directory: Path, host: str = LAB_HOST) -> LabTLS:
    """A lab CA (kept if it exists) and a fresh server certificate for host and 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca(directory)
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    issue_leaf(ca_cert, ca_key, host, cert_path, key_path, days=90, keep=False, extensions=(
        (x509.SubjectAlternativeName([x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
         False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
    ))
    return LabTLS(ca_cert, ca_key, cert_path, key_path)


def udid_for(serial: str) -> str:
    """A stable, iPad-shaped UDID for a simulated serial (8 hex, '-', 16 hex)."""
    h = hashlib.sha256(serial.encode()).hexdigest().upper()
    return f"00008120-{h[:16]}"


def generated_serials(n: int, start: int = 0) -> list[str]:
    """Serials for simulated iPads not in the inventory (valid Apple format, never real ones)."""
    return [f"SIM{hashlib.sha256(str(i).encode()).hexdigest()[:7].upper()}" for i in range(start, start + n)]


def issue_identities(ca_cert: Path, ca_key: Path, serials: list[str], days: int = 365) -> list[LabIdentity]:
    """Identities signed by the SCEP CA (ca_cert/ca_key: a depot's ca.pem and ca.key), one key each.

    The fast path for bulk test fixtures only: the same CA scepserver signs with, the same kind of
    certificate (clientAuth), used the same way (Mdm-Signature); but no SCEP round trip, and EC
    keys instead of the RSA keys a real iPad makes, so hundreds take a second. The lab itself
    enrols through scepserver.
    """
    ca, signer = _load_ca(ca_cert, ca_key)
    out = []
    for serial in serials:
        device_key = ec.generate_private_key(ec.SECP256R1())
        cert = (_validity(
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"werne-lab {serial}")]))
            .issuer_name(ca.subject)
            .public_key(device_key.public_key())
            .serial_number(x509.random_serial_number()), days)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(signer, hashes.SHA256()))
        out.append(LabIdentity(serial, udid_for(serial), cert.public_bytes(serialization.Encoding.PEM).decode(),
                               _key_pem(device_key).decode()))
    return out


def make_scep_ca(directory: Path) -> tuple[Path, Path]:
    """A SCEP CA in depot layout (ipad.golive.scep_ca, as `werne mdm scep init` makes it) for test fixtures."""
    cfg = Config()
    cfg.site.state_dir = directory  # the trust bundle goes beside the depot, never into a home
    cfg.scep.depot_dir = directory / "depot"
    cfg.scep.challenge_file = directory / "challenge"
    init_scep_ca(cfg)
    return directory / "depot" / "ca.pem", directory / "depot" / "ca.key"


def lab_push_certificate(csr_pem: bytes, ca_dir: Path, topic: str = LAB_TOPIC, days: int = 365) -> bytes:
    """The lab's push certificate: the CSR signed by a stand-in for Apple's push CA, topic as UID."""
    ca, signer = _load_ca(*make_ca(ca_dir))
    csr = x509.load_pem_x509_csr(csr_pem)
    cert = (_validity(
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.USER_ID, topic),
                                 x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{topic}")]))
        .issuer_name(ca.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number()), days)
        .sign(signer, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)
