"""Contract test for tests/fakes/fake_appsbooks.py: the fake answers the requests and responses that
Apple documents for the App and Book Management API v2 (developer.apple.com/documentation/
devicemanagement: managing-assets, get-assets-4ski1, get-assignments-9wv1e, associate-assets,
disassociate-assets, events-status + statusresponse, service-config, client-config-4szk1 and
client-config-71glv, using-paginated-endpoints, handling-error-responses). Talked to with plain
`requests`, the way the documentation's curl examples do; then once through werne's client."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from core.secrets import Secret
from mdm_client.appsbooks import AppsBooksClient, AppsBooksError, AppsBooksTokenError, token_info
from tests.fakes.fake_appsbooks import FakeAppsBooks, FakeAsset

# Apple's documented examples (managing-assets): adamIds with STDQ licences.
KEYNOTE, PAGES = "361285480", "361309726"
SERIALS = [f"ZXCONTRACT{i:02d}" for i in range(12)]
# Keys Apple's examples show (and the objects' property lists name).
ASSET_KEYS = {"adamId", "assignedCount", "availableCount", "deviceAssignable", "pricingParam", "productType",
              "retiredCount", "revocable", "supportedPlatforms", "totalCount"}
PAGE_KEYS = {"currentPageIndex", "size", "totalPages", "tokenExpirationDate", "uId", "versionId"}
EVENT_KEYS = {"eventId", "tokenExpirationDate", "uId"}
STATUS_KEYS = {"eventStatus", "eventType", "numCompleted", "numRequested", "tokenExpirationDate", "uId"}


@pytest.fixture
def fake():  # type: ignore[no-untyped-def]
    with FakeAppsBooks(page_size=5, pending_polls=1) as f:
        yield f


def call(fake: FakeAppsBooks, method: str, path: str, token: str | None, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.request(method, fake.url + path, headers=headers, timeout=5, **kw)


def error_of(r: requests.Response) -> tuple[int, int]:
    body = r.json()
    assert set(body) >= {"errorNumber", "errorMessage"} and isinstance(body["errorMessage"], str)
    return r.status_code, body["errorNumber"]


def test_stoken_is_base64_json_with_token_expdate_orgname(fake: FakeAppsBooks) -> None:
    when = datetime(2030, 11, 8, 22, 33, 22, tzinfo=UTC)
    token = fake.add_location("gs", {KEYNOTE: 3}, expires=when)
    data = json.loads(base64.b64decode(token))
    assert set(data) == {"token", "expDate", "orgName"}
    assert data["expDate"] == "2030-11-08T22:33:22+0000"  # Apple's documented form
    assert token_info(Secret(token, "t")).expires == when
    # Apple's own documented example sToken reads the same way.
    example = ("eyJ0b2tlbiI6InQxWG9VenBMRXRwZGxhK25zeENkd3JjdDBSandkaWNOaGRreW5STW05VVAyc2hSYTBMUnVGcVpQM0pLQm"
               "JUTWxDSE42ajNta1R6WVlQbVVkVXJXV2x3PT0iLCJleHBEYXRlIjoiMjAxNC0wOC0xNVQxODoxMzo1Mi0wNzAwIiwib3JnTmFt"
               "ZSI6Ik9SRy4yMDA5MDcxNjAwIn0=")
    info = token_info(Secret(example, "apple"))
    assert info.org_name == "ORG.2009071600"
    assert info.expires == datetime(2014, 8, 16, 1, 13, 52, tzinfo=UTC)


def test_service_config_needs_no_token_and_names_limits(fake: FakeAppsBooks) -> None:
    r = call(fake, "GET", "/service/config", None)
    assert r.status_code == 200
    body = r.json()
    assert {"maxAssets", "maxSerialNumbers", "maxRevokeSerialNumbers"} <= set(body["limits"])
    assert {e["errorNumber"] for e in body["errorCodes"]} >= {9621, 9625, 9702, 9709}
    assert {"getAssets", "associateAssets", "eventStatus"} <= set(body["urls"])


def test_client_config_read_and_write(fake: FakeAppsBooks) -> None:
    token = fake.add_location("gs", {KEYNOTE: 3})
    info = {"id": "werne-1", "name": "werne", "metadata": "0.1"}
    r = call(fake, "POST", "/client/config", token, json={"mdmInfo": info})
    assert r.status_code == 200 and r.json()["mdmInfo"] == info
    got = call(fake, "GET", "/client/config", token).json()
    assert {"locationName", "mdmInfo", "tokenExpirationDate", "uId", "countryISO2ACode"} <= set(got)
    assert got["locationName"] == "gs"


def test_assets_shape_filter_and_pagination(fake: FakeAppsBooks) -> None:
    token = fake.add_location("gs", {str(400000000 + i): 10 for i in range(12)})
    first = call(fake, "GET", "/assets", token).json()
    assert PAGE_KEYS <= set(first) and set(first["assets"][0]) == ASSET_KEYS
    assert (first["currentPageIndex"], first["nextPageIndex"], first["totalPages"], first["size"]) == (0, 1, 3, 5)
    last = call(fake, "GET", "/assets", token, params={"pageIndex": 2}).json()
    assert "nextPageIndex" not in last and last["size"] == 2  # no nextPageIndex on the last page
    assert error_of(call(fake, "GET", "/assets", token, params={"pageIndex": 3})) == (400, 9650)
    one = call(fake, "GET", "/assets", token, params={"adamId": "400000003", "pricingParam": "STDQ"}).json()
    assert [a["adamId"] for a in one["assets"]] == ["400000003"]


def test_associate_is_asynchronous_then_counts_and_assignments_change(fake: FakeAppsBooks) -> None:
    token = fake.add_location("gs", {KEYNOTE: 20, PAGES: 20})
    body = {"assets": [{"adamId": KEYNOTE, "pricingParam": "STDQ"}, {"adamId": PAGES, "pricingParam": "STDQ"}],
            "serialNumbers": SERIALS[:4]}
    r = call(fake, "POST", "/assets/associate", token, json=body)
    assert r.status_code == 200 and set(r.json()) == EVENT_KEYS
    event = r.json()["eventId"]
    pending = call(fake, "GET", "/status", token, params={"eventId": event}).json()
    assert set(pending) >= STATUS_KEYS and pending["eventStatus"] == "PENDING" and pending["eventType"] == "ASSOCIATE"
    done = call(fake, "GET", "/status", token, params={"eventId": event}).json()
    assert (done["eventStatus"], done["numCompleted"], done["numRequested"]) == ("COMPLETE", 8, 8)
    assets = {a["adamId"]: a for a in call(fake, "GET", "/assets", token).json()["assets"]}
    assert (assets[KEYNOTE]["assignedCount"], assets[KEYNOTE]["availableCount"], assets[KEYNOTE]["totalCount"]) == (
        4, 16, 20)
    got = call(fake, "GET", "/assignments", token, params={"serialNumber": SERIALS[0]}).json()
    assert PAGE_KEYS <= set(got)
    assert sorted(a["adamId"] for a in got["assignments"]) == sorted([KEYNOTE, PAGES])
    assert set(got["assignments"][0]) == {"adamId", "pricingParam", "serialNumber"}
    r = call(fake, "POST", "/assets/disassociate", token,
             json={"assets": [{"adamId": KEYNOTE, "pricingParam": "STDQ"}], "serialNumbers": SERIALS[:2]})
    ev = r.json()["eventId"]
    call(fake, "GET", "/status", token, params={"eventId": ev})
    st = call(fake, "GET", "/status", token, params={"eventId": ev}).json()
    assert (st["eventStatus"], st["eventType"]) == ("COMPLETE", "DISASSOCIATE")
    assert call(fake, "GET", "/assets", token, params={"adamId": KEYNOTE}).json()["assets"][0]["assignedCount"] == 2


def test_too_few_licences_fail_asynchronously_with_9709_naming_the_serials(fake: FakeAppsBooks) -> None:
    token = fake.add_location("gs", {KEYNOTE: 3})
    r = call(fake, "POST", "/assets/associate", token,
             json={"assets": [{"adamId": KEYNOTE, "pricingParam": "STDQ"}], "serialNumbers": SERIALS[:5]})
    assert r.status_code == 200  # accepted: the shortage is found while processing
    event = r.json()["eventId"]
    call(fake, "GET", "/status", token, params={"eventId": event})
    st = call(fake, "GET", "/status", token, params={"eventId": event}).json()
    assert (st["eventStatus"], st["numCompleted"], st["numRequested"]) == ("FAILED", 3, 5)
    (failure,) = st["failures"]
    assert failure["errorNumber"] == 9709 and failure["errorInfo"] == {"serialNumbers": SERIALS[3:5]}


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no header", (401, 9722)),
        ("not bearer", (401, 9722)),
        ("unknown token", (401, 9622)),
        ("expired token", (401, 9621)),
        ("revoked token", (401, 9625)),
    ],
)
def test_token_errors(fake: FakeAppsBooks, case: str, expected: tuple[int, int]) -> None:
    token = fake.add_location("gs", {KEYNOTE: 3})
    headers: dict[str, str] = {}
    if case == "not bearer":
        headers = {"Authorization": f"Basic {token}"}
    elif case == "unknown token":
        headers = {"Authorization": "Bearer " + base64.b64encode(b'{"token":"x"}').decode()}
    elif case == "expired token":
        old = fake.add_location("old", {KEYNOTE: 3}, expires=datetime.now(UTC) - timedelta(days=1))
        headers = {"Authorization": f"Bearer {old}"}
    elif case == "revoked token":
        fake.location("gs").revoked = True
        headers = {"Authorization": f"Bearer {token}"}
    r = requests.get(fake.url + "/assets", headers=headers, timeout=5)
    assert error_of(r) == expected


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"serialNumbers": ["A1"]}, 9718),
        ({"assets": [{"adamId": KEYNOTE}]}, 9719),
        ({"assets": [{"adamId": KEYNOTE}], "serialNumbers": ["A1", "A1"]}, 9705),
        ({"assets": [{"adamId": KEYNOTE}, {"adamId": KEYNOTE}], "serialNumbers": ["A1"]}, 9703),
        ({"assets": [{"adamId": "900000001"}], "serialNumbers": ["A1"]}, 9707),
        ({"assets": [{"adamId": KEYNOTE}], "serialNumbers": [f"S{i}" for i in range(1001)]}, 9702),
        ({"assets": [{"adamId": str(i)} for i in range(26)], "serialNumbers": ["A1"]}, 9700),
    ],
)
def test_manage_request_errors_are_synchronous(fake: FakeAppsBooks, body: dict[str, Any], expected: int) -> None:
    token = fake.add_location("gs", [FakeAsset(KEYNOTE, 3), FakeAsset("900000001", 3, device_assignable=False)])
    assert error_of(call(fake, "POST", "/assets/associate", token, json=body)) == (400, expected)
    assert not fake.events  # "Synchronous failures result in no asynchronous processing."


def test_unknown_event_and_wrong_method(fake: FakeAppsBooks) -> None:
    token = fake.add_location("gs", {KEYNOTE: 3})
    assert error_of(call(fake, "GET", "/status", token, params={"eventId": "nope"})) == (400, 9708)
    assert error_of(call(fake, "PUT", "/assets", token)) == (405, 9726)


def test_werne_client_pages_waits_and_never_shows_the_token(fake: FakeAppsBooks) -> None:
    token = fake.add_location("gs", {str(400000000 + i): 2 for i in range(12)})
    client = AppsBooksClient(fake.url, Secret(token, "t"), "gs", timeout=5)
    assert len(client.assets()) == 12 and client.calls == 3  # three pages of five
    event = client.associate([("400000001", "STDQ")], SERIALS[:3])
    st = client.wait_for_events([event], timeout_s=5, poll_s=0.01)[event]
    assert st.status == "FAILED" and st.failed_serials() == {SERIALS[2]: st.failed_serials()[SERIALS[2]]}
    assert "9709" in st.failed_serials()[SERIALS[2]]
    assert token not in repr(client)
    fake.location("gs").revoked = True
    with pytest.raises(AppsBooksTokenError) as e:
        client.assets()
    assert "9625" in str(e.value) and "location gs" in str(e.value) and token not in str(e.value)
    assert e.value.exit_code == 3
    with pytest.raises(AppsBooksError) as e2:
        AppsBooksClient("http://127.0.0.1:9/mdm/v2", Secret(token, "t"), "gs", timeout=1, retries=0).assets()
    assert "not reachable" in str(e2.value) and token not in str(e2.value)
