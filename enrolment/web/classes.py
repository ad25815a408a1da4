"""The classroom pages of the web app: classes (coordinators keep them, by form or class-list CSV)
and lessons (teachers and coordinators start and stop them; a teacher sees only their own classes).

A class that is not the user's answers 403 and is recorded in the audit trail (ipad.classroom's
`visible_class`), whether it belongs to another school or to another teacher. Saving a class sends
its iPads their Education configuration at once where NanoMDM answers; otherwise `werne ipad
configure` (and the nightly rule) catch up.
"""

from __future__ import annotations

import logging
import zoneinfo
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from core import clock
from core.errors import WerneError
from enrolment.accounts import Principal
from enrolment.web.i18n import translate
from ipad.classroom import classes as cls
from ipad.classroom import lessons
from ipad.classroom.context import classroom_context
from ipad.dispatch import IPadContext
from ipad.errors import ClassroomDenied, ClassroomError

if TYPE_CHECKING:
    from enrolment.web.app import WebApp

log = logging.getLogger("werne.enrolment.web")
MAX_CLASS_CSV = 1024 * 1024
MAX_PROBLEMS_SHOWN = 50

MODE_DE = {"single_app": "Prüfungsmodus (eine App)", "allowlist": "Unterricht (erlaubte Apps)"}
LESSON_STATUS_DE = {"scheduled": "geplant", "active": "läuft", "ended": "beendet", "cancelled": "abgebrochen",
                    "missed": "verpasst", "failed": "fehlgeschlagen"}


def actor_of(p: Principal) -> lessons.Actor:
    return lessons.Actor(p.username, p.role, p.schools)


def visible_classes(web: WebApp, p: Principal) -> list[cls.ClassView]:
    rows = cls.list_classes(web.db)
    actor = actor_of(p)
    return [c for c in rows if actor.may_act_on(c)]


def _problems_de(e: ClassroomError) -> list[str]:
    shown = [translate(x) for x in e.problems[:MAX_PROBLEMS_SHOWN]]
    if len(e.problems) > MAX_PROBLEMS_SHOWN:
        shown.append(f"… und {len(e.problems) - MAX_PROBLEMS_SHOWN} weitere Fehler.")
    return shown


def _install_class_profiles(web: WebApp, serials: list[str]) -> str:
    """Send the saved class's iPads their Education configuration now (no wait); why not, if not."""
    from ipad.actions.configure import configure

    if not serials:
        return ""
    try:
        ctx = classroom_context(IPadContext(web.cfg, web.db, web.inventory, actor="werne-web"))
        known = tuple(s for s in serials if s in web.inventory.ipads)
        configure(ctx, serials=known, deadline_s=0, max_devices=len(known))
    except WerneError as e:
        log.warning("class profiles not sent now: %s", e)
        return "Die Klassen-Konfiguration wird bei der nächsten Konfiguration der iPads installiert."
    return "Die Klassen-Konfiguration ist an die iPads unterwegs."


