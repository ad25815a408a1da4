"""Tables of the enrolment package: web users and their schools, enrolment requests with per-serial
status, DEP profiles defined per school, and login attempts for rate limiting."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, UTCDateTime
from core.models import utcnow

ROLES = ("admin", "coordinator", "teacher")
REQUEST_STATES = ("submitted", "approved", "assigned", "enrolled", "configured", "done", "rejected", "failed")
SERIAL_STATES = ("requested", "assigned", "enrolled", "configured", "failed", "rejected")


class User(Base):
    __tablename__ = "enrol_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    schools: Mapped[list[UserSchool]] = relationship(cascade="all, delete-orphan", lazy="selectin")

    @property
    def school_ids(self) -> list[str]:
        return sorted(s.school_id for s in self.schools)


class UserSchool(Base):
    __tablename__ = "enrol_user_schools"

    user_id: Mapped[int] = mapped_column(ForeignKey("enrol_users.id", ondelete="CASCADE"), primary_key=True)
    school_id: Mapped[str] = mapped_column(String(32), primary_key=True)


class EnrolmentRequest(Base):
    __tablename__ = "enrol_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[str] = mapped_column(String(32), index=True)
    device_group: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="submitted", index=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    profile_uuid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    serials: Mapped[list[RequestSerial]] = relationship(
        back_populates="request", cascade="all, delete-orphan", order_by="RequestSerial.id", lazy="selectin"
    )


class RequestSerial(Base):
    __tablename__ = "enrol_request_serials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("enrol_requests.id", ondelete="CASCADE"), index=True)
    serial: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16), default="requested")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The last DEP answer for this serial: SUCCESS, NOT_ACCESSIBLE, FAILED or THROTTLED.
    dep_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    enrollment_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # CommandUUIDs of InstallProfile commands not yet acknowledged.
    pending_commands: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    request: Mapped[EnrolmentRequest] = relationship(back_populates="serials")


class DEPProfile(Base):
    """The DEP profile defined for one school, keyed by the digest of what was sent to Apple."""

    __tablename__ = "enrol_dep_profiles"
    __table_args__ = (UniqueConstraint("school_id", "digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[str] = mapped_column(String(32))
    digest: Mapped[str] = mapped_column(String(64))
    profile_uuid: Mapped[str] = mapped_column(String(64))
    defined_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LoginAttempt(Base):
    __tablename__ = "enrol_login_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    success: Mapped[bool] = mapped_column(Boolean, default=False)


class ADEEnrolmentAttempt(Base):
    """One device's request at the ADE enrolment endpoint (its MachineInfo), served or refused."""

    __tablename__ = "enrol_ade_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    address: Mapped[str] = mapped_column(String(64))
    # What the device said (empty when the body could not be read).
    serial: Mapped[str] = mapped_column(String(64), default="", index=True)
    udid: Mapped[str] = mapped_column(String(64), default="")
    product: Mapped[str] = mapped_column(String(64), default="")
    os_version: Mapped[str] = mapped_column(String(32), default="")
    # served | refused
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")


class WebSession(Base):
    """A logged-in web session; the cookie holds the id, the table its SHA-256. No row: logged out."""

    __tablename__ = "enrol_web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
