"""Tables of the iPad side: the registry, per-device command results, webhook events, licences, escrow.

The webhook receiver is the only writer of `mdm_webhook_events`; its unique `event_id` is what makes
storing idempotent. `mdm_commands` has one row per (CommandUUID, enrollment id), because one bulk
enqueue sends the same CommandUUID to many devices.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.db import Base, BoundedString, UTCDateTime
from core.models import utcnow


class MDMDevice(Base):
    """One MDM enrolment (an iPad's device channel), keyed by NanoMDM's enrollment id."""

    __tablename__ = "mdm_devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[str] = mapped_column(BoundedString(255), unique=True)
    udid: Mapped[str] = mapped_column(BoundedString(255), index=True)
    serial: Mapped[str | None] = mapped_column(BoundedString(32), index=True, nullable=True)
    school: Mapped[str | None] = mapped_column(BoundedString(64), index=True, nullable=True)
    group: Mapped[str | None] = mapped_column("ipad_group", BoundedString(16), nullable=True)
    model: Mapped[str | None] = mapped_column(BoundedString(64), nullable=True)
    os_version: Mapped[str | None] = mapped_column(BoundedString(32), nullable=True)
    build_version: Mapped[str | None] = mapped_column(BoundedString(32), nullable=True)
    device_name: Mapped[str | None] = mapped_column(BoundedString(255), nullable=True)
    topic: Mapped[str | None] = mapped_column(BoundedString(255), nullable=True)
    # enrolled | authenticated (no TokenUpdate yet) | checked_out
    state: Mapped[str] = mapped_column(BoundedString(16), default="authenticated")
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    checked_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    token_update_tally: Mapped[int] = mapped_column(Integer, default=0)
    awaiting_configuration: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # Sent by the device in TokenUpdate; needed for ClearPasscode. Never shown or logged.
    unlock_token: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    identity_cert_not_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class MDMDeviceFact(Base):
    """The newest answer of one kind from one device (DeviceInformation, SecurityInfo, ProfileList, ...).

    One row per (enrollment id, kind), replaced by each newer answer, so the webhook writes it
    without reading it first. Kinds starting with `_checkin.` hold the time of the last check-in
    of that type (NanoMDM's created_at), to order check-ins that arrive out of order.
    """

    __tablename__ = "mdm_device_facts"
    __table_args__ = (UniqueConstraint("enrollment_id", "kind", name="uq_mdm_device_facts_id_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[str] = mapped_column(BoundedString(255))
    kind: Mapped[str] = mapped_column(BoundedString(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    command_uuid: Mapped[str | None] = mapped_column(BoundedString(64), nullable=True)
    value: Mapped[Any] = mapped_column(JSON, default=dict)


class MDMCommand(Base):
    """One command sent to one device, and what the device answered."""

    __tablename__ = "mdm_commands"
    __table_args__ = (UniqueConstraint("command_uuid", "enrollment_id", name="uq_mdm_commands_uuid_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    command_uuid: Mapped[str] = mapped_column(BoundedString(64))  # indexed by the unique constraint
    enrollment_id: Mapped[str] = mapped_column(BoundedString(255), index=True)
    request_type: Mapped[str] = mapped_column(BoundedString(64), default="")
    # queued | Acknowledged | Error | CommandFormatError | NotNow | enqueue_failed
    status: Mapped[str] = mapped_column(BoundedString(32), default="queued")
    actor: Mapped[str] = mapped_column(BoundedString(128), default="")
    # What the command was for, e.g. {"profile": "de.werne.ipad.wifi"}.
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    not_now_count: Mapped[int] = mapped_column(Integer, default=0)
    error_chain: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # The response keys, JSON-safe (data blobs summarised), for reports and compliance.
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class MDMWebhookEvent(Base):
    """One webhook event as received: the idempotency key and what it was about.

    Other packages may poll this table (e.g. new `mdm.TokenUpdate` rows with id > last seen).
    """

    __tablename__ = "mdm_webhook_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(BoundedString(128), unique=True)
    topic: Mapped[str] = mapped_column(BoundedString(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_at: Mapped[str] = mapped_column(BoundedString(64), default="")
    enrollment_id: Mapped[str] = mapped_column(BoundedString(255), default="")
    command_uuid: Mapped[str | None] = mapped_column(BoundedString(64), nullable=True)
    status: Mapped[str | None] = mapped_column(BoundedString(32), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class MDMPushCertificate(Base):
    """One APNs push certificate werne installed in NanoMDM (the certificate; the key stays a file).

    The newest row is the current certificate (ipad.golive.push_cert_store).
    """

    __tablename__ = "mdm_push_certs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(BoundedString(128), index=True)
    serial: Mapped[str] = mapped_column(BoundedString(64))
    fingerprint_sha256: Mapped[str] = mapped_column(BoundedString(64))
    subject: Mapped[str] = mapped_column(Text)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    cert_pem: Mapped[str] = mapped_column(Text)
    installed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    installed_by: Mapped[str] = mapped_column(BoundedString(128))


class AppLicence(Base):
    """One device-based Apps and Books licence werne assigned (recorded only after Apple's event
    said COMPLETE for that serial); deleted when Apple confirms the licence was taken back."""

    __tablename__ = "app_licences"
    __table_args__ = (UniqueConstraint("location", "adam_id", "serial", name="uq_app_licences_loc_app_serial"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    location: Mapped[str] = mapped_column(BoundedString(64))
    adam_id: Mapped[str] = mapped_column(BoundedString(32))
    pricing_param: Mapped[str] = mapped_column(BoundedString(16), default="STDQ")
    serial: Mapped[str] = mapped_column(BoundedString(32), index=True)
    event_id: Mapped[str] = mapped_column(BoundedString(64))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(BoundedString(128))


class ActivationLockEscrow(Base):
    """An iPad's Activation Lock bypass code, encrypted (Fernet) with the key of activation_lock.key_file;
    `key_id` names that key (a digest), so a rotated key is recognised instead of failing obscurely."""

    __tablename__ = "ipad_activation_lock_escrow"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[str] = mapped_column(BoundedString(255), unique=True)
    serial: Mapped[str | None] = mapped_column(BoundedString(32), nullable=True, index=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(BoundedString(16))
    command_uuid: Mapped[str | None] = mapped_column(BoundedString(64), nullable=True)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LostModeLocation(Base):
    """Where an iPad in lost mode was, by its newest DeviceLocation answer (one row per device).

    Pupils' whereabouts are personal data: the webhook stores the coordinates only here (never in
    mdm_commands), `werne ipad locate` shows them only while the iPad is in lost mode, and the
    acknowledged DisableLostMode deletes the row in the same transaction."""

    __tablename__ = "ipad_lost_mode_locations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[str] = mapped_column(BoundedString(255), unique=True)
    latitude: Mapped[float] = mapped_column(Float)
    longitude: Mapped[float] = mapped_column(Float)
    horizontal_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    device_timestamp: Mapped[str] = mapped_column(BoundedString(64), default="")
    command_uuid: Mapped[str | None] = mapped_column(BoundedString(64), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class IPadReturn(Base):
    """An iPad erased with Return to Service, followed until it is back in its (possibly new) group:
    erasing -> enrolling (EraseDevice acknowledged) -> configuring (re-enrolled, group's profiles,
    apps and bypass-code request sent) -> done, or failed with the reason."""

    __tablename__ = "ipad_returns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[str] = mapped_column(BoundedString(32), index=True)
    enrollment_id: Mapped[str] = mapped_column(BoundedString(255))
    command_uuid: Mapped[str] = mapped_column(BoundedString(64))
    status: Mapped[str] = mapped_column(BoundedString(16), default="erasing")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    pending_commands: Mapped[list[str]] = mapped_column(JSON, default=list)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    requested_by: Mapped[str] = mapped_column(BoundedString(128))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DDMStatusRead(Base):
    """What the nightly run last merged of an iPad's declarative status reports (ipad.ddm.status):
    the items with their report times, and which report was the newest. The next night reads only
    the reports that came after it (O(changes)); KMFDDM keeps the reports themselves."""

    __tablename__ = "ipad_ddm_status"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[str] = mapped_column(BoundedString(255), unique=True)
    # "<stored at, ISO>|<SHA-256 of the report, 16 hex>": the newest report merged.
    newest: Mapped[str] = mapped_column(BoundedString(96))
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    items: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # status item -> when the report that carried it was stored (ISO), or null
    item_times: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AppleTVSetup(Base):
    """An enrolled Apple TV that got its profiles, name and DeviceInformation question (one row per
    Apple TV, for its current enrolment), and the AirPlay device id the iPads of its room were given."""

    __tablename__ = "appletv_setup"

    serial: Mapped[str] = mapped_column(BoundedString(32), primary_key=True)
    enrollment_id: Mapped[str] = mapped_column(BoundedString(255))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The DeviceID the room's iPads' AirPlay lists were rebuilt with ("" until it was learned).
    airplay_id: Mapped[str] = mapped_column(BoundedString(32), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SchoolClass(Base):
    """A class of a school for Apple Classroom: its name and the Classroom group's beacon id."""

    __tablename__ = "classroom_classes"
    __table_args__ = (UniqueConstraint("school_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[str] = mapped_column(BoundedString(32), index=True)
    name: Mapped[str] = mapped_column(BoundedString(64))
    # Apple's BeaconID: an unsigned 16-bit number, unique in the organisation.
    beacon_id: Mapped[int] = mapped_column(Integer, unique=True)
    updated_by: Mapped[str] = mapped_column(BoundedString(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The rows below go with the class (ON DELETE CASCADE); the relationships also order the inserts.
    devices: Mapped[list[ClassDevice]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                                      lazy="raise")
    teachers: Mapped[list[ClassTeacher]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                                        lazy="raise")
    lessons: Mapped[list[Lesson]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                                 lazy="raise")


class ClassDevice(Base):
    """An iPad of a class: the teacher's (leader) or a pupil's (member), with the pseudonym or first
    name Classroom shows for it, never more."""

    __tablename__ = "classroom_devices"

    class_id: Mapped[int] = mapped_column(ForeignKey("classroom_classes.id", ondelete="CASCADE"), primary_key=True)
    serial: Mapped[str] = mapped_column(BoundedString(32), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(BoundedString(8))  # leader | member
    display_name: Mapped[str] = mapped_column(BoundedString(32))


class ClassTeacher(Base):
    """A web account (login name) that teaches a class: the teacher sees and acts on it."""

    __tablename__ = "classroom_teachers"

    class_id: Mapped[int] = mapped_column(ForeignKey("classroom_classes.id", ondelete="CASCADE"), primary_key=True)
    username: Mapped[str] = mapped_column(BoundedString(64), primary_key=True, index=True)


class Lesson(Base):
    """A lesson or exam for one class and a time window: single-app mode for one app, or an allowlist
    of apps; applied when the window opens and lifted when it ends (ipad.classroom.lessons)."""

    __tablename__ = "classroom_lessons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classroom_classes.id", ondelete="CASCADE"), index=True)
    school_id: Mapped[str] = mapped_column(BoundedString(32), index=True)
    mode: Mapped[str] = mapped_column(BoundedString(16))  # single_app | allowlist
    apps: Mapped[list[str]] = mapped_column(JSON, default=list)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # scheduled -> active -> ended; cancelled (stopped before it began); stopped early: ended too
    status: Mapped[str] = mapped_column(BoundedString(16), default="scheduled", index=True)
    created_by: Mapped[str] = mapped_column(BoundedString(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The serials the lesson profile went to (so the lift reaches exactly them, even after a class change).
    serials: Mapped[list[str]] = mapped_column(JSON, default=list)
    detail: Mapped[str] = mapped_column(Text, default="")


class MDMIdentityRenewal(Base):
    """The renewal of one enrolment's device identity (ipad.golive.renewal): the newest attempt.

    state: sent (InstallProfile of the enrolment profile queued), renewed (acknowledged: the device
    holds a new identity), failed (answered Error; retried after scep.renew_retry_h), given_up
    (scep.renew_max_attempts errors in a row). `attempts` counts the attempts since the last success.
    """

    __tablename__ = "mdm_identity_renewals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[str] = mapped_column(BoundedString(255), unique=True)
    serial: Mapped[str] = mapped_column(BoundedString(32), index=True)
    state: Mapped[str] = mapped_column(BoundedString(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    renewals: Mapped[int] = mapped_column(Integer, default=0)
    command_uuid: Mapped[str] = mapped_column(BoundedString(64))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The identity the renewal replaces: its SHA-256 fingerprint and expiry (from CertificateList).
    old_fingerprint: Mapped[str] = mapped_column(BoundedString(64), default="")
    old_not_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
