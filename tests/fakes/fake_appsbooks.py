"""A fake of Apple's App and Book Management API (v2), run as a real HTTP server on a loopback port.

It follows Apple's documented contract (developer.apple.com/documentation/devicemanagement:
"Managing assets", "Get Assets", "Get Assignments", "Associate Assets", "Disassociate Assets",
"Event Status" / StatusResponse, "Service Config", "Client Config", "Using paginated endpoints",
"Handling error responses"):

* every endpoint but `GET /service/config` needs `Authorization: Bearer <sToken>`; a missing or
  malformed header is 401 / 9722, an unknown token 401 / 9622, an expired one 401 / 9621, a revoked
  one 401 / 9625 (ErrorResponse `{errorNumber, errorMessage}`);
* `GET /assets` and `GET /assignments` page by `pageIndex` (`currentPageIndex`, `nextPageIndex`
  while more follow, `size`, `totalPages`, `versionId`, `tokenExpirationDate`, `uId`);
* `POST /assets/associate|disassociate` with `{assets:[{adamId, pricingParam}], serialNumbers}`
  checks the limits (9700, 9702), duplicates (9703, 9705), required fields (9718, 9719),
  device-assignability (9707) synchronously, and answers `{eventId, tokenExpirationDate, uId}`;
* `GET /status?eventId=` is PENDING for `pending_polls` polls, then COMPLETE, or FAILED with
  `failures: [{errorNumber: 9709, errorMessage, errorInfo: {serialNumbers}}]` for the serials it
  had no licence left for (asynchronous, as Apple does); an unknown event is 400 / 9708.

Each location is one token with its own assets and assignments. Requests are counted per
endpoint. tests/fakes/test_fake_appsbooks_contract.py checks this contract; the lab may use it too.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fixtures import http as http_fixture

ERRORS = {
    9602: ("Invalid argument.", 400),
    9621: ("The token has expired. You need to generate a new token online using your organization's account "
           "at either school.apple.com or business.apple.com.", 401),
    9622: ("Invalid authentication token", 401),
    9625: ("The server has revoked the sToken.", 401),
    9650: ("The provided page index must be greater than 0, and less than the total number of pages.", 400),
    9700: ("This request exceeds the maximum assets limit. Change the request to stay within the specified limit.",
           400),
    9702: ("This request exceeds the maximum serialNumbers limit. Change the request to stay within the specified "
           "limit.", 400),
    9703: ("This request contains duplicate assets. Change the request to send unique assets.", 400),
    9705: ("This request contains duplicate serialNumbers. Change the request to send unique serial numbers.", 400),
    9707: ("The asset in the request isn't device-assignable. Change the request to send device-assignable assets.",
           400),
    9708: ("Unable to find eventId.", 400),
    9709: ("There aren't enough assets available to complete this association.", 0),
    9718: ("This request doesn't contain an asset, which is a required argument. Change the request to provide an "
           "asset.", 400),
    9719: ("Either clientUserIds or serialNumbers are required arguments. Change the request to provide assignable "
           "users and devices.", 400),
    9722: ("This request contains an invalid authorization header. Change the request to send an authorization "
           "header that matches the format 'Bearer {sToken}'.", 401),
    9726: ("This request contains an unsupported HTTP method for the requested endpoint.", 405),
}
LIMITS = {
    "maxAssets": 25,
    "maxUsers": 100,
    "maxNotificationLength": 512,
    "maxRevokeClientUserIds": 100,
    "maxClientUserIds": 1000,
    "maxSerialNumbers": 1000,
    "maxRevokeSerialNumbers": 100,
    "maxMdmNameLength": 100,
    "maxMdmMetadataLength": 255,
    "maxMdmIdLength": 100,
}


def make_stoken(org_name: str, expires: datetime) -> str:
    """An sToken as Apple School Manager issues it: base64 of JSON {token, expDate, orgName}."""
    body = {"token": base64.b64encode(secrets.token_bytes(48)).decode(),
            "expDate": expires.strftime("%Y-%m-%dT%H:%M:%S%z"), "orgName": org_name}
    return base64.b64encode(json.dumps(body).encode()).decode()


@dataclass
class FakeAsset:
    """One app the location owns: licences bought (total), and whether devices may hold it."""

    adam_id: str
    total: int
    pricing_param: str = "STDQ"
    device_assignable: bool = True
    revocable: bool = True
    retired: int = 0


@dataclass
class FakeEvent:
    event_id: str
    event_type: str
    requested: list[tuple[str, str]]  # (adamId, serial)
    polls_left: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    completed: int = 0


@dataclass
class FakeLocation:
    """One Apps and Books location: its token, assets and device assignments."""

    name: str
    token: str
    expires: datetime
    assets: dict[str, FakeAsset] = field(default_factory=dict)
    assignments: set[tuple[str, str]] = field(default_factory=set)  # (adamId, serial)
    revoked: bool = False
    uid: str = field(default_factory=lambda: str(secrets.randbelow(10**16)).zfill(16))
    mdm_info: dict[str, Any] = field(default_factory=dict)
    version: str = field(default_factory=lambda: str(uuid.uuid1()))

    def assigned_count(self, adam_id: str) -> int:
        return sum(1 for a, _ in self.assignments if a == adam_id)


class FakeAppsBooks:
    """Apple's Apps and Books v2 endpoints on 127.0.0.1:<free port>; start() / stop(), or `with`."""

    def __init__(self, page_size: int = 500, pending_polls: int = 1):
        self.locations: dict[str, FakeLocation] = {}  # by token
        self.page_size = page_size
        self.pending_polls = pending_polls
        self.limits = dict(LIMITS)
        self.events: dict[str, FakeEvent] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path)
        self.bodies: list[dict[str, Any]] = []  # the manage requests' bodies
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- test controls ----------------------------------------------------------------------
    def add_location(self, name: str, assets: dict[str, int] | list[FakeAsset] | None = None,
                     expires: datetime | None = None) -> str:
        """A location with these assets (adamId -> licences bought); returns its sToken."""
        expires = expires or datetime.now(UTC) + timedelta(days=365)
        token = make_stoken(f"ORG {name}", expires)
        loc = FakeLocation(name, token, expires)
        items = assets if isinstance(assets, list) else [FakeAsset(a, n) for a, n in (assets or {}).items()]
        for a in items:
            loc.assets[a.adam_id] = a
        self.locations[token] = loc
        return token

    def location(self, name: str) -> FakeLocation:
        return next(loc for loc in self.locations.values() if loc.name == name)

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return sum(1 for m, p in self.requests if (method is None or m == method) and (path is None or p == path))

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/mdm/v2"

    def start(self) -> FakeAppsBooks:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

        self._server = http_fixture.start(ThreadingHTTPServer(("127.0.0.1", 0), Handler), "fake-appsbooks")
        return self

    def stop(self) -> None:
        if self._server is not None:
            http_fixture.stop(self._server)
            self._server = None

    def __enter__(self) -> FakeAppsBooks:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- HTTP -------------------------------------------------------------------------------
    def _send(self, h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json;charset=UTF-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _error(self, h: BaseHTTPRequestHandler, number: int) -> None:
        message, status = ERRORS[number]
        self._send(h, status, {"errorNumber": number, "errorMessage": message})

    def _auth(self, h: BaseHTTPRequestHandler) -> FakeLocation | int:
        header = h.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return 9722
        loc = self.locations.get(header[7:].strip())
        if loc is None:
            return 9622
        if loc.revoked:
            return 9625
        if loc.expires <= datetime.now(UTC):
            return 9621
        return loc

    def _common(self, loc: FakeLocation) -> dict[str, Any]:
        return {"tokenExpirationDate": loc.expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"), "uId": loc.uid}

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urllib.parse.urlsplit(h.path)
        path = parts.path.removeprefix("/mdm/v2")
        query = dict(urllib.parse.parse_qsl(parts.query))
        with self._lock:
            self.requests.append((method, path))
        routes = {
            ("GET", "/service/config"): self._service_config,
            ("GET", "/client/config"): self._client_config,
            ("POST", "/client/config"): self._client_config,
            ("GET", "/assets"): self._assets,
            ("GET", "/assignments"): self._assignments,
            ("POST", "/assets/associate"): self._manage,
            ("POST", "/assets/disassociate"): self._manage,
            ("GET", "/status"): self._status,
        }
        route = routes.get((method, path))
        if route is None:
            if any(p == path for _, p in routes):
                return self._error(h, 9726)
            return self._send(h, 404, {"errorNumber": 9602, "errorMessage": "Invalid argument."})
        body: Any = None
        if method == "POST":
            length = int(h.headers.get("Content-Length") or 0)
            try:
                body = json.loads(h.rfile.read(length) or b"{}")
            except ValueError:
                return self._error(h, 9602)
            if not isinstance(body, dict):
                return self._error(h, 9602)
        if path == "/service/config":
            return self._send(h, 200, self._service_config())
        loc = self._auth(h)
        if isinstance(loc, int):
            return self._error(h, loc)
        with self._lock:
            result = route(loc, method, path, query, body)  # type: ignore[operator]
        if isinstance(result, int):
            return self._error(h, result)
        self._send(h, 200, result)

    def _service_config(self, *_: Any) -> dict[str, Any]:
        base = "https://vpp.itunes.apple.com/mdm/v2"
        return {
            "errorCodes": [{"errorNumber": n, "errorMessage": m} for n, (m, _) in sorted(ERRORS.items())],
            "limits": self.limits,
            "notificationTypes": ["ASSET_MANAGEMENT", "USER_MANAGEMENT", "USER_ASSOCIATED", "ASSET_COUNT"],
            "urls": {
                "clientConfig": f"{base}/client/config", "getAssets": f"{base}/assets",
                "getAssignments": f"{base}/assignments", "associateAssets": f"{base}/assets/associate",
                "disassociateAssets": f"{base}/assets/disassociate", "eventStatus": f"{base}/status",
            },
        }

    def _client_config(self, loc: FakeLocation, method: str, _path: str, _q: dict[str, str],
                       body: dict[str, Any] | None) -> dict[str, Any] | int:
        if method == "POST":
            info = (body or {}).get("mdmInfo")
            if not isinstance(info, dict):
                return 9602
            loc.mdm_info = {k: str(info.get(k, "")) for k in ("id", "name", "metadata")}
        return {"countryISO2ACode": "DE", "defaultPlatform": "volumestore", "locationName": loc.name,
                "mdmInfo": loc.mdm_info, "subscribedNotificationTypes": [], "websiteURL": "https://school.apple.com",
                **self._common(loc)}

    def _page(self, loc: FakeLocation, key: str, records: list[dict[str, Any]], q: dict[str, str]
              ) -> dict[str, Any] | int:
        try:
            index = int(q.get("pageIndex", "0"))
        except ValueError:
            return 9602
        total_pages = max(1, -(-len(records) // self.page_size))
        if index < 0 or index >= total_pages:
            return 9650
        page = records[index * self.page_size:(index + 1) * self.page_size]
        out: dict[str, Any] = {key: page, "currentPageIndex": index, "size": len(page), "totalPages": total_pages,
                               "versionId": loc.version, **self._common(loc)}
        if index + 1 < total_pages:
            out["nextPageIndex"] = index + 1
        return out

    def _assets(self, loc: FakeLocation, _m: str, _p: str, q: dict[str, str], _b: Any) -> dict[str, Any] | int:
        records = []
        for a in loc.assets.values():
            if q.get("adamId") and q["adamId"] != a.adam_id:
                continue
            if q.get("pricingParam") and q["pricingParam"] != a.pricing_param:
                continue
            assigned = loc.assigned_count(a.adam_id)
            records.append({"adamId": a.adam_id, "assignedCount": assigned, "availableCount": a.total - assigned,
                            "deviceAssignable": a.device_assignable, "pricingParam": a.pricing_param,
                            "productType": "App", "retiredCount": a.retired, "revocable": a.revocable,
                            "supportedPlatforms": ["iOS"], "totalCount": a.total})
        return self._page(loc, "assets", records, q)

    def _assignments(self, loc: FakeLocation, _m: str, _p: str, q: dict[str, str], _b: Any) -> dict[str, Any] | int:
        records = [
            {"adamId": a, "pricingParam": loc.assets[a].pricing_param if a in loc.assets else "STDQ", "serialNumber": s}
            for a, s in sorted(loc.assignments)
            if (not q.get("adamId") or q["adamId"] == a) and (not q.get("serialNumber") or q["serialNumber"] == s)
        ]
        return self._page(loc, "assignments", records, q)

    def _manage(self, loc: FakeLocation, _m: str, path: str, _q: dict[str, str], body: dict[str, Any]
                ) -> dict[str, Any] | int:
        self.bodies.append(body)
        assets = body.get("assets")
        serials = body.get("serialNumbers") or []
        users = body.get("clientUserIds") or []
        if not isinstance(assets, list) or not assets:
            return 9718
        if not isinstance(serials, list) or not isinstance(users, list) or not (serials or users):
            return 9719
        if len(assets) > self.limits["maxAssets"]:
            return 9700
        if len(serials) > self.limits["maxSerialNumbers"]:
            return 9702
        ids = [str(a.get("adamId", "")) if isinstance(a, dict) else "" for a in assets]
        if len(set(ids)) != len(ids):
            return 9703
        if len(set(serials)) != len(serials):
            return 9705
        for a in ids:
            if a not in loc.assets:
                return 9602
            if not loc.assets[a].device_assignable and serials:
                return 9707
        op = "ASSOCIATE" if path.endswith("/associate") else "DISASSOCIATE"
        ev = FakeEvent(str(uuid.uuid4()), op, [(a, str(s)) for a in ids for s in serials], self.pending_polls)
        self.events[ev.event_id] = ev
        return {"eventId": ev.event_id, **self._common(loc)}

    def _run_event(self, loc: FakeLocation, ev: FakeEvent) -> None:
        short: dict[str, list[str]] = {}
        for adam, serial in ev.requested:
            if ev.event_type == "ASSOCIATE":
                if (adam, serial) in loc.assignments:
                    ev.completed += 1
                    continue
                if loc.assets[adam].total - loc.assigned_count(adam) <= 0:
                    short.setdefault(adam, []).append(serial)
                    continue
                loc.assignments.add((adam, serial))
            else:
                loc.assignments.discard((adam, serial))
            ev.completed += 1
        for _adam, serials in short.items():
            ev.failures.append({"errorNumber": 9709, "errorMessage": ERRORS[9709][0],
                                "errorInfo": {"serialNumbers": serials}})
        loc.version = str(uuid.uuid1())
        ev.done = True

    def _status(self, loc: FakeLocation, _m: str, _p: str, q: dict[str, str], _b: Any) -> dict[str, Any] | int:
        ev = self.events.get(q.get("eventId", ""))
        if ev is None:
            return 9708
        if not ev.done:
            if ev.polls_left > 0:
                ev.polls_left -= 1
                return {"eventStatus": "PENDING", "eventType": ev.event_type, "numCompleted": 0,
                        "numRequested": len(ev.requested), **self._common(loc)}
            self._run_event(loc, ev)
        out: dict[str, Any] = {"eventStatus": "FAILED" if ev.failures else "COMPLETE", "eventType": ev.event_type,
                               "numCompleted": ev.completed, "numRequested": len(ev.requested), **self._common(loc)}
        if ev.failures:
            out["failures"] = ev.failures
        return out
