"""lab.aptrepo without a lab: the empty probe package the lab tests publish (built by the real
dpkg-deb), and publishing into a package source that is not set up or a suite it does not have."""

from __future__ import annotations

import subprocess

import pytest

from lab import aptrepo
from lab.errors import LabError, LabInputError
from tests.parts import require_tool


def test_probe_package_fields_and_contents(tmp_path):
    require_tool("dpkg-deb", hint="Debian's dpkg")
    deb = aptrepo.build_probe_package(tmp_path, "werne-probe", "1:2.0~rc1-3", "a probe")
    assert deb.name == "werne-probe_1:2.0~rc1-3_all.deb"
    fields = subprocess.run(["dpkg-deb", "--field", str(deb), "Package", "Version", "Architecture"],
                            capture_output=True, text=True, check=True).stdout
    assert fields.splitlines() == ["Package: werne-probe", "Version: 1:2.0~rc1-3", "Architecture: all"]
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "./usr/share/werne-probe/VERSION" in listing
    with pytest.raises(LabError, match="dpkg-deb could not build"):
        aptrepo.build_probe_package(tmp_path, "Bad_Name", "1.0", "refused by dpkg-deb")


def test_publish_refuses_an_unknown_suite_and_a_source_not_set_up(tmp_path):
    require_tool("dpkg-deb", hint="Debian's dpkg")
    deb = aptrepo.build_probe_package(tmp_path, "werne-probe", "1.0", "a probe")
    with pytest.raises(LabInputError, match="unknown suite"):
        aptrepo.publish_package(tmp_path / "lab", deb, "sid")
    with pytest.raises(LabError, match="not set up"):
        aptrepo.publish_package(tmp_path / "lab", deb, aptrepo.SECURITY_SUITE)
