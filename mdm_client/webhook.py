"""The webhook receiver for NanoMDM (`werne mdm serve-webhook`): a Starlette app run by uvicorn.

NanoMDM POSTs one JSON event per check-in or command report. Each request is checked in this
order, and anything wrong is answered with a 4xx, one log line, and nothing stored:
    body larger than mdm.webhook_max_body             -> 413
    X-Hmac-Signature missing or wrong (key set)       -> 401  (base64 HMAC-SHA256 of the raw body)
    not UTF-8, not JSON, not a NanoMDM event, bad
    base64 or plist in raw_payload                     -> 400
A good event goes to the batch writer, which commits in batches (group commit: each batch is what
arrived while the previous one was written, at most mdm.webhook_batch_max) and only then answers
200. Idle polls (most of the traffic) only move `last_seen_at`: they are answered at once and
written every 2 s, newest per device. For every other event a 200 means "stored" (SQLite WAL,
synchronous=NORMAL: survives a crash of this process; the newest batches can be lost on power
failure). A repeated event_id is answered 200 and changes nothing. NanoMDM does not retry failed
webhooks, so a receiver that is down loses those events; the next `werne ipad query` refreshes
the answers.

Throughput (issue 4, bench/webhook_ingest.py): `serve` runs one process per core (at most 2) on
SQLite, each with its own SO_REUSEPORT listening socket; each process's writer takes a lock file
beside the database around its batch transaction, so the guarantee above holds unchanged (a 200 is answered
after the commit that stored the event). The writer works in the event loop (no thread, see
BatchWriter), writes rows with core.db.bulk_execute, and checkpoints the WAL once per tick
instead of inside commits. Reports take a fast, equivalent parse (see `_fast_plist`,
`_fast_report`); any unusual input goes through plistlib and results.parse_report.

Enrolment hook: `on_enrolled(callback)` registers a function called (in the receiver's event
loop, after the commit; keep it short) with an `EnrolmentEvent` for every stored Authenticate and
TokenUpdate. Another process can instead poll `Registry.events_since(last_id)`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import plistlib
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, XMLParser

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from core.secrets import Secret
from mdm_client.errors import MalformedReport, MDMError
from mdm_client.registry import EnrolmentEvent, EnrolmentHook, ParsedEvent, Registry
from mdm_client.results import (
    _REPORT_ENVELOPE,
    _RESPONSE_KEY_TO_REQUEST_TYPE,
    COMMAND_STATUSES,
    parse_checkin,
    parse_report,
)

log = logging.getLogger("werne.mdm.webhook")

WEBHOOK_PATH = "/webhook"
CHECKIN_TOPICS = {
    "mdm.Authenticate",
    "mdm.TokenUpdate",
    "mdm.CheckOut",
    "mdm.UserAuthenticate",
    "mdm.GetBootstrapToken",
    "mdm.SetBootstrapToken",
    "mdm.DeclarativeManagement",
    "mdm.GetToken",
}

_hooks: list[EnrolmentHook] = []
_hooks_lock = threading.Lock()


class WebhookError(MDMError):
    """The webhook receiver cannot start (bad listen address, port in use, unusable database)."""


class BadEvent(ValueError):
    """A request body that is not a storable NanoMDM webhook event; carries the HTTP status."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def on_enrolled(callback: EnrolmentHook) -> Callable[[], None]:
    """Call `callback(EnrolmentEvent)` after each stored Authenticate/TokenUpdate; returns an unregister.

    Callbacks run in the receiver's event loop after the commit (a slow one delays the receiver);
    an exception in one is logged and ignored.
    """
    with _hooks_lock:
        _hooks.append(callback)

    def remove() -> None:
        with _hooks_lock:
            if callback in _hooks:
                _hooks.remove(callback)

    return remove


