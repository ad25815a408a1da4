"""`systemd-analyze verify` over every unit rendered from deploy/templates (server.deploy).

PID 1 here (and in CI containers) is not systemd, so the units are verified offline with
`--root`: a throw-away root holding a copy of the distribution's units (for sysinit.target,
network-online.target, ...), our units in /etc/systemd/system, and an executable stub at each
Exec*= path (verify checks that the command exists and is executable; /opt/werne is where
docs/operations.md installs werne, not something this machine has). systemd-analyze exits 0
on unknown keys and bad values and only prints them, so the tests also require empty output.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from core.config import Config
from server.deploy import write_deployment
from tests.fixtures.site import REPO
from tests.parts import require_file, require_tool

UNIT_SUFFIXES = {".service", ".timer", ".socket", ".path", ".target", ".mount"}
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
EXEC = re.compile(r"^Exec\w*=[-@:+!]*(/\S+)", re.M)


def rendered_units(tmp_path: Path) -> dict[str, str]:
    """Every unit `werne deploy write` and `werne server install` write, for the default layout with
    the nightly run in shards (its worker unit too) and a metrics folder outside the state dir."""
    cfg = Config()
    cfg.compliance.shards = 2
    cfg.metrics.textfile_dir = Path("/var/lib/werne-metrics")
    cfg.mdm.server_url, cfg.scep.url = "https://mdm.example-city.de/mdm", "https://mdm.example-city.de/scep"
    cfg.site.state_dir = Path("/var/lib/werne")
    out = write_deployment(cfg, tmp_path / "rendered")
    return {f.path.name: f.path.read_text(encoding="utf-8") for f in out.files if f.path.suffix in UNIT_SUFFIXES}


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


def test_every_unit_verifies_cleanly(tmp_path):
    units = rendered_units(tmp_path)
    assert set(units) >= {"werne-compliance.service", "werne-compliance.timer", "werne-webhook.service",
                          "werne-watch.service", "nanomdm.service", "nanodep.service", "kmfddm.service"}
    templates = {p.name.removesuffix(".j2") for p in (REPO / "deploy" / "templates").glob("*.j2")
                 if not p.name.startswith("_")}  # _*.j2: blocks the units include
    assert set(units) == templates - {"nginx-werne.conf", "endpoints.toml"}, "a unit template that is never rendered?"
    p = verify(tmp_path, units)
    assert (p.returncode, p.stdout + p.stderr) == (0, "")


@pytest.mark.parametrize(("change", "expected"), [
    (("Nice=10", "Nicee=10"), "Unknown key 'Nicee' in section [Service]"),
    (("TimeoutStartSec=45min", "TimeoutStartSec=45 fortnights"), "Failed to parse TimeoutStartSec="),
    (("ExecStart=/opt/werne/venv/bin/werne", "ExecStart=werne"), "Command werne is not executable"),
])
def test_verify_catches_a_broken_unit(tmp_path, change, expected):
    """The check above can fail: each of these breakages of the compliance service is reported."""
    text = rendered_units(tmp_path)["werne-compliance.service"]
    assert change[0] in text
    p = verify(tmp_path, {"werne-compliance.service": text.replace(change[0], change[1])})
    assert expected in p.stdout + p.stderr


def test_the_nightly_unit_names_nanomdms_database_for_its_prune(tmp_path):
    """`werne prune` after the nightly run reaches NanoMDM's database (the rows NanoMDM leaves
    behind) as the service account, with the DSN NanoMDM's own unit uses; no password in it."""
    text = rendered_units(tmp_path)["werne-compliance.service"]
    env = dict(item.split("=", 1) for line in re.findall(r"^Environment=(.*)$", text, re.M)
               for item in shlex.split(line))
    assert env["NANOMDM_STORAGE_DSN"] == "host=/run/postgresql user=werne dbname=nanomdm sslmode=disable"
    assert re.search(r"^ExecStartPost=\S+/werne prune$", text, re.M)
