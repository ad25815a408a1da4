"""Pre-flight against real sshd laptops (the lab): host-key pinning, login, sudo, OS, python3, disk,
and bad input (unknown host, unusable key file, broken inventory) with one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.site import DEMO_INVENTORY, write_config

UNKNOWN = "host key unknown: run with --accept-new after verifying it"
CHANGED = "host key changed: possible interception"


# ---------------------------------------------------------------- bad input (no lab needed) ----


def test_unknown_host_name_is_one_line_exit_2(run_cli, tmp_path: Path, state_dir: Path):
    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, state_dir)
    r = run_cli("laptop", "preflight", "lap99", config=cfg)
    assert r.exit_code == 2
    assert r.stderr == f"Error: unknown host: lap99 (not in {DEMO_INVENTORY / 'hosts.yml'})\n"
    assert r.stdout == ""
    r = run_cli("laptop", "provision", "lap01", "lap99", config=cfg)
    assert r.exit_code == 2
    assert r.stderr == f"Error: unknown host: lap99 (not in {DEMO_INVENTORY / 'hosts.yml'})\n"
    assert not (state_dir / "werne.db").exists() or _runs(state_dir) == []


def _runs(state_dir: Path) -> list:
    from sqlalchemy import select

    from core.db import Database
    from core.models import ProvisioningRun

    db = Database(f"sqlite:///{state_dir / 'werne.db'}")
    try:
        with db.session() as s:
            return list(s.scalars(select(ProvisioningRun)))
    finally:
        db.dispose()


@pytest.mark.parametrize("what", ["missing", "garbage", "directory"])
def test_unusable_key_file_is_one_line_exit_2(run_cli, tmp_path: Path, state_dir: Path, what: str):
    key = tmp_path / "id_ed25519"
    expected = {
        "missing": "does not exist",
        "garbage": "is not a usable SSH private key",
        "directory": "is a directory",
    }[what]
    if what == "garbage":
        key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n-----END OPENSSH PRIVATE KEY-----\n")
    elif what == "directory":
        key.mkdir()
    cfg = write_config(
        tmp_path / "werne.toml", DEMO_INVENTORY, state_dir, f'[ssh]\nprivate_key_file = "{key}"\n'
    )
    for command in ("preflight", "provision"):
        r = run_cli("laptop", command, "--all", config=cfg)
        assert r.exit_code == 2, r.output
        assert r.stderr == f"Error: SSH key file {key} {expected}\n"
    assert not (state_dir / "known_hosts").exists()


def test_broken_inventory_yaml_is_exit_2(run_cli, tmp_path: Path, state_dir: Path, inventory_copy: Path):
    hosts = inventory_copy / "hosts.yml"
    hosts.write_text("all:\n  children:\n    laptops:\n      hosts:\n        lap01: [\n", encoding="utf-8")
    cfg = write_config(tmp_path / "werne.toml", inventory_copy, state_dir)
    for command in ("preflight", "provision"):
        r = run_cli("laptop", command, "--all", config=cfg)
        assert r.exit_code == 2
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {hosts}:") and "broken YAML" in lines[0]
        assert "Traceback" not in r.output


def test_hosts_or_all_is_required(run_cli, tmp_path: Path, state_dir: Path):
    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, state_dir)
    r = run_cli("laptop", "preflight", config=cfg)
    assert (r.exit_code, r.stderr) == (2, "Error: name at least one host, or use --all\n")
    r = run_cli("laptop", "provision", "lap01", "--all", config=cfg)
    assert (r.exit_code, r.stderr) == (2, "Error: name hosts or use --all, not both\n")


# ---------------------------------------------------------------- against the lab -------------


@pytest.fixture(scope="module")
def lab(lab_factory):
    return lab_factory(3, gateway=False)


@pytest.fixture(scope="module")
def cfg(lab, lab_config) -> Path:
    # Short connect timeout and few attempts: a stopped laptop is reported quickly.
    return lab_config(lab, extra="\n[ssh]\nconnect_timeout = 3\nconnect_attempts = 2\n")


def _pinned(lab) -> dict[str, str]:
    out = {}
    for line in (lab.state_dir / "known_hosts").read_text().splitlines():
        host, ktype, key = line.split()
        out[host] = f"{ktype} {key}"
    return out


@pytest.mark.lab
def test_first_contact_needs_accept_new_then_pins_the_real_key(lab, cfg, werne_cli):
    r = werne_cli(cfg, "laptop", "preflight", "--all")
    assert r.exit_code == 1
    for name in ("lap01", "lap02", "lap03"):
        assert f"{name}: {UNKNOWN}\n" in r.stdout
    assert "3 checked, 3 failed" in r.stdout
    assert not (lab.state_dir / "known_hosts").exists()

    r = werne_cli(cfg, "laptop", "preflight", "--all", "--accept-new")
    assert r.exit_code == 0, r.output
    assert "3 checked, 0 failed" in r.stdout
    pinned = _pinned(lab)
    for h in lab.status():
        # The pinned key is the one the laptop really has (read from its disk, not over SSH).
        assert pinned[h.address] == " ".join(lab.host_public_key(h.name).split()[:2])
        assert f"{h.name}: pinned new host key SHA256:" in r.stdout

    r = werne_cli(cfg, "laptop", "preflight", "--all", "--json")
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data["ok"] is True
    assert [h["host"] for h in data["hosts"]] == ["lap01", "lap02", "lap03"]
    for h in data["hosts"]:
        assert set(h["checks"].values()) == {"ok"}
        assert h["os"] == "debian 12" and h["free_disk_mb"] > 0 and h["host_key_recorded"] is False


@pytest.mark.lab
def test_changed_host_key_is_refused_even_with_accept_new(lab, cfg, werne_cli):
    before = (lab.state_dir / "known_hosts").read_text()
    lab.regenerate_host_key("lap02")
    for extra in ([], ["--accept-new"]):
        r = werne_cli(cfg, "laptop", "preflight", "lap01", "lap02", *extra)
        assert r.exit_code == 1
        assert f"lap02: {CHANGED}\n" in r.stdout
        assert not any(line.startswith("lap01: ") for line in r.stdout.splitlines())
        assert "2 checked, 1 failed" in r.stdout
    # The pin is never overwritten by the new (possibly intercepting) key.
    assert (lab.state_dir / "known_hosts").read_text() == before
    r = werne_cli(cfg, "laptop", "preflight", "lap02", "--json")
    host = json.loads(r.stdout)["hosts"][0]
    assert host["reason"] == CHANGED and host["checks"]["login"] == "not checked"


@pytest.mark.lab
def test_stopped_host_is_unreachable_others_pass(lab, cfg, werne_cli):
    lab.stop_host("lap03")
    try:
        r = werne_cli(cfg, "laptop", "preflight", "lap01", "lap03", "--json")
        assert r.exit_code == 1
        hosts = {h["host"]: h for h in json.loads(r.stdout)["hosts"]}
        assert hosts["lap01"]["reason"] is None
        assert hosts["lap03"]["reason"].startswith("unreachable: ")
        assert hosts["lap03"]["checks"]["reachable"] == "failed"
    finally:
        lab.start_host("lap03")


@pytest.mark.lab
def test_sudo_that_needs_a_password_is_reported(lab, cfg, werne_cli):
    sudoers = "/etc/sudoers.d/90-admin"
    saved = lab.exec("lap01", ["cat", sudoers]).stdout
    assert "NOPASSWD" in saved
    lab.exec("lap01", ["sh", "-c", f"echo 'admin ALL=(ALL) ALL' > {sudoers}"])
    try:
        r = werne_cli(cfg, "laptop", "preflight", "lap01")
        assert r.exit_code == 1
        assert "lap01: sudo needs a password\n" in r.stdout
    finally:
        lab.exec("lap01", ["sh", "-c", f"cat > {sudoers}"], input=saved)
    assert werne_cli(cfg, "laptop", "preflight", "lap01").exit_code == 0


@pytest.mark.lab
def test_missing_python3_unsupported_os_and_full_disk_are_reported(lab, lab_config, tmp_path, werne_cli):
    lab.exec("lap01", ["mv", "/usr/bin/python3", "/usr/bin/python3.moved"])
    try:
        strict = lab_config(
            lab,
            tmp_path / "strict.toml",
            extra='\n[ssh]\nsupported_os = ["ubuntu 24.04"]\nmin_free_disk_mb = 1000000000\n',
        )
        r = werne_cli(strict, "laptop", "preflight", "lap01", "--json")
    finally:
        lab.exec("lap01", ["mv", "/usr/bin/python3.moved", "/usr/bin/python3"])
    assert r.exit_code == 1
    (host,) = json.loads(r.stdout)["hosts"]
    assert host["checks"] == {
        "reachable": "ok",
        "host_key": "ok",
        "login": "ok",
        "sudo": "ok",
        "os": "failed",
        "python3": "failed",
        "disk": "failed",
    }
    assert host["reason"].startswith(
        "OS not supported: Debian GNU/Linux 12 (bookworm); python3 is missing; not enough free disk: "
    )
    assert host["reason"].endswith("MB free on /, need 1000000000 MB")