def sign(body: bytes, key: str) -> str:
    """The X-Hmac-Signature NanoMDM sends: base64 of HMAC-SHA256(key, body)."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def parse_event(body: bytes) -> ParsedEvent:
    """Validate one webhook body. Raises BadEvent(400, reason)."""
    try:
        return _parse_event(body)
    except RecursionError:
        # JSON or a plist nested thousands deep: the decoders recurse. A 400, never a 500.
        raise BadEvent(400, "body is nested too deeply") from None


def _parse_event(body: bytes) -> ParsedEvent:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEvent(400, "body is not UTF-8") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise BadEvent(400, "body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("topic"), str):
        raise BadEvent(400, "not a NanoMDM webhook event (no topic)")
    topic = data["topic"]
    ack, checkin = data.get("acknowledge_event"), data.get("checkin_event")
    if (ack is None) == (checkin is None):
        raise BadEvent(
            400, "not a NanoMDM webhook event (needs exactly one of acknowledge_event, checkin_event)"
        )
    ev = ack if ack is not None else checkin
    if not isinstance(ev, dict) or not isinstance(ev.get("raw_payload"), str):
        raise BadEvent(400, "not a NanoMDM webhook event (no raw_payload)")
    if ack is not None and topic != "mdm.Connect":
        raise BadEvent(400, f"acknowledge_event with topic {topic[:40]!r}")
    if checkin is not None and topic not in CHECKIN_TOPICS:
        raise BadEvent(400, f"checkin_event with unknown topic {topic[:40]!r}")
    event_id = data.get("event_id")
    if event_id is None:
        # NanoMDM before v0.8 sent no event_id; the body (with its nanosecond created_at) is unique.
        event_id = "sha256:" + hashlib.sha256(body).hexdigest()[:32]
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 128:
        raise BadEvent(400, "event_id must be a string of 1-128 characters")
    try:
        raw = base64.b64decode(ev["raw_payload"], validate=True)
    except (binascii.Error, ValueError):
        raise BadEvent(400, "raw_payload is not base64") from None
    ids = ev.get("ids") if isinstance(ev.get("ids"), dict) else {}
    if ack is not None and ev.get("status") == "Idle" and not ev.get("command_uuid"):
        return _parse_idle(data, ev, ids, raw, event_id)
    plist = _fast_plist(raw)
    try:
        if ack is not None:
            fast = _fast_report(plist) if plist is not None else None
            if fast is None:
                # The general path (and every error message): results.parse_report.
                r = parse_report(plist if type(plist) is dict else raw)
                fast = _Report(
                    r.udid,
                    r.status,
                    r.command_uuid,
                    r.enrollment_id,
                    r.request_type,
                    r.response,
                    [e.model_dump(by_alias=True, exclude_none=True) for e in r.error_chain],
                )
            enrollment_id = str(ids.get("id") or ev.get("enrollment_id") or fast.enrollment_id or fast.udid)
            return ParsedEvent(
                event_id=event_id,
                topic=topic,
                created_at=str(data.get("created_at", "")),
                enrollment_id=enrollment_id,
                udid=str(ev.get("udid") or fast.udid),
                status=fast.status,
                command_uuid=fast.command_uuid,
                request_type=fast.request_type,
                payload=fast.response,
                error_chain=fast.error_chain,
            )
        m = parse_checkin(plist if type(plist) is dict else raw)
    except MalformedReport as e:
        raise BadEvent(400, f"raw_payload: {e}") from None
    enrollment_id = str(ids.get("id") or ev.get("enrollment_id") or m.device_id)
    tally = ev.get("token_update_tally")
    payload: dict[str, Any] = {
        "Model": m.model,
        "ProductName": m.product_name,
        "OSVersion": m.os_version,
        "BuildVersion": m.build_version,
        "DeviceName": m.device_name,
        "Topic": m.topic,
    }
    if m.unlock_token is not None:
        payload["UnlockToken"] = m.unlock_token
    if m.awaiting_configuration is not None:
        payload["AwaitingConfiguration"] = m.awaiting_configuration
    return ParsedEvent(
        event_id=event_id,
        topic=topic,
        created_at=str(data.get("created_at", "")),
        enrollment_id=enrollment_id,
        udid=str(ev.get("udid") or m.udid or enrollment_id),
        message_type=m.message_type,
        # An int the database can hold (SQLite and PostgreSQL: 64 bits); bool is an int too.
        token_update_tally=tally if type(tally) is int and 0 <= tally < 2**63 else None,
        payload={k: v for k, v in payload.items() if v is not None},
        serial=m.serial_number.strip().upper() if m.serial_number else None,
    )


def _parse_idle(
    data: dict[str, Any], ev: dict[str, Any], ids: dict[str, Any], raw: bytes, event_id: str
) -> ParsedEvent:
    """An Idle poll: the most frequent event by far, so checked without building the full model."""
    try:
        report = _fast_plist(raw)
        if report is None:
            report = plistlib.loads(raw)
    except Exception:  # noqa: BLE001 - any parser failure means "not a plist"
        raise BadEvent(400, "raw_payload: command report: not a valid plist") from None
    if (
        not isinstance(report, dict)
        or report.get("Status") != "Idle"
        or not isinstance(report.get("UDID"), str)
    ):
        raise BadEvent(400, "raw_payload: an Idle event whose report is not an Idle report")
    udid = report["UDID"]
    return ParsedEvent(
        event_id=event_id,
        topic="mdm.Connect",
        created_at=str(data.get("created_at", "")),
        enrollment_id=str(ids.get("id") or ev.get("enrollment_id") or udid),
        udid=str(ev.get("udid") or udid),
        status="Idle",
    )


# --- a faster, equivalent parse of the reports (the hot path) ------------------------------------
#
# plistlib's XML reader calls back into Python for every element (~150 us for a typical report);
# ElementTree's C parser builds the tree in C, and the walk below converts it (~75 us). The walk
# accepts only the plain shape plistlib writes and devices send, and converts values with
# plistlib's own rules (hex integers, base64 data, dates); for anything else (comments, CDATA,
# entity declarations, unknown or misplaced elements, a parser error) it returns None and the
# caller runs plistlib itself, so the result or the error is always plistlib's.


class _NotPlain(Exception):
    """The XML is not the plain plist shape the fast reader handles (the caller uses plistlib)."""


def _plist_value(el: Element) -> Any:
    tag = el.tag
    if tag == "dict":
        out: dict[str, Any] = {}
        it = iter(el)
        for k in it:
            if k.tag != "key" or len(k):
                raise _NotPlain
            v = next(it, None)
            if v is None:
                raise _NotPlain
            out[k.text or ""] = _plist_value(v)
        return out
    if tag == "array":
        return [_plist_value(c) for c in el]
    if len(el):
        raise _NotPlain
    if tag == "string":
        return el.text or ""
    if tag == "integer":
        text = el.text or ""
        return int(text, 16) if text.startswith(("0x", "0X")) else int(text)
    if tag == "true":
        return True
    if tag == "false":
        return False
    if tag == "real":
        return float(el.text or "")
    if tag == "data":
        return binascii.a2b_base64((el.text or "").encode("utf-8"))
    if tag == "date":
        return plistlib._date_from_string(el.text or "")  # type: ignore[attr-defined]
    raise _NotPlain


def _fast_plist(raw: bytes) -> Any:
    """plistlib.loads(raw) for plain XML plists, else None (then the caller runs plistlib)."""
    if (
        not raw.startswith((b"<?xml", b"<plist"))
        or b"<!ENTITY" in raw
        or b"<!--" in raw
        or b"<![CDATA[" in raw
    ):
        return None
    try:
        parser = XMLParser()
        parser.feed(raw)
        root = parser.close()
        if root.tag != "plist" or len(root) != 1:
            return None
        return _plist_value(root[0])
    except Exception:  # noqa: BLE001 - anything unusual: plistlib decides
        return None


@dataclass
class _Report:
    """The parts of a command report that are stored (what parse_report's CommandResult gives)."""

    udid: str
    status: str
    command_uuid: str | None
    enrollment_id: str | None
    request_type: str | None
    response: dict[str, Any]
    error_chain: list[dict[str, Any]]


# Field names pydantic would also accept (populate_by_name) in place of Apple's keys.
_REPORT_FIELD_NAMES = frozenset(
    {"udid", "status", "command_uuid", "error_chain", "enrollment_id", "request_type", "response"}
)
_ERROR_ITEM_FIELD_NAMES = frozenset({"error_code", "error_domain", "localized_description", "us_english_description"})
_ERROR_ITEM_STR_KEYS = ("ErrorDomain", "LocalizedDescription", "USEnglishDescription")


def _fast_report(data: Any) -> _Report | None:
    """What parse_report(data) gives for a plain, valid report, without pydantic; None otherwise.

    It accepts only what CommandResult's strict validation accepts with the same result (exact
    types, no snake_case field names); anything else returns None and parse_report decides.
    """
    if type(data) is not dict or not _REPORT_FIELD_NAMES.isdisjoint(data):
        return None
    udid, status = data.get("UDID"), data.get("Status")
    command_uuid, enrollment_id = data.get("CommandUUID"), data.get("EnrollmentID")
    request_type = data.get("RequestType")
    if type(udid) is not str or type(status) is not str or status not in COMMAND_STATUSES:
        return None
    if status != "Idle" and "CommandUUID" not in data:
        return None
    for v in (command_uuid, enrollment_id, request_type):
        if v is not None and type(v) is not str:
            return None
    chain: list[dict[str, Any]] = []
    raw_chain = data.get("ErrorChain", [])
    if type(raw_chain) is not list:
        return None
    for item in raw_chain:
        if type(item) is not dict or not _ERROR_ITEM_FIELD_NAMES.isdisjoint(item):
            return None
        code = item.get("ErrorCode")
        if code is not None and type(code) is not int:
            return None
        out: dict[str, Any] = {} if code is None else {"ErrorCode": code}
        for k in _ERROR_ITEM_STR_KEYS:
            v = item.get(k)
            if v is not None:
                if type(v) is not str:
                    return None
                out[k] = v
        chain.append(out)
    response = {k: v for k, v in data.items() if k not in _REPORT_ENVELOPE}
    if request_type is None:
        for key, rt in _RESPONSE_KEY_TO_REQUEST_TYPE.items():
            if key in response:
                request_type = rt
                break
    return _Report(udid, status, command_uuid, enrollment_id, request_type, response, chain)


class BatchWriter:
    """Stores events in batches, in the event loop's thread: group commit without a writer thread.

    A request hands its event to `submit` and waits; the first waiting event schedules one flush
    (`loop.call_soon`, or after `batch_ms` if set), which runs after the requests that are ready
    in the same turn of the loop have been parsed, so the batch is everything that arrived since
    the previous commit (at most `batch_max`; the rest go to the next flush). The transaction runs
    in the loop itself: a batch takes a few milliseconds, during which new requests wait in the
    socket buffers and form the next batch. A worker thread was measured slower: it and the loop
    handed the interpreter lock back and forth around every SQLite call. With two receiver
    processes, a loop may wait on the write lock while the other process commits its batch.

    Idle polls are only kept (newest per device) and written every `idle_flush_s`. When
    `checkpoints` is on (Database.defer_checkpoints), the same tick starts a passive WAL checkpoint
    in a worker thread (SQLite runs it without the interpreter lock, beside the loop's commits).
    """

    def __init__(
        self,
        registry: Registry,
        batch_ms: int = 0,
        batch_max: int = 500,
        idle_flush_s: float = 2.0,
        write_lock: Path | None = None,
        checkpoints: bool = False,
    ):
        self.registry = registry
        # Receiver processes sharing one SQLite file take this lock around each batch's
        # transaction: flock wakes the next writer at once, where SQLite's busy handler sleeps.
        self._write_lock = _FileLock(write_lock) if write_lock is not None else contextlib.nullcontext()
        self.idle_flush_s = idle_flush_s
        self.batch_s = batch_ms / 1000
        self.batch_max = batch_max
        self.checkpoints = checkpoints
        self._pending: list[tuple[ParsedEvent, asyncio.Future[bool]]] = []
        self._idle: dict[str, ParsedEvent] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checkpointed_at = 0
        self._checkpointing: asyncio.Future[None] | None = None
        self.batches = 0
        self.events = 0
        self.duplicates = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tick_handle = self._loop.call_later(self.idle_flush_s, self._tick)

    def stop(self) -> None:
        """Write what is pending (the loop still runs), then the idle polls and a last checkpoint."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        while self._pending:
            self._flush()
        self._flush_idle()
        if self.checkpoints:
            self._checkpoint()
        if self.batches:
            log.info(
                "webhook: wrote %d events in %d batches (%.1f per batch), %d of them duplicates",
                self.events,
                self.batches,
                self.events / self.batches,
                self.duplicates,
            )

    def note_idle(self, event: ParsedEvent) -> None:
        self._idle[event.enrollment_id] = event

    def submit(self, event: ParsedEvent) -> asyncio.Future[bool]:
        """Queue one event; the future resolves to stored (True) or duplicate (False) after commit."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._pending.append((event, fut))
        if self._flush_handle is None:
            self._flush_handle = (
                loop.call_later(self.batch_s, self._flush) if self.batch_s > 0 else loop.call_soon(self._flush)
            )
        return fut

    def _flush(self) -> None:
        self._flush_handle = None
        batch, self._pending = self._pending[: self.batch_max], self._pending[self.batch_max :]
        if self._pending:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        if not batch:
            return
        try:
            with self._write_lock:
                stored, hooks = self.registry.apply_events([event for event, _ in batch])
        except Exception as e:  # noqa: BLE001 - a failed batch must answer every waiting request
            log.error("webhook: storing a batch of %d events failed: %s", len(batch), e)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        self.batches += 1
        self.events += len(batch)
        self.duplicates += stored.count(False)
        for (_, fut), ok in zip(batch, stored, strict=True):
            if not fut.done():  # the client may have gone; its event is stored all the same
                fut.set_result(ok)
        for h in hooks:
            _call_hooks(h)

    def _tick(self) -> None:
        assert self._loop is not None
        self._tick_handle = self._loop.call_later(self.idle_flush_s, self._tick)
        self._flush_idle()

    def _flush_idle(self) -> None:
        idle, self._idle = list(self._idle.values()), {}
        if idle:
            try:
                with self._write_lock:
                    self.registry.apply_events(idle)
            except Exception as e:  # noqa: BLE001 - last_seen is best effort; results are not
                log.error("webhook: storing %d Idle polls failed: %s", len(idle), e)
        busy = self._checkpointing is not None and not self._checkpointing.done()
        if self.checkpoints and self.batches != self._checkpointed_at and not busy and self._loop is not None:
            self._checkpointed_at = self.batches
            self._checkpointing = self._loop.run_in_executor(None, self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            self.registry.db.checkpoint()
        except Exception as e:  # noqa: BLE001 - the next tick tries again; SQLite stays consistent
            log.warning("webhook: WAL checkpoint failed: %s", e)


class _FileLock:
    """An exclusive flock on a file, opened lazily (after a fork) and held around each batch."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)


def _call_hooks(event: EnrolmentEvent) -> None:
    with _hooks_lock:
        hooks = list(_hooks)
    for h in hooks:
        try:
            h(event)
        except Exception as e:  # noqa: BLE001 - a broken hook must not stop ingestion
            log.error("webhook: enrolment hook %s failed: %s", getattr(h, "__name__", h), e)


def create_app(
    registry: Registry,
    hmac_key: Secret | None = None,
    max_body: int = 1024 * 1024,
    batch_ms: int = 0,
    batch_max: int = 500,
    write_lock: Path | None = None,
    own_checkpoints: bool = False,
) -> Starlette:
    """The receiver as an ASGI app; the batch writer runs for the app's lifespan.

    `write_lock`: a lock file taken around each batch, when several processes write one database.
    `own_checkpoints`: the writer checkpoints the SQLite WAL on its 2-second tick instead of
    inside commits (Database.defer_checkpoints; `serve` sets it: the process's only writer).
    """
    if own_checkpoints:
        registry.db.defer_checkpoints()
    writer = BatchWriter(registry, batch_ms, batch_max, write_lock=write_lock, checkpoints=own_checkpoints)
    key = hmac_key.reveal().encode() if hmac_key is not None else None

    # A plain ASGI endpoint rather than Starlette's Request/Response: this is the hot path, and
    # the wrappers cost a noticeable share of each request at 2,000 events/s.
    async def respond(send: Any, status: int, text: str) -> None:
        body = text.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def reject(send: Any, status: int, reason: str, scope: Any) -> None:
        client = scope.get("client")
        log.warning("webhook: %d from %s: %s", status, client[0] if client else "?", reason)
        await respond(send, status, reason + "\n")

    async def receive_event(scope: Any, receive: Any, send: Any) -> None:
        length = signature = None
        for name, value in scope["headers"]:
            if name == b"content-length" and length is None:
                length = value.decode("latin-1")
            elif name == b"x-hmac-signature" and signature is None:
                signature = value
        if length is not None and (not length.isdigit() or int(length) > max_body):
            too_large = length.isdigit()
            return await reject(
                send, 413 if too_large else 400, "body too large" if too_large else "bad Content-Length", scope
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return await respond(send, 400, "")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                return await reject(send, 413, "body too large", scope)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if key is not None:
            want = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest())
            if not signature or not hmac.compare_digest(signature, want):
                return await reject(send, 401, "missing or wrong X-Hmac-Signature", scope)
        try:
            event = parse_event(body)
        except BadEvent as e:
            return await reject(send, e.status, str(e), scope)
        if event.is_idle:
            writer.note_idle(event)
            return await respond(send, 200, "ok\n")
        # Per request rather than inside the batch (with 2 processes: outside the write lock).
        _ = event.safe_payload
        try:
            stored = await writer.submit(event)
        except Exception:  # noqa: BLE001 - logged by the writer; tell NanoMDM it failed
            return await respond(send, 503, "could not store the event\n")
        await respond(send, 200, "ok\n" if stored else "duplicate\n")

    class _Endpoint:
        """Starlette routes a non-function endpoint to it as an ASGI app."""

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await receive_event(scope, receive, send)

    class _ReceiverApp(Starlette):
        """Starlette, with POST /webhook answered before its middleware and router (the hot path).

        Everything else (other paths and methods, lifespan) is Starlette's; an unexpected error in
        the endpoint is uvicorn's 500 and log line, as Starlette's would be.
        """

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == WEBHOOK_PATH:
                await receive_event(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)

    async def health(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: Starlette):  # type: ignore[no-untyped-def]
        writer.start()
        try:
            yield
        finally:
            writer.stop()

    app = _ReceiverApp(
        routes=[Route(WEBHOOK_PATH, _Endpoint(), methods=["POST"]), Route("/healthz", health, methods=["GET"])],
        lifespan=lifespan,
    )
    app.state.writer = writer
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WebhookError(f"mdm.webhook_listen: expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def serve(
    registry: Registry,
    listen: str,
    hmac_key: Secret | None,
    max_body: int = 1024 * 1024,
    batch_ms: int = 0,
    batch_max: int = 500,
    log_level: str = "info",
    workers: int | None = None,
) -> None:
    """Run the receiver in the foreground until interrupted (uvicorn in `workers` processes).

    The default (also $WERNE_WEBHOOK_WORKERS) is one process per core, at most 2, on SQLite, and
    1 on PostgreSQL. Each process listens on its own SO_REUSEPORT socket (see _listen); on SQLite
    each batch's transaction holds a lock file beside the database, so they take turns writing
    without SQLite's busy sleep.
    """
    host, port = parse_listen(listen)
    db_file = _sqlite_file(registry.db.url)
    if workers is None:
        env = os.environ.get("WERNE_WEBHOOK_WORKERS", "")
        if env.strip():
            if not env.strip().isdigit() or not 1 <= int(env) <= 16:
                raise WebhookError(f"WERNE_WEBHOOK_WORKERS: expected 1-16, got {env[:20]!r}")
            workers = int(env)
        else:
            workers = min(2, os.cpu_count() or 1) if db_file is not None else 1
    if workers > 1 and db_file is None:
        # Without the lock file, two processes could insert the same new device at once.
        workers = 1
    socks = _listen(host, port, workers, listen)
    lock = db_file.with_name(db_file.name + ".webhook-lock") if db_file is not None and workers > 1 else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # No connection may cross the fork: each process opens its own.
    registry.db.engine.dispose()
    children: list[int] = []
    for i in range(1, workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _exit_with_parent()
                for j, other in enumerate(socks):
                    if j != i:
                        other.close()
                app = create_app(registry, hmac_key, max_body, batch_ms, batch_max, lock, True)
                _run_uvicorn(app, socks[i], log_level)
            except BaseException:  # noqa: BLE001 - a child must never return into the caller's code
                log.exception("webhook: worker process failed")
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    for other in socks[1:]:
        other.close()
    try:
        _run_uvicorn(create_app(registry, hmac_key, max_body, batch_ms, batch_max, lock, True), socks[0], log_level)
    finally:
        _stop_children(children)
        socks[0].close()


def _listen(host: str, port: int, workers: int, listen: str) -> list[Any]:
    """One listening socket per process. With several, each has SO_REUSEPORT, so the kernel spreads
    connections evenly over the processes (on one shared socket, the process that wakes first takes
    most of NanoMDM's keep-alive connections). A plain bind first, so that a port already in use,
    also by another receiver, is still an error rather than a silent share."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        probe = socket.create_server((host, port), family=family, backlog=2048)
        if workers == 1:
            return [probe]
        probe.close()
        return [
            socket.create_server((host, port), family=family, backlog=2048, reuse_port=True) for _ in range(workers)
        ]
    except OSError as e:
        raise WebhookError(f"cannot listen on {listen}: {e.strerror}") from None


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return None
    return Path(url.removeprefix("sqlite:///"))


def _run_uvicorn(app: Starlette, sock: Any, log_level: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        http=_http_impl(),
        loop=_loop_impl(),
        timeout_graceful_shutdown=5,
        # NanoMDM posts directly (loopback or the admin LAN); no proxy's X-Forwarded-For is trusted.
        proxy_headers=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _exit_with_parent() -> None:
    """Linux: the worker gets SIGTERM when the main process dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        os._exit(0)


def _stop_children(pids: list[int], timeout: float = 10.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > end:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.05)


def _http_impl() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def _loop_impl() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"
