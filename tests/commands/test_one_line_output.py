"""Issue 22: a line feed in a single-line field must not forge rows. Text from outside that reaches
the terminal stays on its line (render escapes it: a line feed shows as the two characters `\\n`),
and the doors that take single-line text (the web form, `enrol reject --reason`) refuse it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from enrolment import accounts
from enrolment import requests as reqs
from enrolment.accounts import Principal
from enrolment.errors import RequestInputError
from enrolment.models import EnrolmentRequest
from tests.fixtures.enrolment import SCHOOL_A, EnrolSite, make_site

FORGED_ROW = "    2  approved   gs-demo      pupil    1/1  Klasse 9z"
PURPOSE = "Klasse 7c\n" + FORGED_ROW
REASON = "nicht im Bestand\r\n  ZZZZZ00000X1  assigned"


@pytest.fixture
def site(tmp_path: Path) -> EnrolSite:
    """A request whose purpose and reason hold line feeds, stored as an older version (or a direct
    database edit) left them: the door is not what keeps the terminal safe."""
    site = make_site(tmp_path / "site")
    db = site.db()
    accounts.add_user(db, "anna", "correct horse battery staple", "coordinator", [SCHOOL_A], {SCHOOL_A}, "test")
    from core.inventory import load_inventory

    view = reqs.create_request(db, load_inventory(site.inventory), Principal("anna", "coordinator",
                               frozenset({SCHOOL_A})), SCHOOL_A, "pupil", "Klasse 7c", "ABCDE12345X1")
    with db.session() as s:
        s.execute(update(EnrolmentRequest).where(EnrolmentRequest.id == view.id)
                  .values(purpose=PURPOSE, reason=REASON))
    db.dispose()
    return site


def test_enrol_list_prints_one_line_per_request(site: EnrolSite) -> None:
    r = site.cli("enrol", "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1, r.stdout
    assert FORGED_ROW not in r.stdout.splitlines()
    assert r.stdout.rstrip("\n").endswith("Klasse 7c\\n" + FORGED_ROW)


def test_enrol_show_keeps_purpose_and_reason_on_their_lines(site: EnrolSite) -> None:
    r = site.cli("enrol", "show", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout  # the request, its reason, its one serial
    assert lines[0].startswith("request 1: gs-demo pupil 'Klasse 7c\\n    2  approved")
    assert lines[1] == "  reason: nicht im Bestand\\x0d\\n  ZZZZZ00000X1  assigned"
    assert lines[2].split() == ["ABCDE12345X1", "requested"]


# ---------------------------------------------------------------- the doors -----------------

@pytest.mark.parametrize("purpose", ["Klasse 7c\nKlasse 8a", "Klasse 7c\rx", "Klasse\x1b[2J 7c", "Klasse\u2028 7c",
                                     "Klasse\x85 7c"])
def test_a_purpose_with_a_line_break_or_control_character_is_refused(tmp_path: Path, purpose: str) -> None:
    site = make_site(tmp_path / "site")
    db = site.db()
    from core.inventory import load_inventory

    with pytest.raises(RequestInputError) as e:
        reqs.create_request(db, load_inventory(site.inventory), Principal("it", "admin"), SCHOOL_A, "pupil",
                            purpose, "ABCDE12345X1")
    assert e.value.problems == ["purpose must be one line of text (no line breaks or control characters)"]
    assert reqs.list_requests(db, Principal("it", "admin")) == []


def test_enrol_reject_refuses_a_reason_with_a_line_feed(site: EnrolSite) -> None:
    r = site.cli("enrol", "reject", "1", "--reason", "nein\n  ABCDE12345X1  assigned")
    assert (r.returncode, r.stdout, r.stderr) == (
        2, "", "Error: reason must be one line of text (no line breaks or control characters)\n")
    assert site.cli("enrol", "list").stdout.split()[1] == "submitted"
