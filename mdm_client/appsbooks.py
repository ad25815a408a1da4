"""The client of Apple's App and Book Management API (v2, "Apps and Books for Organizations"):
one location's app licences, read and assigned to iPads by serial number.

Apple's documentation this follows (developer.apple.com/documentation/devicemanagement/...):
`managing-assets` (GET assets, GET assignments, POST assets/associate and assets/disassociate,
GET status?eventId=, request size limits), `service-config` (limits: maxAssets, maxSerialNumbers),
`client-config-4szk1` / `client-config-71glv` (POST/GET client/config), `using-paginated-endpoints`
(pageIndex, nextPageIndex, totalPages), `statusresponse` (eventStatus PENDING/COMPLETE/FAILED,
failures[]) and `handling-error-responses` (ErrorResponse {errorNumber, errorMessage}; e.g. 9621
token expired and 9625 token revoked (HTTP 401), 9702 too many serialNumbers, 9709 not enough
licences (asynchronous, in failures)).

Every call sends `Authorization: Bearer <sToken>`. The token is a `core.secrets.Secret`: it is
revealed only into that header and never appears in an error message, a log line or `repr`.
The sToken is base64 JSON `{token, expDate, orgName}`; `token_info` reads its expiry.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from core.secrets import Secret
from core.text import one_line
from mdm_client import http
from mdm_client.errors import AppsBooksError, AppsBooksTokenError, Unreachable

# Error numbers that mean "this location's token cannot be used" (handling-error-responses).
TOKEN_ERRORS = {
    9601: "Apple wants a login: the location token is missing or not accepted",
    9621: "the location token has expired: download a new one in Apple School Manager (Settings > Apps and Books)",
    9622: "Apple does not accept the location token: download it again in Apple School Manager",
    9625: "Apple has revoked the location token (another MDM took over the location?): download a new one",
    9722: "Apple did not accept the Authorization header (Bearer sToken)",
}
# Error numbers worth a hint beside Apple's own message.
HINTS = {
    9646: "Apple is throttling this organisation: try again in a few minutes",
    9702: "too many serial numbers in one request (service config maxSerialNumbers)",
    9707: "the app cannot be assigned to devices (deviceAssignable false)",
    9709: "not enough licences at this location: buy more in Apple School Manager",
    9729: "Apple's service is temporarily unavailable: try again later",
}
EVENT_STATUSES = ("PENDING", "COMPLETE", "FAILED")
# Apple's documented defaults (service-config example); the live limits come from service/config.
DEFAULT_LIMITS = {"maxAssets": 25, "maxSerialNumbers": 1000, "maxRevokeSerialNumbers": 100}


@dataclass(frozen=True)
class TokenInfo:
    """What an sToken says about itself (never the token): its expiry and organisation."""

    expires: datetime | None
    org_name: str


def token_info(token: Secret) -> TokenInfo:
    """Read expDate and orgName from an sToken (base64 JSON). Raises ValueError if it is not one."""
    raw = token.reveal().strip()
    try:
        data = json.loads(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=False))
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not an Apps and Books sToken (not base64 JSON)") from None
    if not isinstance(data, dict) or "token" not in data:
        raise ValueError("not an Apps and Books sToken (no token field)")
    expires = None
    exp = data.get("expDate")
    if isinstance(exp, str) and exp:
        try:
            expires = datetime.strptime(exp, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            try:
                expires = datetime.fromisoformat(exp)
            except ValueError:
                raise ValueError(f"sToken expDate {exp[:40]!r} is not an ISO 8601 date") from None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
    return TokenInfo(expires, str(data.get("orgName") or ""))


@dataclass(frozen=True)
class Asset:
    """One app or book the location owns (ResponseAsset), with its licence counts."""

    adam_id: str
    pricing_param: str
    product_type: str
    total: int
    assigned: int
    available: int
    retired: int
    device_assignable: bool
    revocable: bool

    @classmethod
    def from_json(cls, a: dict[str, Any]) -> Asset:
        return cls(
            adam_id=str(a["adamId"]),
            pricing_param=str(a.get("pricingParam", "STDQ")),
            product_type=str(a.get("productType", "")),
            total=int(a.get("totalCount", 0)),
            assigned=int(a.get("assignedCount", 0)),
            available=int(a.get("availableCount", 0)),
            retired=int(a.get("retiredCount", 0)),
            device_assignable=bool(a.get("deviceAssignable", False)),
            revocable=bool(a.get("revocable", False)),
        )


@dataclass(frozen=True)
class Assignment:
    """One current licence assignment (device-based: serial_number; user-based: client_user_id)."""

    adam_id: str
    pricing_param: str
    serial_number: str | None
    client_user_id: str | None


@dataclass(frozen=True)
class EventStatus:
    """Apple's StatusResponse for one asynchronous event."""

    event_id: str
    status: str  # PENDING | COMPLETE | FAILED
    event_type: str
    num_completed: int
    num_requested: int
    failures: list[dict[str, Any]] = field(default_factory=list)

    def failed_serials(self) -> dict[str, str]:
        """Serial -> Apple's reason, for the failures that name serial numbers."""
        out: dict[str, str] = {}
        for f in self.failures:
            info = f.get("errorInfo") or {}
            reason = f"Apple error {f.get('errorNumber', '?')}: {one_line(str(f.get('errorMessage', '')), 160)}"
            for s in info.get("serialNumbers") or []:
                out[str(s)] = reason
        return out

    @property
    def failures_all_named(self) -> bool:
        """Every failure names the serials it is about (so the others are known to be done)."""
        return all((f.get("errorInfo") or {}).get("serialNumbers") for f in self.failures)


