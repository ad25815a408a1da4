"""The ssh_hardening role's module that neutralises foreign sshd drop-ins, run as Ansible runs a
module (a real process reading its arguments from a JSON file) against a real drop-in directory.

Validation uses /bin/true or /bin/false in place of sshd (this controller has no sshd; the lab
test tests/provisioning/test_provision_ssh_dropins.py runs it with the laptops' real sshd)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.site import REPO

MODULE = (REPO / "playbooks/roles/ssh_hardening/library"
          / "werne_sshd_dropin_conflicts.py")
OURS = """# Ansible managed
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxAuthTries 3
Banner /etc/issue.net
"""
MARK = "# disabled by werne ssh_hardening:"


def run_module(tmp_path: Path, dropins: Path, check: bool = False, sshd: str = "/bin/true",
               **params: object) -> dict:
    args = {
        "managed_config": OURS,
        "own_dropin": str(dropins / "00-werne-hardening.conf"),
        "dropin_dir": str(dropins),
        "sshd": sshd,
        "_ansible_check_mode": check,
        "_ansible_tmpdir": str(tmp_path),
        **params,
    }
    argfile = tmp_path / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}), encoding="utf-8")
    p = subprocess.run([sys.executable, str(MODULE), str(argfile)], capture_output=True, text=True, timeout=60)
    return json.loads(p.stdout)


@pytest.fixture
def dropins(tmp_path: Path) -> Path:
    d = tmp_path / "sshd_config.d"
    d.mkdir()
    (d / "00-werne-hardening.conf").write_text(OURS, encoding="utf-8")
    (d / "00-local.conf").write_text(
        "# a local admin's file\n"
        "PasswordAuthentication yes\n"
        "challengeresponseauthentication=yes\n"  # old name and '=' form of KbdInteractiveAuthentication
        "MaxAuthTries 3\n"  # same value as ours: stays
        "PrintLastLog no\n"  # not ours: stays
        "Match Address 192.168.0.0/16\n"
        "  PermitRootLogin yes\n"  # a deliberate exception for one network: stays
        "Match all\n"
        '  Banner "/etc/issue.net"\n'  # the same path, quoted: stays
        "  maxauthtries 6\n",  # global again after `Match all`: conflicts
        encoding="utf-8",
    )
    (d / "50-cloud-init.conf").write_text("PasswordAuthentication no\n", encoding="utf-8")
    (d / "60-notes.txt").write_text("PasswordAuthentication yes\n", encoding="utf-8")  # sshd does not read it
    os.chmod(d / "00-local.conf", 0o600)
    return d


def snapshot(d: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(d.iterdir())}


def test_check_mode_reports_the_conflicting_lines_and_changes_nothing(tmp_path, dropins):
    before = snapshot(dropins)
    res = run_module(tmp_path, dropins, check=True)
    assert res["changed"] is True
    assert [(c["line"], c["keyword"], c["value"], c["ours"]) for f in res["files"] for c in f["conflicts"]] == [
        (2, "passwordauthentication", "yes", "no"),
        (3, "kbdinteractiveauthentication", "yes", "no"),
        (10, "maxauthtries", "6", "3"),
    ]
    assert [f["path"] for f in res["files"]] == [str(dropins / "00-local.conf")]
    assert res["msg"] == (f"would neutralise {dropins / '00-local.conf'} (commented out: PasswordAuthentication yes, "
                          "challengeresponseauthentication=yes, maxauthtries 6)")
    assert snapshot(dropins) == before


def test_comment_out_only_the_conflicting_global_lines_then_nothing_to_do(tmp_path, dropins):
    res = run_module(tmp_path, dropins)
    assert res["changed"] is True, res
    assert (dropins / "00-local.conf").read_text(encoding="utf-8") == (
        "# a local admin's file\n"
        f"{MARK} PasswordAuthentication yes\n"
        f"{MARK} challengeresponseauthentication=yes\n"
        "MaxAuthTries 3\n"
        "PrintLastLog no\n"
        "Match Address 192.168.0.0/16\n"
        "  PermitRootLogin yes\n"
        "Match all\n"
        '  Banner "/etc/issue.net"\n'
        f"{MARK} maxauthtries 6\n"
    )
    assert (dropins / "00-local.conf").stat().st_mode & 0o777 == 0o600
    (diff,) = res["diff"]
    assert diff["before_header"] == diff["after_header"] == str(dropins / "00-local.conf")
    assert "PasswordAuthentication yes\n" in diff["before"] and f"{MARK} PasswordAuthentication yes\n" in diff["after"]
    assert run_module(tmp_path, dropins)["changed"] is False


def test_disable_moves_the_file_aside_where_sshd_does_not_read_it(tmp_path, dropins):
    (dropins / "00-local.conf.disabled-by-werne").write_text("older\n", encoding="utf-8")
    res = run_module(tmp_path, dropins, action="disable")
    assert res["changed"] is True, res
    assert not (dropins / "00-local.conf").exists()
    assert (dropins / "00-local.conf.disabled-by-werne.1").read_text(encoding="utf-8").startswith(
        "# a local admin's file\nPasswordAuthentication yes\n"
    )
    assert res["files"][0]["moved_to"] == str(dropins / "00-local.conf.disabled-by-werne.1")
    assert res["diff"][0]["prepared"].startswith(f"move {dropins / '00-local.conf'} aside to ")
    assert run_module(tmp_path, dropins, action="disable")["changed"] is False


def test_a_symlinked_dropin_is_moved_aside_not_edited_through_the_link(tmp_path, dropins):
    target = tmp_path / "shared-sshd.conf"
    target.write_text("PermitRootLogin yes\n", encoding="utf-8")
    (dropins / "05-shared.conf").symlink_to(target)
    res = run_module(tmp_path, dropins)
    assert {f["path"]: f["action"] for f in res["files"]} == {
        str(dropins / "00-local.conf"): "comment",
        str(dropins / "05-shared.conf"): "disable",
    }
    assert target.read_text(encoding="utf-8") == "PermitRootLogin yes\n"
    assert (dropins / "05-shared.conf.disabled-by-werne").is_symlink()
    assert not (dropins / "05-shared.conf").exists()


def test_a_configuration_sshd_refuses_is_rolled_back_and_fails(tmp_path, dropins):
    target = tmp_path / "shared-sshd.conf"
    target.write_text("PermitRootLogin yes\n", encoding="utf-8")
    (dropins / "05-shared.conf").symlink_to(target)
    before = snapshot(dropins)
    res = run_module(tmp_path, dropins, sshd="/bin/false")
    assert res["failed"] is True
    assert res["msg"].startswith("sshd -t refused the configuration after neutralising; changes undone")
    assert snapshot(dropins) == before
    assert (dropins / "05-shared.conf").is_symlink()


def test_our_own_and_excluded_dropins_are_never_touched(tmp_path, dropins):
    (dropins / "00-local.conf").unlink()
    (dropins / "10-werne-hardening.conf").write_text("PermitRootLogin prohibit-password\n", encoding="utf-8")
    (dropins / "00-werne-hardening.conf").write_text(OURS + "PasswordAuthentication yes\n", encoding="utf-8")
    before = snapshot(dropins)
    res = run_module(tmp_path, dropins, exclude=[str(dropins / "10-werne-hardening.conf")])
    assert res["changed"] is False, res
    assert res["msg"] == "no foreign sshd drop-in contradicts the hardening"
    assert snapshot(dropins) == before
