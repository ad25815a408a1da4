"""Classes from a class list (German CSV exports, every bad row named, all or nothing), werne's
Classroom CA and the Education configuration (schema-valid, chains to the CA, TLS client and server,
no Managed Apple ID), and the lesson rules (window, overlap, whose class)."""

from __future__ import annotations

import plistlib
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.db import Database
from core.inventory import Inventory, load_inventory
from ipad.classroom import classes as C
from ipad.classroom import lessons as L
from ipad.classroom.ca import ClassroomCA
from ipad.classroom.education import education_profile
from ipad.errors import ClassroomDenied, ClassroomError, LessonConflict
from ipad.payloads import mdm_schema
from tests.fixtures.site import DEMO_INVENTORY

TEACHER, P1, P2, P3 = "ZDF3DHQD1D", "ZDWK1DEGZD", "ZD8PCF32ER", "ZDMGNZGEDP"
OTHER_SCHOOL = "ZD72CEWXY7"  # a gym-demo pupil iPad
APPLE_TV = "DYTVGS1010"
GOOD = ("\ufeffKlasse;Rolle;Seriennummer;Vorname;Nachname;Geburtsdatum;Anmeldename\r\n"
        f"5a;Lehrkraft;{TEACHER};Frau M;Meier;01.01.1980;mmeier\r\n"
        f"5a;Schüler;{P1};Anna;Schmidt;02.02.2015;\r\n"
        f"5a;Schülerin;{P2};Ben;Huber;03.03.2015;\r\n")


@pytest.fixture
def db(tmp_path: Path, migrated_db) -> Iterator[Database]:  # type: ignore[no-untyped-def]
    d = Database(migrated_db(tmp_path / "w.db"))
    yield d
    d.dispose()


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(DEMO_INVENTORY)


def test_a_class_list_as_school_software_exports_it(db: Database, inv: Inventory) -> None:
    (c,) = C.import_class_csv(db, inv, "gs-demo", GOOD.encode("utf-8"), "klassen.csv", "anna")
    assert (c.name, [d.serial for d in c.leaders], sorted(d.serial for d in c.members)) == \
        ("5a", [TEACHER], sorted([P1, P2]))
    assert c.teachers == ("mmeier",)
    # Only what Classroom needs: the surname and birthday columns were never read.
    assert {d.name for d in c.devices} == {"Frau M", "Anna", "Ben"}
    # Windows-1252 (German Excel's default) reads the same.
    again = C.import_class_csv(db, inv, "gs-demo", GOOD.replace("\ufeff", "").encode("cp1252"), "k.csv", "anna")
    assert {d.name for d in again[0].devices} == {"Frau M", "Anna", "Ben"}


def test_a_pupil_moved_out_is_among_the_ipads_to_update(db: Database, inv: Inventory) -> None:
    before = C.import_class_csv(db, inv, "gs-demo", GOOD.encode(), "klassen.csv", "anna")
    moved = GOOD.replace(P2, P3)  # Ben's iPad leaves 5a, another takes its place
    saved = C.import_class_csv(db, inv, "gs-demo", moved.encode(), "klassen.csv", "anna")
    assert {d.serial for d in saved[0].devices} == {TEACHER, P1, P3}
    assert C.affected_serials(before, saved) == sorted([TEACHER, P1, P2, P3])
    # Another class's iPads are not touched by this save.
    other = C.ClassView(99, "gs-demo", "5b", 99, (C.ClassMember(OTHER_SCHOOL, "member", "Max"),), ())
    assert OTHER_SCHOOL not in C.affected_serials(before + [other], saved)


