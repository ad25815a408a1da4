"""In a real browser (Debian's chromium), against `werne web serve` and a real LDAP directory (slapd):
a teacher signs in with the directory password, sees only the classes that name them, starts a
lesson and stops it; a teacher of another school sees nothing of that class and gets 403 when they
try its page or start a lesson for it, and the refusal is in the audit trail."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.fixtures.directory import PASSWORD, Directory
from tests.fixtures.enrolment import make_site, start_web

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TEACHER_IPAD, PUPILS = "ZDF3DHQD1D", ("ZDWK1DEGZD", "ZD8PCF32ER")
GYM_TEACHER_IPAD, GYM_PUPIL = "ZDMRFV97X4", "ZD72CEWXY7"



def sign_in(browser, url: str, username: str):  # type: ignore[no-untyped-def]
    page = browser.new_context().new_page()
    page.goto(url + "/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url("**/classes")
    return page


def test_a_teacher_runs_a_lesson_and_another_schools_teacher_cannot(tmp_path: Path, directory: Directory,
                                                                     browser) -> None:  # type: ignore[no-untyped-def]
    site = make_site(tmp_path / "site", extra=directory.toml())
    head = "Klasse;Rolle;Seriennummer;Vorname;Anmeldename\n"
    lists = {"gs-demo": f"{head}5a;Lehrkraft;{TEACHER_IPAD};Frau M;mmeier\n"
                        + "".join(f"5a;Schüler;{s};Kind{i};\n" for i, s in enumerate(PUPILS)),
             "gym-demo": f"{head}6b;Lehrkraft;{GYM_TEACHER_IPAD};Herr K;kkurz\n6b;Schüler;{GYM_PUPIL};Max;\n"}
    for school, text in lists.items():
        f = tmp_path / f"{school}.csv"
        f.write_text(text, encoding="utf-8")
        r = site.cli("class", "import", str(f), "--school", school)
        assert r.returncode == 0, r.stderr
    ids = {c["name"]: c["id"] for c in json.loads(site.cli("class", "list", "--json").stdout)}
    server = start_web(site)
    try:
        # 1. The teacher signs in with the directory's password and sees only 5a.
        page = sign_in(browser, server.url, "mmeier")
        assert "(Lehrkraft)" in page.locator("header").inner_text()
        shown = page.locator("section.class")
        assert [shown.nth(i).get_attribute("data-class-name") for i in range(shown.count())] == ["5a"]
        assert page.locator("#class-form").count() == 0  # teachers do not edit classes
        # 2. Starts a lesson now, for 30 minutes: werne applies it at once (status "läuft").
        section = page.locator(f'section[data-class-id="{ids["5a"]}"]')
        section.locator('input[name="apps"]').fill("com.apple.Pages")
        section.locator('input[name="minutes"]').fill("30")
        section.locator("form.start-lesson button").click()
        page.wait_for_url("**/classes")
        row = page.locator(f'section[data-class-id="{ids["5a"]}"] tr[data-lesson-id]').first
        assert row.get_attribute("data-status") == "active", page.content()
        assert row.locator(".lesson-status").inner_text() == "läuft"
        # 3. ... and stops it: lifted at once.
        row.locator("button.stop-lesson").click()
        page.wait_for_url("**/classes")
        row = page.locator(f'section[data-class-id="{ids["5a"]}"] tr[data-lesson-id]').first
        assert row.get_attribute("data-status") == "ended"
        # The requests pages are not for teachers.
        assert page.goto(server.url + "/requests").status == 403

        # 4. A teacher of the other school: sees only 6b, and cannot see or touch 5a.
        other = sign_in(browser, server.url, "kkurz")
        shown = other.locator("section.class")
        assert [shown.nth(i).get_attribute("data-class-name") for i in range(shown.count())] == ["6b"]
        assert other.goto(f"{server.url}/classes/{ids['5a']}").status == 403
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', other.goto(server.url + "/classes").text() or "")
        token = csrf.group(1) if csrf else other.locator('input[name="csrf_token"]').first.get_attribute("value")
        answer = other.request.post(f"{server.url}/classes/{ids['5a']}/lessons",
                                    form={"csrf_token": token, "mode": "single_app", "apps": "com.apple.Pages",
                                          "minutes": "30", "start": ""})
        assert answer.status == 403
    finally:
        server.stop()
    audit = json.loads(site.cli("audit", "--json").stdout)
    denied = [(e["actor"], e["target"]) for e in audit if e["action"] == "classroom.denied"]
    assert denied == [("kkurz", f"class:{ids['5a']}")] * 2
    logins = {e["actor"] for e in audit if e["action"] == "web.login"}
    assert {"mmeier", "kkurz"} <= logins
    actions = [(e["actor"], e["action"]) for e in audit if e["action"].startswith("classroom.lesson")]
    assert ("mmeier", "classroom.lesson.start") in actions and ("mmeier", "classroom.lesson.stop") in actions
