"""`systemd-analyze security` over every service unit `werne server install` renders: each is
rated "OK" or better, and a unit without the shared sandbox (deploy/templates/_hardening.j2) is not.

systemd's scale (src/analyze/analyze-security.c): exposure 0.0 PERFECT, below 1.0 SAFE, below 4.0
OK, below 7.0 MEDIUM, below 9.0 EXPOSED, else UNSAFE. `--offline=yes` rates the unit files
themselves, so neither root nor a running systemd is needed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.parts import require_tool
from tests.server.test_deploy_units import rendered_units

OK_BELOW = 4.0  # "OK" ends where "MEDIUM" starts


def exposure(tmp_path: Path, name: str, text: str) -> float:
    """The overall exposure systemd-analyze prints for one unit file."""
    analyze = require_tool("systemd-analyze", hint="scripts/setup.sh installs Debian's systemd")
    unit = tmp_path / "units" / name
    unit.parent.mkdir(exist_ok=True)
    unit.write_text(text, encoding="utf-8")
    q = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert q.returncode == 0, q.stderr
    return float(q.stdout.rsplit("Overall exposure level for", 1)[1].split(":", 1)[1].split()[0])


def services(tmp_path: Path) -> dict[str, str]:
    return {n: t for n, t in rendered_units(tmp_path).items() if n.endswith(".service")}


def test_every_service_is_rated_ok_or_better(tmp_path: Path) -> None:
    units = services(tmp_path)
    assert {"nanomdm.service", "werne-compliance.service", "werne-webhook.service"} <= set(units)
    rated = {name: exposure(tmp_path, name, text) for name, text in units.items()}
    assert {n: e for n, e in rated.items() if e >= OK_BELOW} == {}, rated


def test_every_service_creates_files_only_its_user_can_read(tmp_path: Path) -> None:
    for name, text in services(tmp_path).items():
        assert "\nUMask=0077\n" in text, name


@pytest.mark.parametrize("name", ["nanomdm.service", "werne-compliance.service"])
def test_a_service_without_the_sandbox_is_rated_worse_than_ok(tmp_path: Path, name: str) -> None:
    """The check above can fail: the same unit without the shared sandbox block rates EXPOSED."""
    text = services(tmp_path)[name]
    start, end = text.index("# Sandbox:"), text.index("SystemCallErrorNumber=EPERM\n")
    assert exposure(tmp_path, name, text[:start] + text[end:]) >= 7.0


def test_every_scheduled_run_alerts_when_it_fails(tmp_path: Path) -> None:
    """The nightly oneshot units (compliance, renewal, backup) start the alert unit on failure;
    the alert unit itself does not (a failing alert would start itself again)."""
    units = services(tmp_path)
    oneshots = {n for n, t in units.items() if "\nType=oneshot\n" in t and not n.startswith("werne-alert@")}
    assert {"werne-compliance.service", "werne-renew.service", "werne-backup.service"} <= oneshots
    for name in oneshots:
        assert "\nOnFailure=werne-alert@%n.service\n" in units[name], name
    assert "\nOnFailure=" not in units["werne-alert@.service"]
