"""`werne class`: the schools' classes for Apple Classroom (list, import a class list, delete) and
lesson or exam mode for one class (`werne class lesson start/stop/list`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from commands import render
from commands.context import AppContext, ipad_context, pass_app
from commands.options import ID, json_option

if TYPE_CHECKING:
    from ipad.classroom.lessons import Actor

LESSON_COLUMNS = (render.Col(5, right=True), render.Col(10), render.Col(8), render.Col(10), render.Col(17),
                  render.Col(6), render.Col(10), render.Col())
LESSON_HEADER = ("ID", "SCHOOL", "CLASS", "MODE", "FROM", "UNTIL", "STATUS", "APPS")


@click.group("class")
def classroom() -> None:
    """Classes for Apple Classroom (no Managed Apple IDs) and lesson or exam mode.

    Example:

        werne class import klassen.csv --school gs-demo
    """


def _actor() -> Actor:
    from core.audit import current_actor
    from ipad.classroom.lessons import Actor

    return Actor(current_actor(), "admin")


@classroom.command("list")
@click.option("--school", default=None, help="Only this school's classes.")
@json_option()
@pass_app
def class_list(app: AppContext, school: str | None, as_json: bool) -> None:
    """List the classes: teacher's iPads, pupils' iPads, teachers' logins (pupils' names only with --json).

    Example:

        werne class list --school gs-demo
    """
    from ipad.classroom.classes import list_classes

    if school is not None:
        app.inventory.appletvs_of_school(school)  # an unknown school is bad input (exit 2)
    rows = list_classes(app.db, school)
    if as_json:
        render.json_out([c.to_dict() for c in rows])
        return
    for c in rows:
        render.line(f"{c.school} {c.name} (beacon {c.beacon_id}): {len(c.leaders)} teacher iPad(s), "
                    f"{len(c.members)} pupil iPad(s); teachers: {', '.join(c.teachers) or '-'}")
    render.line(f"{len(rows)} classes")


@classroom.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--school", required=True, help="The school whose classes the file holds.")
@json_option()
@pass_app
def class_import(app: AppContext, csv_file: Path, school: str, as_json: bool) -> None:
    """Import classes from a class list (CSV as school software exports it: ';' or ',', UTF-8 or
    Windows-1252; columns Klasse, Rolle, Seriennummer, Vorname/Pseudonym, Anmeldename). All or nothing.

    Example:

        werne class import klassen.csv --school gs-demo
    """
    from core.audit import current_actor
    from core.errors import InputError
    from core.files import read_regular_file
    from ipad.classroom.classes import import_class_csv

    try:
        raw = read_regular_file(csv_file, limit=5 * 1024 * 1024)
    except OSError as e:
        raise InputError(f"{csv_file}: cannot read: {e.strerror or e.__class__.__name__}") from None
    saved = import_class_csv(app.db, app.inventory, school, raw, csv_file.name, current_actor())
    if as_json:
        render.json_out([c.to_dict() for c in saved])
        return
    for c in saved:
        render.line(f"{c.school} {c.name}: {len(c.leaders)} teacher iPad(s), {len(c.members)} pupil iPad(s)")
    render.line(f"{len(saved)} classes saved; `werne ipad configure --school {school}` installs their "
                "Education configuration")


@classroom.command("delete")
@click.argument("name")
@click.option("--school", required=True, help="The class's school.")
@pass_app
def class_delete(app: AppContext, name: str, school: str) -> None:
    """Delete a class (its iPads lose its Education configuration at the next configure).

    Example:

        werne class delete 5a --school gs-demo
    """
    from core.audit import current_actor
    from ipad.classroom.classes import delete_class

    delete_class(app.db, school, name, current_actor())
    render.line(f"class {name} of {school} deleted")


@classroom.group("lesson")
def lesson() -> None:
    """Lesson or exam mode for one class and a time window, lifted by werne when it ends.

    Example:

        werne class lesson start --school gs-demo --class 5a --app com.apple.Pages --minutes 45
    """


def _when(app: AppContext, school: str, at: str | None) -> datetime:
    """`--at`: HH:MM today in the school's time zone, or an ISO date and time; default now."""
    import zoneinfo

    from core import clock
    from core.errors import InputError

    zone = zoneinfo.ZoneInfo(app.inventory.schools[school].time_zone or app.config.ddm.default_time_zone)
    now = clock.now()
    if not at:
        return now
    try:
        if len(at) <= 5:
            t = datetime.strptime(at, "%H:%M")
            local = now.astimezone(zone).replace(hour=t.hour, minute=t.minute, second=0, microsecond=0)
            return local
        when = datetime.fromisoformat(at)
    except ValueError:
        raise InputError(f"--at {at[:30]!r}: give HH:MM or YYYY-MM-DDTHH:MM") from None
    return when if when.tzinfo else when.replace(tzinfo=zone)


