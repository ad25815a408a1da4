"""The installed-package and LUKS-in-a-file parts of werne_facts (playbooks/files/werne_facts.py):
the dpkg-query rows it keeps, and the script run as the facts playbook's raw task runs it
(`python3 - ADMIN IFACE GATEWAY LUKS_JSON`, one JSON line) on this machine's real dpkg and a real
LUKS volume in a file."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.site import REPO

MODULE = REPO / "playbooks/files/werne_facts.py"


@pytest.fixture(scope="module")
def wf():
    spec = importlib.util.spec_from_file_location("werne_facts_packages_under_test", MODULE)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_keep_packages_whose_files_are_on_disk(wf) -> None:
    out = ("zlib1g:amd64\t1:1.2.13.dfsg-1\tzlib\t1:1.2.13.dfsg-1\tamd64\tii \n"
           "libssl3:amd64\t3.0.15-1~deb12u1\topenssl\t3.0.15-1~deb12u1\tamd64\tiU \n"
           "removed\t1.0\tremoved\t1.0\tall\trc \n"
           "half\t2.0\thalf-src\t2.0\tall\tiF \n"
           "short\t1.0\n")
    assert wf.package_rows(out) == [
        ["half", "2.0", "half-src", "2.0", "all"],
        ["libssl3:amd64", "3.0.15-1~deb12u1", "openssl", "3.0.15-1~deb12u1", "amd64"],
        ["zlib1g:amd64", "1:1.2.13.dfsg-1", "zlib", "1:1.2.13.dfsg-1", "amd64"],
    ]


def test_the_script_lists_real_packages_and_a_luks_volume_in_a_file(tmp_path: Path) -> None:
    from tests.parts import require_tool

    require_tool("cryptsetup", hint="scripts/setup.sh installs cryptsetup-bin")
    require_tool("dpkg-query", hint="a Debian or Ubuntu host")
    img, plain = tmp_path / "disk.img", tmp_path / "plain.img"
    img.write_bytes(b"\0" * (20 << 20))
    plain.write_bytes(b"\0" * (1 << 20))
    fmt = ["cryptsetup", "luksFormat", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
           "--batch-mode", "--key-file", "-", str(img)]
    assert subprocess.run(fmt, input="pass", text=True, capture_output=True).returncode == 0
    luks = json.dumps([str(img), str(plain), str(tmp_path / "missing.img")])
    p = subprocess.run([sys.executable, "-", "admin", "wg0", "False", luks], input=MODULE.read_text(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-500:]
    printed = json.loads(p.stdout)
    facts, timings = printed["werne_facts"], printed["werne_timings"]
    assert facts["luks"]["devices"] == [str(img)] and facts["luks"]["present"]
    dpkg = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "dpkg"], capture_output=True, text=True).stdout
    rows = {r[0]: r for r in facts["packages"]["list"]}
    assert rows["dpkg"][1:3] == [dpkg, "dpkg"], rows.get("dpkg")
    assert len(rows) > 50 and set(timings) >= {"total", "patch", "packages"}
