"""The NanoMDM API client: enqueue commands and send pushes, with per-device results.

One `requests.Session` (injected or made here) carries every call, with a timeout and bounded
retries: connection errors and 502/503/504 only (mdm_client.http). NanoMDM answers 500 when every
*push* failed, which is normal without an APNs certificate (the lab), so 500 is parsed, not
retried. Enqueue is a PUT that NanoMDM deduplicates by CommandUUID, so a retried enqueue that had
already arrived comes back as "command already exists" for that UUID, and is counted as queued.

    MDMError
    └── APIError (mdm_client.errors)
        └── NanoMDMError           NanoMDM unreachable or answered with an error   (exit 3)
            └── NanoMDMAuthError   NanoMDM refused the API key                     (exit 2)
"""

from __future__ import annotations

import json
import time
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import quote

import requests

from core.secrets import Secret
from core.text import one_line as _one_line
from mdm_client import http
from mdm_client.errors import NanoMDMAuthError, NanoMDMError, Unreachable

__all__ = ["EnqueueResult", "NanoMDMAuthError", "NanoMDMClient", "NanoMDMError", "PushResult"]


# Bounded retries of idempotent calls (mdm_client.http): how many, and urllib3's backoff factor.
RETRIES = 2
BACKOFF_S = 0.2

class Command(Protocol):
    """What the client needs of a command (ipad.commands.Command is one)."""

    # Read-only members: a frozen dataclass (ipad.commands.Command) fits them, a settable one too.
    @property
    def uuid(self) -> str: ...

    @property
    def request_type(self) -> str: ...

    def to_plist(self) -> bytes: ...

    def with_uuid(self, uuid: str) -> Self:
        """The same command with another CommandUUID."""
        ...


C = TypeVar("C", bound=Command)

API_USER = "nanomdm"
PUSH_PENDING = "will be picked up at next check-in"
# NanoMDM's per-id push_error when it has no push token for an id: the id never completed
# enrolment (or does not exist), so a queued command would never be fetched.
NO_PUSH_DATA = "push data missing for id"
NO_PUSH_TOKEN = "not enrolled in NanoMDM (no push token): the device would never fetch it"


@dataclass
class EnqueueResult:
    """Per-device outcome of one enqueue (possibly split over several requests)."""

    command_uuid: str
    request_type: str
    # Ids with the command in their queue.
    queued: list[str] = field(default_factory=list)
    # Queued, but the push failed: the device picks the command up at its next check-in.
    push_pending: dict[str, str] = field(default_factory=dict)
    # Not queued (or queued where it can never be fetched), with the reason.
    failed: dict[str, str] = field(default_factory=dict)
    # The CommandUUID each id got: every request after the first needs its own (see `chunks`).
    command_uuids: dict[str, str] = field(default_factory=dict)

    def merge(self, other: EnqueueResult) -> None:
        self.command_uuids.update(other.command_uuids)
        self.queued.extend(other.queued)
        self.push_pending.update(other.push_pending)
        self.failed.update(other.failed)


@dataclass
class PushResult:
    """Per-device outcome of a push request."""

    pushed: dict[str, str] = field(default_factory=dict)  # id -> APNs push id
    pending: dict[str, str] = field(default_factory=dict)  # id -> reason; picked up at next check-in
    # Ids NanoMDM has no push token for (enrolment never completed): they never fetch anything.
    no_token: dict[str, str] = field(default_factory=dict)


