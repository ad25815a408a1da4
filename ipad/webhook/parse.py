"""Parse one NanoMDM webhook body into a `ParsedEvent`, or refuse it (`BadEvent`, with the HTTP status).

Idle polls take a short path; command reports take a faster, equivalent parse (`fast_plist`,
`_fast_report`); anything unusual goes through plistlib and results.parse_report.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import plistlib
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, XMLParser

from ipad.errors import BadEvent, MalformedReport
from ipad.results import (
    COMMAND_STATUSES,
    REPORT_ENVELOPE,
    RESPONSE_KEY_TO_REQUEST_TYPE,
    parse_checkin,
    parse_report,
)
from ipad.store.events import ParsedEvent

# NanoMDM's enrolment id types (service/webhook: IDs.type) of a user channel: its events belong to
# the device enrolment `parent_id` names.
USER_CHANNEL_TYPES = frozenset({"User", "Shared iPad", "User Enrollment"})

CHECKIN_TOPICS = {
    "mdm.Authenticate",
    "mdm.TokenUpdate",
    "mdm.CheckOut",
    "mdm.UserAuthenticate",
    "mdm.GetBootstrapToken",
    "mdm.SetBootstrapToken",
    "mdm.DeclarativeManagement",
    "mdm.GetToken",
}





def parse_event(body: bytes) -> ParsedEvent:
    """Validate one webhook body. Raises BadEvent(400, reason)."""
    try:
        return _parse_event(body)
    except RecursionError:
        # JSON or a plist nested thousands deep: the decoders recurse. A 400, never a 500.
        raise BadEvent(400, "body is nested too deeply") from None


def _parse_event(body: bytes) -> ParsedEvent:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEvent(400, "body is not UTF-8") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise BadEvent(400, "body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("topic"), str):
        raise BadEvent(400, "not a NanoMDM webhook event (no topic)")
    topic = data["topic"]
    ack, checkin = data.get("acknowledge_event"), data.get("checkin_event")
    if (ack is None) == (checkin is None):
        raise BadEvent(
            400, "not a NanoMDM webhook event (needs exactly one of acknowledge_event, checkin_event)"
        )
    ev = ack if ack is not None else checkin
    if not isinstance(ev, dict) or not isinstance(ev.get("raw_payload"), str):
        raise BadEvent(400, "not a NanoMDM webhook event (no raw_payload)")
    if ack is not None and topic != "mdm.Connect":
        raise BadEvent(400, f"acknowledge_event with topic {topic[:40]!r}")
    if checkin is not None and topic not in CHECKIN_TOPICS:
        raise BadEvent(400, f"checkin_event with unknown topic {topic[:40]!r}")
    event_id = data.get("event_id")
    if event_id is None:
        # NanoMDM before v0.8 sent no event_id; the body (with its nanosecond created_at) is unique.
        event_id = "sha256:" + hashlib.sha256(body).hexdigest()[:32]
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 128:
        raise BadEvent(400, "event_id must be a string of 1-128 characters")
    try:
        raw = base64.b64decode(ev["raw_payload"], validate=True)
    except (binascii.Error, ValueError):
        raise BadEvent(400, "raw_payload is not base64") from None
    ids: dict[str, Any] = ev["ids"] if isinstance(ev.get("ids"), dict) else {}
    if ack is not None and ev.get("status") == "Idle" and not ev.get("command_uuid"):
        return _parse_idle(data, ev, ids, raw, event_id)
    plist = fast_plist(raw)
    try:
        if ack is not None:
            fast = _fast_report(plist) if plist is not None else None
            if fast is None:
                # The general path (and every error message): results.parse_report.
                r = parse_report(plist if type(plist) is dict else raw)
                fast = _Report(
                    r.udid,
                    r.status,
                    r.command_uuid,
                    r.enrollment_id,
                    r.request_type,
                    r.response,
                    [e.model_dump(by_alias=True, exclude_none=True) for e in r.error_chain],
                )
            enrollment_id = str(ids.get("id") or ev.get("enrollment_id") or fast.enrollment_id or fast.udid)
            response, secret = _take_secret(fast.response)
            response, location = _take_location(response)
            udid = str(ev.get("udid") or fast.udid)
            return ParsedEvent(
                event_id=event_id,
                topic=topic,
                created_at=str(data.get("created_at", "")),
                enrollment_id=enrollment_id,
                udid=udid,
                parent_id=_parent_of_user_channel(ids, enrollment_id, udid, None),
                status=fast.status,
                command_uuid=fast.command_uuid,
                request_type=fast.request_type,
                payload=response,
                error_chain=fast.error_chain,
                secret=secret,
                location=location,
            )
        m = parse_checkin(plist if type(plist) is dict else raw)
    except MalformedReport as e:
        raise BadEvent(400, f"raw_payload: {e}") from None
    enrollment_id = str(ids.get("id") or ev.get("enrollment_id") or m.device_id)
    tally = ev.get("token_update_tally")
    payload: dict[str, Any] = {
        "Model": m.model,
        "ProductName": m.product_name,
        "OSVersion": m.os_version,
        "BuildVersion": m.build_version,
        "DeviceName": m.device_name,
        "Topic": m.topic,
    }
    if m.unlock_token is not None:
        payload["UnlockToken"] = m.unlock_token
    if m.awaiting_configuration is not None:
        payload["AwaitingConfiguration"] = m.awaiting_configuration
    return ParsedEvent(
        event_id=event_id,
        topic=topic,
        created_at=str(data.get("created_at", "")),
        enrollment_id=enrollment_id,
        udid=str(ev.get("udid") or m.udid or enrollment_id),
        message_type=m.message_type,
        # An int the database can hold (SQLite and PostgreSQL: 64 bits); bool is an int too.
        token_update_tally=tally if type(tally) is int and 0 <= tally < 2**63 else None,
        payload={k: v for k, v in payload.items() if v is not None},
        serial=m.serial_number.strip().upper() if m.serial_number else None,
        parent_id=_parent_of_user_channel(ids, enrollment_id, str(ev.get("udid") or m.udid or ""), m.user_id),
    )


def _parent_of_user_channel(ids: dict[str, Any], enrollment_id: str, udid: str, user_id: str | None) -> str | None:
    """The device enrolment a user-channel event belongs to, or None for the device channel.

    NanoMDM names the channel in `ids` (type "Shared iPad" or "User", parent_id the device's); an
    older NanoMDM sends no ids, and then a check-in's UserID (or an id "<UDID>:<user>") says it."""
    kind = ids.get("type")
    if kind in USER_CHANNEL_TYPES:
        parent = ids.get("parent_id") or udid or enrollment_id.partition(":")[0]
        return str(parent) if parent and parent != enrollment_id else None
    if kind is None and (user_id or (udid and enrollment_id.startswith(f"{udid}:"))):
        return udid or None
    return None


# Answers whose value is a secret: kept out of the stored payload, handed to the escrow sink.
SECRET_RESPONSE_KEYS = ("ActivationLockBypassCode",)


# A DeviceLocation answer: where a pupil's iPad is. Kept out of the stored payload (mdm_commands keeps
# "***"); the store writes it only to ipad_lost_mode_locations, which lost mode's end empties.
LOCATION_RESPONSE_KEYS = ("Latitude", "Longitude", "HorizontalAccuracy", "VerticalAccuracy", "Altitude", "Speed",
                          "Course", "Timestamp")


def _take_location(response: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The response without the location keys (each "***"), and the location when it is one."""
    if "Latitude" not in response:
        return response, None
    location = {k: response[k] for k in LOCATION_RESPONSE_KEYS if k in response}
    return {**response, **dict.fromkeys(location, "***")}, location


def _take_secret(response: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The response without its secret value (replaced by "***"), and the secret."""
    for key in SECRET_RESPONSE_KEYS:
        if key in response:
            value = response[key]
            return {**response, key: "***"}, value if isinstance(value, str) else None
    return response, None


def _parse_idle(
    data: dict[str, Any], ev: dict[str, Any], ids: dict[str, Any], raw: bytes, event_id: str
) -> ParsedEvent:
    """An Idle poll: the most frequent event by far, so checked without building the full model."""
    try:
        report = fast_plist(raw)
        if report is None:
            report = plistlib.loads(raw)
    except Exception:  # noqa: BLE001 - any parser failure means "not a plist"
        raise BadEvent(400, "raw_payload: command report: not a valid plist") from None
    if (
        not isinstance(report, dict)
        or report.get("Status") != "Idle"
        or not isinstance(report.get("UDID"), str)
    ):
        raise BadEvent(400, "raw_payload: an Idle event whose report is not an Idle report")
    udid = report["UDID"]
    return ParsedEvent(
        event_id=event_id,
        topic="mdm.Connect",
        created_at=str(data.get("created_at", "")),
        enrollment_id=str(ids.get("id") or ev.get("enrollment_id") or udid),
        udid=str(ev.get("udid") or udid),
        status="Idle",
    )


# --- a faster, equivalent parse of the reports (the hot path) ------------------------------------
#
# plistlib's XML reader calls back into Python for every element (~150 us for a typical report);
# ElementTree's C parser builds the tree in C, and the walk below converts it (~75 us). The walk
# accepts only the plain shape plistlib writes and devices send, and converts values with
# plistlib's own rules (hex integers, base64 data, dates); for anything else (comments, CDATA,
# entity declarations, unknown or misplaced elements, a parser error) it returns None and the
# caller runs plistlib itself, so the result or the error is always plistlib's.


class _NotPlain(Exception):
    """The XML is not the plain plist shape the fast reader handles (the caller uses plistlib)."""


def _plist_value(el: Element) -> Any:
    tag = el.tag
    if tag == "dict":
        out: dict[str, Any] = {}
        it = iter(el)
        for k in it:
            if k.tag != "key" or len(k):
                raise _NotPlain
            v = next(it, None)
            if v is None:
                raise _NotPlain
            out[k.text or ""] = _plist_value(v)
        return out
    if tag == "array":
        return [_plist_value(c) for c in el]
    if len(el):
        raise _NotPlain
    if tag == "string":
        return el.text or ""
    if tag == "integer":
        text = el.text or ""
        return int(text, 16) if text.startswith(("0x", "0X")) else int(text)
    if tag == "true":
        return True
    if tag == "false":
        return False
    if tag == "real":
        return float(el.text or "")
    if tag == "data":
        return binascii.a2b_base64((el.text or "").encode("utf-8"))
    if tag == "date":
        return plistlib._date_from_string(el.text or "")  # type: ignore[attr-defined]
    raise _NotPlain


def fast_plist(raw: bytes) -> Any:
    """plistlib.loads(raw) for plain XML plists, else None (then the caller runs plistlib)."""
    if (
        not raw.startswith((b"<?xml", b"<plist"))
        or b"<!ENTITY" in raw
        or b"<!--" in raw
        or b"<![CDATA[" in raw
    ):
        return None
    try:
        parser = XMLParser()
        parser.feed(raw)
        root = parser.close()
        if root.tag != "plist" or len(root) != 1:
            return None
        return _plist_value(root[0])
    except Exception:  # noqa: BLE001 - anything unusual: plistlib decides
        return None


@dataclass
class _Report:
    """The parts of a command report that are stored (what parse_report's CommandResult gives)."""

    udid: str
    status: str
    command_uuid: str | None
    enrollment_id: str | None
    request_type: str | None
    response: dict[str, Any]
    error_chain: list[dict[str, Any]]


# Field names pydantic would also accept (populate_by_name) in place of Apple's keys.
_REPORT_FIELD_NAMES = frozenset(
    {"udid", "status", "command_uuid", "error_chain", "enrollment_id", "request_type", "response"}
)
_ERROR_ITEM_FIELD_NAMES = frozenset({"error_code", "error_domain", "localized_description", "us_english_description"})
_ERROR_ITEM_STR_KEYS = ("ErrorDomain", "LocalizedDescription", "USEnglishDescription")


def _fast_report(data: Any) -> _Report | None:
    """What parse_report(data) gives for a plain, valid report, without pydantic; None otherwise.

    It accepts only what CommandResult's strict validation accepts with the same result (exact
    types, no snake_case field names); anything else returns None and parse_report decides.
    """
    if type(data) is not dict or not _REPORT_FIELD_NAMES.isdisjoint(data):
        return None
    udid, status = data.get("UDID"), data.get("Status")
    command_uuid, enrollment_id = data.get("CommandUUID"), data.get("EnrollmentID")
    request_type = data.get("RequestType")
    if type(udid) is not str or type(status) is not str or status not in COMMAND_STATUSES:
        return None
    if status != "Idle" and "CommandUUID" not in data:
        return None
    for v in (command_uuid, enrollment_id, request_type):
        if v is not None and type(v) is not str:
            return None
    chain: list[dict[str, Any]] = []
    raw_chain = data.get("ErrorChain", [])
    if type(raw_chain) is not list:
        return None
    for item in raw_chain:
        if type(item) is not dict or not _ERROR_ITEM_FIELD_NAMES.isdisjoint(item):
            return None
        code = item.get("ErrorCode")
        if code is not None and type(code) is not int:
            return None
        out: dict[str, Any] = {} if code is None else {"ErrorCode": code}
        for k in _ERROR_ITEM_STR_KEYS:
            v = item.get(k)
            if v is not None:
                if type(v) is not str:
                    return None
                out[k] = v
        chain.append(out)
    response = {k: v for k, v in data.items() if k not in REPORT_ENVELOPE}
    if request_type is None:
        for key, rt in RESPONSE_KEY_TO_REQUEST_TYPE.items():
            if key in response:
                request_type = rt
                break
    return _Report(udid, status, command_uuid, enrollment_id, request_type, response, chain)
