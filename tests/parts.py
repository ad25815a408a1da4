"""Missing parts: the one way a test says it cannot run here, and what CI does about it.

A test (or fixture) that needs a part of the machine (root, systemd-nspawn, chromium, NanoMDM,
NanoDEP, PostgreSQL, node_exporter, openssl, ...) calls `require(part, why)` or `require_tool(name)` when the
part is not there. Outside CI that skips, and the terminal summary counts the skips per reason.
With CI=true the same skip becomes a failure whose message names the part, so a CI run can
never go green by skipping what it was meant to prove.

`require_tool`, `require_file` and `require_root` take `marker=`: when the part IS there, they
check that the running test carries the marker of that part (lab, browser, postgres, mdm,
nanodep, kmfddm) and fail it otherwise, so `make check` (which deselects those markers) can trust them.
Most tests get their marker automatically from the fixtures they use (FIXTURE_MARKERS).

Registered as a plugin in tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import NoReturn

import pytest

PREFIX = "missing part: "

# A test that uses one of these fixtures (directly or through another fixture) needs that part
# and is marked for it at collection, so `-m "not lab"` etc. deselect it without anyone having
# to remember the marker. Fixtures requested dynamically (request.getfixturevalue) are not seen
# here: those tests carry the marker explicitly, and `require_*(marker=...)` fails them if not.
FIXTURE_MARKERS: dict[str, str] = {
    "lab_factory": "lab",
    "postgres_cluster": "postgres",
    "fresh_postgres_url": "postgres",
    "browser": "browser",
    "nanodep": "nanodep",
    "site_nanodep": "nanodep",
    "mdm_world": "mdm",
    "ipad_world": "mdm",
    "nanomdm": "mdm",
    "kmfddm": "kmfddm",
    "directory": "directory",
    "oidc_provider_factory": "oidc",
}

# The test whose setup/call is running now: `require` checks its markers.
_current: pytest.Item | None = None


def ci() -> bool:
    """True when CI=true (or 1/yes) is in the environment, as CI services set it."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_part(part: str, why: str) -> str:
    """The one wording of a missing part, e.g. 'missing part: chromium (not on PATH)'."""
    return f"{PREFIX}{part} ({why})"


def check_marker(part: str, marker: str | None) -> None:
    """Fail the running test if it uses `part` without carrying `marker`."""
    item = _current
    if marker and item is not None and item.get_closest_marker(marker) is None:
        pytest.fail(f"{item.nodeid} uses {part} but is not marked {marker!r}: add "
                    f"@pytest.mark.{marker} (or use a fixture listed in tests/parts.FIXTURE_MARKERS)",
                    pytrace=False)


def require(part: str, why: str) -> NoReturn:
    """This test cannot run here because `part` is missing: skip (fail under CI=true)."""
    pytest.skip(missing_part(part, why))


def require_tool(name: str, marker: str | None = None, hint: str = "") -> str:
    """The path of program `name` on PATH, or require() it. PATH decides, so a test run can hide
    a tool by its PATH (that is how the CI failure for a missing chromium was checked)."""
    path = shutil.which(name)
    if path is None:
        require(name, "not on PATH" + (f"; {hint}" if hint else ""))
    check_marker(name, marker)
    return path


def require_file(part: str, path: Path, marker: str | None = None, hint: str = "") -> Path:
    """`path` if it exists, else require() the part it stands for."""
    if not path.exists():
        require(part, f"{path} is not there" + (f"; {hint}" if hint else ""))
    check_marker(part, marker)
    return path


def require_root(part: str, marker: str | None = None, why: str = "") -> None:
    """Root, or require() it: `part` (the lab, the PostgreSQL server) needs it."""
    if os.geteuid() != 0:
        require("root", why or f"{part} needs root; run the tests as root")
    check_marker(part, marker)


# ------------------------------------------------------------------------------ hooks --------


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in getattr(item, "fixturenames", ()):
            marker = FIXTURE_MARKERS.get(name)
            if marker and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):  # type: ignore[no-untyped-def]
    global _current
    _current = item
    try:
        return (yield)
    finally:
        _current = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):  # type: ignore[no-untyped-def]
    global _current
    _current = item
    try:
        return (yield)
    finally:
        _current = None


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ")
    return str(longrepr)


class MissingPartFailure:
    """The longrepr of a skip turned into a failure: prints the missing-part line, and gives the
    short summary ("FAILED test - missing part: ...") and junit the same message."""

    def __init__(self, message: str):
        self.message = message
        self.reprcrash = self  # the terminal summary and junitxml read .reprcrash.message

    def toterminal(self, tw) -> None:  # type: ignore[no-untyped-def]
        tw.line(self.message, red=True, bold=True)
        tw.line("(CI=true: a missing part fails the run instead of skipping the test)")

    def __str__(self) -> str:
        return self.message


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report: pytest.TestReport = yield
    if report.skipped and ci() and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if reason.startswith(PREFIX):
            report.outcome = "failed"
            report.longrepr = MissingPartFailure(reason)  # type: ignore[assignment]
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = Counter(_skip_reason(r) for r in skipped if not hasattr(r, "wasxfail"))
    if not reasons:
        return
    terminalreporter.section("skipped, by reason")
    for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        terminalreporter.line(f"{n:4d} skipped: {reason}")
    if any(r.startswith(PREFIX) for r in reasons):
        terminalreporter.line("(with CI=true, each test skipped for a missing part fails instead)")
