"""The APNs push certificate's lifecycle: the key and CSR, checking the certificate Apple signed,
installing it in NanoMDM (`PUT /v1/pushcert`) and recording it.

The key is RSA 2048 (what Apple's Push Certificates Portal takes), a secret file with mode 0600 at
mdm.push_key_file or <state_dir>/mdm/push/push.key; it is made once and kept, so a renewal signs a
CSR with the same key. A certificate is installed only if it pairs with that key, is valid now,
and carries an APNs topic (subject UID `com.apple.mgmt.…`). A renewal must keep the topic: a new
topic means every iPad has to be enrolled again, so that needs `force`. Every refusal is written to
the audit trail and changes nothing else.

    PushCertError   (ipad.errors.IPadError, core.errors.InputError: exit 2)
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from core import audit
from core.config import Config
from core.db import Database
from ipad.errors import PushCertError
from ipad.golive.push_cert_store import InstalledPushCert, current_push_cert, record_push_cert
from ipad.models import MDMPushCertificate

# NanoMDM takes a topic with this prefix (cryptoutil.TopicFromCert); Apple's MDM push certificates
# carry com.apple.mgmt.External.<uuid>. The rest must be an APNs topic name: letters, digits, '.',
# '-', '_' (the topic reaches the enrolment profile, the terminal and the logs; nothing else gets in).
TOPIC_PREFIX = "com.apple.mgmt."
TOPIC_RE = re.compile(r"^com\.apple\.mgmt\.[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
KEY_SIZE = 2048




@dataclass(frozen=True)
class PushCertInfo:
    """What a push certificate says: its topic, validity and identity."""

    topic: str
    subject: str
    serial: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime

    def days_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds() / 86400


@dataclass(frozen=True)
class CSRResult:
    """The CSR to send for signing, and where its key is."""

    csr_pem: bytes
    key_file: Path
    key_created: bool


def push_key_file(config: Config) -> Path:
    return config.mdm.push_key_file or (config.state_dir / "mdm" / "push" / "push.key")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _load_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PushCertError(
            f"push certificate key {path} does not exist; run `werne mdm push-cert csr` first"
        ) from None
    except OSError as e:
        raise PushCertError(f"push certificate key {path}: cannot read: {e.__class__.__name__}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        # Never key material in the message: only the file and the kind of failure.
        raise PushCertError(
            f"push certificate key {path} is not an unencrypted PEM key: {e.__class__.__name__}"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PushCertError(f"push certificate key {path} is not an RSA key (APNs needs RSA)")
    return key


def make_csr(config: Config, common_name: str = "werne MDM push") -> CSRResult:
    """The key (made once, 0600) and a CSR over it, PEM, for the vendor signing step."""
    path = push_key_file(config)
    created = False
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
        _write_private(
            path,
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
        )
        created = True
    os.chmod(path, 0o600)
    key = _load_key(path)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, config.site.name),
    ])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return CSRResult(csr.public_bytes(serialization.Encoding.PEM), path, created)


def read_certificate(data: bytes, source: str) -> x509.Certificate:
    """The first certificate of a PEM (or DER) file, as Apple's portal hands it out."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)[0]
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise PushCertError(f"{source} is not a PEM or DER certificate") from None


def topic_of(cert: x509.Certificate) -> str | None:
    """The APNs topic: the subject's UID attribute, if it names an MDM push topic."""
    for attr in cert.subject.get_attributes_for_oid(NameOID.USER_ID):
        value = str(attr.value)
        if TOPIC_RE.match(value):
            return value
    return None


def inspect_certificate(cert: x509.Certificate, key: Any, source: str, now: datetime | None = None) -> PushCertInfo:
    """Check that `cert` is a usable MDM push certificate for `key`; raises PushCertError with why not."""
    now = now or datetime.now(UTC)
    pub = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    cert_pub = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    if pub != cert_pub:
        raise PushCertError(f"{source} does not match the push certificate key (was the CSR made with another key?)")
    topic = topic_of(cert)
    if topic is None:
        uids = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.USER_ID)]
        found = f"subject UID is {uids[0]!r}" if uids else "no subject UID"
        raise PushCertError(f"{source} is not an MDM push certificate ({found}, need {TOPIC_PREFIX}…)")
    if cert.not_valid_after_utc <= now:
        raise PushCertError(f"{source} expired on {cert.not_valid_after_utc:%Y-%m-%d}; renew it at Apple's Push "
                            "Certificates Portal")
    if cert.not_valid_before_utc > now:
        raise PushCertError(f"{source} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    return PushCertInfo(
        topic=topic,
        subject=cert.subject.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        fingerprint_sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def install_push_cert(
    config: Config,
    db: Database,
    client: Any,
    cert_data: bytes,
    source: str = "the certificate",
    force: bool = False,
    now: datetime | None = None,
    actor: str | None = None,
) -> InstalledPushCert:
    """Check the signed certificate, upload it with its key to NanoMDM and record it.

    `client` is the NanoMDM API client (put_push_cert). Raises PushCertError (refused, recorded in
    the audit trail) or the client's NanoMDMError (NanoMDM unreachable; nothing recorded).
    """
    key_path = push_key_file(config)
    try:
        key = _load_key(key_path)
        cert = read_certificate(cert_data, source)
        info = inspect_certificate(cert, key, source, now)
        current = current_push_cert(db)
        if current is not None and current.topic != info.topic and not force:
            raise PushCertError(
                f"{source} has topic {info.topic}, the installed one {current.topic}: every iPad would have "
                "to be enrolled again (renew under the same Apple ID, or pass --force)"
            )
    except PushCertError as e:
        audit.record(db, "mdm.push-cert.refused", source, {"reason": str(e)}, actor=actor)
        raise
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    answer = client.put_push_cert(cert_pem + key_pem)
    if answer["topic"] != info.topic:
        # NanoMDM read another topic than we did: do not record what we cannot vouch for.
        raise PushCertError(f"NanoMDM read topic {answer['topic']}, werne read {info.topic}; not recorded")
    row = MDMPushCertificate(
        topic=info.topic,
        serial=info.serial,
        fingerprint_sha256=info.fingerprint_sha256,
        subject=info.subject,
        not_before=info.not_before,
        not_after=info.not_after,
        cert_pem=cert_pem.decode(),
        installed_by=actor or audit.current_actor(),
    )
    installed = record_push_cert(db, row)
    audit.record(
        db, "mdm.push-cert.installed", info.topic,
        {"not_after": info.not_after.isoformat(), "serial": info.serial, "forced": force}, actor=actor,
    )
    return installed


def show_push_cert(db: Database) -> InstalledPushCert:
    """The installed push certificate; raises PushCertError if werne never installed one."""
    current = current_push_cert(db)
    if current is None:
        raise PushCertError("no push certificate installed; see docs/go-live.md (`werne mdm push-cert csr`)")
    return current
