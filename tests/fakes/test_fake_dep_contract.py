"""Contract test for tests/fakes/fake_dep.py: the fake answers Apple's documented DEP request and response
shapes, directly (signing OAuth1 ourselves) and through real NanoDEP's proxy."""

from __future__ import annotations

import secrets
import time
import urllib.parse

import pytest
import requests

from tests.fakes.fake_dep import FakeDEP, oauth1_signature

SERIALS = ["C02XK1ABCD12", "DMPXK2ABCD"]


def _oauth_header(fake: FakeDEP, url: str) -> str:
    t = fake.tokens
    params = {
        "oauth_consumer_key": t.consumer_key,
        "oauth_token": t.access_token,
        "oauth_signature_method": "HMAC-SHA1",
        "oauth_timestamp": str(int(time.time())),
        "oauth_nonce": secrets.token_hex(8),
        "oauth_version": "1.0",
    }
    params["oauth_signature"] = oauth1_signature("GET", url, params, t.consumer_secret, t.access_secret)
    return "OAuth " + ", ".join(f'{k}="{urllib.parse.quote(v, safe="")}"' for k, v in params.items())


class Direct:
    """Talks to the fake the way Apple's documentation describes: /session first, then the header."""

    def __init__(self, fake: FakeDEP):
        self.fake = fake
        url = fake.url + "/session"
        r = requests.get(url, headers={"Authorization": _oauth_header(fake, url)}, timeout=5)
        assert r.status_code == 200, r.text
        self.token = r.json()["auth_session_token"]

    def call(self, method: str, path: str, **kw):  # type: ignore[no-untyped-def]
        headers = {"X-ADM-Auth-Session": self.token, "X-Server-Protocol-Version": "3"}
        return requests.request(method, self.fake.url + path, headers=headers, timeout=5, **kw)


class ViaNanoDEP:
    """The same calls through NanoDEP's /proxy/{name}/ (NanoDEP does the session itself)."""

    def __init__(self, nanodep, fake: FakeDEP):  # type: ignore[no-untyped-def]
        self.name = "c" + secrets.token_hex(4)
        nanodep.configure(self.name, fake)
        self.base = f"{nanodep.url}/proxy/{self.name}"
        self.auth = ("depserver", nanodep.api_key)

    def call(self, method: str, path: str, **kw):  # type: ignore[no-untyped-def]
        return requests.request(method, self.base + path, auth=self.auth, timeout=10, **kw)


@pytest.fixture(params=["direct", "nanodep"])
def dep(request, nanodep):  # type: ignore[no-untyped-def]
    fake = FakeDEP(set(SERIALS)).start()
    client = Direct(fake) if request.param == "direct" else ViaNanoDEP(nanodep, fake)
    yield fake, client
    fake.stop()


PROFILE = {
    "profile_name": "Schul-iPads",
    "url": "https://mdm.example.invalid/enroll",
    "is_supervised": True,
    "is_mdm_removable": False,
    "is_mandatory": True,
    "skip_setup_items": ["AppleID", "Siri"],
    "department": "Schulverwaltung",
    "support_phone_number": "+49 1",
    "support_email_address": "a@b.invalid",
}


def test_session_needs_valid_oauth1_signature(fake_dep: FakeDEP) -> None:
    url = fake_dep.url + "/session"
    assert requests.get(url, timeout=5).status_code == 401
    good = _oauth_header(fake_dep, url)
    tampered = good.replace('oauth_signature="', 'oauth_signature="x')
    assert requests.get(url, headers={"Authorization": tampered}, timeout=5).status_code == 401
    r = requests.get(url, headers={"Authorization": good}, timeout=5)
    assert r.status_code == 200 and set(r.json()) == {"auth_session_token"}


def test_endpoints_need_session_header(fake_dep: FakeDEP) -> None:
    r = requests.get(fake_dep.url + "/account", timeout=5)
    assert (r.status_code, r.text) == (401, "UNAUTHORIZED")
    r = requests.get(fake_dep.url + "/account", headers={"X-ADM-Auth-Session": "nope"}, timeout=5)
    assert (r.status_code, r.text) == (403, "FORBIDDEN")


