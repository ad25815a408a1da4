"""Issue 22: what real devices send (NanoMDM's own test data, tests/ipad/vectors) through the webhook
parser into the registry: a DeviceInformation answer whose SerialNumber differs from the stored one
is noted, not ignored; an answer's own RequestType wins over a reused CommandUUID's row; an answer
from a device that never authenticated is not "enrolled"; a Shared iPad's user channel is not a
device of its own; and check-ins with the same timestamp are taken in the order they arrived."""

from __future__ import annotations

import base64
import json
import logging
import plistlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.db import Database
from ipad.store.registry import Registry
from ipad.webhook import parse_event

VECTORS = Path(__file__).resolve().parent / "vectors"
UDID = "66ADE930-5FDF-5EC4-8429-15640684C489"  # the device of NanoMDM's test data
SERIAL = "C02MT66KFLHH"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def with_payload(body: bytes, payload: dict[str, Any], event_id: str, created_at: str | None = None,
                 ids: dict[str, Any] | None = None) -> bytes:
    """A NanoMDM webhook body from the test data with another raw payload (and event id, time, ids)."""
    data = json.loads(body)
    ev = data.get("acknowledge_event") or data.get("checkin_event")
    ev["raw_payload"] = base64.b64encode(plistlib.dumps(payload)).decode()
    if ids is not None:
        ev["ids"] = ids
    data["event_id"] = event_id
    if created_at is not None:
        data["created_at"] = created_at
    return json.dumps(data).encode()


def checkin(message: dict[str, Any], event_id: str, created_at: str, ids: dict[str, Any] | None = None) -> bytes:
    return with_payload(vector("nanomdm-webhook-Authenticate.2.json"), message, event_id, created_at, ids)


AUTH = plistlib.loads(base64.b64decode(json.loads(vector("nanomdm-webhook-Authenticate.2.json"))
                                       ["checkin_event"]["raw_payload"]))
TOKEN = plistlib.loads(vector("nanomdm-TokenUpdate.2.plist"))
CHECKOUT = {"MessageType": "CheckOut", "UDID": UDID, "Topic": TOKEN["Topic"]}
DEVICE_INFO = json.loads(vector("nanomdm-webhook-DeviceInformation.1.json"))


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    db = Database(f"sqlite:///{tmp_path / 'werne.db'}")
    yield Registry(db, school_of=lambda s: ("gs-demo", "pupil") if s == SERIAL else None)
    db.dispose()


def apply(registry: Registry, *bodies: bytes) -> None:
    registry.apply_events([parse_event(b) for b in bodies])


def device(registry: Registry, eid: str = UDID) -> Any:
    return {d.enrollment_id: d for d in registry.list_devices()}.get(eid)


def enrol(registry: Registry) -> None:
    apply(registry, checkin(AUTH, "a1", "2026-03-02T08:00:00Z"), checkin(TOKEN, "t1", "2026-03-02T08:00:01Z"))
    assert device(registry).state == "enrolled" and device(registry).serial == SERIAL


def test_the_vectors_are_what_nanomdm_sends() -> None:
    e = parse_event(vector("nanomdm-webhook-DeviceInformation.1.json"))
    assert (e.enrollment_id, e.request_type, e.status) == (UDID, "DeviceInformation", "Acknowledged")
    assert e.payload["QueryResponses"]["HostName"] == "fruit.example.com"
    a = parse_event(vector("nanomdm-webhook-Authenticate.2.json"))
    assert (a.message_type, a.serial) == ("Authenticate", SERIAL)


