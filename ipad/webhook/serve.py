"""The receiver as an ASGI app (`create_app`: POST /webhook, GET /healthz) and the enrolment hook registry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from core.config import MDMConfig
from core.errors import ConfigError
from core.secrets import Secret, read_secret
from ipad.errors import BadEvent
from ipad.store.events import EnrolmentEvent, EnrolmentHook
from ipad.store.registry import Registry
from ipad.webhook.parse import parse_event
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


def hmac_key(config: MDMConfig, key_file: str | None = None) -> Secret | None:
    """The receiver's HMAC key: `key_file` (--hmac-key-file), else mdm.webhook_hmac_key_file or its
    variable. Without one the receiver would store events anyone who can reach it forged, so it
    refuses (ConfigError, exit 2) unless mdm.webhook_allow_unsigned says that is meant (None then)."""
    if key_file or config.webhook_hmac_key_file or os.environ.get(config.webhook_hmac_key_env):
        return read_secret(file=key_file or config.webhook_hmac_key_file,
                           env=None if key_file else config.webhook_hmac_key_env, what="webhook HMAC key")
    if config.webhook_allow_unsigned:
        log.warning("webhook: no HMAC key; unsigned events are accepted (mdm.webhook_allow_unsigned)")
        return None
    raise ConfigError("the webhook receiver has no HMAC key (mdm.webhook_hmac_key_file, $"
                      f"{config.webhook_hmac_key_env} or --hmac-key-file): it would store events anyone could "
                      "forge; give it NanoMDM's -webhook-hmac-key, or set mdm.webhook_allow_unsigned = true")


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


# A plain ASGI endpoint rather than Starlette's Request/Response: this is the hot path, and the
# wrappers cost a noticeable share of each request at 2,000 events/s.
async def _respond(send: Any, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _reject(send: Any, status: int, reason: str, scope: Any) -> None:
    client = scope.get("client")
    log.warning("webhook: %d from %s: %s", status, client[0] if client else "?", reason)
    await _respond(send, status, reason + "\n")


class _EventEndpoint:
    """POST /webhook: size, signature, parse (each refusal a 4xx and one log line), then the batch writer."""

    def __init__(self, writer: BatchWriter, key: bytes | None, max_body: int):
        self.writer = writer
        self.key = key
        self.max_body = max_body

    async def _body(self, scope: Any, receive: Any, send: Any) -> bytes | None:
        """The request body, or None when the request was answered already (too large, gone)."""
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value.decode("latin-1")
                break
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            too_large = length.isdigit()
            await _reject(send, 413 if too_large else 400, "body too large" if too_large else "bad Content-Length",
                          scope)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                await _respond(send, 400, "")
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _reject(send, 413, "body too large", scope)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _signed(self, scope: Any, body: bytes) -> bool:
        if self.key is None:
            return True
        signature = next((value for name, value in scope["headers"] if name == b"x-hmac-signature"), None)
        want = base64.b64encode(hmac.new(self.key, body, hashlib.sha256).digest())
        return signature is not None and hmac.compare_digest(signature, want)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = await self._body(scope, receive, send)
        if body is None:
            return
        if not self._signed(scope, body):
            return await _reject(send, 401, "missing or wrong X-Hmac-Signature", scope)
        try:
            event = parse_event(body)
        except BadEvent as e:
            return await _reject(send, e.status, str(e), scope)
        if event.is_idle:
            self.writer.note_idle(event)
            return await _respond(send, 200, "ok\n")
        # Per request rather than inside the batch (with 2 processes: outside the write lock).
        _ = event.safe_payload
        try:
            stored = await self.writer.submit(event)
        except Exception:  # noqa: BLE001 - logged by the writer; tell NanoMDM it failed
            return await _respond(send, 503, "could not store the event\n")
        await _respond(send, 200, "ok\n" if stored else "duplicate\n")


class _ReceiverApp(Starlette):
    """Starlette, with POST /webhook answered before its middleware and router (the hot path).

    Everything else (other paths and methods, lifespan) is Starlette's; an unexpected error in
    the endpoint is uvicorn's 500 and log line, as Starlette's would be.
    """

    def __init__(self, endpoint: _EventEndpoint, **kwargs: Any):
        super().__init__(**kwargs)
        self.endpoint = endpoint

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == WEBHOOK_PATH:
            await self.endpoint(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


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
    endpoint = _EventEndpoint(writer, hmac_key.reveal().encode() if hmac_key is not None else None, max_body)

    async def health(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        writer.start()
        try:
            yield
        finally:
            writer.stop()

    app = _ReceiverApp(
        endpoint,
        routes=[Route(WEBHOOK_PATH, endpoint, methods=["POST"]), Route("/healthz", health, methods=["GET"])],
        lifespan=lifespan,
    )
    app.state.writer = writer
    return app
