"""Tables of the home-office side: work that waits for a laptop, and what the watcher last saw.

A pending item is marked `done` only after its work succeeded; an item a killed watcher left
`running` goes back to `pending` when the next watcher starts, so nothing is applied twice and
nothing is lost.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime
from core.models import utcnow

KIND_PROVISION = "provision"
KIND_VPN_ROTATE = "vpn_rotate"
# A lost or found laptop (provisioning.disk.lost): applied first when it comes online, and only to
# the laptop whose host key was pinned when it was ordered (`identity`).
KIND_LOCK = "lock"
KIND_ERASE = "erase"
KIND_UNLOCK = "unlock"
LOST_KINDS = (KIND_ERASE, KIND_LOCK, KIND_UNLOCK)
KINDS = (KIND_PROVISION, KIND_VPN_ROTATE, *LOST_KINDS)

STATE_PENDING = "pending"
STATE_RUNNING = "running"
STATE_DONE = "done"
STATE_FAILED = "failed"
OPEN_STATES = (STATE_PENDING, STATE_RUNNING)


class PendingWork(Base):
    __tablename__ = "laptop_pending"
    __table_args__ = (Index("ix_laptop_pending_host_state", "host", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    # provision | vpn_rotate | lock | erase | unlock
    kind: Mapped[str] = mapped_column(String(32))
    # pending | running | done | failed
    state: Mapped[str] = mapped_column(String(16), default=STATE_PENDING, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Not before this time (back-off after a failed attempt); NULL = as soon as the laptop is seen.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # "pid:start-ticks" of the watcher working on it, so a dead one's claim is recognised.
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # What did it, e.g. "provisioning run 12".
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The SHA256 fingerprint of the laptop's pinned host key when the item was made (lock, erase,
    # unlock): applied only to a laptop that shows that key, never to another one at its address.
    identity: Mapped[str | None] = mapped_column(String(128), nullable=True)


class LaptopPresence(Base):
    __tablename__ = "laptop_presence"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_handshake_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    online_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    offline_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    endpoint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
