"""The Starlette application behind `werne web serve`.

Security: every POST carries the session's CSRF token; the session cookie is signed, HttpOnly,
SameSite=Lax and Secure (unless web.secure_cookies is false, for plain-http tests); logins are
rate-limited per user and address; a request id of another school answers exactly like an id
that does not exist (404), so no page, URL or error tells anything about other schools.
Uploads are refused while they stream in once they pass web.max_upload_bytes.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import audit
from core.config import Config
from core.db import Database
from core.errors import WerneError
from core.inventory import IPAD_GROUPS, Inventory, load_inventory
from core.netaddr import split_listen
from core.ratelimit import RateLimiter
from core.secrets import read_secret
from core.text import one_line
from enrolment import accounts, ade
from enrolment import requests as reqs
from enrolment.accounts import Authenticator, LocalAuthenticator, Principal
from enrolment.ade import enrol_path
from enrolment.arrival import ArrivalWatcher
from enrolment.directory import make_authenticator
from enrolment.errors import (
    AuthError,
    DEPProfileError,
    DEPUnavailable,
    InvalidTransition,
    NotAllowed,
    NotFound,
    RateLimited,
    RequestInputError,
    ServeError,
)
from enrolment.oidc import OIDCClient, OIDCError, Pending, principal_from_claims
from enrolment.web.classes import ClassPages
from enrolment.web.i18n import GROUP_DE, STATUS_DE, serial_reason_de, translate, wait_de
from ipad.store.registry import Registry

log = logging.getLogger("werne.enrolment.web")
TEMPLATES = Path(__file__).resolve().parent / "templates"
CSS = (TEMPLATES / "style.css").read_text(encoding="utf-8")

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        b"base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Adds the security headers to every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                names = {k.lower() for k, _ in message["headers"]}
                message["headers"] += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# Ids are 64-bit integers in the database; a longer number in a URL names nothing (404, not 500).
MAX_ID = 2**63 - 1
# A file with 100,000 bad serials gets the first problems and a count, not an 8 MB page.
MAX_PROBLEMS_SHOWN = 50


def request_id(request: Request) -> int:
    rid = int(request.path_params["rid"])
    if not 0 < rid <= MAX_ID:
        raise HTTPException(404)
    return rid


def first_problems(problems: list[str]) -> list[str]:
    shown = [translate(x) for x in problems[:MAX_PROBLEMS_SHOWN]]
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"… und {len(problems) - MAX_PROBLEMS_SHOWN} weitere Fehler.")
    return shown


SERVER_ERROR_HTML = (
    '<!doctype html><html lang="de"><head><meta charset="utf-8"><title>Fehler</title>'
    '<link rel="stylesheet" href="/static/style.css"></head><body><main><h1>Fehler</h1>'
    "<p>Die Anfrage konnte wegen eines Fehlers auf dem Server nicht bearbeitet werden. "
    "Bitte später erneut versuchen oder die IT informieren.</p></main></body></html>"
)


class UploadTooLarge(Exception):
    """The request body passed the upload limit while it streamed in."""


async def read_bounded_body(request: Request, limit: int) -> bytes:
    """The body, refusing it as soon as it is known to be larger than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class WebApp:
    """The endpoints, sharing the config, database, inventory and authenticator."""

    def __init__(
        self,
        cfg: Config,
        db: Database,
        inventory: Inventory | None = None,
        authenticator: Authenticator | None = None,
        dep_client: Any = None,
    ):
        self.cfg = cfg
        self.db = db
        self._inventory = inventory
        self.authenticator = authenticator or make_authenticator(
            db, cfg.web.ldap, LocalAuthenticator(db), set(self.inventory.schools) if cfg.web.ldap.url else set())
        self.dep_client = dep_client
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html"]),
        )
        self.env.globals.update(STATUS_DE=STATUS_DE, GROUP_DE=GROUP_DE, serial_reason_de=serial_reason_de,
                                oidc_label=cfg.web.oidc.label if cfg.web.oidc.issuer else "")
        self.oidc = OIDCClient(cfg.web.oidc) if cfg.web.oidc.issuer else None
        self.ade_limit = RateLimiter(ade.RATE_BURST, ade.RATE_PER_SECOND, ade.RATE_MAX_CLIENTS)
        self.ade_limit_log = RateLimiter(1, 1 / 60, ade.RATE_MAX_CLIENTS)  # one "limited" log line a minute

    @property
    def inventory(self) -> Inventory:
        if self._inventory is None:
            self._inventory = load_inventory(self.cfg.inventory_dir)
        return self._inventory

    # -- helpers ---------------------------------------------------------------------------
    def csrf_token(self, request: Request) -> str:
        token = request.session.get("csrf")
        if not token:
            token = secrets.token_urlsafe(32)
            request.session["csrf"] = token
        return str(token)

    def check_csrf(self, request: Request, form: Any) -> None:
        sent = str(form.get("csrf_token") or "")
        expected = str(request.session.get("csrf") or "")
        if not expected or not hmac.compare_digest(sent, expected):
            raise HTTPException(403, "csrf")

    def render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        principal = ctx.pop("principal", None)
        flash = request.session.pop("flash", None) if "session" in request.scope else None
        schools = {k: v.name for k, v in self.inventory.schools.items()}
        visible = {k: v for k, v in schools.items() if principal is not None and principal.may_see_school(k)}
        html = self.env.get_template(template).render(
            csrf=self.csrf_token(request), user=principal, flash=flash, school_names=visible, **ctx
        )
        return HTMLResponse(html, status_code=status)

    async def principal(self, request: Request) -> Principal | None:
        name = request.session.get("user")
        if not name:
            return None
        tag = str(request.session.get("tag") or "")
        sid = str(request.session.get("sid") or "")
        p = None
        if await run_in_threadpool(accounts.session_open, self.db, sid, str(name)):
            p = await run_in_threadpool(accounts.principal_for, self.db, str(name), tag)
        if p is None:
            request.session.clear()
        return p

    async def require(self, request: Request) -> Principal:
        p = await self.principal(request)
        if p is None:
            raise HTTPException(303, "login")
        return p

    async def require_staff(self, request: Request) -> Principal:
        """A coordinator or IT: teachers see their classes, never the enrolment requests."""
        p = await self.require(request)
        if p.is_teacher:
            raise HTTPException(403)
        return p

    # -- endpoints -------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        p = await self.principal(request)
        return RedirectResponse("/classes" if p is not None and p.is_teacher else "/requests", status_code=303)

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", error=None, username="")

    async def login(self, request: Request) -> Response:
        form = await request.form()
        self.check_csrf(request, form)
        username = str(form.get("username") or "")[:64]
        password = str(form.get("password") or "")
        address = request.client.host if request.client else "unknown"
        try:
            p = await run_in_threadpool(accounts.login, self.db, self.authenticator, username, password, address,
                                        alerts=self.cfg.alerts)
        except RateLimited as e:
            return self.render(
                request,
                "login.html",
                429,
                username=username,
                error=f"Zu viele fehlgeschlagene Anmeldungen. Bitte in {wait_de(e.retry_after)} erneut versuchen.",
            )
        except AuthError:
            return self.render(
                request, "login.html", 401, username=username, error="Benutzername oder Passwort ist falsch."
            )
        request.session.clear()  # a fresh session (and CSRF token) after login
        request.session["user"] = p.username
        request.session["tag"] = p.credential_tag
        request.session["sid"] = await run_in_threadpool(
            accounts.open_session, self.db, p.username, self.cfg.web.session_max_age_s
        )
        return RedirectResponse("/classes" if p.is_teacher else "/requests", status_code=303)

    async def oidc_begin(self, request: Request) -> Response:
        """Off to the schools' identity provider (OpenID Connect, PKCE); state, nonce and verifier
        stay in the signed session."""
        if self.oidc is None:
            raise HTTPException(404)
        try:
            url, pending = await run_in_threadpool(self.oidc.begin)
        except WerneError as e:
            log.warning("OpenID Connect sign-in not possible: %s", e)
            return self.render(request, "login.html", 503, username="",
                               error="Die Anmeldung über das Schulkonto ist gerade nicht möglich. Bitte später erneut "
                                     "versuchen oder das Passwort-Konto nutzen.")
        request.session["oidc"] = pending.to_dict()
        return RedirectResponse(url, status_code=303)

    async def oidc_callback(self, request: Request) -> Response:
        """Back from the identity provider: state, code, ID token; then the same session as a login."""
        if self.oidc is None:
            raise HTTPException(404)
        pending = Pending.from_dict(request.session.pop("oidc", None))
        params = request.query_params
        address = request.client.host if request.client else "unknown"
        try:
            claims = await run_in_threadpool(self.oidc.finish, pending, str(params.get("state") or ""),
                                             str(params.get("code") or ""))
            p = await run_in_threadpool(principal_from_claims, self.db, self.cfg.web.oidc, claims,
                                        set(self.inventory.schools))
        except (OIDCError, AuthError) as e:
            log.warning("OpenID Connect sign-in refused from %s: %s", address, e)
            await run_in_threadpool(audit.record, self.db, "web.login_refused", "oidc",
                                    {"reason": str(e)[:200], "address": address}, "oidc")
            return self.render(request, "login.html", 401, username="",
                               error="Die Anmeldung über das Schulkonto hat nicht geklappt.")
        request.session.clear()
        request.session["user"] = p.username
        request.session["tag"] = p.credential_tag
        request.session["sid"] = await run_in_threadpool(
            accounts.open_session, self.db, p.username, self.cfg.web.session_max_age_s
        )
        await run_in_threadpool(audit.record, self.db, "web.login", p.username, {"address": address, "via": "oidc"},
                                p.username)
        return RedirectResponse("/classes" if p.is_teacher else "/requests", status_code=303)

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        self.check_csrf(request, form)
        await run_in_threadpool(accounts.close_session, self.db, str(request.session.get("sid") or ""))
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def list_requests(self, request: Request) -> Response:
        p = await self.require_staff(request)
        items = await run_in_threadpool(reqs.list_requests, self.db, p)
        return self.render(request, "requests.html", principal=p, items=items)

    async def new_form(self, request: Request) -> Response:
        p = await self.require_staff(request)
        return self.render(request, "request_new.html", principal=p, errors=[], values={}, groups=IPAD_GROUPS)

    async def create(self, request: Request) -> Response:
        p = await self.require_staff(request)
        try:
            body = await read_bounded_body(request, self.cfg.web.max_upload_bytes)
        except UploadTooLarge:
            limit_mb = self.cfg.web.max_upload_bytes / (1024 * 1024)
            return self.render(
                request,
                "request_new.html",
                413,
                principal=p,
                values={},
                groups=IPAD_GROUPS,
                errors=[
                    f"Die Datei ist zu groß (höchstens {limit_mb:g} MB). "
                    "Eine Apple-School-Manager-Liste ist viel kleiner – richtige Datei?"
                ],
            )
        request._body = body  # starlette's form parser reads the cached body
        # Any field may be as large as the whole upload limit (starlette's default for a field is
        # 1 MB, beyond which the form was lost with a generic error); create_request judges it.
        form = await request.form(max_files=1, max_fields=20, max_part_size=self.cfg.web.max_upload_bytes)
        try:
            self.check_csrf(request, form)
            values = {k: str(form.get(k) or "") for k in ("school", "group", "purpose", "serials")}
            upload, upload_name = None, ""
            f = form.get("csv_file")
            if isinstance(f, UploadFile) and (f.filename or f.size):
                upload, upload_name = await f.read(), f.filename or "upload.csv"
        finally:
            await form.close()
        try:
            view = await run_in_threadpool(
                reqs.create_request,
                self.db,
                self.inventory,
                p,
                values["school"],
                values["group"],
                values["purpose"],
                values["serials"],
                upload,
                upload_name,
                await run_in_threadpool(self._managed_serials),
            )
        except (RequestInputError, NotFound) as e:
            problems = getattr(e, "problems", None) or [str(e)]
            if len(values["serials"]) > reqs.MAX_PASTED_LENGTH:
                values["serials"] = ""  # not a megabyte of text back into the page; the rest stays
            return self.render(
                request,
                "request_new.html",
                400,
                principal=p,
                values=values,
                groups=IPAD_GROUPS,
                errors=first_problems(problems),
            )
        request.session["flash"] = f"Antrag Nr. {view.id} wurde eingereicht."
        return RedirectResponse(f"/requests/{view.id}", status_code=303)

    def _managed_serials(self) -> set[str]:
        """Serials the MDM registry knows as enrolled: a new request for them is refused."""
        return {serial for serial, d in Registry(self.db).devices_by_serial().items() if d.state == "enrolled"}

    async def detail(self, request: Request) -> Response:
        p = await self.require_staff(request)
        rid = request_id(request)
        try:
            view = await run_in_threadpool(reqs.get_request, self.db, p, rid)
        except NotFound:
            raise HTTPException(404) from None
        return self.render(request, "request_detail.html", principal=p, r=view)

    async def export_csv(self, request: Request) -> Response:
        p = await self.require_staff(request)
        rid = request_id(request)
        try:
            text = await run_in_threadpool(reqs.export_request_csv, self.db, p, rid)
        except NotFound:
            raise HTTPException(404) from None
        return Response(
            text.encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="antrag-{rid}.csv"'},
        )

    async def decide(self, request: Request) -> Response:
        p = await self.require_staff(request)
        form = await request.form()
        self.check_csrf(request, form)
        rid = request_id(request)
        action = request.path_params["action"]
        if action not in ("approve", "reject"):
            raise HTTPException(404)
        try:
            if action == "approve":
                view = await run_in_threadpool(
                    reqs.approve_request, self.db, self.cfg, self.inventory, p, rid, self.dep_client
                )
                request.session["flash"] = (
                    f"Antrag Nr. {rid} genehmigt: {STATUS_DE.get(view.status, view.status)}; "
                    f"{sum(1 for s in view.serials if s.status == 'assigned')} von "
                    f"{view.total} bei Apple zugewiesen."
                )
            else:
                await run_in_threadpool(reqs.reject_request, self.db, p, rid, str(form.get("reason") or ""))
                request.session["flash"] = f"Antrag Nr. {rid} abgelehnt."
        except NotAllowed:
            raise HTTPException(403) from None
        except NotFound:
            raise HTTPException(404) from None
        except (DEPUnavailable, DEPProfileError, InvalidTransition, RequestInputError, WerneError) as e:
            # Admin-only path: the English one-line reason is what IT staff need.
            request.session["flash"] = f"Nicht ausgeführt: {e}"
        return RedirectResponse(f"/requests/{rid}", status_code=303)

    async def ade_enrol(self, request: Request) -> Response:
        """The ADE enrolment endpoint (enrolment.ade): MachineInfo in, signed enrolment profile out."""
        address = request.client.host if request.client else "unknown"
        if not self.ade_limit.allow(address):
            if self.ade_limit_log.allow(address):
                log.warning("ADE enrolment: %s is over the rate limit (%d at once, %g/s); refusing with 429",
                            address, ade.RATE_BURST, ade.RATE_PER_SECOND)
            return Response(b"too many requests\n", status_code=429, media_type="text/plain",
                            headers={"retry-after": str(round(1 / ade.RATE_PER_SECOND))})
        try:
            body = await read_bounded_body(request, ade.MAX_BODY)
        except UploadTooLarge:
            answer = await run_in_threadpool(ade.refuse_too_large, self.db, address)
        else:
            answer = await run_in_threadpool(ade.answer_enrolment, self.cfg, self.db, self.inventory, body, address)
        if answer.status != 200:
            # The reason quotes what the device sent (serial, signer's issuer): escaped, one line.
            log.warning("ADE enrolment refused (%s) from %s: %s", answer.status, one_line(address, 64),
                        one_line(answer.reason))
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    async def css(self, request: Request) -> Response:
        return Response(CSS, media_type="text/css")

    async def healthz(self, request: Request) -> Response:
        return Response("ok", media_type="text/plain")

    async def server_error(self, request: Request, exc: Exception) -> Response:
        """The 500 page. Starlette sends it from outside every middleware, so SecurityHeaders never
        sees it: the headers are set here. Starlette re-raises, so the traceback reaches the log."""
        headers = {k.decode(): v.decode() for k, v in SECURITY_HEADERS}
        return HTMLResponse(SERVER_ERROR_HTML, status_code=500, headers=headers)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 303:
            return RedirectResponse("/login", status_code=303)
        p = await self.principal(request) if "session" in request.scope else None
        messages = {
            403: (
                "Nicht erlaubt",
                "Diese Seite oder Aktion ist für Sie nicht freigegeben (nur die IT, oder nur die "
                "Lehrkräfte der Klasse), oder das Formular ist abgelaufen – bitte die Seite neu laden.",
            ),
            404: ("Nicht gefunden", "Diese Seite gibt es nicht."),
            405: ("Nicht erlaubt", "Diese Aktion ist hier nicht möglich."),
        }
        title, text = messages.get(exc.status_code, ("Fehler", "Die Anfrage konnte nicht bearbeitet werden."))
        return self.render(request, "error.html", exc.status_code, principal=p, title=title, text=text)


