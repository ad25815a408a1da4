"""The only fakes of the go-live tests: what Apple's servers and devices would sign.

- `FakeApplePushCA` stands in for Apple's Push Certificates Portal: it signs a CSR into a
  certificate whose subject UID is the APNs topic `com.apple.mgmt.External.<uuid>`, as Apple's do.
  tests/ipad/test_pushcert.py::test_fake_push_cert_is_accepted_by_real_nanomdm proves that the real
  NanoMDM reads the same topic from it (its contract).
- `FakeAppleDevice` stands in for an iPad in Setup Assistant: a device identity from a fake Apple
  device CA (`FakeAppleDeviceCA`; one shared by every device unless a test gives another), and the
  MachineInfo plist CMS-signed with it. tests/enrolment/test_ade_enrol.py checks that `openssl cms
  -verify` (an independent implementation) accepts its signatures; `apple_shaped_device` makes a
  device whose identity looks like a real iPad's (RSA-1024, SHA-1, from a CA that expired in 2014).
"""

from __future__ import annotations

import datetime as dt
import plistlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID


def _ca(common_name: str) -> tuple[x509.Certificate, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fake Apple Inc.")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


class FakeApplePushCA:
    """Signs push certificate CSRs like Apple's Push Certificates Portal (topic in the subject UID)."""

    def __init__(self) -> None:
        self.cert, self.key = _ca("Fake Apple Application Integration 2 Certification Authority")

    @staticmethod
    def new_topic() -> str:
        return f"com.apple.mgmt.External.{uuid.uuid4()}"

    def sign(
        self,
        csr_pem: bytes,
        topic: str | None,
        days: int = 365,
        not_before: dt.datetime | None = None,
        public_key: Any = None,
    ) -> bytes:
        """The signed certificate (PEM). topic=None: no UID at all; public_key: sign another key."""
        csr = x509.load_pem_x509_csr(csr_pem)
        start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{uuid.uuid4()}")]
        if topic is not None:
            attrs.insert(0, x509.NameAttribute(NameOID.USER_ID, topic))
        attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(public_key or csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)


class FakeAppleDeviceCA:
    """A stand-in for Apple's iPhone Device CA: issues device identities (EC P-256, SHA-256)."""

    def __init__(self, common_name: str = "Fake Apple iPhone Device CA") -> None:
        self.cert, self.key = _ca(common_name)

    def issue(self, common_name: str, public_key: Any) -> x509.Certificate:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


_SHARED_CA: list[FakeAppleDeviceCA] = []


def shared_device_ca() -> FakeAppleDeviceCA:
    """The fake device CA of this test process (made once: an RSA key takes a moment)."""
    if not _SHARED_CA:
        _SHARED_CA.append(FakeAppleDeviceCA())
    return _SHARED_CA[0]


@dataclass
class FakeAppleDevice:
    """An iPad in Setup Assistant: its identity (from a fake Apple device CA) and its MachineInfo."""

    serial: str
    udid: str = field(default_factory=lambda: str(uuid.uuid4()).upper())
    product: str = "iPad13,18"
    os_version: str = "18.5"
    ca: FakeAppleDeviceCA | None = None

    def __post_init__(self) -> None:
        self.ca = self.ca or shared_device_ca()
        self.ca_cert = self.ca.cert
        self.key: Any = ec.generate_private_key(ec.SECP256R1())
        self.cert = self.ca.issue(self.udid, self.key.public_key())

    def machine_info(self, **override: Any) -> bytes:
        """The MachineInfo plist (other/machineinfo.yaml keys), XML."""
        info = {
            "UDID": self.udid,
            "SERIAL": self.serial,
            "PRODUCT": self.product,
            "VERSION": "22F76",
            "OS_VERSION": self.os_version,
            "LANGUAGE": "de-DE",
        }
        info.update(override)
        return plistlib.dumps(info)

    def sign(self, body: bytes) -> bytes:
        """CMS SignedData, DER, content attached: what the device POSTs."""
        return (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(body)
            .add_signer(self.cert, self.key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )

    def ca_pem(self) -> bytes:
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)


def apple_shaped_device(serial: str, workdir: Path) -> tuple[FakeAppleDevice, bytes]:
    """A device whose identity is shaped like a real iPad's: RSA-1024, signed with SHA-1 by a CA
    (RSA-1024) valid 2007-2014, as Apple's iPhone Device CA is; and that CA's PEM. cryptography
    refuses to sign with SHA-1, so the openssl command line signs the device certificate."""
    import subprocess

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fake Apple Inc."),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Fake Apple iPhone Device CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
               .serial_number(1)
               .not_valid_before(dt.datetime(2007, 4, 16, 22, 54, 46, tzinfo=dt.UTC))
               .not_valid_after(dt.datetime(2014, 4, 16, 22, 54, 46, tzinfo=dt.UTC))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    device_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = serialization.Encoding.PEM
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (workdir / "ca.key").write_bytes(ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(uuid.uuid4()).upper())]))
           .sign(device_key, hashes.SHA256()))
    (workdir / "device.csr").write_bytes(csr.public_bytes(pem))
    subprocess.run(["openssl", "x509", "-req", "-in", "device.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-set_serial", "4242", "-sha1", "-days", "3650", "-out", "device.pem"],
                   cwd=workdir, check=True, capture_output=True, timeout=30)
    device = FakeAppleDevice(serial)
    device.key = device_key
    device.cert = x509.load_pem_x509_certificate((workdir / "device.pem").read_bytes())
    device.ca_cert = ca_cert
    return device, ca_cert.public_bytes(pem)
