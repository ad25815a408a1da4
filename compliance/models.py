"""Tables of the compliance history: one row per run (with its hash-chain link) and one per device+rule
result."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, UTCDateTime
from core.models import utcnow


class ComplianceRun(Base):
    __tablename__ = "compliance_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # running | complete | interrupted | failed. Only "complete" runs are in the hash chain.
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    scope: Mapped[str] = mapped_column(String(16))  # laptops | ipads | all
    actor: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    tool_version: Mapped[str] = mapped_column(String(32))
    inventory_hash: Mapped[str] = mapped_column(String(64))
    baselines_hash: Mapped[str] = mapped_column(String(64))
    waivers_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    record_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    # Counts per status, fleet and school: the trend chart and summaries read these, not the rows.
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Snapshot of the rules as evaluated (title, severity, references, remediation), by rule id.
    rules: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The devices as seen: fleet, school, group, reachability, last seen, by device id.
    devices: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    results: Mapped[list[ComplianceResult]] = relationship(
        back_populates="run",
        cascade="all, delete-orphan",
        order_by="(ComplianceResult.device, ComplianceResult.rule_id)",
    )


class ComplianceResult(Base):
    __tablename__ = "compliance_results"
    __table_args__ = (Index("ix_compliance_results_device_rule", "device", "rule_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("compliance_runs.id", ondelete="CASCADE"), index=True)
    device: Mapped[str] = mapped_column(String(255))
    rule_id: Mapped[str] = mapped_column(String(64))
    # pass | fail | error | not_applicable | unreachable | waived
    status: Mapped[str] = mapped_column(String(16))
    evidence: Mapped[str] = mapped_column(Text, default="")
    waiver: Mapped[str | None] = mapped_column(Text, nullable=True)
    run: Mapped[ComplianceRun] = relationship(back_populates="results")


class LaptopEvidence(Base):
    """Facts of one laptop as collected at one time (nightly run or catch-up), hash-chained.

    Each row's `record_hash` covers its host, time, source, facts hash and the previous row's
    `record_hash`; a compliance run that judges a laptop on stored evidence names the row and its
    hash in its device snapshot, which the run's own chain covers.
    """

    __tablename__ = "laptop_evidence"
    __table_args__ = (Index("ix_laptop_evidence_host_collected", "host", "collected_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    collected_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # nightly | catch-up
    source: Mapped[str] = mapped_column(String(16))
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    facts_hash: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    record_hash: Mapped[str] = mapped_column(String(64), unique=True)