def test_a_serial_number_that_differs_from_the_stored_one_is_noted(registry: Registry,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    enrol(registry)
    answer = {**plistlib.loads(base64.b64decode(DEVICE_INFO["acknowledge_event"]["raw_payload"]))}
    answer["QueryResponses"] = {**answer["QueryResponses"], "SerialNumber": "F9FXK0AAHG7K"}
    with caplog.at_level(logging.WARNING, logger="werne.ipad.store"):
        apply(registry, with_payload(vector("nanomdm-webhook-DeviceInformation.1.json"), answer, "d1"))
    d = device(registry)
    assert d.serial == SERIAL  # the inventory's iPad keeps its row; the other serial is not adopted
    assert d.answer("SerialConflict") == {"registered": SERIAL, "reported": "F9FXK0AAHG7K"}
    assert [r.getMessage() for r in caplog.records] == [
        f"enrolment {UDID} (registered as {SERIAL}) answered DeviceInformation with serial number F9FXK0AAHG7K"]


def test_a_reused_command_uuid_keeps_request_type_and_result_together(registry: Registry) -> None:
    enrol(registry)
    first = parse_event(vector("nanomdm-webhook-DeviceInformation.1.json"))
    reused = {"UDID": UDID, "Status": "Acknowledged", "CommandUUID": first.command_uuid, "RequestType": "SecurityInfo",
              "SecurityInfo": {"PasscodePresent": True}}
    apply(registry, vector("nanomdm-webhook-DeviceInformation.1.json"),
          with_payload(vector("nanomdm-webhook-DeviceInformation.1.json"), reused, "s1"))
    (row,) = registry.command_statuses([first.command_uuid or ""])
    assert row.request_type == "SecurityInfo" and "SecurityInfo" in row.result
    assert "QueryResponses" not in row.result


def test_an_answer_from_a_device_that_never_authenticated_is_not_enrolled(registry: Registry) -> None:
    apply(registry, vector("nanomdm-webhook-DeviceInformation.1.json"))
    d = device(registry)
    assert d is not None and d.state == "unconfirmed"
    assert registry.devices_by_serial() == {}  # no serial, and nothing counts it as enrolled


def test_a_shared_ipad_user_channel_is_not_a_device_of_its_own(registry: Registry) -> None:
    enrol(registry)
    user = {**TOKEN, "UserID": "A1B2C3D4-0000-1111-2222-333344445555", "UserShortName": "schueler07",
            "UserLongName": "Schüler 07"}
    ids = {"id": f"{UDID}:{user['UserID']}", "type": "Shared iPad", "parent_id": UDID}
    before = device(registry).last_seen_at
    apply(registry, checkin(user, "u1", "2026-03-02T09:00:00Z", ids))
    assert [d.enrollment_id for d in registry.list_devices()] == [UDID]
    assert device(registry).state == "enrolled" and device(registry).last_seen_at >= before
    # Without NanoMDM's ids (an older NanoMDM), the UserID in the check-in says the same.
    apply(registry, checkin({**user, "UserID": "B"}, "u2", "2026-03-02T09:00:01Z", {"id": f"{UDID}:B"}))
    assert [d.enrollment_id for d in registry.list_devices()] == [UDID]


@pytest.mark.parametrize("one_batch", [True, False], ids=["one batch", "two batches"])
def test_a_checkout_and_a_token_update_with_the_same_time_keep_their_order(registry: Registry,
                                                                           one_batch: bool) -> None:
    """Timestamps of whole seconds (as in NanoMDM's and other servers' test data) tie often."""
    enrol(registry)
    same = "2026-03-02T10:00:00Z"
    bodies = [checkin(CHECKOUT, "c1", same), checkin({**TOKEN, "PushMagic": "new"}, "t2", same)]
    if one_batch:
        apply(registry, *bodies)
    else:
        for b in bodies:
            apply(registry, b)
    assert device(registry).state == "enrolled"  # checked out, then enrolled again, as it arrived
    later = "2026-03-02T11:00:00Z"
    apply(registry, checkin(CHECKOUT, "c2", later), checkin({**TOKEN, "PushMagic": "x"}, "t3", later),
          checkin(CHECKOUT, "c3", later))
    assert device(registry).state == "checked_out"
