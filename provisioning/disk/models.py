"""Tables of the disk side: each laptop's escrowed LUKS recovery key and what its last test unlock said."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime
from core.models import utcnow

# The key was escrowed before it was sent; "added" once the laptop confirmed its keyslot opens.
KEY_PENDING = "pending"
KEY_ADDED = "added"


class LaptopRecoveryKey(Base):
    """A laptop's LUKS recovery key, encrypted with the escrow key (core.escrow; never in plain text),
    and the laptop it belongs to by its pinned host key."""

    __tablename__ = "laptop_recovery_keys"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA256 fingerprint of the host key pinned when the key was made: the laptop, not its address.
    identity: Mapped[str | None] = mapped_column(String(128), nullable=True)
    device: Mapped[str | None] = mapped_column(String(255), nullable=True)
    keyslot: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=KEY_PENDING)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    added_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The last test unlock (cryptsetup open --test-passphrase, no mount) that opened the volume.
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The last check, whatever it said: ok | failed | no-luks | no-key, and why.
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    check_result: Mapped[str | None] = mapped_column(String(16), nullable=True)
    check_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
