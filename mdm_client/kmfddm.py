"""The KMFDDM API client: declarations, sets, enrolment-to-set mapping and declarative status.

KMFDDM (github.com/jessepeterson/kmfddm, v0.8.3; contract: its docs/openapi.yaml) serves the
declarations to devices and, when a declaration, set or mapping changes, enqueues the
DeclarativeManagement command through NanoMDM's API (its `-enqueue` URL). Every change call takes
`notify`; `notify=False` sends KMFDDM's `nonotify=1`, so the change is stored and devices get it at
their next DeclarativeManagement check-in.

Answers: a change is 204 when it changed something and 304 when it was already so (the code of
v0.8.3; its openapi.yaml has the two swapped for PUT /v1/declarations). Errors are JSON
`{"error": "..."}`. A notification that NanoMDM refuses or never receives is only logged by
KMFDDM: the change still answers 204 (tests/mdm_client/test_kmfddm_contract.py shows it), so a caller learns
whether devices got a change from their declaration status, not from these answers.

One session, a timeout on every call, bounded retries for GET and PUT (mdm_client.http).

    MDMError
    └── APIError (mdm_client.errors)
        └── KMFDDMError           KMFDDM unreachable or answered with an error   (exit 3)
            └── KMFDDMAuthError   KMFDDM refused the API key                     (exit 2)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests

from core.secrets import Secret
from core.text import one_line
from mdm_client import http
from mdm_client.errors import KMFDDMAuthError, KMFDDMError, Unreachable

__all__ = ["KMFDDMAuthError", "KMFDDMClient", "KMFDDMError"]

API_USER = "kmfddm"


def _seg(value: str) -> str:
    """One path segment; KMFDDM's router takes ids as they are, so only `/`, `?`, `#` and `%` are escaped."""
    if not value:
        raise KMFDDMError("empty identifier in a KMFDDM path")
    return quote(value, safe="@:,+=")


