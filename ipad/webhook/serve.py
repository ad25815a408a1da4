"""The receiver as an ASGI app (`create_app`: POST /webhook, GET /healthz) and the enrolment hook registry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from core.secrets import Secret
from ipad.store import EnrolmentEvent, EnrolmentHook, Registry
from ipad.webhook.parse import BadEvent, parse_event
from ipad.webhook.write import BatchWriter

log = logging.getLogger("werne.mdm.webhook")

WEBHOOK_PATH = "/webhook"

_hooks: list[EnrolmentHook] = []
_hooks_lock = threading.Lock()


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
    writer = BatchWriter(
        registry, batch_ms, batch_max, write_lock=write_lock, checkpoints=own_checkpoints, on_enrolled=_call_hooks
    )
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
