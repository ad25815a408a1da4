"""The vpn tables: one peer per laptop (public key, addresses, status), retired public keys, and the gateway.

Only public keys are stored. An address column is NULL once a peer is revoked, so the pool can hand
the address out again; `last_address_*` keeps what it was, for the record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime
from core.models import utcnow

PeerState = Literal["pending", "active", "revoked"]
PEER_PENDING: Final = "pending"  # admitted, waiting for the laptop's first public key
PEER_ACTIVE: Final = "active"
PEER_REVOKED: Final = "revoked"


class VPNPeer(Base):
    __tablename__ = "vpn_peers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), unique=True)
    status: Mapped[PeerState] = mapped_column(String(16), default=PEER_PENDING, index=True)
    public_key: Mapped[str | None] = mapped_column(String(44), unique=True, nullable=True)
    address_v4: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    address_v6: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    last_address_v4: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_address_v6: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the current key was made (first enrolment or last rotation).
    key_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    revocation_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class VPNRetiredKey(Base):
    """A public key that was rotated out or revoked; it may never be admitted again."""

    __tablename__ = "vpn_retired_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_key: Mapped[str] = mapped_column(String(44), unique=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    retired_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # rotated | revoked | replaced
    reason: Mapped[str] = mapped_column(String(16))


class VPNGateway(Base):
    """The gateway as last applied: its public key (made on the gateway) and the config digest."""

    __tablename__ = "vpn_gateways"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), unique=True)
    public_key: Mapped[str] = mapped_column(String(44))
    endpoint: Mapped[str] = mapped_column(String(255))
    config_sha256: Mapped[str] = mapped_column(String(64))
    peers: Mapped[int] = mapped_column(Integer, default=0)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