class ClassPages:
    """The endpoints under /classes and /lessons."""

    def __init__(self, web: WebApp):
        self.web = web

    def _page(self, request: Request, p: Principal, status: int = 200, **ctx: Any) -> Response:
        items = visible_classes(self.web, p)
        actor = actor_of(p)
        open_lessons = lessons.list_lessons(self.web.db, actor)
        by_class: dict[int, list[lessons.LessonView]] = {}
        for v in open_lessons:
            by_class.setdefault(v.class_id, []).append(v)
        ctx.setdefault("errors", [])
        ctx.setdefault("values", {})
        return self.web.render(request, "classes.html", status, principal=p, classes=items, lessons=by_class,
                               MODE_DE=MODE_DE, LESSON_STATUS_DE=LESSON_STATUS_DE, zone=self._zone_name(), **ctx)

    def _zone_name(self) -> str:
        return self.web.cfg.ddm.default_time_zone

    async def list_classes(self, request: Request) -> Response:
        p = await self.web.require(request)
        return await run_in_threadpool(self._page, request, p)

    async def save(self, request: Request) -> Response:
        """A class from the form (lines "Rolle;Seriennummer;Name;Anmeldename") or a class-list CSV."""
        p = await self.web.require(request)
        if p.is_teacher:
            raise HTTPException(403)
        form = await request.form(max_files=1, max_fields=10)
        try:
            self.web.check_csrf(request, form)
            school = str(form.get("school") or "")
            name = str(form.get("class_name") or "").strip()
            lines = str(form.get("devices") or "")
            upload = form.get("csv_file")
            raw, filename = b"", ""
            if isinstance(upload, UploadFile) and (upload.filename or upload.size):
                raw, filename = await upload.read(MAX_CLASS_CSV + 1), upload.filename or "klassen.csv"
        finally:
            await form.close()
        values = {"school": school, "class_name": name, "devices": lines}
        if school not in self.web.inventory.schools or not p.may_see_school(school):
            raise HTTPException(404)
        if len(raw) > MAX_CLASS_CSV:
            return await run_in_threadpool(self._page, request, p, 413, values=values,
                                           errors=["Die Datei ist zu groß (höchstens 1 MB)."])
        if not raw:
            header = "Klasse;Rolle;Seriennummer;Name;Anmeldename\n"
            raw = (header + "".join(f"{name};{line.strip()}\n" for line in lines.splitlines() if line.strip())).encode()
            filename = "Formular"
        before = await run_in_threadpool(cls.list_classes, self.web.db, school)
        try:
            saved = await run_in_threadpool(cls.import_class_csv, self.web.db, self.web.inventory, school, raw,
                                            filename, p.username)
        except ClassroomError as e:
            return await run_in_threadpool(self._page, request, p, 400, values=values, errors=_problems_de(e))
        note = await run_in_threadpool(_install_class_profiles, self.web, cls.affected_serials(before, saved))
        request.session["flash"] = f"{len(saved)} Klasse(n) gespeichert: {', '.join(c.name for c in saved)}. {note}"
        return RedirectResponse("/classes", status_code=303)

    async def start_lesson(self, request: Request) -> Response:
        p = await self.web.require(request)
        form = await request.form(max_fields=10)
        self.web.check_csrf(request, form)
        class_id = int(request.path_params["cid"])
        mode = str(form.get("mode") or "single_app")
        apps = [a.strip() for a in str(form.get("apps") or "").replace(",", "\n").splitlines() if a.strip()]
        at = str(form.get("start") or "").strip()
        try:
            minutes = int(str(form.get("minutes") or "0"))
        except ValueError:
            minutes = 0
        now = clock.now()
        try:
            starts = self._start_time(at, now)
            view = await run_in_threadpool(lessons.start_lesson, self.web.db, actor_of(p), class_id, mode, apps,
                                           starts, minutes, now)
        except ClassroomDenied:
            raise HTTPException(403) from None
        except ClassroomError as e:
            return await run_in_threadpool(self._page, request, p, 400, errors=_problems_de(e))
        await run_in_threadpool(self._tick)
        zone = self._zone()
        request.session["flash"] = (f"Unterricht für {view.class_name} von {view.starts_at.astimezone(zone):%H:%M}"
                                    f" bis {view.ends_at.astimezone(zone):%H:%M} Uhr geplant.")
        return RedirectResponse("/classes", status_code=303)

    async def stop_lesson(self, request: Request) -> Response:
        p = await self.web.require(request)
        form = await request.form(max_fields=5)
        self.web.check_csrf(request, form)
        lesson_id = int(request.path_params["lid"])
        try:
            view = await run_in_threadpool(lessons.stop_lesson, self.web.db, actor_of(p), lesson_id, clock.now())
        except ClassroomDenied:
            raise HTTPException(403) from None
        except ClassroomError as e:
            return await run_in_threadpool(self._page, request, p, 400, errors=_problems_de(e))
        await run_in_threadpool(self._tick)
        request.session["flash"] = f"Unterricht für {view.class_name} beendet."
        return RedirectResponse("/classes", status_code=303)

    async def show_class(self, request: Request) -> Response:
        """One class's page (its lessons); another's answers 403 and is recorded."""
        p = await self.web.require(request)
        class_id = int(request.path_params["cid"])
        try:
            c = await run_in_threadpool(lessons.visible_class, self.web.db, actor_of(p), class_id)
        except ClassroomDenied:
            raise HTTPException(403) from None
        return await run_in_threadpool(self._page, request, p, focus=c.id)

    def _zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self._zone_name())

    def _start_time(self, at: str, now: datetime) -> datetime:
        """The form's start, HH:MM today in the city's zone; empty: now."""
        if not at:
            return now
        try:
            t = datetime.strptime(at, "%H:%M")
        except ValueError:
            raise ClassroomError(f"bad start time '{at[:10]}' (HH:MM)") from None
        return now.astimezone(self._zone()).replace(hour=t.hour, minute=t.minute, second=0, microsecond=0)

    def _tick(self) -> None:
        """Apply or lift now what is due (the watcher would within seconds; the page shows it at once)."""
        try:
            lessons.tick(IPadContext(self.web.cfg, self.web.db, self.web.inventory, actor="werne-web"), clock.now())
        except WerneError as e:
            log.warning("lesson loop step from the page failed: %s", e)
