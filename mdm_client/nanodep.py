"""The NanoDEP API client: NanoDEP's configuration API and its DEP proxy.

All Apple DEP calls go through NanoDEP's transparently-authenticating proxy
(`/proxy/{name}/<endpoint>`), so Apple's OAuth tokens live only in NanoDEP. Configuration calls
(`PUT /v1/config/{name}`, `PUT /v1/tokens/{name}`) use the same API key (HTTP Basic, user
`depserver`). The DEP use cases (profiles, assignment with retries, status) are in enrolment.dep.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests

from core.secrets import Secret
from mdm_client import http
from mdm_client.errors import NanoDEPError, Unreachable

API_USER = "depserver"

# What an Apple error code in a DEP answer means for the admin.
APPLE_ERRORS = {
    "T_C_NOT_SIGNED": "new terms and conditions must be accepted in Apple School Manager",
    "FORBIDDEN": "the DEP token has expired or does not match; renew it in Apple School Manager",
    "USER_AGENT_INVALID": "Apple rejected the client's user agent",
    "PROFILE_NOT_FOUND": "Apple does not know the enrolment profile",
}


class NanoDEPClient:
    """One requests.Session to NanoDEP's API and DEP proxy; every call has a timeout."""

    def __init__(
        self,
        url: str,
        name: str,
        api_key: Secret,
        timeout: float = 15.0,
        session: requests.Session | None = None,
    ):
        self.url = url.rstrip("/")
        self.name = name
        self.timeout = timeout
        self.session = http.api_session(self.url, session)
        self.session.auth = (API_USER, api_key.reveal())

    def _call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}"
        where: dict[str, Any] = {"method": method, "url": url}
        try:
            r = http.send(self.session, method, url, timeout=self.timeout, json=body, params=params)
        except Unreachable as e:
            raise NanoDEPError(
                f"NanoDEP at {self.url} is not reachable ({e.exc_name}); nothing was changed", **where
            ) from None
        if r.status_code == 401 and not path.startswith("/proxy/"):
            raise NanoDEPError(f"{method} {url}: NanoDEP refused the API key (HTTP 401)", status=401, **where)
        if r.status_code >= 400:
            text = r.text.strip()[:200]
            hint = next((v for k, v in APPLE_ERRORS.items() if k in text), "")
            what = f"{method} {url}: HTTP {r.status_code}: {text or r.reason}"
            raise NanoDEPError(f"{what} ({hint})" if hint else what, status=r.status_code, server_message=text, **where)
        if not r.content:
            return None
        try:
            return http.json_of(r)
        except ValueError:
            raise NanoDEPError(f"{method} {url}: answer is not JSON", status=r.status_code, **where) from None

    # -- NanoDEP configuration --------------------------------------------------------------
    def version(self) -> str:
        return str((self._call("GET", "/version") or {}).get("version", ""))

    def set_base_url(self, base_url: str) -> None:
        """Point this DEP name at another DEP server (a simulator in tests)."""
        self._call("PUT", f"/v1/config/{self.name}", {"base_url": base_url})

    def set_tokens(self, tokens: dict[str, str]) -> None:
        """Store raw OAuth1 tokens (consumer_key, consumer_secret, access_token, access_secret, expiry)."""
        self._call("PUT", f"/v1/tokens/{self.name}", tokens)

    def token_expiry(self) -> datetime | None:
        """When Apple's server token of this DEP name expires (access_token_expiry of
        `GET /v1/tokens/{name}`); None if NanoDEP does not say. Only that field is read: the others
        are the OAuth secrets, dropped at once and never logged."""
        data = self._call("GET", f"/v1/tokens/{self.name}")
        value = data.get("access_token_expiry") if isinstance(data, dict) else None
        del data
        if not isinstance(value, str) or not value:
            return None
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise NanoDEPError(f"GET {self.url}/v1/tokens/{self.name}: access_token_expiry {value[:40]!r} is not "
                               "a date") from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)

    # -- Apple DEP, through the proxy ---------------------------------------------------------
    def _proxy(self, method: str, endpoint: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        return self._call(method, f"/proxy/{self.name}{endpoint}", body, params)

    def account(self) -> dict[str, Any]:
        return self._proxy("GET", "/account") or {}

    def define_profile(self, profile: dict[str, Any]) -> str:
        answer = self._proxy("POST", "/profile", profile) or {}
        uuid = answer.get("profile_uuid")
        if not uuid:
            raise NanoDEPError("POST /profile: Apple's answer has no profile_uuid")
        return str(uuid)

    def get_profile(self, profile_uuid: str) -> dict[str, Any]:
        return self._proxy("GET", "/profile", params={"profile_uuid": profile_uuid}) or {}

    def assign_profile(self, profile_uuid: str, serials: list[str]) -> dict[str, Any]:
        return self._proxy("PUT", "/profile/devices", {"profile_uuid": profile_uuid, "devices": serials}) or {}

    def fetch_devices(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Every device assigned to this MDM server (follows the cursor)."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(10_000):
            body: dict[str, Any] = {"limit": limit}
            if cursor:
                body["cursor"] = cursor
            page = self._proxy("POST", "/server/devices", body) or {}
            out.extend(page.get("devices") or [])
            cursor = page.get("cursor")
            if not page.get("more_to_follow"):
                break
        return out
