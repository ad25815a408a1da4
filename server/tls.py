"""The HTTPS front's certificate and key, checked before nginx is pointed at them: both readable,
the key the certificate's, the certificate valid now, the key not readable by every user.

`werne deploy write` and `werne server install` call `check_tls_files` before they write anything
when the files are on the machine they run on; on a server installed over SSH the install runs
`werne server check-tls` there before it enables the HTTPS site (playbooks/roles/server_nginx).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from core.errors import InputFileError
from core.files import read_input
from server.errors import ServerInputError

# A chain of a few certificates, or one key: far below this.
_TLS_FILE_LIMIT = 1024 * 1024


class TLSFileError(ServerInputError):
    """The HTTPS certificate or key cannot serve (unreadable, mismatched, expired, open to all)."""


@dataclass(frozen=True)
class TLSFiles:
    """A checked certificate (the first of its chain) and key."""

    cert: Path
    key: Path
    subject: str
    not_after: datetime


def _read(path: Path, setting: str) -> bytes:
    try:
        return read_input(path, setting, limit=_TLS_FILE_LIMIT)  # never a FIFO, a device or a huge file
    except InputFileError as e:
        raise TLSFileError(str(e)) from None


def check_tls_files(cert_file: Path, key_file: Path, now: datetime | None = None,
                    settings: tuple[str, str] = ("server.tls_cert_file", "server.tls_key_file")) -> TLSFiles:
    """The pair as nginx will load it; TLSFileError naming the setting and the reason otherwise.
    Never key material in a message: only the file, the setting and the kind of failure."""
    cert_setting, key_setting = settings
    now = now or datetime.now(UTC)
    cert_data, key_data = _read(cert_file, cert_setting), _read(key_file, key_setting)
    try:
        mode = os.stat(key_file).st_mode
    except OSError as e:
        raise TLSFileError(f"{key_setting}: {key_file}: {e.strerror}") from None
    if mode & stat.S_IROTH:
        raise TLSFileError(f"{key_setting}: {key_file} is readable by every user (mode {oct(stat.S_IMODE(mode))}); "
                           "chmod o-rwx it")
    try:
        cert = x509.load_pem_x509_certificates(cert_data)[0]
    except ValueError:
        raise TLSFileError(f"{cert_setting}: {cert_file} is not a PEM certificate (chain)") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as e:
        raise TLSFileError(f"{key_setting}: {key_file} is not an unencrypted PEM key ({e.__class__.__name__})"
                           ) from None
    if key.public_key() != cert.public_key():
        raise TLSFileError(f"{key_setting}: {key_file} is not the key of {cert_file} (its first certificate)")
    if cert.not_valid_after_utc <= now:
        raise TLSFileError(f"{cert_setting}: {cert_file} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > now:
        raise TLSFileError(f"{cert_setting}: {cert_file} is not valid before "
                           f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    return TLSFiles(cert_file, key_file, cert.subject.rfc4514_string(), cert.not_valid_after_utc)
