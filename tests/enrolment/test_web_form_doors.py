"""Issue 22, the web form's doors: more than a megabyte pasted into the serials field keeps the form
(school, group, purpose) with a clear German message, instead of losing it to a generic error page;
a purpose with a line break is refused with its own message, the form kept."""

from __future__ import annotations

import html
from collections.abc import Iterator

import pytest

from enrolment import accounts
from tests.fixtures.enrolment import PASSWORD, SCHOOL_A, Browserless, EnrolSite, WebServer, make_site, start_web


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> EnrolSite:
    s = make_site(tmp_path_factory.mktemp("form-doors") / "site")
    accounts.add_user(s.db(), "anna", PASSWORD, "coordinator", [SCHOOL_A], {SCHOOL_A}, "test")
    return s


@pytest.fixture(scope="module")
def anna(site: EnrolSite) -> Iterator[Browserless]:
    srv: WebServer = start_web(site)
    b = Browserless(srv.url)
    assert b.login("anna").status_code == 303
    yield b
    srv.stop()


def post(b: Browserless, purpose: str, serials: str) -> tuple[int, str]:
    # multipart, as the browser sends the form (it has a file field)
    r = b.post("/requests/new", data={"school": SCHOOL_A, "group": "teacher", "purpose": purpose, "serials": serials},
               files={"csv_file": ("", b"", "application/octet-stream")})
    return r.status_code, html.unescape(r.text)


def test_more_than_a_megabyte_of_pasted_serials_keeps_the_form(anna: Browserless) -> None:
    status, page = post(anna, "Klasse 9b Tablets", "ABCDE12345X1\n" * 90_000)  # 1.2 MB
    assert status == 400, page[:300]
    assert "Im Feld „Seriennummern“ steht zu viel Text (höchstens 65536 Zeichen" in page
    assert 'value="Klasse 9b Tablets"' in page and '<option value="teacher" selected' in page
    assert "ABCDE12345X1" not in page  # the megabyte is not sent back into the page


def test_a_purpose_with_a_line_break_is_refused_and_the_form_kept(anna: Browserless) -> None:
    status, page = post(anna, "Klasse 9b\nKlasse 9c", "ABCDE12345X1")
    assert status == 400
    assert "Der Zweck muss eine Zeile Text sein (ohne Zeilenumbrüche und Steuerzeichen)" in page
    assert "ABCDE12345X1" in page  # the pasted serials are kept for the next try
