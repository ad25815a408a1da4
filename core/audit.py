"""The audit trail: who did what to which devices, when, with what result. Every package writes here;
each event is hash-chained to the one before it (core.audit_chain)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from core.actor import real_user
from core.audit_chain import append
from core.db import Database
from core.models import AuditEvent


def current_actor() -> str:
    """The human behind a CLI call: the sudo caller when really under sudo, else the process's user
    (core.actor; never an environment variable anyone can set)."""
    return real_user()


def record(db: Database, action: str, target: str = "", detail: dict[str, Any] | None = None,
           actor: str | None = None) -> None:
    """Append one audit event in its own transaction."""
    with db.session() as s:
        append(s, actor or current_actor(), action, target, detail or {})


def list_events(db: Database, since: datetime | None = None, limit: int = 1000) -> list[AuditEvent]:
    with db.session() as s:
        q = select(AuditEvent).order_by(AuditEvent.at, AuditEvent.id)
        if since is not None:
            q = q.where(AuditEvent.at >= since)
        return list(s.scalars(q.limit(limit)))
