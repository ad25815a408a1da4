"""A fake of Apple's device-enrolment (DEP) API, run as a real HTTP server on a loopback port.

It follows Apple's documented contract (Device Assignment: "Authenticating with a DEP server",
"Define a profile", "Assign a profile", "Get a profile", "Fetch devices", "Sync devices",
"Get account detail") as NanoDEP's godep/schema.go encodes it:

* `GET /session` takes an OAuth 1.0a `Authorization: OAuth ...` header (HMAC-SHA1 signed with
  the consumer and access secrets) and answers `{"auth_session_token": ...}`; every other
  endpoint needs `X-ADM-Auth-Session`: missing -> 401 UNAUTHORIZED, unknown -> 403 FORBIDDEN.
* `POST /profile` (define) -> `{profile_uuid, devices{serial: status}}`; `GET /profile?profile_uuid=`.
* `PUT /profile/devices` (assign) -> `{profile_uuid, devices{serial: status}}` with
  SUCCESS / NOT_ACCESSIBLE / FAILED / THROTTLED and, when throttled, `retry_after_seconds`.
* `POST /server/devices` and `POST /devices/sync` -> `{cursor, devices[], fetched_until,
  more_to_follow}`; sync needs a cursor.

Serials the organisation does not own answer NOT_ACCESSIBLE, as Apple's do. Tests can force
FAILED / NOT_ACCESSIBLE / THROTTLED for given serials. Every assignment is recorded.
tests/fakes/test_fake_dep_contract.py checks this contract directly and through real NanoDEP's proxy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fixtures import http as http_fixture

PROFILE_REQUIRED = ("profile_name", "url")


@dataclass
class OAuthTokens:
    """The raw OAuth1 tokens of one DEP server (what NanoDEP's PUT /v1/tokens/{name} takes)."""

    consumer_key: str = field(default_factory=lambda: "CK_" + secrets.token_hex(8))
    consumer_secret: str = field(default_factory=lambda: "CS_" + secrets.token_hex(8))
    access_token: str = field(default_factory=lambda: "AT_" + secrets.token_hex(8))
    access_secret: str = field(default_factory=lambda: "AS_" + secrets.token_hex(8))
    access_token_expiry: str = "2099-01-01T00:00:00Z"

    def as_json(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class Assignment:
    """One PUT /profile/devices call as the fake saw it."""

    profile_uuid: str
    serials: list[str]
    statuses: dict[str, str]


def _pct(s: str) -> str:
    return urllib.parse.quote(s, safe="-._~")


def parse_oauth_header(value: str) -> dict[str, str]:
    if not value.startswith("OAuth "):
        return {}
    out = {}
    for part in value[6:].split(","):
        if "=" not in part:
            continue
        k, v = part.strip().split("=", 1)
        out[urllib.parse.unquote(k)] = urllib.parse.unquote(v.strip('"'))
    return out


def oauth1_signature(
    method: str, url: str, params: dict[str, str], consumer_secret: str, token_secret: str
) -> str:
    """RFC 5849 HMAC-SHA1 signature over method, base URL and sorted parameters."""
    parts = urllib.parse.urlsplit(url)
    base_url = f"{parts.scheme}://{parts.netloc.lower()}{parts.path}"
    all_params = [(k, v) for k, v in params.items() if k != "oauth_signature"]
    all_params += urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    norm = "&".join(f"{_pct(k)}={_pct(v)}" for k, v in sorted((_pct(k), _pct(v)) for k, v in all_params))
    base = "&".join([method.upper(), _pct(base_url), _pct(norm)])
    key = f"{_pct(consumer_secret)}&{_pct(token_secret)}".encode()
    return base64.b64encode(hmac.new(key, base.encode(), hashlib.sha1).digest()).decode()


class FakeDEP:
    """Apple's DEP endpoints on 127.0.0.1:<free port>; start() / stop(), or use as a context manager."""

    def __init__(self, org_serials: set[str] | None = None):
        self.tokens = OAuthTokens()
        self.sessions: set[str] = set()
        self.profiles: dict[str, dict[str, Any]] = {}
        # serial -> profile_uuid, for devices the organisation owns (None: no profile yet)
        self.devices: dict[str, str | None] = {s: None for s in (org_serials or set())}
        self.forced: dict[str, str] = {}
        self.throttle_times: dict[str, int] = {}
        self.retry_after_seconds = 1
        self.assignments: list[Assignment] = []
        self.requests: list[tuple[str, str]] = []
        self.session_calls = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- test controls ----------------------------------------------------------------------
    def add_devices(self, serials: list[str]) -> None:
        with self._lock:
            for s in serials:
                self.devices.setdefault(s, None)

    def force_status(self, serial: str, status: str) -> None:
        """Answer `status` (FAILED or NOT_ACCESSIBLE) for this serial from now on."""
        self.forced[serial] = status

    def throttle(self, serial: str, times: int, retry_after_seconds: int = 1) -> None:
        """Answer THROTTLED for this serial `times` times, then behave normally."""
        self.throttle_times[serial] = times
        self.retry_after_seconds = retry_after_seconds

    def expire_sessions(self) -> None:
        self.sessions.clear()

    def assigned_serials(self) -> dict[str, str]:
        """serial -> profile_uuid of every serial assigned with SUCCESS."""
        return {s: p for s, p in self.devices.items() if p}

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- server -------------------------------------------------------------------------------
    def start(self) -> FakeDEP:
        handler = type("Handler", (DEPRequestHandler,), {"fake": self})
        self._server = http_fixture.start(ThreadingHTTPServer(("127.0.0.1", 0), handler), "fake-dep")
        return self

    def _assign_serials(self, uuid: str, serials: list[str]) -> dict[str, str]:
        statuses: dict[str, str] = {}
        with self._lock:
            for s in serials:
                if self.throttle_times.get(s, 0) > 0:
                    self.throttle_times[s] -= 1
                    statuses[s] = "THROTTLED"
                elif s in self.forced:
                    statuses[s] = self.forced[s]
                elif s not in self.devices:
                    statuses[s] = "NOT_ACCESSIBLE"
                else:
                    self.devices[s] = uuid
                    statuses[s] = "SUCCESS"
            if serials:
                self.assignments.append(Assignment(uuid, list(serials), dict(statuses)))
        return statuses

    def stop(self) -> None:
        if self._server is not None:
            http_fixture.stop(self._server)
            self._server = None

    def __enter__(self) -> FakeDEP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DEPRequestHandler(BaseHTTPRequestHandler):
    """Answers Apple's DEP endpoints from the state of `fake` (set per server by FakeDEP.start)."""

    fake: FakeDEP

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        ctype = "application/json;charset=UTF8" if not isinstance(body, str) else "text/plain"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return ValueError

    def _dispatch(self, method: str) -> None:
        parts = urllib.parse.urlsplit(self.path)
        path = parts.path
        with self.fake._lock:
            self.fake.requests.append((method, path))
        if path == "/session" and method == "GET":
            return self._session(parts)
        if not self.headers.get("X-ADM-Auth-Session"):
            return self._send(401, "UNAUTHORIZED")
        if self.headers["X-ADM-Auth-Session"] not in self.fake.sessions:
            return self._send(403, "FORBIDDEN")
        body = self._body() if method in ("POST", "PUT", "DELETE") else None
        if body is ValueError:
            return self._send(400, "MALFORMED_REQUEST_BODY")
        route = (method, path)
        handlers = {
            ("GET", "/account"): self._account,
            ("POST", "/profile"): self._define_profile,
            ("GET", "/profile"): self._get_profile,
            ("PUT", "/profile/devices"): self._assign,
            ("POST", "/server/devices"): self._fetch,
            ("POST", "/devices/sync"): self._sync,
        }
        h = handlers.get(route)
        if h is None:
            return self._send(404, "NOT_FOUND")
        return h(body, parts)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # -- endpoints --------------------------------------------------------------------
    def _session(self, parts: urllib.parse.SplitResult) -> None:
        oauth = parse_oauth_header(self.headers.get("Authorization", ""))
        t = self.fake.tokens
        if (
            oauth.get("oauth_consumer_key") != t.consumer_key
            or oauth.get("oauth_token") != t.access_token
            or oauth.get("oauth_signature_method") != "HMAC-SHA1"
        ):
            return self._send(401, "UNAUTHORIZED")
        url = f"http://{self.headers.get('Host', '')}{self.path}"
        expected = oauth1_signature("GET", url, oauth, t.consumer_secret, t.access_secret)
        if not hmac.compare_digest(expected, oauth.get("oauth_signature", "")):
            return self._send(401, "UNAUTHORIZED")
        token = secrets.token_hex(32).upper()
        with self.fake._lock:
            self.fake.sessions.add(token)
            self.fake.session_calls += 1
        return self._send(200, {"auth_session_token": token})

    def _account(self, _body: Any, _parts: Any) -> None:
        return self._send(
            200,
            {
                "server_name": "Fake DEP Server",
                "server_uuid": "677cab70-fe18-11e2-b778-0800200c9a66",
                "admin_id": "admin@example.invalid",
                "facilitator_id": "admin@example.invalid",
                "org_name": "Example City",
                "org_email": "it@example.invalid",
                "org_phone": "000",
                "org_address": "Town Hall",
                "org_id": "1234",
                "org_type": "edu",
                "org_version": "v2",
            },
        )

    def _define_profile(self, body: Any, _parts: Any) -> None:
        if not isinstance(body, dict):
            return self._send(400, "MALFORMED_REQUEST_BODY")
        if any(not body.get(k) for k in PROFILE_REQUIRED):
            return self._send(
                400, "CONFIG_NAME_REQUIRED" if not body.get("profile_name") else "CONFIG_URL_REQUIRED"
            )
        if "is_mdm_removable" in body and not isinstance(body["is_mdm_removable"], bool):
            return self._send(400, "CONFIG_INVALID")
        if body.get("is_mdm_removable") is False and body.get("is_supervised") is not True:
            return self._send(400, "CONFIG_INVALID")
        uuid = secrets.token_hex(16).upper()
        profile = {k: v for k, v in body.items() if k != "devices"}
        profile["profile_uuid"] = uuid
        with self.fake._lock:
            self.fake.profiles[uuid] = profile
        statuses = self.fake._assign_serials(uuid, list(body.get("devices") or []))
        return self._send(200, {"profile_uuid": uuid, "devices": statuses})

    def _get_profile(self, _body: Any, parts: urllib.parse.SplitResult) -> None:
        q = dict(urllib.parse.parse_qsl(parts.query))
        p = self.fake.profiles.get(q.get("profile_uuid", ""))
        if p is None:
            return self._send(400, "PROFILE_NOT_FOUND")
        return self._send(200, p)

    def _assign(self, body: Any, _parts: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("devices"), list):
            return self._send(400, "MALFORMED_REQUEST_BODY")
        uuid = body.get("profile_uuid") or ""
        if uuid not in self.fake.profiles:
            return self._send(400, "PROFILE_NOT_FOUND")
        statuses = self.fake._assign_serials(uuid, [str(s) for s in body["devices"]])
        answer: dict[str, Any] = {"profile_uuid": uuid, "devices": statuses}
        if "THROTTLED" in statuses.values():
            answer["retry_after_seconds"] = self.fake.retry_after_seconds
        return self._send(200, answer)

    def _device_list(self, body: Any, sync: bool) -> None:
        body = body or {}
        if sync and not body.get("cursor"):
            return self._send(400, "CURSOR_REQUIRED")
        limit = body.get("limit") or 100
        if not isinstance(limit, int) or limit < 1:
            return self._send(400, "INVALID_LIMIT")
        limit = min(limit, 1000)  # Apple caps the limit at 1000
        start = int(body.get("cursor") or "0", 16) if body.get("cursor") else 0
        with self.fake._lock:
            serials = sorted(self.fake.devices)
        page = serials[start : start + limit]
        devices = [
            {
                "serial_number": s,
                "model": "iPad (10th generation)",
                "description": "IPAD WI-FI",
                "device_family": "iPad",
                "os": "iPadOS",
                "profile_uuid": self.fake.devices[s] or "",
                "profile_status": "assigned" if self.fake.devices[s] else "empty",
            }
            for s in page
        ]
        if sync:
            for d in devices:
                d["op_type"] = "added"
        nxt = start + len(page)
        return self._send(
            200,
            {
                "cursor": format(nxt, "x"),
                "devices": devices,
                "fetched_until": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "more_to_follow": nxt < len(serials),
            },
        )

    def _fetch(self, body: Any, _parts: Any) -> None:
        return self._device_list(body, sync=False)

    def _sync(self, body: Any, _parts: Any) -> None:
        return self._device_list(body, sync=True)
