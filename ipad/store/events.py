"""The events the registry stores (parsed webhook bodies), and what it reports back about them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

# Statuses after which NanoMDM drops a command from the device's queue, and those still waiting.
FINAL = frozenset({"Acknowledged", "Error", "CommandFormatError"})
PENDING = frozenset({"queued", "NotNow"})


@dataclass
class ParsedEvent:
    """A validated webhook event, ready to store."""

    event_id: str
    topic: str
    created_at: str
    enrollment_id: str
    udid: str
    message_type: str | None = None  # check-ins: Authenticate, TokenUpdate, CheckOut, ...
    status: str | None = None  # reports: Acknowledged, Error, NotNow, Idle, ...
    command_uuid: str | None = None
    request_type: str | None = None
    token_update_tally: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)  # check-in keys or the response keys
    error_chain: list[dict[str, Any]] = field(default_factory=list)
    serial: str | None = None
    # The device enrolment this event's user channel belongs to (a Shared iPad's user, a user
    # enrolment's user): such an event is no device of its own; None for the device channel.
    parent_id: str | None = None
    # A secret answer taken out of `payload` by the webhook parser (the Activation Lock bypass code):
    # it reaches only an observer that keeps secrets (the escrow), encrypted, never a stored payload.
    secret: str | None = field(default=None, repr=False)
    # A DeviceLocation answer taken out of `payload` the same way: stored only in
    # ipad_lost_mode_locations (ipad.store.locations), deleted when lost mode ends.
    location: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def is_idle(self) -> bool:
        return self.status == "Idle" and not self.command_uuid

    @property
    def acknowledged(self) -> bool:
        """A command report that says the command was carried out."""
        return self.status == "Acknowledged"

    @cached_property
    def safe_payload(self) -> dict[str, Any]:
        """The payload as stored (json_safe), computed once; the receiver does it before the batch."""
        value: dict[str, Any] = json_safe(self.payload)
        return value


@dataclass(frozen=True)
class CommandState:
    """Where one command to one device stands."""

    command_uuid: str
    enrollment_id: str
    status: str
    not_now_count: int
    error_chain: list[dict[str, Any]]


@dataclass(frozen=True)
class EnrolmentEvent:
    """What enrolment hooks receive after an Authenticate or TokenUpdate is stored."""

    topic: str
    enrollment_id: str
    udid: str
    serial: str | None
    school: str | None
    token_update_tally: int | None


EnrolmentHook = Callable[[EnrolmentEvent], None]


def created_order(created_at: str) -> str:
    """NanoMDM's RFC 3339 created_at as a sortable string (fraction padded to 9 digits)."""
    t = created_at.rstrip("Z")
    base, _, frac = t.partition(".")
    return f"{base}.{frac[:9]:0<9}"


def json_safe(value: Any, depth: int = 0) -> Any:
    """Plist values as JSON: data blobs become a short summary, dates ISO strings."""
    if depth > 20:
        return None
    # Hot path (every stored answer goes through here): exact plist scalars first, then exact
    # dicts and lists, before the general isinstance chain; the results are the same.
    t = type(value)
    if t is str or t is int or t is bool or t is float or value is None:
        return value
    if t is dict:
        d = depth + 1
        return {(k if type(k) is str else str(k)): json_safe(v, d) for k, v in value.items()}
    if t is list:
        d = depth + 1
        return [json_safe(v, d) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