def create_app(
    cfg: Config,
    db: Database | None = None,
    inventory: Inventory | None = None,
    authenticator: Authenticator | None = None,
    dep_client: Any = None,
    on_startup: Callable[[], object] | None = None,
    on_shutdown: Callable[[], object] | None = None,
) -> Starlette:
    """The web application. Raises SecretError if the session key is not configured.

    `on_startup` and `on_shutdown` are called (not awaited; what they return is dropped) as the
    server starts and stops: the arrival watcher's thread."""
    key = read_secret(file=cfg.web.secret_key_file, env=cfg.web.secret_key_env, what="web session key")
    db = db or Database(cfg.database_url)
    web = WebApp(cfg, db, inventory, authenticator, dep_client)
    pages = ClassPages(web)
    routes = [
        Route("/", web.index),
        Route("/login", web.login_form, methods=["GET"]),
        Route("/login", web.login, methods=["POST"]),
        Route("/logout", web.logout, methods=["POST"]),
        Route("/login/oidc", web.oidc_begin, methods=["GET"]),
        Route("/login/oidc/callback", web.oidc_callback, methods=["GET"]),
        Route("/requests", web.list_requests, methods=["GET"]),
        Route("/requests/new", web.new_form, methods=["GET"]),
        Route("/requests/new", web.create, methods=["POST"]),
        Route("/requests/{rid:int}", web.detail, methods=["GET"]),
        Route("/requests/{rid:int}/export.csv", web.export_csv, methods=["GET"]),
        Route("/requests/{rid:int}/{action:str}", web.decide, methods=["POST"]),
        Route("/classes", pages.list_classes, methods=["GET"]),
        Route("/classes", pages.save, methods=["POST"]),
        Route("/classes/{cid:int}", pages.show_class, methods=["GET"]),
        Route("/classes/{cid:int}/lessons", pages.start_lesson, methods=["POST"]),
        Route("/lessons/{lid:int}/stop", pages.stop_lesson, methods=["POST"]),
        Route(enrol_path(cfg), web.ade_enrol, methods=["POST"]),
        Route("/static/style.css", web.css),
        Route("/healthz", web.healthz),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if on_startup:
            on_startup()
        yield
        if on_shutdown:
            on_shutdown()

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=key.reveal(),
                session_cookie="werne_session",
                max_age=cfg.web.session_max_age_s,
                same_site="lax",
                https_only=cfg.web.secure_cookies,
            ),
        ],
        exception_handlers={HTTPException: web.http_error, Exception: web.server_error},
        lifespan=lifespan,
    )
    app.state.web = web
    return app