def _tick_now(app: AppContext) -> str:
    """One step of the lesson loop now (the web server's watcher does it too); the reason if it could not."""
    from core import clock
    from core.errors import WerneError
    from ipad.classroom.lessons import tick

    try:
        report = tick(ipad_context(app), clock.now())
    except WerneError as e:
        return f"not sent now ({e}); the web server's lesson loop sends it"
    if report.problems:
        return "; ".join(report.problems.values())
    return ""


@lesson.command("start")
@click.option("--school", required=True, help="The class's school.")
@click.option("--class", "class_name", required=True, help="The class's name.")
@click.option("--app", "apps", multiple=True, required=True, help="App bundle id (repeat for an allowlist).")
@click.option("--mode", type=click.Choice(["single_app", "allowlist"]), default="single_app", show_default=True,
              help="single_app: exam mode locked to one app; allowlist: only these apps.")
@click.option("--at", default=None, help="Start: HH:MM today (school's time zone) or YYYY-MM-DDTHH:MM; default now.")
@click.option("--minutes", type=click.IntRange(1, 480), required=True, help="How long (1-480 minutes).")
@json_option()
@pass_app
def lesson_start(app: AppContext, school: str, class_name: str, apps: tuple[str, ...], mode: str, at: str | None,
                 minutes: int, as_json: bool) -> None:
    """Start (or schedule) a lesson for one class; werne lifts it by itself when the window ends.

    Example:

        werne class lesson start --school gs-demo --class 5a --app com.apple.Pages --at 10:00 --minutes 30
    """
    from core import clock
    from ipad.classroom.classes import list_classes
    from ipad.classroom.lessons import start_lesson
    from ipad.errors import ClassroomError

    if school not in app.inventory.schools:
        raise ClassroomError(f"unknown school: {school[:32]}")
    found = [c for c in list_classes(app.db, school) if c.name == class_name]
    if not found:
        raise ClassroomError(f"no class '{class_name[:40]}' at {school}")
    view = start_lesson(app.db, _actor(), found[0].id, mode, list(apps), _when(app, school, at), minutes, clock.now())
    note = _tick_now(app) if view.starts_at <= clock.now() + timedelta(seconds=1) else ""
    if as_json:
        render.json_out({**view.to_dict(), "note": note})
        return
    render.line(f"lesson {view.id}: {view.class_name} {view.mode} {', '.join(view.apps)}, "
                f"{view.starts_at:%Y-%m-%d %H:%M}-{view.ends_at:%H:%M} UTC" + (f"; {note}" if note else ""))


@lesson.command("stop")
@click.argument("lesson_id", type=ID)
@pass_app
def lesson_stop(app: AppContext, lesson_id: int) -> None:
    """Stop a lesson now (a scheduled one is cancelled); the iPads are released at once.

    Example:

        werne class lesson stop 12
    """
    from core import clock
    from ipad.classroom.lessons import stop_lesson

    view = stop_lesson(app.db, _actor(), lesson_id, clock.now())
    note = _tick_now(app)
    render.line(f"lesson {view.id} of {view.class_name}: {view.status}" + (f"; {note}" if note else ""))


@lesson.command("list")
@click.option("--school", default=None, help="Only this school's lessons.")
@json_option()
@pass_app
def lesson_list(app: AppContext, school: str | None, as_json: bool) -> None:
    """List lessons (newest first): class, mode, window, status.

    Example:

        werne class lesson list --school gs-demo
    """
    from ipad.classroom.lessons import list_lessons

    rows = [v for v in list_lessons(app.db, _actor()) if school is None or v.school == school]
    if as_json:
        render.json_out([v.to_dict() for v in rows])
        return
    render.table(LESSON_COLUMNS, [LESSON_HEADER, *[
        (v.id, v.school, v.class_name, v.mode, f"{v.starts_at:%Y-%m-%d %H:%M}", f"{v.ends_at:%H:%M}", v.status,
         ", ".join(v.apps)) for v in rows]])
    render.line(f"{len(rows)} lessons (times in UTC)")
