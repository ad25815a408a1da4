"""The patch level part of werne_facts on files laid out in a temporary root: APT lists and their
age, the apt-get simulation parser, the unattended-upgrade stamps, reboot-required, the kernel
packages and dpkg's version order (checked against the real `dpkg --compare-versions`)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.site import REPO

MODULE = REPO / "playbooks/files/werne_facts.py"
NOW = 1_800_000_000
HOUR = 3600
DAY = 86400


@pytest.fixture(scope="module")
def wf():
    spec = importlib.util.spec_from_file_location("werne_facts_under_test", MODULE)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def put(root: Path, path: str, text: str = "", mtime: int | None = None) -> Path:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    if mtime is not None:
        os.utime(p, (mtime, mtime))
    return p


SECURITY_INRELEASE = """-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Origin: Debian
Label: Debian-Security
Suite: stable-security
Version: 12
Codename: bookworm-security
Date: Mon, 30 Nov 2026 18:00:00 UTC
SHA256:
 0123 1234 main/binary-amd64/Packages
-----BEGIN PGP SIGNATURE-----
xyz
-----END PGP SIGNATURE-----
"""
MAIN_RELEASE = "Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: bookworm\nVersion: 12.8\nSHA256:\n x 1 y\n"
LISTS = "/var/lib/apt/lists"


def test_lists_name_their_security_release_and_age_from_the_newest_evidence(wf, tmp_path):
    put(tmp_path, f"{LISTS}/mirror.example_debian-security_dists_bookworm-security_InRelease",
        SECURITY_INRELEASE, NOW - 30 * HOUR)
    put(tmp_path, f"{LISTS}/mirror.example_debian_dists_bookworm_Release", MAIN_RELEASE, NOW - 40 * HOUR)
    put(tmp_path, f"{LISTS}/mirror.example_debian_dists_bookworm_main_binary-amd64_Packages", "", NOW)
    # A successful update whose mirror said "not modified" only shows in the stamp.
    put(tmp_path, "/var/lib/apt/periodic/update-success-stamp", "", NOW - 2 * HOUR)
    facts = wf.apt_lists_facts(str(tmp_path), now=NOW)
    assert facts["release_files"] == 2
    assert facts["releases"] == ["Debian-Security/stable-security", "Debian/stable"]
    assert facts["security_releases"] == ["Debian-Security/stable-security"]
    assert facts["newest_release_file"] == NOW - 30 * HOUR
    assert facts["age_s"] == 2 * HOUR


def test_lists_without_stamps_age_by_the_release_files(wf, tmp_path):
    put(tmp_path, f"{LISTS}/security.ubuntu.com_ubuntu_dists_noble-security_InRelease",
        "Origin: Ubuntu\nLabel: Ubuntu\nSuite: noble-security\nCodename: noble\n", NOW - 9 * DAY)
    facts = wf.apt_lists_facts(str(tmp_path), now=NOW)
    assert facts["security_releases"] == ["Ubuntu/noble-security"]
    assert facts["age_s"] == 9 * DAY


def test_no_lists_at_all(wf, tmp_path):
    facts = wf.apt_lists_facts(str(tmp_path), now=NOW)
    assert (facts["release_files"], facts["security_releases"], facts["refreshed"], facts["age_s"]) == (
        0, [], None, None)


SIMULATION = """NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
Reading package lists...
Building dependency tree...
Calculating upgrade...
The following packages will be upgraded:
  base-files bash libgcrypt20 linux-image-amd64
Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])
Inst liblzma-dev [5.4.1-1] (5.4.1-1+deb12u2 Debian-Security:12/oldstable-security [amd64]) []
Inst linux-image-6.1.0-41-amd64 (6.1.158-1 Debian-Security:12/oldstable-security [amd64])
Inst werne-patch-probe [1.0] (1.1 Debian-Security:12/bookworm-security [all])
Conf base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])
"""


def test_simulation_splits_security_from_other_updates(wf):
    sim = wf.parse_apt_simulation(SIMULATION)
    assert [(p["package"], p["current"], p["candidate"]) for p in sim["security"]] == [
        ("libgcrypt20", "1.10.1-3", "1.10.1-3+deb12u1"),  # in both: security wins
        ("liblzma-dev", "5.4.1-1", "5.4.1-1+deb12u2"),
        ("linux-image-6.1.0-41-amd64", None, "6.1.158-1"),  # a new kernel package: dist-upgrade only
        ("werne-patch-probe", "1.0", "1.1"),
    ]
    assert [p["package"] for p in sim["other"]] == ["base-files"]
    assert wf.parse_apt_simulation("Reading package lists...\n0 upgraded, 0 newly installed.\n") == {
        "security": [], "other": []}


def test_unattended_upgrade_newest_stamp_counts(wf, tmp_path):
    assert wf.unattended_upgrade_facts(str(tmp_path), now=NOW)["last_run"] is None
    put(tmp_path, "/var/lib/apt/periodic/upgrade-stamp", "", NOW - 5 * DAY)
    put(tmp_path, "/var/lib/apt/periodic/unattended-upgrades-stamp", "", NOW - 3 * HOUR)
    put(tmp_path, "/usr/bin/unattended-upgrade", "#!/usr/bin/python3\n")
    facts = wf.unattended_upgrade_facts(str(tmp_path), now=NOW)
    assert (facts["installed"], facts["last_run"], facts["age_s"]) == (True, NOW - 3 * HOUR, 3 * HOUR)


def test_reboot_required_with_packages_and_since(wf, tmp_path):
    assert wf.reboot_facts(str(tmp_path), now=NOW) == {"required": False, "since": None, "age_s": None,
                                                       "packages": []}
    put(tmp_path, "/run/reboot-required", "*** System restart required ***\n", NOW - 4 * DAY)
    put(tmp_path, "/run/reboot-required.pkgs", "libc6\nlinux-image-6.1.0-41-amd64\nlibc6\n")
    assert wf.reboot_facts(str(tmp_path), now=NOW) == {
        "required": True, "since": NOW - 4 * DAY, "age_s": 4 * DAY,
        "packages": ["libc6", "linux-image-6.1.0-41-amd64"]}


DPKG_KERNELS = (
    "linux-image-6.1.0-9-amd64\t6.1.27-1\tii \n"
    "linux-image-6.1.0-41-amd64\t6.1.158-1\tii \n"
    "linux-image-6.1.0-40-amd64\t6.1.153-1\trc \n"  # removed, config left: not installed
    "linux-image-6.1.0-28-amd64-unsigned\t6.1.119-1\tii \n"
    "linux-image-6.1.0-41-amd64-dbg\t6.1.158-1\tii \n"
    "linux-image-amd64\t6.1.158-1\tii \n"
)


def test_kernel_newest_installed_by_package_version(wf, tmp_path):
    put(tmp_path, "/var/lib/dpkg/info/linux-image-6.1.0-41-amd64.list", "/boot\n", NOW - 2 * DAY)
    k = wf.kernel_facts("6.1.0-28-amd64", DPKG_KERNELS, None, str(tmp_path), now=NOW)
    # By version: 6.1.0-9 (6.1.27) < 6.1.0-28 (6.1.119) < 6.1.0-41 (6.1.158), not by name.
    assert k["installed"] == ["6.1.0-9-amd64", "6.1.0-28-amd64", "6.1.0-41-amd64"]
    assert (k["running"], k["newest"], k["newest_age_s"], k["container"]) == (
        "6.1.0-28-amd64", "6.1.0-41-amd64", 2 * DAY, None)


def test_kernel_in_a_container_without_kernel_packages(wf, tmp_path):
    k = wf.kernel_facts("6.18.44-host", "", "systemd-nspawn", str(tmp_path), now=NOW)
    assert (k["installed"], k["newest"], k["container"]) == ([], None, "systemd-nspawn")


def test_container_from_one_detect_virt_call_asks_again_only_for_a_vm(wf, monkeypatch):
    """`systemd-detect-virt` names the innermost virtualisation, so bare metal and containers need
    no second call; a VM (or an id we do not know) is asked `--container` as before."""
    calls = []

    def run(argv, timeout=20):
        calls.append(argv)
        return (0, "docker\n", "") if argv[-1] == "--container" else (1, "", "")

    monkeypatch.setattr(wf, "run", run)
    assert (wf.container_of("systemd-nspawn"), wf.container_of("lxc"), wf.container_of("none")) == (
        "systemd-nspawn", "lxc", None)
    assert calls == []
    assert wf.container_of("kvm") == "docker"  # a container the VM's answer hid (not possible, but asked)
    assert calls == [["systemd-detect-virt", "--container"]]


def test_container_of_agrees_with_the_real_detect_virt(wf):
    from tests.parts import require_tool

    require_tool("systemd-detect-virt", hint="systemd is on every laptop werne checks")
    plain = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True).stdout.strip() or "none"
    asked = subprocess.run(["systemd-detect-virt", "--container"], capture_output=True, text=True)
    assert wf.container_of(plain) == (asked.stdout.strip() if asked.returncode == 0 else None)


VERSIONS = ["1.0", "1.1", "1.0~rc1", "1.0+deb12u1", "1.0-1", "1.0-1+deb12u1", "1.0-1~bpo12+1", "2:0.9",
            "1:1.0", "6.1.27-1", "6.1.158-1", "1.0a", "1.0.0", "10.0", "9.9", "0.0~git20200101"]


def test_version_order_matches_dpkg(wf):
    from tests.parts import require_tool

    require_tool("dpkg", hint="the reference for Debian's version order")
    for a in VERSIONS:
        for b in VERSIONS:
            ours = wf.dpkg_compare_versions(a, b)
            ours = "lt" if ours < 0 else "gt" if ours > 0 else "eq"
            real = subprocess.run(["dpkg", "--compare-versions", a, ours, b]).returncode == 0
            assert real, f"{a} {ours} {b} is not what dpkg says"