def test_every_bad_row_is_named_and_nothing_is_stored(db: Database, inv: Inventory) -> None:
    C.import_class_csv(db, inv, "gs-demo", GOOD.encode(), "klassen.csv", "anna")
    bad = ("Klasse;Rolle;Seriennummer;Vorname\n"
           "5b;Lehrkraft;;Herr K\n"                       # a teacher without an iPad
           f"5c;Lehrkraft;{TEACHER};Herr K\n"
           "5c;Schüler;ZZZZZZZZZZ;Tom\n"                  # unknown serial
           f"5c;Schüler;{P3};Tim\n"
           f"5c;Schüler;{P3};Tim\n"                       # duplicate
           f"5c;Schüler;{P1};Lea\n"                       # already in 5a: two classes at once
           f"5c;Schüler;{OTHER_SCHOOL};Max\n"             # another school's iPad
           f"5c;Schüler;{APPLE_TV};Ida\n"                 # an Apple TV
           f"5c;Gast;{P2};Ida\n")                         # an unknown role
    with pytest.raises(ClassroomError) as e:
        C.import_class_csv(db, inv, "gs-demo", bad.encode(), "b.csv", "anna")
    problems = e.value.problems
    assert problems == [
        "b.csv:2: teacher 'Herr K' of class '5b' has no iPad (serial)",
        f"b.csv:6: {P3} is twice in class '5c' (first at b.csv:5)",
        "b.csv:10: role 'Gast' is neither teacher (Lehrkraft) nor pupil (Schüler/in)",
        "b.csv:4: unknown serial ZZZZZZZZZZ (not an iPad of this school)",
        f"b.csv:8: unknown serial {OTHER_SCHOOL} (not an iPad of this school)",
        f"b.csv:9: {APPLE_TV} is an Apple TV, not an iPad",
        f"{P1} is in two classes at once ('5a' and '5c')",
    ]
    assert [c.name for c in C.list_classes(db)] == ["5a"]


def test_names_are_pseudonyms_or_first_names_only(db: Database, inv: Inventory) -> None:
    text = f"Klasse;Rolle;Seriennummer;Name\n5d;Lehrkraft;{TEACHER};Frau M\n5d;Schüler;{P3};Schmidt, Anna\n"
    with pytest.raises(ClassroomError, match=r"looks like more than a first name"):
        C.import_class_csv(db, inv, "gs-demo", text.encode(), "n.csv", "anna")
    assert C.check_display_name("anna@schule.de") is not None
    assert C.check_display_name("Lea-Sophie") is None and C.check_display_name("S07") is None


def test_a_class_needs_a_teachers_ipad(db: Database, inv: Inventory) -> None:
    with pytest.raises(ClassroomError, match=r"class '5e': no teacher's iPad"):
        C.save_classes(db, inv, "gs-demo", [C.ClassInput("5e", [C.ClassMember(P3, "member", "Tim")])], "anna")


