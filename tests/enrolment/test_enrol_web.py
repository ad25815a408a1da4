"""The coordinators' web app under real uvicorn (`werne web serve` in a subprocess): authorization
between schools, CSRF, cookies, login rate limiting and bad uploads. Each case checks that nothing
was stored when it was refused.

Only the tests that touch DEP (they ask for `site_nanodep`) need NanoDEP: the others run, and
pass, on a machine without it."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from enrolment import accounts
from enrolment import requests as reqs
from enrolment.accounts import Principal
from tests.fakes.fake_dep import FakeDEP
from tests.fixtures.enrolment import (
    PASSWORD,
    SCHOOL_A,
    SCHOOL_B,
    Browserless,
    EnrolSite,
    InThreadServer,
    WebServer,
    free_port,
    make_site,
    start_nanodep,
    start_web,
)

ADMIN = Principal("it", "admin")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnrolSite]:
    fake = FakeDEP({"WEBSER00001", "WEBSER00002"}).start()
    root = tmp_path_factory.mktemp("web") / "site"
    # NanoDEP starts only when a test that touches DEP asks for it (site_nanodep). Until then the
    # site's DEP URL is a port held by a bound, not listening, socket: DEP calls are refused, and
    # no other process can take the port. The web server reads the URL and key file per call.
    port_holder = socket.socket()
    port_holder.bind(("127.0.0.1", 0))
    dep_port = port_holder.getsockname()[1]
    (root / "nanodep").mkdir(parents=True)
    s = make_site(root, f"http://127.0.0.1:{dep_port}", root / "nanodep" / "dep-api-key")
    db = s.db()
    known = {SCHOOL_A, SCHOOL_B}
    accounts.add_user(db, "anna", PASSWORD, "coordinator", [SCHOOL_A], known, "test")
    accounts.add_user(db, "bernd", PASSWORD, "coordinator", [SCHOOL_B], known, "test")
    accounts.add_user(db, "it-admin", PASSWORD, "admin", [], known, "test")
    s.fake = fake  # type: ignore[attr-defined]
    s.dep_port, s.dep_port_holder = dep_port, port_holder  # type: ignore[attr-defined]
    yield s
    port_holder.close()
    fake.stop()


@pytest.fixture(scope="module")
def site_nanodep(site: EnrolSite) -> Iterator[object]:
    """The real NanoDEP behind `site`, on the port the site was given, pointed at the site's fake DEP."""
    site.dep_port_holder.close()  # type: ignore[attr-defined]
    dep = start_nanodep(site.root / "nanodep", port=site.dep_port)  # type: ignore[attr-defined]
    dep.configure(site.dep_name, site.fake)  # type: ignore[attr-defined]
    yield dep
    dep.stop()


@pytest.fixture(scope="module")
def server(site: EnrolSite) -> Iterator[WebServer]:
    srv = start_web(site)
    yield srv
    srv.stop()


def login(server: WebServer, user: str) -> Browserless:
    b = Browserless(server.url)
    r = b.login(user)
    assert r.status_code == 303, r.text
    return b


def new_request(
    b: Browserless, school: str, serials: str, purpose: str = "Klasse 7c", files: dict | None = None
) -> requests.Response:
    return b.post(
        "/requests/new",
        {"school": school, "group": "pupil", "purpose": purpose, "serials": serials},
        files=files or {"csv_file": ("", b"", "application/octet-stream")},
    )


def created_id(r: requests.Response) -> int:
    assert r.status_code == 303, r.text
    m = re.match(r"^/requests/(\d+)$", r.headers["location"])
    assert m
    return int(m.group(1))


def count(site: EnrolSite) -> int:
    return len(reqs.list_requests(site.db(), ADMIN))


@pytest.fixture(scope="module")
def b_request(server: WebServer, site: EnrolSite) -> int:
    """A request of school B with a recognisable purpose and serial."""
    return created_id(new_request(login(server, "bernd"), SCHOOL_B, "GEHEIM00001", purpose="Geheimklasse B"))


# ---------------------------------------------------------------- session and cookies ------


