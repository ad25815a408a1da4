"""Lesson and exam mode: for one class and a time window, single-app mode for one app
(`com.apple.app.lock`, supervised iPads) or an allowlist of apps (`com.apple.applicationaccess`
allowListedAppBundleIDs), applied to the class's pupils' iPads when the window opens and removed
when it ends, by werne itself.

The lessons are rows in the state database; `tick(ctx, now)` is the loop's one step: it applies
every lesson whose window is open and lifts every active one whose window has closed. The web
server's watcher runs it every few seconds and once at start, so a lesson that ended while werne was
down is lifted as soon as it is up again (a lesson whose whole window passed while it was down is
recorded as missed, never applied late). The clock is `core.clock.now` (a test may set it).

Blast radius: one class. A teacher acts only on their own classes, a coordinator on their schools'
classes; anything else is refused (ClassroomDenied, web 403) and recorded in the audit trail.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from core import audit
from core.db import Database
from core.findings import Findings
from ipad import commands
from ipad.classroom.classes import ClassView, get_class
from ipad.dispatch import IPadContext, Job, check_blast_radius, select_targets, send_and_wait
from ipad.errors import ClassroomDenied, ClassroomError, LessonConflict
from ipad.models import Lesson
from ipad.payloads.profiles import (
    PROFILE_NAMESPACE,
    Profile,
    content_digest,
    load_group_assignment,
    profile_payload_for_install,
)

MODES = ("single_app", "allowlist")
PROFILE_NAME = "lesson"
BUNDLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]{1,154}$")
MAX_MINUTES = 8 * 60
MAX_APPS = 50
# A start this far in the past still counts as "now" (the form was filled in a minute ago).
PAST_GRACE = timedelta(minutes=2)
OPEN_STATES = ("scheduled", "active")
LESSON_ACTOR = "werne-lessons"


@dataclass(frozen=True)
class Actor:
    """Who acts on classes: a login, its role (admin, coordinator, teacher) and its schools."""

    name: str
    role: str
    schools: frozenset[str] = frozenset()

    def may_act_on(self, c: ClassView) -> bool:
        if self.role == "admin":
            return True
        if c.school not in self.schools:
            return False
        return self.role == "coordinator" or (self.role == "teacher" and self.name in c.teachers)


@dataclass(frozen=True)
class LessonView:
    """A lesson as the page and the CLI show it."""

    id: int
    class_id: int
    class_name: str
    school: str
    mode: str
    apps: tuple[str, ...]
    starts_at: datetime
    ends_at: datetime
    status: str
    created_by: str
    devices: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "class": self.class_name, "school": self.school, "mode": self.mode,
                "apps": list(self.apps), "starts_at": self.starts_at.isoformat(), "ends_at": self.ends_at.isoformat(),
                "status": self.status, "created_by": self.created_by, "devices": self.devices}


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _view(row: Lesson, c: ClassView | None) -> LessonView:
    return LessonView(row.id, row.class_id, c.name if c else "?", row.school_id, row.mode, tuple(row.apps),
                      _utc(row.starts_at), _utc(row.ends_at), row.status, row.created_by,
                      len(row.serials) if row.serials else (len(c.members) if c else 0))


def visible_class(db: Database, actor: Actor, class_id: int) -> ClassView:
    """The class, if the actor may act on it; refused (and recorded) otherwise. A class that does not
    exist is refused the same way, so ids tell nothing about other schools."""
    c = get_class(db, class_id)
    if c is None or not actor.may_act_on(c):
        audit.record(db, "classroom.denied", f"class:{class_id}", {"role": actor.role}, actor=actor.name)
        raise ClassroomDenied(f"class {class_id} is not one of yours")
    return c


def _check_apps(mode: str, apps: list[str]) -> list[str]:
    problems = []
    if mode not in MODES:
        problems.append(f"unknown mode '{mode[:20]}' (single_app or allowlist)")
    if not apps:
        problems.append("no app given (the exam app's bundle id, e.g. com.apple.Pages)")
    if mode == "single_app" and len(apps) > 1:
        problems.append("single-app mode takes exactly one app")
    if len(apps) > MAX_APPS:
        problems.append(f"more than {MAX_APPS} apps")
    problems += [f"bad bundle id '{a[:60]}'" for a in apps if not BUNDLE_RE.match(a)]
    return problems


def start_lesson(db: Database, actor: Actor, class_id: int, mode: str, apps: list[str], starts_at: datetime,
                 minutes: int, now: datetime) -> LessonView:
    """Schedule a lesson (it is applied by `tick` when its window opens). Refuses a window in the
    past, longer than MAX_MINUTES, or overlapping an open lesson of the class."""
    c = visible_class(db, actor, class_id)
    apps = [a.strip() for a in apps if a.strip()]
    problems = _check_apps(mode, apps)
    starts_at = _utc(starts_at)
    ends_at = starts_at + timedelta(minutes=minutes)
    if not 0 < minutes <= MAX_MINUTES:
        problems.append(f"the lesson must last 1 to {MAX_MINUTES} minutes")
    if problems:
        raise ClassroomError(problems)
    if starts_at < now - PAST_GRACE:
        raise LessonConflict(f"the window {starts_at:%Y-%m-%d %H:%M} UTC is in the past")
    with db.session() as s:
        clash = s.scalar(select(Lesson).where(Lesson.class_id == class_id, Lesson.status.in_(OPEN_STATES),
                                              Lesson.starts_at < ends_at, Lesson.ends_at > starts_at))
        if clash is not None:
            raise LessonConflict(f"overlaps lesson {clash.id} of class '{c.name}' "
                                 f"({_utc(clash.starts_at):%H:%M}-{_utc(clash.ends_at):%H:%M} UTC)")
        row = Lesson(class_id=class_id, school_id=c.school, mode=mode, apps=apps, starts_at=starts_at,
                     ends_at=ends_at, status="scheduled", created_by=actor.name, created_at=now, serials=[],
                     detail="")
        s.add(row)
        s.flush()
        view = _view(row, c)
    audit.record(db, "classroom.lesson.start", f"class:{class_id}",
                 {"lesson": view.id, "mode": mode, "apps": apps, "starts_at": starts_at.isoformat(),
                  "ends_at": ends_at.isoformat()}, actor=actor.name)
    return view


def stop_lesson(db: Database, actor: Actor, lesson_id: int, now: datetime) -> LessonView:
    """End a lesson now: a scheduled one is cancelled, an active one is lifted by the next tick."""
    with db.session() as s:
        row = s.get(Lesson, lesson_id)
        class_id = row.class_id if row is not None else -1
    c = visible_class(db, actor, class_id)
    with db.session() as s:
        row = s.get(Lesson, lesson_id)
        if row is None or row.status not in OPEN_STATES:
            raise ClassroomError(f"lesson {lesson_id} is not scheduled or running")
        if row.status == "scheduled":
            row.status = "cancelled"
        row.ends_at = min(_utc(row.ends_at), now)
        view = _view(row, c)
    audit.record(db, "classroom.lesson.stop", f"class:{class_id}", {"lesson": lesson_id}, actor=actor.name)
    return view


def list_lessons(db: Database, actor: Actor, class_id: int | None = None, open_only: bool = False) -> list[LessonView]:
    """The lessons of the classes the actor may act on (of one class)."""
    with db.session() as s:
        q = select(Lesson).order_by(Lesson.starts_at.desc())
        if class_id is not None:
            q = q.where(Lesson.class_id == class_id)
        if open_only:
            q = q.where(Lesson.status.in_(OPEN_STATES))
        rows = list(s.scalars(q.limit(200)))
        classes = {cid: get_class(db, cid) for cid in {r.class_id for r in rows}}
        return [_view(r, classes[r.class_id]) for r in rows
                if classes[r.class_id] is not None and actor.may_act_on(classes[r.class_id])]  # type: ignore[arg-type]


# --- the profile -------------------------------------------------------------------------------------


def lesson_profile(mode: str, apps: list[str], organization: str, identifier_prefix: str) -> Profile:
    """The profile that puts an iPad into the lesson: App Lock for one app, or the app allowlist."""
    ident = f"{identifier_prefix}.{PROFILE_NAME}"
    body: dict[str, Any]
    if mode == "single_app":
        ptype, body = "com.apple.app.lock", {"App": {"Identifier": apps[0], "Options": {"DisableAutoLock": False}}}
        title = f"Prüfungsmodus: nur {apps[0]}"
    else:
        ptype, body = "com.apple.applicationaccess", {"allowListedAppBundleIDs": list(apps)}
        title = f"Unterricht: {len(apps)} erlaubte App(s)"
    payload = {**body, "PayloadType": ptype, "PayloadVersion": 1, "PayloadIdentifier": f"{ident}.0",
               "PayloadDisplayName": title, "PayloadOrganization": organization}
    payload["PayloadUUID"] = str(uuid.uuid5(PROFILE_NAMESPACE, f"{ident}.0:{content_digest(payload)}")).upper()
    top: dict[str, Any] = {"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": ident,
                           "PayloadDisplayName": title, "PayloadOrganization": organization,
                           "PayloadRemovalDisallowed": True, "PayloadScope": "System", "PayloadContent": [payload]}
    content_hash = content_digest(top)
    top["PayloadUUID"] = str(uuid.uuid5(PROFILE_NAMESPACE, f"{ident}:{content_hash}")).upper()
    return Profile(PROFILE_NAME, ident, top["PayloadUUID"], title, (ptype,), top, content_hash)


def has_open_lessons(db: Database) -> bool:
    """Whether any lesson is scheduled or running (the loop does nothing otherwise)."""
    with db.session() as s:
        return s.scalar(select(Lesson.id).where(Lesson.status.in_(OPEN_STATES)).limit(1)) is not None


def active_lessons_by_serial(db: Database) -> dict[str, Lesson]:
    """serial -> the active lesson its iPad is in (what `werne ipad configure` must leave installed)."""
    with db.session() as s:
        rows = list(s.scalars(select(Lesson).where(Lesson.status == "active")))
        s.expunge_all()
    return {serial: r for r in rows for serial in r.serials or []}


# --- the loop ----------------------------------------------------------------------------------------


@dataclass
class TickReport(Findings):
    """What one step of the lesson loop did."""

    applied: list[int] = field(default_factory=list)
    lifted: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    problems: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def tick(ctx: IPadContext, now: datetime) -> TickReport:
    """Apply the lessons whose window is open, lift those whose window has closed."""
    report = TickReport()
    assignment = load_group_assignment(ctx.config)
    with ctx.db.session() as s:
        due = [(r.id, r.class_id, r.mode, list(r.apps), r.status, _utc(r.starts_at), _utc(r.ends_at), list(r.serials))
               for r in s.scalars(select(Lesson).where(Lesson.status.in_(OPEN_STATES), Lesson.starts_at <= now))]
    for lid, class_id, mode, apps, status, _starts, ends, serials in due:
        try:
            if status == "active" and ends <= now:
                _lift(ctx, lid, serials, now)
                report.lifted.append(lid)
            elif status == "scheduled" and ends <= now:
                _finish(ctx.db, lid, "missed", now, "the window passed while werne was not running")
                report.missed.append(lid)
            elif status == "scheduled":
                profile = lesson_profile(mode, apps, assignment.organization, assignment.identifier_prefix)
                _apply(ctx, lid, class_id, profile, now)
                report.applied.append(lid)
        except ClassroomError as e:
            report.problems[lid] = str(e)
    return report


def _apply(ctx: IPadContext, lesson_id: int, class_id: int, profile: Profile, now: datetime) -> None:
    c = get_class(ctx.db, class_id)
    if c is None:
        _finish(ctx.db, lesson_id, "failed", now, "the class was deleted")
        return
    serials = tuple(d.serial for d in c.members)
    targets = select_targets(ctx, serials=serials) if serials else []
    # The blast radius of a lesson is its class: its pupils' iPads, and nothing else.
    check_blast_radius(ctx, len(targets), len(c.members), "lesson")
    job = Job(commands.install_profile(profile_payload_for_install(profile, ctx.config)), targets, profile.identifier,
              {"lesson": lesson_id, "class": class_id})
    result = send_and_wait(ctx, "lesson", [job], targets, 0)
    with ctx.db.session() as s:
        row = s.get(Lesson, lesson_id)
        assert row is not None
        row.status, row.applied_at, row.serials = "active", now, list(serials)
        row.detail = f"sent to {sum(1 for d in result.devices if d.enrollment_id)} of {len(serials)} iPads"
    audit.record(ctx.db, "classroom.lesson.applied", f"class:{class_id}",
                 {"lesson": lesson_id, "profile": profile.identifier, "devices": list(serials)}, actor=LESSON_ACTOR)


def _lift(ctx: IPadContext, lesson_id: int, serials: list[str], now: datetime) -> None:
    known = [s for s in serials if s in ctx.inventory.ipads]
    targets = select_targets(ctx, serials=tuple(known)) if known else []
    identifier = f"{load_group_assignment(ctx.config).identifier_prefix}.{PROFILE_NAME}"
    send_and_wait(ctx, "lesson", [Job(commands.remove_profile(identifier), targets, identifier,
                                      {"lesson": lesson_id})], targets, 0)
    _finish(ctx.db, lesson_id, "ended", now, "")
    audit.record(ctx.db, "classroom.lesson.lifted", f"lesson:{lesson_id}", {"devices": serials}, actor=LESSON_ACTOR)


def _finish(db: Database, lesson_id: int, status: str, now: datetime, detail: str) -> None:
    with db.session() as s:
        row = s.get(Lesson, lesson_id)
        assert row is not None
        row.status, row.lifted_at = status, now
        if detail:
            row.detail = detail
