"""The HTML report in a real headless browser (Debian's chromium through playwright): the summary
numbers read from the page equal the database's; the file is self-contained (no network)."""

from __future__ import annotations

import pytest

from compliance.history import load_run
from compliance.reports import write_report
from tests.parts import require_tool

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    chromium = require_tool("chromium", marker="browser", hint="scripts/setup.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=ARGS)
        yield b
        b.close()


def test_html_summary_matches_database_and_loads_nothing(browser, compliance_db, two_runs, tmp_path):
    out = write_report(compliance_db, None, "html", tmp_path / "report.html")
    run = load_run(compliance_db, two_runs[1], with_results=True)
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(out.as_uri())
    text = lambda sel: page.locator(sel).inner_text().strip()  # noqa: E731
    s = run.summary
    assert int(text('[data-summary="devices"]')) == s["devices"] == 7
    assert int(text('[data-summary="compliant_devices"]')) == s["compliant_devices"]
    assert float(page.locator('[data-summary="pass_rate"]').get_attribute("data-value")) == s["pass_rate"]
    assert text('[data-summary="pass_rate"]') == f"{s['pass_rate'] * 100:.1f} %"
    for st in ("pass", "fail", "error", "unreachable", "waived", "not_applicable"):
        db_count = sum(1 for r in run.results.values() if r.status == st)
        assert int(text(f'[data-count="{st}"]')) == db_count == s["counts"][st], st
    for fleet, block in s["fleets"].items():
        row = page.locator(f'#fleets tr[data-fleet="{fleet}"]')
        assert int(row.locator('[data-field="devices"]').inner_text()) == block["devices"]
        assert int(row.locator('[data-field="compliant_devices"]').inner_text()) == block["compliant_devices"]
    for school, block in s["schools"].items():
        row = page.locator(f'#schools tr[data-school="{school}"]')
        assert int(row.locator('[data-field="devices"]').inner_text()) == block["devices"]
    # Newly failing comes first, then fixed, then still failing.
    headings = [h.strip() for h in page.locator("#changes h2").all_inner_texts()]
    assert [h.rsplit(" ", 1)[0] for h in headings] == ["Newly failing", "Fixed", "Still failing"]
    assert (
        int(text('[data-changes="newly_failing"]'))
        == page.locator("#newly-failing tr[data-device]").count()
        == 7
    )
    assert page.locator('#fixed tr[data-device="lap03"][data-rule="lx-login-banner"]').count() == 1
    # The trend chart: one point per stored run, inline SVG.
    assert page.locator("#trend svg circle").count() == 2
    assert page.locator("#devices details").count() == 7
    assert "SYS.2.3.A1" in text('tr[data-rule-row="lx-ssh-no-root-login"]')
    assert requests == [out.as_uri()]  # self-contained: nothing else was fetched
    page.close()
