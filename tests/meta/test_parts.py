"""tests/parts.py: a test skipped for a missing part fails under CI=true with a line naming the
part; outside CI it skips and the summary counts the skips per reason; markers follow fixtures."""

from __future__ import annotations

import pytest

from tests.fixtures.site import REPO

TINY = """
import pytest
from tests.parts import require, require_tool

def test_needs_a_browser():
    require_tool("no-such-browser-werne", hint="setup installs it")

@pytest.mark.parametrize("n", [1, 2])
def test_needs_a_server(n):
    require("NanoFOO", "the binary is not there")

def test_skips_for_another_reason():
    pytest.skip("not today")

def test_runs():
    assert True
"""


def inner_session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pytest run in a subprocess with tests/parts.py as its one plugin: the installed plugins
    (xdist, hypothesis, anyio, ...) play no part here, and loading them costs each run a second."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest('pytest_plugins = ["tests.parts"]\n')


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None) -> pytest.RunResult:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    inner_session(pytester, monkeypatch)
    pytester.makepyfile(test_tiny=TINY)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")


def test_under_ci_a_missing_part_fails_and_names_the_part(pytester, monkeypatch):
    result = run(pytester, monkeypatch, "true")
    result.assert_outcomes(passed=1, failed=3, skipped=1)  # the plain skip stays a skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "FAILED test_tiny.py::test_needs_a_browser - missing part: no-such-browser-werne "
        "(not on PATH; setup installs it)",
        "FAILED test_tiny.py::test_needs_a_server[[]1[]] - missing part: NanoFOO (the binary is not there)",
    ])
    assert "CI=true: a missing part fails the run instead of skipping the test" in result.stdout.str()


def test_outside_ci_a_missing_part_skips_and_the_summary_counts_each_reason(pytester, monkeypatch):
    result = run(pytester, monkeypatch, None)
    result.assert_outcomes(passed=1, skipped=4)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "*= skipped, by reason =*",
        "   2 skipped: missing part: NanoFOO (the binary is not there)",
        "   1 skipped: missing part: no-such-browser-werne (not on PATH; setup installs it)",
        "   1 skipped: not today",
        "(with CI=true, each test skipped for a missing part fails instead)",
    ])


def test_ci_false_is_not_ci(pytester, monkeypatch):
    run(pytester, monkeypatch, "false").assert_outcomes(passed=1, skipped=4)


def test_a_test_that_uses_a_part_without_its_marker_fails(pytester, monkeypatch):
    inner_session(pytester, monkeypatch)
    pytester.makeini("[pytest]\nmarkers =\n    browser: b\n")
    pytester.makepyfile(test_marks="""
import pytest
from tests.parts import require_tool

def test_unmarked():
    require_tool("sh", marker="browser")

@pytest.mark.browser
def test_marked():
    require_tool("sh", marker="browser")

@pytest.fixture
def browser():
    return "a browser"

def test_marked_by_its_fixture(browser, request):
    assert request.node.get_closest_marker("browser") is not None
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_unmarked uses sh but is not marked 'browser'*"])
    deselected = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "not browser")
    deselected.assert_outcomes(passed=0, failed=1)  # only the unmarked one is left, and it fails


def test_the_lab_fixture_names_root_as_the_missing_part(monkeypatch):
    import os

    from tests.fixtures import lab as fixtures_lab

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match=r"^missing part: root \(the lab needs root"):
        fixtures_lab.require_root()