def test_account_shape(dep) -> None:  # type: ignore[no-untyped-def]
    _, c = dep
    r = c.call("GET", "/account")
    assert r.status_code == 200
    body = r.json()
    for key in (
        "server_name",
        "server_uuid",
        "admin_id",
        "org_name",
        "org_email",
        "org_phone",
        "org_address",
    ):
        assert isinstance(body[key], str), key


def test_define_get_and_assign_profile(dep) -> None:  # type: ignore[no-untyped-def]
    fake, c = dep
    r = c.call("POST", "/profile", json=PROFILE)
    assert r.status_code == 200, r.text
    body = r.json()
    uuid = body["profile_uuid"]
    assert isinstance(uuid, str) and uuid and body["devices"] == {}
    got = c.call("GET", "/profile", params={"profile_uuid": uuid}).json()
    assert {k: got[k] for k in PROFILE} == PROFILE and got["profile_uuid"] == uuid
    r = c.call("PUT", "/profile/devices", json={"profile_uuid": uuid, "devices": [*SERIALS, "UNKNOWN1234"]})
    assert r.status_code == 200
    assert r.json() == {
        "profile_uuid": uuid,
        "devices": {SERIALS[0]: "SUCCESS", SERIALS[1]: "SUCCESS", "UNKNOWN1234": "NOT_ACCESSIBLE"},
    }
    assert fake.assigned_serials() == {s: uuid for s in SERIALS}


def test_define_profile_validation(dep) -> None:  # type: ignore[no-untyped-def]
    _, c = dep
    no_url = {k: v for k, v in PROFILE.items() if k != "url"}
    assert c.call("POST", "/profile", json=no_url).status_code == 400
    unsupervised_locked = {**PROFILE, "is_supervised": False}
    assert c.call("POST", "/profile", json=unsupervised_locked).status_code == 400
    assert c.call("GET", "/profile", params={"profile_uuid": "NOPE"}).status_code == 400
    r = c.call("PUT", "/profile/devices", json={"profile_uuid": "NOPE", "devices": SERIALS})
    assert (r.status_code, r.text) == (400, "PROFILE_NOT_FOUND")


def test_forced_statuses_and_throttling(dep) -> None:  # type: ignore[no-untyped-def]
    fake, c = dep
    uuid = c.call("POST", "/profile", json=PROFILE).json()["profile_uuid"]
    fake.force_status(SERIALS[0], "FAILED")
    fake.throttle(SERIALS[1], times=1, retry_after_seconds=7)
    body = c.call("PUT", "/profile/devices", json={"profile_uuid": uuid, "devices": SERIALS}).json()
    assert body["devices"] == {SERIALS[0]: "FAILED", SERIALS[1]: "THROTTLED"}
    assert body["retry_after_seconds"] == 7
    body = c.call("PUT", "/profile/devices", json={"profile_uuid": uuid, "devices": [SERIALS[1]]}).json()
    assert body["devices"] == {SERIALS[1]: "SUCCESS"} and "retry_after_seconds" not in body


def test_fetch_and_sync_devices(dep) -> None:  # type: ignore[no-untyped-def]
    _, c = dep
    r = c.call("POST", "/server/devices", json={"limit": 1})
    body = r.json()
    assert set(body) == {"cursor", "devices", "fetched_until", "more_to_follow"}
    assert body["more_to_follow"] is True and len(body["devices"]) == 1
    assert {"serial_number", "model", "profile_status"} <= set(body["devices"][0])
    body2 = c.call("POST", "/server/devices", json={"limit": 1000, "cursor": body["cursor"]}).json()
    assert body2["more_to_follow"] is False
    assert {d["serial_number"] for d in body["devices"] + body2["devices"]} == set(SERIALS)
    assert c.call("POST", "/devices/sync", json={"limit": 10}).status_code == 400  # cursor required
    synced = c.call("POST", "/devices/sync", json={"cursor": "0", "limit": 10}).json()
    assert synced["devices"] and all(d["op_type"] in ("added", "modified", "deleted") for d in synced["devices"])


def test_nanodep_reauthenticates_after_session_expiry(nanodep) -> None:  # type: ignore[no-untyped-def]
    with FakeDEP(set(SERIALS)) as fake:
        c = ViaNanoDEP(nanodep, fake)
        assert c.call("GET", "/account").status_code == 200
        fake.expire_sessions()
        assert c.call("GET", "/account").status_code == 200
        assert fake.session_calls == 2
