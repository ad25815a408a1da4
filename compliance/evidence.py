"""Laptop evidence with an age: facts stored when they are collected (nightly run or catch-up by
`werne laptop watch`), hash-chained, so that a laptop switched off during the nightly run is judged
on its freshest evidence and the report says how old that is.

Each row's record hash covers host, collection time, source, the SHA-256 of its facts and the
previous row's record hash; `verify_evidence_chain` recomputes them from the database alone. A
compliance run that uses a stored row names its id and record hash in the run's device snapshot,
so the run's own chain (compliance.history) covers the evidence it was judged on. How old that
evidence may be is the rule lx-evidence-fresh (compliance.checks.evidence).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from compliance.canonical import canonical_ts
from compliance.models import LaptopEvidence
from core.config import Config
from core.db import Database
from core.locks import file_lock

SOURCES = ("nightly", "catch-up")


def facts_hash(facts: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(facts, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


def evidence_record_hash(host: str, collected_at: datetime, source: str, fhash: str, prev: str | None) -> str:
    body = {"host": host, "collected_at": canonical_ts(collected_at), "source": source, "facts_hash": fhash,
            "prev": prev}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class StoredEvidence:
    """One laptop's facts as collected at one time."""

    id: int
    host: str
    collected_at: datetime
    source: str
    facts: dict[str, Any]
    record_hash: str


def store_evidence(config: Config, db: Database, collected: dict[str, dict[str, Any]], collected_at: datetime,
                   source: str) -> dict[str, StoredEvidence]:
    """Append one row per host to the evidence chain (one transaction, under the evidence lock,
    so two writers never fork the chain). Returns the rows by host."""
    if source not in SOURCES:
        raise ValueError(f"unknown evidence source {source!r}")
    if not collected:
        return {}
    rows: list[LaptopEvidence] = []
    with file_lock(config.state_dir / "evidence.lock", wait=120, what="evidence write"), db.session() as s:
        prev = s.scalar(select(LaptopEvidence.record_hash).order_by(LaptopEvidence.id.desc()).limit(1))
        for host, facts in sorted(collected.items()):
            # Round trip through JSON: the hash is over exactly what the database gives back.
            facts = json.loads(json.dumps(facts))
            fh = facts_hash(facts)
            rh = evidence_record_hash(host, collected_at, source, fh, prev)
            rows.append(LaptopEvidence(host=host, collected_at=collected_at, source=source, facts=facts,
                                       facts_hash=fh, prev_hash=prev, record_hash=rh))
            prev = rh
        # One flush: one INSERT for every row (their ids come back in order), not one per laptop.
        s.add_all(rows)
        s.flush()
        return {r.host: StoredEvidence(r.id, r.host, collected_at, source, r.facts, r.record_hash) for r in rows}


def freshest(db: Database, hosts: list[str] | None = None) -> dict[str, StoredEvidence]:
    """The newest stored evidence per host (hosts without any are absent)."""
    with db.session() as s:
        newest = select(LaptopEvidence.host, func.max(LaptopEvidence.id).label("id")).group_by(LaptopEvidence.host)
        if hosts is not None:
            newest = newest.where(LaptopEvidence.host.in_(hosts))
        sub = newest.subquery()
        rows = s.scalars(select(LaptopEvidence).join(sub, LaptopEvidence.id == sub.c.id)).all()
        return {r.host: StoredEvidence(r.id, r.host, r.collected_at, r.source, r.facts, r.record_hash) for r in rows}


def evidence_times(db: Database, hosts: list[str] | None = None) -> dict[str, datetime]:
    """When each host's freshest evidence was collected (without loading the facts)."""
    with db.session() as s:
        q = select(LaptopEvidence.host, func.max(LaptopEvidence.collected_at)).group_by(LaptopEvidence.host)
        if hosts is not None:
            q = q.where(LaptopEvidence.host.in_(hosts))
        return {h: (t if t.tzinfo else t.replace(tzinfo=UTC)) for h, t in s.execute(q).all()}


def needs_refresh(collected_at: datetime | None, now: datetime, max_age: timedelta) -> bool:
    """Whether a laptop seen now should have its facts collected: never, or too long ago."""
    return collected_at is None or now - collected_at > max_age


def clock_label(at: datetime, now: datetime, zone: str, today: str = "") -> str:
    """"14:05", "14:05 yesterday" or "14:05 on 2026-11-15", in the site's time zone (`today`
    is appended for a time of the same day, e.g. " today")."""
    tz = ZoneInfo(zone)
    local, ref = at.astimezone(tz), now.astimezone(tz)
    days = (ref.date() - local.date()).days
    when = {0: today, 1: " yesterday"}.get(days, f" on {local:%Y-%m-%d}")
    return f"{local:%H:%M}{when}"


def age_label(collected_at: datetime | None, now: datetime, zone: str) -> str:
    """"evidence from 14:05 yesterday", in the site's time zone; "never seen" without evidence."""
    if collected_at is None:
        return "never seen"
    return f"evidence from {clock_label(collected_at, now, zone, ' today')}"


def verify_evidence_chain(db: Database) -> tuple[int, list[str]]:
    """(rows checked, problems): every row's facts hash, record hash and link to the row before."""
    problems: list[str] = []
    prev: str | None = None
    n = 0
    with db.session() as s:
        for row in s.scalars(select(LaptopEvidence).order_by(LaptopEvidence.id)).yield_per(200):
            n += 1
            if row.prev_hash != prev:
                problems.append(f"evidence {row.id} ({row.host}): link broken")
            fh = facts_hash(row.facts)
            if fh != row.facts_hash:
                problems.append(f"evidence {row.id} ({row.host}): facts altered")
            at = row.collected_at if row.collected_at.tzinfo else row.collected_at.replace(tzinfo=UTC)
            if evidence_record_hash(row.host, at, row.source, row.facts_hash, row.prev_hash) != row.record_hash:
                problems.append(f"evidence {row.id} ({row.host}): record altered")
            prev = row.record_hash
    return n, problems

