"""Enrolment requests in the library, on a real state database: validation, scoping, audit, CSV export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.audit import list_events
from core.db import Database
from core.inventory import load_inventory
from enrolment import requests as reqs
from enrolment.accounts import Principal
from enrolment.errors import NotAllowed, NotFound, RequestInputError
from enrolment.models import EnrolmentRequest, RequestSerial
from tests.fixtures.enrolment import DEMO_INVENTORY, SCHOOL_A, SCHOOL_B

A = Principal("anna", "coordinator", frozenset({SCHOOL_A}))
B = Principal("bernd", "coordinator", frozenset({SCHOOL_B}))
ADMIN = Principal("it", "admin")
NEW = ["NEWSER00001", "NEWSER00002", "NEWSER00003"]


@pytest.fixture
def db(tmp_path: Path, migrated_db) -> Database:  # type: ignore[no-untyped-def]
    import enrolment.models  # noqa: F401

    return Database(migrated_db(tmp_path / "werne.db"))


@pytest.fixture
def inv():  # type: ignore[no-untyped-def]
    return load_inventory(DEMO_INVENTORY)


def count_requests(db: Database) -> tuple[int, int]:
    with db.session() as s:
        return s.query(EnrolmentRequest).count(), s.query(RequestSerial).count()


def test_create_from_pasted_serials_and_audit(db, inv) -> None:  # type: ignore[no-untyped-def]
    view = reqs.create_request(
        db, inv, A, SCHOOL_A, "pupil", "Klasse 5b", " newser00001\nNEWSER00002, NEWSER00003 "
    )
    assert view.status == "submitted" and [s.serial for s in view.serials] == NEW
    assert all(s.status == "requested" for s in view.serials)
    ev = [e for e in list_events(db) if e.action == "enrol.request"]
    assert ev and ev[0].actor == "anna" and ev[0].detail["serials"] == NEW


def test_asm_csv_with_bom_and_semicolons(db, inv) -> None:  # type: ignore[no-untyped-def]
    raw: Any = "\ufeffSerial Number;Device Model;Order Number\r\nNEWSER00001;iPad;1\r\nNEWSER00002;iPad;1\r\n"
    raw = raw.encode()
    view = reqs.create_request(
        db, inv, A, SCHOOL_A, "teacher", "Kollegium", upload=raw, upload_name="asm.csv"
    )
    assert [s.serial for s in view.serials] == NEW[:2]


@pytest.mark.parametrize(
    "pasted,upload,expected",
    [
        ("NEWSER00001\nbad-serial!", None, "bad serial format 'bad-serial!'"),
        ("NEWSER00001\nNEWSER00001", None, "duplicate serial NEWSER00001 in this request"),
        ("ZDWK1DEGZD", None, "serial ZDWK1DEGZD is already enrolled"),  # in the demo ipads.csv
        ("", None, "no serial numbers"),
        ("", b"   \n", "asm.csv: the file is empty"),
        ("", b"PK\x03\x04\x14\x00\x06\x00rest-of-a-zip", "asm.csv: this is an Excel workbook, not CSV"),
        ("", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1old-excel", "asm.csv: this is an Excel workbook, not CSV"),
        ("", b"Name;Model\nx;y\n", "asm.csv:1: missing column(s): serial"),
        ("", b"Serial Number\n", "asm.csv: the file has a header but no serial numbers"),
    ],
)
def test_bad_input_is_refused_and_nothing_stored(db, inv, pasted, upload, expected) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RequestInputError) as e:
        reqs.create_request(
            db, inv, A, SCHOOL_A, "pupil", "5b", pasted, upload, "asm.csv" if upload is not None else ""
        )
    assert any(p.startswith(expected) for p in e.value.problems), e.value.problems
    assert count_requests(db) == (0, 0)


def test_serial_requested_by_other_school_is_refused_without_naming_it(db, inv) -> None:  # type: ignore[no-untyped-def]
    reqs.create_request(db, inv, B, SCHOOL_B, "pupil", "6a", "NEWSER00001")
    with pytest.raises(RequestInputError) as e:
        reqs.create_request(db, inv, A, SCHOOL_A, "pupil", "5b", "NEWSER00001\nNEWSER00002")
    assert e.value.problems == ["serial NEWSER00001 is already requested by another school"]
    assert SCHOOL_B not in str(e.value.problems)
    assert count_requests(db) == (1, 1)
    # Once B's request is rejected the serial is free again.
    rid = reqs.list_requests(db, B)[0].id
    reqs.reject_request(db, ADMIN, rid, "falsche Schule")
    assert reqs.create_request(db, inv, A, SCHOOL_A, "pupil", "5b", "NEWSER00001").total == 1


def test_same_school_duplicate_names_the_request(db, inv) -> None:  # type: ignore[no-untyped-def]
    first = reqs.create_request(db, inv, A, SCHOOL_A, "pupil", "5b", "NEWSER00001")
    with pytest.raises(RequestInputError, match=f"already in request #{first.id}"):
        reqs.create_request(db, inv, A, SCHOOL_A, "pupil", "5c", "NEWSER00001")


def test_managed_serials_from_mdm_count_as_enrolled(db, inv) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RequestInputError, match="NEWSER00002 is already enrolled"):
        reqs.create_request(
            db, inv, A, SCHOOL_A, "pupil", "5b", "NEWSER00002", managed_serials={"NEWSER00002"}
        )


def test_scoping_other_school_is_not_found(db, inv) -> None:  # type: ignore[no-untyped-def]
    b_req = reqs.create_request(db, inv, B, SCHOOL_B, "pupil", "6a", "NEWSER00003")
    with pytest.raises(NotFound) as seen:
        reqs.get_request(db, A, b_req.id)
    with pytest.raises(NotFound) as missing:
        reqs.get_request(db, A, 99999)
    # Same message shape for "other school" and "does not exist".
    assert str(seen.value).replace(str(b_req.id), "N") == str(missing.value).replace("99999", "N")
    assert reqs.list_requests(db, A) == []
    with pytest.raises(NotFound, match="unknown school"):
        reqs.create_request(db, inv, A, SCHOOL_B, "pupil", "6a", "NEWSER00001")
    with pytest.raises(NotAllowed):
        reqs.reject_request(db, A, b_req.id, "no")
    assert reqs.get_request(db, ADMIN, b_req.id).status == "submitted"


def test_coordinator_cannot_approve_own_request(db, inv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from core.config import load_config

    own = reqs.create_request(db, inv, A, SCHOOL_A, "pupil", "5b", "NEWSER00001")
    with pytest.raises(NotAllowed):
        reqs.approve_request(db, load_config(state_dir=tmp_path), inv, A, own.id)
    assert reqs.get_request(db, A, own.id).status == "submitted"


def test_csv_export_neutralises_formulas(db, inv) -> None:  # type: ignore[no-untyped-def]
    view = reqs.create_request(db, inv, A, SCHOOL_A, "pupil", '=cmd|"/c calc"!A1', "NEWSER00001")
    text = reqs.export_request_csv(db, A, view.id)
    assert text.startswith("\ufeff")
    assert "'=cmd|" in text and ";=cmd" not in text


def test_reject_needs_reason_and_submitted_state(db, inv) -> None:  # type: ignore[no-untyped-def]
    view = reqs.create_request(db, inv, A, SCHOOL_A, "pupil", "5b", "NEWSER00001")
    with pytest.raises(RequestInputError):
        reqs.reject_request(db, ADMIN, view.id, "  ")
    done = reqs.reject_request(db, ADMIN, view.id, "Geräte nicht im Bestand")
    assert done.status == "rejected" and all(s.status == "rejected" for s in done.serials)
    assert any(e.action == "enrol.reject" for e in list_events(db))


def test_concurrent_requests_for_one_serial_store_exactly_one(db, inv) -> None:  # type: ignore[no-untyped-def]
    import threading

    B = Principal("bernd", "coordinator", frozenset({SCHOOL_B}))
    results: list[str] = []
    barrier = threading.Barrier(2)

    def submit(p: Principal, school: str) -> None:
        barrier.wait()
        try:
            reqs.create_request(db, inv, p, school, "pupil", "race", "RACESER0001")
            results.append("stored")
        except RequestInputError:
            results.append("refused")

    threads = [threading.Thread(target=submit, args=a) for a in ((A, SCHOOL_A), (B, SCHOOL_B))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["refused", "stored"]
    assert count_requests(db) == (1, 1)
