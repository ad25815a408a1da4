"""Tables of the compliance history: one row per run (with its hash-chain link) and one per device+rule
result."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
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
    # Where the run's time went (compliance.timings); written after the run, not in its record hash.
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
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


class ComplianceShard(Base):
    """One shard of a sharded nightly run (compliance.shards): what the leader hands it, and its
    results once a worker finished it. Keyed by run and shard, written done once: a retried shard
    never counts twice. Scratch: the leader deletes the rows when the run is stored or fails."""

    __tablename__ = "compliance_shards"
    __table_args__ = (UniqueConstraint("run_id", "shard", name="uq_compliance_shards_run_shard"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("compliance_runs.id", ondelete="CASCADE"), index=True)
    shard: Mapped[int] = mapped_column(Integer)
    # pending | done
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # The laptops to collect and the iPads' sweep outcomes (the leader runs the MDM sweep once).
    work: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Once done: the results in evaluation order, and each device's snapshot fields.
    results: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    devices: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


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


class ChainSignature(Base):
    """A signed chain head (compliance.signing): the statement naming the run's and the audit
    trail's record hashes at signing time, and its detached signature with the city's key."""

    __tablename__ = "chain_signatures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer, index=True)
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    statement: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)  # base64
    key_id: Mapped[str] = mapped_column(String(64))  # SHA-256 of the public key (DER SubjectPublicKeyInfo)


class VulnSnapshot(Base):
    """One imported security data file (`werne laptop vulns import`): Debian's tracker JSON or Ubuntu's
    USN database, normalised into `path` (gzip JSON under the state dir) whose SHA-256 is `sha256`."""

    __tablename__ = "vuln_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    distro: Mapped[str] = mapped_column(String(16), index=True)  # debian | ubuntu
    format: Mapped[str] = mapped_column(String(32))
    # What the data says about itself, or the file's time: a later import may not be older.
    as_of: Mapped[datetime] = mapped_column(UTCDateTime())
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    imported_by: Mapped[str] = mapped_column(String(128))
    source_sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LaptopPackageList(Base):
    """A laptop's installed packages as its facts listed them, kept once per distinct list (the
    evidence keeps only its SHA-256 and count, so the nightly evidence does not grow by the list)."""

    __tablename__ = "laptop_packages"
    __table_args__ = (Index("ix_laptop_packages_host_sha", "host", "sha256", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    # [[package, version, source package, source version, arch], ...]
    packages: Mapped[list[Any]] = mapped_column(JSON, default=list)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