class _Server(uvicorn.Server):
    """uvicorn's server, remembering which signal stopped it."""

    stopped_by: int | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stopped_by = sig
        super().handle_exit(sig, frame)


def listen_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one ServeError line (exit 3), not
    uvicorn's own log line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as e:
        # create_server adds "(while attempting to bind ...)" to strerror: the plain reason is enough.
        why = os.strerror(e.errno) if e.errno else e.__class__.__name__
        raise ServeError(f"cannot listen on {host}:{port}: {why}") from None


def serve(cfg: Config, host: str | None = None, port: int | None = None, watch_interval: float = 5.0) -> None:
    """Run the web app under uvicorn, with the arrival sweep in a background thread. Raises
    ServeError when it cannot listen, KeyboardInterrupt when Ctrl-C (SIGINT) stopped it (uvicorn
    shuts down cleanly first; the CLI then exits 130), and on SIGTERM ends as killed by SIGTERM."""
    listen_host, listen_port = split_listen(cfg.web.listen)  # checked when the config loaded
    db = Database(cfg.database_url)
    if cfg.dep.insecure_skip_machineinfo_verification:
        log.warning("dep.insecure_skip_machineinfo_verification is true: the enrolment endpoint serves any "
                    "device that knows a serial of the inventory (a lab setting, never production)")
    watcher = ArrivalWatcher(db, cfg, interval=watch_interval)
    app = create_app(cfg, db, on_startup=watcher.start, on_shutdown=watcher.stop)
    server = _Server(uvicorn.Config(
        app,
        log_level="warning",
        # X-Forwarded-For only from the configured proxies: from anyone else it is a forgery that
        # would reset the login backoff and put made-up addresses into the audit trail.
        proxy_headers=bool(cfg.web.trusted_proxies),
        forwarded_allow_ips=cfg.web.trusted_proxies or None,
        server_header=False,
    ))
    # Bound once the app is made (a missing session key is refused first, with no socket left open).
    sock = listen_socket(host or listen_host or "127.0.0.1", port or listen_port)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if server.stopped_by == signal.SIGINT:
        raise KeyboardInterrupt