class KMFDDMClient:
    """One requests.Session to KMFDDM's API (HTTP Basic, user `kmfddm`); every call has a timeout."""

    def __init__(
        self,
        url: str,
        api_key: Secret,
        session: requests.Session | None = None,
        timeout: float = 10.0,
        retries: int = 2,
    ):
        self.url = url.rstrip("/")
        self._auth = (API_USER, api_key.reveal())
        self.timeout = timeout
        self.session = http.api_session(self.url, session, retries, ("GET", "PUT"))

    # -- plumbing --------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> requests.Response | None:
        url = self.url + path
        what = f"{method} {url}"
        where: dict[str, Any] = {"method": method, "url": url}
        try:
            resp = http.send(
                self.session,
                method,
                url,
                timeout=(min(3.05, self.timeout), self.timeout),
                data=None if body is None else json.dumps(body, sort_keys=True).encode(),
                params=params,
                auth=self._auth,
                headers={"Content-Type": "application/json"} if body is not None else None,
            )
        except Unreachable as e:
            if e.kind == "connect":
                message = f"{what}: cannot connect ({e.reason}); is KMFDDM running at {self.url}?"
            elif e.kind == "timeout":
                message = f"{what}: no answer within {self.timeout:g} s"
            else:
                message = f"{what}: {e.exc_name}"
            raise KMFDDMError(message, **where) from None
        if resp.status_code == 401:
            raise KMFDDMAuthError(f"{what}: 401 Unauthorized: KMFDDM refused the API key", status=401, **where)
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code >= 400:
            server = _server_message(resp)
            raise KMFDDMError(
                f"{what}: HTTP {resp.status_code}: {server or resp.reason}",
                status=resp.status_code,
                server_message=server,
                **where,
            )
        return resp

    def _json(self, method: str, path: str, params: dict[str, str] | None = None, missing_ok: bool = False) -> Any:
        resp = self._call(method, path, params=params, missing_ok=missing_ok)
        if resp is None or resp.status_code == 204 or not resp.content:
            return None
        try:
            return http.json_of(resp)
        except ValueError:
            raise KMFDDMError(f"{method} {self.url}{path}: answer is not JSON", method=method,
                              url=self.url + path, status=resp.status_code) from None

    def _change(self, method: str, path: str, notify: bool, params: dict[str, str] | None = None,
                body: Any = None) -> bool:
        """A change call; True when KMFDDM changed something (204), False when it already was so (304)."""
        params = dict(params or {})
        if not notify:
            params["nonotify"] = "1"
        resp = self._call(method, path, body=body, params=params)
        assert resp is not None
        return resp.status_code == 204

    @staticmethod
    def _ids(ids: Iterable[str]) -> str:
        ids = list(ids)
        if not ids:
            raise KMFDDMError("no enrolment ids given")
        return ",".join(_seg(i) for i in ids)

    # -- server ----------------------------------------------------------------------------

    def version(self) -> str:
        """KMFDDM's version (GET /version needs no key)."""
        return str((self._json("GET", "/version") or {}).get("version", ""))

    # -- declarations -----------------------------------------------------------------------

    def put_declaration(self, declaration: dict[str, Any], notify: bool = True) -> bool:
        """Store a declaration (KMFDDM sets its ServerToken from the content); True when new or changed."""
        return self._change("PUT", "/v1/declarations", notify, body=declaration)

    def get_declaration(self, identifier: str) -> dict[str, Any] | None:
        """The stored declaration, or None when KMFDDM does not have it."""
        data = self._json("GET", f"/v1/declarations/{_seg(identifier)}", missing_ok=True)
        return data if isinstance(data, dict) else None

    def declarations(self) -> list[str]:
        return list(self._json("GET", "/v1/declarations") or [])

    def delete_declaration(self, identifier: str) -> bool:
        """Delete a declaration that is in no set; True when it existed."""
        return self._change("DELETE", f"/v1/declarations/{_seg(identifier)}", notify=True)

    # -- sets ---------------------------------------------------------------------------------

    def sets(self) -> list[str]:
        return list(self._json("GET", "/v1/sets") or [])

    def set_declarations(self, set_name: str) -> list[str]:
        return list(self._json("GET", f"/v1/set-declarations/{_seg(set_name)}") or [])

    def add_to_set(self, set_name: str, identifier: str, notify: bool = True) -> bool:
        return self._change("PUT", f"/v1/set-declarations/{_seg(set_name)}", notify, {"declaration": identifier})

    def remove_from_set(self, set_name: str, identifier: str, notify: bool = True) -> bool:
        return self._change("DELETE", f"/v1/set-declarations/{_seg(set_name)}", notify, {"declaration": identifier})

    def declaration_sets(self, identifier: str) -> list[str]:
        return list(self._json("GET", f"/v1/declaration-sets/{_seg(identifier)}") or [])

    # -- enrolments -----------------------------------------------------------------------------

    def enrollment_sets(self, enrollment_id: str) -> list[str]:
        return list(self._json("GET", f"/v1/enrollment-sets/{_seg(enrollment_id)}") or [])

    def map_enrollment(self, enrollment_id: str, set_name: str, notify: bool = True) -> bool:
        return self._change("PUT", f"/v1/enrollment-sets/{_seg(enrollment_id)}", notify, {"set": set_name})

    def unmap_enrollment(self, enrollment_id: str, set_name: str, notify: bool = True) -> bool:
        return self._change("DELETE", f"/v1/enrollment-sets/{_seg(enrollment_id)}", notify, {"set": set_name})

    # -- status ---------------------------------------------------------------------------------

    def declaration_status(self, enrollment_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Per enrolment id: each declaration's identifier, active, valid, server-token, current, reasons."""
        return dict(self._json("GET", f"/v1/declaration-status/{self._ids(enrollment_ids)}") or {})

    def status_errors(self, enrollment_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Per enrolment id: errors from the status channel (path, error, timestamp, status_id)."""
        return dict(self._json("GET", f"/v1/status-errors/{self._ids(enrollment_ids)}") or {})

    def status_values(self, enrollment_ids: Iterable[str],
                      prefix: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Per enrolment id: status values (path, value, timestamp); `prefix` is SQL-LIKE-like, e.g.
        '.StatusItems.softwareupdate.%'."""
        params = {"prefix": prefix} if prefix else None
        return dict(self._json("GET", f"/v1/status-values/{self._ids(enrollment_ids)}", params) or {})

    def status_report(self, enrollment_id: str, index: int = 0) -> dict[str, Any] | None:
        """A raw status report (index 0: the newest), or None when there is none.

        The index is always sent: KMFDDM's filekv storage answers 500 "empty index" without one, and
        500 "... key not found ..." (not 404) for an enrolment that never sent a report.
        """
        params = {"index": str(index)}
        try:
            data = self._json("GET", f"/v1/status-report/{_seg(enrollment_id)}", params, missing_ok=True)
        except KMFDDMError as e:
            if e.status == 500 and "key not found" in (e.server_message or ""):
                return None
            raise
        return data if isinstance(data, dict) else None


    def status_report_at(self, enrollment_id: str, index: int = 0) -> tuple[dict[str, Any], datetime | None] | None:
        """A raw status report and when KMFDDM stored it (its Last-Modified), index 0 the newest;
        None past the oldest report or when the enrolment never sent one."""
        params = {"index": str(index)}
        try:
            resp = self._call("GET", f"/v1/status-report/{_seg(enrollment_id)}", params=params, missing_ok=True)
        except KMFDDMError as e:
            if e.status == 500 and any(t in (e.server_message or "") for t in ("key not found", "out of range")):
                return None
            raise
        if resp is None or not resp.content:
            return None
        try:
            report = http.json_of(resp)
        except ValueError:
            raise KMFDDMError(f"GET {self.url}/v1/status-report/...: answer is not JSON", status=resp.status_code,
                              method="GET", url=self.url + "/v1/status-report/") from None
        stamp = resp.headers.get("Last-Modified")
        try:
            when = parsedate_to_datetime(stamp) if stamp else None
        except (TypeError, ValueError):
            when = None
        return (report if isinstance(report, dict) else {}), when


def _server_message(resp: requests.Response) -> str:
    try:
        data = http.json_of(resp)
    except ValueError:
        return one_line(resp.text)
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return one_line(data["error"])
    return one_line(resp.text)
