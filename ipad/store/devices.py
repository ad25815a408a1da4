"""The typed view of one enrolled device, with the newest answer of each kind it gave (its facts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

from ipad.models import MDMDevice, MDMDeviceFact


class Fact(TypedDict):
    """The newest answer of one kind: when it was stored, to which command, and what the device keeps."""

    at: datetime | None
    command_uuid: str | None
    value: Any


def as_utc(dt: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite gives them back naive)."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def version_tuple(version: str | None) -> tuple[int, ...]:
    """'17.6.1' -> (17, 6, 1), to compare iPadOS versions; () when there is none or it is not numeric."""
    try:
        return tuple(int(x) for x in (version or "").split("."))
    except ValueError:
        return ()


def fact_of(row: MDMDeviceFact) -> Fact:
    return {"at": as_utc(row.at), "command_uuid": row.command_uuid, "value": row.value}


@dataclass(frozen=True)
class Device:
    """One MDM enrolment (an iPad's device channel) as the registry has it, with its facts.

    `facts` maps an answer's kind (DeviceInformation, SecurityInfo, ProfileList, Restrictions,
    CertificateList, ManagedApplicationList, InstalledApplicationList) to the newest such answer;
    `answer(kind)` is its value. Times are aware UTC datetimes.
    """

    enrollment_id: str
    udid: str
    serial: str | None
    school: str | None
    group: str | None
    model: str | None
    os_version: str | None
    build_version: str | None
    device_name: str | None
    topic: str | None
    state: str  # enrolled | authenticated (no TokenUpdate yet) | checked_out | unconfirmed (answers only)
    enrolled_at: datetime | None
    checked_out_at: datetime | None
    last_seen_at: datetime | None
    token_update_tally: int
    awaiting_configuration: bool | None
    identity_cert_not_after: datetime | None
    # Sent by the device in TokenUpdate; needed for ClearPasscode. Never shown or logged.
    unlock_token: bytes | None = field(default=None, repr=False)
    facts: dict[str, Fact] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: MDMDevice, facts: dict[str, Fact] | None = None) -> Device:
        return cls(
            enrollment_id=row.enrollment_id,
            udid=row.udid,
            serial=row.serial,
            school=row.school,
            group=row.group,
            model=row.model,
            os_version=row.os_version,
            build_version=row.build_version,
            device_name=row.device_name,
            topic=row.topic,
            state=row.state,
            enrolled_at=as_utc(row.enrolled_at),
            checked_out_at=as_utc(row.checked_out_at),
            last_seen_at=as_utc(row.last_seen_at),
            token_update_tally=row.token_update_tally,
            awaiting_configuration=row.awaiting_configuration,
            identity_cert_not_after=as_utc(row.identity_cert_not_after),
            unlock_token=row.unlock_token,
            facts=facts or {},
        )

    def answer(self, kind: str) -> Any:
        """The newest answer of one kind as stored (see ipad.store.facts), None if it never gave one."""
        fact = self.facts.get(kind)
        return fact["value"] if fact is not None else None

    def security_info(self) -> dict[str, Any]:
        """The newest SecurityInfo answer (PasscodePresent, HardwareEncryptionCaps, ...); {} if none."""
        value = self.answer("SecurityInfo")
        return value if isinstance(value, dict) else {}

    def device_information(self) -> dict[str, Any]:
        """The newest DeviceInformation QueryResponses; {} if none."""
        value = self.answer("DeviceInformation")
        return value if isinstance(value, dict) else {}

    def installed_profiles(self) -> list[dict[str, Any]] | None:
        """The newest ProfileList (identifier, UUID, ... per profile); None if it never sent one."""
        value = self.answer("ProfileList")
        return value if isinstance(value, list) else None
