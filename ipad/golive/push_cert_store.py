"""The push certificates werne installed in NanoMDM (table mdm_push_certs): the newest is the current one.

NanoMDM v0.9.0 has no API that reads the push certificate back (its `/v1/pushcert` stores whatever
is sent), so this table is where `werne mdm push-cert show` and the compliance rule read topic and
expiry from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from core.db import Database
from ipad.models import MDMPushCertificate


@dataclass(frozen=True)
class InstalledPushCert:
    """What werne recorded about an installed push certificate."""

    topic: str
    serial: str
    fingerprint_sha256: str
    subject: str
    not_before: datetime
    not_after: datetime
    installed_at: datetime
    installed_by: str

    def to_dict(self) -> dict[str, str]:
        return {
            "topic": self.topic,
            "serial": self.serial,
            "fingerprint_sha256": self.fingerprint_sha256,
            "subject": self.subject,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "installed_at": self.installed_at.isoformat(),
            "installed_by": self.installed_by,
        }


def _view(row: MDMPushCertificate) -> InstalledPushCert:
    return InstalledPushCert(
        row.topic, row.serial, row.fingerprint_sha256, row.subject, row.not_before, row.not_after,
        row.installed_at, row.installed_by,
    )


def current_push_cert(db: Database) -> InstalledPushCert | None:
    """The push certificate installed last, or None if werne never installed one."""
    with db.session() as s:
        row = s.scalars(select(MDMPushCertificate).order_by(MDMPushCertificate.id.desc()).limit(1)).first()
        return _view(row) if row is not None else None


def record_push_cert(db: Database, row: MDMPushCertificate) -> InstalledPushCert:
    """Store one install and return it as the current certificate."""
    with db.session() as s:
        s.add(row)
        s.flush()
        return _view(row)
