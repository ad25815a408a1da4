"""The schools' classes for Apple Classroom: a name, the teacher's iPad(s) (leaders), the pupils'
iPads (members), each shown by a pseudonym or a first name only, and the logins of the teachers who
may see the class on the web page.

Classes are kept on the coordinators' page or imported from a CSV as school administration software
exports it (`;` or `,`, UTF-8 with or without BOM or Windows-1252, one row per iPad: class, role,
serial, name, and the teacher's login). Every problem is named with its line; nothing is stored
unless the whole input is good. Columns werne does not use (surname, birthday, address) are never
read. A pupil's iPad is in one class at a time; a teacher's iPad may lead several classes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from core import audit
from core.csvio import CSVFormatError, decode_csv_bytes, read_rows
from core.db import Database
from core.inventory import Inventory, normalise_serial
from ipad.errors import ClassroomError
from ipad.models import ClassDevice, ClassTeacher, SchoolClass

CLASS_NAME_RE = re.compile(r"^[\w][\w .\-/]{0,31}$")
LOGIN_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MAX_NAME = 32
MAX_DEVICES_PER_CLASS = 60
LEADER_WORDS = {"lehrkraft", "lehrer", "lehrerin", "teacher", "leader", "lk"}
MEMBER_WORDS = {"schüler", "schülerin", "schueler", "schuelerin", "schüler/in", "pupil", "student", "member", "sus"}
CLASS_CSV_ALIASES = {
    "class": {"klasse", "lerngruppe", "kurs", "class", "klassenname"},
    "role": {"rolle", "role", "typ", "funktion"},
    "serial": {"seriennummer", "serial number", "serial", "serialnumber", "ipad"},
    "name": {"vorname", "pseudonym", "anzeigename", "rufname", "name", "first name"},
    "login": {"anmeldename", "login", "benutzername", "benutzer", "kürzel", "username"},
}


@dataclass(frozen=True)
class ClassMember:
    """One iPad of a class: its serial, leader (the teacher's) or member (a pupil's), and its name."""

    serial: str
    role: str
    name: str


@dataclass
class ClassInput:
    """A class as entered (web form or CSV): what `save_classes` validates and stores."""

    name: str
    devices: list[ClassMember] = field(default_factory=list)
    teachers: list[str] = field(default_factory=list)
    # Where each device came from, for the problems' line numbers ("file.csv:7").
    where: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClassView:
    """A stored class."""

    id: int
    school: str
    name: str
    beacon_id: int
    devices: tuple[ClassMember, ...]
    teachers: tuple[str, ...]

    @property
    def leaders(self) -> list[ClassMember]:
        return [d for d in self.devices if d.role == "leader"]

    @property
    def members(self) -> list[ClassMember]:
        return [d for d in self.devices if d.role == "member"]

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "school": self.school, "name": self.name, "beacon_id": self.beacon_id,
                "teachers": list(self.teachers),
                "devices": [{"serial": d.serial, "role": d.role, "name": d.name} for d in self.devices]}


def _views(db: Database, where: Iterable[Any] = ()) -> list[ClassView]:
    with db.session() as s:
        classes = list(s.scalars(select(SchoolClass).where(*where).order_by(SchoolClass.school_id, SchoolClass.name)))
        ids = [c.id for c in classes]
        devices = list(s.scalars(select(ClassDevice).where(ClassDevice.class_id.in_(ids)))) if ids else []
        teachers = list(s.scalars(select(ClassTeacher).where(ClassTeacher.class_id.in_(ids)))) if ids else []
        out = []
        for c in classes:
            devs = sorted((ClassMember(d.serial, d.role, d.display_name) for d in devices if d.class_id == c.id),
                          key=lambda m: (m.role != "leader", m.name.lower(), m.serial))
            out.append(ClassView(c.id, c.school_id, c.name, c.beacon_id, tuple(devs),
                                 tuple(sorted(t.username for t in teachers if t.class_id == c.id))))
        return out


def list_classes(db: Database, school: str | None = None, teacher: str | None = None) -> list[ClassView]:
    """The classes (of one school; of one teacher's login)."""
    where: list[Any] = [SchoolClass.school_id == school] if school else []
    if teacher is not None:
        where.append(SchoolClass.id.in_(select(ClassTeacher.class_id).where(ClassTeacher.username == teacher)))
    return _views(db, where)


def get_class(db: Database, class_id: int) -> ClassView | None:
    found = _views(db, [SchoolClass.id == class_id])
    return found[0] if found else None


def affected_serials(before: list[ClassView], saved: list[ClassView]) -> list[str]:
    """The iPads whose Education configuration a save changes: those in the saved classes now, and
    those that were in them before (a pupil moved out loses the class at once, not at the next run)."""
    names = {(c.school, c.name) for c in saved}
    return sorted({d.serial for c in saved for d in c.devices}
                  | {d.serial for c in before if (c.school, c.name) in names for d in c.devices})


def classes_of_serial(db: Database, serial: str) -> list[ClassView]:
    """The classes an iPad is in (a teacher's iPad may lead several)."""
    return _views(db, [SchoolClass.id.in_(select(ClassDevice.class_id).where(ClassDevice.serial == serial))])


# --- validation ------------------------------------------------------------------------------------


def check_display_name(name: str) -> str | None:
    """Why a name is not a pseudonym or first name only (None when it is fine)."""
    if not name:
        return "no name (a pseudonym or first name)"
    if len(name) > MAX_NAME:
        return f"name longer than {MAX_NAME} characters (a pseudonym or first name only)"
    if "@" in name or "," in name or len(name.split()) > 2 or any(c.isdigit() for c in name) and "." in name:
        return f"name '{name}' looks like more than a first name or pseudonym (no e-mail, no 'surname, first name')"
    return None


def _role(raw: str) -> str | None:
    word = raw.strip().lower()
    if word in LEADER_WORDS:
        return "leader"
    if word in MEMBER_WORDS:
        return "member"
    return None


def _check_devices(inventory: Inventory, school: str, c: ClassInput, member_of: dict[str, str],
                   leader_of: dict[str, list[str]]) -> list[str]:
    """The problems of one class's iPads; notes which class each pupil's and teacher's iPad is in."""
    problems: list[str] = []
    seen: set[str] = set()
    for d in c.devices:
        at = c.where.get(d.serial, f"class '{c.name}'")
        if d.serial in seen:
            problems.append(f"{at}: {d.serial} is twice in class '{c.name}'")
            continue
        seen.add(d.serial)
        if d.serial in inventory.appletvs:
            problems.append(f"{at}: {d.serial} is an Apple TV, not an iPad")
            continue
        ipad = inventory.ipads.get(d.serial)
        if ipad is None or ipad.school != school:
            # Do not tell whose iPad it is: it may belong to another school.
            problems.append(f"{at}: unknown serial {d.serial} (not an iPad of this school)")
            continue
        why = check_display_name(d.name)
        if why:
            problems.append(f"{at}: {why}")
        if d.role == "member":
            if d.serial in member_of:
                problems.append(f"{at}: {d.serial} is in two classes at once ('{member_of[d.serial]}' and "
                                f"'{c.name}')")
            member_of[d.serial] = c.name
        else:
            leader_of.setdefault(d.serial, []).append(c.name)
    return problems


def _validate(db: Database, inventory: Inventory, school: str, classes: list[ClassInput]) -> list[str]:
    """Every problem of the input, each naming its line or class; [] when it can be stored."""
    problems: list[str] = []
    names = [c.name for c in classes]
    problems += [f"class '{n}' is given twice" for n in sorted({n for n in names if names.count(n) > 1})]
    member_of: dict[str, str] = {}
    leader_of: dict[str, list[str]] = {}
    for c in classes:
        if not CLASS_NAME_RE.match(c.name):
            problems.append(f"class '{c.name[:40]}': bad class name (letters, digits, space, '.', '-', '/'; "
                            "at most 32)")
        if len(c.devices) > MAX_DEVICES_PER_CLASS:
            problems.append(f"class '{c.name}': more than {MAX_DEVICES_PER_CLASS} iPads")
        if not any(d.role == "leader" for d in c.devices):
            problems.append(f"class '{c.name}': no teacher's iPad (a class needs at least one)")
        for login in c.teachers:
            if not LOGIN_RE.match(login):
                problems.append(f"class '{c.name}': bad teacher login '{login[:64]}'")
        problems += _check_devices(inventory, school, c, member_of, leader_of)
    for serial, led in leader_of.items():
        if serial in member_of:
            problems.append(f"{serial} is a teacher's iPad in '{led[0]}' and a pupil's in '{member_of[serial]}'")
    return problems + _against_stored(db, school, set(names), member_of, leader_of)


def _against_stored(db: Database, school: str, names: set[str], member_of: dict[str, str],
                    leader_of: dict[str, list[str]]) -> list[str]:
    """The input's iPads against the school's other stored classes (those it does not replace)."""
    problems = []
    for other in list_classes(db, school):
        if other.name in names:
            continue
        for d in other.devices:
            if d.role == "member" and d.serial in member_of:
                problems.append(f"{d.serial} is in two classes at once ('{other.name}' and '{member_of[d.serial]}')")
            elif (d.role == "leader" and d.serial in member_of) or (d.role == "member" and d.serial in leader_of):
                problems.append(f"{d.serial} is a teacher's iPad in one class and a pupil's in another "
                                f"('{other.name}')")
    return problems


# --- storing ---------------------------------------------------------------------------------------


def _free_beacons(db: Database, count: int) -> list[int]:
    with db.session() as s:
        used = set(s.scalars(select(SchoolClass.beacon_id)))
    free = [b for b in range(1, 65536) if b not in used][:count]
    if len(free) < count:
        raise ClassroomError("no free Classroom beacon id left (65,535 classes)")
    return free


def save_classes(db: Database, inventory: Inventory, school: str, classes: list[ClassInput], actor: str,
                 source: str = "web", earlier: list[str] | None = None) -> list[ClassView]:
    """Validate and store (create or replace by name) the classes of one school, in one transaction;
    raises ClassroomError with every problem (`earlier` ones first) and stores nothing then. Audited."""
    if school not in inventory.schools:
        raise ClassroomError(f"unknown school: {school[:32]}")
    if not classes and not earlier:
        raise ClassroomError("no classes given")
    problems = list(earlier or []) + _validate(db, inventory, school, classes)
    if problems:
        raise ClassroomError(problems)
    now = datetime.now(UTC)
    beacons = iter(_free_beacons(db, len(classes)))
    with db.session() as s:
        for c in classes:
            row = s.scalar(select(SchoolClass).where(SchoolClass.school_id == school, SchoolClass.name == c.name))
            if row is None:
                row = SchoolClass(school_id=school, name=c.name, beacon_id=next(beacons), updated_by=actor,
                                  updated_at=now)
                s.add(row)
                s.flush()
            else:
                row.updated_by, row.updated_at = actor, now
                s.execute(delete(ClassDevice).where(ClassDevice.class_id == row.id))
                s.execute(delete(ClassTeacher).where(ClassTeacher.class_id == row.id))
            for d in c.devices:
                s.add(ClassDevice(class_id=row.id, serial=d.serial, role=d.role, display_name=d.name))
            for login in sorted(set(c.teachers)):
                s.add(ClassTeacher(class_id=row.id, username=login))
    # The audit trail names classes and serials, never the pupils' names.
    audit.record(db, "classroom.save", f"school:{school}",
                 {"source": source, "classes": {c.name: {"leaders": [d.serial for d in c.devices if d.role == "leader"],
                                                         "members": len([d for d in c.devices if d.role == "member"]),
                                                         "teachers": sorted(set(c.teachers))} for c in classes}},
                 actor=actor)
    return [v for v in list_classes(db, school) if v.name in {c.name for c in classes}]


def delete_class(db: Database, school: str, name: str, actor: str) -> None:
    with db.session() as s:
        row = s.scalar(select(SchoolClass).where(SchoolClass.school_id == school, SchoolClass.name == name))
        if row is None:
            raise ClassroomError(f"no class '{name[:40]}' at {school}")
        s.delete(row)
    audit.record(db, "classroom.delete", f"school:{school}", {"class": name}, actor=actor)


# --- the CSV import ----------------------------------------------------------------------------------


def parse_class_csv(raw: bytes, filename: str) -> tuple[list[ClassInput], list[str]]:
    """Classes from a class-list CSV, and every bad row (file:line: reason); raises ClassroomError
    only when the file cannot be read as a table at all."""
    try:
        rows = read_rows(decode_csv_bytes(raw, filename), filename, CLASS_CSV_ALIASES, {"class", "role", "serial"})
    except CSVFormatError as e:
        raise ClassroomError(str(e)) from None
    problems: list[str] = []
    by_name: dict[str, ClassInput] = {}
    for line, row in rows:
        at = f"{filename}:{line}"
        name = row.get("class", "").strip()
        role = _role(row.get("role", ""))
        serial = normalise_serial(row.get("serial", ""))
        if not name:
            problems.append(f"{at}: no class")
            continue
        if role is None:
            problems.append(f"{at}: role '{row.get('role', '')[:20]}' is neither teacher (Lehrkraft) nor pupil "
                            "(Schüler/in)")
            continue
        if not serial:
            who = "teacher" if role == "leader" else "pupil"
            problems.append(f"{at}: {who} '{row.get('name', '')[:32]}' of class '{name}' has no iPad (serial)")
            continue
        c = by_name.setdefault(name, ClassInput(name))
        if serial in c.where and role == "member":
            problems.append(f"{at}: {serial} is twice in class '{name}' (first at {c.where[serial]})")
            continue
        c.where.setdefault(serial, at)
        c.devices.append(ClassMember(serial, role, row.get("name", "").strip()))
        login = row.get("login", "").strip().lower()
        if role == "leader" and login:
            c.teachers.append(login)
    if not by_name and not problems:
        raise ClassroomError(f"{filename}: the file has a header but no rows")
    return list(by_name.values()), problems


def import_class_csv(db: Database, inventory: Inventory, school: str, raw: bytes, filename: str,
                     actor: str) -> list[ClassView]:
    """Read a class-list CSV and store its classes (all or nothing: every problem of every row first)."""
    classes, problems = parse_class_csv(raw, filename)
    return save_classes(db, inventory, school, classes, actor, source=f"csv:{filename[:80]}", earlier=problems)
