"""NanoMDM's webhook events as the receiver gets them: a check-in or command report for one
device (UDID), its Authenticate and TokenUpdate messages, and a signed POST."""

from __future__ import annotations

import base64
import json
import plistlib

import requests

from ipad.webhook import sign

KEY = "webhook-test-key"
UDID = "00008120-0011223344556677"


def event(
    topic: str,
    payload: dict,
    event_id: str,
    created_at: str = "2026-11-27T10:00:00.000000001Z",
    udid: str = UDID,
    **extra: object,
) -> bytes:
    """The webhook's JSON body for `payload` (a plist dict) from the device `udid`."""
    raw = base64.b64encode(plistlib.dumps(payload)).decode()
    kind = "acknowledge_event" if topic == "mdm.Connect" else "checkin_event"
    body = {
        "topic": topic,
        "event_id": event_id,
        "created_at": created_at,
        kind: {"udid": udid, "ids": {"id": udid, "type": "Device"}, "raw_payload": raw, **extra},
    }
    return json.dumps(body).encode()


AUTH = {
    "MessageType": "Authenticate",
    "UDID": UDID,
    "SerialNumber": "ZDWK1DEGZD",
    "Topic": "com.apple.mgmt.x",
    "OSVersion": "17.6.1",
    "ProductName": "iPad13,18",
}
TOKEN = {
    "MessageType": "TokenUpdate",
    "UDID": UDID,
    "Topic": "com.apple.mgmt.x",
    "Token": b"t",
    "PushMagic": "m",
    "UnlockToken": b"unlock",
}


def post(url: str, body: bytes, key: str | None = KEY) -> requests.Response:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if key is not None:
        headers["X-Hmac-Signature"] = sign(body, key)
    return requests.post(url, data=body, headers=headers, timeout=10)
