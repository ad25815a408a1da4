"""The audit trail's hash chain: each event's `record_hash` is the SHA-256 of a canonical JSON record of
the event (id, time, actor, action, target, detail) and the previous event's `record_hash`, so an
edited, removed or deleted event is found by `verify_audit_chain`, offline, from the database alone.

Appending takes the writers' turn first (PostgreSQL: a transaction-scoped advisory lock; SQLite: the
INSERT itself takes the database's one write lock before the previous hash is read), so two writers
never link to the same predecessor. Events written before the chain existed have no hash; they are
counted as unchained, never sealed after the fact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.db import Database
from core.models import AuditEvent

# pg_advisory_xact_lock key: "werne-audit" as a number, the same in every process.
ADVISORY_KEY = int.from_bytes(hashlib.sha256(b"werne-audit-chain").digest()[:7], "big")
BATCH = 2000


def _ts(dt: datetime) -> str:
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_event(event_id: int, at: datetime, actor: str, action: str, target: str,
                    detail: dict[str, Any], prev_hash: str | None) -> bytes:
    body = {"id": event_id, "at": _ts(at), "actor": actor, "action": action, "target": target,
            "detail": detail, "prev_hash": prev_hash}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(e: AuditEvent) -> str:
    return hashlib.sha256(canonical_event(e.id, e.at, e.actor, e.action, e.target or "", e.detail or {},
                                          e.prev_hash)).hexdigest()


def append(s: Session, actor: str, action: str, target: str, detail: dict[str, Any]) -> AuditEvent:
    """Add one chained event in session `s` (its transaction commits it)."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_KEY})
    # The JSON round trip makes the hashed detail exactly what the database hands back later.
    event = AuditEvent(at=datetime.now(UTC), actor=actor, action=action, target=target,
                       detail=json.loads(json.dumps(detail)))
    s.add(event)
    s.flush()
    event.prev_hash = s.scalar(
        select(AuditEvent.record_hash).where(AuditEvent.id < event.id, AuditEvent.record_hash.is_not(None))
        .order_by(AuditEvent.id.desc()).limit(1))
    event.record_hash = event_hash(event)
    return event


@dataclass
class AuditChainReport:
    """What `verify_audit_chain` found: events checked, unchained old events, the head, problems."""

    checked: int = 0
    unchained: int = 0
    head_id: int | None = None
    head: str | None = None
    problems: list[str] = field(default_factory=list)


def _events(db: Database) -> Iterator[AuditEvent]:
    last = 0
    while True:
        with db.session() as s:
            rows = list(s.scalars(select(AuditEvent).where(AuditEvent.id > last).order_by(AuditEvent.id).limit(BATCH)))
            for r in rows:
                s.expunge(r)
        if not rows:
            return
        yield from rows
        last = rows[-1].id


def _check(e: AuditEvent, rep: AuditChainReport, prev_id: int | None) -> None:
    if e.record_hash is None:
        rep.problems.append(f"audit event {e.id} ({e.action}): not chained (its hash was removed)")
        return
    if e.prev_hash != rep.head:
        gap = ""
        if prev_id is not None and e.id - prev_id > 1:
            missing = f"{prev_id + 1}" if e.id - prev_id == 2 else f"{prev_id + 1}-{e.id - 1}"
            gap = f"; event(s) {missing} missing: deleted?"
        rep.problems.append(f"audit event {e.id} ({e.action}): link broken: previous hash "
                            f"{(e.prev_hash or 'none')[:12]} does not match the event before it "
                            f"({(rep.head or 'none')[:12]}){gap}")
    if event_hash(e) != e.record_hash:
        rep.problems.append(f"audit event {e.id} ({e.action}): record altered: stored hash "
                            f"{e.record_hash[:12]}, recomputed {event_hash(e)[:12]}")


def verify_audit_chain(db: Database) -> AuditChainReport:
    """Recompute every chained event's hash and check each link; name every altered, unchained,
    relinked or missing event."""
    rep = AuditChainReport()
    started = False
    prev_id: int | None = None
    for e in _events(db):
        if not started and e.record_hash is None and e.prev_hash is None:
            rep.unchained += 1  # written before the chain existed
            continue
        started = True
        rep.checked += 1
        _check(e, rep, prev_id)
        rep.head, rep.head_id, prev_id = e.record_hash, e.id, e.id
    return rep