class NanoMDMClient:
    """Client for NanoMDM's API (`/v1/enqueue`, `/v1/push`, `/version`)."""

    def __init__(
        self,
        url: str,
        api_key: Secret,
        session: requests.Session | None = None,
        timeout: float = 10.0,
        retries: int = RETRIES,
        max_url_length: int = 2000,
        backoff_factor: float = BACKOFF_S,
    ):
        self.url = url.rstrip("/")
        self._auth = (API_USER, api_key.reveal())
        self.timeout = timeout
        self.max_url_length = max_url_length
        self.retries = retries
        self.backoff_factor = backoff_factor
        self.session = http.api_session(self.url, session, retries, ("GET", "PUT"), backoff_factor=backoff_factor)
        # An enqueue that may have reached NanoMDM is sent again by `enqueue_chunk`, not blindly.
        http.mount_connect_retries_only(self.session, self.url + "/v1/enqueue/", retries,
                                        backoff_factor=backoff_factor)

    # -- plumbing --------------------------------------------------------------------------

    def _describe(self, method: str, path: str, n_ids: int | None = None) -> str:
        if n_ids is not None and n_ids > 3:
            path = path.split("/v1/")[0] + "/v1/" + path.split("/v1/")[1].split("/")[0] + f"/<{n_ids} ids>"
        return f"{method} {self.url}{path}"

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        n_ids: int | None = None,
        params: dict[str, str] | None = None,
        auth: bool = True,
    ) -> requests.Response:
        what = self._describe(method, path, n_ids)
        where: dict[str, Any] = {"method": method, "url": self.url + path}
        try:
            resp = http.send(
                self.session,
                method,
                self.url + path,
                timeout=(min(3.05, self.timeout), self.timeout),
                data=body,
                params=params,
                auth=self._auth if auth else None,
                headers={"Content-Type": "application/xml"} if body else None,
            )
        except Unreachable as e:
            if e.kind == "connect":
                message = f"{what}: cannot connect ({e.reason}); is NanoMDM running at {self.url}?"
            elif e.kind == "timeout":
                message = f"{what}: no answer within {self.timeout:g} s"
            else:
                message = f"{what}: {e.exc_name}"
            err = NanoMDMError(message, **where)
            err.maybe_delivered = not (e.refused or e.exc_name == "ConnectTimeout")
            raise err from None
        if resp.status_code == 401:
            raise NanoMDMAuthError(
                f"{what}: 401 Unauthorized: NanoMDM refused the API key", status=401, server_message="", **where
            )
        return resp

    def _failed(self, what: str, resp: requests.Response) -> NanoMDMError:
        """The error for an answer that is not one of NanoMDM's per-device results."""
        message = _one_line(resp.text)
        return NanoMDMError(
            f"{what}: {resp.status_code}: {message or resp.reason}",
            method=resp.request.method if resp.request is not None else None,
            url=resp.url,
            status=resp.status_code,
            server_message=message,
        )

    def _json(self, resp: requests.Response, what: str) -> dict[str, Any]:
        try:
            data = http.json_of(resp)
        except (ValueError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict):
            message = _one_line(resp.text)
            raise NanoMDMError(
                f"{what}: {resp.status_code}: {message or 'empty answer'}",
                url=resp.url,
                status=resp.status_code,
                server_message=message,
            )
        return data

    # -- API -------------------------------------------------------------------------------

    def version(self) -> str:
        """NanoMDM's version string; also a cheap reachability check."""
        resp = self._request("GET", "/version", auth=False)
        data = self._json(resp, self._describe("GET", "/version"))
        return str(data.get("version", ""))

    def check_api_key(self) -> None:
        """Raise NanoMDMAuthError unless NanoMDM takes the API key: an authenticated request without
        effect (a push to an id no device has; its push error is not the point)."""
        self._request("GET", "/v1/push/werne-key-check")

    def split_ids(self, prefix: str, ids: list[str]) -> Iterator[list[str]]:
        """Chunks of ids whose comma-joined, escaped path keeps the URL within max_url_length."""
        budget = self.max_url_length - len(self.url) - len(prefix) - len("?nopush=1")
        chunk: list[str] = []
        size = 0
        for i in ids:
            n = len(quote(i, safe="")) + (1 if chunk else 0)
            if chunk and size + n > budget:
                yield chunk
                chunk, size = [], 0
                n -= 1
            chunk.append(i)
            size += n
        if chunk:
            yield chunk

    def chunks(self, command: C, ids: Iterable[str]) -> list[tuple[C, list[str]]]:
        """Split ids so each enqueue URL stays within max_url_length, one Command per request.

        NanoMDM stores a CommandUUID once: a second request with the same UUID (for other ids)
        is answered "command already exists" and queues nothing. So every chunk after the first
        gets a copy of the command with a fresh CommandUUID.
        """
        out: list[tuple[C, list[str]]] = []
        for n, chunk in enumerate(self.split_ids("/v1/enqueue/", list(dict.fromkeys(ids)))):
            cmd = command if n == 0 else command.with_uuid(str(uuid_mod.uuid4()).upper())
            out.append((cmd, chunk))
        return out

    def enqueue_chunk(self, command: Command, chunk: list[str], push: bool = True,
                      answered: Callable[[str], bool] | None = None) -> EnqueueResult:
        """One enqueue request for ids that fit one URL (see `chunks`).

        An attempt that may have reached NanoMDM without an answer (no response, or a proxy's
        502/503/504: a replica killed after it stored the command) is sent again after a backoff,
        at most `retries` times, with the same CommandUUID. NanoMDM refuses a CommandUUID it still
        holds ("command already exists", counted as queued), but one whose every device has
        answered is deleted (delete=1) and would be queued and run again. So before each resend
        `answered(CommandUUID)`, when given, is asked whether a device answered it: then the first
        attempt was stored (for every id of the chunk, in one transaction) and nothing is sent."""
        path = "/v1/enqueue/" + ",".join(quote(i, safe="") for i in chunk)
        what = self._describe("PUT", path, len(chunk))
        attempt = 0
        while True:
            try:
                resp = self._request(
                    "PUT", path, command.to_plist(), n_ids=len(chunk), params=None if push else {"nopush": "1"}
                )
                if resp.status_code not in http.RETRY_STATUSES or attempt >= self.retries:
                    break
            except NanoMDMError as e:
                if not e.maybe_delivered or attempt >= self.retries:
                    raise
            time.sleep(self.backoff_factor * 2**attempt)
            attempt += 1
            if answered is not None and answered(command.uuid):
                out = EnqueueResult(command.uuid, command.request_type, queued=list(chunk),
                                    command_uuids=dict.fromkeys(chunk, command.uuid))
                if push:
                    out.push_pending = dict.fromkeys(chunk, PUSH_PENDING)
                return out
        if resp.status_code not in (200, 207, 500):
            raise self._failed(what, resp)
        out = self._parse_enqueue(command, chunk, self._json(resp, what))
        out.command_uuids = dict.fromkeys(chunk, command.uuid)
        return out

    def enqueue(self, command: Command, ids: Iterable[str], push: bool = True,
                answered: Callable[[str], bool] | None = None) -> EnqueueResult:
        """Queue `command` for every id; per-id results (`answered`: see `enqueue_chunk`). Raises
        NanoMDMError (with `.partial`)."""
        total = EnqueueResult(command.uuid, command.request_type)
        for cmd, chunk in self.chunks(command, ids):
            try:
                total.merge(self.enqueue_chunk(cmd, chunk, push, answered))
            except NanoMDMError as e:
                raise type(e)(
                    str(e), partial=total, method=e.method, url=e.url, status=e.status, server_message=e.server_message
                ) from None
        return total

    @staticmethod
    def _parse_enqueue(command: Command, chunk: list[str], data: dict[str, Any]) -> EnqueueResult:
        out = EnqueueResult(command.uuid, command.request_type)
        status = data.get("status") or {}
        top_cmd_error = str(data.get("command_error") or "")
        top_push_error = str(data.get("push_error") or "")
        # A retried PUT whose first attempt arrived: the command is already in the queues.
        if top_cmd_error.startswith("command already exists"):
            top_cmd_error = ""
        for i in chunk:
            per = status.get(i) or {}
            cmd_error = str(per.get("command_error") or "") or top_cmd_error
            push_error = str(per.get("push_error") or "")
            if cmd_error:
                out.failed[i] = f"not queued: {_one_line(cmd_error, 200)}"
            elif push_error == NO_PUSH_DATA:
                out.failed[i] = NO_PUSH_TOKEN
            else:
                out.queued.append(i)
                if push_error or (top_push_error and not per.get("push_result")):
                    out.push_pending[i] = PUSH_PENDING
        if data.get("no_push"):
            for i in out.queued:
                out.push_pending.setdefault(i, PUSH_PENDING)
        return out

    def push(self, ids: Iterable[str]) -> PushResult:
        """Ask APNs to wake the devices; failures mean "picked up at next check-in"."""
        out = PushResult()
        for chunk in self.split_ids("/v1/push/", list(dict.fromkeys(ids))):
            path = "/v1/push/" + ",".join(quote(i, safe="") for i in chunk)
            what = self._describe("GET", path, len(chunk))
            resp = self._request("GET", path, n_ids=len(chunk))
            if resp.status_code not in (200, 207, 500):
                raise self._failed(what, resp)
            data = self._json(resp, what)
            status = data.get("status") or {}
            for i in chunk:
                per = status.get(i) or {}
                if per.get("push_result"):
                    out.pushed[i] = str(per["push_result"])
                elif per.get("push_error") == NO_PUSH_DATA:
                    out.no_token[i] = NO_PUSH_TOKEN
                else:
                    err = per.get("push_error") or data.get("push_error") or "no push result"
                    out.pending[i] = f"{PUSH_PENDING} (push failed: {_one_line(str(err), 120)})"
        return out

    def put_push_cert(self, cert_and_key_pem: bytes) -> dict[str, str]:
        """Upload the APNs push certificate and its unencrypted key (PEM, concatenated).

        NanoMDM checks that they pair and answers with the certificate's topic and expiry:
        {"topic": ..., "not_after": RFC 3339}. A 400 carries its reason (e.g. no APNs topic).
        """
        what = self._describe("PUT", "/v1/pushcert")
        resp = self._request("PUT", "/v1/pushcert", cert_and_key_pem)
        data = self._json(resp, what)
        if resp.status_code != 200 or not data.get("topic"):
            reason = data.get("error") or _one_line(resp.text) or resp.reason
            raise NanoMDMError(f"{what}: {resp.status_code}: {_one_line(str(reason), 200)}")
        return {"topic": str(data["topic"]), "not_after": str(data.get("not_after") or "")}
