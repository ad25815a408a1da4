"""The audit trail: who did what to which devices, when, with what result. Every package writes here."""

from __future__ import annotations

import getpass
import os
from datetime import datetime
from typing import Any

from sqlalchemy import select

from core.db import Database
from core.models import AuditEvent


def current_actor() -> str:
    """The human behind a CLI call: the sudo user if any, else the login name."""
    return os.environ.get("WERNE_ACTOR") or os.environ.get("SUDO_USER") or getpass.getuser()


def record(db: Database, action: str, target: str = "", detail: dict[str, Any] | None = None,
           actor: str | None = None) -> None:
    """Append one audit event in its own transaction."""
    with db.session() as s:
        s.add(AuditEvent(actor=actor or current_actor(), action=action, target=target, detail=detail or {}))


def list_events(db: Database, since: datetime | None = None, limit: int = 1000) -> list[AuditEvent]:
    with db.session() as s:
        q = select(AuditEvent).order_by(AuditEvent.at, AuditEvent.id)
        if since is not None:
            q = q.where(AuditEvent.at >= since)
        return list(s.scalars(q.limit(limit)))