class AppsBooksClient:
    """One location of Apple's Apps and Books service: one session, a timeout on every call, the
    location's token as Bearer; `calls` counts the HTTP requests made (for the bench and tests)."""

    def __init__(
        self,
        base_url: str,
        token: Secret,
        location: str = "",
        timeout: float = 20.0,
        retries: int = 2,
        session: requests.Session | None = None,
    ):
        self.url = base_url.rstrip("/")
        self.location = location
        self.timeout = timeout
        self._token = token
        self.session = http.api_session(self.url, session, retries=retries, retry_methods=("GET",))
        self.calls = 0
        self._limits: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"AppsBooksClient({self.url!r}, location={self.location!r}, token=***)"

    # -- transport ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
              auth: bool = True) -> dict[str, Any]:
        url = f"{self.url}{path}"
        where: dict[str, Any] = {"method": method, "url": url}
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        self.calls += 1
        try:
            r = http.send(self.session, method, url, timeout=self.timeout, json=body, params=params, headers=headers)
        except Unreachable as e:
            raise AppsBooksError(
                f"{method} {url}: Apple's Apps and Books service is not reachable ({e.reason}); nothing was changed",
                **where,
            ) from None
        try:
            data = http.json_of(r) if r.content else {}
        except ValueError:
            data = None
        if r.status_code >= 400 or not isinstance(data, dict) or "errorNumber" in (data or {}):
            number = data.get("errorNumber") if isinstance(data, dict) else None
            message = one_line(str(data.get("errorMessage", ""))) if isinstance(data, dict) else ""
            if not message:
                message = one_line(r.text or r.reason or "", 200)
            where_ = f"{method} {url}: HTTP {r.status_code}"
            what = f"Apple error {number}: {message}" if number is not None else message
            if number in TOKEN_ERRORS or (r.status_code == 401 and number is None):
                hint = TOKEN_ERRORS.get(number, "Apple refused the location token")  # type: ignore[arg-type]
                raise AppsBooksTokenError(
                    f"{where_}: {what} (location {self.location or '?'}: {hint})",
                    error_number=number, status=r.status_code, server_message=message, **where,
                )
            known = HINTS.get(number) if isinstance(number, int) else None
            raise AppsBooksError(
                f"{where_}: {what}" + (f" ({known})" if known else ""),
                error_number=number if isinstance(number, int) else None,
                status=r.status_code, server_message=message, **where,
            )
        return data

    def _pages(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every record of a paginated endpoint, following nextPageIndex (bounded)."""
        page: int | None = 0
        for _ in range(100_000):
            q = {**{k: v for k, v in params.items() if v is not None}}
            if page:
                q["pageIndex"] = page
            data = self._call("GET", path, params=q)
            yield from data.get(key) or []
            nxt = data.get("nextPageIndex")
            if nxt is None or nxt == page:
                return
            page = int(nxt)

    # -- configuration -----------------------------------------------------------------------
    def service_config(self) -> dict[str, Any]:
        """GET service/config (no token needed): URLs, limits, notification types, error codes."""
        data = self._call("GET", "/service/config", auth=False)
        self._limits = {**DEFAULT_LIMITS, **(data.get("limits") or {})}
        return data

    def limits(self) -> dict[str, int]:
        """The request limits (maxAssets, maxSerialNumbers, ...), read once per client."""
        if self._limits is None:
            self.service_config()
        assert self._limits is not None
        return self._limits

    def client_config(self) -> dict[str, Any]:
        """GET client/config: the location's name, the MDM that manages it, the token's expiry."""
        return self._call("GET", "/client/config")

    def set_client_config(self, mdm_id: str, name: str, metadata: str = "") -> dict[str, Any]:
        """POST client/config: record this MDM (id, name, metadata) as the location's manager."""
        return self._call("POST", "/client/config", {"mdmInfo": {"id": mdm_id, "name": name, "metadata": metadata}})

    # -- assets and assignments ---------------------------------------------------------------
    def assets(self, adam_id: str | None = None, pricing_param: str | None = None) -> list[Asset]:
        """GET assets (every page): what the location owns, with licence counts."""
        return [
            Asset.from_json(a)
            for a in self._pages("/assets", "assets", {"adamId": adam_id, "pricingParam": pricing_param})
        ]

    def assignments(self, adam_id: str | None = None, serial_number: str | None = None) -> list[Assignment]:
        """GET assignments (every page): who holds which licence."""
        return [
            Assignment(str(a["adamId"]), str(a.get("pricingParam", "STDQ")), a.get("serialNumber"),
                       a.get("clientUserId"))
            for a in self._pages("/assignments", "assignments", {"adamId": adam_id, "serialNumber": serial_number})
        ]

    def _manage(self, op: str, assets: list[tuple[str, str]], serials: list[str]) -> str:
        limits = self.limits()
        if len(assets) > limits["maxAssets"] or len(serials) > limits["maxSerialNumbers"]:
            # A programming error in the caller's batching: Apple would answer 9700/9702.
            raise ValueError(f"{op}: {len(assets)} assets / {len(serials)} serials exceed Apple's limits {limits}")
        body = {"assets": [{"adamId": a, "pricingParam": p} for a, p in assets], "serialNumbers": serials}
        data = self._call("POST", f"/assets/{op}", body)
        if not data.get("eventId"):
            raise AppsBooksError(f"POST {self.url}/assets/{op}: Apple's answer has no eventId",
                                 method="POST", url=f"{self.url}/assets/{op}")
        return str(data["eventId"])

    def associate(self, assets: list[tuple[str, str]], serials: list[str]) -> str:
        """POST assets/associate: assign each (adamId, pricingParam) to each serial. Returns the eventId."""
        return self._manage("associate", assets, serials)

    def disassociate(self, assets: list[tuple[str, str]], serials: list[str]) -> str:
        """POST assets/disassociate: take the licences back from the serials. Returns the eventId."""
        return self._manage("disassociate", assets, serials)

    def event_status(self, event_id: str) -> EventStatus:
        """GET status?eventId=: where an asynchronous associate/disassociate stands."""
        d = self._call("GET", "/status", params={"eventId": event_id})
        status = str(d.get("eventStatus", ""))
        if status not in EVENT_STATUSES:
            raise AppsBooksError(f"GET {self.url}/status: unknown eventStatus {status[:20]!r}",
                                 method="GET", url=f"{self.url}/status")
        return EventStatus(event_id, status, str(d.get("eventType", "")), int(d.get("numCompleted", 0)),
                           int(d.get("numRequested", 0)), list(d.get("failures") or []))

    def wait_for_events(self, event_ids: list[str], timeout_s: float, poll_s: float,
                        sleep: Callable[[float], None] = time.sleep) -> dict[str, EventStatus]:
        """Poll each event until it is COMPLETE or FAILED or the timeout passes (then it stays PENDING)."""
        out: dict[str, EventStatus] = {}
        pending = list(dict.fromkeys(event_ids))
        end = time.monotonic() + timeout_s
        while pending:
            for eid in list(pending):
                st = self.event_status(eid)
                out[eid] = st
                if st.status != "PENDING":
                    pending.remove(eid)
            if not pending or time.monotonic() >= end:
                break
            sleep(poll_s)
        return out