def _openssl_verify(tmp: Path, leaf: x509.Certificate, chain: list[x509.Certificate], purpose: str) -> str:
    (tmp / "root.pem").write_bytes(chain[0].public_bytes(serialization.Encoding.PEM))
    (tmp / "inter.pem").write_bytes(chain[1].public_bytes(serialization.Encoding.PEM))
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    r = subprocess.run(["openssl", "verify", "-CAfile", str(tmp / "root.pem"), "-untrusted", str(tmp / "inter.pem"),
                        "-purpose", purpose, str(tmp / "leaf.pem")], capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


def test_education_profiles_chain_to_werne_ca(db: Database, inv: Inventory, tmp_path: Path) -> None:
    C.import_class_csv(db, inv, "gs-demo", GOOD.encode(), "klassen.csv", "anna")
    ca = ClassroomCA(tmp_path / "classroom")
    by_role = {}
    for serial, role in ((TEACHER, "leader"), (P1, "member")):
        p = education_profile(serial, C.classes_of_serial(db, serial), ca, "Stadt Werne", "de.werne.ipad")
        assert mdm_schema.validate_profile(p.to_bytes(), "iOS") == []
        assert b"AppleID" not in p.to_bytes()  # no Managed Apple ID anywhere
        content = plistlib.loads(p.to_bytes())["PayloadContent"]
        edu = next(x for x in content if x["PayloadType"] == "com.apple.education")
        uuids = {x["PayloadUUID"]: x for x in content}
        p12 = uuids[edu["PayloadCertificateUUID"]]
        _key, cert, _ = pkcs12.load_key_and_certificates(p12["PayloadContent"], p12["Password"].encode())
        assert cert is not None
        # Apple's naming: "leader ..." / "member ..."; TLS client and server.
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"{role} {serial}"
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        # The anchors in the profile validate the chain (openssl, as a peer would).
        anchors = [x509.load_der_x509_certificate(uuids[u]["PayloadContent"])
                   for u in edu[f"{role.capitalize()}PayloadCertificateAnchorUUID"]]
        for purpose in ("sslclient", "sslserver"):
            assert ": OK" in _openssl_verify(tmp_path, cert, anchors, purpose)
        by_role[role] = (edu, cert)
    # A member certificate does not pass as a leader's: the leader anchors do not validate it.
    teacher_edu, _ = by_role["leader"]
    _, member_cert = by_role["member"]
    leader_anchors = [ca.certificate("root"), ca.certificate("leader")]
    assert ": OK" not in _openssl_verify(tmp_path, member_cert, leader_anchors, "sslclient")
    # The teacher controls the class with both pupils; a pupil's iPad knows itself and its teacher.
    assert len(teacher_edu["Groups"][0]["MemberIdentifiers"]) == 2 and len(teacher_edu["Users"]) == 3
    assert len(by_role["member"][0]["Users"]) == 2
    # Unchanged classes give the same bytes (no reinstall); a changed class a new PayloadUUID.
    first = education_profile(P1, C.classes_of_serial(db, P1), ClassroomCA(tmp_path / "classroom"),
                              "Stadt Werne", "de.werne.ipad")
    again = education_profile(P1, C.classes_of_serial(db, P1), ca, "Stadt Werne", "de.werne.ipad")
    assert first.uuid == again.uuid
    lead = education_profile(TEACHER, C.classes_of_serial(db, TEACHER), ca, "Stadt Werne", "de.werne.ipad")
    C.import_class_csv(db, inv, "gs-demo", (GOOD + f"5a;Schüler;{P3};Tim\r\n").encode(), "k.csv", "anna")
    # A new pupil: the teacher's profile changes (a new PayloadUUID, so it is installed again); the
    # other pupils' do not (they know only themselves and their teacher).
    assert education_profile(TEACHER, C.classes_of_serial(db, TEACHER), ca, "Stadt Werne",
                             "de.werne.ipad").uuid != lead.uuid
    assert education_profile(P1, C.classes_of_serial(db, P1), ca, "Stadt Werne", "de.werne.ipad").uuid == first.uuid


NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def test_lesson_windows_overlaps_and_whose_class(db: Database, inv: Inventory) -> None:
    (c,) = C.import_class_csv(db, inv, "gs-demo", GOOD.encode(), "klassen.csv", "anna")
    teacher = L.Actor("mmeier", "teacher", frozenset({"gs-demo"}))
    stranger = L.Actor("kkurz", "teacher", frozenset({"gym-demo"}))
    colleague = L.Actor("zzahn", "teacher", frozenset({"gs-demo"}))
    lesson = L.start_lesson(db, teacher, c.id, "single_app", ["com.apple.Pages"], NOW + timedelta(hours=1), 30, NOW)
    assert (lesson.status, lesson.ends_at - lesson.starts_at) == ("scheduled", timedelta(minutes=30))
    with pytest.raises(LessonConflict, match="in the past"):
        L.start_lesson(db, teacher, c.id, "single_app", ["com.apple.Pages"], NOW - timedelta(hours=1), 30, NOW)
    with pytest.raises(LessonConflict, match=f"overlaps lesson {lesson.id}"):
        L.start_lesson(db, teacher, c.id, "allowlist", ["com.apple.Pages"], NOW + timedelta(minutes=75), 30, NOW)
    with pytest.raises(ClassroomError, match="exactly one app"):
        L.start_lesson(db, teacher, c.id, "single_app", ["a.b", "c.d"], NOW + timedelta(hours=3), 30, NOW)
    for who in (stranger, colleague):
        with pytest.raises(ClassroomDenied):
            L.start_lesson(db, who, c.id, "single_app", ["com.apple.Pages"], NOW + timedelta(hours=3), 30, NOW)
        with pytest.raises(ClassroomDenied):
            L.stop_lesson(db, who, lesson.id, NOW)
        assert L.list_lessons(db, who) == []
    from sqlalchemy import select

    from core.models import AuditEvent

    with db.session() as s:
        denied = [(e.actor, e.action) for e in s.scalars(select(AuditEvent)) if e.action == "classroom.denied"]
    assert denied == [("kkurz", "classroom.denied"), ("kkurz", "classroom.denied"),
                      ("zzahn", "classroom.denied"), ("zzahn", "classroom.denied")]
    assert [v.id for v in L.list_lessons(db, teacher)] == [lesson.id]
    stopped = L.stop_lesson(db, teacher, lesson.id, NOW)
    assert stopped.status == "cancelled"
