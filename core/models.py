"""Core tables: provisioning runs with per-host outcomes, and the audit trail every package writes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class ProvisioningRun(Base):
    __tablename__ = "provisioning_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    playbook: Mapped[str] = mapped_column(String(255))
    check_mode: Mapped[bool] = mapped_column(Boolean, default=False)
    hosts: Mapped[list[str]] = mapped_column(JSON, default=list)
    # running | ok | failed | interrupted | error
    status: Mapped[str] = mapped_column(String(32), default="running")
    artifact_dir: Mapped[str | None] = mapped_column(Text, nullable=True)
    results: Mapped[list[ProvisioningHostResult]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="ProvisioningHostResult.host"
    )


class ProvisioningHostResult(Base):
    __tablename__ = "provisioning_host_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("provisioning_runs.id", ondelete="CASCADE"), index=True)
    host: Mapped[str] = mapped_column(String(255))
    # ok | changed | failed | unreachable | skipped
    outcome: Mapped[str] = mapped_column(String(32))
    ok: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    unreachable: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    run: Mapped[ProvisioningRun] = relationship(back_populates="results")


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The audit chain (core.audit_chain): each event's hash covers its fields and the previous
    # event's hash; events written before the chain existed keep NULL here.
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    record_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