def test_login_sets_httponly_samesite_cookie(server: WebServer) -> None:
    b = Browserless(server.url)
    r = b.login("anna")
    cookie = r.headers["set-cookie"].lower()
    assert "werne_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["x-frame-options"] == "DENY"


def test_secure_flag_when_configured(tmp_path: Path) -> None:
    from enrolment.web.app import create_app

    s = make_site(tmp_path / "s", extra="")
    cfg = s.config()
    cfg.web.secure_cookies = True
    with InThreadServer(create_app(cfg)) as srv:
        r = requests.get(srv.url + "/login", timeout=10)
        assert "; secure" in r.headers["set-cookie"].lower()


def test_wrong_password_then_rate_limited(server: WebServer, site: EnrolSite) -> None:
    accounts.add_user(site.db(), "carla", PASSWORD, "coordinator", [SCHOOL_A], {SCHOOL_A}, "test")
    b = Browserless(server.url)
    for _ in range(accounts.MAX_FAILED_LOGINS):
        r = b.login("carla", "falsch-falsch-falsch")
        assert r.status_code == 401 and "Benutzername oder Passwort ist falsch." in r.text
    r = b.login("carla")  # the right password no longer helps from this address
    assert r.status_code == 429 and "Zu viele fehlgeschlagene Anmeldungen" in r.text
    # The lock is per user *and* address: carla at another address (127.0.0.2) still gets in.
    from requests.adapters import HTTPAdapter

    class FromAddress(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            kwargs["source_address"] = ("127.0.0.2", 0)
            super().init_poolmanager(*args, **kwargs)

    elsewhere = Browserless(server.url)
    elsewhere.s.mount("http://", FromAddress())
    assert elsewhere.login("carla").status_code == 303
    assert login(server, "anna")  # other users are not affected


def test_disabled_user_cannot_log_in_and_session_ends(server: WebServer, site: EnrolSite) -> None:
    accounts.add_user(site.db(), "dora", PASSWORD, "coordinator", [SCHOOL_A], {SCHOOL_A}, "test")
    b = login(server, "dora")
    assert b.get("/requests").status_code == 200
    accounts.set_active(site.db(), "dora", False, "test")
    assert b.get("/requests").status_code == 303  # back to the login page
    assert Browserless(server.url).login("dora").status_code == 401


def test_password_reset_ends_other_sessions(server: WebServer, site: EnrolSite) -> None:
    accounts.add_user(site.db(), "emil", PASSWORD, "coordinator", [SCHOOL_A], {SCHOOL_A}, "test")
    old = login(server, "emil")
    assert old.get("/requests").status_code == 200
    accounts.reset_password(site.db(), "emil", "ein ganz neues Passwort", "test")
    assert old.get("/requests").status_code == 303
    fresh = Browserless(server.url)
    assert fresh.login("emil", "ein ganz neues Passwort").status_code == 303
    assert fresh.get("/requests").status_code == 200


def test_logout_ends_the_session(server: WebServer) -> None:
    b = login(server, "anna")
    token = b.csrf("/requests")
    assert (
        b.s.post(server.url + "/logout", data={"csrf_token": token}, allow_redirects=False, timeout=10).status_code
        == 303
    )
    assert b.get("/requests").status_code == 303


def test_post_without_csrf_token_is_refused(server: WebServer, site: EnrolSite) -> None:
    b = login(server, "anna")
    before = count(site)
    r = b.post(
        "/requests/new",
        {"school": SCHOOL_A, "group": "pupil", "purpose": "x", "serials": "CSRFSER0001"},
        csrf=False,
    )
    assert r.status_code == 403
    r = b.post(
        "/requests/new",
        {
            "school": SCHOOL_A,
            "group": "pupil",
            "purpose": "x",
            "serials": "CSRFSER0001",
            "csrf_token": "forged",
        },
        csrf=False,
    )
    assert r.status_code == 403
    assert count(site) == before
    anon = requests.post(
        server.url + "/login",
        data={"username": "anna", "password": PASSWORD},
        timeout=10,
        allow_redirects=False,
    )
    assert anon.status_code == 403


# ---------------------------------------------------------------- authorization ------------


def test_anonymous_is_sent_to_login_for_any_id(server: WebServer, b_request: int) -> None:
    for path in (f"/requests/{b_request}", "/requests/999999", "/requests", "/requests/new"):
        r = requests.get(server.url + path, timeout=10, allow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/login")


def test_coordinator_cannot_see_other_school_by_url_or_id_guessing(server: WebServer, b_request: int) -> None:
    a = login(server, "anna")
    other = a.get(f"/requests/{b_request}")
    missing = a.get("/requests/999999")
    assert other.status_code == missing.status_code == 404
    assert other.text == missing.text  # nothing distinguishes "other school" from "no such request"
    export = a.get(f"/requests/{b_request}/export.csv")
    assert export.status_code == 404 and export.text == missing.text


def test_coordinator_pages_show_nothing_of_other_school(server: WebServer, b_request: int) -> None:
    a = login(server, "anna")
    for path in ("/requests", "/requests/new"):
        html = a.get(path).text
        for leak in ("Geheimklasse B", "GEHEIM00001", "Gymnasium Demo", SCHOOL_B):
            assert leak not in html, (path, leak)
    assert f'value="{SCHOOL_A}"' in a.get("/requests/new").text


def test_coordinator_cannot_create_for_other_school(server: WebServer, site: EnrolSite) -> None:
    a = login(server, "anna")
    before = count(site)
    r_other = new_request(a, SCHOOL_B, "FORMSER0001")
    r_none = new_request(a, "no-such-school", "FORMSER0001")
    assert r_other.status_code == r_none.status_code == 400
    assert "Unbekannte Schule" in r_other.text
    assert r_other.text.replace(SCHOOL_B, "X") == r_none.text.replace("no-such-school", "X")
    assert count(site) == before


def test_duplicate_of_other_schools_serial_does_not_name_it(server: WebServer, b_request: int) -> None:
    r = new_request(login(server, "anna"), SCHOOL_A, "GEHEIM00001")
    assert r.status_code == 400
    assert "wurde bereits von einer anderen Schule beantragt" in r.text
    assert "Gymnasium" not in r.text and SCHOOL_B not in r.text
    assert f"Antrag Nr. {b_request}" not in r.text and f"#{b_request}" not in r.text


def test_coordinator_cannot_approve_or_reject(
    server: WebServer, site: EnrolSite, b_request: int, site_nanodep: object
) -> None:
    # Needs NanoDEP: "nothing reached DEP" (the last assertion) means something only if DEP is reachable.
    a = login(server, "anna")
    own = created_id(new_request(a, SCHOOL_A, "WEBSER00001"))
    for rid in (own, b_request, 999999):
        for action in ("approve", "reject"):
            r = a.post(f"/requests/{rid}/{action}", {"reason": "x"})
            assert r.status_code == 403, (rid, action)
    assert reqs.get_request(site.db(), ADMIN, own).status == "submitted"
    assert reqs.get_request(site.db(), ADMIN, b_request).status == "submitted"
    admin = login(server, "it-admin")
    assert admin.post(f"/requests/{own}/delete", {"reason": "x"}).status_code == 404
    assert reqs.get_request(site.db(), ADMIN, own).status == "submitted"
    assert site.fake.assignments == []  # type: ignore[attr-defined]


def test_admin_sees_all_and_approves_on_the_web(
    server: WebServer, site: EnrolSite, b_request: int, site_nanodep: object
) -> None:
    a = login(server, "anna")
    rid = created_id(new_request(a, SCHOOL_A, "WEBSER00002", purpose="Admin-Test"))
    admin = login(server, "it-admin")
    listing = admin.get("/requests").text
    assert "Geheimklasse B" in listing and "Admin-Test" in listing
    r = admin.post(f"/requests/{rid}/approve")
    assert r.status_code == 303
    page = admin.get(f"/requests/{rid}").text
    assert 'data-status="assigned"' in page and "genehmigt" in page
    assert "WEBSER00002" in site.fake.assigned_serials()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- bad input ----------------


def test_bad_serial_and_excel_and_empty_file(server: WebServer, site: EnrolSite) -> None:
    a = login(server, "anna")
    before = count(site)
    r = new_request(a, SCHOOL_A, "BAD!")
    assert r.status_code == 400 and "Ungültige Seriennummer „BAD!“" in r.text
    assert "nicht</strong> gespeichert" in r.text
    xlsx = b"PK\x03\x04" + b"\x00" * 200
    r = new_request(a, SCHOOL_A, "", files={"csv_file": ("geraete.csv", xlsx, "text/csv")})
    assert r.status_code == 400 and "„geraete.csv“ ist eine Excel-Arbeitsmappe" in r.text
    r = new_request(a, SCHOOL_A, "", files={"csv_file": ("leer.csv", b"", "text/csv")})
    assert r.status_code == 400 and "Die Datei „leer.csv“ ist leer" in r.text
    assert count(site) == before


def test_50_mb_upload_is_refused_while_streaming(server: WebServer, site: EnrolSite) -> None:
    a = login(server, "anna")
    before = count(site)
    big = b"Serial Number\n" + b"BIGSER00001\n" * (50 * 1024 * 1024 // 12)
    assert len(big) >= 50 * 1024 * 1024
    r = new_request(a, SCHOOL_A, "", files={"csv_file": ("gross.csv", big, "text/csv")})
    assert r.status_code == 413
    assert "Die Datei ist zu groß (höchstens 2 MB)" in r.text
    assert count(site) == before


def test_csv_injection_neutralised_in_export(server: WebServer) -> None:
    a = login(server, "anna")
    rid = created_id(new_request(a, SCHOOL_A, "INJSER00001", purpose='=HYPERLINK("http://x")'))
    import csv
    import io

    csv_text = a.get(f"/requests/{rid}/export.csv").content.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(csv_text), delimiter=";"))
    assert rows[1][0] == "INJSER00001"
    assert rows[1][5] == '\'=HYPERLINK("http://x")'  # a spreadsheet shows it as text, never runs it


def test_nanodep_down_shows_admin_message_and_changes_nothing(tmp_path: Path) -> None:
    from enrolment.web.app import create_app

    s = make_site(tmp_path / "s", f"http://127.0.0.1:{free_port()}")
    db = s.db()
    accounts.add_user(db, "it-admin", PASSWORD, "admin", [], set(), "test")
    accounts.add_user(db, "anna", PASSWORD, "coordinator", [SCHOOL_A], {SCHOOL_A}, "test")
    with InThreadServer(create_app(s.config(), db)) as srv:
        a = Browserless(srv.url)
        assert a.login("anna").status_code == 303
        rid = created_id(new_request(a, SCHOOL_A, "DOWNSER0001"))
        admin = Browserless(srv.url)
        assert admin.login("it-admin").status_code == 303
        assert admin.post(f"/requests/{rid}/approve").status_code == 303
        page = admin.get(f"/requests/{rid}").text
        assert "Nicht ausgeführt: NanoDEP at http://127.0.0.1:" in page and "is not reachable" in page
    assert reqs.get_request(db, ADMIN, rid).status == "submitted"


def test_chunked_upload_without_length_is_cut_off_at_the_limit(server: WebServer, site: EnrolSite) -> None:
    a = login(server, "anna")
    token = a.csrf("/requests/new")
    before = count(site)
    boundary = "werneboundary"
    sent = 0

    def body():  # type: ignore[no-untyped-def]
        nonlocal sent
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="csv_file"; filename="gross.csv"\r\n'
            "Content-Type: text/csv\r\n\r\nSerial Number\r\n"
        ).encode()
        yield head
        chunk = b"CHUNKSER001\r\n" * 8192
        for _ in range(50 * 1024 * 1024 // len(chunk)):
            sent += len(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        r = a.s.post(
            server.url + "/requests/new",
            data=body(),
            timeout=30,
            allow_redirects=False,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert r.status_code == 413 and "Die Datei ist zu groß" in r.text
    except requests.ConnectionError:
        pass  # the server may close the connection once it has answered 413
    assert sent < 50 * 1024 * 1024  # the client was stopped long before the end
    assert count(site) == before
