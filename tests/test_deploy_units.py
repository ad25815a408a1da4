"""`systemd-analyze verify` over every unit in deploy/.

PID 1 here (and in CI containers) is not systemd, so the units are verified offline with
`--root`: a throw-away root holding a copy of the distribution's units (for sysinit.target,
network-online.target, ...), our units in /etc/systemd/system, and an executable stub at each
Exec*= path (verify checks that the command exists and is executable; /opt/werne is where
docs/operations.md installs werne, not something this machine has). systemd-analyze exits 0
on unknown keys and bad values and only prints them, so the tests also require empty output.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.parts import require_file, require_tool

DEPLOY = REPO / "deploy"
UNIT_SUFFIXES = {".service", ".timer", ".socket", ".path", ".target", ".mount"}
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
EXEC = re.compile(r"^Exec\w*=[-@:+!]*(/\S+)", re.M)


def deploy_units() -> list[Path]:
    return sorted(p for p in DEPLOY.iterdir() if p.suffix in UNIT_SUFFIXES)


def verify(tmp_path: Path, units: dict[str, str]) -> subprocess.CompletedProcess[str]:
    analyze = require_tool("systemd-analyze", hint="scripts/setup.sh installs Debian's systemd")
    require_file("the distribution's systemd units", SYSTEM_UNITS / "sysinit.target")
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / SYSTEM_UNITS.relative_to("/"), symlinks=True)
    etc = root / "etc" / "systemd" / "system"
    etc.mkdir(parents=True)
    for name, text in units.items():
        (etc / name).write_text(text, encoding="utf-8")
        for command in EXEC.findall(text):
            stub = root / command.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
            stub.chmod(0o755)
    return subprocess.run([analyze, "verify", "--man=no", f"--root={root}", *units],
                          capture_output=True, text=True, timeout=120, check=False)


def test_every_unit_in_deploy_verifies_cleanly(tmp_path):
    units = deploy_units()
    assert {u.name for u in units} >= {"werne-compliance.service", "werne-compliance.timer",
                                        "werne-webhook.service", "werne-watch.service"}
    assert set(deploy_units()) == {p for p in DEPLOY.iterdir() if p.is_file()}, "a file in deploy/ that is not a unit?"
    p = verify(tmp_path, {u.name: u.read_text(encoding="utf-8") for u in units})
    assert (p.returncode, p.stdout + p.stderr) == (0, "")


@pytest.mark.parametrize(("change", "expected"), [
    (("Nice=10", "Nicee=10"), "Unknown key 'Nicee' in section [Service]"),
    (("TimeoutStartSec=45min", "TimeoutStartSec=45 fortnights"), "Failed to parse TimeoutStartSec="),
    (("ExecStart=/opt/werne/.venv/bin/werne", "ExecStart=werne"), "Command werne is not executable"),
])
def test_verify_catches_a_broken_unit(tmp_path, change, expected):
    """The check above can fail: each of these breakages of the compliance service is reported."""
    text = (DEPLOY / "werne-compliance.service").read_text(encoding="utf-8")
    assert change[0] in text
    p = verify(tmp_path, {"werne-compliance.service": text.replace(change[0], change[1])})
    assert expected in p.stdout + p.stderr
