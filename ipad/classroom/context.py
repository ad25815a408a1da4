"""Hooks the classes into the iPad actions: an `IPadContext` whose devices also get their class's
Education configuration (and, in a lesson, its lesson profile), as `werne ipad configure`, the
arrival of a new iPad and the class page's save all install them."""

from __future__ import annotations

from pathlib import Path

from ipad.classroom.ca import ClassroomCA
from ipad.classroom.classes import ClassView, list_classes
from ipad.classroom.education import education_profile
from ipad.classroom.lessons import active_lessons_by_serial, lesson_profile
from ipad.dispatch import IPadContext
from ipad.payloads.profiles import Profile, load_group_assignment


def classroom_dir(ctx: IPadContext) -> Path:
    return ctx.config.state_dir / "classroom"


def classes_by_serial(classes: list[ClassView]) -> dict[str, list[ClassView]]:
    out: dict[str, list[ClassView]] = {}
    for c in classes:
        for d in c.devices:
            out.setdefault(d.serial, []).append(c)
    return out


def classroom_context(ctx: IPadContext) -> IPadContext:
    """`ctx`, with extra_profiles giving each iPad in a class its Education configuration, and each
    iPad in a running lesson the lesson's profile."""
    classes = classes_by_serial(list_classes(ctx.db))
    lessons = active_lessons_by_serial(ctx.db)
    if not classes and not lessons:
        ctx.extra_profiles = None
        return ctx
    assignment = load_group_assignment(ctx.config)
    cache: dict[str, ClassroomCA] = {}

    def extra(serial: str) -> list[Profile]:
        out = []
        if serial in classes:
            if "ca" not in cache:  # made (on first use) only when a class needs it
                cache["ca"] = ClassroomCA(classroom_dir(ctx))
            out.append(education_profile(serial, classes[serial], cache["ca"], assignment.organization,
                                         assignment.identifier_prefix))
        if serial in lessons:
            lesson = lessons[serial]
            out.append(lesson_profile(lesson.mode, list(lesson.apps), assignment.organization,
                                      assignment.identifier_prefix))
        return out

    ctx.extra_profiles = extra
    return ctx
